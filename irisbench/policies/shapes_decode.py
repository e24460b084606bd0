"""The shapes LM's fast sampling loop: the reference loop's arithmetic, without its overheads.

``ShapesLMPolicy.generate`` runs this loop by default (``fast=True``); ``fast=False`` runs the reference
loop (transformers' ``LlamaForCausalLM`` forward with a ``DynamicCache`` at every step), which stays the
definition of the numbers. This loop performs the same floating-point operations on the same values,
so on the machines measured it reproduces the reference loop's logits bit for bit (tests and
``benchmarks/bench_sampling.py`` check the tokens; the benchmark also reports the largest logit gap):

- every matmul keeps the reference's operand values and a row count in the same BLAS regime: MKL's
  sgemm rounds a row the same way for any row count >= 16 (below that it takes other kernels; K = 512 is
  the last to converge), so a decode step may run a subset of the rows only when >= ``MIN_ROWS`` remain;
- the decode step is a hand-written Llama layer whose every op rounds as transformers' does:
  ``F.rms_norm`` is LlamaRMSNorm's op sequence in one call, RoPE's ``cat(-x2, x1) * sin`` is
  ``flip(x) * sin'`` with the sign folded into the table (negation is exact), ``baddbmm(mask, q, K^T,
  alpha)`` is ``q @ K^T * scale + mask`` (alpha applied to the finished dot product), q/k/v and gate/up
  are one matmul each against pre-transposed weights (a column subset of a product is that column);
  the attention spans the reference cache's width exactly (a wider, zero-padded softmax would sum in
  other vector lanes);
- the plan phase runs only rows still writing (compacted, not gathered, when some finish), padded
  with finished rows up to ``MIN_ROWS``;
- the image phase's prefill of ``prefix + plan + [BOI]`` (left-padded to the longest row, as the
  reference does, so every softmax sums in the same lanes) runs once per distinct row: the 64
  unconditional rows ``[BOS] [NULL] [BOI]`` are one row, repeated rollouts with equal plans one row;
- on a multi-core CPU the image phase is split by prompt into independent parts (each prompt's
  conditional and unconditional rows together), one Python thread and one BLAS thread each: tiny
  elementwise ops then run on every core instead of one, and no op waits on a thread barrier.

Measured (``benchmarks/bench_sampling.py --loops-only``; Intel Xeon, AVX-512 + AMX, 2 cores, shared): see
``FIGURES`` below; the step is bound by the linear layers (~0.5 GFLOP at 128 rows) and by reading
the fp32 KV cache (~50 MB a step), not by Python.

Requires the plain fp32 Llama that ``build_model`` makes (eager attention, RMSNorm, SiLU MLP, default
RoPE, no biases); ``supports_fast_decode`` says whether the model is one. Every tensor is created on the
device of the model's weights; the threaded split is CPU-only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    Out = tuple[torch.Tensor, torch.Tensor | slice]  # an output layer: (its transpose (C, V'), vocabulary rows)

MIN_ROWS = 16  # the smallest row count whose sgemm rounding equals the reference's at any larger count
LANES = 16  # softmax's vector width (AVX-512 floats; a multiple of AVX2's 8)
PART_ROWS = 32  # the image phase is split only into parts of at least this many rows (cond + uncond)

FIGURES = "filled in from benchmarks/bench_sampling.py"


def supports_fast_decode(model: Any) -> bool:
    """True for the plain fp32 Llama of ``build_model`` (what the hand-written step reproduces)."""
    import torch

    c = getattr(model, "config", None)
    if c is None or getattr(c, "model_type", None) != "llama":
        return False
    rope = getattr(c, "rope_parameters", None) or {}
    return (c.hidden_act == "silu" and not c.attention_bias and not c.mlp_bias
            and rope.get("rope_type", "default") == "default"
            and c.num_key_value_heads == c.num_attention_heads
            and next(model.parameters()).dtype == torch.float32
            and getattr(model.model, "rotary_emb", None) is not None)


@dataclass
class Layer:
    """One decoder layer's weights: the module's own (N, K) matrices, as transformers multiplies them, and
    fused, transposed copies (q/k/v, gate/up) for the many-row path."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    ln1: torch.Tensor
    ln2: torch.Tensor
    qkv_t: torch.Tensor  # (C, 3C)
    o_t: torch.Tensor
    gate_up_t: torch.Tensor  # (C, 2I)
    down_t: torch.Tensor


