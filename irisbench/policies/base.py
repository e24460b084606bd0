"""The policy contract: what the evaluator and the GRPO trainer know about a text-to-image model.

A policy turns prompts into a ``Rollout``: per sample the plan / chain-of-thought text tokens, the
image tokens, the decoded image and, for every generated token, statistics of the distribution it
was drawn from (log-prob of the chosen token, self-certainty ``logsumexp(z) - mean(z)`` and entropy),
computed from the logits the sampling loop already has. ``token_logits`` re-computes the logits
teacher-forced (differentiable, conditional branch) for GRPO.

Rows are prompt-major: prompt ``i``, sample ``j`` is row ``i * n + j``. Every row carries its own
seed, so a sample never depends on which batch it was drawn in (docs/design.md §4).

Departure from the paper's code: IRIS computes self-certainty in a second forward pass; here the
sampling loop records it from the logits it already holds. Whether the statistics come from the
conditional logits (IRIS) or the CFG-mixed ones is the explicit ``stats_source`` setting.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from irisbench.core.errors import UsageError
from irisbench.core.uncertainty import IMAGE, TEXT, masked_mean, part_mask

__all__ = ["IMAGE", "STATS_SOURCES", "TEXT", "Policy", "Rollout", "TokenLogits", "TrainablePolicy",
           "check_sampling_args", "derive_seed", "left_pad", "row_seeds"]

STATS_SOURCES = ("conditional", "guided")


def derive_seed(base_seed: int, *keys: int | str) -> int:
    """A 63-bit seed from a base seed and keys (prompt id, sample index, ...), stable across runs.

    Strings are folded with crc32 so that, e.g., the suite name separates the seeds of two splits
    that share prompt texts.
    """
    ints = [int(base_seed) & 0xFFFFFFFF]
    for k in keys:
        ints.append(zlib.crc32(k.encode("utf-8")) if isinstance(k, str) else int(k) & 0xFFFFFFFF)
    return int(np.random.SeedSequence(ints).generate_state(2, dtype=np.uint32).astype(np.uint64)
               .dot(np.array([1 << 31, 1], dtype=np.uint64)))


@dataclass
class Rollout:
    """Samples from one ``Policy.sample`` call (B rows).

    Token arrays are (B, T) with ``token_mask`` marking real tokens (left-aligned, right-padded);
    ``modality`` is ``TEXT`` or ``IMAGE`` per token. Policies that draw no tokens (the oracle and
    random reference policies) leave T = 0.
    """

    prompts: list[str]
    seeds: list[int]
    images: list[np.ndarray]  # uint8 (H, W, 3) per row
    plans: list[str] = field(default_factory=list)  # decoded plan / CoT text per row ("" if none)
    tokens: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    token_mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))
    modality: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int8))
    logp: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    self_certainty: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    entropy: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    settings: dict[str, Any] = field(default_factory=dict)  # cfg, temperature, top_k, stats_source
    extras: dict[str, Any] = field(default_factory=dict)  # policy-specific (e.g. prompt token ids)
    # (B, T) bool or None: tokens a rule inserted rather than the policy drew (the shapes LM's end of plan at
    # the plan cap); the trainer can leave them out of the loss and the reward (``mask_forced_tokens``)
    forced: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def token_summary(self, row: int) -> dict[str, float | int | None]:
        """Per-image statistics for records: mean self-certainty/entropy over text, image, both."""
        out: dict[str, float | int | None] = {}
        if self.tokens.size == 0:
            for part in ("text", "image", "all"):
                out[f"sc_{part}"] = None
                out[f"entropy_{part}"] = None
            out["plan_len"] = 0
            return out

        for part in ("text", "image", "all"):
            m = part_mask(self.modality[row], self.token_mask[row], part)  # type: ignore[arg-type]
            for key, values in (("sc", self.self_certainty[row]), ("entropy", self.entropy[row])):
                mean = float(masked_mean(values, m))
                out[f"{key}_{part}"] = None if math.isnan(mean) else mean
        out["plan_len"] = int(part_mask(self.modality[row], self.token_mask[row], "text").sum())
        return out


@dataclass
class TokenLogits:
    """A teacher-forced pass over a rollout's tokens (``TrainablePolicy.token_logits``), on the model's device.

    Per-token tensors are (B, T), aligned with ``Rollout.tokens``: ``logp`` (log-prob of the drawn token),
    ``self_certainty`` (raw ``logsumexp - mean``) and ``entropy`` of the conditional logits, 0 where
    ``mask`` is False; ``tokens`` holds indices into each modality's own vocabulary (codebook ids at
    IMAGE positions). ``logp`` is differentiable unless the caller disabled gradients. With
    ``uncond=True``, ``image_logits`` / ``image_logits_uncond`` (B, T, V_image) hold the conditional and
    unconditional image logits at IMAGE positions (for CFG-guided log-probs). ``parts``: policy-specific
    views (e.g. per-part logits) for tests and analysis; the trainer never reads them.
    """

    logp: Any
    self_certainty: Any
    entropy: Any
    mask: Any
    modality: Any
    tokens: Any
    image_logits: Any = None
    image_logits_uncond: Any = None
    parts: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> Any:
        return self.logp.device

    def guided_logp(self, cfg: float) -> Any:
        """Log-probs with image tokens scored under the CFG mix ``u + cfg * (c - u)`` (text tokens unchanged)."""
        import torch

        if self.image_logits is None or self.image_logits_uncond is None:
            raise ValueError("guided log-probs need token_logits(..., uncond=True)")
        mixed = self.image_logits_uncond + float(cfg) * (self.image_logits - self.image_logits_uncond)
        idx = self.tokens.clamp(0, mixed.shape[-1] - 1)  # only IMAGE positions are kept below
        img = torch.log_softmax(mixed.float(), -1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        return torch.where(self.modality == IMAGE, img.to(self.logp.dtype), self.logp)


@runtime_checkable
class Policy(Protocol):
    """What every text-to-image policy offers the evaluator."""

    name: str
    world: str  # "shapes" (embedded world, scored by the exact detector) or "open" (real images)

    def sample(
        self,
        prompts: Sequence[str],
        n: int = 1,
        seed: int | Sequence[int] = 0,
        *,
        cfg: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
    ) -> Rollout:
        """Draw ``n`` samples per prompt. ``seed``: a base seed, or one seed per row."""
        ...

    def describe(self) -> dict[str, Any]:
        """Provenance: name, checkpoint, sampling defaults, parameter count."""
        ...


@runtime_checkable
class TrainablePolicy(Policy, Protocol):
    """A policy the GRPO trainer can update: everything ``irisbench.train.trainer`` and ``train.sharding`` use.

    ``model``: the ``torch.nn.Module`` holding every parameter. ``vocab_sizes``: ``{"text": k_text, "image":
    k_image}``, the self-certainty vocabulary: the sizes of the distributions each modality's per-token statistics
    are taken over, so ``log k_m`` is the offset ``Rollout.self_certainty`` keeps (the shapes LM: its allowed
    sub-vocabularies, 24 and 763; Janus-Pro: 102,400 and 16,384). ``sample`` writes it into
    ``Rollout.settings["vocab_size"]``, which the rewards that remove or replace the offset read
    (docs/self-certainty.md).
    ``max_completion_length``: the most tokens a rollout row can hold (the ``dr_grpo`` normaliser).
    """

    model: Any

    @property
    def vocab_sizes(self) -> dict[str, int]: ...

    @property
    def max_completion_length(self) -> int: ...

    def token_logits(self, rollout: Rollout, *, uncond: bool = False) -> TokenLogits:
        """Teacher-forced conditional statistics of ``rollout``'s tokens (differentiable)."""
        ...

    def fsdp_units(self) -> list[Any]:
        """Disjoint submodules holding every trainable parameter (``irisbench.train.sharding``)."""
        ...

    def save(self, path: str | Path, state_dict: dict[str, Any] | None = None) -> Path:
        """Write a folder ``load_policy`` reads back; ``state_dict`` replaces the model's own weights."""
        ...


