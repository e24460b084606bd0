"""Rewards for GRPO, by name: intrinsic (self-certainty, entropy) and external (verifier, CLIP, PickScore, HPS).

A reward is a callable ``reward(rollout, context) -> np.ndarray`` of shape (B,), float64, one value
per rollout row. ``context`` is a mapping the trainer fills: ``"metadata"`` (one prompt-metadata
object per row), ``"judge"`` (``judge(metadata, image) -> bool``), ``"clip_score"``
(``clip_score(images, prompts) -> B floats``), ``"preference_scores"`` (``{name: score(images, prompts)}``
for the preference-model rewards ``pickscore`` and ``hpsv2``, ``irisbench.metrics.preference``). Intrinsic
rewards only read the per-token arrays the policy recorded while sampling (``Rollout.self_certainty`` =
``logsumexp(z) - mean(z)``, offset by ``log|V|`` as in the IRIS code; ``Rollout.entropy``): no model call.

Signs (a GRPO reward is maximised):

- ``TokenStatReward(stat, text_weight, image_weight, ...)`` returns ``sum_m w_m * mean_m(stat)``;
  a positive weight **maximises** the statistic on that modality, a negative one **minimises** it.
- IRIS minimises self-certainty: ``nsc`` = ``-mean(SC)``. Intuitor maximises it: ``sc`` = ``+mean(SC)``.
- ``entropy`` rewards higher entropy (the "backward KL" alternative IRIS ablates: maximising
  ``H = log|V| - KL(pi || U)`` also pushes towards uncertainty); ``neg-entropy`` rewards lower entropy.

Pooling: ``"tokens"`` averages ``w_{m(t)} * s_t`` over every real token of the modalities with a
non-zero weight (IRIS's as-coded NSC: CoT length shifts it, since text and image offsets differ);
``"modality"`` averages each modality separately and combines the means with the weights (the
``-balanced`` forms and the text/image ablations). ``subtract_log_vocab=True`` removes ``log|V|`` per
token (vocabulary sizes from ``rollout.settings["vocab_size"] = {"text": Vt, "image": Vi}``), giving
``KL(U || pi)`` for self-certainty and ``H - log|V| = -KL(pi || U)`` for entropy.

Offsets as a switch (``offset_vocab``, docs/self-certainty.md): a policy's per-token SC is taken over the
vocabulary it reports in ``rollout.settings["vocab_size"]`` (k_text, k_image; the shapes LM's allowed
sub-vocabularies, 24 plan symbols and 763 codes, Janus-Pro's full 102,400 / 16,384), so the kept offset
is ``log k_m``. ``offset_vocab={"text": Vt, "image": Vi}`` (offsets kept) swaps that constant for
``log V_m``: ``s_t - log k_m + log V_m = KL_t(U || pi) + log V_m``, the IRIS code's value with another
vocabulary's offsets and the policy's own KL. ``OFFSET_ORDERS`` names the three orders the shapes world
is measured in: ``world`` (the policy's own offsets), ``janus`` (``JANUS_PRO_VOCAB``) and ``none``
(``subtract_log_vocab=True``).

Departures from the IRIS code: the as-coded NSC is one preset (``nsc``) among several; the
balanced/ablation forms are not in the released code (only "all tokens" runs there). A row without
tokens of a modality whose weight is non-zero raises ``RewardInputError`` instead of contributing 0;
non-finite rewards raise ``NonFiniteRewardError`` naming the rows.

Null controls (not in the paper; they ask whether *any* uninformative reward moves the policy as IRIS does,
at the same learning rate, steps and seeds):

- ``random``: ``r ~ N(0, 1)`` i.i.d. per rollout, drawn from a generator seeded by
  ``derive_seed(training seed, "random-reward", step, prompt slot, rollout index)``: the reward never reads
  the rollout, so its GRPO advantages carry no information about the image or the plan;
- ``shuffled-nsc``: the ``nsc`` values of each GRPO group permuted by a uniformly random permutation
  seeded by ``derive_seed(training seed, "shuffled-nsc", step, prompt slot)``: every group keeps its
  multiset of rewards (hence the spread, the advantage scale and the zero-std groups of ``nsc``), but which
  rollout gets which value is random. A uniform permutation (fixed points allowed, not a derangement) is
  what makes the expected link zero; a derangement would tie each rollout negatively to its own value.

Both read the rows' keys from ``context["row_keys"]`` (``RowKeys``: training seed, step, and per row its
prompt slot within the step and its rollout index within the group; the trainer's sampling seeds derive
from the same keys). The values are therefore a function of those keys alone: the same on resume, and the
same whatever the batch order, micro-batch split or number of processes.

This module imports numpy only (``irisbench ls`` lists ``REWARDS`` without torch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from irisbench.core.errors import IrisbenchError, did_you_mean
from irisbench.core.uncertainty import masked_mean, part_mask
from irisbench.policies.base import Rollout, derive_seed

Stat = Literal["self_certainty", "entropy"]
Pooling = Literal["tokens", "modality"]

# Janus-Pro's text vocabulary (``text_config.vocab_size``) and image codebook (``vq_config.num_embeddings``):
# the vocabularies the IRIS code's self-certainty is taken over (irisbench/policies/janus.py ``vocab_sizes``).
JANUS_PRO_VOCAB: dict[str, int] = {"text": 102_400, "image": 16_384}
# offset order -> TokenStatReward options that give it (on a reward whose offsets are kept, e.g. ``nsc``)
OFFSET_ORDERS: dict[str, dict[str, Any]] = {
    "world": {},
    "janus": {"offset_vocab": JANUS_PRO_VOCAB},
    "none": {"subtract_log_vocab": True},
}
MODALITIES = ("text", "image")


class RewardError(IrisbenchError, ValueError):
    """Base class of reward errors."""


class UnknownRewardError(RewardError):
    """A reward name that is not in ``REWARDS``."""


class RewardInputError(RewardError):
    """A rollout or context that cannot give the requested reward (missing arrays, parts, callables)."""


class NonFiniteRewardError(RewardError):
    """A reward produced NaN or inf for some rows."""


class Reward(Protocol):
    """What the trainer calls: one float64 value per rollout row."""

    name: str

    def __call__(self, rollout: Rollout, context: Mapping[str, Any]) -> np.ndarray: ...


def _rows(bad: np.ndarray, limit: int = 10) -> str:
    idx = np.flatnonzero(bad)
    shown = ", ".join(str(i) for i in idx[:limit])
    return shown + (f", ... ({len(idx)} rows)" if len(idx) > limit else "")


def check_finite(values: np.ndarray, name: str) -> np.ndarray:
    """Return ``values`` as float64; raise ``NonFiniteRewardError`` naming the non-finite rows."""
    arr = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise NonFiniteRewardError(
            f"reward {name!r} is not finite in rows {_rows(bad)} (values: {arr[bad][:5].tolist()})"
        )
    return arr


def _vocab_sizes(rollout: Rollout, needed: Sequence[str], reward: str) -> dict[str, int]:
    vs = rollout.settings.get("vocab_size")
    if not isinstance(vs, Mapping):
        raise RewardInputError(
            f"reward {reward!r} removes or replaces the log|V| offset and needs rollout.settings['vocab_size'] "
            f"= {{'text': Vt, 'image': Vi}}; the policy did not set it (got {vs!r}). Set it in the policy, "
            "or use subtract_log_vocab=False without offset_vocab"
        )
    out: dict[str, int] = {}
    for part in needed:
        v = vs.get(part)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise RewardInputError(
                f"reward {reward!r}: rollout.settings['vocab_size'][{part!r}] must be a positive integer, "
                f"got {v!r}"
            )
        out[part] = int(v)
    return out


def _token_arrays(rollout: Rollout, stat: Stat, reward: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values float64, mask bool, modality) (B, T), validated."""
    values = np.asarray(getattr(rollout, stat))
    mask = np.asarray(rollout.token_mask, dtype=bool)
    modality = np.asarray(rollout.modality)
    b = len(rollout)
    if values.size == 0 or mask.size == 0:
        raise RewardInputError(
            f"reward {reward!r} needs per-token statistics, but the rollout carries none (T = 0): "
            "this policy draws no tokens (reference policies); use an external reward"
        )
    if values.ndim != 2 or values.shape[0] != b:
        raise RewardInputError(f"rollout.{stat} must be (B={b}, T), got shape {values.shape}")
    if mask.shape != values.shape or modality.shape != values.shape:
        raise RewardInputError(
            f"rollout.{stat} {values.shape}, token_mask {mask.shape} and modality {modality.shape} "
            "must have the same shape"
        )
    return values.astype(np.float64), mask, modality


