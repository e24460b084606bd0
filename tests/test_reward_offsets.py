"""The self-certainty offset switch (``offset_vocab`` / ``OFFSET_ORDERS``): a 3-token example computed by hand under
the world's, Janus-Pro's and no offsets; the vocabulary each policy's SC is taken over; the preset; bad options."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from irisbench.core.errors import IrisbenchError
from irisbench.core.uncertainty import self_certainty
from irisbench.policies.base import IMAGE, TEXT, Rollout
from irisbench.train.config import resolve_config
from irisbench.train.rewards import (
    JANUS_PRO_VOCAB,
    OFFSET_ORDERS,
    RewardError,
    build_reward,
    make_reward,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# 2 plan tokens over a 2-way plan vocabulary, then 1 image token over a 4-way codebook
K_TEXT, K_IMAGE = 2, 4
PLAN_LOGITS = [[0.0, 0.0], [math.log(3.0), 0.0]]
IMAGE_LOGITS = [math.log(2.0), 0.0, 0.0, 0.0]

# by hand: raw SC = logsumexp(z) - mean(z)
#   plan 1: p = (1/2, 1/2):  log 2 - 0                    = log 2            (KL 0)
#   plan 2: p = (3/4, 1/4):  log 4 - (log 3)/2                               (KL log 2 - (log 3)/2)
#   image:  p = (2,1,1,1)/5: log 5 - (log 2)/4                               (KL log 5 - (log 2)/4 - log 4)
RAW = [math.log(2.0), math.log(4.0) - math.log(3.0) / 2, math.log(5.0) - math.log(2.0) / 4]
KL = [0.0, math.log(2.0) - math.log(3.0) / 2, math.log(5.0) - math.log(2.0) / 4 - math.log(4.0)]
LOG_VT, LOG_VI = math.log(102_400), math.log(16_384)


def three_token_rollout(plan_tokens: int = 2) -> Rollout:
    """One row: ``plan_tokens`` of the plan tokens above (2 by default), then the image token; SC from the
    logits with the project's own ``self_certainty`` (offsets kept, as a policy records it)."""
    logits = [torch.tensor(z) for z in PLAN_LOGITS[:plan_tokens]] + [torch.tensor(IMAGE_LOGITS)]
    sc = [float(self_certainty(z, subtract_log_vocab=False)) for z in logits]
    return one_row(sc, [TEXT] * plan_tokens + [IMAGE], {"text": K_TEXT, "image": K_IMAGE})


def one_row(sc: list[float], modality: list[int], vocab: dict[str, int]) -> Rollout:
    t = len(sc)
    return Rollout(prompts=["p"], seeds=[0], images=[np.zeros((4, 4, 3), np.uint8)], plans=["a b"],
                   tokens=np.zeros((1, t), np.int64), token_mask=np.ones((1, t), bool),
                   modality=np.array([modality], dtype=np.int8), logp=np.zeros((1, t), np.float32),
                   self_certainty=np.array([sc], dtype=np.float32), entropy=np.zeros((1, t), np.float32),
                   settings={"vocab_size": vocab})


def test_recorded_sc_is_the_hand_value() -> None:
    np.testing.assert_allclose(three_token_rollout().self_certainty[0], RAW, rtol=1e-6)
    # raw = KL + log k (the kept offset of each modality)
    np.testing.assert_allclose(RAW, [KL[0] + math.log(K_TEXT), KL[1] + math.log(K_TEXT),
                                     KL[2] + math.log(K_IMAGE)], rtol=1e-12)


@pytest.mark.parametrize("order, expected", [
    ("world", -(RAW[0] + RAW[1] + RAW[2]) / 3),
    ("janus", -((KL[0] + LOG_VT) + (KL[1] + LOG_VT) + (KL[2] + LOG_VI)) / 3),
    ("none", -(KL[0] + KL[1] + KL[2]) / 3),
])
def test_nsc_under_each_offset_order(order: str, expected: float) -> None:
    reward = make_reward("nsc", **OFFSET_ORDERS[order])
    np.testing.assert_allclose(reward(three_token_rollout(), {}), [expected], rtol=1e-6)


