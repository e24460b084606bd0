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
    args = parser.parse_args(argv)
    if args.full:
        args.tokens, args.batch, args.dtype = 576, 16, args.dtype or "bfloat16"
    if not 1 <= args.tokens <= 576 or args.batch < 1 or args.prompt_len < 3 or args.repeat < 1:
        parser.error("--tokens must be in 1..576, --batch >= 1, --prompt-len >= 3, --repeat >= 1")

    import torch

    from irisbench.policies.janus import sample_image_tokens

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

    def run_ours(tokens: int) -> Any:
        return sample_image_tokens(model, rows, gens, num_tokens=tokens, cfg=args.cfg, bos_id=BOS, boi_id=BOI,
                                   pad_id=PAD, top_k=1).tokens

    def run_hf(tokens: int) -> Any:
        inner.vision_model.config.num_image_tokens = tokens  # the only length knob of HF's image loop
        try:
            with torch.no_grad():
                return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_mode="image",
                                      do_sample=False, guidance_scale=args.cfg).cpu()
        finally:
            inner.vision_model.config.num_image_tokens = 576

    for run in (run_ours, run_hf):  # warm-up: one prefill + one step each, untimed
        run(1)
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "hf_generate": []}
    outputs: dict[str, Any] = {}
    for rep in range(args.repeat):  # alternate the order, so that a burst of load hits both
        order = (("ours", run_ours), ("hf_generate", run_hf))
        for name, run in order if rep % 2 == 0 else order[::-1]:
            entry: dict[str, Any] = {}
            with measure(args.device, entry):
                outputs[name] = run(args.tokens)
            runs[name].append(entry)
    mine, theirs = outputs["ours"], outputs["hf_generate"]
    ours, hf = (summarise(runs[k], args.tokens, args.batch) for k in ("ours", "hf_generate"))
    result["ours"], result["hf_generate"] = ours, hf
    result["hf_over_ours_time"] = round(hf["seconds"] / ours["seconds"], 3)
    same = (mine.cpu() == theirs).float().mean().item()
    result["greedy_token_agreement"] = round(same, 4)

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
