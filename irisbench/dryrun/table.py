"""The per-GPU memory table of a Janus-Pro preset under FSDP2 for 1, 2, 4, 8 GPUs: measured where it can be.

Each row is rank 0 of a fake world of N ranks running the trainer's own ``parallel: fsdp`` path on meta
parameters (``irisbench.dryrun.weightless.dry_run(..., world=N)``, ``irisbench.dryrun.fake_world``), its
memory from ``FSDPMemTracker`` (``"source": "fake-world"``, ``irisbench.dryrun.cost.fake_world_row``). A rank
takes ``prompts_per_step / N`` prompts, as the trainer splits them. Where the preset's
``gradient_accumulation_steps`` would split a group over N ranks (the trainer refuses it), the row uses the
largest accumulation that keeps whole groups and says so (the micro-batch is then the one the preset has
at fewer GPUs). Where the fake world fails for another reason, the row comes from the single-process dry
run by ``irisbench.dryrun.cost.per_gpu_memory``'s arithmetic (``"source": "arithmetic"``) and carries the
failure; a device mismatch is never turned into a row: it fails the whole table. Each row also carries the
rank's FLOPs by phase and their roofline seconds on an H100 and an H200 (``irisbench.dryrun.cost.roofline``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from irisbench.dryrun.cost import fake_world_row, per_gpu_memory, roofline
from irisbench.train.config import TrainConfig


def _accumulation(per_rank: int, wanted: int) -> int:
    """The largest accumulation <= ``wanted`` that divides the rank's prompts (whole groups per micro-batch)."""
    return max(a for a in range(1, wanted + 1) if per_rank % a == 0)


def fsdp_table(cfg: TrainConfig, worlds: list[int], *, single: dict[str, Any] | None = None, **dry_run_options: Any
               ) -> list[dict[str, Any]]:
    """One row per world size in ``worlds`` (see the module doc); ``single``: a single-process dry run's report,
    for the arithmetic fallback; ``dry_run_options``: passed to ``dry_run`` (``decode_steps``, ``size``)."""
    from irisbench.dryrun.weightless import DryRunError, dry_run

    rows = []
    for n in worlds:
        if n < 1:
            raise DryRunError(f"--world {n}: a world has at least one rank")
        if cfg.prompts_per_step % n:
            rows.append({"gpus": n, "infeasible": f"prompts_per_step={cfg.prompts_per_step} does not divide over "
                                                  f"{n} ranks (each rank takes whole groups)"})
            continue
        per_rank = cfg.prompts_per_step // n
        accum = _accumulation(per_rank, cfg.gradient_accumulation_steps)
        note = {} if accum == cfg.gradient_accumulation_steps else {
            "note": f"gradient_accumulation_steps={accum}: the preset's {cfg.gradient_accumulation_steps} would "
                    f"split a group over {n} ranks"}
        t = time.perf_counter()
        try:
            report = dry_run(replace(cfg, gradient_accumulation_steps=accum), world=n, eval_batch=False,
                             **dry_run_options)
        except DryRunError as err:
            if "device mismatch" in str(err) or single is None or "memory_bytes" not in single:
                raise
            arith = per_gpu_memory(single, n, 1.0 / n)
            rows.append({**{k: round(v, 2) if isinstance(v, float) else v for k, v in arith.items()},
                         "fake_world_error": str(err), **note})
            continue
        rows.append({**fake_world_row(report), "gradient_accumulation_steps": accum, **note,
                     "flops": report["flops_full"], "roofline_s": roofline(report),
                     "dry_run_s": round(time.perf_counter() - t, 1)})
    return rows


__all__ = ["fsdp_table"]
