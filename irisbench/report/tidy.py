"""Tidy result tables: one row per run x suite x split x tag (and x seed), as CSV and Parquet.

The published experiment's numbers live in ``results/experiment/`` as ``scores.csv`` and
``scores.parquet`` beside its plots, so any figure can be re-plotted or cross-checked without the run
folders (which stay out of the repository). Every row comes from an eval run's ``results.json``: the
tag scores, their cluster-bootstrap intervals and counts, plus an ``overall`` row per run. ``seed`` is
the eval run's sampling seed: the experiment evaluates everything with one evaluation seed (paired
deltas), so it is the same on every row there; ``images_per_prompt`` is how many images each prompt drew.
Where the caller knows what a run label stands for (the experiment does), ``method``, ``checkpoint``
("best val" / "last"), ``training_seed`` and ``step`` say it in columns, so a table can be grouped by method
and seed without parsing labels; they are empty for the base and the references.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from irisbench.core.errors import UsageError
from irisbench.core.records import atomic_replace
from irisbench.evaluation.eval_run import RECORDS_PARQUET, EvalRun

RUN_COLUMNS = ("method", "checkpoint", "training_seed", "step")  # what a label stands for, when known
# the per-image table published beside the tidy scores: enough to re-derive every interval (records.parquet)
RECORD_COLUMNS = ("run", *RUN_COLUMNS, "suite", "split", "prompt_index", "sample_index", "seed", "tag", "prompt",
                  "correct", "score", "plan_len", "sc_text", "sc_image", "entropy_text", "entropy_image")
COLUMNS = ("run", *RUN_COLUMNS, "suite", "split", "world", "seed", "tag", "score", "ci_low", "ci_high", "n_images",
           "n_prompts", "images_per_prompt", "policy", "folder")


def tidy_rows(evals: Mapping[str, Mapping[str, str | Path]], relative_to: str | Path | None = None,
              runs: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Rows from ``{run label: {"suite/split": eval run folder}}`` (the experiment's ``evals``); ``folder``
    is written relative to ``relative_to`` (the experiment folder) when the run lies below it. ``runs``:
    ``{run label: {column of RUN_COLUMNS: value}}`` for the labels whose method and seed are known."""
    rows: list[dict[str, Any]] = []
    runs = runs or {}
    unknown = sorted({k for meta in runs.values() for k in meta} - set(RUN_COLUMNS))
    if unknown:
        raise UsageError(f"tidy_rows: unknown run column(s) {unknown}; known: {list(RUN_COLUMNS)}")
    for label, folders in evals.items():
        for key, folder in folders.items():
            run = EvalRun(folder)
            if not run.has_results():
                raise UsageError(f"{label} ({key}): {run.results_path} is missing: not a finished eval run")
            res = run.read_results(UsageError)
            common = {"run": label, "suite": res["suite"], "split": res["split"], "world": res.get("world"),
                      "seed": res.get("seed"), "images_per_prompt": res.get("images_per_prompt"),
                      "policy": (res.get("policy") or {}).get("name"),
                      "folder": _shown(Path(folder), relative_to), **runs.get(label, {})}
            scores = res["scores"]
            tags = [("overall", scores["overall"]), *scores["tags"].items()]
            for tag, s in tags:
                rows.append({**common, "tag": tag, "score": s["score"], "ci_low": s.get("ci_low"),
                             "ci_high": s.get("ci_high"), "n_images": s.get("n_images"),
                             "n_prompts": s.get("n_prompts")})
    return [{c: r.get(c) for c in COLUMNS} for r in rows]


def record_rows(evals: Mapping[str, Mapping[str, str | Path]],
                runs: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per image of every eval run in ``evals`` (``RECORD_COLUMNS``): the run label and what it stands
    for, the suite and split, the image's prompt, sample, seed and tag, its score (``correct`` for GenEval,
    ``score`` for T2I-CompBench) and the policy's own statistics of that image. The cluster bootstrap over
    prompts (``irisbench.core.stats``) needs nothing else, so every published interval can be re-derived."""
    rows: list[dict[str, Any]] = []
    runs = runs or {}
    for label, folders in evals.items():
        for folder in folders.values():
            run = EvalRun(folder)
            res = run.read_results(UsageError)
            common = {"run": label, "suite": res["suite"], "split": res["split"], **runs.get(label, {})}
            for rec in run.read_records():
                rows.append({c: common.get(c, rec.get(c)) for c in RECORD_COLUMNS})
    return rows


def write_records(evals: Mapping[str, Mapping[str, str | Path]], folder: str | Path,
                  runs: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """``folder/records.parquet`` from ``record_rows`` (written atomically)."""
    import pandas as pd

    out = Path(folder) / RECORDS_PARQUET
    df = pd.DataFrame(record_rows(evals, runs), columns=list(RECORD_COLUMNS))
    atomic_replace(out, lambda tmp: df.to_parquet(tmp, index=False))
    return out


def _shown(folder: Path, relative_to: str | Path | None) -> str:
    if relative_to is not None:
        try:
            return folder.resolve().relative_to(Path(relative_to).resolve()).as_posix()
        except ValueError:
            pass
    return str(folder)


def write_tidy(evals: Mapping[str, Mapping[str, str | Path]], folder: str | Path, stem: str = "scores",
               relative_to: str | Path | None = None, runs: Mapping[str, Mapping[str, Any]] | None = None
               ) -> dict[str, Path]:
    """Write ``<stem>.csv`` and ``<stem>.parquet`` into ``folder``; returns their paths."""
    import pandas as pd

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(tidy_rows(evals, relative_to, runs), columns=list(COLUMNS))
    df["training_seed"] = df["training_seed"].astype("Int64")  # integers with gaps, not floats
    df["step"] = df["step"].astype("Int64")
    df["images_per_prompt"] = df["images_per_prompt"].astype("Int64")
    paths = {"csv": folder / f"{stem}.csv", "parquet": folder / f"{stem}.parquet"}
    df.to_csv(paths["csv"], index=False)
    df.to_parquet(paths["parquet"], index=False)
    return paths
