"""Checkpoint selection without test leakage (docs/method.md §5.1).

IRIS reports the best of its checkpoints at steps 100-800 as scored on the TEST benchmarks themselves,
which inflates the reported score (a maximum over noisy estimates). irisbench evaluates checkpoints on a
validation split disjoint from test and reports, for a training run with evaluations on both splits at the
same steps:

- ``best-val``: the step with the best validation score (ties -> the earliest step), and its TEST score;
- ``last``: the last step evaluated on both splits (a fixed rule, no selection at all);
- ``step:N``: a fixed step named in advance;
- ``best-test (leaky)``: the paper's protocol, the best test score over steps — reported only for contrast,
  so that the size of the leak can be read off beside the honest figures.

Only steps evaluated on BOTH splits are candidates (the others are listed). ``metric`` is ``"overall"`` or
a tag name. Every result states the rule used. ``test_split=None`` selects among the validation steps
alone (the experiment picks its checkpoint this way before evaluating it on test).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from irisbench.analysis.dynamics import OVERALL, eval_curves
from irisbench.analysis.record_frames import AnalysisError, RunDirs, as_runs
from irisbench.evaluation.eval_run import RESULTS

RULES: dict[str, str] = {
    "best-val": "step with the best validation score (ties: earliest); its test score reported",
    "last": "last step evaluated on both splits (fixed rule, no selection)",
    "best-test": "best test score over steps (LEAKY: selects on test, as in the paper; for contrast only)",
}
_FIXED = re.compile(r"step:(\d+)")


def _describe(rule: str) -> str:
    m = _FIXED.fullmatch(rule)
    if m:
        return f"fixed step {m.group(1)} (named in advance)"
    if rule not in RULES:
        raise AnalysisError(f"unknown selection rule {rule!r}; choose from {[*RULES, 'step:N']}")
    return RULES[rule]


def _split_scores(curves: pd.DataFrame, split: str, metric: str, where: str) -> pd.DataFrame:
    part = curves[(curves["split"] == split) & (curves["tag"] == metric)].set_index("step").sort_index()
    if part.empty:
        have = sorted(curves.loc[curves["split"] == split, "tag"].unique())
        hint = f"; its metrics: {have}" if have else ""
        raise AnalysisError(f"{where}: no {metric!r} scores on split {split!r}{hint} "
                            f"(looked for eval/{split}/step-N/{RESULTS})")
    return part


def select_checkpoint(run_dir: str | Path, rule: str = "best-val", *, val_split: str = "val",
                      test_split: str | None = "test", metric: str = OVERALL, curves: pd.DataFrame | None = None,
                      run: str | None = None) -> dict[str, Any]:
    """Choose a step of one training run by ``rule`` and report its val and test scores with intervals.

    Returns ``{run, rule, rule_description, metric, val_split, test_split, step, val_score, val_ci_low,
    val_ci_high, test_score, test_ci_low, test_ci_high, candidate_steps, steps_without_test,
    steps_without_val}``. ``curves``: a precomputed ``eval_curves`` frame for this run (optional).
    ``test_split=None``: candidates are the validation steps, and the test fields are None.
    """
    description = _describe(rule)
    if test_split is None and rule == "best-test":
        raise AnalysisError("rule 'best-test' needs a test split")
    if val_split == test_split:
        raise AnalysisError(f"val_split and test_split are both {val_split!r}: selecting and reporting on one "
                            "split is the test leakage this module exists to avoid")
    name = run or Path(run_dir).name
    if curves is None:
        curves = eval_curves({name: run_dir})
    val = _split_scores(curves, val_split, metric, str(run_dir))
    test = val.iloc[0:0] if test_split is None else _split_scores(curves, test_split, metric, str(run_dir))
    common = sorted(val.index) if test_split is None else sorted(set(val.index) & set(test.index))
    if not common:
        raise AnalysisError(f"{run_dir}: no step is evaluated on both {val_split!r} (steps {sorted(val.index)}) "
                            f"and {test_split!r} (steps {sorted(test.index)})")
    fixed = _FIXED.fullmatch(rule)
    if rule == "best-val":
        scores = val.loc[common, "score"].astype(float)
        step = int(scores[scores == scores.max()].index.min())
    elif rule == "best-test":
        scores = test.loc[common, "score"].astype(float)
        step = int(scores[scores == scores.max()].index.min())
    elif rule == "last":
        step = common[-1]
    else:
        assert fixed is not None
        step = int(fixed.group(1))
        if step not in common:
            raise AnalysisError(f"{run_dir}: step {step} is not evaluated on both splits (steps with both: {common})")
    out: dict[str, Any] = {"run": name, "rule": rule, "rule_description": description, "metric": metric,
                           "val_split": val_split, "test_split": test_split, "step": step}
    for prefix, part in (("val", val), ("test", test)):
        if step not in part.index:  # test_split=None
            out.update({f"{prefix}_score": None, f"{prefix}_ci_low": None, f"{prefix}_ci_high": None})
            continue
        r = part.loc[step]
        out.update({f"{prefix}_score": float(r["score"]),
                    f"{prefix}_ci_low": None if pd.isna(r["ci_low"]) else float(r["ci_low"]),
                    f"{prefix}_ci_high": None if pd.isna(r["ci_high"]) else float(r["ci_high"])})
    out.update(candidate_steps=common,
               steps_without_test=[] if test_split is None else sorted(set(val.index) - set(test.index)),
               steps_without_val=sorted(set(test.index) - set(val.index)))
    return out


def selection_table(run_dirs: RunDirs, rules: Sequence[str] = ("best-val", "last", "best-test"), *,
                    val_split: str = "val", test_split: str = "test", metric: str = OVERALL) -> pd.DataFrame:
    """``select_checkpoint`` for every run and rule, one row each (lists of steps as text)."""
    rows = []
    for name, path in as_runs(run_dirs).items():
        curves = eval_curves({name: path})
        for rule in rules:
            r = select_checkpoint(path, rule, val_split=val_split, test_split=test_split, metric=metric,
                                  curves=curves, run=name)
            for k in ("candidate_steps", "steps_without_test", "steps_without_val"):
                r[k] = " ".join(str(s) for s in r[k])
            rows.append(r)
    return pd.DataFrame(rows)


__all__ = ["RULES", "select_checkpoint", "selection_table"]
