"""Seen vs unseen prompts: each method's gain on RL-training texts beside test, the gap paired by seed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from irisbench.report.seen_unseen import seen_markdown, seen_unseen_rows, write_seen_csv


def _entry(method: str, split: str, deltas: dict[int, float], kind: str = "best val") -> dict:
    return {"method": method, "checkpoint": kind, "suite": "geneval", "split": split,
            "seeds": [{"seed": s, "delta": d} for s, d in deltas.items()]}


def test_gap_is_paired_by_seed_hand_computed(tmp_path: Path) -> None:
    seen = [_entry("verifier", "seen", {0: 0.3, 1: 0.2, 2: 0.1}), _entry("lonely", "seen", {0: 0.1})]
    test = [_entry("verifier", "test", {0: 0.1, 1: 0.1, 2: 0.0}), _entry("verifier", "test", {0: 0.5}, "last")]
    rows = seen_unseen_rows(test, seen)
    assert [(r["method"], r["checkpoint"]) for r in rows] == [("verifier", "best val")]  # "lonely" has no test entry
    r = rows[0]
    # gaps 0.2, 0.1, 0.1: mean 0.13333, sd sqrt(0.0033333) = 0.057735, se 0.033333, t(0.975, 2) = 4.302653
    assert r["gap"] == pytest.approx(0.133333, abs=1e-6)
    assert (r["gap_ci_low"], r["gap_ci_high"]) == pytest.approx((0.133333 - 0.143422, 0.133333 + 0.143422), abs=1e-5)
    assert r["gap_class"] == "no difference"
    assert r["seen_delta"] == pytest.approx(0.2) and r["unseen_delta"] == pytest.approx(0.066667, abs=1e-6)
    # the unpaired intervals are each seed set's own Student-t: seen 0.2 +- 4.302653 * 0.1 / sqrt(3)
    assert r["seen_ci_high"] - r["seen_delta"] == pytest.approx(4.302653 * 0.1 / 3 ** 0.5, abs=1e-5)
    csv = pd.read_csv(write_seen_csv(rows, tmp_path / "seen_unseen.csv"))
    assert csv["gap"].tolist() == pytest.approx([0.1333], abs=1e-4)
    assert csv["seen_seed_deltas"].tolist() == ["0.3000;0.2000;0.1000"]
    md = seen_markdown(rows)
    assert "| verifier | best val | geneval | 3 | +0.200 [" in md and "+0.133 [-0.010, +0.277]" in md


def test_only_seeds_present_in_both_splits_count() -> None:
    seen = [_entry("iris", "seen", {0: 0.0, 1: -0.2, 5: 0.9})]
    test = [_entry("iris", "test", {0: -0.1, 1: -0.1})]
    (r,) = seen_unseen_rows(test, seen)
    assert r["n_seeds"] == 2 and r["seen_seed_deltas"] == [0.0, -0.2]
    assert r["gap"] == pytest.approx(0.0)
    assert seen_unseen_rows(test, [_entry("iris", "seen", {7: 0.1})]) == []
    assert seen_markdown([]) == ""
