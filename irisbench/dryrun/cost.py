"""Per-GPU memory under FSDP2 and roofline times of a GRPO step, from a dry run's measured numbers.

Two sources, each row saying which: ``fake_world_row`` reads a dry run that ran the step as rank 0 of a fake
world of N ranks under FSDP2 (``"source": "fake-world"``: measured by ``FSDPMemTracker``, see
``irisbench.dryrun.fake_world``); ``per_gpu_memory`` divides a single-process run by stated arithmetic
(``"source": "arithmetic"``, below).

Inputs (``irisbench.dryrun.weightless.dry_run``'s report, for the rollouts one rank takes): the update's peak memory
by category (``param``: the policy and its KL reference, ``grad``, ``opt``: the AdamW moments, read from the objects;
activations: ``act`` + ``temp`` of a ``MemTracker`` when one ran, else what the largest micro-batch saved for
backward, a floor that leaves out the transient logits chunk and the backward's own temporaries), the parameter counts
by part, and FLOPs by phase (``FlopCounterMode``). The arithmetic (stated, not measured):

- FSDP2 over ``N`` GPUs (``parallel: fsdp``, ZeRO-3) keeps ``1/N`` of parameters, gradients and AdamW state
  on each GPU. The update adds the activations measured for the rank's micro-batch and two gathered units
  (the one running and the one prefetched; the largest is the 102,400-row embedding or ``lm_head``).
  Sampling (``irisbench.train.sharding.gathered``) holds the whole policy gathered (the other ``(N-1)/N``) plus
  the static KV cache (2 x layers x 2 x ``batch_size`` rows (CFG) x width x (prompt + CoT cap + 576) x 2
  bytes); gradients of the previous step are still held then (``zero_grad`` runs after sampling). The peak
  is the larger of the two phases. Allocator fragmentation, NCCL buffers and the CUDA context are not
  included (a floor).
- Roofline: teacher forcing and backward take ``FLOPs / peak`` (bf16 dense); sampling takes the larger of
  its FLOPs over the peak and its bytes over the memory bandwidth, the bytes being, per decode step, the
  language model's weights plus the KV cache read so far (the decode loop is bound by bytes read per step).
"""

from __future__ import annotations

import math
from typing import Any

from irisbench.train.config import TrainConfig

GPUS = {"H100": {"bf16_flops": 989e12, "hbm_bytes_s": 3.35e12},
        "H200": {"bf16_flops": 989e12, "hbm_bytes_s": 4.8e12}}
GB = 1e9
BF16 = 2


def per_gpu_memory(report: dict[str, Any], gpus: int, act_scale: float = 1.0) -> dict[str, float]:
    """GB per GPU by category for ``gpus`` ranks, from a dry run of one rank's rollouts (see the module doc);
    ``act_scale``: the factor from the dry run's micro-batch rows to the rank's (1 when the dry run took
    exactly one rank's rollouts)."""
    mem, parts, shape = report["memory_bytes"]["update"], report["parameters_by_part"], report["shape"]
    param, grad, opt = mem.get("param", 0), mem.get("grad", 0), mem.get("opt", 0)
    act = (mem.get("act", 0) + mem.get("temp", 0) if "act" in mem else mem.get("saved_for_backward", 0)) * act_scale
    unit = max(parts["embed_tokens"], parts["lm_head"]) * BF16
    update = (param + grad + opt) / gpus + act + (2 * unit if gpus > 1 else 0)
    policy_bytes = parts["total"] * BF16
    kv = kv_cache_bytes(shape)
    sampling = (param + grad + opt) / gpus + policy_bytes * (gpus - 1) / gpus + kv
    return {"gpus": gpus, "source": "arithmetic", "activations": "MemTracker" if "act" in mem else "saved for backward",
            "params_and_reference": param / gpus / GB, "grads": grad / gpus / GB,
            "adamw": opt / gpus / GB, "activations_gb": act / GB, "gathered_units": (2 * unit if gpus > 1 else 0) / GB,
            "sampling_gathered": policy_bytes * (gpus - 1) / gpus / GB, "kv_cache": kv / GB,
            "update_phase": update / GB, "sampling_phase": sampling / GB, "peak": max(update, sampling) / GB}


