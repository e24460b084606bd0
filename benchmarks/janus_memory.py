"""Memory per GPU of an IRIS GRPO step on Janus-Pro-1B and -7B under FSDP2, on paper (and measured for 1B).

The model, per GPU, for N GPUs (``parallel: fsdp`` shards every unit over all N ranks; bf16 weights, and
AdamW state in the parameters' dtype as torch keeps it):

- ``params``: the policy's parameters / N (trainable LLM + ``lm_head``, and the frozen towers in the root
  unit), 2 bytes each;
- ``reference``: the KL reference copy (beta > 0), sharded the same way;
- ``grads``: trainable / N, 2 bytes; ``adamw``: two moments of trainable / N, 2 bytes each;
- ``gathered``: the largest transient of whole parameters: sampling gathers the whole policy once per
  batch (``irisbench.train.sharding.gathered``), the teacher-forced pass one unit at a time (the largest unit:
  the 102,400-row embedding or ``lm_head``); the sampling gather is counted, as the larger;
- LoRA presets (``janus-pro-7b-iris-lora``: ``lora: {}``, ``parallel: ddp``): ``predict_lora``, the table's
  ``lora_r16`` rows;
- ``kv_cache``: the sampling loop's static cache, 2 (K, V) x layers x rows x width x length x 2 bytes, rows
  = 2 x ``batch_size`` (CFG), length = image prompt (with its CoT) + 576;
- ``activations``: the teacher-forced pass with gradients for one micro-batch (rows = the rank's rollouts /
  ``gradient_accumulation_steps``) over the text part (CoT prompt + CoT) and the image part (image prompt +
  576 tokens): per token and decoder layer, the tensors a Llama block saves for backward in bf16
  (norm inputs, q, k, v, attention output, o-proj input, gate, up, SiLU output, down-proj input:
  ``2 * (8 * hidden + 4 * mlp)`` bytes; SDPA keeps no seq x seq matrix) plus, with ``logits_chunk``, one
  chunk's fp32 logits and their softmax temporaries (``4 * chunk * vocab * 4`` bytes), else every CoT
  position's fp32 logits and temporaries. With activation checkpointing only each block's input
  (``2 * hidden`` bytes per token and layer) plus one block's activations stay.

What it leaves out (so the prediction is a floor): the CUDA caching allocator's fragmentation and
reserved-but-free blocks, NCCL buffers, the CUDA context (~0.5 GB, not in ``max_memory_allocated``) and
the VQ decoder's transients. ``--measure`` (GPU) runs ``bench_janus_grpo.py`` on one GPU with the same
settings and prints the measured peak beside the 1-GPU 1B prediction.

    python benchmarks/janus_memory.py                 # the table for 1B and 7B, 1/2/4/8 GPUs (JSON)
    python benchmarks/janus_memory.py --measure       # plus the 1B measurement on this GPU
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from irisbench.dryrun.sizes import JANUS_SIZES, JanusSize  # noqa: E402

GB = 1e9
BF16 = 2


# the releases' shapes: one definition, the package's (irisbench/dryrun/sizes.py)
SIZES = JANUS_SIZES


@dataclass(frozen=True)
class Recipe:
    """The janus-pro-*-iris recipe's shape of one step."""

    rollouts: int = 64
    grad_accum: int = 2
    cot_tokens: int = 128
    cot_prompt: int = 190  # the T2I-R1 reasoning request, tokens (about)
    image_prompt: int = 40  # the image request before its CoT (about)
    image_tokens: int = 576
    sample_batch: int = 16  # JanusPolicy.batch_size: rows per sampling loop (x2 with CFG)
    beta: float = 0.01
    logits_chunk: int = 512
    checkpointing: bool = False


def predict(size: JanusSize, gpus: int, recipe: Recipe) -> dict[str, Any]:
    """Bytes per GPU of each part (see the module doc); ``total_gb`` is their sum."""
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    t, total = size.trainable(), size.total()
    params = total * BF16 / gpus
    reference = params if recipe.beta > 0 else 0.0
    grads = t * BF16 / gpus
    adamw = 2 * t * BF16 / gpus
    gathered = total * BF16 * (gpus - 1) / gpus  # the whole policy during sampling, beyond the own shard
    img_len = recipe.image_prompt + recipe.cot_tokens + recipe.image_tokens
    kv_width = size.hidden * size.kv // size.heads
    kv_cache = 2 * size.layers * 2 * recipe.sample_batch * kv_width * img_len * BF16
    rows = max(1, recipe.rollouts // gpus // recipe.grad_accum)
    text_len = recipe.cot_prompt + recipe.cot_tokens
    tokens = rows * (text_len + img_len)
    per_token_layer = 2 * (8 * size.hidden + 4 * size.mlp)
    if recipe.checkpointing:
        acts = tokens * size.layers * BF16 * size.hidden + rows * img_len * per_token_layer
    else:
        acts = tokens * size.layers * per_token_layer
    positions = recipe.logits_chunk if recipe.logits_chunk else rows * recipe.cot_tokens
    logits = 4 * positions * size.vocab * 4 + rows * recipe.image_tokens * size.codes * 4  # + image logits
    parts = {"params": params, "reference": reference, "grads": grads, "adamw": adamw, "gathered": gathered,
             "kv_cache": kv_cache, "activations": acts, "logits": logits}
    # sampling and the backward pass do not overlap: the peak holds the larger of the two transients
    peak = params + reference + grads + adamw + max(gathered + kv_cache, acts + logits)
    return {"gpus": gpus, "micro_batch_rows": rows, **{k: round(v / GB, 2) for k, v in parts.items()},
            "peak_gb": round(peak / GB, 2)}


def lora_parameters(size: JanusSize, r: int = 16) -> int:
    """LoRA A (r x in) and B (out x r) of the seven projections of every decoder block (the -lora presets)."""
    h, kv, m = size.hidden, size.hidden * size.kv // size.heads, size.mlp
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, m), (h, m), (m, h)]  # (in, out): q k v o gate up down
    return size.layers * sum(r * (i + o) for i, o in shapes)