def test_janus_offsets_reverse_the_sign_of_a_plan_token_s_offset_pull() -> None:
    """Dropping the second plan token changes nsc by the hand-computed amounts; with equal KLs it is the offsets
    alone that decide the sign: the world's (log 2 < log 4) reward a plan token, Janus-Pro's (log 102400 >
    log 16384) penalise it."""
    one, two = three_token_rollout(1), three_token_rollout(2)
    for order, (lt, li) in {"world": (math.log(K_TEXT), math.log(K_IMAGE)), "janus": (LOG_VT, LOG_VI),
                            "none": (0.0, 0.0)}.items():
        r = make_reward("nsc", **OFFSET_ORDERS[order])
        got = float(r(two, {})[0] - r(one, {})[0])
        want = -((KL[0] + lt) + (KL[1] + lt) + (KL[2] + li)) / 3 + ((KL[0] + lt) + (KL[2] + li)) / 2
        assert got == pytest.approx(want, rel=1e-6)
    # same KL on every token: only the offsets differ
    flat = three_token_rollout(2)
    flat.self_certainty[0] = [math.log(K_TEXT), math.log(K_TEXT), math.log(K_IMAGE)]  # KL 0 everywhere
    flat_one = three_token_rollout(1)
    flat_one.self_certainty[0] = [math.log(K_TEXT), math.log(K_IMAGE)]
    bonus = {o: float(make_reward("nsc", **OFFSET_ORDERS[o])(flat, {})[0]
                      - make_reward("nsc", **OFFSET_ORDERS[o])(flat_one, {})[0]) for o in OFFSET_ORDERS}
    assert bonus["world"] > 0 > bonus["janus"] and bonus["none"] == pytest.approx(0.0, abs=1e-7)


