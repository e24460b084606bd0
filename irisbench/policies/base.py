"""The policy contract: what the evaluator and the GRPO trainer know about a text-to-image model.

A policy turns prompts into a ``Rollout``: per sample the plan / chain-of-thought text tokens, the
image tokens, the decoded image and, for every generated token, statistics of the distribution it
was drawn from (log-prob of the chosen token, self-certainty ``logsumexp(z) - mean(z)`` and entropy),
computed from the logits the sampling loop already has. ``token_logits`` re-computes the logits
teacher-forced (differentiable, conditional branch) for GRPO.

Rows are prompt-major: prompt ``i``, sample ``j`` is row ``i * n + j``. Every row carries its own
seed, so a sample never depends on which batch it was drawn in (DESIGN.md §4).

Departure from the paper's code: IRIS computes self-certainty in a second forward pass; here the
sampling loop records it from the logits it already holds. Whether the statistics come from the
conditional logits (IRIS) or the CFG-mixed ones is the explicit ``stats_source`` setting.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

TEXT: int = 0
IMAGE: int = 1
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
        from irisbench.uncertainty import masked_mean, part_mask

        for part in ("text", "image", "all"):
            m = part_mask(self.modality[row], self.token_mask[row], part)  # type: ignore[arg-type]
            for key, values in (("sc", self.self_certainty[row]), ("entropy", self.entropy[row])):
                mean = float(masked_mean(values, m))
                out[f"{key}_{part}"] = None if math.isnan(mean) else mean
        out["plan_len"] = int(part_mask(self.modality[row], self.token_mask[row], "text").sum())
        return out


@runtime_checkable
class Policy(Protocol):
    """What every text-to-image policy offers."""

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


def row_seeds(n_prompts: int, n: int, seed: int | Sequence[int]) -> list[int]:
    """Per-row seeds: given explicitly, or derived from (base seed, prompt index, sample index)."""
    if isinstance(seed, (int, np.integer)):
        return [derive_seed(int(seed), i, j) for i in range(n_prompts) for j in range(n)]
    seeds = [int(s) for s in seed]
    if len(seeds) != n_prompts * n:
        raise ValueError(f"expected {n_prompts * n} seeds (prompts x n), got {len(seeds)}")
    return seeds


def check_sampling_args(n: int, cfg: float | None, temperature: float | None, top_k: int | None) -> None:
    """Reject impossible sampling settings with a clear message."""
    if n < 1:
        raise ValueError(f"n (images per prompt) must be >= 1, got {n}")
    if cfg is not None and cfg < 0:
        raise ValueError(f"cfg (guidance scale) must be >= 0, got {cfg}")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or unset), got {top_k}")
