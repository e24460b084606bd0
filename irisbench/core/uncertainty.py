"""Self-certainty and entropy of next-token distributions, from logits, in fp32 (docs/method.md §2).

For logits ``z`` over a vocabulary ``V`` at one position, with ``pi = softmax(z)``::

    SC(z) = KL(U || pi) = logsumexp(z) - mean(z) - log|V|      (>= 0, = 0 only for the uniform pi)
    H(z)  = -sum_v pi(v) log pi(v) = log|V| - KL(pi || U)      (the "backward KL" alternative)

Both are computed from logits cast to float32 inside the functions (bf16/fp16 inputs are fine) and
shifted by the row maximum first, so no overflow occurs and SC never materialises a softmax. The
IRIS code keeps the ``+log|V|`` offset inside each token's value (``logsumexp - mean``); that "raw"
form is ``self_certainty(z, subtract_log_vocab=False)`` and is what ``Rollout.self_certainty``
stores (see ``irisbench/policies/base.py``). ``V`` is whatever the logits span: a policy decides it (the shapes
LM passes its allowed sub-vocabularies, Janus-Pro its full text vocabulary and codebook) and reports it as
``vocab_sizes`` (docs/self-certainty.md).

Masked aggregation (numpy, no torch: the rewards, rollouts' record summaries and the trainer's
logged means all use it): ``masked_mean`` returns NaN (not 0) for an empty mask, so an absent part
(e.g. a sample with no chain-of-thought text) can never pass for a zero reward; callers that need a
value must check for it (``irisbench.train.rewards`` raises). ``per_sample`` / ``modality_means`` are the
one per-modality mean of per-token values.

Logits of ``-inf`` (a top-k or banned-token mask applied before the statistics) make ``mean(z)``
infinite, so SC is ``+inf`` (KL(U || pi) really is infinite when pi has zeros): compute the
statistics from the unmasked logits. Entropy treats ``-inf`` logits as zero-probability tokens.

torch is imported inside the functions that take logits, so the masked means stay importable
without it (``irisbench ls`` lists the rewards without torch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

# Modality codes of a rollout's tokens (``Rollout.modality``; ``irisbench.policies.base`` re-exports them).
TEXT: int = 0
IMAGE: int = 1

Part = Literal["text", "image", "all"]
PARTS: tuple[str, ...] = ("text", "image", "all")


def _shifted(logits: torch.Tensor) -> torch.Tensor:
    """``z - max(z)`` in fp32 along the last dim (the max is detached; it cancels analytically)."""
    if logits.dim() == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits need a non-empty last (vocabulary) dim, got shape {tuple(logits.shape)}")
    z = logits.float()
    m = z.amax(dim=-1, keepdim=True).detach()
    # an all -inf row would give nan; leave it to surface as nan rather than invent a value
    return z - m


def self_certainty(logits: torch.Tensor, *, subtract_log_vocab: bool = True) -> torch.Tensor:
    """Per-position self-certainty ``KL(U || softmax(z))`` over the last dim, float32.

    ``subtract_log_vocab=False`` returns IRIS's as-coded ``logsumexp(z) - mean(z)`` (offset by
    ``log|V|``). Output shape: ``logits.shape[:-1]``.
    """
    import torch

    d = _shifted(logits)
    sc = torch.logsumexp(d, dim=-1) - d.mean(dim=-1)
    if subtract_log_vocab:
        sc = sc - math.log(d.shape[-1])
    return sc


def _entropy_from_shifted(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities, entropy) from max-shifted fp32 logits."""
    import torch

    logp = d - torch.logsumexp(d, dim=-1, keepdim=True)
    p = logp.exp()
    plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))
    return logp, -plogp.sum(dim=-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy ``-sum p log p`` (nats) over the last dim, float32."""
    return _entropy_from_shifted(_shifted(logits))[1]


def token_stats(
    logits: torch.Tensor, chosen: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Statistics a sampling loop records per drawn token, from one pass over the logits.

    ``logits`` (..., V), ``chosen`` (...) integer token ids. Returns float32 tensors of shape
    ``chosen.shape``: ``(logp, sc_raw, entropy)`` with ``logp = log softmax(z)[chosen]``,
    ``sc_raw = logsumexp(z) - mean(z)`` (the offset kept, as ``Rollout.self_certainty`` stores it)
    and the entropy.
    """
    import torch

    if tuple(chosen.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"chosen has shape {tuple(chosen.shape)}, expected logits.shape[:-1] = {tuple(logits.shape[:-1])}"
        )
    if chosen.dtype.is_floating_point or chosen.dtype == torch.bool:
        raise ValueError(f"chosen must hold integer token ids, got dtype {chosen.dtype}")
    d = _shifted(logits)
    logp_all, ent = _entropy_from_shifted(d)
    logp = logp_all.gather(-1, chosen.long().unsqueeze(-1)).squeeze(-1)
    sc_raw = torch.logsumexp(d, dim=-1) - d.mean(dim=-1)
    return logp, sc_raw, ent


def _chunk_stats(h: torch.Tensor, c: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor]) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor]:
    return token_stats(head(h), c)


