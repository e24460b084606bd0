"""The shapes LM's fast sampling loop (the default): the reference loop's arithmetic, without its overheads.

``ShapesLMPolicy.generate`` runs this loop by default (``fast=True``); ``fast=False`` runs the reference
loop (transformers' ``LlamaForCausalLM`` forward with a ``DynamicCache`` at every step), which stays the
definition of the numbers. This loop performs the same floating-point operations on the same values
(the decode step: ``irisbench.policies.shapes_step``), so where the CPU's sgemm rounds a row alike at any row
count (``sgemm_rows_invariant``; the AVX-512 Xeon measured) it reproduces the reference loop's logits bit for
bit, and elsewhere (MKL on AVX2) to round-off (tests and ``benchmarks/bench_sampling.py`` check the tokens;
the benchmark also reports the largest logit gap). What it saves:

- decode steps read and write a pre-allocated cache (no ``torch.cat`` growing it) through a few plain
  tensor ops per layer (no module calls, no mask building);
- the plan phase runs only rows still writing (finished rows are compacted away, kept as fillers while
  fewer than ``MIN_ROWS`` remain) instead of feeding padding through every row until the longest plan ends;
- the image phase's prefill of ``prefix + plan + [BOI]`` (left-padded to the longest row, as the reference
  does, so every softmax sums in the same lanes) runs once per distinct row: the 64 unconditional rows
  ``[BOS] [NULL] [BOI]`` are one row, repeated rollouts with equal plans one row; the unconditional rows'
  attention skips their padding in multiples of 16 columns;
- on a multi-core CPU the image phase is split by prompt into independent parts (each prompt's
  conditional and unconditional rows together, >= ``PART_ROWS`` rows each), one Python thread and one
  BLAS thread per part: the small elementwise ops then run on every core instead of one, and no op waits
  on a thread barrier. On the GPU, one part.

Measured (``benchmarks/bench_sampling.py --loops-only``; Intel Xeon, AVX-512 + AMX, 2 cores, shared with
two other jobs; best of 5 alternating runs, images/s): on one thread, the GRPO batch (8 prompts x 8
rollouts, CFG 3) 59-67 against the reference loop's 35-36 (1.68-1.83x; CPU time alike) and the
previous fast loop's 55-57; the eval batch (64 prompts x 1, CFG 3) 59-72 against 35-39 (1.70-1.83x)
and 49-58. Tokens identical and image logits bit-identical (largest gap 0.0) on both. On two threads
with the cores busy elsewhere every loop's OpenMP threads spin on barriers and single runs of the
reference took 3.5-48 s; there the split image phase gave 41-43 against the reference's 5-18 (2.3-9x),
which says more about the contention than about the loop. On the same Xeon, quiet: 1.72-1.73x on one thread,
1.50-1.60x on two (the reference loop's own two-thread scaling is better than on a busy machine); with MKL
held to AVX2, 1.47-1.61x. No compilation: ``torch.compile`` of the step
took 7.6 s (31 s with a cold cache) and ran slower; bf16 (not exact anyway) was no faster eagerly.

Why not 3x (roofline, eval batch, 64 images, one core): 63 image steps x 128 rows x ~3.9 MFLOP (~31
GFLOP: ~0.16 s at the ~200 GFLOP/s one core's sgemm reaches at these shapes), the fp32 KV cache read at
every step (~43 MB a step, ~2.7 GB in all: 0.11-0.25 s at the 11-25 GB/s one core streams from L3 here),
prefills and plan steps (~13 GFLOP, ~0.07 s): a floor of ~0.35-0.45 s against the reference loop's
1.6-1.8 s on one core, i.e. ~4x at the very best. The loop spends ~1 s: matmuls run at ~60% of their
isolated speed and attention at ~half the streaming bandwidth on the shared machine, and ~130 small
kernels a step (norms, RoPE, SiLU, cache writes: ~25% of its CPU time) cannot be fused without changing
the rounding. Skipping the image prefill (``continue_plan=True``, opt-in) saves little now that the prefill
runs once per distinct row, and changes the image logits by ~4e-5 (9 tokens differed in the benchmark's
GRPO batches), so it stays off; bf16 would change every number.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from irisbench.policies.shapes_step import MIN_ROWS, Decoder, Weights, supports_fast_decode

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from irisbench.policies.shapes_step import Out

PART_ROWS = 32  # the image phase is split only into parts of at least this many rows (cond + uncond)


def _run_parts(jobs: list[Callable[[], None]]) -> None:
    """Run ``jobs`` at once, one thread and one torch/BLAS thread each; restore the thread count after."""
    import torch

    if len(jobs) == 1:
        jobs[0]()
        return
    before = torch.get_num_threads()
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        try:
            torch.set_num_threads(1)  # this thread's OpenMP team (and MKL, shared) to one thread
            with torch.inference_mode():
                job()
        except BaseException as e:  # re-raised in the caller
            errors.append(e)

    torch.set_num_threads(1)
    try:
        threads = [threading.Thread(target=run, args=(job,), daemon=True) for job in jobs[1:]]
        for t in threads:
            t.start()
        run(jobs[0])
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(before)
    if errors:
        raise errors[0]


def image_parts(rows: int, guided: bool, device: Any, threads: int | None = None) -> int:
    """How many independent parts the image phase of ``rows`` prompts runs in: one per CPU thread, each
    with at least ``PART_ROWS`` decode rows and ``MIN_ROWS`` prompts' worth of rows per part."""
    import torch

    if getattr(device, "type", str(device)) != "cpu":
        return 1
    threads = torch.get_num_threads() if threads is None else threads
    per = PART_ROWS // 2 if guided else PART_ROWS
    return max(1, min(threads, rows // per))


def generate_chunk_fast(policy: Any, prompt_ids: list[list[int]], seeds: list[int], s: Any, *,
                        record_stats: bool, keep_logits: bool, continue_plan: bool = False,
                        threads: int | None = None) -> dict[str, Any]:
    """``shapes_decode_reference.generate_chunk_reference`` (same inputs, same output dict) on the fast loop.

    ``continue_plan=True`` starts the image from the plan's cache instead of re-prefilling every row's
    ``prefix + plan + [BOI]`` as the reference loop does: less work, but the image logits then differ from
    the reference loop's by float round-off (~1e-5), enough to flip about one token per few thousand
    draws under CFG, so it is off by default. ``threads`` overrides the CPU thread count the image phase
    is split by (``image_parts``; default: torch's).
    """
    import torch
    from transformers import DynamicCache

    from irisbench.policies.base import left_pad
    from irisbench.policies.shapes_decode_reference import chosen_stats, draw_tokens, row_uniforms

    model, v = policy.model, policy.vocab
    w = Weights.of(model)
    dev = w.embed.device
    b, n_img, p_max = len(prompt_ids), policy.num_image_tokens, s.max_plan_tokens
    u_img, u_plan = (u.to(dev) for u in row_uniforms(seeds, n_img, p_max))  # the reference loop's uniforms
    nan = float("nan")
    stats = {k: torch.full((b, p_max + n_img), nan, device=dev) for k in ("logp", "sc", "entropy")}
    kept: dict[str, list[torch.Tensor]] = {"plan": [], "image_cond": [], "image_guided": []}
    guided = s.cfg != 1.0

    def record(rows: torch.Tensor, cols: torch.Tensor | int, z: torch.Tensor, chosen: torch.Tensor) -> None:
        lp, sc, ent = chosen_stats(z, chosen)
        for key, val in (("logp", lp), ("sc", sc), ("entropy", ent)):
            stats[key][rows, cols] = val

    # ---- prefill [BOS] prompt [BOP] with the transformers model (left-padded), into the static cache
    text_ids = torch.as_tensor(v.text_ids, device=dev)
    eop_local = len(v.text_ids) - 1
    ids, mask, pos = left_pad([[v.bos, *p, v.bop] for p in prompt_ids], v.pad, dev)
    w0 = ids.shape[1]
    dec = Decoder(w, b, w0 + p_max)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    dec.load(cache, torch.arange(b, device=dev), mask.bool())
    del cache
    w_text = w.out(text_ids)
    logits = out.logits[:, -1].float()[:, text_ids]
    next_pos = pos[:, -1] + 1

    # ---- phase 1: the plan. Decoder row j is prompt row ids[j]; live[j]: still writing. Without
    # continue_plan, rows that finished are dropped (kept as fillers while fewer than MIN_ROWS remain);
    # with it, every row stays (finished rows leave masked holes) for the image phase to continue.
    plan_local = torch.full((b, p_max), -1, dtype=torch.long, device=dev)
    plan_len = torch.zeros(b, dtype=torch.long, device=dev)
    forced = torch.zeros(b, dtype=torch.bool, device=dev)
    rows = torch.arange(b, device=dev)
    live = torch.ones(b, dtype=torch.bool, device=dev)
    floor = min(b, MIN_ROWS)
    col = w0
    for t in range(p_max):
        if t == p_max - 1:  # out of room: EOP is forced (its statistics are still the model's)
            local = torch.full((len(rows),), eop_local, dtype=torch.long, device=dev)
            forced[rows[live]] = True
        else:
            local = draw_tokens(logits, u_plan[rows, t], s.temperature, s.top_k)
        act, z = rows[live], logits[live]
        plan_local[act, t] = local[live]
        plan_len[act] += 1
        if record_stats:
            record(act, t, z, local[live])
        if keep_logits:  # the reference loop keeps every row's logits; finished rows' are not computed here
            full = torch.full((b, z.shape[1]), nan, device=dev)
            full[act] = z
            kept["plan"].append(full)
        feeding = live.clone()
        live = live & (local != eop_local)
        n_live = int(live.sum())
        if continue_plan:  # feed the drawn tokens, EOP too: the image phase continues this cache
            logits = dec.step(text_ids[local], next_pos[rows], col, w_text, live=feeding)
            next_pos[rows[feeding]] += 1
            col += 1
            if n_live == 0:
                break
            continue
        if n_live == 0:
            break
        if max(n_live, floor) < len(rows):  # drop finished rows, keeping fillers up to MIN_ROWS
            order = torch.argsort((~live).to(torch.int8), stable=True)[: max(n_live, floor)]
            idx = order.sort().values
            dec.keep(idx)
            rows, live, local = rows[idx], live[idx], local[idx]
        logits = dec.step(text_ids[local], next_pos[rows], col, w_text)
        next_pos[rows] += 1
        col += 1

    # ---- phase 2: [BOI] then the image; cond rows then (with guidance) uncond rows, in lockstep,
    # in parts of whole prompts (cond and uncond rows of the same prompts), one thread each
    plans = [[int(k) for k in text_ids[plan_local[r, : int(plan_len[r])]].tolist()] for r in range(b)]
    lo, hi = v.image_offset, v.image_offset + v.codebook_size
    w_img = w.out(slice(lo, hi))
    n_parts = image_parts(b, guided, dev, threads=threads)
    bounds = [b * i // n_parts for i in range(n_parts + 1)]
    part_rows = [torch.arange(bounds[i], bounds[i + 1], device=dev) for i in range(n_parts)]
    decs: list[Decoder] = []
    if continue_plan:
        first, pos0, col0 = _continue_image(model, w, dec, v, part_rows, next_pos, col, n_img, guided, w_img, decs)
    else:
        first, pos0, col0 = _prefill_image(model, w, v, prompt_ids, plans, part_rows, n_img, guided, lo, hi, decs)
    results: list[dict[str, Any]] = [{} for _ in decs]

    def image(i: int) -> None:  # runs in its own thread: writes only results[i]
        d, rows_i, logits_i, pos_i = decs[i], part_rows[i], first[i], pos0[i]
        m = len(rows_i)
        u = u_img[rows_i]
        codes_i, stats_i, cond_i, guided_i = [], [], [], []
        for t in range(n_img):
            zc = logits_i[:m]
            zg = logits_i[m:] + s.cfg * (zc - logits_i[m:]) if guided else zc
            local_i = draw_tokens(zg, u[:, t], s.temperature, s.top_k)
            codes_i.append(local_i)
            if record_stats:
                stats_i.append(chosen_stats(zg if s.stats_source == "guided" else zc, local_i))
            if keep_logits:
                cond_i.append(zc.clone())
                guided_i.append(zg.clone())
            if t == n_img - 1:
                break
            logits_i = d.step((local_i + lo).repeat(2 if guided else 1), pos_i + t, col0 + t, w_img)
        results[i] = {"codes": torch.stack(codes_i, 1), "stats": stats_i, "cond": cond_i, "guided": guided_i}

    _run_parts([lambda i=i: image(i) for i in range(len(decs))])
    codes = torch.cat([res["codes"] for res in results])  # parts are consecutive prompt ranges
    if record_stats:
        img_cols = plan_len.unsqueeze(1) + torch.arange(n_img, device=dev)
        for j, key in enumerate(("logp", "sc", "entropy")):
            vals = torch.cat([torch.stack([st[j] for st in res["stats"]], 1) for res in results])
            stats[key].scatter_(1, img_cols, vals)
    if keep_logits:
        kept["image_cond"] = [torch.cat([res["cond"][t] for res in results]) for t in range(n_img)]
        kept["image_guided"] = [torch.cat([res["guided"][t] for res in results]) for t in range(n_img)]
    cpu = torch.device("cpu")
    return {"plans": plans, "plan_local": plan_local.to(cpu), "plan_len": plan_len.to(cpu),
            "codes": codes.to(cpu), "stats": {k: x.to(cpu) for k, x in stats.items()},
            "kept": {k: [x.to(cpu) for x in xs] for k, xs in kept.items()}, "truncated": forced.to(cpu)}


def _prefill_image(model: Any, w: Weights, v: Any, prompt_ids: list[list[int]], plans: list[list[int]],
                   part_rows: list[torch.Tensor], n_img: int, guided: bool, lo: int, hi: int,
                   decs: list[Decoder]) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """As the reference loop: prefill ``prefix + plan + [BOI]`` (and ``[BOS] [NULL] [BOI]``), left-padded
    to the longest row, with the transformers model; but each distinct row once. Fills ``decs`` (one
    decoder per part: its cond rows then its uncond rows) and returns each part's first image logits,
    the position of its [BOI] and the first image column."""
    import torch
    from transformers import DynamicCache

    from irisbench.policies.base import left_pad

    dev = w.embed.device
    b = len(prompt_ids)
    seqs = [(v.bos, *p, v.bop, *pl, v.boi) for p, pl in zip(prompt_ids, plans, strict=True)]
    if guided:
        seqs += [(v.bos, v.null, v.boi)] * b
    if len(seqs) < MIN_ROWS:  # few rows: exactly the reference's batch (sgemm rounding depends on it)
        distinct = seqs
    else:  # each distinct row once, but at least MIN_ROWS rows (the same sgemm regime)
        distinct = list(dict.fromkeys(seqs))
        distinct += [distinct[0]] * (MIN_ROWS - len(distinct))
    index: dict[tuple[int, ...], int] = {}
    for i, sq in enumerate(distinct):
        index.setdefault(sq, i)
    src = torch.tensor([index[sq] for sq in seqs], device=dev)
    ids, mask, pos = left_pad(distinct, v.pad, dev)  # width: the longest row, as the reference
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    logits = out.logits[:, -1].float()[:, lo:hi]
    width = ids.shape[1]
    first, pos0 = [], []
    for rows in part_rows:
        sel = torch.cat([rows, rows + b]) if guided else rows
        d = Decoder(w, len(sel), width + n_img - 1)
        d.load(cache, src[sel], mask[src[sel]].bool())
        d.skip_padding([len(rows)] * (len(sel) // len(rows)), width)
        decs.append(d)
        first.append(logits[src[sel]])
        pos0.append(pos[src[sel], -1] + 1)
    return first, pos0, width


def _continue_image(model: Any, w: Weights, dec: Decoder, v: Any, part_rows: list[torch.Tensor],
                    next_pos: torch.Tensor, col: int, n_img: int, guided: bool, w_img: Out,
                    decs: list[Decoder]) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """``continue_plan``: each part's decoder continues the plan's cache (cond rows) and the once-computed
    ``[BOS] [NULL]`` (uncond rows, in the two columns before ``col``), then feeds [BOI] at ``col``."""
    import torch
    from transformers import DynamicCache

    dev = w.embed.device
    b = dec.rows
    h, d = w.heads, w.head_dim
    ucache = None
    if guided:  # the unconditional prefix [BOS] [NULL] is the same for every row: compute it once
        ucache = DynamicCache(config=model.config)
        model(input_ids=torch.tensor([[v.bos, v.null]], device=dev), past_key_values=ucache, use_cache=True,
              logits_to_keep=1)
    first, pos0 = [], []
    for rows in part_rows:
        m = len(rows)
        part = Decoder(w, 2 * m if guided else m, col + 1 + n_img)
        for i in range(len(w.layers)):
            for mine, theirs in ((part.k[i], dec.k[i]), (part.v[i], dec.v[i])):
                mine.view(part.rows, h, part.width, d)[:m, :, :col] = theirs.view(b, h, dec.width, d)[rows, :, :col]
        part.mask.view(part.rows, h, part.width)[:m, :, :col] = dec.mask.view(b, h, dec.width)[rows, :, :col]
        pos = next_pos[rows]
        if ucache is not None:
            zero = torch.zeros(m, dtype=torch.long, device=dev)
            part.load(ucache, zero, torch.ones((m, 2), dtype=torch.bool, device=dev), dst=slice(m, None),
                      start=col - 2)
            pos = torch.cat([pos, torch.full((m,), 2, dtype=torch.long, device=dev)])
        part.skip_padding([m] * (part.rows // m), col)
        boi = torch.full((part.rows,), v.boi, dtype=torch.long, device=dev)
        first.append(part.step(boi, pos, col, w_img))
        pos0.append(pos + 1)
        decs.append(part)
    return first, pos0, col + 1


__all__ = ["PART_ROWS", "generate_chunk_fast", "image_parts", "supports_fast_decode"]