def test_modality_pooling_shifts_every_row_alike() -> None:
    """Per-modality means: the offsets add the same constant to every row, so GRPO advantages do not move."""
    one, two = three_token_rollout(1), three_token_rollout(2)
    base = make_reward("nsc", pooling="modality")
    janus = make_reward("nsc", pooling="modality", offset_vocab=JANUS_PRO_VOCAB)
    for r in (one, two):
        shift = float(janus(r, {})[0] - base(r, {})[0])
        assert shift == pytest.approx(-(LOG_VT - math.log(K_TEXT)) - (LOG_VI - math.log(K_IMAGE)), rel=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"offset_vocab": JANUS_PRO_VOCAB, "subtract_log_vocab": True}, "subtract_log_vocab is true"),
    ({"offset_vocab": {"text": 102400}}, "offset_vocab['image'] must be a positive integer"),
    ({"offset_vocab": {"text": 102400, "image": True}}, "offset_vocab['image'] must be a positive integer"),
    ({"offset_vocab": {"text": 0, "image": 5}}, "offset_vocab['text'] must be a positive integer"),
    ({"offset_vocab": {"text": 5, "image": 5, "audio": 3}}, "unknown modality 'audio'"),
    ({"offset_vocab": "janus"}, "must map text/image to vocabulary sizes"),
])
def test_bad_offset_vocab_is_one_line(options: dict, message: str) -> None:
    with pytest.raises(RewardError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        make_reward("nsc", **options)
    assert "\n" not in str(e.value)


def test_offset_vocab_on_entropy_is_refused() -> None:
    with pytest.raises(RewardError, match="self-certainty only"):
        make_reward("entropy", offset_vocab=JANUS_PRO_VOCAB)


def test_offset_vocab_needs_the_policy_s_vocabulary() -> None:
    r = three_token_rollout()
    r.settings = {}
    with pytest.raises(RewardError, match=r"rollout.settings\['vocab_size'\]"):
        make_reward("nsc", offset_vocab=JANUS_PRO_VOCAB)(r, {})


def test_the_janus_offsets_preset() -> None:
    cfg = resolve_config("iris-shapes-janus-offsets", [])
    base = resolve_config("iris-shapes", [])
    reward = build_reward(cfg.reward, options=cfg.reward_options)
    (term,) = reward.terms
    assert term.offset_vocab_sizes() == JANUS_PRO_VOCAB and not term.subtract_log_vocab
    # the IRIS shapes preset otherwise
    differ = {k for k in vars(cfg) if getattr(cfg, k) != getattr(base, k)}
    assert differ == {"reward_options"}
    with pytest.raises(IrisbenchError) as e:  # the CLI prints it as one line
        resolve_config("iris-shapes", ["reward_options={nsc: {offset_vocab: {text: 10}}}"])
    assert "\n" not in str(e.value) and "offset_vocab['image']" in str(e.value)


def test_shapes_policy_sc_vocabulary_is_what_the_logits_span(tiny_policy_dir: Path) -> None:
    """The shapes LM records ``vocab_size`` = the allowed sub-vocabularies its statistics are taken over
    (the plan symbols + EOP, the codebook), not the LM's whole vocabulary."""
    from irisbench.policies.shapes_lm import ShapesLMPolicy

    policy = ShapesLMPolicy.load(tiny_policy_dir)
    r = policy.generate(["a photo of a red circle"], seed=1, keep_logits=True)
    kept = r.extras["logits"][0]
    sizes = r.settings["vocab_size"]
    assert sizes == policy.vocab_sizes == {"text": len(policy.vocab.text_ids), "image": policy.vocab.codebook_size}
    assert kept["plan"][0].shape[-1] == sizes["text"] and kept["image_cond"][0].shape[-1] == sizes["image"]
    assert sizes["text"] + sizes["image"] < policy.model.config.vocab_size


# ------------------------------------------------------------------ benchmarks/offset_length_bonus.py's estimators

def _bonus_module():
    import importlib
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        return importlib.import_module("offset_length_bonus")
    finally:
        sys.path.pop(0)


def _synthetic(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(7), 5)
    x = rng.integers(5, 20, size=group.size).astype(float) + 3 * group
    y = 0.3 * x - 2.0 * group + rng.normal(size=group.size)
    return x, y, group


def test_within_prompt_slope_is_least_squares_with_prompt_dummies() -> None:
    mod = _bonus_module()
    x, y, group = _synthetic()
    dummies = (group[:, None] == np.arange(group.max() + 1)[None]).astype(float)
    coef = np.linalg.lstsq(np.column_stack([x, dummies]), y, rcond=None)[0]
    ones = np.ones((1, group.max() + 1))
    assert mod.within_slope(x, y, group, ones)[0] == pytest.approx(coef[0], rel=1e-10)
    pooled = np.polyfit(x, y, 1)[0]
    assert mod.pooled_slope(x, y, group, ones)[0] == pytest.approx(pooled, rel=1e-10)
    # a bootstrap weight vector = the same fit on the resampled rows (group 0 twice, group 1 dropped)
    w = ones.copy()
    w[0, 0], w[0, 1] = 2, 0
    rows = np.concatenate([np.flatnonzero(group == g) for g in [0, 0, *range(2, group.max() + 1)]])
    xr, yr = x[rows], y[rows]
    gr = np.concatenate([[k] * 5 for k in range(group.max() + 1)])  # the two copies of group 0 as two groups
    dr = (gr[:, None] == np.arange(gr.max() + 1)[None]).astype(float)
    coef_r = np.linalg.lstsq(np.column_stack([xr, dr]), yr, rcond=None)[0]
    assert mod.within_slope(x, y, group, w)[0] == pytest.approx(coef_r[0], rel=1e-10)
    assert mod.pooled_slope(x, y, group, w)[0] == pytest.approx(np.polyfit(xr, yr, 1)[0], rel=1e-10)


def test_analysis_of_pure_offset_rows_recovers_the_hand_bonus() -> None:
    """Rollouts whose every token has KL 0: nsc = -(L a_t + n a_i) / (L + n), so the analytic bonus is exactly
    (a_i - a_t) n / (L + n)^2 per row, and the offset-free order has no bonus at all."""
    mod = _bonus_module()
    vocab = {"text": 24, "image": 763}
    length = np.array([6, 12, 6, 18, 24, 12, 6, 12], dtype=float)
    n = 64.0
    frame = offset_only_frame(length, n, vocab)
    table, facts = mod.analyse(frame, vocab, resamples=50, seed=0)
    get = {(r.order, r.estimator): r.value for r in table.itertuples()}
    for order, (at, ai) in mod.order_offsets(vocab).items():
        want = float(np.mean((ai - at) * n / (length + n) ** 2))
        assert get[(order, "analytic")] == pytest.approx(want, rel=1e-9)
    assert get[("none", "within_prompt")] == pytest.approx(0.0, abs=1e-6)  # SC stored in float32
    assert facts["kl_text_mean"] == pytest.approx(0.0, abs=1e-12)
    assert mod.order_offsets(vocab)["janus"] == (pytest.approx(LOG_VT), pytest.approx(LOG_VI))


def offset_only_frame(length: np.ndarray, n: float, vocab: dict[str, int]) -> pd.DataFrame:
    lt, li = math.log(vocab["text"]), math.log(vocab["image"])
    frame = pd.DataFrame({"prompt_index": np.repeat([0, 1], len(length) // 2), "plan_len": length,
                          "image_len": np.full(len(length), n), "sc_text_raw": lt, "sc_image_raw": li})
    for order, options in OFFSET_ORDERS.items():
        reward = make_reward("nsc", **options)
        values = []
        for L in length.astype(int):
            r = one_row([lt] * L + [li] * int(n), [TEXT] * L + [IMAGE] * int(n), vocab)
            values.append(float(reward(r, {})[0]))
        frame[f"reward_{order}"] = values
    return frame
