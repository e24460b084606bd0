"""Per-image record frames as the analysis reads them: loading runs, naming them, numeric columns, prompts.

Everything in ``irisbench.analysis`` is a pure function of the records an evaluation writes (one row per
image; ``irisbench.evaluation.evaluate``) and of a training run's ``train/metrics.jsonl``. This module holds what the
analyses share:

- ``load_records(run_dir)``: the records of an eval run as a DataFrame (``records.parquet`` when the run is
  complete, else the crash-safe ``records.jsonl`` — the exact source; a torn last line is ignored);
- ``numeric_column``: a column as float64 with NaN for null (``bool`` -> 0/1); anything else is an error
  naming the row, never a silent NaN;
- ``cluster_codes``: the prompt (cluster) of each row, as 0..P-1 codes — bootstraps resample PROMPTS and
  keep all their images (images of one prompt are not independent);
- ``resampled_weights``: the cluster bootstrap as integer weights per image (how many times each image's
  prompt was drawn), in chunks — the same scheme as ``irisbench.core.stats`` (draw P prompts with replacement),
  expressed as weights so that bivariate statistics (correlations, ranks) can be vectorised over replicates;
- ``run_names``: short unique names for run folders (their shortest distinct path suffixes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irisbench.core.errors import IrisbenchError
from irisbench.core.stats import cluster_draws, percentile_interval
from irisbench.evaluation.eval_run import EvalRun

ALL = "all"  # the group label of rows computed over every record


class AnalysisError(IrisbenchError, ValueError):
    """Input the analysis cannot use as given (the message names the file, row or column)."""


def run_kind(path: str | Path) -> str | None:
    """``"eval"``, ``"train"`` or None: from ``run.json``'s kind, else from the files the folder holds."""
    path = Path(path)
    marker = EvalRun(path).marker_path
    if marker.is_file():
        try:
            kind = json.loads(marker.read_text(encoding="utf-8")).get("kind")
        except (OSError, json.JSONDecodeError, AttributeError):
            kind = None
        if kind in ("eval", "train"):
            return kind
    if EvalRun(path).has_records():
        return "eval"
    if (path / "train" / "metrics.jsonl").is_file() or (path / "train" / "metrics.parquet").is_file():
        return "train"
    return None


def load_records(run_dir: str | Path):  # -> pandas.DataFrame
    """The per-image records of an eval run folder, as a DataFrame (one row per image)."""
    from irisbench.core.records import read_parquet, read_records

    run_dir = Path(run_dir)
    parquet, jsonl = EvalRun(run_dir).parquet_path, EvalRun(run_dir).records_path
    if parquet.is_file() and (not jsonl.is_file() or parquet.stat().st_mtime >= jsonl.stat().st_mtime):
        df = read_parquet(parquet)
    elif jsonl.is_file():
        df = pd.DataFrame(read_records(jsonl))
    else:
        raise AnalysisError(f"{run_dir}: no {jsonl.name} or {parquet.name} (is it an eval run folder?)")
    if df.empty:
        raise AnalysisError(f"{run_dir}: the records file holds no records")
    return df.reset_index(drop=True)


