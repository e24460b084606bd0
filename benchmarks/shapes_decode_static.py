"""The previous fast sampling loop (static KV cache, per-step row gathers), kept as a benchmark baseline.

``ShapesLMPolicy.generate(fast=generate_chunk_static)`` runs it; ``bench_sampling.py`` times it against the
reference loop and against the loop that replaced it (``irisbench.policies.shapes_decode``). It computes
the same function of the same weights in fp32 and draws the same tokens from the same uniforms, but its
plan steps run as few rows as are still writing (an sgemm of fewer than 16 rows rounds differently), so
its logits can differ from the reference loop's by float round-off.

Measured when it was written (``benchmarks/bench_sampling.py --loops-only``; Intel Xeon, AVX-512 + AMX,
2 cores): 1.36x the reference loop at the GRPO batch (8 x 8, CFG) and 1.44x at the eval batch (64 x 1),
tokens identical on both; ``continue_plan`` (skip the image phase's re-prefill) 1.65x / 1.71x, not
bit-identical (9 tokens differed in the benchmark's GRPO batches).

Requires the model to be the plain Llama that ``build_model`` makes; ``supports_fast_decode`` (in
``irisbench.policies.shapes_decode``) says whether it is. Every tensor is created on the device of the
model's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class _Layer:
    qkv: torch.Tensor  # (3C, C)
    o: torch.Tensor
    gate_up: torch.Tensor  # (2I, C)
    down: torch.Tensor
    ln1: torch.Tensor
    ln2: torch.Tensor


class StaticDecoder:
    """A pre-allocated KV cache for ``rows`` rows x ``width`` columns and one-token decode steps.

    Column ``j`` of row ``r`` holds that row's key/value of some token, or nothing (masked); a row's
    positions are explicit, so columns need not be contiguous (a finished plan row leaves a hole).
    """

    def __init__(self, model: Any, rows: int, width: int) -> None:
        import torch

        c = model.config
        inner = model.model
        w = next(model.parameters())
        self.device, self.dtype = w.device, w.dtype
        self.heads, self.head_dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        self.scaling = self.head_dim ** -0.5
        self.eps = float(c.rms_norm_eps)
        self.hidden = c.hidden_size
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight
        self.head = model.lm_head.weight
        self.layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append(_Layer(
                qkv=torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]), o=a.o_proj.weight,
                gate_up=torch.cat([m.gate_proj.weight, m.up_proj.weight]), down=m.down_proj.weight,
                ln1=layer.input_layernorm.weight, ln2=layer.post_attention_layernorm.weight))
        positions = torch.arange(c.max_position_embeddings, device=self.device).unsqueeze(0)
        cos, sin = inner.rotary_emb(self.embed[:1].unsqueeze(0), positions)
        self.cos, self.sin = cos[0], sin[0]  # (P, D): the model's own RoPE table
        shape = (rows, self.heads, width, self.head_dim)
        self.k = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.v = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.neg = torch.finfo(self.dtype).min  # transformers' additive mask value
        self.mask = torch.full((rows, width), self.neg, device=self.device, dtype=self.dtype)

    def load(self, cache: Any, rows: slice | torch.Tensor, cols: slice, valid: torch.Tensor) -> None:
        """Copy a transformers ``DynamicCache`` (its rows x its columns) into ``rows`` x ``cols``; ``valid``
        (rows x cols, bool) marks real tokens."""
        import torch

        for i, layer in enumerate(cache.layers):
            self.k[i][rows, :, cols] = layer.keys
            self.v[i][rows, :, cols] = layer.values
        self.mask[rows, cols] = torch.where(valid, 0.0, self.neg)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        import torch

        var = x.pow(2).mean(-1, keepdim=True)
        return weight * (x * torch.rsqrt(var + self.eps))

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        import torch

        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, col: int, out_weight: torch.Tensor,
             rows: torch.Tensor | None = None) -> torch.Tensor:
        """Feed ``tokens`` (R,) at ``positions`` (R,) into column ``col`` of ``rows`` (None: every row) and
        return the last hidden state times ``out_weight`` (V', C): logits over that sub-vocabulary (R, V')."""
        import torch
        import torch.nn.functional as F

        r = tokens.shape[0]
        h, d = self.heads, self.head_dim
        x = self.embed[tokens].unsqueeze(1)  # (R, 1, C)
        cos, sin = self.cos[positions].unsqueeze(1).unsqueeze(1), self.sin[positions].unsqueeze(1).unsqueeze(1)
        if rows is None:
            self.mask[:, col] = 0.0
            mask = self.mask[:, None, None, : col + 1]
        else:
            self.mask[rows, col] = 0.0
            mask = self.mask[rows][:, None, None, : col + 1]
        for i, lw in enumerate(self.layers):
            y = self._rms(x, lw.ln1)
            q, k, v = F.linear(y, lw.qkv).view(r, 1, 3, h, d).unbind(2)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (R, H, 1, D)
            q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
            if rows is None:
                self.k[i][:, :, col: col + 1] = k
                self.v[i][:, :, col: col + 1] = v
                keys, values = self.k[i][:, :, : col + 1], self.v[i][:, :, : col + 1]
            else:
                self.k[i][rows, :, col] = k[:, :, 0]
                self.v[i][rows, :, col] = v[:, :, 0]
                keys, values = self.k[i][rows, :, : col + 1], self.v[i][rows, :, : col + 1]
            att = torch.matmul(q, keys.transpose(2, 3)) * self.scaling + mask
            att = torch.softmax(att, dim=-1, dtype=torch.float32).to(q.dtype)
            o = torch.matmul(att, values).transpose(1, 2).reshape(r, 1, self.hidden)
            x = x + F.linear(o, lw.o)
            y = self._rms(x, lw.ln2)
            gate, up = F.linear(y, lw.gate_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, lw.down)
        return F.linear(self._rms(x[:, 0], self.norm), out_weight).float()


def generate_chunk_static(policy: Any, prompt_ids: list[list[int]], seeds: list[int], s: Any, *,
                        record_stats: bool, keep_logits: bool, continue_plan: bool = False) -> dict[str, Any]:
    """``shapes_decode_reference.generate_chunk_reference`` (same inputs, same output dict) on the static-cache loop.

    ``continue_plan=True`` starts the image from the plan's cache instead of re-prefilling every row's
    ``prefix + plan + [BOI]`` as the reference loop does: less work, but the image logits then differ from
    the reference loop's by float round-off (~1e-5), enough to flip about one token per few thousand
    draws under CFG, so it is off by default.
    """
    import torch
    from transformers import DynamicCache

    from irisbench.policies.base import left_pad
    from irisbench.policies.shapes_decode_reference import chosen_stats, draw_tokens, row_uniforms

    model, v = policy.model, policy.vocab
    dev = next(model.parameters()).device
    b, n_img, p_max = len(prompt_ids), policy.num_image_tokens, s.max_plan_tokens
    u_img, u_plan = (u.to(dev) for u in row_uniforms(seeds, n_img, p_max))  # the reference loop's uniforms
    nan = float("nan")
    stats = {k: torch.full((b, p_max + n_img), nan, device=dev) for k in ("logp", "sc", "entropy")}
    kept: dict[str, list[torch.Tensor]] = {"plan": [], "image_cond": [], "image_guided": []}
    guided = s.cfg != 1.0
    rows_all = 2 * b if guided else b

    # ---- prefill [BOS] prompt [BOP] with the transformers model (left-padded), into the static cache
    text_ids = torch.as_tensor(v.text_ids, device=dev)
    eop_local = len(v.text_ids) - 1
    ids, mask, pos = left_pad([[v.bos, *p, v.bop] for p in prompt_ids], v.pad, dev)
    w0 = ids.shape[1]
    if continue_plan:
        dec = StaticDecoder(model, rows_all, w0 + p_max + 1 + n_img)
    else:
        dec = StaticDecoder(model, b, w0 + p_max)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    dec.load(cache, slice(0, b), slice(0, w0), mask.bool())
    del cache
    w_text = dec.head[text_ids]
    logits = out.logits[:, -1].float()[:, text_ids]
    next_pos = pos[:, -1] + 1

    # ---- phase 1: the plan, conditional rows still writing only
    plan_local = torch.full((b, p_max), -1, dtype=torch.long, device=dev)
    plan_len = torch.zeros(b, dtype=torch.long, device=dev)
    forced = torch.zeros(b, dtype=torch.bool, device=dev)
    active_idx = torch.arange(b, device=dev)
    col = w0
    for t in range(p_max):
        z = logits  # (A, Vt), rows active_idx
        if t == p_max - 1:  # out of room: EOP is forced (its statistics are still the model's)
            local = torch.full((len(active_idx),), eop_local, dtype=torch.long, device=dev)
            forced[active_idx] = True
        else:
            local = draw_tokens(z, u_plan[active_idx, t], s.temperature, s.top_k)
        plan_local[active_idx, t] = local
        plan_len[active_idx] += 1
        if record_stats:
            lp, sc, ent = chosen_stats(z, local)
            for key, val in (("logp", lp), ("sc", sc), ("entropy", ent)):
                stats[key][active_idx, t] = val
        if keep_logits:  # the reference loop keeps every row's logits; finished rows' are not computed here
            full = torch.full((b, z.shape[1]), nan, device=dev)
            full[active_idx] = z
            kept["plan"].append(full)
        still = local != eop_local
        if not continue_plan and not bool(still.any()):
            break
        # feed the drawn tokens (with continue_plan, EOP too: the image phase continues this cache)
        logits = dec.step(text_ids[local], next_pos[active_idx], col, w_text, rows=active_idx)
        next_pos[active_idx] += 1
        col += 1
        if not bool(still.any()):
            break
        active_idx, logits = active_idx[still], logits[still]

    # ---- phase 2: [BOI] then the image; cond rows then (with guidance) uncond rows, in lockstep
    plans = [[int(k) for k in text_ids[plan_local[r, : int(plan_len[r])]].tolist()] for r in range(b)]
    lo, hi = v.image_offset, v.image_offset + v.codebook_size
    w_img = dec.head[lo:hi]
    if continue_plan:
        if guided:  # the unconditional prefix [BOS] [NULL] is the same for every row: compute it once
            ucache = DynamicCache(config=model.config)
            model(input_ids=torch.tensor([[v.bos, v.null]], device=dev), past_key_values=ucache, use_cache=True,
                  logits_to_keep=1)
            for i, layer in enumerate(ucache.layers):
                dec.k[i][b:, :, col - 2: col] = layer.keys
                dec.v[i][b:, :, col - 2: col] = layer.values
            dec.mask[b:, col - 2: col] = 0.0
            del ucache
            next_pos = torch.cat([next_pos, torch.full((b,), 2, dtype=torch.long, device=dev)])
        logits = dec.step(torch.full((rows_all,), v.boi, dtype=torch.long, device=dev), next_pos, col, w_img)
        col += 1
    else:  # as the reference loop: prefill prefix + plan + [BOI] (left-padded) with the transformers model
        seqs = [[v.bos, *p, v.bop, *pl, v.boi] for p, pl in zip(prompt_ids, plans, strict=True)]
        if guided:
            seqs += [[v.bos, v.null, v.boi]] * b
        ids, mask, pos = left_pad(seqs, v.pad, dev)
        col = ids.shape[1]
        dec = StaticDecoder(model, rows_all, col + n_img)
        cache = DynamicCache(config=model.config)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                    logits_to_keep=1)
        dec.load(cache, slice(0, rows_all), slice(0, col), mask.bool())
        del cache
        logits = out.logits[:, -1].float()[:, lo:hi]
        next_pos = pos[:, -1]
    codes = torch.empty((b, n_img), dtype=torch.long, device=dev)
    arange_b = torch.arange(b, device=dev)
    for t in range(n_img):
        zc = logits[:b]
        zg = logits[b:] + s.cfg * (zc - logits[b:]) if guided else zc
        local = draw_tokens(zg, u_img[:, t], s.temperature, s.top_k)
        codes[:, t] = local
        if record_stats:
            lp, sc, ent = chosen_stats(zg if s.stats_source == "guided" else zc, local)
            stats["logp"][arange_b, plan_len + t] = lp
            stats["sc"][arange_b, plan_len + t] = sc
            stats["entropy"][arange_b, plan_len + t] = ent
        if keep_logits:
            kept["image_cond"].append(zc.clone())
            kept["image_guided"].append(zg.clone())
        if t == n_img - 1:
            break
        feed = (local + lo).repeat(2 if guided else 1)
        logits = dec.step(feed, next_pos + 1 + t, col, w_img)
        col += 1
    cpu = torch.device("cpu")
    return {"plans": plans, "plan_local": plan_local.to(cpu), "plan_len": plan_len.to(cpu),
            "codes": codes.to(cpu), "stats": {k: x.to(cpu) for k, x in stats.items()},
            "kept": {k: [x.to(cpu) for x in xs] for k, xs in kept.items()}, "truncated": forced.to(cpu)}


__all__ = ["StaticDecoder", "generate_chunk_static"]
