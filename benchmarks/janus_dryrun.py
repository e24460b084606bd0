"""Memory per GPU and time of a Janus-Pro GRPO step from the real code (``irisbench.dryrun``), as JSON.

For Janus-Pro-1B and -7B (presets ``janus-pro-1b-iris`` / ``janus-pro-7b-iris``) and 1, 2, 4, 8 GPUs under
FSDP2: each row is rank 0 of a fake world of N ranks running the trainer's ``parallel: fsdp`` path on meta
parameters (``irisbench.dryrun.table.fsdp_table``: ``prompts_per_step / N`` prompts, the preset's gradient
accumulation where it keeps whole groups), its memory by category from ``FSDPMemTracker`` and its FLOPs
from ``FlopCounterMode``, with roofline times (``irisbench.dryrun.cost.roofline``). Beside each: what
``benchmarks/janus_memory.py`` (the paper formula) predicts. Then the one measured figure: a 1B GRPO step of
the released recipe with 32 rollouts on one H200, before chunked logits (68.9 GB peak, 40-43 s), against
the fake-world dry run of that step (``prompts_per_step=4``, ``logits_chunk=0``, one rank).

    python benchmarks/janus_dryrun.py                  # 1B and 7B (tens of minutes on a shared 2-core CPU)
    python benchmarks/janus_dryrun.py --sizes 1b --gpus 4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MEASURED_H200 = {"rollouts": 32, "peak_gb": 68.9, "step_s": [40, 43], "logits": "whole (before chunking)"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import janus_memory
    import torch

    from irisbench.dryrun.table import fsdp_table
    from irisbench.train.config import resolve_config

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
    out: dict[str, Any] = {"table": {}, "units": "GB (1e9 bytes) per GPU; FLOPs per GRPO step per rank"}
    for s in args.sizes:
        preset = f"janus-pro-{s}-iris"
        rows = fsdp_table(resolve_config(preset, [cot]), args.gpus, decode_steps=args.decode_steps)
        for row in rows:
            if "infeasible" not in row:
                paper = janus_memory.predict(janus_memory.SIZES[f"janus-pro-{s}"], row["gpus"], janus_memory.Recipe())
                row["janus_memory_py_peak"] = paper["peak_gb"]
            print(json.dumps(row), file=sys.stderr, flush=True)
        out["table"][preset] = rows
    if "1b" in args.sizes and not args.no_check:
        cfg = resolve_config("janus-pro-1b-iris", ["prompts_per_step=4", "policy_options.logits_chunk=0", cot])
        out["check_h200_32_rollouts"] = {"measured": MEASURED_H200,
                                         "fake_world": fsdp_table(cfg, [1], decode_steps=args.decode_steps)[0]}
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
