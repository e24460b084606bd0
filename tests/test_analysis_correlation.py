"""Correlations of self-uncertainty with quality: planted relations, scipy references, hand-made examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from analysis_synthetic import synthetic_records
from scipy import stats as sps

from irisbench.analysis import AnalysisError, binned, correlate, prompt_means, within_prompt
from irisbench.analysis.correlation import weighted_stats


@pytest.mark.parametrize("kind", ["binary-y", "few-x-levels", "many-levels", "ties-both"])
def test_weighted_statistics_equal_scipy_on_the_expanded_resample(kind):
    rng = np.random.default_rng(7)
    n = 37
    x = rng.normal(size=n)
    y = rng.normal(size=n)
    if kind == "binary-y":
        y = (rng.random(n) < 0.4).astype(float)
    elif kind == "few-x-levels":
        x = rng.integers(0, 5, n).astype(float)
    elif kind == "ties-both":
        x, y = rng.integers(0, 30, n).astype(float), rng.integers(0, 25, n).astype(float)
    w = rng.integers(0, 4, size=(6, n)).astype(float)
    w[0] = 1.0  # the original sample
    got = weighted_stats(x, y, w)
    for r in range(len(w)):
        xe, ye = np.repeat(x, w[r].astype(int)), np.repeat(y, w[r].astype(int))
        assert got["spearman"][r] == pytest.approx(sps.spearmanr(xe, ye)[0], abs=1e-10)
        assert got["pearson"][r] == pytest.approx(sps.pearsonr(xe, ye)[0], abs=1e-10)
        assert got["kendall"][r] == pytest.approx(sps.kendalltau(xe, ye)[0], abs=1e-10)


def test_a_resample_with_a_constant_variable_is_undefined_not_zero():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 1.0])
    got = weighted_stats(x, y, np.array([[0.0, 2.0, 1.0], [1.0, 1.0, 1.0]]))
    for s in ("spearman", "pearson", "kendall"):
        assert np.isnan(got[s][0]) and np.isfinite(got[s][1])


def test_planted_negative_relation_gives_a_negative_interval_and_independence_one_containing_zero():
    planted = correlate(synthetic_records(slope=-2.0), "sc_image", ["correct", "score"], by="tag", n_resamples=400)
    assert set(planted["group"]) == {"all", "single_object", "counting", "position"}
    for _, r in planted.iterrows():
        for s in ("spearman", "pearson", "kendall"):
            assert r[s] < 0 and r[f"{s}_ci_low"] < r[s] < r[f"{s}_ci_high"] < 0, (r["group"], r["y"], s)
    null = correlate(synthetic_records(slope=0.0), "sc_image", "correct", n_resamples=400)
    r = null.iloc[0]
    for s in ("spearman", "pearson", "kendall"):
        assert r[f"{s}_ci_low"] < 0 < r[f"{s}_ci_high"], s


def test_point_estimates_and_p_values_are_scipys_and_point_biserial_is_pearson():
    df = synthetic_records(n_prompts=30, slope=-1.0)
    row = correlate(df, "sc_image", "correct", n_resamples=50).iloc[0]
    x, y = df["sc_image"].to_numpy(), df["correct"].to_numpy().astype(float)
    pb = sps.pointbiserialr(y.astype(bool), x)
    pr = sps.pearsonr(x, y)
    assert pb.statistic == pytest.approx(pr.statistic, abs=1e-12) and pb.pvalue == pytest.approx(pr.pvalue)
    assert row["pearson_kind"] == "point-biserial" and bool(row["y_binary"])
    assert row["pearson"] == pytest.approx(pr.statistic) and row["pearson_p"] == pytest.approx(pr.pvalue)
    assert row["spearman"] == pytest.approx(sps.spearmanr(x, y)[0])
    assert row["kendall"] == pytest.approx(sps.kendalltau(x, y)[0])
    cont = correlate(df, "sc_image", "score", n_resamples=50).iloc[0]
    assert cont["pearson_kind"] == "pearson" and not cont["y_binary"]


def test_the_bootstrap_resamples_prompts_not_images():
    # Duplicating every image within its prompt changes nothing a prompt bootstrap can see: same prompts,
    # same draws, and Pearson/Spearman of a sample with every row doubled equal the original's.
    df = synthetic_records(n_prompts=40, slope=-1.0)
    doubled = pd.concat([df, df.assign(sample_index=df["sample_index"] + 100)]).sort_values(
        ["prompt_index", "sample_index"], kind="stable")
    a = correlate(df, "sc_image", "correct", n_resamples=300, seed=3).iloc[0]
    b = correlate(doubled, "sc_image", "correct", n_resamples=300, seed=3).iloc[0]
    assert b["n_images"] == 2 * a["n_images"] and b["n_prompts"] == a["n_prompts"] == 40
    for s in ("spearman", "pearson"):
        for k in ("", "_ci_low", "_ci_high"):
            assert b[s + k] == pytest.approx(a[s + k], abs=1e-9)


def test_null_x_rows_are_dropped_and_counted():
    df = synthetic_records(n_prompts=12, slope=-1.0)
    df["sc_image"] = df["sc_image"].astype(object)
    df.loc[[0, 1, 5], "sc_image"] = None
    row = correlate(df, "sc_image", "correct", n_resamples=20).iloc[0]
    assert row["n_null_x"] == 3 and row["n_images"] == len(df) - 3
    ref = df.drop(index=[0, 1, 5])
    assert row["spearman"] == pytest.approx(sps.spearmanr(ref["sc_image"].astype(float), ref["correct"])[0])
    empty = df.assign(sc_text=None)
    r2 = correlate(empty, "sc_text", "correct", n_resamples=20).iloc[0]
    assert r2["n_images"] == 0 and np.isnan(r2["spearman"]) and "too few" in r2["note"]


def test_default_columns_and_bad_input():
    df = synthetic_records(n_prompts=6)
    out = correlate(df, n_resamples=10)
    assert set(out["x"]) == {"sc_text", "sc_image", "sc_all", "entropy_text", "entropy_image", "entropy_all"}
    assert set(out["y"]) == {"correct", "score"}  # clip_score absent: not asked for
    with pytest.raises(AnalysisError, match="clip_score"):
        correlate(df, "sc_image", "clip_score")
    bad = df.assign(sc_image=df["sc_image"].astype(object))
    bad.loc[3, "sc_image"] = "high"
    with pytest.raises(AnalysisError, match=r"prompt_index=0, sample_index=3.*'sc_image'"):
        correlate(bad, "sc_image", "correct")


def test_within_prompt_concordance_by_hand():
    rows = [  # prompt, x, y
        (0, 1.0, 1), (0, 2.0, 0), (0, 3.0, 0),  # pairs with different y: (1,2) lower x better, (1,3) too -> 1, 1
        (1, 1.0, 0), (1, 2.0, 1),  # lower x has lower y -> 0
        (2, 1.0, 1), (2, 3.0, 1),  # y constant: skipped
        (3, 5.0, 1), (3, 5.0, 0),  # tie in x -> 1/2; x constant: no Spearman
        (4, 9.0, 1),  # single sample: skipped
    ]
    df = pd.DataFrame(rows, columns=["prompt_index", "sc_image", "correct"])
    w = within_prompt(df, "sc_image", "correct", n_resamples=200)
    assert w["n_pairs"] == 4 and w["n_prompts_used"] == 3
    assert w["n_prompts_constant_y"] == 1 and w["n_prompts_single_sample"] == 1
    assert w["concordance"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    rho0 = -np.sqrt(3) / 2  # ranks x (1,2,3), y (3,1.5,1.5)
    assert sps.spearmanr([1, 2, 3], [1, 0, 0])[0] == pytest.approx(rho0)
    assert w["n_prompts_spearman"] == 2 and w["spearman_mean"] == pytest.approx((rho0 + 1.0) / 2)
    assert w["concordance_ci_low"] <= w["concordance"] <= w["concordance_ci_high"]


def test_within_prompt_on_planted_data_favours_the_less_certain_sample():
    w = within_prompt(synthetic_records(slope=-2.0), "sc_image", "correct", n_resamples=400)
    assert w["concordance_ci_low"] > 0.5 and w["spearman_ci_high"] < 0


def test_binned_by_hand():
    df = pd.DataFrame({"prompt_index": [0, 0, 1, 1, 2, 2, 3, 3], "x": [1, 2, 3, 4, 5, 6, 7, 8],
                       "correct": [1, 1, 1, 0, 0, 0, 1, 0]})
    t = binned(df, "x", "correct", bins=2, n_resamples=100)
    assert list(t["bin"]) == [0, 1] and list(t["n_images"]) == [4, 4] and list(t["n_prompts"]) == [2, 2]
    assert list(t["y_mean"]) == [0.75, 0.25]
    assert list(t["x_low"]) == [1, 5] and list(t["x_high"]) == [4, 8]
    assert (t["ci_low"] <= t["y_mean"]).all() and (t["y_mean"] <= t["ci_high"]).all()
    pm = prompt_means(df, "x", "correct", by=None)
    assert list(pm["x"]) == [1.5, 3.5, 5.5, 7.5] and list(pm["y"]) == [1.0, 0.5, 0.0, 0.5]
