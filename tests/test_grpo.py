"""GRPO maths against hand computations (advantages, k3, clipping, loss types, REINFORCE gradient)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irisbench.train.grpo import clipped_objective, group_advantages, grpo_loss, k3_kl

F64 = torch.float64


def t(x: object) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


# ---------------------------------------------------------------- advantages


def test_group_advantages_hand_values() -> None:
    adv, stats = group_advantages(t([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0]), 4)
    std0 = math.sqrt(5.0 / 3.0)  # unbiased: (2.25 + 0.25 + 0.25 + 2.25) / 3
    expected = [(-1.5) / (std0 + 1e-4), (-0.5) / (std0 + 1e-4), 0.5 / (std0 + 1e-4), 1.5 / (std0 + 1e-4)]
    torch.testing.assert_close(adv, t(expected + [0.0] * 4))
    assert stats["reward"] == pytest.approx(3.75)
    assert stats["reward_std"] == pytest.approx(std0 / 2)
    assert stats["frac_reward_zero_std"] == pytest.approx(0.5)


def test_zero_spread_groups_give_exact_zeros() -> None:
    adv, stats = group_advantages(np.array([0.1, 0.1, 0.1, 7.0, 7.0, 7.0]), 3)
    assert torch.equal(adv, torch.zeros(6, dtype=F64))  # not ~1e-13 rounding noise / 1e-4
    assert stats["frac_reward_zero_std"] == 1.0


def test_scale_rewards_modes() -> None:
    r = t([0.0, 2.0, 10.0, 20.0])
    adv, _ = group_advantages(r, 2, scale_rewards=False)
    torch.testing.assert_close(adv, t([-1.0, 1.0, -5.0, 5.0]))
    adv_none, _ = group_advantages(r, 2, scale_rewards="none")
    torch.testing.assert_close(adv_none, adv)
    s = math.sqrt(2.0)  # unbiased std of (0, 2) and of (-1, 1) * ... per group: |a - b| / sqrt(2)
    adv_g, _ = group_advantages(r, 2)
    torch.testing.assert_close(
        adv_g, t([-1 / (s + 1e-4), 1 / (s + 1e-4), -5 / (5 * s + 1e-4), 5 / (5 * s + 1e-4)])
    )
    batch_std = float(np.std([0.0, 2.0, 10.0, 20.0], ddof=1))
    adv_b, _ = group_advantages(r, 2, scale_rewards="batch")
    torch.testing.assert_close(adv_b, t([-1.0, 1.0, -5.0, 5.0]) / (batch_std + 1e-4))
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(r, 2, scale_rewards="per-token")


def test_advantages_ignore_constant_shifts_and_keep_dtype() -> None:
    r = torch.tensor([0.3, -1.2, 4.0, 0.0, 2.5, 2.0], dtype=torch.float32)
    a1, _ = group_advantages(r, 3)
    a2, _ = group_advantages(r + torch.tensor([11.54] * 3 + [-9.7] * 3), 3)
    assert a1.dtype == torch.float32
    torch.testing.assert_close(a1, a2, rtol=1e-5, atol=1e-5)
    a_list, _ = group_advantages([1, 2, 3, 4], 2)
    assert a_list.dtype == F64


def test_advantage_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"num_generations must be >= 2"):
        group_advantages(t([1.0, 2.0]), 1)
    with pytest.raises(ValueError, match=r"B=10 is not a positive multiple of num_generations=4.*2, 5, 10"):
        group_advantages(t(list(range(10))), 4)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(t([[1.0, 2.0]]), 2)
    with pytest.raises(ValueError, match=r"non-finite at rows \[1\]"):
        group_advantages(t([1.0, float("nan")]), 2)


# ---------------------------------------------------------------- k3 and clipping


def test_k3_hand_values() -> None:
    k = k3_kl(t([-1.0, -2.0, -0.5]), t([-2.0, -1.0, -0.5]))
    torch.testing.assert_close(k, t([math.exp(-1.0), math.e - 2.0, 0.0]))
    assert (k3_kl(torch.randn(100, dtype=F64), torch.randn(100, dtype=F64)) >= 0).all()


def test_clipping_binds_outside_the_trust_region() -> None:
    ratios = t([[1.5, 1.5, 0.5, 0.5, 1.1]])
    logp = torch.log(ratios).requires_grad_(True)
    old = torch.zeros_like(logp)
    adv = t([[1.0, -1.0, -1.0, 1.0, 1.0]])
    loss, stats = clipped_objective(logp, old, adv, epsilon=0.2)
    torch.testing.assert_close(loss, t([[-1.2, 1.5, 0.8, -0.5, -1.1]]))
    assert stats["clip_ratio/high_mean"] == pytest.approx(1 / 5)
    assert stats["clip_ratio/low_mean"] == pytest.approx(1 / 5)
    assert stats["clip_ratio/region_mean"] == pytest.approx(2 / 5)
    loss.sum().backward()
    # where the clip binds, the gradient is zero; elsewhere d(-rho*A)/dlogp = -rho*A
    torch.testing.assert_close(logp.grad, t([[0.0, 1.5, 0.0, -0.5, -1.1]]))


def test_epsilon_high_is_asymmetric() -> None:
    logp, old, adv = torch.log(t([[1.25, 0.75]])), torch.zeros(1, 2, dtype=F64), t([[1.0, -1.0]])
    sym, _ = clipped_objective(logp, old, adv, epsilon=0.2)
    torch.testing.assert_close(sym, t([[-1.2, 0.8]]))
    dapo, stats = clipped_objective(logp, old, adv, epsilon=0.2, epsilon_high=0.28)
    torch.testing.assert_close(dapo, t([[-1.25, 0.8]]))
    assert stats["clip_ratio/high_mean"] == 0.0 and stats["clip_ratio/low_mean"] == 0.5


# ---------------------------------------------------------------- loss types

LOGP = t([[-1.0, -2.0, -3.0], [-0.5, -1.5, 0.0]])
MASK = torch.tensor([[True, True, True], [True, True, False]])
ADV = t([1.0, -2.0])


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        ("grpo", (-1.0 + 2.0) / 2),  # per-sequence token means (-1, +2), then mean over sequences
        ("bnpo", (-3.0 + 4.0) / 5),  # sum over the 5 real tokens / 5
        ("dr_grpo", (-3.0 + 4.0) / (2 * 4)),  # sum / (B * max_completion_length)
    ],
)
def test_loss_types_at_ratio_one(loss_type: str, expected: float) -> None:
    loss, m = grpo_loss(LOGP, None, None, ADV, MASK, loss_type=loss_type, max_completion_length=4)  # type: ignore[arg-type]
    assert loss.item() == pytest.approx(expected)
    assert m["loss"] == pytest.approx(expected) and m["num_tokens"] == 5
    assert m["clip_ratio/region_mean"] == 0.0 and "kl" not in m


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_loss_types_with_kl_penalty(loss_type: str) -> None:
    beta, k = 0.1, math.exp(-1.0)  # ref = logp - 1 -> k3 = e^-1 on every token
    loss, m = grpo_loss(
        LOGP,
        None,
        LOGP - 1.0,
        ADV,
        MASK,
        beta=beta,
        loss_type=loss_type,  # type: ignore[arg-type]
        max_completion_length=4,
    )
    per_row = [(-1.0 + beta * k) * 3, (2.0 + beta * k) * 2]
    expected = {
        "grpo": (per_row[0] / 3 + per_row[1] / 2) / 2,
        "bnpo": sum(per_row) / 5,
        "dr_grpo": sum(per_row) / 8,
    }[loss_type]
    assert loss.item() == pytest.approx(expected)
    assert m["kl"] == pytest.approx(k)


def test_loss_with_old_logp_matches_reference_loop() -> None:
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(3, 4, generator=g, dtype=F64) * 3
    old = logp + torch.randn(3, 4, generator=g, dtype=F64) * 0.3
    ref = logp + torch.randn(3, 4, generator=g, dtype=F64) * 0.3
    adv = t([0.7, -1.3, 0.2])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    loss, m = grpo_loss(logp, old, ref, adv, mask, beta=0.04, epsilon=0.2, epsilon_high=0.3)
    rows, n_clip = [], 0
    for i in range(3):
        vals = []
        for j in range(4):
            if not mask[i, j]:
                continue
            rho = math.exp(logp[i, j] - old[i, j])
            a = float(adv[i])
            obj = min(rho * a, min(max(rho, 0.8), 1.3) * a)
            d = float(ref[i, j] - logp[i, j])
            vals.append(-obj + 0.04 * (math.exp(d) - d - 1))
            n_clip += (rho < 0.8 and a < 0) or (rho > 1.3 and a > 0)
        rows.append(sum(vals) / len(vals))
    assert loss.item() == pytest.approx(sum(rows) / 3)
    assert m["clip_ratio/region_mean"] == pytest.approx(n_clip / 7)


def test_padding_cannot_poison_loss_or_gradient() -> None:
    logp = t([[-1.0, float("-inf")], [-2.0, float("nan")]]).requires_grad_(True)
    mask = torch.tensor([[True, False], [True, False]])
    loss, _ = grpo_loss(
        logp, None, t([[-1.0, 0.0], [-2.0, 0.0]]), t([1.0, 1.0]), mask, beta=0.1, loss_type="bnpo"
    )
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(logp.grad).all()
    torch.testing.assert_close(logp.grad, t([[-0.5, 0.0], [-0.5, 0.0]]))


def test_loss_argument_errors() -> None:
    with pytest.raises(ValueError, match="needs ref_logp"):
        grpo_loss(LOGP, None, None, ADV, MASK, beta=0.01)
    with pytest.raises(ValueError, match="loss_type must be one of grpo, bnpo, dr_grpo, dapo"):
        grpo_loss(LOGP, None, None, ADV, MASK, loss_type="ppo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs num_items_in_batch"):
        grpo_loss(LOGP, None, None, ADV, MASK, loss_type="dapo")
    with pytest.raises(ValueError, match="must count the whole step"):
        grpo_loss(LOGP, None, None, ADV, MASK, loss_type="dapo", num_items_in_batch=4)
    with pytest.raises(ValueError, match="num_processes must be a positive int"):
        grpo_loss(LOGP, None, None, ADV, MASK, num_processes=0)
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(LOGP, None, None, ADV, MASK, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="3 tokens, more than max_completion_length=2"):
        grpo_loss(LOGP, None, None, ADV, MASK, loss_type="dr_grpo", max_completion_length=2)
    with pytest.raises(ValueError, match="mask shape"):
        grpo_loss(LOGP, None, None, ADV, MASK[:, :2])
    with pytest.raises(ValueError, match="advantages has 3 rows"):
        grpo_loss(LOGP, None, None, t([1.0, 2.0, 3.0]), MASK)


# ---------------------------------------------------------------- normalisers over ranks and micro-batches

# One step of 4 groups of G = 2 (8 sequences) of different lengths, per-token losses at ratio 1 are -A_i.
STEP_MASK = torch.tensor([[j < n for j in range(6)] for n in (6, 2, 5, 1, 3, 3, 4, 6)])
STEP_ADV = t([0.5, -0.5, 1.0, -1.0, 0.3, -0.3, 2.0, -2.0])
STEP_LOGP = -torch.linspace(0.1, 4.8, 48, dtype=F64).reshape(8, 6)
MAX_LEN = 7


def _trl_step_loss(loss_type: str, world: int, accum: int) -> float:
    """trl's step loss written out: each process p takes a contiguous share of the sequences, split into
    ``accum`` micro-batches; ``_compute_loss`` per micro-batch (grpo/bnpo/dr_grpo divided by accum; dapo by
    num_items_in_batch / num_processes), summed over micro-batches, then averaged over processes (DDP)."""
    lengths = [int(x) for x in STEP_MASK.sum(1)]
    adv = [float(a) for a in STEP_ADV]
    n_items = sum(lengths)
    per_rank = 8 // world
    size = per_rank // accum
    total = 0.0
    for p in range(world):
        for k in range(accum):
            rows = range(p * per_rank + k * size, p * per_rank + (k + 1) * size)
            token_sum = sum(-adv[i] * lengths[i] for i in rows)  # every token's loss is -A_i at ratio 1
            if loss_type == "grpo":
                value = sum(-adv[i] for i in rows) / len(rows) / accum
            elif loss_type == "bnpo":
                value = token_sum / sum(lengths[i] for i in rows) / accum
            elif loss_type == "dr_grpo":
                value = token_sum / (len(rows) * MAX_LEN) / accum
            else:
                value = token_sum / (n_items / world)
            total += value
    return total / world


def _our_step_loss(loss_type: str, world: int, accum: int) -> float:
    n_items = float(STEP_MASK.sum())
    per_rank, total = 8 // world, 0.0
    size = per_rank // accum
    for p in range(world):
        for k in range(accum):
            rows = slice(p * per_rank + k * size, p * per_rank + (k + 1) * size)
            loss, _ = grpo_loss(STEP_LOGP[rows], None, None, STEP_ADV[rows], STEP_MASK[rows],
                                loss_type=loss_type, max_completion_length=MAX_LEN,  # type: ignore[arg-type]
                                num_items_in_batch=n_items, gradient_accumulation_steps=accum, num_processes=world)
            total += loss.item()
    return total


SPLITS = [(1, 1), (1, 2), (2, 1), (2, 2), (1, 4), (4, 1)]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize(("world", "accum"), SPLITS)
def test_step_loss_is_trls_for_every_split(loss_type: str, world: int, accum: int) -> None:
    assert _our_step_loss(loss_type, world, accum) == pytest.approx(_trl_step_loss(loss_type, world, accum),
                                                                    rel=1e-12)


def test_what_each_loss_type_depends_on() -> None:
    lengths = STEP_MASK.sum(1).to(F64)
    one = {lt: _our_step_loss(lt, 1, 1) for lt in ("grpo", "bnpo", "dr_grpo", "dapo")}
    assert one["dapo"] == pytest.approx(float((-STEP_ADV * lengths).sum() / lengths.sum()))  # global token mean
    assert one["grpo"] == pytest.approx(float((-STEP_ADV).mean()))  # mean of sequence means
    assert one["dr_grpo"] == pytest.approx(float((-STEP_ADV * lengths).sum() / (8 * MAX_LEN)))
    for world, accum in SPLITS:  # grpo, dr_grpo and dapo do not depend on the split (equal micro-batches)
        for lt in ("grpo", "dr_grpo", "dapo"):
            assert _our_step_loss(lt, world, accum) == pytest.approx(one[lt], rel=1e-12), (lt, world, accum)
        # bnpo is the mean of the micro-batches' token means: it depends on the micro-batch only, not on
        # whether the micro-batches sit on one process or several
        assert _our_step_loss("bnpo", world, accum) == pytest.approx(_our_step_loss("bnpo", world * accum, 1))
    assert _our_step_loss("bnpo", 1, 2) != pytest.approx(one["bnpo"])  # differs from the global token mean
    assert one["bnpo"] == pytest.approx(one["dapo"])  # one micro-batch on one process: the same


def test_inputs_follow_the_log_probs_device() -> None:
    """Mask, advantages, old and reference log-probs given on the CPU are moved to ``logp``'s device (CUDA where
    there is one: a CPU advantage tensor meeting CUDA log-probs once crashed a GPU run)."""
    dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    logp = LOGP.to(dev)
    loss, m = grpo_loss(logp, LOGP, LOGP - 1.0, ADV, MASK, beta=0.1, loss_type="dapo", num_items_in_batch=5.0)
    assert loss.device.type == dev.type and m["num_tokens"] == 5


# ---------------------------------------------------------------- REINFORCE gradient at ratio 1


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_gradient_at_ratio_one_is_reinforce(loss_type: str) -> None:
    g = torch.Generator().manual_seed(1)
    b, tlen, d, v, max_len = 4, 5, 3, 7, 6
    weight = torch.randn(v, d, generator=g, dtype=F64, requires_grad=True)
    feats = torch.randn(b, tlen, d, generator=g, dtype=F64)
    tokens = torch.randint(0, v, (b, tlen), generator=g)
    mask = torch.tensor(
        [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool
    )
    adv, _ = group_advantages(t([0.2, 1.0, -0.5, 0.4]), 2)

    def logp_fn() -> torch.Tensor:
        return torch.log_softmax(feats @ weight.T, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    loss, _ = grpo_loss(
        logp_fn(),
        None,
        None,
        adv,
        mask,
        loss_type=loss_type,  # type: ignore[arg-type]
        max_completion_length=max_len,
    )
    (grad,) = torch.autograd.grad(loss, weight)

    # REINFORCE surrogate: -A_i * logp_it, aggregated the same way
    lp = logp_fn()
    mf = mask.to(F64)
    per_tok = -adv.unsqueeze(1) * lp * mf
    if loss_type == "grpo":
        surrogate = (per_tok.sum(1) / mf.sum(1)).mean()
    elif loss_type == "bnpo":
        surrogate = per_tok.sum() / mf.sum()
    else:
        surrogate = per_tok.sum() / (b * max_len)
    (expected,) = torch.autograd.grad(surrogate, weight)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
    # the loss value at ratio 1 is the same aggregation of -A (logp replaced by 1)
    neg_a = -adv.unsqueeze(1) * mf
    value = {
        "grpo": (neg_a.sum(1) / mf.sum(1)).mean(),
        "bnpo": neg_a.sum() / mf.sum(),
        "dr_grpo": neg_a.sum() / (b * max_len),
    }[loss_type]
    assert loss.item() == pytest.approx(value.item())


def test_gradient_wrt_logp_is_minus_advantage_over_length() -> None:
    logp = LOGP.clone().requires_grad_(True)
    loss, _ = grpo_loss(logp, None, None, ADV, MASK, loss_type="grpo")
    loss.backward()
    # d loss / d logp_it = -A_i / (T_i * B)
    torch.testing.assert_close(logp.grad, t([[-1 / 6, -1 / 6, -1 / 6], [0.5, 0.5, 0.0]]))
