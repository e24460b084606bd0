"""Cluster bootstrap (checked against scipy and a naive loop) and the GenEval summary on hand-made records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from irisbench.core.errors import UsageError
from irisbench.core.stats import (
    bootstrap_ci,
    bootstrap_replicates,
    count_check,
    geneval_summary,
    mean_t_interval,
    mean_t_interval_plus,
    ratio_replicates,
    stratified_se,
    welch_interval,
)


def test_one_image_per_prompt_matches_scipy_percentile_bootstrap():
    rng = np.random.default_rng(0)
    values = (rng.random(300) < 0.62).astype(float)
    ours = bootstrap_ci([[v] for v in values], n_resamples=20000, seed=1)
    ref = sps.bootstrap((values,), np.mean, n_resamples=20000, method="percentile", rng=2, vectorized=True)
    lo, hi = ref.confidence_interval
    # Monte-Carlo error of a 2.5% quantile with 20k resamples here is ~0.002; the CI half-width is ~0.055.
    assert abs(ours[0] - lo) < 0.008 and abs(ours[1] - hi) < 0.008
    assert ours[0] < values.mean() < ours[1]


def test_cluster_resampling_matches_a_naive_loop():
    rng = np.random.default_rng(3)
    clusters = [rng.normal(rng.normal(), 1.0, size=rng.integers(1, 6)) for _ in range(80)]
    naive = []
    r = np.random.default_rng(99)
    for _ in range(4000):
        pick = r.integers(0, len(clusters), len(clusters))
        naive.append(np.concatenate([clusters[j] for j in pick]).mean())
    lo, hi = np.percentile(naive, [2.5, 97.5])
    ours = bootstrap_ci(clusters, n_resamples=4000, seed=5)
    width = hi - lo
    assert abs(ours[0] - lo) < 0.06 * width and abs(ours[1] - hi) < 0.06 * width
    # the callable path does the same computation with a loop
    slow = bootstrap_ci(clusters, statistic=np.mean, n_resamples=4000, seed=5)
    assert abs(slow[0] - lo) < 0.06 * width and abs(slow[1] - hi) < 0.06 * width


def test_statistics_mean_vs_cluster_mean():
    clusters = {"p0": [1.0, 1.0, 1.0, 1.0], "p1": [0.0]}
    reps = bootstrap_replicates(clusters, "mean", n_resamples=3000, seed=0)
    # possible resamples: {p0,p0} -> 1, {p1,p1} -> 0, {p0,p1} -> 4/5 (pooled images)
    assert set(np.round(reps, 6)) == {0.0, 0.8, 1.0}
    reps = bootstrap_replicates(clusters, "cluster_mean", n_resamples=3000, seed=0)
    assert set(np.round(reps, 6)) == {0.0, 0.5, 1.0}
    assert abs(np.mean(reps == 0.5) - 0.5) < 0.05


def test_correlated_images_widen_the_interval_like_the_design_effect():
    """4 identical images per prompt carry the information of 1: the CI is ~2x the naive per-image one."""
    rng = np.random.default_rng(7)
    per_prompt = (rng.random(400) < 0.5).astype(float)
    clustered = bootstrap_ci([[v] * 4 for v in per_prompt], n_resamples=4000, seed=1)
    as_if_independent = bootstrap_ci([[v] for v in np.repeat(per_prompt, 4)], n_resamples=4000, seed=1)
    ratio = (clustered[1] - clustered[0]) / (as_if_independent[1] - as_if_independent[0])
    assert 1.8 < ratio < 2.2


def test_bootstrap_is_seeded_and_degenerate_cases():
    v = [[0.0, 1.0], [1.0], [0.0, 0.0, 1.0]]
    assert bootstrap_ci(v, seed=4) == bootstrap_ci(v, seed=4)
    assert bootstrap_ci([[0.3, 0.3]] * 5) == (0.3, 0.3)
    for bad, msg in [([], "no clusters"), ([[1.0], []], "cluster 1 has no values"),
                     ([[1.0], [np.nan]], "non-finite")]:
        with pytest.raises(ValueError, match=msg):
            bootstrap_ci(bad)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(v, confidence=95)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci(v, n_resamples=0)
    with pytest.raises(ValueError, match="statistic"):
        bootstrap_ci(v, statistic="median")


def test_vectorised_chunked_bootstrap_equals_a_plain_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vectorised, chunked replicates are exactly a plain per-replicate loop over the same draws
    (the speed of the vectorised path is measured in benchmarks, not asserted here)."""
    import irisbench.core.stats as stats

    rng = np.random.default_rng(0)
    clusters = [(rng.random(int(rng.integers(1, 5))) < 0.6).astype(float) for _ in range(37)]
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 37 * 3)  # chunks of 3 replicates
    reps = stats.bootstrap_replicates(clusters, "mean", n_resamples=10, seed=5)
    draws = np.random.default_rng(5).integers(0, 37, size=(10, 37))
    naive = [np.concatenate([clusters[j] for j in row]).mean() for row in draws]
    np.testing.assert_allclose(reps, naive, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# GenEval summary
# ------------------------------------------------------------------------------------------------

def _records(spec: dict[str, dict[int, list[bool]]]) -> list[dict]:
    out = []
    for tag, prompts in spec.items():
        for p, correct in prompts.items():
            out += [{"tag": tag, "prompt_index": p, "sample_index": s, "correct": c}
                    for s, c in enumerate(correct)]
    return out


HAND = {
    "single_object": {0: [True, False], 1: [True, True]},            # 3/4 = 0.75, both prompts any-correct
    "counting": {2: [False, False], 3: [False, False, False, True]},  # 1/6, one prompt any-correct
    "position": {4: [False]},                                         # 0/1 = 0
}


def test_summary_hand_computed():
    s = geneval_summary(_records(HAND), n_resamples=500, seed=0)
    t = s["tags"]
    assert list(t) == ["single_object", "counting", "position"]  # first-appearance order
    assert t["single_object"]["score"] == pytest.approx(0.75)
    assert t["counting"]["score"] == pytest.approx(1 / 6)
    assert t["position"]["score"] == 0.0
    assert s["overall"]["score"] == pytest.approx((0.75 + 1 / 6 + 0.0) / 3)  # unweighted tag mean
    assert s["overall"]["score"] != pytest.approx(4 / 11)  # ... not the per-image mean
    assert [t[k]["n_images"] for k in t] == [4, 6, 1] and [t[k]["n_prompts"] for k in t] == [2, 2, 1]
    assert [t[k]["correct_prompts_fraction"] for k in t] == [1.0, 0.5, 0.0]
    assert s["n_images"] == s["overall"]["n_images"] == 11 and s["n_prompts"] == 5
    assert s["correct_images_fraction"] == pytest.approx(4 / 11)
    assert s["correct_prompts_fraction"] == pytest.approx(3 / 5)
    assert s["n_images_excluded"] == 0 and s["ci"]["n_resamples"] == 500
    # position has one prompt: its bootstrap cannot vary
    assert (t["position"]["ci_low"], t["position"]["ci_high"]) == (0.0, 0.0)
    # single_object resamples {p0,p0}=0.5, {p0,p1}=0.75, {p1,p1}=1.0
    assert (t["single_object"]["ci_low"], t["single_object"]["ci_high"]) == (0.5, 1.0)
    for entry in [*t.values(), s["overall"]]:
        assert entry["ci_low"] <= entry["score"] <= entry["ci_high"]


def test_summary_overall_ci_is_the_stratified_replicate_mean():
    """Overall CI from the same replicates, checked by recomputing tag means replicate by replicate."""
    s = geneval_summary(_records(HAND), n_resamples=4000, seed=3)
    rng = np.random.default_rng(11)
    reps = []
    for _ in range(4000):
        tag_means = []
        for prompts in HAND.values():
            keys = list(prompts)
            pick = rng.integers(0, len(keys), len(keys))
            imgs = np.concatenate([np.asarray(prompts[keys[j]], float) for j in pick])
            tag_means.append(imgs.mean())
        reps.append(np.mean(tag_means))
    lo, hi = np.percentile(reps, [2.5, 97.5])
    assert s["overall"]["ci_low"] == pytest.approx(lo, abs=0.03)
    assert s["overall"]["ci_high"] == pytest.approx(hi, abs=0.03)


def test_summary_accepts_dataframe_and_tag_selection():
    recs = _records(HAND)
    a = geneval_summary(pd.DataFrame(recs), n_resamples=200, seed=1)
    b = geneval_summary(recs, n_resamples=200, seed=1)
    assert a == b
    sel = geneval_summary(recs, ["counting", "single_object"], n_resamples=200, seed=1)
    assert list(sel["tags"]) == ["counting", "single_object"] and sel["n_images_excluded"] == 1
    assert sel["overall"]["score"] == pytest.approx((1 / 6 + 0.75) / 2)
    none = geneval_summary(recs, n_resamples=0)
    assert none["overall"]["ci_low"] is None and none["tags"]["counting"]["ci_high"] is None


def test_summary_ci_shrinks_with_more_prompts():
    rng = np.random.default_rng(5)

    def make(n_prompts):
        spec = {tag: {f"{tag}{i}": list(rng.random(4) < p) for i in range(n_prompts)}
                for tag, p in (("a", 0.8), ("b", 0.4), ("c", 0.6))}
        return geneval_summary(_records(spec), n_resamples=1000, seed=0)["overall"]

    small, large = make(25), make(400)
    for o in (small, large):
        assert o["ci_low"] < o["score"] < o["ci_high"]
    w_small, w_large = small["ci_high"] - small["ci_low"], large["ci_high"] - large["ci_low"]
    assert 2.5 < w_small / w_large < 6.0  # ~sqrt(16) = 4


def test_summary_bad_input_is_refused():
    recs = _records(HAND)
    with pytest.raises(ValueError, match="no records for tag"):
        geneval_summary(recs, ["colors"])
    with pytest.raises(ValueError, match=r"record 1 .*'correct' must be a bool"):
        geneval_summary([recs[0], dict(recs[1], correct=float("nan"))])
    with pytest.raises(ValueError, match="missing field 'tag'"):
        geneval_summary([{"prompt_index": 0, "correct": True}])
    clash = [recs[0], dict(recs[1], tag="counting")]
    with pytest.raises(ValueError, match="prompt_index 0 has tag 'counting'"):
        geneval_summary(clash)
    with pytest.raises(ValueError, match="no records"):
        geneval_summary([])
    assert geneval_summary([dict(r, correct=int(r["correct"])) for r in recs], n_resamples=0)["overall"][
        "score"] == pytest.approx((0.75 + 1 / 6) / 3)


def test_count_check():
    assert count_check(2212, 2212) == {"expected": 2212, "actual": 2212, "complete": True}
    assert count_check(2212, 2200) == {"expected": 2212, "actual": 2200, "complete": False}
    assert count_check(4, 5)["complete"] is False
    with pytest.raises(ValueError, match="actual"):
        count_check(4, -1)


def test_mean_t_interval_hand_computed() -> None:
    """Three seeds' deltas 0.1, 0.2, 0.3: mean 0.2, sd 0.1, half-width t(0.975, 2) * 0.1 / sqrt(3) with
    t(0.975, 2) = 4.302653 (a table value, not scipy's): [-0.0484, 0.4484]."""
    m = mean_t_interval([0.1, 0.2, 0.3])
    half = 4.302653 * 0.1 / 3 ** 0.5
    assert m["n"] == 3 and m["mean"] == pytest.approx(0.2) and m["sd"] == pytest.approx(0.1)
    assert (m["ci_low"], m["ci_high"]) == (pytest.approx(0.2 - half, abs=1e-6), pytest.approx(0.2 + half, abs=1e-6))
    assert (round(m["ci_low"], 3), round(m["ci_high"], 3)) == (-0.048, 0.448)
    # 90%: t(0.95, 2) = 2.919986
    m90 = mean_t_interval([0.1, 0.2, 0.3], confidence=0.9)
    assert m90["ci_high"] == pytest.approx(0.2 + 2.919986 * 0.1 / 3 ** 0.5, abs=1e-6)


def test_welch_interval_hand_computed_and_scipy() -> None:
    """a = 0.1, 0.2, 0.3 (mean 0.2, var 0.01) and b = 0, 0, 0.3 (mean 0.1, var 0.03), 3 values each:
    v_a = 0.01/3, v_b = 0.01, se = sqrt(0.04/3) = 0.1154701, df = (0.04/3)^2 / ((0.01/3)^2/2 + 0.01^2/2) = 3.2,
    t(0.975, 3.2) = 3.072829 (scipy's t quantile at a fractional df): 0.1 +- 0.354820."""
    from scipy import stats as sps

    w = welch_interval([0.1, 0.2, 0.3], [0.0, 0.0, 0.3])
    assert (w["diff"], w["mean_a"], w["mean_b"], w["n_a"], w["n_b"]) == pytest.approx((0.1, 0.2, 0.1, 3, 3))
    assert w["se"] == pytest.approx((0.04 / 3) ** 0.5) and w["df"] == pytest.approx(3.2)
    half = 3.072829 * (0.04 / 3) ** 0.5
    assert (w["ci_low"], w["ci_high"]) == (pytest.approx(0.1 - half, abs=1e-6), pytest.approx(0.1 + half, abs=1e-6))
    # scipy's Welch test gives the same interval, also for unequal sizes and another confidence
    for a, b, conf in (([0.1, 0.2, 0.3], [0.0, 0.0, 0.3], 0.95), ([-0.31, -0.29, -0.33, -0.30], [0.02, -0.04], 0.9)):
        ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval(conf)
        got = welch_interval(a, b, conf)
        assert (got["ci_low"], got["ci_high"]) == pytest.approx((ref.low, ref.high), abs=1e-12)
    # one value on a side: no interval; no spread on both sides: a zero-width one
    one = welch_interval([0.1], [0.0, 0.2])
    assert one["diff"] == pytest.approx(0.0) and one["ci_low"] is None and one["df"] is None
    flat = welch_interval([0.5, 0.5], [0.25, 0.25, 0.25])
    assert (flat["ci_low"], flat["ci_high"], flat["se"]) == (0.25, 0.25, 0.0)
    for bad in (([], [0.1]), ([0.1, float("inf")], [0.2, 0.3])):
        with pytest.raises(UsageError):
            welch_interval(*bad)


def test_mean_t_interval_one_value_equal_values_and_bad_input() -> None:
    one = mean_t_interval([0.07])
    assert one == {"mean": 0.07, "ci_low": None, "ci_high": None, "sd": None, "n": 1}
    same = mean_t_interval([0.5, 0.5])
    assert (same["ci_low"], same["ci_high"], same["sd"]) == (0.5, 0.5, 0.0)
    for bad in ([], [0.1, float("nan")]):
        with pytest.raises(UsageError):
            mean_t_interval(bad)
    with pytest.raises(UsageError, match="confidence"):
        mean_t_interval([0.1, 0.2], confidence=1.0)


def test_stratified_se_hand_computed() -> None:
    """Tag a: 3 prompts of 2 images with 1, 2, 0 right (means 0.5, 1, 0: variance 0.25, v_a = 0.25 / 3); tag b:
    2 prompts of 4 images with 4, 0 right (means 1, 0: variance 0.5, v_b = 0.5 / 2). Overall = mean of 2 tags:
    se = sqrt(v_a + v_b) / 2 = sqrt(1/3) / 2 = 0.288675; df = (1/3)^2 / ((1/12)^2 / 2 + (1/4)^2 / 1) = 1.684211."""
    got = stratified_se({"a": {0: (1.0, 2), 1: (2.0, 2), 2: (0.0, 2)}, "b": [(4.0, 4), (0.0, 4)]})
    assert got["se"] == pytest.approx(0.288675, abs=1e-6) and got["df"] == pytest.approx(1.684211, abs=1e-6)
    assert (got["n_prompts"], got["n_tags"]) == (5, 2)
    # a tag of one prompt has no variance to estimate; no spread gives se 0 and no df
    assert stratified_se({"a": [(1.0, 2), (0.0, 2)], "b": [(1.0, 2)]})["se"] is None
    assert stratified_se({"a": [(1.0, 2), (1.0, 2)]}) == {"se": 0.0, "df": None, "n_prompts": 2, "n_tags": 1}
    with pytest.raises(UsageError, match="without images"):
        stratified_se({"a": [(1.0, 0), (1.0, 2)]})


def test_stratified_se_is_the_cluster_bootstraps_variance() -> None:
    """With unequal images per prompt (the linearised ratio variance), the bootstrap variance of each tag's mean
    over resampled prompts is ``v_t (n_t - 1) / n_t`` (the bootstrap's plug-in variance): the overall score's
    bootstrap sd matches ``se`` so rescaled, to Monte-Carlo error."""
    rng = np.random.default_rng(3)
    clusters, reps = {}, []
    for t, n in (("a", 40), ("b", 25), ("c", 60)):
        m = rng.integers(1, 9, n).astype(float)
        y = rng.binomial(m.astype(int), rng.random(n)).astype(float)
        clusters[t] = list(zip(y, m, strict=True))
        reps.append(ratio_replicates(y, m, 40000, rng))
    boot_sd = float(np.mean(reps, axis=0).std())
    plug_in = np.sqrt(sum(stratified_se({t: c})["se"] ** 2 * (len(c) - 1) / len(c) for t, c in clusters.items())) / 3
    assert boot_sd == pytest.approx(plug_in, rel=0.02)
    assert stratified_se(clusters)["se"] == pytest.approx(
        np.sqrt(sum(stratified_se({t: c})["se"] ** 2 for t, c in clusters.items())) / 3)


def test_mean_t_interval_plus_hand_computed() -> None:
    """Deltas 0.1, 0.2, 0.3 (mean 0.2, s^2 0.01, n 3) and a shared base of se 0.05 on 10 df: v_s = 0.01/3,
    v_b = 0.0025, se = sqrt(0.0058333) = 0.0763763, Welch-Satterthwaite df = 0.0058333^2 / ((0.01/3)^2 / 2 +
    0.0025^2 / 10) = 5.505618, capped at n - 1 = 2: t(0.975, 2) = 4.302653, 0.2 +- 0.328621."""
    w = mean_t_interval_plus([0.1, 0.2, 0.3], 0.05, 10)
    assert (w["mean"], w["n"]) == (pytest.approx(0.2), 3)
    assert w["se"] == pytest.approx(0.0763763, abs=1e-7) and w["df_welch"] == pytest.approx(5.505618, abs=1e-6)
    assert w["df"] == 2.0
    half = 4.302653 * 0.0763763
    assert (w["ci_low"], w["ci_high"]) == (pytest.approx(0.2 - half, abs=1e-5), pytest.approx(0.2 + half, abs=1e-5))
    # never narrower than the Student-t interval (the cap); a base without error gives it back
    t = mean_t_interval([0.1, 0.2, 0.3])
    assert w["ci_low"] < t["ci_low"] and w["ci_high"] > t["ci_high"]
    zero = mean_t_interval_plus([0.1, 0.2, 0.3], 0.0, 10)
    assert (zero["ci_low"], zero["ci_high"], zero["df"]) == pytest.approx((t["ci_low"], t["ci_high"], 2.0))
    # a base of few df lowers the df below n - 1: 5 seeds (s^2 0.025, v_s = 0.005) and se 0.2 on 2 df:
    # df = 0.045^2 / (0.005^2 / 4 + 0.04^2 / 2) = 2.5116
    low = mean_t_interval_plus([0.0, 0.1, 0.2, 0.3, 0.4], 0.2, 2)
    assert low["df"] == pytest.approx(0.045**2 / (0.005**2 / 4 + 0.04**2 / 2)) and low["df"] < 4
    # an exact-df base (extra_df None) drops its term from the Welch df; one value or no base se: no interval
    inf = mean_t_interval_plus([0.1, 0.2, 0.3], 0.05)
    assert inf["df_welch"] == pytest.approx((0.01 / 3 + 0.0025) ** 2 / ((0.01 / 3) ** 2 / 2)) and inf["df"] == 2
    assert mean_t_interval_plus([0.1], 0.05, 10)["ci_low"] is None
    assert mean_t_interval_plus([0.1, 0.2], None)["ci_low"] is None
    with pytest.raises(UsageError, match="extra_se"):
        mean_t_interval_plus([0.1, 0.2], -0.1, 3)
