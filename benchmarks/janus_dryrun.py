"""Memory per GPU and time of a Janus-Pro GRPO step from the real code (``irisbench.dryrun.weightless``), as JSON.

For Janus-Pro-1B and -7B (presets ``janus-pro-1b-iris`` / ``janus-pro-7b-iris``) and 1, 2, 4, 8 GPUs under
FSDP2: one dry run of the rollouts *one rank* takes (``prompts_per_step / N`` prompts, the preset's
gradient accumulation), which measures that rank's micro-batch activations (``MemTracker`` on meta) and
FLOPs (``FlopCounterMode``); ``irisbench.dryrun.cost`` shards parameters, gradients and AdamW state by N
and adds the gathered units and the KV cache. Beside each: what ``benchmarks/janus_memory.py`` (the paper
formula) predicts. Then the one measured figure: a 1B GRPO step of the released recipe with 32 rollouts on
one H200, before chunked logits (68.9 GB peak, 40-43 s), against the dry run of that step
(``prompts_per_step=4``, ``logits_chunk=0``).

The fake world is arithmetic, not FSDP2 itself: ``fully_shard`` over a fake process group places its
all-gather buffers on the mesh's device (cpu here), which meets the meta parameters, so each rank's
memory is computed from the one-process measurement (the module doc of ``irisbench.dryrun.cost``).

    python benchmarks/janus_dryrun.py                  # 1B and 7B (several minutes on a CPU)
    python benchmarks/janus_dryrun.py --sizes 1b --gpus 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MEASURED_H200 = {"rollouts": 32, "peak_gb": 68.9, "step_s": [40, 43], "logits": "whole (before chunking)"}


def run(preset: str, overrides: list[str], decode_steps: int) -> dict[str, Any]:
    from irisbench.dryrun.weightless import dry_run
    from irisbench.train.config import resolve_config

    cfg = resolve_config(preset, overrides)
    return {"cfg": cfg, "report": dry_run(cfg, decode_steps=decode_steps, measure=True)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import janus_memory
    import torch

    from irisbench.dryrun.cost import per_gpu_memory, roofline

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["1b", "7b"])
    parser.add_argument("--gpus", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--decode-steps", type=int, default=1)
    parser.add_argument("--cot-tokens", type=int, default=128,
                        help="CoT cap; the stubbed CoT always runs to it (janus_memory.py assumes 128)")
    parser.add_argument("--no-check", action="store_true", help="skip the 32-rollout H200 comparison")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cot = f"policy_options.cot_max_new_tokens={args.cot_tokens}"
    out: dict[str, Any] = {"table": {}, "units": "GB (1e9 bytes) per GPU; seconds per GRPO step per rank"}
    for s in args.sizes:
        preset = f"janus-pro-{s}-iris"
        rows = []
        for n in args.gpus:
            base = _base(preset)
            if base["prompts_per_step"] % n or (base["prompts_per_step"] // n) % base["gradient_accumulation_steps"]:
                rows.append({"gpus": n, "infeasible": f"prompts_per_step={base['prompts_per_step']} over {n} ranks "
                             f"with gradient_accumulation_steps={base['gradient_accumulation_steps']} splits a group"})
                continue
            t = time.perf_counter()
            r = run(preset, [f"prompts_per_step={base['prompts_per_step'] // n}", cot], args.decode_steps)
            rep = r["report"]
            paper = janus_memory.predict(janus_memory.SIZES[f"janus-pro-{s}"], n, janus_memory.Recipe())
            rows.append({"gpus": n, "rank_rollouts": rep["grpo_step"]["rollouts"],
                         "micro_batch_rows": rep["grpo_step"]["micro_batch_rows"],
                         "memory": _rounded(per_gpu_memory(rep, n)),
                         "janus_memory_py_peak": paper["peak_gb"], "flops": rep["flops_full"],
                         "time": roofline(rep), "dry_run_s": round(time.perf_counter() - t, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        out["table"][preset] = rows
    if "1b" in args.sizes and not args.no_check:
        r = run("janus-pro-1b-iris", ["prompts_per_step=4", "policy_options.logits_chunk=0", cot], args.decode_steps)
        rep = r["report"]
        out["check_h200_32_rollouts"] = {"measured": MEASURED_H200,
                                         "dry_run_peak_gb": round(per_gpu_memory(rep, 1)["peak"], 2),
                                         "dry_run_memory": _rounded(per_gpu_memory(rep, 1)),
                                         "roofline": roofline(rep)}
    return out


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in d.items()}


def _base(preset: str) -> dict[str, Any]:
    from irisbench.train.config import resolve_config

    return resolve_config(preset).to_dict()


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
