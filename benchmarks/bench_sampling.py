"""Sampling and pretraining performance of the shapes-lm policy, printed as JSON.

Measured in one run, on one model and one batch (default: the shipped base, 32 prompts, CFG rows on):

- KV-cached sampling (the reference loop) vs the naive baseline that recomputes the whole prefix at every step
  (``generate(use_cache=False)``), generated tokens per second for both (plan + 64 image tokens per
  row) and the speed-up; the two must draw identical tokens;
- sampling with vs without the per-token statistics bookkeeping (logp, self-certainty, entropy):
  ``generate(record_stats=False)``; best of ``--repeats`` alternating runs each;
- the sampling loops in the same run, at the GRPO batch (8 prompts x 8 rollouts, CFG) and the eval batch
  (64 prompts x 1, CFG): today's reference loop (``generate(fast=False)``, transformers' forward with a
  ``DynamicCache``), the previous fast loop (``shapes_decode_static`` beside this script), the default fast loop
  (``irisbench.policies.shapes_decode``) and its ``continue_plan`` variant (not exact): images/s and images
  per CPU second (best of ``--repeats`` alternating runs), speed-ups over the reference in both, tokens
  differing from the reference's and the largest gap between kept image logits; ``--compile-probe`` adds
  ``torch.compile`` of one decode step (compile seconds, compiled vs eager step ms, logit gap);
- one pretraining step (default recipe) in fp32 and in bf16 autocast, and what ``precision="auto"`` picks;
- peak resident memory (ru_maxrss) of a fresh process that (a) only loads the policy, (b) runs a few
  pretraining steps of the default recipe, (c) samples 256 images.

    python benchmarks/bench_sampling.py [--checkpoint DIR] [--batch 32] [--repeats 3] [--threads 2]
                                        [--loops-only] [--compile-probe]

Loops measured on Intel Xeon, AVX-512 + AMX, 2 cores, shared with two other jobs (``--loops-only
--threads 1 --repeats 5``), images/s: GRPO batch reference 35.1, previous fast loop 55.0 (1.57x), fast
loop 59.0 (1.68x; CPU time 1.68x), continue_plan 58.7 (1.67x, 9 tokens differing, logit gap 3.9e-5);
eval batch 34.8, 49.2 (1.41x), 59.3 (1.70x), 62.1 (1.78x, logit gap 4.5e-5). The fast loop's tokens
were identical and its image logits bit-identical (gap 0.0) at both batches. An earlier run on one
thread: 1.83x at both. ``--threads 2`` on the busy machine is dominated by OpenMP threads spinning
(reference runs of 3.5-48 s). ``--compile-probe``: compile 7.6 s (warm inductor cache), step 20.0 ms
compiled vs 10.7 ms eager, gap 6.7e-6; ``max-autotune-no-cudagraphs`` alike.

The same Xeon, quiet (``--loops-only --repeats 5``), images/s, reference -> fast loop (speed-up):
one thread, GRPO batch 55.3 -> 95.7 (1.73x), eval batch 61.2 -> 105.2 (1.72x); two threads 77.8 -> 124.1
(1.60x; CPU time 1.78x) and 85.0 -> 127.5 (1.50x); tokens identical, logit gap 0.0 (``sgemm_rows_invariant``
true). With the math libraries held to AVX2 (``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
ONEDNN_MAX_CPU_ISA=AVX2``; ``sgemm_rows_invariant`` false): one thread 49.6 -> 79.6 (1.61x) and 48.9 -> 76.1
(1.56x); two threads 72.2 -> 109.9 (1.52x) and 75.9 -> 111.7 (1.47x); logit gaps 2.9e-5 to 4.1e-5, and 9
of the GRPO batch's tokens differed at two threads (a flipped draw changes the rest of its row).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes_decode_static import generate_chunk_static  # noqa: E402  (the benchmark's own baseline loop)

PROMPTS = [
    "a photo of a red circle", "a photo of three squares", "a photo of a diamond left of a triangle",
    "a photo of a blue square", "a photo of an orange diamond and a white circle", "a photo of four circles",
    "a photo of a square below a circle", "a photo of a triangle and a square",
]


def _policy(checkpoint: str | None) -> Any:
    from irisbench.policies.shapes_lm import SHIPPED_BASE, ShapesLMPolicy

    path = Path(checkpoint) if checkpoint else SHIPPED_BASE
    if (path / "model.safetensors").is_file():
        return ShapesLMPolicy.load(path), str(path)
    from irisbench.world.tokenizer import fit_patch_tokenizer

    return ShapesLMPolicy.create(fit_patch_tokenizer(2000, 0)), "random init (default dims)"


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def child(kind: str, checkpoint: str | None, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    if kind == "load":
        _policy(checkpoint)
        return {"peak_rss_mb": _peak_rss_mb()}
    if kind == "sample256":
        policy, _ = _policy(checkpoint)
        prompts = (PROMPTS * 32)[:256]
        dt, r = _timed(lambda: policy.sample(prompts, n=1, seed=0))
        return {"peak_rss_mb": _peak_rss_mb(), "images": len(r.images), "seconds": round(dt, 2),
                "batch_size": policy.defaults.batch_size}
    if kind.startswith("pretrain"):  # "pretrain" (the default precision, resolved), "pretrain-bf16", "pretrain-fp32"
        from irisbench.policies.shapes_lm import ShapesLMPolicy
        from irisbench.train.pretrain import BatchMaker, PretrainConfig, batch_loss, resolve_precision
        from irisbench.world.tokenizer import fit_patch_tokenizer

        cfg = PretrainConfig()
        asked = kind.partition("-")[2] or cfg.precision
        precision, why = resolve_precision(asked)
        steps = 2 if precision == "bf16" else 5  # bf16 without native support takes ~16 s a step
        tok = fit_patch_tokenizer(cfg.tokenizer_scenes, cfg.seed, cfg.max_codes)
        policy = ShapesLMPolicy.create(tok, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                                       num_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size)
        model = policy.model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        maker = BatchMaker(cfg, policy.vocab, tok)
        times = []
        for step in range(steps):
            t0 = time.perf_counter()
            loss, _ = batch_loss(model, maker.tensors(step), precision)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        return {"peak_rss_mb": _peak_rss_mb(), "steps": steps, "batch_size": cfg.batch_size,
                "precision_asked": asked, "precision": precision, "why": why,
                "s_per_step_after_first": round(sum(times[1:]) / (steps - 1), 3)}
    raise ValueError(f"unknown child kind {kind!r}")


def compile_probe(policy: Any, repeats: int) -> dict[str, Any]:
    """``torch.compile`` (inductor) of one image decode step at the eval batch's shape (128 rows, column 64 of
    a 94-column cache), against the same step eager: compile seconds, best step ms of each, largest gap."""
    import torch

    from irisbench.policies.shapes_step import Decoder, Weights

    w = Weights.of(policy.model)
    out = w.out(slice(policy.vocab.image_offset, policy.vocab.size))
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(policy.vocab.image_offset, policy.vocab.size, (128,), generator=gen)
    positions = torch.randint(20, 40, (128,), generator=gen)
    result: dict[str, Any] = {}
    with torch.inference_mode():
        dec = Decoder(w, 128, 94)
        for k in dec.k + dec.v:
            k.normal_(generator=gen)
        dec.mask[:, :, :31] = 0.0
        eager = dec.step(tokens, positions, 64, out)
        for mode in ("default", "max-autotune-no-cudagraphs"):
            torch._dynamo.reset()
            step = torch.compile(dec.step, dynamic=False, mode=None if mode == "default" else mode)
            try:
                t_compile, got = _timed(lambda step=step: step(tokens, positions, 64, out))
            except Exception as e:  # no compiler, or inductor failing: the loop never compiles, so report it
                result[mode] = {"error": f"{type(e).__name__}: {e}"[:300]}
                continue
            ms = {"eager": [], "compiled": []}
            for _ in range(max(repeats, 3) * 5):
                ms["eager"].append(_timed(lambda: dec.step(tokens, positions, 64, out))[0] * 1e3)
                ms["compiled"].append(_timed(lambda step=step: step(tokens, positions, 64, out))[0] * 1e3)
            result[mode] = {"compile_s": round(t_compile, 1), "eager_step_ms": round(min(ms["eager"]), 2),
                            "compiled_step_ms": round(min(ms["compiled"]), 2),
                            "max_logit_gap": float((got - eager).abs().max())}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="shapes-lm folder (default: the shipped base)")
    ap.add_argument("--batch", type=int, default=32, help="rows per sampling batch (CFG doubles the forward)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--loops-only", action="store_true", help="only the reference vs fast loop comparison")
    ap.add_argument("--compile-probe", action="store_true",
                    help="also time torch.compile of the decode step (compile seconds, step ms vs eager)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.checkpoint, args.threads)))
        return

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    policy, source = _policy(args.checkpoint)
    prompts = (PROMPTS * (args.batch // len(PROMPTS) + 1))[: args.batch]
    kw = {"n": 1, "seed": 0, "batch_size": args.batch}
    policy.generate(prompts[:4], **kw)  # warm-up

    def n_tokens(r: Any) -> int:
        return int(r.token_mask.sum())

    def loops(prompts_: list[str], n: int) -> dict[str, Any]:
        variants = {"reference": {"fast": False}, "static": {"fast": generate_chunk_static}, "fast": {"fast": True},
                    "fast_continue_plan": {"fast": True, "continue_plan": True}}
        times: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}  # process CPU time: less sensitive to load
        mismatch: dict[str, int] = {k: 0 for k in variants if k != "reference"}
        for rep in range(args.repeats):  # alternating, so load drifts hit every loop alike
            ref = None
            for name, extra in variants.items():
                c0 = time.process_time()
                dt, r = _timed(lambda extra=extra, rep=rep: policy.generate(prompts_, n=n, seed=rep, **extra))
                cpu[name].append(time.process_time() - c0)
                times[name].append(dt)
                if ref is None:
                    ref = r
                else:
                    mismatch[name] += int((r.tokens != ref.tokens).sum())
        n_img = len(prompts_) * n
        out: dict[str, Any] = {"images": n_img, "repeats": args.repeats}
        for name, ts in times.items():
            out[f"{name}_images_per_s"] = round(n_img / min(ts), 1)
            out[f"{name}_all_s"] = [round(x, 3) for x in ts]
            out[f"{name}_images_per_cpu_s"] = round(n_img / min(cpu[name]), 1)
        for name, bad in mismatch.items():
            out[f"{name}_speedup"] = round(min(times["reference"]) / min(times[name]), 2)
            out[f"{name}_cpu_speedup"] = round(min(cpu["reference"]) / min(cpu[name]), 2)
            out[f"{name}_tokens_differing"] = bad
        # the largest gap between the kept image logits (conditional and guided) and the reference's, seed 0
        kept = {name: policy.generate(prompts_, n=n, seed=0, keep_logits=True, **extra).extras["logits"]
                for name, extra in variants.items()}
        for name in mismatch:
            gap = max(float((x - y).abs().max()) for a, b in zip(kept["reference"], kept[name], strict=True)
                      for key in ("image_cond", "image_guided") for x, y in zip(a[key], b[key], strict=True))
            out[f"{name}_max_image_logit_gap"] = gap
        return out

    from irisbench.core.devices import cpu_bf16_native
    from irisbench.policies.shapes_step import sgemm_rows_invariant

    fast_loop = {"cpu": {"capability": str(torch.backends.cpu.get_cpu_capability()),
                         "bf16": cpu_bf16_native()[1],
                         "sgemm_rows_invariant": sgemm_rows_invariant(policy.model.config.hidden_size,
                                                                      policy.model.config.intermediate_size)},
                 "grpo_batch_8x8": loops(PROMPTS, 8), "eval_batch_64x1": loops(PROMPTS * 8, 1)}
    if args.compile_probe:
        fast_loop["compile_probe"] = compile_probe(policy, args.repeats)
    if args.loops_only:
        print(json.dumps({"threads": args.threads, "fast_loop": fast_loop}, indent=1))
        return

    t_cache, r_cache = _timed(lambda: policy.generate(prompts, fast=False, **kw))
    t_naive, r_naive = _timed(lambda: policy.generate(prompts, use_cache=False, **kw))
    same = bool(np.array_equal(r_cache.tokens, r_naive.tokens))

    on, off = [], []
    for _ in range(args.repeats):
        on.append(_timed(lambda: policy.generate(prompts, **kw))[0])
        off.append(_timed(lambda: policy.generate(prompts, record_stats=False, **kw))[0])

    memory = {}
    for kind in ("load", "pretrain", "pretrain-fp32", "pretrain-bf16", "sample256"):
        cmd = [sys.executable, __file__, "--child", kind, "--threads", str(args.threads)]
        if args.checkpoint:
            cmd += ["--checkpoint", args.checkpoint]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        memory[kind] = json.loads(out.strip().splitlines()[-1])

    result = {
        "model": source, "parameters": policy.num_parameters(), "threads": args.threads,
        "batch_rows": args.batch, "cfg": policy.defaults.cfg, "image_tokens_per_row": policy.num_image_tokens,
        "kv_cache": {
            "cached_seconds": round(t_cache, 3), "recompute_seconds": round(t_naive, 3),
            "cached_tokens_per_s": round(n_tokens(r_cache) / t_cache, 1),
            "recompute_tokens_per_s": round(n_tokens(r_naive) / t_naive, 1),
            "speedup": round(t_naive / t_cache, 2), "identical_tokens": same,
            "generated_tokens": n_tokens(r_cache),
        },
        "fast_loop": fast_loop,
        "stats_bookkeeping": {
            "with_stats_best_s": round(min(on), 4), "without_stats_best_s": round(min(off), 4),
            "overhead_pct": round(100 * (min(on) / min(off) - 1), 2),
            "with_stats_all_s": [round(x, 4) for x in on], "without_stats_all_s": [round(x, 4) for x in off],
        },
        "peak_rss_mb": {
            "load_only": round(memory["load"]["peak_rss_mb"], 1),
            "pretrain_5_steps": round(memory["pretrain"]["peak_rss_mb"], 1),
            "sample_256_images": round(memory["sample256"]["peak_rss_mb"], 1),
        },
        "pretrain_probe": memory["pretrain"], "sample256_probe": memory["sample256"],
        "pretrain_step_s": {"fp32": memory["pretrain-fp32"]["s_per_step_after_first"],
                            "bf16": memory["pretrain-bf16"]["s_per_step_after_first"],
                            "auto_chose": memory["pretrain"]["precision"], "why": memory["pretrain"]["why"]},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