@dataclass(frozen=True)
class TokenStatReward:
    """Weighted per-modality self-certainty or entropy; the sign of each weight says max (+) / min (-).

    ``pooling="modality"``: ``r = sum_m w_m * mean_{t in m}(s_t)``.
    ``pooling="tokens"``: ``r = mean_{t in active modalities}(w_{m(t)} * s_t)`` (``nsc`` is
    ``w_text = w_image = -1``, offsets kept). ``s_t`` has ``log|V_m|`` removed when
    ``subtract_log_vocab``. A modality with weight 0 is ignored entirely.

    ``offset_vocab`` (self-certainty, offsets kept): ``{"text": Vt, "image": Vi}``; each token's kept offset
    ``log k_m`` (``rollout.settings["vocab_size"]``) is replaced by ``log V_m``, so ``s_t`` becomes
    ``KL_t + log V_m`` (``offset_vocab=JANUS_PRO_VOCAB`` runs the shapes world with Janus-Pro's offset order).
    Stored as ``(modality, size)`` pairs (text, image); ``offset_vocab_sizes()`` gives the mapping.
    """

    stat: Stat = "self_certainty"
    text_weight: float = -1.0
    image_weight: float = -1.0
    subtract_log_vocab: bool = True
    pooling: Pooling = "modality"
    name: str = "token-stat"
    offset_vocab: Mapping[str, int] | tuple[tuple[str, int], ...] | None = None

    def __post_init__(self) -> None:
        if self.stat not in ("self_certainty", "entropy"):
            raise RewardError(f"stat must be 'self_certainty' or 'entropy', got {self.stat!r}")
        if self.pooling not in ("tokens", "modality"):
            raise RewardError(f"pooling must be 'tokens' or 'modality', got {self.pooling!r}")
        for field_name in ("text_weight", "image_weight"):
            w = getattr(self, field_name)
            if not math.isfinite(float(w)):
                raise RewardError(f"{self.name}: {field_name} must be finite, got {w!r}")
        if self.text_weight == 0 and self.image_weight == 0:
            raise RewardError(f"{self.name}: text_weight and image_weight are both 0 (a constant reward)")
        if self.offset_vocab is not None:
            object.__setattr__(self, "offset_vocab", self._check_offset_vocab(self.offset_vocab))

    def _check_offset_vocab(self, given: Any) -> tuple[tuple[str, int], ...]:
        where = f"reward {self.name!r}: offset_vocab"
        if self.stat != "self_certainty":
            raise RewardError(f"{where} applies to self-certainty only (this reward's statistic is {self.stat})")
        if self.subtract_log_vocab:
            raise RewardError(f"{where} replaces the kept log|V| offsets, but subtract_log_vocab is true (the "
                              "offsets are removed): set subtract_log_vocab: false, or drop offset_vocab")
        pairs = list(given.items()) if isinstance(given, Mapping) else given
        try:
            sizes = dict(pairs)
        except (TypeError, ValueError):
            raise RewardError(f"{where} must map text/image to vocabulary sizes, e.g. "
                              f"{{text: 102400, image: 16384}}; got {given!r}") from None
        unknown = sorted(set(sizes) - set(MODALITIES))
        if unknown:
            raise RewardError(f"{where}: unknown modality {', '.join(map(repr, unknown))} (use text, image)")
        for part in MODALITIES:
            v = sizes.get(part)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise RewardError(f"{where}[{part!r}] must be a positive integer vocabulary size, got {v!r} "
                                  "(give both, e.g. {text: 102400, image: 16384})")
        return tuple((part, int(sizes[part])) for part in MODALITIES)

    def offset_vocab_sizes(self) -> dict[str, int] | None:
        """``offset_vocab`` as ``{"text": Vt, "image": Vi}``, or None (the policy's own offsets)."""
        return None if self.offset_vocab is None else dict(self.offset_vocab)  # type: ignore[arg-type]

    def offsets(self, rollout: Rollout) -> dict[str, float]:
        """The constant subtracted from each modality's per-token values: ``log k_m`` when
        ``subtract_log_vocab``, ``log k_m - log V_m`` with ``offset_vocab``, else 0."""
        parts = list(self.weights())
        if not self.subtract_log_vocab and self.offset_vocab is None:
            return {part: 0.0 for part in parts}
        own = _vocab_sizes(rollout, parts, self.name)
        target = self.offset_vocab_sizes()
        if target is None:
            return {part: math.log(v) for part, v in own.items()}
        return {part: math.log(own[part]) - math.log(target[part]) for part in parts}

    def weights(self) -> dict[str, float]:
        """Non-zero weights by modality name."""
        ws = {"text": float(self.text_weight), "image": float(self.image_weight)}
        return {k: w for k, w in ws.items() if w != 0}

    def __call__(self, rollout: Rollout, context: Mapping[str, Any] | None = None) -> np.ndarray:
        values, mask, modality = _token_arrays(rollout, self.stat, self.name)
        weights = self.weights()
        offsets = self.offsets(rollout)
        part_masks = {part: part_mask(modality, mask, part) for part in weights}
        for part, pm in part_masks.items():
            bad = ~pm.any(axis=1)
            if self.pooling == "modality" and bad.any():
                raise RewardInputError(
                    f"reward {self.name!r}: rows {_rows(bad)} have no {part} tokens but the {part} weight is "
                    f"{weights[part]}; use a preset without the {part} part (its weight 0)"
                )
        if self.pooling == "modality":
            out = np.zeros(len(rollout), dtype=np.float64)
            for part, w in weights.items():
                out += w * (masked_mean(values, part_masks[part]) - offsets[part])
            return check_finite(out, self.name)
        weighted = np.zeros_like(values)
        active = np.zeros_like(mask)
        for part, w in weights.items():
            pm = part_masks[part]
            weighted = np.where(pm, w * (values - offsets[part]), weighted)
            active |= pm
        empty = ~active.any(axis=1)
        if empty.any():
            raise RewardInputError(
                f"reward {self.name!r}: rows {_rows(empty)} have no {' or '.join(weights)} tokens"
            )
        out = np.where(active, weighted, 0.0).sum(axis=1) / active.sum(axis=1)
        return check_finite(out, self.name)