def left_pad(rows: Sequence[Sequence[int]], pad: int, device: Any = None) -> tuple[Any, Any, Any]:
    """Token rows left-padded into (ids, attention mask, position ids), long tensors on ``device``: real tokens
    get positions 0, 1, ... so padding never shifts a row's positions; padding columns get 0."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.as_tensor(list(r), dtype=torch.long)
            mask[i, width - len(r):] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def row_seeds(n_prompts: int, n: int, seed: int | Sequence[int]) -> list[int]:
    """Per-row seeds: given explicitly, or derived from (base seed, prompt index, sample index)."""
    if isinstance(seed, (int, np.integer)):
        return [derive_seed(int(seed), i, j) for i in range(n_prompts) for j in range(n)]
    seeds = [int(s) for s in seed]
    if len(seeds) != n_prompts * n:
        raise UsageError(f"expected {n_prompts * n} seeds (prompts x n), got {len(seeds)}")
    return seeds


def check_sampling_args(n: int, cfg: float | None, temperature: float | None, top_k: int | None) -> None:
    """Reject impossible sampling settings with a clear message."""
    if n < 1:
        raise UsageError(f"n (images per prompt) must be >= 1, got {n}")
    if cfg is not None and cfg < 0:
        raise UsageError(f"cfg (guidance scale) must be >= 0, got {cfg}")
    if temperature is not None and not temperature > 0:
        raise UsageError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise UsageError(f"top_k must be >= 1 (or unset), got {top_k}")
