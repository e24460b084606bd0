"""Time and memory of a LoRA GRPO step against a full fine-tuning step, shapes LM on the CPU (JSON).

Each mode runs in its own process (so its peak resident memory is its own): ``GRPOTrainer`` on the shipped
``shapes-base`` (4 blocks x 192 wide, 1.3 M parameters) with the ``iris-shapes`` recipe (8 prompts x 8
rollouts), ``beta`` 0.04 so that full fine-tuning holds its deep-copied KL reference and LoRA its base with
the adapters off, ``--steps`` steps, one torch thread by default. Reported per mode: the medians over steps of
the trainer's own timers (``t_sample``, ``t_forward``, ``t_backward``, ``t_optimizer``, ``s_per_step``), the
trainable parameters, the bytes of gradients + AdamW moments (exact: 3 x 4 bytes per trainable parameter),
the reference's extra parameter bytes, and the process's peak RSS (``ru_maxrss``; interpreter, torch and the
rest included, so only the difference between modes speaks of the step).

Both modes sample with the shapes LM's fast loop (with adapters it reads ``W + scaling B A``), so ``t_sample``
should agree; ``t_forward + t_backward + t_optimizer`` is the update's own cost.

    python benchmarks/bench_lora.py --steps 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TIMERS = ("s_per_step", "t_sample", "t_reward", "t_forward", "t_backward", "t_optimizer")


def run_mode(mode: str, steps: int, threads: int, r: int) -> dict[str, Any]:
    """One mode in this process: train, then read back the timers and count the state."""
    import torch

    from irisbench.train.config import resolve_config
    from irisbench.train.trainer import GRPOTrainer, read_metrics

    torch.set_num_threads(threads)
    overrides = [f"steps={steps}", "eval_every=0", f"checkpoint_every={steps}", "beta=0.04",
                 f"num_threads={threads}"]
    if mode == "lora":
        overrides += [f"lora={{r: {r}}}", "lr=1e-3"]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = GRPOTrainer(resolve_config("iris-shapes", overrides), Path(tmp) / "run", progress=False)
        trainer.train()
        rows = read_metrics(Path(tmp) / "run")
        ckpt = sum(f.stat().st_size for f in (Path(tmp) / "run" / "checkpoints" / f"step-{steps}").iterdir())
    trainable = sum(p.numel() for p in trainer.params)
    total = len({p.data_ptr() for p in trainer.policy.model.parameters()})
    ref_extra = 0
    if trainer.ref is not None:
        own = {p.data_ptr() for p in trainer.policy.model.parameters()}
        ref_extra = sum(p.numel() * p.element_size() for p in trainer.ref.model.parameters() if p.data_ptr() not in own)
    return {
        "mode": mode, "steps": steps, "threads": threads,
        **{f"{k}_median": statistics.median(r[k] for r in rows[1:] or rows) for k in TIMERS},
        "update_s_median": statistics.median(r["t_forward"] + r["t_backward"] + r["t_optimizer"]
                                             for r in rows[1:] or rows),
        "trainable_parameters": int(trainable),
        "parameter_tensors": total,
        "grads_adamw_bytes": int(trainable * 4 * 3),
        "reference_extra_bytes": int(ref_extra),
        "checkpoint_bytes": int(ckpt),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--mode", choices=("full", "lora"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:
        return run_mode(args.mode, args.steps, args.threads, args.r)
    out: dict[str, Any] = {"cpu": cpu_name(), "recipe": "iris-shapes, 8 prompts x 8 rollouts, beta 0.04"}
    for mode in ("full", "lora"):
        proc = subprocess.run([sys.executable, __file__, "--mode", mode, "--steps", str(args.steps), "--threads",
                               str(args.threads), "--r", str(args.r)], capture_output=True, text=True, check=True)
        out[mode] = json.loads(proc.stdout)
    f, lo = out["full"], out["lora"]
    out["lora_vs_full"] = {"update_time_ratio": round(lo["update_s_median"] / f["update_s_median"], 3),
                           "step_time_ratio": round(lo["s_per_step_median"] / f["s_per_step_median"], 3),
                           "trainable_ratio": round(lo["trainable_parameters"] / f["trainable_parameters"], 4),
                           "peak_rss_saved_mb": round(f["peak_rss_mb"] - lo["peak_rss_mb"], 1)}
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
