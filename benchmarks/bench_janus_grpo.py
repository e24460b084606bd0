"""Benchmark: one GRPO step of the released Janus-Pro-1B IRIS recipe, time split and peak memory.

Builds a randomly initialised Janus-Pro-1B-sized folder itself (``save_pretrained``, like
tests/janus_tiny.py but at the released config's sizes: Llama 2048 wide, 24 layers, 16 heads, MLP 5632,
102,400 text tokens, 16,384 image codes, 576 image tokens, 384 px VQ; the unused understanding tower cut
to one small layer) with the tests' offline byte-level tokenizer, then runs the trainer
(``irisbench.train.trainer.GRPOTrainer``) on the ``janus-pro-1b-iris`` preset: ``--rollouts`` per step (default 64
= 8 prompts x G 8), ``--grad-accum`` 2, CoT capped at ``--cot-tokens`` (128), beta 0.01 (a KL reference
copy), the preset's ``logits_chunk`` unless ``--logits-chunk 0``, and optionally activation checkpointing
and the static / compiled decode loop. The first step is a warm-up; the following ``--steps`` are timed.

Prints one JSON object: per timed step the trainer's own split (``t_sample``, ``t_forward``,
``t_backward``, ``t_optimizer``, ``t_reward``: wall clock between phases; on CUDA a phase's kernels may finish
in the next phase, the step total is synchronised) and the whole step's seconds, the CUDA allocator's peak
(``max_memory_allocated``) and reserved peak over the timed steps, and the baseline in the same run:
the same step with ``logits_chunk: 0`` (whole logits) unless ``--no-baseline``.

    python benchmarks/bench_janus_grpo.py                      # GPU: the recipe, baseline and chunked
    python benchmarks/bench_janus_grpo.py --checkpointing --decode compiled
    python benchmarks/bench_janus_grpo.py --small --device cpu # a CPU smoke check (tiny sizes)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # janus_tiny's offline tokenizer

from janus_tiny import JANUS_PRO_1B as FULL  # noqa: E402
from janus_tiny import SMALL_JANUS as SMALL  # noqa: E402
from janus_tiny import build_sized_janus as build_folder  # noqa: E402


def run_steps(folder: Path, prompts: Path, out: Path, args: argparse.Namespace, logits_chunk: int) -> dict[str, Any]:
    import torch

    from irisbench.train.config import resolve_config
    from irisbench.train.trainer import GRPOTrainer

    g = 8
    prompts_per_step = args.rollouts // g
    options = {"logits_chunk": logits_chunk, "gradient_checkpointing": args.checkpointing, "decode": args.decode,
               "cot_max_new_tokens": args.cot_tokens, "batch_size": args.sample_batch,
               "dtype": "bfloat16" if args.device.startswith("cuda") else "float32"}
    cfg = resolve_config("janus-pro-1b-iris", [
        f"model={folder}", f"prompts_file={prompts}", f"steps={args.steps + 1}", f"prompts_per_step={prompts_per_step}",
        f"num_generations={g}", f"gradient_accumulation_steps={args.grad_accum}", "checkpoint_every=100000",
        f"policy_options={json.dumps(options)}", "num_threads=" + str(torch.get_num_threads())])
    trainer = GRPOTrainer(cfg, out, progress=False, device=args.device)
    trainer._setup()
    cuda = args.device.startswith("cuda")
    steps = []
    for k in range(args.steps + 1):
        if cuda:
            torch.cuda.synchronize()
            if k == 1:
                torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        metrics = trainer.step(k)
        if cuda:
            torch.cuda.synchronize()
        rec = {"step_s": round(time.perf_counter() - t0, 3),
               **{key: round(float(metrics[key]), 3) for key in ("t_sample", "t_reward", "t_forward", "t_backward",
                                                                   "t_optimizer") if key in metrics},
               "loss": float(metrics.get("loss", float("nan")))}
        if k > 0 or args.steps == 0:
            steps.append(rec)
    params = {id(p): p.numel() for p in trainer.policy.model.parameters()}
    res: dict[str, Any] = {"logits_chunk": logits_chunk, "parameters": sum(params.values()), "steps": steps,
                           "best_step_s": min(s["step_s"] for s in steps)}
    if cuda:
        res["cuda_peak_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        res["cuda_peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 1e9, 2)
    del trainer
    if cuda:
        torch.cuda.empty_cache()
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cuda (default when available), cuda:N or cpu")
    parser.add_argument("--small", action="store_true", help="tiny sizes: a smoke check on the CPU")
    parser.add_argument("--rollouts", type=int, default=64, help="rollouts per step (a multiple of G = 8)")
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--cot-tokens", type=int, default=128)
    parser.add_argument("--sample-batch", type=int, default=64, help="rows per sampling loop (batch_size)")
    parser.add_argument("--logits-chunk", type=int, default=512)
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing of the LLM")
    parser.add_argument("--decode", choices=["eager", "static", "compiled"], default="eager")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    parser.add_argument("--no-baseline", action="store_true", help="skip the whole-logits (logits_chunk 0) run")
    parser.add_argument("--folder", type=Path, default=None, help="reuse (or write) the random model here")
    args = parser.parse_args(argv)
    if args.rollouts % 8 or args.rollouts < 8:
        parser.error("--rollouts must be a positive multiple of 8 (G = 8)")

    import torch

    from irisbench.core.devices import resolve_device

    args.device = resolve_device(args.device, flag="--device")
    sizes = SMALL if args.small else FULL
    result: dict[str, Any] = {"device": args.device, "sizes": sizes, "rollouts": args.rollouts,
                              "grad_accum": args.grad_accum, "cot_tokens": args.cot_tokens,
                              "decode": args.decode, "checkpointing": args.checkpointing,
                              "load_average_start": os.getloadavg(), "torch": torch.__version__}
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        folder = args.folder or tmp_path / "janus"
        if not (folder / "config.json").is_file():
            t0 = time.perf_counter()
            build_folder(folder, sizes)
            result["build_s"] = round(time.perf_counter() - t0, 1)
        prompts = tmp_path / "prompts.txt"
        prompts.write_text("\n".join(f"a photo of {n} red cubes and a blue sphere" for n in range(1, 33)) + "\n")
        runs = [args.logits_chunk] + ([] if args.no_baseline or args.logits_chunk == 0 else [0])
        for chunk in runs:
            key = "chunked" if chunk else "whole_logits"
            try:
                result[key] = run_steps(folder, prompts, tmp_path / f"run-{key}", args, chunk)
            except torch.OutOfMemoryError as e:  # the baseline may not fit: that is a result too
                result[key] = {"logits_chunk": chunk, "out_of_memory": str(e).splitlines()[0]}
                torch.cuda.empty_cache()
    result["load_average_end"] = os.getloadavg()
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
