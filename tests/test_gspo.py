"""GSPO (sequence-level importance ratios) and DAPO's dynamic sampling against formulas written out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from grpo_helpers import close, grads

from irisbench.train.config import ConfigError, resolve_config
from irisbench.train.grpo import grpo_loss, spread_rows
from irisbench.train.trainer import GRPOTrainer, read_metrics

F64 = torch.float64


def t(x: object) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


# Two sequences: 3 real tokens, then 2 real tokens and one padding position.
LOGP = [[-1.0, -2.0, -0.5], [-0.3, -0.9, 0.0]]
OLD = [[-1.1, -1.9, -0.8], [-0.2, -0.6, 0.0]]
MASK = [[True, True, True], [True, True, False]]
ADV = [1.5, -0.5]


def _hand_sequence(eps: float) -> tuple[float, list[list[float]]]:
    """GSPO's objective with trl's "grpo" aggregation, written out: loss and d loss / d logp."""
    d1 = (-1.0 + 1.1) + (-2.0 + 1.9) + (-0.5 + 0.8)  # sum of log-ratios, sequence 1 (3 tokens)
    d2 = (-0.3 + 0.2) + (-0.9 + 0.6)  # sequence 2 (2 tokens)
    s1, s2 = math.exp(d1 / 3), math.exp(d2 / 2)
    terms, grads = [], []
    for s, a, n in ((s1, 1.5, 3), (s2, -0.5, 2)):
        clipped = min(max(s, 1 - eps), 1 + eps)
        unclipped_wins = s * a <= clipped * a  # -min(s A, clip(s) A): the gradient flows through s A when it is the min
        terms.append(-min(s * a, clipped * a))
        g = -a * s / n if unclipped_wins else 0.0  # d(-s A)/d logp_t = -A s / |y_i|
        grads.append([g] * n)
    loss = sum(terms) / 2  # each sequence's token mean is its term; then the mean over the 2 sequences
    grads = [[g / 2 for g in row] + [0.0] * (3 - len(row)) for row in grads]
    return loss, grads


@pytest.mark.parametrize("eps", [0.2, 0.05])  # 0.05: s1 = exp(0.1) > 1.05 with A > 0, the clip binds
def test_sequence_level_loss_and_gradient_by_hand(eps: float) -> None:
    logp = t(LOGP).requires_grad_(True)
    loss, metrics = grpo_loss(logp, t(OLD), None, t(ADV), torch.tensor(MASK), epsilon=eps, loss_type="grpo",
                              importance_sampling_level="sequence")
    loss.backward()
    want_loss, want_grad = _hand_sequence(eps)
    assert float(loss.detach()) == pytest.approx(want_loss, rel=1e-12)
    torch.testing.assert_close(logp.grad, t(want_grad))
    s1 = math.exp(0.1)
    assert metrics["clip_ratio/high_mean"] == (0.5 if s1 > 1 + eps else 0.0)  # over sequences, as trl


def test_sequence_level_matches_the_stop_gradient_form() -> None:
    """GSPO-token's s_i,t = sg[s_i] * pi_t / sg[pi_t]: same value and, with one advantage per sequence, the
    same gradient, for every loss type."""
    torch.manual_seed(0)
    logp0, old = -torch.rand(4, 6, dtype=F64) * 2, -torch.rand(4, 6, dtype=F64) * 2
    mask = torch.rand(4, 6) > 0.3
    mask[:, 0] = True
    adv = t([1.0, -2.0, 0.5, -0.1])
    for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo"):
        kw = {"max_completion_length": 6, "num_items_in_batch": float(mask.sum())}
        a = logp0.clone().requires_grad_(True)
        ours, _ = grpo_loss(a, old, None, adv, mask, epsilon=0.9, loss_type=loss_type,
                            importance_sampling_level="sequence", **kw)
        ours.backward()
        b = logp0.clone().requires_grad_(True)
        mf = mask.to(F64)
        s = torch.exp(((b - old) * mf).sum(-1) / mf.sum(-1))
        s_t = s.detach().unsqueeze(1) * torch.exp(b - b.detach())  # sg[s_i] * pi_t / sg[pi_t]
        per_tok = -torch.min(s_t * adv[:, None], s_t.clamp(0.1, 1.9) * adv[:, None]) * mf
        ref = {"grpo": (per_tok.sum(-1) / mf.sum(-1)).mean(), "bnpo": per_tok.sum() / mf.sum(),
               "dr_grpo": per_tok.sum() / (4 * 6), "dapo": per_tok.sum() / mf.sum()}[loss_type]
        ref.backward()
        assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
        if loss_type == "grpo":  # the token mean of each sequence: d/d logp_t is s_i A_i / |y_i| either way
            torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("shift", [0.0, 0.1, -0.4, 0.4])  # 0.4: both rows outside the clip range, where it binds
def test_sequence_equals_token_when_a_sequence_shares_one_ratio(loss_type: str, shift: float) -> None:
    torch.manual_seed(1)
    logp0 = -torch.rand(2, 5, dtype=F64)
    old = logp0 - t([[shift], [-shift]])  # every token of a row has the same log-ratio
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    ref = logp0 - 0.3
    out = {}
    for level in ("token", "sequence"):
        x = logp0.clone().requires_grad_(True)
        loss, m = grpo_loss(x, old, ref, t([0.7, -1.2]), mask, beta=0.1, loss_type=loss_type,
                            importance_sampling_level=level, max_completion_length=5, num_items_in_batch=8.0)
        loss.backward()
        out[level] = (float(loss), x.grad.clone(), m["clip_ratio/region_mean"])
    assert out["token"][0] == pytest.approx(out["sequence"][0], rel=1e-12)
    if loss_type == "grpo":
        torch.testing.assert_close(out["token"][1], out["sequence"][1])
    assert (out["token"][2] > 0) == (out["sequence"][2] > 0) == (shift == 0.4)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_on_policy_sequence_gradient_is_reinforce_as_token(loss_type: str) -> None:
    """num_iterations = 1 (old = logp.detach()): s_i = 1 and d s_i / d logp_t = 1/|y_i|; aggregated, the same
    gradient as the token level for every loss type."""
    logp0 = -torch.rand(4, 5, dtype=F64)
    mask = torch.rand(4, 5) > 0.4
    mask[:, 0] = True
    grads = []
    for level in ("token", "sequence"):
        x = logp0.clone().requires_grad_(True)
        grpo_loss(x, None, None, t([1.0, -1.0, 0.3, -0.3]), mask, loss_type=loss_type,
                  importance_sampling_level=level, max_completion_length=5)[0].backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_spread_rows() -> None:
    assert spread_rows(t([1.0, 1.0, 2.0, 3.0, 5.0, 5.0]), 2).tolist() == [False, False, True, True, False, False]


def test_dropped_groups_leave_the_loss_and_the_normalisers() -> None:
    """Rows 0-1 (a flat group) dropped: with beta > 0 their KL term would count; dropped, the loss is the
    loss of rows 2-3 alone, each normaliser counting rows 2-3 only."""
    logp = -t([[0.5, 1.0, 0.2], [0.1, 0.4, 0.3], [0.7, 0.2, 0.9], [0.3, 0.8, 0.1]])
    ref = logp - 0.25
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    adv = t([0.0, 0.0, 1.0, -1.0])
    keep = spread_rows(t([2.0, 2.0, 0.0, 1.0]), 2)
    kl = math.exp(-0.25) + 0.25 - 1  # k3 for ref - logp = -0.25 on every token
    for loss_type, want in (
        # at ratio 1 the per-token loss is -A + beta*kl: row 2 has 1 token, row 3 has 3
        ("grpo", ((-1.0 + 0.1 * kl) + (1.0 + 0.1 * kl)) / 2),
        ("bnpo", ((-1.0 + 0.1 * kl) * 1 + (1.0 + 0.1 * kl) * 3) / 4),
        ("dr_grpo", ((-1.0 + 0.1 * kl) * 1 + (1.0 + 0.1 * kl) * 3) / (2 * 3)),
        ("dapo", ((-1.0 + 0.1 * kl) * 1 + (1.0 + 0.1 * kl) * 3) / 4),
    ):
        loss, m = grpo_loss(logp, None, ref, adv, mask, beta=0.1, loss_type=loss_type, keep=keep,
                            max_completion_length=3, num_items_in_batch=4.0)
        assert float(loss) == pytest.approx(want, rel=1e-12), loss_type
        assert m["num_tokens"] == 9 and m["kl"] == pytest.approx(kl)  # metrics still see every token
        alone, _ = grpo_loss(logp[2:], None, ref[2:], adv[2:], mask[2:], beta=0.1, loss_type=loss_type,
                             max_completion_length=3, num_items_in_batch=4.0)
        assert float(loss) == pytest.approx(float(alone), rel=1e-12)


def test_a_micro_batch_with_nothing_kept_adds_zero_with_a_graph() -> None:
    logp = (-torch.rand(2, 3, dtype=F64)).requires_grad_(True)
    loss, _ = grpo_loss(logp, None, logp.detach() - 1, t([0.0, 0.0]), torch.ones(2, 3, dtype=torch.bool), beta=0.1,
                        keep=torch.tensor([False, False]))
    loss.backward()
    assert float(loss) == 0.0 and torch.equal(logp.grad, torch.zeros(2, 3, dtype=F64))


def test_level_and_keep_errors() -> None:
    x, mask = torch.zeros(2, 3, dtype=F64), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="importance_sampling_level must be one of token, sequence"):
        grpo_loss(x, None, None, t([1.0, -1.0]), mask, importance_sampling_level="seq")
    with pytest.raises(ValueError, match="keep must be"):
        grpo_loss(x, None, None, t([1.0, -1.0]), mask, keep=torch.ones(3, dtype=torch.bool))


# ---- the trainer -------------------------------------------------------------------------------------------


class _HalfFlat:
    """A reward whose groups are flat (all 0) when the group's first seed is even, else minus the plan length."""

    name = "half-flat"

    def __init__(self, g: int) -> None:
        self.g = g

    def __call__(self, rollout, context) -> np.ndarray:
        r = -(rollout.token_mask & (rollout.modality == 0)).sum(1).astype(np.float64)
        for s in range(0, len(r), self.g):
            if int(rollout.seeds[s]) % 2 == 0:
                r[s:s + self.g] = 0.0
        return r


