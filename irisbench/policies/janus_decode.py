"""Janus-Pro's sampling loops: KV-cached CoT text and CFG image-token loops that record per-token statistics.

transformers' image-mode ``generate`` returns no per-step logits (docs/dependencies.md §2), so both loops are the
project's own. They record, per drawn token, the log-prob, self-certainty ``logsumexp(z) - mean(z)`` and
entropy of the raw (temperature 1) logits in fp32. ``irisbench.policies.janus.JanusPolicy`` drives them.

Where this departs from the official code (sampling settings are recorded in ``Rollout.settings``):

- Unconditional CFG rows follow transformers, not T2I-R1: every prompt token except BOS and BOI
  replaced by PAD, with the conditional row's (left-padded) attention mask. T2I-R1 right-pads its
  batch and overwrites columns ``1:-1`` (so its BOI follows the padding).
- Position ids come from the attention mask's cumulative sum (left padding), in the loops and in
  ``token_logits``; transformers' image ``generate`` uses plain ``arange``. RoPE is relative, so the
  two agree up to float rounding, and this way a row's numbers do not depend on its batch.
- Every row draws from its own ``torch.Generator`` seeded from the row seed, and a row whose CoT has
  ended draws nothing more, so a sample does not depend on batch composition or on ``batch_size`` (the
  official code uses the global RNG).
- CFG mixing is done in fp32 (transformers mixes in the model dtype).
- CoT sampling defaults to temperature 1 and top-k 50: the transformers 4.x ``GenerationConfig``
  defaults that T2I-R1's ``language_model.generate(do_sample=True)`` ran with (Janus-Pro ships no
  generation_config.json). Image tokens use no top-k by default, as the official code.
- Pixels: ``floor(clip((x + 1) / 2 * 255, 0, 255))`` as the official code (truncation, not rounding).
- The image loop uses a static KV cache (length known), the CoT loop a dynamic one (stops at EOS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from irisbench.core.errors import UsageError
from irisbench.policies.base import IMAGE, STATS_SOURCES, TEXT, Rollout, left_pad

if TYPE_CHECKING:  # heavy imports stay out of module import
    import torch


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of left-padded rows on ``device`` (``irisbench.policies.base.left_pad``)."""
    ids, mask, _ = left_pad(rows, pad_id, device)
    return ids, mask


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _pick(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    generators: Sequence[torch.Generator],
    active: Sequence[bool] | None = None,
) -> torch.Tensor:
    """Draw one token per row from ``softmax(top_k(logits / temperature))``; ``top_k=1`` is argmax.

    Each row draws from its own generator, and only while ``active`` (a finished row must not consume
    random numbers, or its next draws would depend on how long the other rows of its batch run).
    Inactive rows get token 0.
    """
    import torch

    if top_k == 1:
        return logits.argmax(dim=-1)
    z = logits.float() / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    probs = torch.softmax(z, dim=-1)
    out = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    for r, g in enumerate(generators):
        if active is None or active[r]:
            out[r] = torch.multinomial(probs[r], 1, generator=g)[0]
    return out


DECODE_MODES = ("eager", "static", "compiled")


def _decode_logits(lm: Any, head: Any, cache: Any, embeds: torch.Tensor, mask: torch.Tensor,
                   pos: torch.Tensor) -> torch.Tensor:
    """One decode step on a static KV cache: (R, 1, D) embeddings -> (R, V) logits of the head."""
    out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
    return head(out.last_hidden_state[:, -1, :])