def run_names(paths: Sequence[str | Path] | Mapping[str, str | Path]) -> dict[str, Path]:
    """``{name: path}``: a mapping is kept as given; each path is named by its shortest suffix no other has."""
    if isinstance(paths, Mapping):
        return {str(k): Path(v) for k, v in paths.items()}
    resolved = [Path(p).resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise AnalysisError(f"a run folder is given twice: {[str(p) for p in paths]}")
    names = {}
    for i, p in enumerate(resolved):
        others = [q for j, q in enumerate(resolved) if j != i]
        depth = 1
        while depth < len(p.parts) and any(q.parts[-depth:] == p.parts[-depth:] for q in others):
            depth += 1
        names["/".join(p.parts[-depth:])] = Path(paths[i])
    return names


RunDirs = Sequence[str | Path] | Mapping[str, str | Path] | str | Path


def as_runs(run_dirs: RunDirs) -> dict[str, Path]:
    """``{name: folder}`` from one folder, a list of folders (named by ``run_names``) or a name -> folder map."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    return run_names(run_dirs)


def safe_name(name: str) -> str:
    """A run name usable in a file name (path separators and odd characters become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def require_columns(df: pd.DataFrame, columns: Sequence[str], where: str = "records") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise AnalysisError(f"{where}: missing column(s) {missing} (columns present: {list(df.columns)})")


def row_label(df: pd.DataFrame, i: int) -> str:
    """``record i (prompt_index=.., sample_index=..)`` for error messages (i = position in the frame)."""
    keys = [k for k in ("prompt_index", "sample_index") if k in df.columns]
    where = ", ".join(f"{k}={jsonable(df[k].iloc[i])!r}" for k in keys)
    return f"record {i}" + (f" ({where})" if where else "")


def numeric_column(df: pd.DataFrame, column: str) -> np.ndarray:
    """``df[column]`` as float64, NaN for null; booleans become 0/1. Non-numbers and infinities are errors."""
    require_columns(df, [column])
    s = df[column]
    if s.dtype == bool:
        return s.to_numpy(dtype=np.float64)
    values = s.to_numpy(dtype=object) if s.dtype == object else s.to_numpy()
    if values.dtype != object:
        if not np.issubdtype(values.dtype, np.number):
            raise AnalysisError(f"column {column!r} is not numeric (dtype {values.dtype})")
        out = values.astype(np.float64)
    else:
        out = np.empty(len(values), dtype=np.float64)
        for i, v in enumerate(values):
            if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
                out[i] = np.nan
            elif isinstance(v, (bool, np.bool_, int, float, np.integer, np.floating)):
                out[i] = float(v)
            else:
                raise AnalysisError(f"{row_label(df, i)}: field {column!r} must be a number or null, got {v!r}")
    bad = np.isinf(out)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AnalysisError(f"{row_label(df, i)}: field {column!r} is infinite")
    return out


def cluster_codes(df: pd.DataFrame, cluster: str | Sequence[str] = "prompt_index") -> np.ndarray:
    """The cluster (prompt) of each row as int codes 0..P-1 in order of first appearance."""
    cols = [cluster] if isinstance(cluster, str) else list(cluster)
    require_columns(df, cols)
    nulls = df[cols].isna().any(axis=1).to_numpy()
    if nulls.any():
        i = int(np.flatnonzero(nulls)[0])
        raise AnalysisError(f"{row_label(df, i)}: the cluster key {cols} is null")
    return df.groupby(cols, sort=False).ngroup().to_numpy(dtype=np.int64)


def recode(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes renumbered 0..P-1 (order of first appearance) and P — for a subset of rows."""
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)], len(first)


def resampled_weights(codes: np.ndarray, n_clusters: int, n_resamples: int, rng: np.random.Generator,
                      extra_width: int = 1) -> Iterator[np.ndarray]:
    """Cluster-bootstrap replicates as per-row weights, ``(chunk, n_rows)`` float arrays, in chunks.

    Each replicate draws ``n_clusters`` clusters with replacement (``irisbench.core.stats.cluster_draws``); a
    row's weight is the number of times its cluster was drawn. ``extra_width`` scales the chunk down
    when the caller builds wider blocks.
    """
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise AnalysisError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    width = max(len(codes), n_clusters, 1) * max(extra_width, 1)
    for draws in cluster_draws(n_clusters, n_resamples, rng, width=width):
        r = draws.shape[0]
        counts = np.bincount((draws + np.arange(r)[:, None] * n_clusters).ravel(),
                             minlength=r * n_clusters).reshape(r, n_clusters)
        yield counts[:, codes].astype(np.float64)


def percentile_ci(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the finite replicates (NaN, NaN when there are none)."""
    return percentile_interval(replicates, confidence, finite_only=True)


def check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise AnalysisError(f"confidence must be in (0, 1), got {confidence!r}")


def resolve_columns(df: pd.DataFrame, columns: Sequence[str] | str | None, default: Sequence[str],
                    what: str) -> list[str]:
    """Columns given explicitly must exist; ``None`` means the defaults that the frame has."""
    if columns is None:
        cols = [c for c in default if c in df.columns]
        if not cols:
            raise AnalysisError(f"none of the default {what} columns {list(default)} is in the records "
                                f"(columns present: {list(df.columns)})")
        return cols
    cols = [columns] if isinstance(columns, str) else list(columns)
    require_columns(df, cols)
    return cols


def groups(df: pd.DataFrame, by: str | None) -> list[tuple[str, np.ndarray]]:
    """``[(ALL, all rows), (group, its rows) ...]`` — groups of ``by`` in order of first appearance."""
    out: list[tuple[str, np.ndarray]] = [(ALL, np.ones(len(df), dtype=bool))]
    if by is None:
        return out
    require_columns(df, [by])
    col = df[by]
    if col.isna().any():
        i = int(np.flatnonzero(col.isna().to_numpy())[0])
        raise AnalysisError(f"{row_label(df, i)}: the group column {by!r} is null")
    values = col.to_numpy()
    for g in pd.unique(col):
        out.append((str(g), values == g))
    return out


def jsonable(value: Any) -> Any:
    """A value made JSON-friendly (numpy scalars -> Python, NaN -> None) for summary dicts."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
