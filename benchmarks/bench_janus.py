"""Benchmark: the project's KV-cached CFG image loop against transformers' image-mode ``generate``.

Both run on the same randomly initialised Janus-Pro-1B-sized model (Llama 2048 wide, 24 layers, 16 heads,
MLP 5632, text vocabulary 102,400; 16,384 image codes on a 24x24 grid, 384 px VQ decoder), on the same
prompt, greedily (``top_k=1`` / ``do_sample=False``) so that the token streams can be compared too, with
CFG 5. The understanding vision tower (SigLIP-L, ~300 M parameters in Janus-Pro) is cut to one tiny
layer: image generation never runs it, so it would only cost RAM.

transformers' loop always runs ``vision_config.num_image_tokens`` steps (``max_new_tokens`` is ignored in
image mode), so ``--tokens`` sets that field for the run. Peak memory is the resident set size (RSS) polled
every 5 ms during each phase (tracemalloc does not see torch's allocations), or the CUDA allocator's peak.
Each method first runs one untimed prefill + step (warm-up), then ``--repeat`` timed runs in alternating
order; the best time is reported with every run's time and the load average (the CPU may be shared).

    nice -n 10 .venv/bin/python benchmarks/bench_janus.py --tokens 32            # CPU, fp32 (~7 GB RAM)
    .venv/bin/python benchmarks/bench_janus.py --device cuda --full              # 576 tokens x 16, bf16
    .venv/bin/python benchmarks/bench_janus.py --device cuda --full --batch 64   # the issue's 64 images

Methods, in the same run: ``eager`` (the policy's default loop: the mask grows a column per step),
``static`` (``FixedShapeDecoder``: static cache, fixed-shape step), ``compiled`` (the same step under
``torch.compile(mode="reduce-overhead")``, CUDA graphs; CUDA only) and transformers' ``generate``. Each gets
``images_per_s`` (batch / best time) and ``ms_per_step``. ``bandwidth_bound`` (CUDA): the bytes one decode
step must read at least (the LLM's decoder blocks, final norm and image head in the model dtype, plus the
K and V cache of every row at the average length of the run) divided by a copy bandwidth measured in the
same run (``copy_`` of a 2 GiB buffer: read + write bytes / time), and the images/s that bound allows.

``bf16_logits`` (when the dtype is bf16): greedy token streams of two bf16 loops diverge quickly with
random weights (argmax ties are fragile), so parity is shown on logits over the *same* tokens: the
``eager`` loop's conditional logits at every step, the teacher-forced logits of the same tokens in bf16
(one parallel pass, ``JanusPolicy.token_logits``' path), and the same teacher-forced pass in fp32 as the
reference; and transformers' own per-step scores (recorded by a pass-through logits processor) up to the
first step where its greedy token differs from the loop's. Each comparison reports the largest and the
99.9th-percentile absolute difference divided by the reference logits' standard deviation, and
``within_tolerance`` for a tolerance of 0.05 standard deviations at the 99.9th percentile. Why 0.05:
bf16 keeps 8 significant bits (unit roundoff u = 2**-8 = 0.0039); a logit is a 2048-term dot product of
the last hidden state, which itself went through 24 blocks of bf16 rounding whose errors add roughly
like a random walk (sqrt(24) * u = 0.019 relative) and the fp32-accumulated dot product adds about u
more: about 0.02-0.025 of the logits' scale is expected from rounding alone, and 0.05 leaves a factor 2 for
the different kernel orders (a one-row decode step vs a 576-row parallel pass). A real bug (a wrong
position, mask or cache entry) moves logits by a sizeable fraction of a standard deviation or more. The
fp32 run needs no tolerance: the CPU tests assert the same tokens and < 1e-4 logits there.

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BOS, EOS, PAD, BOI = 100000, 100001, 100002, 100016  # Janus-Pro's ids (BOI: <begin_of_image>)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def measure(device: str, out: dict[str, Any]):
    """Wall time and peak memory (RSS on the CPU, allocator peak on CUDA) of the enclosed block."""
    import torch

    stop = threading.Event()
    base = _rss_mb()
    peak = [base]

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.005)

    thread = threading.Thread(target=poll, daemon=True)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_base = torch.cuda.memory_allocated()
    thread.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        if device == "cuda":
            torch.cuda.synchronize()
        out["seconds"] = round(time.perf_counter() - start, 3)
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_mb())
        out["rss_start_mb"] = round(base, 1)
        out["rss_peak_mb"] = round(peak[0], 1)
        out["rss_added_mb"] = round(peak[0] - base, 1)
        if device == "cuda":
            out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            out["cuda_added_mb"] = round((torch.cuda.max_memory_allocated() - cuda_base) / 2**20, 1)


def build_model(device: str, dtype: Any, layers: int = 24) -> Any:
    """A Janus-Pro-1B-sized ``JanusForConditionalGeneration`` with random weights."""
    import torch
    from transformers import (
        GenerationConfig,
        JanusConfig,
        JanusForConditionalGeneration,
        JanusVisionConfig,
        JanusVQVAEConfig,
        LlamaConfig,
    )

    text = LlamaConfig(vocab_size=102400, hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers,
                       num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=16384,
                       bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=False)
    vision = JanusVisionConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=384,
                               patch_size=16, num_image_tokens=576, projection_dim=2048)
    vq = JanusVQVAEConfig(num_embeddings=16384, embed_dim=8, projection_dim=2048, image_token_embed_dim=2048)
    config = JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=100581,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = JanusForConditionalGeneration(config)
    model = model.to(dtype).eval()
    model.generation_config = GenerationConfig(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                                               generation_kwargs={"boi_token_id": BOI})
    return model


def copy_bandwidth(device: str, gib: float = 2.0) -> float:
    """Bytes per second of a device-to-device ``copy_`` (read + write), best of 5."""
    import torch

    n = int(gib * 2**30) // 2
    a = torch.empty(n, dtype=torch.bfloat16, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    best = float("inf")
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        b.copy_(a)
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1000)
    del a, b
    return 2 * n * 2 / best


def bandwidth_bound(model: Any, args: Any, rows: int) -> dict[str, Any]:
    """The least bytes one decode step reads, over the measured copy bandwidth (see the module doc)."""
    lm, inner = model.model.language_model, model.model
    elem = next(model.parameters()).element_size()
    weights = (sum(p.numel() for p in lm.layers.parameters()) + sum(p.numel() for p in lm.norm.parameters())
               + sum(p.numel() for p in inner.generation_head.parameters())) * elem
    cfg = lm.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    avg_len = args.prompt_len + args.tokens / 2
    kv = 2 * cfg.num_hidden_layers * rows * cfg.num_key_value_heads * head_dim * avg_len * elem
    bw = copy_bandwidth("cuda")
    step_s = (weights + kv) / bw
    return {"copy_bandwidth_gb_s": round(bw / 1e9, 1), "weight_bytes_per_step": int(weights),
            "kv_bytes_per_step_avg": int(kv), "ms_per_step": round(1000 * step_s, 3),
            "images_per_s": round(args.batch / (args.tokens * step_s), 2)}


def bf16_logits(model: Any, rows: list[list[int]], args: Any, tolerance: float = 0.05) -> dict[str, Any]:
    """Loop vs teacher-forced (bf16) vs fp32 teacher-forced vs transformers' scores, on the same tokens."""
    import torch
    from transformers import LogitsProcessorList

    from irisbench.policies.janus_decode import _left_pad, _positions, sample_image_tokens

    n = args.tokens
    gens = [torch.Generator(device="cuda").manual_seed(i) for i in range(len(rows))]
    out = sample_image_tokens(model, rows, gens, num_tokens=n, cfg=args.cfg, bos_id=BOS, boi_id=BOI, pad_id=PAD,
                              top_k=1, keep_logits=True)
    loop = out.logits.float()  # (B, n, V) conditional logits, on the CPU

    def teacher_forced() -> torch.Tensor:
        lm = model.model.language_model
        ids, mask = _left_pad(rows, PAD, "cuda")
        toks = out.tokens.to("cuda")
        with torch.no_grad():
            embeds = torch.cat([model.get_input_embeddings()(ids), model.prepare_embeddings_for_image_generation(toks)],
                               dim=1)
            full = torch.cat([mask, torch.ones_like(toks)], dim=1)
            hidden = lm(inputs_embeds=embeds, attention_mask=full, position_ids=_positions(full)).last_hidden_state
            p = ids.shape[1]
            return model.model.generation_head(hidden[:, p - 1:p - 1 + n]).float().cpu()

    tf16 = teacher_forced()
    model.float()
    tf32 = teacher_forced()
    model.to(torch.bfloat16)

    class Record:
        def __init__(self) -> None:
            self.scores: list[torch.Tensor] = []

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            self.scores.append(scores.float().cpu())
            return scores

    rec = Record()
    ids = torch.tensor(rows, device="cuda")
    inner = model.model
    inner.vision_model.config.num_image_tokens = n
    try:
        with torch.no_grad():
            hf_tokens = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_mode="image",
                                       do_sample=False, guidance_scale=args.cfg,
                                       logits_processor=LogitsProcessorList([rec])).cpu()
    finally:
        inner.vision_model.config.num_image_tokens = 576
    differ = (hf_tokens != out.tokens).any(0).nonzero()
    agree = int(differ[0]) if len(differ) else n  # steps before the first differing token: same context

    def compare(a: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
        d = (a - ref).abs().flatten() / ref.std()
        q = float(torch.quantile(d[torch.randperm(d.numel())[:1_000_000]], 0.999)) if d.numel() else 0.0
        return {"max_over_std": round(float(d.max()), 4) if d.numel() else 0.0, "p999_over_std": round(q, 4),
                "within_tolerance": q <= tolerance}

    res = {"tolerance_p999_over_std": tolerance, "steps": n,
           "loop_vs_teacher_forced_bf16": compare(loop, tf16),
           "loop_vs_teacher_forced_fp32": compare(loop, tf32),
           "teacher_forced_bf16_vs_fp32": compare(tf16, tf32),
           "hf_steps_with_the_same_tokens": agree}
    if agree:
        hf = torch.stack(rec.scores[:agree], dim=1)  # (rows or 2*rows, agree, V)
        b = len(rows)
        if hf.shape[0] == 2 * b:  # raw [cond; uncond] scores: compare the conditional half
            res["loop_vs_hf_scores"] = compare(loop[:, :agree], hf[:b])
        else:  # CFG-mixed scores
            unc = out.uncond_logits.float()[:, :agree]
            mixed = unc + args.cfg * (loop[:, :agree] - unc)
            res["loop_vs_hf_scores"] = compare(mixed, hf)
    return res


def summarise(entries: list[dict[str, Any]], tokens: int, batch: int) -> dict[str, Any]:
    """Best (minimum) time over the repeats, every run's time, and the largest memory peak."""
    best = min(e["seconds"] for e in entries)
    out: dict[str, Any] = {
        "seconds": best,
        "runs_s": [e["seconds"] for e in entries],
        "s_per_step": round(best / tokens, 4),
        "s_per_image_token": round(best / (tokens * batch), 4),
    }
    for key in ("rss_peak_mb", "rss_added_mb", "cuda_peak_mb", "cuda_added_mb"):
        if key in entries[0]:
            out[key] = max(e[key] for e in entries)
    return out


def count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=32, help="image tokens per image (576 = a full image)")
    parser.add_argument("--batch", type=int, default=1, help="images in parallel (each with its CFG row)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="default: float32 on cpu, bfloat16 on cuda")
    parser.add_argument("--full", action="store_true", help="576 tokens, 16 images, bf16 (for a GPU)")
    parser.add_argument("--prompt-len", type=int, default=64, help="prompt tokens incl. BOS and BOI")
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--no-decode", action="store_true", help="skip timing the VQ decoder")
    parser.add_argument("--layers", type=int, default=24, help="LLM layers (fewer only for a smoke run)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per method, alternating order")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled (CUDA graphs) loop")
    args = parser.parse_args(argv)
    if args.full:
        args.tokens, args.batch, args.dtype = 576, 16, args.dtype or "bfloat16"
    if not 1 <= args.tokens <= 576 or args.batch < 1 or args.prompt_len < 3 or args.repeat < 1:
        parser.error("--tokens must be in 1..576, --batch >= 1, --prompt-len >= 3, --repeat >= 1")

    import torch

    from irisbench.policies.janus_decode import sample_image_tokens

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    result: dict[str, Any] = {"device": args.device, "dtype": str(dtype).replace("torch.", ""),
                              "cpu_count": os.cpu_count(), "load_average_start": os.getloadavg(),
                              "torch_threads": torch.get_num_threads(), "tokens": args.tokens,
                              "batch": args.batch, "cfg": args.cfg, "prompt_len": args.prompt_len,
                              "llm_layers": args.layers}
    if args.device == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    build: dict[str, Any] = {}
    with measure(args.device, build):
        model = build_model(args.device, dtype, args.layers)
    inner = model.model
    result["build"] = build
    result["parameters"] = {
        "total": count(model),
        "language_model_and_lm_head": count(inner.language_model) + count(model.lm_head),
        "image_generation_path": count(inner.generation_embeddings) + count(inner.generation_aligner)
        + count(inner.generation_head),
        "vq_model": count(inner.vqmodel),
        "vision_tower_reduced": count(inner.vision_model) + count(inner.aligner),
    }

    g = torch.Generator().manual_seed(1234)
    body = torch.randint(0, 100000, (args.prompt_len - 2,), generator=g).tolist()
    prompt = [BOS, *body, BOI]
    rows = [prompt] * args.batch

    gens = [torch.Generator(device=args.device).manual_seed(i) for i in range(args.batch)]
    ids = torch.tensor(rows, device=args.device)

    def loop(decode: str):
        def run(tokens: int) -> Any:
            return sample_image_tokens(model, rows, gens, num_tokens=tokens, cfg=args.cfg, bos_id=BOS, boi_id=BOI,
                                       pad_id=PAD, top_k=1, decode=decode).tokens
        return run

    def run_hf(tokens: int) -> Any:
        inner.vision_model.config.num_image_tokens = tokens  # the only length knob of HF's image loop
        try:
            with torch.no_grad():
                return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_mode="image",
                                      do_sample=False, guidance_scale=args.cfg).cpu()
        finally:
            inner.vision_model.config.num_image_tokens = 576

    methods = {"eager": loop("eager"), "static": loop("static"), "hf_generate": run_hf}
    if args.device == "cuda" and not args.no_compile:
        methods["compiled"] = loop("compiled")
    for name, run in methods.items():  # warm-up, untimed (the compiled step captures its graphs here)
        entry = {}
        with measure(args.device, entry):
            run(min(args.tokens, 8) if name != "compiled" else args.tokens)
        result.setdefault("warmup_s", {})[name] = entry["seconds"]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in methods}
    outputs: dict[str, Any] = {}
    for rep in range(args.repeat):  # alternate the order, so that a burst of load hits all
        order = list(methods.items())
        for name, run in order if rep % 2 == 0 else order[::-1]:
            entry: dict[str, Any] = {}
            with measure(args.device, entry):
                outputs[name] = run(args.tokens)
            runs[name].append(entry)
    for name in methods:
        summary = summarise(runs[name], args.tokens, args.batch)
        summary["images_per_s"] = round(args.batch / summary["seconds"], 3)
        summary["ms_per_step"] = round(1000 * summary["seconds"] / args.tokens, 3)
        result[name] = summary
    hf = result["hf_generate"]
    for name in methods:
        if name != "hf_generate":
            result[name]["speedup_vs_hf_generate"] = round(hf["seconds"] / result[name]["seconds"], 3)
            result[name]["greedy_token_agreement_with_hf"] = round(
                (outputs[name].cpu() == outputs["hf_generate"].cpu()).float().mean().item(), 4)
    result["hf_over_ours_time"] = result["eager"]["speedup_vs_hf_generate"]  # the earlier key, kept
    if args.device == "cuda":
        result["bandwidth_bound"] = bandwidth_bound(model, args, rows=2 * args.batch if args.cfg != 1 else args.batch)
        best = min(result[k]["ms_per_step"] for k in methods)
        result["bandwidth_bound"]["best_ms_per_step_over_bound"] = round(
            best / result["bandwidth_bound"]["ms_per_step"], 2)
    if dtype == torch.bfloat16:
        result["bf16_logits"] = bf16_logits(model, rows, args)

    if not args.no_decode:
        decode: dict[str, Any] = {"images": 1}
        codes = torch.randint(0, 16384, (1, 576), generator=g).to(args.device)
        with measure(args.device, decode), torch.no_grad():
            pixels = model.decode_image_tokens(codes)
        decode["shape"] = list(pixels.shape)
        result["vq_decode"] = decode
    result["load_average_end"] = os.getloadavg()
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
