"""The null-control rewards: ``random`` (N(0, 1) per row from the row's keys, nothing read from the rollout) and
``shuffled-nsc`` (nsc permuted within each GRPO group), checked against hand-drawn values and, statistically,
for the absence of any link to the rollout; and the trainer passes the keys that make them reproducible."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_rewards import ROWS, rollout

from irisbench.policies.base import IMAGE, TEXT, derive_seed
from irisbench.train.config import ConfigError, resolve_config
from irisbench.train.grpo import group_advantages
from irisbench.train.rewards import ROW_KEYS, RewardInputError, RowKeys, UnknownRewardError, build_reward, make_reward


def _draw(seed: int, step: int, prompt: int, j: int) -> float:
    """The random reward by hand: one standard normal from the row's own generator."""
    return float(np.random.default_rng(derive_seed(seed, "random-reward", step, prompt, j)).standard_normal())


def _rows(n: int, sc: float = 10.0, spread: float = 1.0, seed: int = 0) -> list[list[tuple[int, float, float]]]:
    """``n`` rows of 2 plan and 3 image tokens with self-certainties around ``sc``."""
    rng = np.random.default_rng(seed)
    return [[(TEXT, sc + spread * rng.standard_normal(), 1.0), (TEXT, sc, 1.0)] +
            [(IMAGE, sc + spread * rng.standard_normal(), 1.0) for _ in range(3)] for _ in range(n)]


def _ctx(keys: RowKeys) -> dict:
    return {ROW_KEYS: keys}


def test_random_reward_is_the_keys_draw_and_ignores_the_rollout() -> None:
    reward = make_reward("random")
    same = rollout([ROWS[0]] * 4)  # four identical rollouts of one prompt
    keys = RowKeys.groups(seed=3, step=7, prompts=[5], g=4)
    got = reward(same, _ctx(keys))
    assert got.dtype == np.float64 and got.tolist() == [_draw(3, 7, 5, j) for j in range(4)]
    assert len(set(got.tolist())) == 4  # identical rollouts, different rewards
    # other tokens and statistics, the same keys: the same values; so the same GRPO advantages
    other = rollout(_rows(4, sc=2.0, spread=5.0))
    assert reward(other, _ctx(keys)).tolist() == got.tolist()
    adv_same, _ = group_advantages(got, 4)
    adv_other, _ = group_advantages(reward(other, _ctx(keys)), 4)
    assert adv_same.tolist() == adv_other.tolist()
    # each part of the key matters: training seed, step, prompt slot, rollout index
    for seed, step, prompt in ((4, 7, 5), (3, 8, 5), (3, 7, 6)):
        assert reward(same, _ctx(RowKeys.groups(seed, step, [prompt], 4))).tolist() != got.tolist()


def test_random_reward_does_not_depend_on_row_order_or_micro_batches() -> None:
    reward = make_reward("random")
    keys = RowKeys.groups(seed=0, step=2, prompts=[0, 1, 2], g=4)
    full = reward(rollout(_rows(12)), _ctx(keys))
    halves = np.concatenate([reward(rollout(_rows(6)), _ctx(keys[s])) for s in (slice(0, 6), slice(6, 12))])
    assert halves.tolist() == full.tolist()
    perm = np.random.default_rng(1).permutation(12)
    shuffled_keys = RowKeys(0, 2, keys.prompt[perm], keys.rollout[perm])
    assert reward(rollout(_rows(12)), _ctx(shuffled_keys)).tolist() == full[perm].tolist()


def test_random_reward_is_standard_normal_and_unrelated_to_the_rollout() -> None:
    """4,000 rows: a KS test against N(0, 1), and no rank correlation with the rows' self-certainty."""
    reward, g = make_reward("random"), 8
    rows = _rows(4000, spread=3.0, seed=2)
    ro = rollout(rows)
    values = reward(ro, _ctx(RowKeys.groups(seed=0, step=0, prompts=range(500), g=g)))
    assert stats.kstest(values, "norm").pvalue > 0.001
    nsc = make_reward("nsc")(ro, {})
    adv, _ = group_advantages(values, g)
    rho = stats.spearmanr(adv.numpy(), nsc).statistic
    assert abs(rho) < 4 / math.sqrt(len(values))  # |rho| under 4 standard errors of a null correlation


