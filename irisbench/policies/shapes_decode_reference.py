"""The shapes LM's reference sampling loop, and the token draws every loop shares.

``generate_chunk_reference`` runs transformers' ``LlamaForCausalLM`` forward with a ``DynamicCache`` at every
step (``ShapesLMPolicy.generate(fast=False)``): it defines the numbers the fast loops
(``shapes_decode``; a benchmark's baseline loop) reproduce. Phase 1 writes the plan with the conditional rows
only (rows that finished feed masked-out padding until all are done, EOP forced at ``max_plan_tokens``);
phase 2 re-prefills ``prefix + plan + [BOI]`` (left-padded, cond and uncond rows together) and runs the 64
image steps in lockstep with classifier-free guidance. ``use_cache=False`` recomputes the whole prefix at
every step (the naive baseline of the benchmark).

Every row's randomness comes from its own seed (``row_uniforms``) and tokens are drawn by inverse CDF
(``draw_tokens``), so a sample does not depend on the batch it is in, up to float round-off of batched
matmuls. Every tensor is created on the device of the model's weights; results come back on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from irisbench.policies.base import left_pad

if TYPE_CHECKING:  # pragma: no cover
    import torch


def draw_tokens(z: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """Inverse-CDF draw per row from ``softmax(z / temperature)`` restricted to its top ``k``.

    ``z`` (B, V) fp32 logits, ``u`` (B,) float64 uniforms in [0, 1). ``top_k=1`` is greedy (argmax).
    """
    import torch

    z = z / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    cdf = torch.softmax(z, dim=-1).double().cumsum(-1)
    x = (u.double() * cdf[:, -1]).unsqueeze(-1)
    idx = torch.searchsorted(cdf, x, right=True).squeeze(-1)
    return idx.clamp_(max=z.shape[-1] - 1)


def row_uniforms(seeds: Sequence[int], n_img: int, p_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's sampling uniforms, float64 on the CPU, from its own generator seeded with the row seed:
    (rows, n_img) for the image, then (rows, p_max) for the plan. Image uniforms come first, so they do not
    move when ``max_plan_tokens`` does. Every sampling loop draws its tokens from these."""
    import torch

    u_img = torch.empty((len(seeds), n_img), dtype=torch.float64)
    u_plan = torch.empty((len(seeds), p_max), dtype=torch.float64)
    for r, sd in enumerate(seeds):
        g = torch.Generator().manual_seed(int(sd) & 0xFFFF_FFFF_FFFF_FFFF)
        u_img[r] = torch.rand(n_img, generator=g, dtype=torch.float64)
        u_plan[r] = torch.rand(p_max, generator=g, dtype=torch.float64)
    return u_img, u_plan