def _judge_correct(out: Any, row: int) -> bool:
    if hasattr(out, "correct"):  # a protocols.geneval.Verdict
        out = out.correct
    if isinstance(out, (bool, np.bool_)):
        return bool(out)
    raise RewardInputError(
        f"verifier: judge returned {type(out).__name__} for row {row}, expected bool or Verdict"
    )


@dataclass(frozen=True)
class VerifierReward:
    """1.0 where ``context["judge"](metadata, image)`` says the image is correct, else 0.0.

    The trainer plugs in the shapes world's exact GenEval judgement; ``context["metadata"]`` holds one
    metadata object per row (prompt-major, like the rollout).
    """

    name: str = "verifier"

    def __call__(self, rollout: Rollout, context: Mapping[str, Any]) -> np.ndarray:
        judge = context.get("judge")
        if not callable(judge):
            raise RewardInputError(
                "reward 'verifier' needs context['judge'] = judge(metadata, image) -> bool; none was given"
            )
        metadata = context.get("metadata")
        if metadata is None or len(metadata) != len(rollout):
            got = "none" if metadata is None else f"{len(metadata)} entries"
            raise RewardInputError(
                f"reward 'verifier' needs context['metadata'] with one entry per rollout row "
                f"({len(rollout)}), got {got}"
            )
        if len(rollout.images) != len(rollout):
            raise RewardInputError(f"rollout has {len(rollout.images)} images for {len(rollout)} rows")
        pairs = enumerate(zip(metadata, rollout.images, strict=True))
        out = [_judge_correct(judge(md, img), i) for i, (md, img) in pairs]
        return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class ClipReward:
    """``context["clip_score"](images, prompts)`` per row, with the rollout's (original) prompts.

    The trainer builds ``clip_score`` from ``model`` / ``pretrained`` (``irisbench.metrics.clip_score.load_clip``:
    the shipped ``shapes-clip`` by default, an open_clip backbone with local weights for real images) and
    ``scale`` (``SCORE_SCALES``).
    """

    name: str = "clip"
    model: str = "shapes-clip"
    pretrained: str | None = None
    scale: str = "raw"

    def __call__(self, rollout: Rollout, context: Mapping[str, Any]) -> np.ndarray:
        scorer = context.get("clip_score")
        if not callable(scorer):
            raise RewardInputError(
                "reward 'clip' needs context['clip_score'] = clip_score(images, prompts) -> floats; "
                "none was given"
            )
        out = np.asarray(scorer(rollout.images, rollout.prompts), dtype=np.float64).reshape(-1)
        if out.shape != (len(rollout),):
            raise RewardInputError(f"clip_score returned {out.size} values for {len(rollout)} rows")
        return check_finite(out, self.name)


