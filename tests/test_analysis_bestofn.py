"""Best-of-N by self-uncertainty on hand-made prompts (values computed by hand) and on planted data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from analysis_synthetic import synthetic_records

from irisbench.analysis import AnalysisError, best_of_n, best_of_n_table
from irisbench.analysis.bestofn import pick_values, subsets

# prompt, sample, tag, x, y
HAND = [
    (0, 0, "a", 0.1, 1), (0, 1, "a", 0.5, 0), (0, 2, "a", 0.9, 0),
    (1, 0, "a", 0.3, 0), (1, 1, "a", 0.2, 0), (1, 2, "a", 0.8, 1),
    (2, 0, "b", 0.4, 1), (2, 1, "b", 0.4, 0), (2, 2, "b", 0.7, 1),  # a tie on the lowest x
]


def hand() -> pd.DataFrame:
    return pd.DataFrame(HAND, columns=["prompt_index", "sample_index", "tag", "sc_image", "correct"])


def row(t: pd.DataFrame, group: str, n: int) -> pd.Series:
    return t[(t["group"] == group) & (t["n"] == n)].iloc[0]


def test_pick_lowest_vs_random_vs_oracle_by_hand():
    t = best_of_n(hand(), "sc_image", "correct", select="lowest", n_resamples=200)
    r = row(t, "all", 3)
    # picks: P0 -> 1, P1 -> 0 (x=0.2), P2 -> tie of y 1 and 0 -> 1/2; random = prompt means 1/3, 1/3, 2/3
    assert r["pick"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert r["random"] == pytest.approx((1 / 3 + 1 / 3 + 2 / 3) / 3)
    assert r["oracle"] == pytest.approx(1.0)
    assert r["gain"] == pytest.approx(0.5 - 4 / 9) and r["n_prompts"] == 3
    assert r["gain_of_oracle"] == pytest.approx((0.5 - 4 / 9) / (1 - 4 / 9))
    # N' = 2, all 3 subsets of each prompt: P0 picks 1, 1, 0; P1 picks 0, 0, 0; P2 picks 1/2, 1, 0
    r2 = row(t, "all", 2)
    assert r2["pick"] == pytest.approx((2 / 3 + 0 + 0.5) / 3)
    assert r2["oracle"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert r2["random"] == pytest.approx(4 / 9) and r2["subsets"] == "N=3: all 3"
    r1 = row(t, "all", 1)
    assert r1["pick"] == pytest.approx(4 / 9) and r1["gain"] == pytest.approx(0.0)
    high = row(best_of_n(hand(), "sc_image", "correct", select="highest", n_resamples=50), "all", 3)
    assert high["pick"] == pytest.approx((0 + 1 + 1) / 3) and high["gain"] == pytest.approx(2 / 3 - 4 / 9)


def test_groups_and_their_unweighted_mean():
    t = best_of_n(hand(), "sc_image", "correct", by="tag", n_values=[3], n_resamples=200)
    a, b, m = row(t, "a", 3), row(t, "b", 3), row(t, "tag_mean", 3)
    assert a["pick"] == pytest.approx(0.5) and a["random"] == pytest.approx(1 / 3)
    assert b["pick"] == pytest.approx(0.5) and b["random"] == pytest.approx(2 / 3)
    assert m["pick"] == pytest.approx(0.5) and m["random"] == pytest.approx(0.5)
    assert m["gain"] == pytest.approx(((0.5 - 1 / 3) + (0.5 - 2 / 3)) / 2)
    assert b["gain_ci_low"] == b["gain_ci_high"] == pytest.approx(-1 / 6)  # one prompt: a point interval


def test_null_x_shortens_a_prompt_and_is_counted():
    df = hand()
    df["sc_image"] = df["sc_image"].astype(object)
    df.loc[0, "sc_image"] = None  # prompt 0 keeps samples 1 and 2 (x 0.5, 0.9; y 0, 0)
    t = best_of_n(df, "sc_image", "correct", by=None, n_resamples=50)
    r3, r2 = row(t, "all", 3), row(t, "all", 2)
    assert r3["n_prompts"] == 2 and r3["n_prompts_short"] == 1 and r3["n_null"] == 1
    assert r2["n_prompts"] == 3
    assert r3["pick"] == pytest.approx((0 + 0.5) / 2)


def test_random_subsets_are_deterministic_and_declared():
    sub, how = subsets(10, 5, max_subsets=20, n_random_subsets=30, seed=4)
    sub2, _ = subsets(10, 5, max_subsets=20, n_random_subsets=30, seed=4)
    assert how == "random 30 of 252" and sub.shape == (30, 5) and np.array_equal(sub, sub2)
    assert all(len(set(s)) == 5 for s in sub.tolist())
    full, how_full = subsets(4, 2)
    assert how_full == "all 6" and sorted(map(tuple, full.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    with pytest.raises(AnalysisError):
        subsets(3, 4)


def test_pick_values_breaks_ties_by_expectation():
    x = np.array([[1.0, 1.0, 2.0], [3.0, 2.0, 2.0]])
    y = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    assert pick_values(x, y, "lowest").tolist() == [0.5, 0.5]
    assert pick_values(x, y, "highest").tolist() == [0.0, 1.0]
    with pytest.raises(AnalysisError):
        pick_values(x, y, "middle")


def test_planted_relation_gives_a_positive_gain_for_the_least_certain_pick():
    df = synthetic_records(slope=-2.0)
    t = best_of_n_table(df, ["sc_image"], "correct", by=None, n_resamples=300)
    low, high = row(t[t["select"] == "lowest"], "all", 4), row(t[t["select"] == "highest"], "all", 4)
    assert low["gain_ci_low"] > 0 > high["gain_ci_high"]
    assert low["random"] == pytest.approx(df["correct"].mean())  # equal-size prompts: the image mean
    gains = t[(t["select"] == "lowest") & (t["group"] == "all")].sort_values("n")["gain"].to_numpy()
    assert gains[0] == pytest.approx(0.0) and np.all(np.diff(gains) > 0)  # more to choose from, more gain