def head_token_stats(
    hidden: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    chosen: torch.Tensor,
    *,
    chunk_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``token_stats(head(hidden), chosen)`` without ever holding every position's logits at once.

    ``hidden`` (..., D), ``head`` a module or function mapping (n, D) to (n, V) logits (Janus-Pro's
    ``lm_head`` has V = 102,400), ``chosen`` (...) token ids. Positions are processed ``chunk_size`` at a
    time; when gradients are needed each chunk runs under non-reentrant activation checkpointing, so the
    backward pass recomputes one chunk's logits at a time instead of keeping them all: peak memory for the
    logits is about ``chunk_size * V * 4`` bytes times the few fp32 temporaries of ``token_stats``, instead of
    that for every position. Values equal ``token_stats`` on the full logits up to the head's rounding, and
    so do the gradients of ``hidden`` and of the head's parameters (tests/test_uncertainty.py).
    """
    import torch

    if tuple(chosen.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"chosen has shape {tuple(chosen.shape)}, expected hidden.shape[:-1] = "
                         f"{tuple(hidden.shape[:-1])}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    from torch.utils.checkpoint import checkpoint

    shape = chosen.shape
    h = hidden.reshape(-1, hidden.shape[-1])
    c = chosen.reshape(-1)
    params = head.parameters() if isinstance(head, torch.nn.Module) else ()
    grad = torch.is_grad_enabled() and (h.requires_grad or any(p.requires_grad for p in params))
    parts: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, h.shape[0], chunk_size):
        hc, cc = h[start:start + chunk_size], c[start:start + chunk_size]
        if grad:
            parts.append(checkpoint(_chunk_stats, hc, cc, head, use_reentrant=False))
        else:
            parts.append(_chunk_stats(hc, cc, head))
    if not parts:
        empty = h.new_zeros(shape, dtype=torch.float32)
        return empty, empty.clone(), empty.clone()
    return tuple(torch.cat([p[i] for p in parts]).reshape(shape) for i in range(3))  # type: ignore[return-value]


def masked_mean(values: np.ndarray, mask: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean of ``values`` where ``mask`` is true along ``axis``, float64; NaN where the mask is empty.

    Values at masked-out positions are ignored even if they are inf/NaN (padding). Accepts numpy
    arrays or CPU tensors.
    """
    values, mask = np.asarray(values, dtype=np.float64), np.asarray(mask, dtype=bool)
    if values.shape != mask.shape:
        raise ValueError(f"values shape {values.shape} != mask shape {mask.shape}")
    total = np.where(mask, values, 0.0).sum(axis=axis)
    count = mask.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def part_mask(modality: np.ndarray, mask: np.ndarray, part: Part) -> np.ndarray:
    """Boolean mask of the real tokens of one part: ``"text"``, ``"image"`` or ``"all"``."""
    modality, mask = np.asarray(modality), np.asarray(mask, dtype=bool)
    if part == "text":
        return mask & (modality == TEXT)
    if part == "image":
        return mask & (modality == IMAGE)
    if part == "all":
        return mask
    raise ValueError(f"part must be one of {', '.join(PARTS)}; got {part!r}")


def per_sample(values: np.ndarray, modality: np.ndarray, mask: np.ndarray, part: Part) -> np.ndarray:
    """Per-row (B,) mean of (B, T) token ``values`` over one part; NaN for rows without such tokens."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"values must be (B, T), got shape {values.shape}")
    if np.shape(modality) != values.shape:
        raise ValueError(f"modality shape {np.shape(modality)} != values shape {values.shape}")
    return masked_mean(values, part_mask(modality, mask, part), axis=-1)


def modality_means(values: np.ndarray, modality: np.ndarray, mask: np.ndarray,
                   parts: tuple[str, ...] = ("text", "image")) -> dict[str, float]:
    """Means of token ``values`` over each part across ALL rows (a batch's logged statistic); NaN for a
    part without tokens."""
    values, modality, mask = np.asarray(values), np.asarray(modality), np.asarray(mask, dtype=bool)
    return {p: float(masked_mean(values.reshape(-1), part_mask(modality, mask, p).reshape(-1))) for p in parts}