PREFERENCE_SCORES = "preference_scores"  # the context entry: {reward name: score(images, prompts) -> floats}


@dataclass(frozen=True)
class PreferenceReward:
    """A preference model's score of each row's image against its prompt (``irisbench.metrics.preference``:
    ``pickscore``, ``hpsv2``), read from ``context["preference_scores"][name]``; ``reward_context`` loads the
    model from ``options`` (``model``, ``processor`` / ``backbone``, ``allow_pickle``: local files only)."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        from irisbench.metrics.preference import check_options

        try:
            check_options(self.name, dict(self.options))
        except IrisbenchError as e:
            raise RewardError(f"reward {self.name!r}: {e}") from None

    def __call__(self, rollout: Rollout, context: Mapping[str, Any]) -> np.ndarray:
        scorer = (context.get(PREFERENCE_SCORES) or {}).get(self.name)
        if not callable(scorer):
            raise RewardInputError(f"reward {self.name!r} needs context[{PREFERENCE_SCORES!r}][{self.name!r}] = "
                                   "score(images, prompts) -> floats; none was given (reward_context builds it)")
        out = np.asarray(scorer(rollout.images, rollout.prompts), dtype=np.float64).reshape(-1)
        if out.shape != (len(rollout),):
            raise RewardInputError(f"{self.name} returned {out.size} values for {len(rollout)} rows")
        return check_finite(out, self.name)


@dataclass(frozen=True)
class CompositeReward:
    """``sum_k weight_k * reward_k``; ``evaluate`` also returns each term (for per-reward logging).

    Every term is checked for shape (B,) and finiteness, including terms of weight 0 (log-only).
    """

    terms: tuple[Reward, ...]
    weights: tuple[float, ...]
    name: str

    def evaluate(
        self, rollout: Rollout, context: Mapping[str, Any]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        parts: dict[str, np.ndarray] = {}
        total = np.zeros(len(rollout), dtype=np.float64)
        for term, w in zip(self.terms, self.weights, strict=True):
            values = np.asarray(term(rollout, context), dtype=np.float64)
            if values.shape != (len(rollout),):
                raise RewardInputError(
                    f"reward {term.name!r} returned shape {values.shape}, expected ({len(rollout)},)"
                )
            parts[term.name] = check_finite(values, term.name)
            total += w * parts[term.name]
        return check_finite(total, self.name), parts

    def __call__(self, rollout: Rollout, context: Mapping[str, Any]) -> np.ndarray:
        return self.evaluate(rollout, context)[0]


ROW_KEYS = "row_keys"  # the context entry holding the rows' RowKeys (the null rewards read it)


@dataclass(frozen=True)
class RowKeys:
    """Who each rollout row is, independent of row order and process count: the training ``seed``, the GRPO
    ``step``, and per row the ``prompt`` slot within the step (0 .. prompts_per_step - 1, counted over all
    processes) and the ``rollout`` index within its group (0 .. G - 1)."""

    seed: int
    step: int
    prompt: np.ndarray  # (B,) int
    rollout: np.ndarray  # (B,) int

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt", np.asarray(self.prompt, dtype=np.int64).reshape(-1))
        object.__setattr__(self, "rollout", np.asarray(self.rollout, dtype=np.int64).reshape(-1))
        if self.prompt.shape != self.rollout.shape:
            raise RewardInputError(f"RowKeys: {self.prompt.size} prompt slots for {self.rollout.size} rollout indices")

    @classmethod
    def groups(cls, seed: int, step: int, prompts: Sequence[int], g: int) -> RowKeys:
        """The keys of prompt-major rows: ``g`` rollouts of each prompt slot in ``prompts``."""
        return cls(seed, step, np.repeat(np.asarray(prompts, dtype=np.int64), g), np.tile(np.arange(g), len(prompts)))

    def __len__(self) -> int:
        return int(self.prompt.size)

    def __getitem__(self, rows: slice | np.ndarray) -> RowKeys:
        return RowKeys(self.seed, self.step, self.prompt[rows], self.rollout[rows])


def row_keys(context: Mapping[str, Any], rows: int, reward: str) -> RowKeys:
    """``context["row_keys"]``, checked to hold one key per row."""
    keys = context.get(ROW_KEYS)
    if not isinstance(keys, RowKeys):
        raise RewardInputError(
            f"reward {reward!r} is drawn from each row's (training seed, step, prompt, rollout) and needs "
            f"context[{ROW_KEYS!r}] = RowKeys(...); the trainer and the alignment probe set it, got {keys!r}")
    if len(keys) != rows:
        raise RewardInputError(f"reward {reward!r}: context[{ROW_KEYS!r}] has {len(keys)} keys for {rows} rows")
    return keys


@dataclass(frozen=True)
class RandomReward:
    """Null control: ``r ~ N(0, 1)`` per row from ``derive_seed(seed, "random-reward", step, prompt, rollout)``.

    It never reads the rollout: identical rollouts get different values, and a row's value does not change
    when its tokens or statistics do."""

    name: str = "random"

    def __call__(self, rollout: Rollout, context: Mapping[str, Any]) -> np.ndarray:
        keys = row_keys(context, len(rollout), self.name)
        draws = [np.random.default_rng(derive_seed(keys.seed, "random-reward", keys.step, int(p), int(j)))
                 .standard_normal() for p, j in zip(keys.prompt, keys.rollout, strict=True)]
        return np.asarray(draws, dtype=np.float64).reshape(len(rollout))


@dataclass(frozen=True)
class ShuffledReward:
    """Null control: ``inner``'s values permuted uniformly at random within each GRPO group (the rows of one
    prompt slot), by a permutation seeded by ``derive_seed(seed, name, step, prompt)`` and applied to the
    group's rows in rollout-index order (so the result does not depend on the rows' order in the batch).
    Each group keeps its multiset of values; which rollout gets which is unrelated to the rollout."""

    inner: Reward
    name: str

    def __call__(self, rollout: Rollout, context: Mapping[str, Any]) -> np.ndarray:
        keys = row_keys(context, len(rollout), self.name)
        values = check_finite(np.asarray(self.inner(rollout, context), dtype=np.float64), self.inner.name)
        out = np.empty_like(values)
        for p in dict.fromkeys(keys.prompt.tolist()):
            rows = np.flatnonzero(keys.prompt == p)
            if len(rows) < 2:
                raise RewardInputError(
                    f"reward {self.name!r} permutes the rewards within each GRPO group and needs at least 2 "
                    f"rollouts per prompt, but prompt slot {p} of step {keys.step} has 1 (set num_generations "
                    "to 2 or more)")
            order = rows[np.argsort(keys.rollout[rows], kind="stable")]
            if len(set(keys.rollout[order].tolist())) != len(order):
                raise RewardInputError(f"reward {self.name!r}: prompt slot {p} has repeated rollout indices "
                                       f"{keys.rollout[order].tolist()}")
            perm = np.random.default_rng(derive_seed(keys.seed, self.name, keys.step, int(p))).permutation(len(order))
            out[order] = values[order[perm]]
        return out


# rewards that permute values within a GRPO group (they need num_generations >= 2)
GROUP_REWARDS = ("shuffled-nsc",)
# rewards that carry no information about the rollout (null controls; irisbench.report.null_control)
NULL_REWARDS = ("random", "shuffled-nsc")
RewardFactory = Callable[..., Reward]


def _preset(stat: Stat, tw: float, iw: float, sub: bool, pooling: Pooling, name: str) -> RewardFactory:
    def factory(**kw: Any) -> Reward:
        args = {"text_weight": tw, "image_weight": iw, "subtract_log_vocab": sub, "pooling": pooling}
        args.update(kw)
        return TokenStatReward(stat=stat, name=name, **args)

    factory.__name__ = f"make_{name.replace('-', '_')}"
    return factory


# name -> (factory, one-line description). Factories take keyword overrides (e.g. text_weight=...).
REWARDS: dict[str, tuple[RewardFactory, str]] = {
    "nsc": (_preset("self_certainty", -1, -1, False, "tokens", "nsc"),
            "IRIS as coded: -mean over all text+image tokens of (logsumexp - mean), log|V| offsets kept"),
    "nsc-balanced": (_preset("self_certainty", -0.5, -0.5, True, "modality", "nsc-balanced"),
                     "-(0.5*SC_text + 0.5*SC_image): per-modality means, log|V| removed (CoT-length free)"),
    "sc": (_preset("self_certainty", 1, 1, False, "tokens", "sc"),
           "Intuitor's sign: +mean over all tokens of (logsumexp - mean) (= -nsc)"),
    "sc-balanced": (_preset("self_certainty", 0.5, 0.5, True, "modality", "sc-balanced"),
                    "+(0.5*SC_text + 0.5*SC_image), per-modality means, log|V| removed"),
    "min-sc-text": (_preset("self_certainty", -1, 0, True, "modality", "min-sc-text"),
                    "ablation: minimise self-certainty of the text (CoT) tokens only"),
    "max-sc-text": (_preset("self_certainty", 1, 0, True, "modality", "max-sc-text"),
                    "ablation: maximise self-certainty of the text (CoT) tokens only"),
    "min-sc-image": (_preset("self_certainty", 0, -1, True, "modality", "min-sc-image"),
                     "ablation: minimise self-certainty of the image tokens only"),
    "max-sc-image": (_preset("self_certainty", 0, 1, True, "modality", "max-sc-image"),
                     "ablation: maximise self-certainty of the image tokens only (collapses in the paper)"),
    "entropy": (_preset("entropy", 1, 1, False, "tokens", "entropy"),
                "backward-KL alternative: +mean token entropy over all tokens (rewards higher entropy)"),
    "neg-entropy": (_preset("entropy", -1, -1, False, "tokens", "neg-entropy"),
                    "-mean token entropy over all tokens (rewards lower entropy)"),
    "verifier": (lambda **kw: VerifierReward(**kw),
                 "1 if context['judge'](metadata, image) accepts the image, else 0 (exact GenEval, shapes)"),
    "clip": (lambda **kw: ClipReward(**kw), "context['clip_score'](images, prompts) per image"),
    "pickscore": (lambda **kw: PreferenceReward("pickscore", tuple(sorted(kw.items()))),
                  "PickScore_v1: logit_scale.exp() * cos(image, prompt) (local CLIPModel folder: model=, processor=)"),
    "hpsv2": (lambda **kw: PreferenceReward("hpsv2", tuple(sorted(kw.items()))),
              "HPS v2.1: cos(image, prompt) in open_clip ViT-H-14 (local weights file: model=, allow_pickle=)"),
    "random": (lambda **kw: RandomReward(**kw),
               "null control: N(0, 1) per rollout, seeded by (training seed, step, prompt, rollout); reads nothing"),
    "shuffled-nsc": (lambda **kw: ShuffledReward(inner=make_reward("nsc", **kw), name="shuffled-nsc"),
                     "null control: nsc's values permuted at random within each GRPO group (same values per "
                     "group, no link to the rollout)"),
}


def make_reward(name: str, **options: Any) -> Reward:
    """One reward by registry name; ``options`` override the preset's fields."""
    if name not in REWARDS:
        raise UnknownRewardError(f"unknown reward {name!r}.{did_you_mean(name, REWARDS)} "
                                 f"Valid rewards: {', '.join(REWARDS)}")
    factory = REWARDS[name][0]
    try:
        return factory(**options)
    except TypeError as e:
        raise RewardError(f"reward {name!r}: bad options {sorted(options)}: {e}") from e