def predict_lora(size: JanusSize, gpus: int, recipe: Recipe, r: int = 16) -> dict[str, Any]:
    """Bytes per GPU of a LoRA step (``lora: {}``, ``parallel: ddp``), by ``predict``'s method with these changes:

    - ``params``: the whole bf16 model on every GPU (replicated, not sharded); ``gathered``: 0;
    - ``reference``: 0 (the base with the adapters off, the same weights);
    - ``grads`` and ``adamw``: the adapters only, kept in fp32 by peft (4 bytes; two AdamW moments);
    - ``activations``: ``predict``'s (the backward still runs through every block to reach the adapters) plus,
      per token and block, what each adapter saves: its input cast to fp32 after dropout (4 bytes) and the
      dropout mask (1 byte) (q, k, v, o, gate, up read ``hidden``-wide inputs, down ``mlp``-wide; each adapter
      drops and casts its own copy), and the r-wide ``A x`` in fp32: ``5 * (6 * hidden + mlp) + 4 * 7 * r``
      bytes; with activation checkpointing, for one block only (as ``predict`` counts the recomputed block).
    """
    full = predict(size, gpus, recipe)
    a = lora_parameters(size, r)
    params = size.total() * BF16
    grads, adamw = a * 4, 2 * a * 4
    img_len = recipe.image_prompt + recipe.cot_tokens + recipe.image_tokens
    rows = max(1, recipe.rollouts // gpus // recipe.grad_accum)
    tokens = rows * (recipe.cot_prompt + recipe.cot_tokens + img_len)
    per_token_layer = 5 * (6 * size.hidden + size.mlp) + 4 * 7 * r
    adapter_acts = rows * img_len * per_token_layer if recipe.checkpointing else tokens * size.layers * per_token_layer
    acts = full["activations"] * GB + adapter_acts
    kv_cache, logits = full["kv_cache"] * GB, full["logits"] * GB
    parts = {"params": params, "reference": 0.0, "grads": grads, "adamw": adamw, "gathered": 0.0,
             "kv_cache": kv_cache, "activations": acts, "logits": logits}
    peak = params + grads + adamw + max(kv_cache, acts + logits)
    return {"gpus": gpus, "micro_batch_rows": rows, **{k: round(v / GB, 2) for k, v in parts.items()},
            "peak_gb": round(peak / GB, 2)}


def table(recipe: Recipe, gpu_counts: tuple[int, ...] = (1, 2, 4, 8)) -> dict[str, Any]:
    return {name: {"trainable_parameters": s.trainable(), "total_parameters": s.total(),
                   "per_gpu": [predict(s, n, recipe) for n in gpu_counts],
                   "lora_r16": {"trainable_parameters": lora_parameters(s),
                                "per_gpu": [predict_lora(s, n, recipe) for n in gpu_counts]}}
            for name, s in SIZES.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--logits-chunk", type=int, default=512)
    parser.add_argument("--sample-batch", type=int, default=16)
    parser.add_argument("--measure", action="store_true", help="run bench_janus_grpo.py on this GPU (1B)")
    parser.add_argument("--measured", type=Path, default=None,
                        help="a bench_janus_grpo.py JSON (same settings) to check the 1-GPU 1B prediction against")
    args = parser.parse_args(argv)
    recipe = Recipe(logits_chunk=args.logits_chunk, checkpointing=args.checkpointing,
                    sample_batch=args.sample_batch)
    out: dict[str, Any] = {"recipe": asdict(recipe), "table": table(recipe)}
    measured = None
    if args.measured is not None:
        measured = json.loads(args.measured.read_text())
    elif args.measure:
        import bench_janus_grpo

        argv = ["--rollouts", str(recipe.rollouts), "--grad-accum", str(recipe.grad_accum), "--cot-tokens",
                str(recipe.cot_tokens), "--sample-batch", str(recipe.sample_batch), "--logits-chunk",
                str(recipe.logits_chunk), "--steps", "1", "--no-baseline"] + (["--checkpointing"] * args.checkpointing)
        measured = bench_janus_grpo.main(argv)
    if measured is not None:
        from dataclasses import replace

        run = measured.get("chunked") or measured.get("whole_logits") or {}
        size = SIZES["janus-pro-1b"]
        if run.get("parameters"):  # the benchmark's model has a one-layer understanding tower
            size = replace(size, frozen_other=run["parameters"] - size.trainable())
        out["check_1b_one_gpu"] = {"predicted_peak_gb": predict(size, 1, recipe)["peak_gb"],
                                   "measured_peak_allocated_gb": run.get("cuda_peak_allocated_gb"),
                                   "measured_peak_reserved_gb": run.get("cuda_peak_reserved_gb"),
                                   "benchmark_parameters": run.get("parameters")}
        out["measurement"] = measured
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
