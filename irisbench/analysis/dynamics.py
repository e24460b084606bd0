"""Training dynamics: per-step training metrics beside checkpoint evaluations (the paper's Figure 2 analogue).

IRIS's Figure 2 shows image self-certainty over RL training; here the same curves come from a training
run folder (``irisbench.train.trainer``):

- ``load_training_curves``: ``train/metrics.jsonl`` of each run as one tidy frame (``run, step`` and every
  logged metric: reward_mean/std, sc_text, sc_image, entropy_*, kl, loss, lr, train_correct, plan_len, ...);
  a torn last line (``kill -9``) is ignored, any other bad line is an error naming file and line;
- ``eval_curves``: every ``eval/<split>/step-N/results.json`` as rows ``run, split, step, tag, score,
  ci_low, ci_high, n_images, n_prompts, complete`` (tag ``"overall"`` for the overall score);
- ``eval_uncertainty_curves``: the mean self-certainty / entropy of the images of each checkpoint
  evaluation (fixed eval prompts, so less noisy than the training batches' values);
- ``training_dynamics``: the training metrics joined with one split's overall score and interval per step
  (outer join on ``run, step``: evaluations and logged steps need not coincide).

Training metrics are means over one step's rollouts of the training prompts (the policy's own samples,
with the training reward's sign conventions); evaluation figures are on a fixed held-out split.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irisbench.analysis.record_frames import AnalysisError, RunDirs, as_runs, load_records, numeric_column
from irisbench.evaluation.eval_run import RESULTS, EvalRun

logger = logging.getLogger(__name__)

OVERALL = "overall"
_STEP_DIR = re.compile(r"step-(\d+)")
def read_metrics_file(path: str | Path) -> list[dict[str, Any]]:
    """The per-step lines of a ``metrics.jsonl`` (a torn last line is dropped with a warning)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise AnalysisError(f"{path}: cannot read the training metrics ({e})") from None
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                logger.warning("%s: ignoring a torn last line", path)
                continue
            raise AnalysisError(f"{path}, line {i + 1}: not valid JSON ({e})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int) or isinstance(rec.get("step"), bool):
            raise AnalysisError(f"{path}, line {i + 1}: a metrics line must be an object with an integer 'step'")
        rows.append(rec)
    return rows


def load_training_curves(run_dirs: RunDirs) -> pd.DataFrame:
    """One row per (run, logged step) with every metric the trainer logged (NaN where a run lacks one)."""
    frames = []
    for name, path in as_runs(run_dirs).items():
        jsonl, parquet = path / "train" / "metrics.jsonl", path / "train" / "metrics.parquet"
        if jsonl.is_file():
            df = pd.DataFrame(read_metrics_file(jsonl))
        elif parquet.is_file():
            df = pd.read_parquet(parquet)
        else:
            raise AnalysisError(f"{path}: no train/metrics.jsonl (is it a training run folder?)")
        if df.empty:
            continue
        if "step" not in df.columns:
            raise AnalysisError(f"{path}: training metrics have no 'step' column")
        dup = df["step"].duplicated(keep="last")
        if dup.any():
            logger.warning("%s: %d repeated step(s) in the training metrics; keeping the last", path, int(dup.sum()))
            df = df[~dup]
        frames.append(df.assign(run=name))
    if not frames:
        return pd.DataFrame(columns=["run", "step"])
    out = pd.concat(frames, ignore_index=True)
    cols = ["run", "step"] + [c for c in out.columns if c not in ("run", "step")]
    return out[cols].sort_values(["run", "step"], kind="stable").reset_index(drop=True)


def eval_steps(run_dir: str | Path, split: str) -> dict[int, Path]:
    """``{step: eval run folder}`` for ``<run>/eval/<split>/step-N`` folders holding a results.json."""
    base = Path(run_dir) / "eval" / split
    out: dict[int, Path] = {}
    if not base.is_dir():
        return out
    for d in base.iterdir():
        m = _STEP_DIR.fullmatch(d.name)
        if not (m and d.is_dir()):
            continue
        if not EvalRun(d).has_results():
            logger.warning("%s: no %s (evaluation unfinished?); skipped", d, RESULTS)
            continue
        out[int(m.group(1))] = d
    return dict(sorted(out.items()))


def eval_splits(run_dir: str | Path) -> list[str]:
    base = Path(run_dir) / "eval"
    return sorted(d.name for d in base.iterdir() if d.is_dir()) if base.is_dir() else []


def _score_rows(run: EvalRun) -> list[dict[str, Any]]:
    path = run.results_path
    res = run.read_results(AnalysisError, partial=True)
    scores = res["scores"]
    items = [(OVERALL, scores["overall"]), *scores.get("tags", {}).items()]
    complete = (res.get("counts") or {}).get("complete")
    rows = []
    for tag, s in items:
        if not isinstance(s, dict) or "score" not in s:
            raise AnalysisError(f"{path}: scores for {tag!r} lack a 'score'")
        rows.append({"tag": tag, "score": s["score"], "ci_low": s.get("ci_low"), "ci_high": s.get("ci_high"),
                     "n_images": s.get("n_images"), "n_prompts": s.get("n_prompts"), "complete": complete})
    return rows


def eval_curves(run_dirs: RunDirs, split: str | None = None) -> pd.DataFrame:
    """Overall and per-tag scores with intervals at every evaluated step (``split=None``: every split)."""
    rows = []
    for name, path in as_runs(run_dirs).items():
        for sp in ([split] if split is not None else eval_splits(path)):
            for step, d in eval_steps(path, sp).items():
                rows += [{"run": name, "split": sp, "step": step, **r} for r in _score_rows(EvalRun(d))]
    cols = ["run", "split", "step", "tag", "score", "ci_low", "ci_high", "n_images", "n_prompts", "complete"]
    return pd.DataFrame(rows, columns=cols)


def eval_uncertainty_curves(run_dirs: RunDirs, split: str,
                            columns: Sequence[str] = ("sc_text", "sc_image", "sc_all", "entropy_text",
                                                      "entropy_image", "entropy_all")) -> pd.DataFrame:
    """Per (run, step): the mean of each uncertainty column over the evaluated images (``eval_<col>``)."""
    rows = []
    for name, path in as_runs(run_dirs).items():
        for step, d in eval_steps(path, split).items():
            df = load_records(d)
            row: dict[str, Any] = {"run": name, "step": step}
            for c in columns:
                if c in df.columns:
                    v = numeric_column(df, c)
                    row[f"eval_{c}"] = float(np.nanmean(v)) if (~np.isnan(v)).any() else np.nan
            rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["run", "step"])


def training_dynamics(run_dirs: RunDirs, split: str = "val", *, with_eval_uncertainty: bool = False) -> pd.DataFrame:
    """Training metrics per step joined with ``<split>_score, <split>_ci_low, <split>_ci_high`` (overall).

    ``with_eval_uncertainty`` also joins ``eval_uncertainty_curves`` (reads each evaluation's records).
    """
    train = load_training_curves(run_dirs)
    ev = eval_curves(run_dirs, split)
    ev = ev[ev["tag"] == OVERALL][["run", "step", "score", "ci_low", "ci_high"]]
    ev = ev.rename(columns={c: f"{split}_{c}" for c in ("score", "ci_low", "ci_high")})
    out = train.merge(ev, on=["run", "step"], how="outer")
    if with_eval_uncertainty:
        out = out.merge(eval_uncertainty_curves(run_dirs, split), on=["run", "step"], how="outer")
    out["step"] = out["step"].astype(np.int64)
    return out.sort_values(["run", "step"], kind="stable").reset_index(drop=True)


__all__ = ["OVERALL", "eval_curves", "eval_splits", "eval_steps", "eval_uncertainty_curves",
           "load_training_curves", "read_metrics_file", "training_dynamics"]
