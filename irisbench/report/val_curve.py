"""The val curve of an experiment: every in-training evaluation of every method and training seed, as a tidy table.

The experiment selects each run's best-val checkpoint among its in-training val evaluations and reports that one
and the last on test; whether a method gains early and then declines (the shape "No Free Lunch", arXiv
2506.17219, found for intrinsic rewards on LLMs) shows only in the scores between. ``val_curve`` gathers them
from each training run's ``eval/<split>/step-N/results.json`` (``irisbench.train.trainer``) into rows
``method, seed, step, suite, split, score, ci_low, ci_high, images_per_prompt, n_prompts`` (the overall score;
``seed`` is the training seed, which is also the sampling seed of that run's in-training evaluations), with the
base's evaluation on each of those suites and that split as ``method = "base"`` at step 0 (``seed``: the experiment's
evaluation seed). ``write_curve_csv`` writes ``curve.csv``; ``curve_markdown`` the summary's table: per step the
mean across seeds and each seed's score.

Only training seed ``s == evaluation seed`` draws the base's sampling seeds, so the base row is paired with that
seed's curve alone; for the other seeds it is a reference level, not a paired baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from irisbench.analysis.dynamics import eval_steps
from irisbench.core.records import atomic_write_text
from irisbench.evaluation.eval_run import EvalRun

CURVE = "curve.csv"
COLUMNS = ["method", "seed", "step", "suite", "split", "score", "ci_low", "ci_high", "images_per_prompt", "n_prompts"]


def _row(method: str, seed: int, step: int, folder: Path) -> dict:
    res = EvalRun(folder).read_results(partial=True)
    o = res["scores"]["overall"]
    return {"method": method, "seed": seed, "step": step, "suite": res.get("suite"), "split": res.get("split"),
            "score": o["score"], "ci_low": o.get("ci_low"), "ci_high": o.get("ci_high"),
            "images_per_prompt": res.get("images_per_prompt"), "n_prompts": o.get("n_prompts")}


def val_curve(train_runs: dict[str, dict[int, Path]], split: str = "val", *,
              base: Mapping[str, Path] | None = None, eval_seed: int = 0) -> pd.DataFrame:
    """Every in-training ``split`` evaluation of every run (``{method: {training seed: run folder}}``), in
    method order (the base first), then seed and step; ``base``: the base's eval folders by ``"suite/split"``
    (the experiment's ``evals["base"]``), of which those on the runs' suites and ``split`` are added at step 0."""
    rows = []
    for method, runs in train_runs.items():
        for seed, run in runs.items():
            rows += [_row(method, seed, step, folder) for step, folder in eval_steps(run, split).items()]
    suites = dict.fromkeys(r["suite"] for r in rows)
    first = [_row("base", eval_seed, 0, base[f"{s}/{split}"]) for s in suites if base and f"{s}/{split}" in base]
    return pd.DataFrame(first + rows, columns=COLUMNS)


def write_curve_csv(curve: pd.DataFrame, path: Path) -> Path:
    atomic_write_text(path, curve.to_csv(index=False))
    return path


def curve_markdown(curve: pd.DataFrame) -> str:
    """Per step (rows) and method (columns): the mean across training seeds, then each seed's score."""
    runs = curve[curve["method"] != "base"]
    if runs.empty:
        return ""
    methods = list(dict.fromkeys(runs["method"]))
    (suite, split, ipp) = runs.iloc[0][["suite", "split", "images_per_prompt"]]
    n = f"{ipp} image{'s' if ipp != 1 else ''} per prompt"
    lines = [f"Val curve: {suite} {split} overall at every in-training evaluation ({n}; "
             "mean across training seeds, then each seed in seed order; tidy rows in `curve.csv`):", "",
             "| step | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    base = curve[curve["method"] == "base"]
    if not base.empty:
        b = base.iloc[0]
        b_ipp = "" if b["images_per_prompt"] == ipp else f", {b['images_per_prompt']} images per prompt"
        lines.append(f"| 0 (base, evaluation seed {b['seed']}{b_ipp}) | "
                     + " | ".join(f"{b['score']:.3f}" for _ in methods) + " |")
    for step in sorted(runs["step"].unique()):
        cells = []
        for m in methods:
            at = runs[(runs["method"] == m) & (runs["step"] == step)].sort_values("seed")
            if at.empty:
                cells.append("–")
                continue
            each = ", ".join(f"{v:.3f}" for v in at["score"])
            cells.append(f"{float(np.mean(at['score'])):.3f} ({each})")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
