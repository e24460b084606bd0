"""Rewards on hand-made rollouts with hand-computed values, and the registry's errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from irisbench.policies.base import IMAGE, TEXT, Rollout
from irisbench.protocols.geneval import Verdict
from irisbench.train.rewards import (
    REWARDS,
    CompositeReward,
    NonFiniteRewardError,
    RewardError,
    RewardInputError,
    TokenStatReward,
    UnknownRewardError,
    build_reward,
    make_reward,
)

VT, VI = 1000, 100  # text and image vocabulary sizes
LT, LI = math.log(VT), math.log(VI)
PAD = -1


def rollout(rows: list[list[tuple[int, float, float]]], settings: dict | None = None) -> Rollout:
    """rows: per row a list of (modality, self-certainty raw, entropy); right-padded with garbage."""
    b, t = len(rows), max(len(r) for r in rows)
    sc = np.full((b, t), np.nan, dtype=np.float32)
    ent = np.full((b, t), np.inf, dtype=np.float32)
    mod = np.full((b, t), TEXT, dtype=np.int8)
    mask = np.zeros((b, t), dtype=bool)
    for i, r in enumerate(rows):
        for j, (m, s, h) in enumerate(r):
            sc[i, j], ent[i, j], mod[i, j], mask[i, j] = s, h, m, True
    settings = {"vocab_size": {"text": VT, "image": VI}} if settings is None else settings
    return Rollout(
        prompts=[f"p{i}" for i in range(b)],
        seeds=list(range(b)),
        images=[np.zeros((4, 4, 3), np.uint8) for _ in range(b)],
        plans=[""] * b,
        tokens=np.zeros((b, t), np.int64),
        token_mask=mask,
        modality=mod,
        logp=np.zeros((b, t), np.float32),
        self_certainty=sc,
        entropy=ent,
        settings=settings,
    )


TX, IM = TEXT, IMAGE
ROWS = [
    [(TX, 12.0, 1.0), (TX, 13.0, 2.0), (IM, 10.0, 3.0), (IM, 11.0, 4.0), (IM, 12.0, 5.0)],
    [(TX, 11.5, 0.5), (IM, 9.5, 2.5), (IM, 10.5, 3.0)],  # two padded slots (nan / inf) must be ignored
]


def test_nsc_as_coded_keeps_offsets() -> None:
    r = build_reward("nsc")(rollout(ROWS), {})
    np.testing.assert_allclose(r, [-(12 + 13 + 10 + 11 + 12) / 5, -(11.5 + 9.5 + 10.5) / 3], rtol=1e-6)
    assert r.dtype == np.float64 and r.shape == (2,)
    # the as-coded value needs no vocabulary sizes
    np.testing.assert_allclose(build_reward("nsc")(rollout(ROWS, settings={}), {}), r)


def test_nsc_balanced_removes_offsets() -> None:
    r = build_reward("nsc-balanced")(rollout(ROWS), {})
    row0 = -(0.5 * (12.5 - LT) + 0.5 * (11.0 - LI))
    row1 = -(0.5 * (11.5 - LT) + 0.5 * (10.0 - LI))
    np.testing.assert_allclose(r, [row0, row1], rtol=1e-6)


def test_cot_length_shifts_nsc_but_not_nsc_balanced() -> None:
    # identical per-token KL (text 1.0, image 2.0); only the number of CoT tokens differs
    short = [(TX, 1.0 + LT, 0.0)] + [(IM, 2.0 + LI, 0.0)] * 3
    long = [(TX, 1.0 + LT, 0.0)] * 6 + [(IM, 2.0 + LI, 0.0)] * 3
    ro = rollout([short, long])
    bal = build_reward("nsc-balanced")(ro, {})
    np.testing.assert_allclose(bal, [-1.5, -1.5], rtol=1e-6)
    nsc = build_reward("nsc")(ro, {})
    np.testing.assert_allclose(
        nsc, [-(1 + LT + 3 * (2 + LI)) / 4, -(6 * (1 + LT) + 3 * (2 + LI)) / 9], rtol=1e-6
    )
    assert abs(nsc[0] - nsc[1]) > 0.5


def test_sign_switches_and_ablation_presets() -> None:
    ro = rollout(ROWS)
    nsc, sc = build_reward("nsc")(ro, {}), build_reward("sc")(ro, {})
    np.testing.assert_allclose(sc, -nsc)
    np.testing.assert_allclose(build_reward("sc-balanced")(ro, {}), -build_reward("nsc-balanced")(ro, {}))
    np.testing.assert_allclose(build_reward("min-sc-text")(ro, {}), [-(12.5 - LT), -(11.5 - LT)], rtol=1e-6)
    np.testing.assert_allclose(build_reward("max-sc-text")(ro, {}), [12.5 - LT, 11.5 - LT], rtol=1e-6)
    np.testing.assert_allclose(build_reward("min-sc-image")(ro, {}), [-(11.0 - LI), -(10.0 - LI)], rtol=1e-6)
    np.testing.assert_allclose(build_reward("max-sc-image")(ro, {}), [11.0 - LI, 10.0 - LI], rtol=1e-6)
    # general form: the sign of each weight picks max/min per modality
    mixed = TokenStatReward("self_certainty", text_weight=2.0, image_weight=-1.0)(ro, {})
    np.testing.assert_allclose(
        mixed, [2 * (12.5 - LT) - (11.0 - LI), 2 * (11.5 - LT) - (10.0 - LI)], rtol=1e-6
    )
    raw = TokenStatReward("self_certainty", 1.0, 1.0, subtract_log_vocab=False)(ro, {})
    np.testing.assert_allclose(raw, [12.5 + 11.0, 11.5 + 10.0], rtol=1e-6)


def test_entropy_signs() -> None:
    ro = rollout(ROWS)
    ent = build_reward("entropy")(ro, {})
    np.testing.assert_allclose(ent, [(1 + 2 + 3 + 4 + 5) / 5, (0.5 + 2.5 + 3.0) / 3], rtol=1e-6)
    np.testing.assert_allclose(build_reward("neg-entropy")(ro, {}), -ent)
    per_mod = TokenStatReward("entropy", 0.0, 1.0, subtract_log_vocab=True, pooling="modality")(ro, {})
    np.testing.assert_allclose(per_mod, [4.0 - LI, 2.75 - LI], rtol=1e-6)  # = -KL(pi || U) on image tokens


def test_missing_parts_raise_instead_of_zero() -> None:
    no_cot = rollout([[(IM, 10.0, 1.0), (IM, 11.0, 1.0)], ROWS[1]])
    with pytest.raises(RewardInputError, match=r"rows 0 have no text tokens"):
        build_reward("nsc-balanced")(no_cot, {})
    np.testing.assert_allclose(
        build_reward("min-sc-image")(no_cot, {}), [-(10.5 - LI), -(10.0 - LI)], rtol=1e-6
    )
    np.testing.assert_allclose(build_reward("nsc")(no_cot, {})[0], -10.5)  # pooled: image tokens only
    with pytest.raises(RewardInputError, match="no text tokens"):
        build_reward("min-sc-text")(no_cot, {})


def test_missing_vocab_size_and_token_arrays() -> None:
    with pytest.raises(RewardInputError, match=r"vocab_size"):
        build_reward("nsc-balanced")(rollout(ROWS, settings={}), {})
    with pytest.raises(RewardInputError, match=r"\['vocab_size'\]\['image'\]"):
        build_reward("nsc-balanced")(rollout(ROWS, settings={"vocab_size": {"text": VT}}), {})
    # only the parts with a non-zero weight need a size
    build_reward("min-sc-text")(rollout(ROWS, settings={"vocab_size": {"text": VT}}), {})
    empty = Rollout(prompts=["a"], seeds=[0], images=[np.zeros((2, 2, 3), np.uint8)])
    with pytest.raises(RewardInputError, match="T = 0"):
        build_reward("nsc")(empty, {})


def test_non_finite_token_values_raise() -> None:
    rows = [ROWS[0], [(TX, float("inf"), 0.0), (IM, 1.0, 0.0)]]
    with pytest.raises(NonFiniteRewardError, match="rows 1"):
        build_reward("nsc")(rollout(rows), {})


def test_verifier_with_injected_judge() -> None:
    ro = rollout(ROWS)
    calls = []

    def judge(metadata: dict, image: np.ndarray) -> bool | Verdict:
        calls.append((metadata["id"], image.shape))
        return Verdict(True, "ok") if metadata["id"] == 0 else False

    r = build_reward("verifier")(ro, {"judge": judge, "metadata": [{"id": 0}, {"id": 1}]})
    np.testing.assert_array_equal(r, [1.0, 0.0])
    assert calls == [(0, (4, 4, 3)), (1, (4, 4, 3))]
    with pytest.raises(RewardInputError, match="judge"):
        build_reward("verifier")(ro, {"metadata": [{}, {}]})
    with pytest.raises(RewardInputError, match=r"one entry per rollout row \(2\), got 1"):
        build_reward("verifier")(ro, {"judge": judge, "metadata": [{"id": 0}]})
    with pytest.raises(RewardInputError, match="expected bool"):
        build_reward("verifier")(ro, {"judge": lambda m, i: 0.7, "metadata": [{}, {}]})


def test_clip_with_injected_scorer() -> None:
    ro = rollout(ROWS)
    r = build_reward("clip")(ro, {"clip_score": lambda imgs, prompts: [0.25 * len(p) for p in prompts]})
    np.testing.assert_allclose(r, [0.5, 0.5])
    with pytest.raises(RewardInputError, match="1 values for 2 rows"):
        build_reward("clip")(ro, {"clip_score": lambda imgs, prompts: [0.3]})
    with pytest.raises(NonFiniteRewardError, match="rows 1"):
        build_reward("clip")(ro, {"clip_score": lambda imgs, prompts: [0.3, float("nan")]})


def test_weighted_composition_and_components() -> None:
    ro = rollout(ROWS)
    ctx = {"judge": lambda m, i: m["ok"], "metadata": [{"ok": True}, {"ok": False}]}
    rew = build_reward(["nsc", "verifier"], weights=[1.0, 0.5])
    assert isinstance(rew, CompositeReward) and rew.name == "nsc+0.5*verifier"
    total, parts = rew.evaluate(ro, ctx)
    np.testing.assert_allclose(parts["nsc"], [-11.6, -31.5 / 3], rtol=1e-6)
    np.testing.assert_array_equal(parts["verifier"], [1.0, 0.0])
    np.testing.assert_allclose(total, [-11.6 + 0.5, -31.5 / 3], rtol=1e-6)
    np.testing.assert_allclose(rew(ro, ctx), total)
    custom = build_reward(
        "nsc-balanced", options={"nsc-balanced": {"text_weight": 0.0, "image_weight": -2.0}}
    )
    np.testing.assert_allclose(custom(ro, {}), [-2 * (11.0 - LI), -2 * (10.0 - LI)], rtol=1e-6)


def test_composite_rejects_non_finite_term() -> None:
    class Bad:
        name = "bad"

        def __call__(self, rollout: Rollout, context: dict) -> np.ndarray:
            return np.array([0.0, np.nan, np.inf])

    comp = CompositeReward(terms=(Bad(),), weights=(1.0,), name="bad")
    ro = rollout(ROWS + [ROWS[0]])
    with pytest.raises(NonFiniteRewardError, match=r"'bad' is not finite in rows 1, 2"):
        comp(ro, {})


def test_registry_errors() -> None:
    with pytest.raises(
        UnknownRewardError, match=r"Did you mean 'nsc-balanced'.*Valid rewards: nsc, nsc-balanced"
    ):
        build_reward("nsc-balance")
    with pytest.raises(UnknownRewardError, match="Valid rewards"):
        make_reward("zzz")
    with pytest.raises(RewardError, match=r"weights have length 1 but the spec names 2 rewards"):
        build_reward(["nsc", "verifier"], weights=[1.0])
    with pytest.raises(RewardError, match="repeated"):
        build_reward(["nsc", "nsc"])
    with pytest.raises(RewardError, match="empty"):
        build_reward([])
    with pytest.raises(RewardError, match="finite"):
        build_reward(["nsc"], weights=[float("nan")])
    with pytest.raises(RewardError, match="bad options"):
        build_reward("nsc", options={"nsc": {"temperature": 2}})
    with pytest.raises(RewardError, match="not in the spec"):
        build_reward("nsc", options={"clip": {}})
    with pytest.raises(RewardError, match="both 0"):
        TokenStatReward("self_certainty", 0.0, 0.0)
    assert issubclass(RewardError, ValueError)


def test_registry_listing() -> None:
    assert {"nsc", "nsc-balanced", "sc", "entropy", "neg-entropy", "verifier", "clip"} <= set(REWARDS)
    for name, (factory, desc) in REWARDS.items():
        assert isinstance(desc, str) and desc and "\n" not in desc
        assert factory().name == name


def test_nsc_from_logits_end_to_end() -> None:
    torch = pytest.importorskip("torch")
    from irisbench.core.uncertainty import self_certainty, token_stats

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 40, generator=g) * 2
    chosen = torch.randint(0, 40, (3, 6), generator=g)
    _, sc_raw, ent = token_stats(logits, chosen)
    rows = [
        [(TX if j < 2 else IM, float(sc_raw[i, j]), float(ent[i, j])) for j in range(6)] for i in range(3)
    ]
    r = build_reward("nsc")(rollout(rows), {})
    expected = -self_certainty(logits, subtract_log_vocab=False).double().mean(-1).numpy()
    np.testing.assert_allclose(r, expected, rtol=1e-5)