def build_reward(
    spec: str | Sequence[str],
    weights: Sequence[float] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> CompositeReward:
    """A reward from a name or a list of names with matching weights (default 1.0 each).

    ``options`` maps a name to keyword overrides for its factory, e.g.
    ``{"nsc-balanced": {"text_weight": -0.2, "image_weight": -0.8}}``. Always returns a
    ``CompositeReward`` (one term for a single name), whose ``evaluate`` gives per-term values too.
    """
    names = [spec] if isinstance(spec, str) else list(spec)
    if not names:
        raise RewardError("reward spec is empty: give a reward name or a list of names")
    for n in names:
        if not isinstance(n, str):
            raise RewardError(f"reward names must be strings, got {n!r}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RewardError(f"reward names repeated in spec: {', '.join(dup)} (give each once with one weight)")
    ws = [1.0] * len(names) if weights is None else [float(w) for w in weights]
    if len(ws) != len(names):
        raise RewardError(
            f"reward weights have length {len(ws)} but the spec names {len(names)} rewards "
            f"({', '.join(names)})"
        )
    bad = [w for w in ws if not math.isfinite(w)]
    if bad:
        raise RewardError(f"reward weights must be finite, got {bad}")
    options = options or {}
    stray = sorted(set(options) - set(names))
    if stray:
        raise RewardError(f"options given for rewards not in the spec: {', '.join(stray)}")
    terms = tuple(make_reward(n, **dict(options.get(n, {}))) for n in names)
    label = "+".join(n if w == 1.0 else f"{w:g}*{n}" for n, w in zip(names, ws, strict=True))
    return CompositeReward(terms=terms, weights=tuple(ws), name=label)


def reward_context(reward: CompositeReward, world: str, *,
                   raw_clip_score: Callable[[Any, Sequence[str]], Any] | None = None,
                   device: Any = "cpu") -> dict[str, Any]:
    """What the terms of ``reward`` read besides the rollout, for a policy of ``world``: the shapes world's
    exact judge (``judge``), ``clip_score`` when a ``clip`` term is configured (its ``model`` /
    ``pretrained`` / ``scale``), and ``preference_scores`` for ``pickscore`` / ``hpsv2`` terms (models on ``device``).
    ``raw_clip_score`` (raw cosines of that term's CLIP, already built by the
    caller) is used instead of loading the model again. The trainer and the alignment probe both use it."""
    context: dict[str, Any] = {}
    if world == "shapes":
        from irisbench.protocols.geneval import judge
        from irisbench.world.detector import detect

        context["judge"] = lambda meta, image: judge(meta, detect(image)).correct
    clips = [t for t in reward.terms if isinstance(t, ClipReward)]
    if clips:
        from irisbench.metrics.clip_score import SHAPES_CLIP, apply_scale, check_scale, clip_score, load_clip

        spec = clips[0]
        if world != "shapes" and spec.model == SHAPES_CLIP:
            raise RewardError("reward 'clip' on an open-world policy needs a CLIP for real images: set "
                              "reward_options={clip: {model: <open_clip backbone>, pretrained: <local weights "
                              "file>}}; the default shapes-clip only knows the shapes world")
        check_scale(spec.scale)
        if raw_clip_score is None:
            clip = load_clip(spec.model, spec.pretrained)
            context["clip_score"] = lambda images, prompts: clip_score(images, prompts, clip, scale=spec.scale)
        else:
            context["clip_score"] = lambda images, prompts: apply_scale(raw_clip_score(images, prompts), spec.scale)
    prefs = [t for t in reward.terms if isinstance(t, PreferenceReward)]
    if prefs:
        from irisbench.metrics.preference import load_preference

        context[PREFERENCE_SCORES] = {t.name: load_preference(t.name, dict(t.options), device=str(device)).score
                                      for t in prefs}
    return context