class FixedShapeDecoder:
    """The decode step with every input of one shape at every step, so it can be captured once.

    A ``StaticCache`` of ``max_len`` positions (transformers 5.23 tracks the write position inside the cache,
    as a tensor) and an attention mask allocated at ``max_len`` up front: step ``t`` sets column ``P + t``
    (1, or 0 for a finished CoT row) in place instead of concatenating a column, so the mask's shape and
    address never change. The prefill runs eagerly on the first ``P`` columns. ``compiled=True`` wraps the
    step in ``torch.compile(mode="reduce-overhead")`` (CUDA graphs: one replay per step instead of hundreds of
    kernel launches); it needs CUDA. Values equal the eager loop's (tests/test_janus.py, fp32 on the CPU).
    """

    def __init__(self, lm: Any, head: Any, mask: torch.Tensor, max_len: int, *, compiled: bool = False) -> None:
        import functools

        import torch
        from transformers import StaticCache

        if compiled and mask.device.type != "cuda":
            raise UsageError("decode: compiled captures CUDA graphs and needs a CUDA device; use decode: static "
                             "on the CPU")
        rows, p = mask.shape
        self.cache = StaticCache(config=lm.config, max_cache_len=max_len)
        self.mask = torch.zeros((rows, max_len), dtype=mask.dtype, device=mask.device)
        self.mask[:, :p] = mask
        self.length = p
        self.lm, self.head, self.compiled = lm, head, compiled
        self.key: tuple[Any, ...] = ()
        step = functools.partial(_decode_logits, lm, head, self.cache)
        self._step = torch.compile(step, mode="reduce-overhead", dynamic=False) if compiled else step

    @classmethod
    def acquire(cls, lm: Any, head: Any, mask: torch.Tensor, max_len: int, *, compiled: bool = False
                ) -> FixedShapeDecoder:
        """The decoder of the language model's last call with the same shapes, restarted, else a new one.

        Reusing the cache and the mask keeps their addresses, so a compiled step is captured once per shape
        and not once per batch (a new cache object would fail the compiled function's guards and recompile).
        One decoder is kept per language model and head (text and image loops: their KV caches are the
        memory they hold between calls).
        """
        key = (id(head), tuple(mask.shape), max_len, compiled, str(mask.device), mask.dtype)
        kept = lm.__dict__.setdefault("_irisbench_decoders", {})
        held = kept.get(id(head))
        if held is not None and held.key == key:
            held.restart(mask)
            return held
        kept[id(head)] = None  # free the previous cache first
        dec = cls(lm, head, mask, max_len, compiled=compiled)
        dec.key = key
        kept[id(head)] = dec
        return dec

    def restart(self, mask: torch.Tensor) -> None:
        self.cache.reset()
        self.mask.zero_()
        self.mask[:, :mask.shape[1]] = mask
        self.length = mask.shape[1]

    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        return None  # a copied model (the trainer's KL reference) builds its own

    def prefill(self, embeds: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return _decode_logits(self.lm, self.head, self.cache, embeds, self.mask[:, :self.length], pos)

    def step(self, embeds: torch.Tensor, pos: torch.Tensor, column: torch.Tensor | None = None) -> torch.Tensor:
        """Append one token per row (``column``: its mask value, default 1) and return the next logits."""
        import torch

        if column is None:
            self.mask[:, self.length] = 1
        else:
            self.mask[:, self.length] = column
        self.length += 1
        if self.compiled:
            torch.compiler.cudagraph_mark_step_begin()
            return self._step(embeds, self.mask, pos).clone()  # a replay reuses its output buffer
        return self._step(embeds, self.mask, pos)


def _check_decode(decode: str) -> None:
    if decode not in DECODE_MODES:
        raise UsageError(f"decode must be one of {', '.join(DECODE_MODES)}, got {decode!r}")


@dataclass
class LoopOutput:
    """What a sampling loop returns: tokens and their statistics, (B, T) tensors on the CPU.

    ``mask`` marks drawn tokens (text rows stop after EOS). ``logits`` (kept on request only): the
    conditional logits per step, and for the image loop ``uncond_logits`` (None when cfg == 1).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    logp: torch.Tensor
    self_certainty: torch.Tensor
    entropy: torch.Tensor
    logits: torch.Tensor | None = None
    uncond_logits: torch.Tensor | None = None


def sample_text(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    generators: Sequence[torch.Generator],
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    keep_logits: bool = False,
    decode: str = "eager",
) -> LoopOutput:
    """KV-cached text sampling with ``lm_head`` until EOS (included) or ``max_new_tokens``.

    ``decode``: ``eager`` (a dynamic cache that grows), ``static`` (``FixedShapeDecoder``: a static cache of
    prompt + ``max_new_tokens`` positions) or ``compiled`` (the same, captured as CUDA graphs).
    """
    import torch

    from irisbench.core.uncertainty import token_stats

    if max_new_tokens < 1:
        raise UsageError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    _check_decode(decode)

    device = model.lm_head.weight.device
    lm = model.model.language_model
    ids, mask = _left_pad(prompt_ids, pad_id, device)
    pos = _positions(mask)
    embeds = model.get_input_embeddings()(ids)
    b = ids.shape[0]
    active = torch.ones(b, dtype=torch.bool, device=device)
    cache = None
    fixed = None
    steps: list[tuple[torch.Tensor, ...]] = []
    kept: list[torch.Tensor] = []
    with torch.no_grad():
        if decode != "eager":
            fixed = FixedShapeDecoder.acquire(lm, model.lm_head, mask, ids.shape[1] + max_new_tokens,
                                              compiled=decode == "compiled")
        for i in range(max_new_tokens):
            if fixed is not None:
                z = (fixed.prefill(embeds, pos) if i == 0 else fixed.step(embeds, pos, active.long())).float()
            else:
                out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, past_key_values=cache,
                         use_cache=True)
                cache = out.past_key_values
                z = model.lm_head(out.last_hidden_state[:, -1, :]).float()
            tok = _pick(z, temperature, top_k, generators, active.tolist())
            tok = torch.where(active, tok, torch.full_like(tok, pad_id))
            steps.append((tok, active.clone(), *token_stats(z, tok)))
            if keep_logits:
                kept.append(z.cpu())
            active = active & (tok != eos_id)
            if not bool(active.any()):
                break
            embeds = model.get_input_embeddings()(tok.unsqueeze(-1))
            if fixed is None:
                mask = torch.cat([mask, active.long().unsqueeze(-1)], dim=-1)
            pos = pos[:, -1:] + 1
    tok, act, logp, sc, ent = (torch.stack([s[i] for s in steps], dim=1).cpu() for i in range(5))
    return LoopOutput(tok, act, logp, sc, ent, torch.stack(kept, dim=1) if keep_logits else None)


def sample_image_tokens(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    generators: Sequence[torch.Generator],
    *,
    num_tokens: int,
    cfg: float,
    bos_id: int,
    boi_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    stats_source: str = "conditional",
    keep_logits: bool = False,
    decode: str = "eager",
) -> LoopOutput:
    """Static-KV-cached CFG image-token sampling: ``uncond + cfg * (cond - uncond)`` from ``generation_head``.

    ``prompt_ids`` rows end with ``<begin_of_image>``. The conditional and unconditional rows run in one
    batch ([cond; uncond], as transformers); with ``cfg == 1`` the unconditional rows are skipped.
    ``decode``: ``eager`` (the mask grows by a column per step), ``static`` (``FixedShapeDecoder``: every
    step has the same shapes) or ``compiled`` (the same, captured as CUDA graphs).
    """
    import torch
    from transformers import StaticCache

    from irisbench.core.uncertainty import token_stats

    if num_tokens < 1:
        raise UsageError(f"num_tokens must be >= 1, got {num_tokens}")
    if stats_source not in STATS_SOURCES:
        raise UsageError(f"stats_source must be one of {STATS_SOURCES}, got {stats_source!r}")
    _check_decode(decode)

    device = model.lm_head.weight.device
    lm = model.model.language_model
    head = model.model.generation_head
    ids, mask = _left_pad(prompt_ids, pad_id, device)
    b = ids.shape[0]
    guided = cfg != 1.0
    if guided:
        keep = (ids == bos_id) | (ids == boi_id)
        ids = torch.cat([ids, torch.where(keep, ids, torch.full_like(ids, pad_id))])
        mask = torch.cat([mask, mask])
    pos = _positions(mask)
    embeds = model.get_input_embeddings()(ids)
    # the length is known: a static cache avoids re-copying the keys and values at every step
    cache = StaticCache(config=model.config.text_config, max_cache_len=ids.shape[1] + num_tokens)
    steps: list[tuple[torch.Tensor, ...]] = []
    kept_c: list[torch.Tensor] = []
    kept_u: list[torch.Tensor] = []
    with torch.no_grad():
        fixed = None if decode == "eager" else FixedShapeDecoder.acquire(
            lm, head, mask, ids.shape[1] + num_tokens, compiled=decode == "compiled")
        for step in range(num_tokens):
            if fixed is not None:
                z = (fixed.prefill(embeds, pos) if step == 0 else fixed.step(embeds, pos)).float()
            else:
                out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, past_key_values=cache,
                         use_cache=True)
                cache = out.past_key_values
                z = head(out.last_hidden_state[:, -1, :]).float()
            if guided:
                cond, uncond = z[:b], z[b:]
                mixed = uncond + cfg * (cond - uncond)
            else:
                cond, uncond, mixed = z, None, z
            tok = _pick(mixed, temperature, top_k, generators)
            steps.append((tok, *token_stats(cond if stats_source == "conditional" else mixed, tok)))
            if keep_logits:
                kept_c.append(cond.cpu())
                if uncond is not None:
                    kept_u.append(uncond.cpu())
            if step == num_tokens - 1:
                break
            nxt = torch.cat([tok, tok]) if guided else tok
            embeds = model.prepare_embeddings_for_image_generation(nxt.unsqueeze(-1))
            if fixed is None:
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            pos = pos[:, -1:] + 1
    tok, logp, sc, ent = (torch.stack([s[i] for s in steps], dim=1).cpu() for i in range(4))
    return LoopOutput(
        tok,
        torch.ones_like(tok, dtype=torch.bool),
        logp,
        sc,
        ent,
        torch.stack(kept_c, dim=1) if keep_logits else None,
        torch.stack(kept_u, dim=1) if keep_logits and kept_u else None,
    )


def tokens_to_pixels(model: Any, tokens: torch.Tensor, chunk: int = 8) -> list[np.ndarray]:
    """Decode image tokens (B, N) with the VQ model into uint8 (H, W, 3) arrays (official truncation)."""
    import torch

    device = model.lm_head.weight.device
    images: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, tokens.shape[0], chunk):
            pix = model.decode_image_tokens(tokens[start:start + chunk].to(device)).float().cpu().numpy()
            pix = np.clip((pix + 1.0) / 2.0 * 255.0, 0.0, 255.0).astype(np.uint8)
            images.extend(list(pix))
    return images


def _lay_out_tokens(rollout: Rollout, parts: Sequence[tuple[LoopOutput | None, LoopOutput]]) -> None:
    """Fill a rollout's token arrays: per row its CoT tokens (TEXT), then its image tokens (IMAGE).

    ``parts``: per chunk of rows, the text loop's output (None without CoT) and the image loop's output.
    Rows are left-aligned and right-padded; ``extras["text_lengths"]`` records each row's CoT length.
    """
    rows: list[list[np.ndarray]] = []  # per row: tokens, modality, logp, self-certainty, entropy
    lengths: list[int] = []
    for text, image in parts:
        for r in range(image.tokens.shape[0]):
            pieces = [p for p in (text, image) if p is not None]
            row = [np.concatenate([getattr(p, f)[r][p.mask[r]].numpy() for p in pieces])
                   for f in ("tokens", "logp", "self_certainty", "entropy")]
            lengths.append(int(text.mask[r].sum()) if text is not None else 0)
            modality = np.full(len(row[0]), IMAGE)
            modality[:lengths[-1]] = TEXT
            rows.append([row[0], modality, *row[1:]])
    b, width = len(rows), max(len(row[0]) for row in rows)
    dtypes = (np.int64, np.int8, np.float32, np.float32, np.float32)
    arrays = [np.zeros((b, width), dtype=d) for d in dtypes]
    mask = np.zeros((b, width), dtype=bool)
    for r, row in enumerate(rows):
        for array, values in zip(arrays, row, strict=True):
            array[r, :len(values)] = values
        mask[r, :len(row[0])] = True
    rollout.tokens, rollout.modality, rollout.logp, rollout.self_certainty, rollout.entropy = arrays
    rollout.token_mask = mask
    rollout.extras["text_lengths"] = lengths