def roofline(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Seconds per GRPO step on one rank for each GPU in ``GPUS`` (see the module doc)."""
    flops, shape, parts = report["flops_full"], report["shape"], report["parameters_by_part"]
    lm_bytes = (parts["language_model"] + max(parts["lm_head"], parts["generation"])) * BF16
    steps = shape["cot_steps"] + shape["image_steps"]
    batches = shape["sampling_batches"]
    kv_per_pos = 2 * shape["layers"] * 2 * shape["batch_size"] * shape["kv_width"] * BF16
    # the KV cache read at each step: the prompt plus the tokens drawn so far
    kv_read = kv_per_pos * (steps * shape["prompt_len"] + steps * (steps - 1) / 2)
    decode_bytes = batches * (steps * lm_bytes + kv_read)
    out = {}
    for name, gpu in GPUS.items():
        t_sample = max(flops["sampling"] / gpu["bf16_flops"], decode_bytes / gpu["hbm_bytes_s"])
        t_tf = flops["teacher_forcing"] / gpu["bf16_flops"]
        t_bw = flops["backward"] / gpu["bf16_flops"]
        out[name] = {"sampling_s": round(t_sample, 2), "teacher_forcing_s": round(t_tf, 3),
                     "backward_s": round(t_bw, 3), "step_s": round(t_sample + t_tf + t_bw, 2)}
    out["decode_bytes"] = {"total_gb": round(decode_bytes / GB, 1), "per_step_weights_gb": round(lm_bytes / GB, 2)}
    return out


def cost(report: dict[str, Any], cfg: TrainConfig, gpu_counts: tuple[int, ...] = (1, 2, 4, 8)) -> dict[str, Any]:
    """Memory per GPU (the ranks that the preset allows) and roofline time of the whole step on one GPU, rounded.

    The report is of one process taking every rollout; for ``n`` ranks the activations are scaled by ``1/n``
    (the micro-batch rows; ``benchmarks/janus_dryrun.py`` measures each rank's micro-batch instead)."""
    out: dict[str, Any] = {"roofline_one_gpu": roofline(report), "memory_gb": [],
                           "memory_note": "activations scaled by 1/gpus from the one-process measurement"}
    if "memory_bytes" not in report:
        return out
    for n in gpu_counts:
        per_rank = cfg.prompts_per_step / n
        if per_rank != int(per_rank) or int(per_rank) % cfg.gradient_accumulation_steps:
            out["memory_gb"].append({"gpus": n, "infeasible": f"prompts_per_step={cfg.prompts_per_step} over {n} "
                                     f"ranks with gradient_accumulation_steps={cfg.gradient_accumulation_steps} "
                                     "would split a group (the trainer refuses it)"})
            continue
        out["memory_gb"].append({k: (round(v, 2) if isinstance(v, float) else v)
                                 for k, v in per_gpu_memory(report, n, 1.0 / n).items()})
    return out


def kv_cache_bytes(shape: dict[str, Any]) -> int:
    """The image loop's static KV cache: K and V x layers x 2 ``batch_size`` rows (CFG) x width x length, bf16."""
    return 2 * shape["layers"] * 2 * shape["batch_size"] * shape["kv_width"] * shape["image_len"] * BF16


def fake_world_row(report: dict[str, Any]) -> dict[str, Any]:
    """GB per GPU by category from a fake-world dry run (``dry_run(..., world=N)``: rank 0 of N under FSDP2,
    ``FSDPMemTracker`` over two steps, the second holding AdamW state and the last gradients).

    ``update``: the tracker's peak, by its categories: ``sharded_params`` (the policy and its KL reference),
    ``gathered`` (unsharded parameters and all-gather buffers), ``grads`` (sharded and unsharded),
    ``adamw``, ``activations``, ``temp`` (backward temporaries, logits chunks), ``reduce_scatter``.
    ``sampling``: what the rank holds inside the trainer's ``gathered`` block (the whole policy beside the
    shards, the last step's gradients, AdamW state), measured, plus the static KV cache, by arithmetic
    (``kv_cache_bytes``: the sampler runs on fake CUDA tensors, outside the tracker); the sampling loop's
    own logits and temporaries are not counted. ``peak``: the larger of the two."""
    peak, held = report["memory_bytes"]["fsdp_peak"], report["memory_bytes"]["fsdp_sampling"]

    def cats(m: dict[str, int]) -> dict[str, float]:
        return {"sharded_params": m.get("sharded_param", 0) / GB,
                "gathered": (m.get("unsharded_param", 0) + m.get("all_gather", 0)) / GB,
                "grads": (m.get("sharded_grad", 0) + m.get("unsharded_grad", 0)) / GB,
                "adamw": m.get("optstate", 0) / GB, "activations": m.get("activation", 0) / GB,
                "temp": m.get("temp", 0) / GB, "reduce_scatter": m.get("reduce_scatter", 0) / GB}

    kv = kv_cache_bytes(report["shape"])
    update, sampling = peak.get("total", 0), held.get("total", 0) + kv
    step = report["grpo_step"]
    row = {"gpus": report["world"], "source": "fake-world", "rank_rollouts": step["rollouts"],
           "micro_batch_rows": step["micro_batch_rows"], "update": {**cats(peak), "total": update / GB},
           "sampling": {**cats(held), "kv_cache_arithmetic": kv / GB, "total": sampling / GB},
           "peak": max(update, sampling) / GB}
    return _round(row)


def _round(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _round(v) for k, v in d.items()}
    return round(d, 2) if isinstance(d, float) else d


def flops_full(report: dict[str, Any]) -> dict[str, int]:
    """The sampling FLOPs scaled from the short loops to the full lengths (by tokens processed)."""
    flops = dict(report["flops"])
    scale = report.get("flop_scale")
    if scale and scale["processed"]:
        flops["sampling"] = int(math.ceil(flops["sampling"] * scale["full"] / scale["processed"]))
    return flops
