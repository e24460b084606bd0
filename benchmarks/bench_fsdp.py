"""Per-process memory and step time of GRPO under ``parallel: ddp`` (the baseline) and ``parallel: fsdp``.

Both runs launch 2 CPU processes with ``torchrun`` (gloo) on the same randomly initialised shapes policy,
made larger than the shipped one so that its state dominates (``--hidden 512 --layers 8``: about 27 M
parameters). Each process reports the bytes it keeps between steps (its parameters, gradients and AdamW
moments: local shards under FSDP), its peak RSS (which also holds torch itself and, under FSDP, the whole
weights gathered for sampling), and rank 0 the median seconds per step after the first. Printed as JSON.

Usage: ``python benchmarks/bench_fsdp.py [--hidden 512] [--layers 8] [--steps 3] [--processes 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _local_bytes(tensors: list) -> int:
    from torch.distributed.tensor import DTensor

    total = 0
    for t in tensors:
        t = t.to_local() if isinstance(t, DTensor) else t
        total += t.numel() * t.element_size()
    return total


def child(out: str, policy: str, mode: str, steps: int) -> None:
    """One process of a run: train, then write what it holds to ``stats-{rank}.json``."""
    import torch

    from irisbench.train.config import resolve_config
    from irisbench.train.trainer import GRPOTrainer, read_metrics

    cfg = resolve_config("iris-shapes", {"policy": policy, "steps": steps, "prompts_per_step": 2,
                                         "num_generations": 4, "eval_every": 0, "checkpoint_every": 10_000,
                                         "parallel": mode, "num_threads": 1})
    trainer = GRPOTrainer(cfg, out, progress=False)
    trainer.train()
    params = [p for p in trainer.policy.model.parameters()]
    moments = [v for st in trainer.optimizer.state.values() for v in st.values()
               if isinstance(v, torch.Tensor) and v.dim() > 0]
    stats = {
        "parameters": _local_bytes(params),
        "gradients": _local_bytes([p.grad for p in params if p.grad is not None]),
        "adam_moments": _local_bytes(moments),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if trainer.dist.main:
        rows = read_metrics(out)[1:] or read_metrics(out)
        stats["s_per_step"] = statistics.median(r["s_per_step"] for r in rows)
    Path(out, f"stats-{trainer.dist.rank}.json").write_text(json.dumps(stats))


def _policy(hidden: int, layers: int, root: Path) -> tuple[str, int]:
    from irisbench.policies.shapes_lm import ShapesLMPolicy
    from irisbench.world.tokenizer import fit_patch_tokenizer

    pol = ShapesLMPolicy.create(fit_patch_tokenizer(n_scenes=4000, seed=0), hidden_size=hidden, num_layers=layers,
                                num_heads=8, intermediate_size=3 * hidden, seed=0)
    path = root / "policy"
    pol.save(path)
    return str(path), pol.num_parameters()


def run(mode: str, policy: str, steps: int, processes: int, root: Path) -> dict:
    out = root / mode
    torchrun = Path(sys.executable).with_name("torchrun")
    started = time.perf_counter()
    proc = subprocess.run([str(torchrun), "--standalone", f"--nproc_per_node={processes}", __file__, "--child",
                           str(out), policy, mode, str(steps)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
    ranks = [json.loads((out / f"stats-{r}.json").read_text()) for r in range(processes)]
    mib = 2**20
    state = [r["parameters"] + r["gradients"] + r["adam_moments"] for r in ranks]
    return {
        "state_mib_per_process": round(max(state) / mib, 1),
        "parameters_mib": round(ranks[0]["parameters"] / mib, 1),
        "gradients_mib": round(ranks[0]["gradients"] / mib, 1),
        "adam_moments_mib": round(ranks[0]["adam_moments"] / mib, 1),
        "peak_rss_mib_per_process": round(max(r["peak_rss"] for r in ranks) / mib, 1),
        "s_per_step": round(ranks[0]["s_per_step"], 3),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp())
    policy, n_params = _policy(args.hidden, args.layers, root)
    result = {"parameters": n_params, "processes": args.processes, "steps": args.steps,
              "rollouts_per_step": 8, "ddp": run("ddp", policy, args.steps, args.processes, root),
              "fsdp": run("fsdp", policy, args.steps, args.processes, root)}
    ddp, fsdp = result["ddp"], result["fsdp"]
    result["state_ratio_fsdp_over_ddp"] = round(fsdp["state_mib_per_process"] / ddp["state_mib_per_process"], 3)
    result["step_time_ratio_fsdp_over_ddp"] = round(fsdp["s_per_step"] / ddp["s_per_step"], 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