@dataclass
class Weights:
    """The model's weights in the layouts the step wants, read once per chunk."""

    embed: torch.Tensor
    layers: list[Layer]
    norm: torch.Tensor
    head: torch.Tensor  # (V, C), the model's lm_head
    cos: torch.Tensor  # (P, D): the model's own RoPE table
    sin: torch.Tensor  # (P, D) with the first half negated: rotate_half folded in
    heads: int
    head_dim: int
    inter: int
    eps: float

    @classmethod
    def of(cls, model: Any) -> Weights:
        import torch

        c, inner = model.config, model.model
        layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            q, k, v, o = a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, a.o_proj.weight
            g, u, dn = m.gate_proj.weight, m.up_proj.weight, m.down_proj.weight
            layers.append(Layer(q=q, k=k, v=v, o=o, gate=g, up=u, down=dn, ln1=layer.input_layernorm.weight,
                                ln2=layer.post_attention_layernorm.weight, qkv_t=torch.cat([q, k, v]).t().contiguous(),
                                o_t=o.t().contiguous(), gate_up_t=torch.cat([g, u]).t().contiguous(),
                                down_t=dn.t().contiguous()))
        embed = inner.embed_tokens.weight
        positions = torch.arange(c.max_position_embeddings, device=embed.device).unsqueeze(0)
        cos, sin = inner.rotary_emb(embed[:1].unsqueeze(0), positions)
        d = c.hidden_size // c.num_attention_heads
        sin = torch.cat([-sin[0, :, : d // 2], sin[0, :, d // 2:]], dim=-1)
        return cls(embed=embed, layers=layers, norm=inner.norm.weight, head=model.lm_head.weight, cos=cos[0],
                   sin=sin, heads=c.num_attention_heads, head_dim=d, inter=c.intermediate_size,
                   eps=float(c.rms_norm_eps))

    def out(self, ids: torch.Tensor | slice) -> Out:
        """The output layer restricted to vocabulary rows ``ids``: (its transpose (C, V'), ``ids``)."""
        return self.head[ids].t().contiguous(), ids


class Decoder:
    """A pre-allocated KV cache of ``rows`` rows x ``width`` columns and one-token decode steps.

    Keys and values are stored (rows * heads, width, head_dim) and the additive mask (rows * heads, 1,
    width), so attention is one ``baddbmm`` and one ``bmm`` over the columns written so far. Column ``j`` of
    a row holds the key/value of one of its tokens, or is masked; positions are explicit.
    """

    def __init__(self, w: Weights, rows: int, width: int) -> None:
        import torch

        self.w, self.rows, self.width = w, rows, width
        dev, dt = w.embed.device, w.embed.dtype
        shape = (rows * w.heads, width, w.head_dim)
        self.k = [torch.zeros(shape, device=dev, dtype=dt) for _ in w.layers]
        self.v = [torch.zeros(shape, device=dev, dtype=dt) for _ in w.layers]
        self.neg = torch.finfo(dt).min  # transformers' additive mask value
        self.mask = torch.full((rows * w.heads, 1, width), self.neg, device=dev, dtype=dt)
        self.groups = [(0, rows * w.heads, 0)]  # attention row groups (first, end, first column read)

    def load(self, cache: Any, src: torch.Tensor, valid: torch.Tensor, *, dst: slice = slice(None),
             start: int = 0) -> None:
        """Copy rows ``src`` of a transformers ``DynamicCache`` (its L columns) into rows ``dst``, columns
        ``start:start+L``; ``valid`` (len(src), L) marks real tokens."""
        import torch

        h, d = self.w.heads, self.w.head_dim
        for i, layer in enumerate(cache.layers):
            n = layer.keys.shape[2]
            self.k[i].view(self.rows, h, self.width, d)[dst, :, start:start + n] = layer.keys[src]
            self.v[i].view(self.rows, h, self.width, d)[dst, :, start:start + n] = layer.values[src]
        n = valid.shape[1]
        self.mask.view(self.rows, h, self.width)[dst, :, start:start + n] = \
            torch.where(valid, 0.0, self.neg).unsqueeze(1)

    def skip_padding(self, sizes: list[int], col: int) -> None:
        """Let consecutive row groups of ``sizes`` rows skip the leading columns masked in all their rows, in
        multiples of ``LANES``, as long as at least ``LANES`` columns remain at column ``col``. Exact: the
        skipped scores are exp(-inf) = 0 in every vector lane of the softmax sums, and the dot products
        over the remaining columns keep their lanes and kernels (more than 8 columns)."""
        import torch

        h, first = self.w.heads, 0
        real = (self.mask.view(self.rows, h, self.width)[:, 0, :col] == 0).to(torch.int8)
        lead = torch.where(real.any(1), real.argmax(1), col)  # leading masked columns per row
        self.groups = []
        for n in sizes:
            skip = min(int(lead[first:first + n].min()), col + 1 - LANES) // LANES * LANES if n else 0
            self.groups.append((first * h, (first + n) * h, max(skip, 0)))
            first += n

    def keep(self, idx: torch.Tensor) -> None:
        """Keep rows ``idx`` (in that order) only."""
        r, rest = self.rows, self.w.heads * self.width
        self.k = [x.view(r, -1)[idx].view(-1, self.width, self.w.head_dim) for x in self.k]
        self.v = [x.view(r, -1)[idx].view(-1, self.width, self.w.head_dim) for x in self.v]
        self.mask = self.mask.view(r, rest)[idx].view(-1, 1, self.width)
        self.rows = int(idx.shape[0])
        self.groups = [(0, self.rows * self.w.heads, 0)]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, col: int, out: Out,
             live: torch.Tensor | None = None) -> torch.Tensor:
        """Feed ``tokens`` (R,) at ``positions`` (R,) into column ``col`` and return the logits (R, V') over
        the vocabulary rows of ``out`` (``Weights.out``). ``live`` (R,) bool: rows whose column ``col`` is a
        real token (default: all). Fewer than ``MIN_ROWS`` rows multiply exactly as transformers does (one
        ``F.linear`` per projection, the whole vocabulary), whose rounding then depends on the shapes."""
        import torch
        import torch.nn.functional as F

        w, r, width = self.w, tokens.shape[0], self.width
        h, d, c, n = w.heads, w.head_dim, w.heads * w.head_dim, w.inter
        few = r < MIN_ROWS
        x = w.embed[tokens]
        cos, sin = w.cos[positions].view(r, 1, 1, d), w.sin[positions].view(r, 1, 1, d)
        if live is None:
            self.mask[:, :, col] = 0.0
        else:
            self.mask[:, 0, col] = torch.where(live, 0.0, self.neg).repeat_interleave(h)
        mask = self.mask[:, :, : col + 1]
        for i, lw in enumerate(w.layers):
            y = F.rms_norm(x, (c,), lw.ln1, w.eps)
            if few:
                qkv = torch.stack([F.linear(y, lw.q), F.linear(y, lw.k), F.linear(y, lw.v)], 1).view(r, 3, h, d)
            else:
                qkv = torch.mm(y, lw.qkv_t).view(r, 3, h, d)
            qk = qkv[:, :2]
            qk = qk * cos + qk.unflatten(-1, (2, d // 2)).flip(-2).flatten(-2) * sin  # RoPE, q and k at once
            self.k[i].view(r, h, width, d)[:, :, col] = qk[:, 1]
            self.v[i].view(r, h, width, d)[:, :, col] = qkv[:, 2]
            q = qk[:, 0].reshape(r * h, 1, d)
            if len(self.groups) == 1 and not self.groups[0][2]:
                o = self._attend(q, mask, self.k[i][:, : col + 1], self.v[i][:, : col + 1]).view(r, c)
            else:
                o = torch.empty((r * h, 1, d), device=x.device, dtype=x.dtype)
                for a, z, s0 in self.groups:
                    self._attend(q[a:z], self.mask[a:z, :, s0: col + 1], self.k[i][a:z, s0: col + 1],
                                 self.v[i][a:z, s0: col + 1], out=o[a:z])
                o = o.view(r, c)
            x = x + (F.linear(o, lw.o) if few else torch.mm(o, lw.o_t))
            y = F.rms_norm(x, (c,), lw.ln2, w.eps)
            if few:
                x = x + F.linear(F.silu(F.linear(y, lw.gate)) * F.linear(y, lw.up), lw.down)
            else:
                gu = torch.mm(y, lw.gate_up_t)
                x = x + torch.mm(F.silu(gu[:, :n]) * gu[:, n:], lw.down_t)
        y = F.rms_norm(x, (c,), w.norm, w.eps)
        return (F.linear(y, w.head)[:, out[1]] if few else torch.mm(y, out[0])).float()

    def _attend(self, q: torch.Tensor, mask: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                out: torch.Tensor | None = None) -> torch.Tensor:
        """transformers' eager attention for one query: softmax(q k^T * scale + mask) v."""
        import torch

        att = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=self.w.head_dim ** -0.5)
        att = torch.softmax(att, dim=-1, dtype=torch.float32).to(att.dtype)
        return torch.bmm(att, v) if out is None else torch.bmm(att, v, out=out)


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
                        parts: int | None = None) -> dict[str, Any]:
    """``ShapesLMPolicy._generate_chunk`` (same inputs, same output dict) on the fast loop.

    ``continue_plan=True`` starts the image from the plan's cache instead of re-prefilling every row's
    ``prefix + plan + [BOI]`` as the reference loop does: less work, but the image logits then differ from
    the reference loop's by float round-off (~1e-5), enough to flip about one token per few thousand
    draws under CFG, so it is off by default. ``parts`` overrides how many threads the image phase is
    split into (``image_parts``).
    """
    import torch
    from transformers import DynamicCache

    from irisbench.policies.shapes_lm import _left_pad, _stats, draw_tokens

    model, v = policy.model, policy.vocab
    w = Weights.of(model)
    dev = w.embed.device
    b, n_img, p_max = len(prompt_ids), policy.num_image_tokens, s.max_plan_tokens
    u_img = torch.empty((b, n_img), dtype=torch.float64)
    u_plan = torch.empty((b, p_max), dtype=torch.float64)
    for r, sd in enumerate(seeds):  # as the reference loop: image uniforms first, per-row CPU generator
        g = torch.Generator().manual_seed(int(sd) & 0xFFFF_FFFF_FFFF_FFFF)
        u_img[r] = torch.rand(n_img, generator=g, dtype=torch.float64)
        u_plan[r] = torch.rand(p_max, generator=g, dtype=torch.float64)
    u_img, u_plan = u_img.to(dev), u_plan.to(dev)
    nan = float("nan")
    stats = {k: torch.full((b, p_max + n_img), nan, device=dev) for k in ("logp", "sc", "entropy")}
    kept: dict[str, list[torch.Tensor]] = {"plan": [], "image_cond": [], "image_guided": []}
    guided = s.cfg != 1.0

    def record(rows: torch.Tensor, cols: torch.Tensor | int, z: torch.Tensor, chosen: torch.Tensor) -> None:
        lp, sc, ent = _stats(z, chosen)
        for key, val in (("logp", lp), ("sc", sc), ("entropy", ent)):
            stats[key][rows, cols] = val

    # ---- prefill [BOS] prompt [BOP] with the transformers model (left-padded), into the static cache
    text_ids = torch.as_tensor(v.text_ids, device=dev)
    eop_local = len(v.text_ids) - 1
    ids, mask, pos = (t.to(dev) for t in _left_pad([[v.bos, *p, v.bop] for p in prompt_ids], v.pad))
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
    n_parts = image_parts(b, guided, dev, threads=parts)
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
                stats_i.append(_stats(zg if s.stats_source == "guided" else zc, local_i))
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

    from irisbench.policies.shapes_lm import _left_pad

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
    ids, mask, pos = (t.to(dev) for t in _left_pad(distinct, v.pad))  # width: the longest row, as the reference
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


__all__ = ["MIN_ROWS", "Decoder", "Weights", "generate_chunk_fast", "image_parts", "supports_fast_decode"]
