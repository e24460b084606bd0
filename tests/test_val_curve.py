"""The experiment's val curve (``irisbench.report.val_curve``): every in-training val evaluation of every method and
training seed as tidy rows beside the base, and the summary's table of means across seeds, on hand-made runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from irisbench.report.val_curve import COLUMNS, curve_markdown, val_curve, write_curve_csv


def _result(folder: Path, score: float, *, split: str = "val", suite: str = "geneval", ipp: int = 2) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "suite": suite, "split": split, "images_per_prompt": ipp,
        "scores": {"overall": {"score": score, "ci_low": score - 0.05, "ci_high": score + 0.05, "n_prompts": 12}}}))
    return folder


def _run(root: Path, scores: dict[int, float]) -> Path:
    for step, score in scores.items():
        _result(root / "eval" / "val" / f"step-{step}", score)
    return root


@pytest.fixture
def runs(tmp_path: Path) -> tuple[dict[str, dict[int, Path]], dict[str, Path]]:
    train = {"iris": {0: _run(tmp_path / "iris-0", {16: 0.50, 32: 0.30, 160: 0.10}),
                      1: _run(tmp_path / "iris-1", {16: 0.30, 32: 0.20, 160: 0.05})},
             "null": {0: _run(tmp_path / "null-0", {16: 0.42, 32: 0.41, 160: 0.40})}}
    (tmp_path / "iris-1" / "eval" / "val" / "step-48").mkdir()  # unfinished: no results.json, left out
    _result(tmp_path / "iris-0" / "eval" / "test" / "step-160", 0.9, split="test")  # another split, left out
    base = {"geneval/val": _result(tmp_path / "base-val", 0.40),
            "geneval/test": _result(tmp_path / "base-test", 0.39, split="test")}
    return train, base


def test_val_curve_rows_are_every_in_training_evaluation_and_the_base(runs, tmp_path: Path) -> None:
    train, base = runs
    curve = val_curve(train, "val", base=base, eval_seed=7)
    assert list(curve.columns) == COLUMNS
    assert list(zip(curve["method"], curve["seed"], curve["step"], curve["score"], strict=True)) == [
        ("base", 7, 0, 0.40), ("iris", 0, 16, 0.50), ("iris", 0, 32, 0.30), ("iris", 0, 160, 0.10),
        ("iris", 1, 16, 0.30), ("iris", 1, 32, 0.20), ("iris", 1, 160, 0.05),
        ("null", 0, 16, 0.42), ("null", 0, 32, 0.41), ("null", 0, 160, 0.40)]
    assert set(curve["split"]) == {"val"} and set(curve["suite"]) == {"geneval"}
    assert set(curve["images_per_prompt"]) == {2} and curve["ci_low"].iloc[1] == pytest.approx(0.45)
    back = pd.read_csv(write_curve_csv(curve, tmp_path / "curve.csv"))
    assert back.shape == curve.shape and back["score"].tolist() == pytest.approx(curve["score"].tolist())
    assert val_curve(train, "val")["method"].iloc[0] == "iris"  # no base given: no base row


def test_curve_markdown_gives_the_mean_across_seeds_per_step(runs) -> None:
    train, base = runs
    md = curve_markdown(val_curve(train, "val", base=base))
    lines = md.splitlines()
    assert lines[2] == "| step | iris | null |"
    assert "| 0 (base, evaluation seed 0) | 0.400 | 0.400 |" in lines
    assert "| 16 | 0.400 (0.500, 0.300) | 0.420 (0.420) |" in lines  # (0.50 + 0.30) / 2
    assert "| 32 | 0.250 (0.300, 0.200) | 0.410 (0.410) |" in lines
    assert "| 160 | 0.075 (0.100, 0.050) | 0.400 (0.400) |" in lines
    assert "geneval val" in lines[0] and "2 images per prompt" in lines[0]
    assert curve_markdown(val_curve({}, "val", base=base)) == ""
    curve = val_curve(train, "val", base=base)
    curve.loc[curve["method"] == "base", "images_per_prompt"] = 8  # the base drawn at another count: said so
    assert "| 0 (base, evaluation seed 0, 8 images per prompt) | 0.400 | 0.400 |" in curve_markdown(curve)