def chosen_stats(z: torch.Tensor, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logp of chosen, logsumexp - mean, entropy) per row of fp32 logits ``z`` (..., V)."""
    from irisbench.core.uncertainty import token_stats

    return token_stats(z, chosen)


def forward_last(model: Any, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any) -> torch.Tensor:
    """The last position's fp32 logits of transformers' forward (``cache``: a ``DynamicCache`` or None)."""
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                     use_cache=cache is not None, logits_to_keep=1)
    return out.logits[:, -1].float()


def generate_chunk_reference(policy: Any, prompt_ids: list[list[int]], seeds: list[int], s: Any, *, use_cache: bool,
                             record_stats: bool, keep_logits: bool) -> dict[str, Any]:
    """The reference loop: one chunk of ``ShapesLMPolicy.generate`` with transformers' forward and a
    ``DynamicCache`` (``use_cache=False``: the whole prefix recomputed at every step, the naive baseline).
    Returns the chunk dict every loop returns (plans, plan tokens and lengths, codes, statistics, kept logits,
    truncated plans), on the CPU."""
    import torch
    from transformers import DynamicCache

    model, v = policy.model, policy.vocab
    dev = policy.device  # every tensor on the model's device; results to the CPU
    b, n_img, p_max = len(prompt_ids), policy.num_image_tokens, s.max_plan_tokens
    u_img, u_plan = (u.to(dev) for u in row_uniforms(seeds, n_img, p_max))
    nan = float("nan")
    stats = {k: torch.full((b, p_max + n_img), nan, device=dev) for k in ("logp", "sc", "entropy")}
    kept: dict[str, list[torch.Tensor]] = {"plan": [], "image_cond": [], "image_guided": []}

    # ---- phase 1: the plan, conditional rows only
    text_ids = torch.as_tensor(v.text_ids, device=dev)
    eop_local = len(v.text_ids) - 1
    ids, mask, pos = left_pad([[v.bos, *p, v.bop] for p in prompt_ids], v.pad, dev)
    cache = DynamicCache(config=model.config) if use_cache else None
    logits = forward_last(model, ids, mask, pos, cache)
    next_pos = pos[:, -1] + 1
    plan_local = torch.full((b, p_max), -1, dtype=torch.long, device=dev)
    plan_len = torch.zeros(b, dtype=torch.long, device=dev)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    forced = torch.zeros(b, dtype=torch.bool, device=dev)
    for t in range(p_max):
        z = logits[:, text_ids]
        active = ~done
        if t == p_max - 1:  # out of room: EOP is forced (its statistics are still the model's)
            local = torch.full((b,), eop_local, dtype=torch.long, device=dev)
            forced = active.clone()
        else:
            local = draw_tokens(z, u_plan[:, t], s.temperature, s.top_k)
        plan_local[active, t] = local[active]
        plan_len += active.long()
        if record_stats:
            lp, sc, ent = chosen_stats(z, local)
            for key, val in (("logp", lp), ("sc", sc), ("entropy", ent)):
                stats[key][active, t] = val[active]
        if keep_logits:
            kept["plan"].append(z.clone())
        done = done | (active & (local == eop_local))
        if bool(done.all()):
            break
        feed = torch.where(active, text_ids[local], torch.full_like(local, v.pad)).unsqueeze(1)
        step_pos = next_pos.clone().unsqueeze(1)
        next_pos = next_pos + active.long()
        mask = torch.cat([mask, active.long().unsqueeze(1)], dim=1)
        if use_cache:
            logits = forward_last(model, feed, mask, step_pos, cache)
        else:
            ids, pos = torch.cat([ids, feed], 1), torch.cat([pos, step_pos], 1)
            logits = forward_last(model, ids, mask, pos, None)
    del cache

    # ---- phase 2: the image; cond rows then (with guidance) uncond rows, in lockstep
    lens = plan_len.tolist()  # one transfer, not one per token on a GPU
    plans = [text_ids[plan_local[r, : lens[r]]].tolist() for r in range(b)]
    seqs = [[v.bos, *p, v.bop, *pl, v.boi] for p, pl in zip(prompt_ids, plans, strict=True)]
    guided = s.cfg != 1.0
    if guided:
        seqs += [[v.bos, v.null, v.boi]] * b
    ids, mask, pos = left_pad(seqs, v.pad, dev)
    cache = DynamicCache(config=model.config) if use_cache else None
    logits = forward_last(model, ids, mask, pos, cache)
    next_pos = pos[:, -1:] + 1
    rows = torch.arange(b, device=dev)
    lo, hi = v.image_offset, v.image_offset + v.codebook_size
    codes = torch.empty((b, n_img), dtype=torch.long, device=dev)
    for t in range(n_img):
        zc = logits[:b, lo:hi]
        zg = logits[b:, lo:hi] + s.cfg * (zc - logits[b:, lo:hi]) if guided else zc
        local = draw_tokens(zg, u_img[:, t], s.temperature, s.top_k)
        codes[:, t] = local
        if record_stats:
            lp, sc, ent = chosen_stats(zg if s.stats_source == "guided" else zc, local)
            for key, val in (("logp", lp), ("sc", sc), ("entropy", ent)):
                stats[key][rows, plan_len + t] = val
        if keep_logits:
            kept["image_cond"].append(zc.clone())
            kept["image_guided"].append(zg.clone())
        if t == n_img - 1:
            break
        feed = (local + lo).repeat(2 if guided else 1).unsqueeze(1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if use_cache:
            logits = forward_last(model, feed, mask, next_pos, cache)
        else:
            ids, pos = torch.cat([ids, feed], 1), torch.cat([pos, next_pos], 1)
            logits = forward_last(model, ids, mask, pos, None)
        next_pos = next_pos + 1
    cpu = torch.device("cpu")
    return {"plans": plans, "plan_local": plan_local.to(cpu), "plan_len": plan_len.to(cpu), "codes": codes.to(cpu),
            "stats": {k: x.to(cpu) for k, x in stats.items()},
            "kept": {k: [x.to(cpu) for x in xs] for k, xs in kept.items()}, "truncated": forced.to(cpu)}


__all__ = ["chosen_stats", "draw_tokens", "forward_last", "generate_chunk_reference", "row_uniforms"]