def _train(policy: Path, out: Path, *extra: str, reward=None) -> GRPOTrainer:
    cfg = resolve_config("iris-shapes", [f"policy={policy}", "steps=1", "prompts_per_step=4", "num_generations=4",
                                         "eval_every=0", "checkpoint_every=1", "lr=1e-3", "num_threads=1", *extra])
    trainer = GRPOTrainer(cfg, out, progress=False, reward=reward)
    trainer.train()
    return trainer


def test_dapo_divides_by_the_steps_kept_tokens(tiny_policy_dir: Path, tmp_path: Path) -> None:
    """Dropped groups: "dapo" over 2 micro-batches (kept tokens known only after both are scored) gives the
    update of "bnpo" over one micro-batch (its kept tokens are the step's)."""
    a = _train(tiny_policy_dir, tmp_path / "a", "loss_type=dapo", "drop_zero_spread_groups=true",
               "gradient_accumulation_steps=2", "beta=0.04", reward=_HalfFlat(4))
    b = _train(tiny_policy_dir, tmp_path / "b", "loss_type=bnpo", "drop_zero_spread_groups=true", "beta=0.04",
               reward=_HalfFlat(4))
    kept = read_metrics(tmp_path / "a")[0]["frac_groups_kept"]
    assert 0 < kept < 1 and read_metrics(tmp_path / "b")[0]["frac_groups_kept"] == kept
    assert close(grads(a), grads(b))
    assert read_metrics(tmp_path / "a")[0]["loss"] == pytest.approx(read_metrics(tmp_path / "b")[0]["loss"], abs=1e-6)
    c = _train(tiny_policy_dir, tmp_path / "c", "loss_type=bnpo", "beta=0.04", reward=_HalfFlat(4))
    assert not close(grads(b), grads(c))  # without dropping, the flat groups' KL terms and tokens count


def test_sequence_level_in_the_trainer(tiny_policy_dir: Path, tmp_path: Path) -> None:
    """On-policy (one update per batch) GSPO's gradient is GRPO's; with two updates per batch they part."""
    tok = _train(tiny_policy_dir, tmp_path / "t", "loss_type=grpo")
    seq = _train(tiny_policy_dir, tmp_path / "s", "loss_type=grpo", "importance_sampling_level=sequence")
    assert close(grads(tok), grads(seq))
    tok2 = _train(tiny_policy_dir, tmp_path / "t2", "loss_type=grpo", "num_iterations=2", "lr=1e-2")
    seq2 = _train(tiny_policy_dir, tmp_path / "s2", "loss_type=grpo", "num_iterations=2", "lr=1e-2",
                  "importance_sampling_level=sequence")
    assert not close(grads(tok2), grads(seq2))


@pytest.mark.parametrize(("override", "needle"), [
    ("importance_sampling_level=seq", "importance_sampling_level must be one of token, sequence"),
    ("drop_zero_spread_groups=maybe", "drop_zero_spread_groups must be true or false"),
])
def test_bad_gspo_configs(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        resolve_config("iris-shapes", [override])