def test_shuffled_nsc_keeps_each_groups_values_and_breaks_the_link() -> None:
    g, groups = 8, 400
    ro = rollout(_rows(g * groups, spread=2.0, seed=3))
    keys = RowKeys.groups(seed=1, step=4, prompts=range(groups), g=g)
    nsc = make_reward("nsc")(ro, {})
    shuffled = make_reward("shuffled-nsc")(ro, _ctx(keys))
    for k in range(groups):  # the same multiset of rewards in every group
        assert sorted(shuffled[k * g:(k + 1) * g].tolist()) == sorted(nsc[k * g:(k + 1) * g].tolist())
    assert shuffled.tolist() != nsc.tolist()
    # a uniform permutation: on average one fixed point per group (1/G of the rows keep their own value) ...
    kept = float(np.mean(shuffled == nsc))
    assert abs(kept - 1 / g) < 4 * math.sqrt((1 / g) * (1 - 1 / g) / (g * groups))
    # ... and no within-group rank correlation between a rollout's reward and its own nsc (mean over groups)
    rhos = [stats.spearmanr(shuffled[k * g:(k + 1) * g], nsc[k * g:(k + 1) * g]).statistic for k in range(groups)]
    assert abs(np.mean(rhos)) < 4 * np.std(rhos) / math.sqrt(groups)
    # the permutation is the keys' own: by hand for group 0
    perm = np.random.default_rng(derive_seed(1, "shuffled-nsc", 4, 0)).permutation(g)
    assert shuffled[:g].tolist() == nsc[:g][perm].tolist()


def test_shuffled_nsc_is_reproducible_and_order_free() -> None:
    g = 4
    ro = rollout(_rows(12, spread=2.0))
    keys = RowKeys.groups(seed=0, step=1, prompts=[0, 1, 2], g=g)
    reward = build_reward("shuffled-nsc")
    first = reward(ro, _ctx(keys))
    assert reward(ro, _ctx(keys)).tolist() == first.tolist()  # resume: the same keys, the same values
    assert reward(ro, _ctx(RowKeys.groups(0, 2, [0, 1, 2], g))).tolist() != first.tolist()  # another step
    # rows in another order (each row keeps its keys and statistics): each row gets the same value
    perm = np.random.default_rng(5).permutation(12)
    moved = rollout([_rows(12, spread=2.0)[i] for i in perm])
    again = reward(moved, _ctx(RowKeys(0, 1, keys.prompt[perm], keys.rollout[perm])))
    assert again.tolist() == first[perm].tolist()


def test_null_rewards_refuse_what_they_cannot_use() -> None:
    ro = rollout(_rows(4))
    for name in ("random", "shuffled-nsc"):
        with pytest.raises(RewardInputError, match=r"needs context\['row_keys'\]") as e:
            make_reward(name)(ro, {})
        assert "\n" not in str(e.value)
        with pytest.raises(RewardInputError, match="3 keys for 4 rows"):
            make_reward(name)(ro, _ctx(RowKeys.groups(0, 0, [0], 3)))
    with pytest.raises(RewardInputError, match="needs at least 2 rollouts per prompt.*num_generations to 2"):
        make_reward("shuffled-nsc")(ro, _ctx(RowKeys.groups(0, 0, [0, 1, 2, 3], 1)))
    with pytest.raises(RewardInputError, match="repeated rollout indices"):
        make_reward("shuffled-nsc")(ro, _ctx(RowKeys(0, 0, [0, 0, 1, 1], [0, 0, 0, 1])))
    with pytest.raises(ConfigError, match="'shuffled-nsc' permutes the rewards within each GRPO group and needs "
                                          "num_generations >= 2, got 1"):
        resolve_config("null-shuffled-shapes", ["num_generations=1"])
    with pytest.raises(UnknownRewardError, match="Did you mean 'random'"):
        resolve_config("null-shapes", ["reward=randomm"])


@pytest.mark.usefixtures("one_thread")
def test_the_trainer_gives_the_random_reward_the_rows_keys(tiny_policy_dir: Path, tmp_path: Path) -> None:
    """Step s's mean reward is the mean of the hand draws of (training seed, s, prompt slot, rollout), the step
    split into two micro-batches: the trainer passes each row its own keys."""
    from irisbench.train.trainer import GRPOTrainer, read_metrics

    cfg = resolve_config("null-shapes", [f"policy={tiny_policy_dir}", "steps=2", "prompts_per_step=2",
                                         "num_generations=4", "eval_every=0", "checkpoint_every=2", "seed=5",
                                         "gradient_accumulation_steps=2"])
    GRPOTrainer(cfg, tmp_path / "run", progress=False).train()
    for row in read_metrics(tmp_path / "run"):
        want = np.mean([_draw(5, row["step"] - 1, k, j) for k in range(2) for j in range(4)])
        assert row["reward_mean"] == pytest.approx(want, abs=1e-6)  # float32 rewards in the trainer
        assert row["reward/random"] == pytest.approx(want, abs=1e-6)
