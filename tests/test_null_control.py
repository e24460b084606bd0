"""Each method relative to the null control, on hand-made eval runs: the difference of the across-seed mean
deltas and its Welch t interval by hand and by scipy, the table, the verdicts and the CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import make_run
from scipy import stats as sps

from irisbench.report.null_control import NULL_COLUMNS, null_comparisons, null_markdown, null_verdicts, write_null_csv
from irisbench.report.seeds import SeedEval, seed_deltas, seed_markdown, seed_verdicts

TAGS = {p: "single_object" for p in range(4)}


def _run(path: Path, right: set[int], first_only: bool = False) -> Path:
    """4 prompts x 2 images, right on every image of the prompts in ``right`` (only the first image with
    ``first_only``); results.json records 2 images per prompt, as an evaluation writes it."""
    correct = {(p, s): p in right and (s == 0 or not first_only) for p in TAGS for s in range(2)}
    folder = make_run(path, correct, TAGS, policy=path.name)
    res = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps({**res, "images_per_prompt": 2}))
    return folder


@pytest.fixture
def entries(tmp_path: Path) -> list[dict]:
    """A base right on 1 of 8 images; iris-nsc right on 2, 3, 4 prompts (deltas 0.375, 0.625, 0.875); the null
    right on 1, 1, 2 prompts (deltas 0.125, 0.125, 0.375)."""
    base = {"geneval/test": _run(tmp_path / "base", {0}, first_only=True)}
    evals = [SeedEval(method, "best val", seed, 3, f"{method} s{seed} (best val)",
                      {"geneval/test": _run(tmp_path / f"{method}-{seed}", set(range(n)))})
             for method, ns in (("iris-nsc", (2, 3, 4)), ("null-random", (1, 1, 2))) for seed, n in enumerate(ns)]
    return seed_deltas(base, evals, n_resamples=200)


def test_difference_from_the_null_by_hand_and_by_scipy(entries: list[dict], tmp_path: Path) -> None:
    assert [s["delta"] for s in entries[1]["seeds"]] == pytest.approx([0.125, 0.125, 0.375])
    (r,) = null_comparisons(entries, ["null-random"])
    assert (r["method"], r["null"], r["checkpoint"], r["suite"], r["split"]) == \
        ("iris-nsc", "null-random", "best val", "geneval", "test")
    # means 0.625 and 0.208333; variances 0.0625 and 0.0208333 (ddof 1); v = 0.0208333 and 0.0069444;
    # se = sqrt(0.0277778) = 1/6; df = 0.0277778^2 / (0.0208333^2 / 2 + 0.0069444^2 / 2) = 3.2;
    # t(0.975, 3.2) = 3.072829: 0.416667 +- 0.512138
    assert (r["method_mean"], r["null_mean"], r["diff"]) == pytest.approx((0.625, 0.208333, 0.416667), abs=1e-6)
    assert (r["se"], r["df"]) == pytest.approx((1 / 6, 3.2))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((0.416667 - 0.512138, 0.416667 + 0.512138), abs=1e-5)
    ref = sps.ttest_ind([0.375, 0.625, 0.875], [0.125, 0.125, 0.375], equal_var=False).confidence_interval(0.95)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert r["class"] == "no difference" and (r["n_method"], r["n_null"]) == (3, 3) and r["images_per_prompt"] == 2
    md = null_markdown([r], {"null-random": "null-shapes"})
    assert "Effect relative to the null control `null-random` (null-shapes) on test, 2 images per prompt" in md
    assert "| iris-nsc | best val | geneval | +0.625 | +0.208 | +0.417 [-0.095, +0.929] | 3.2 | 3, 3 |" in md
    (v,) = null_verdicts([r])
    assert v == ("iris-nsc (best val) cannot be told from the null control `null-random` on geneval/test (2 images per "
                 "prompt): +0.417 [-0.095, +0.929] (95% Welch t interval includes 0, df 3.2; 3 and 3 seeds)")
    df = pd.read_csv(write_null_csv([r], tmp_path / "vs_null.csv"))
    assert list(df.columns) == list(NULL_COLUMNS) and df.loc[0, "diff"] == pytest.approx(r["diff"])
    assert df.loc[0, "images_per_prompt"] == 2
    # the null is not compared with itself, and a second null is compared with the methods only
    assert null_comparisons(entries, ["null-random", "iris-nsc"]) == []
    # images per prompt reach the seed tables and verdicts too
    assert "*best val* checkpoints on test, 2 images per prompt" in seed_markdown(entries)
    assert "on geneval/test (2 images per prompt) across 3 seeds" in seed_verdicts(entries)[0]


def test_one_seed_on_a_side_has_no_interval(entries: list[dict]) -> None:
    entries[1]["seeds"] = entries[1]["seeds"][:1]
    (r,) = null_comparisons(entries, ["null-random"])
    assert r["diff"] == pytest.approx(0.625 - 0.125) and r["ci_low"] is None and r["class"] == "unknown"
    assert "+0.500 (n/a: one seed on a side)" in null_markdown([r])
    assert "no interval (fewer than 2 seeds on a side: 3 and 1)" in null_verdicts([r])[0]
