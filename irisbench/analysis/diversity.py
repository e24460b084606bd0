"""Per-prompt diversity of a run's samples, to be read beside alignment (docs/method.md §5.3).

IRIS's claim is that low self-certainty models draw "simple, uniform" images; alignment scores alone cannot
show that, so diversity is measured per prompt from the same records:

- ``feature_diversity``: mean pairwise distance (cosine by default) between given feature vectors of a
  prompt's images — e.g. CLIP image features; computing features is not done here, the caller passes an
  ``(n_images, d)`` array aligned row by row with the records;
- ``layout_diversity`` (shapes world): the number of distinct scene layouts among a prompt's samples, a
  layout being the multiset of (label, color, box centre quantised to the 8x8 patch grid) of the exact
  detector's detections (``detections`` JSON of each record);
- ``pixel_diversity``: the number of distinct images by exact pixel hash (SHA-256 of the decoded RGB
  array and its shape), when the image files exist;

and ``summarize_diversity`` averages the per-prompt figures over prompts, per run and per group (tag),
with prompt-bootstrap intervals. Distinct counts are also given as fractions of the prompt's images
(``(n_distinct - 1) / (n - 1)``: 0 = all identical, 1 = all different), comparable across N.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irisbench.analysis.record_frames import (
    ALL,
    AnalysisError,
    check_confidence,
    cluster_codes,
    groups,
    require_columns,
    row_label,
)
from irisbench.core.stats import bootstrap_ci
from irisbench.world.vocab import CANVAS, PATCH


def _prompt_frame(df: pd.DataFrame, cluster: str | Sequence[str], by: str | None) -> pd.DataFrame:
    cols = [cluster] if isinstance(cluster, str) else list(cluster)
    keep = cols + ([by] if by and by in df.columns and by not in cols else [])
    return df[keep].copy()


def _distinct_fraction(n_distinct: pd.Series, n: pd.Series) -> pd.Series:
    return ((n_distinct - 1) / (n - 1)).where(n > 1)


# --------------------------------------------------------------------------------------------- features
def feature_diversity(df: pd.DataFrame, features: np.ndarray, *, metric: str = "cosine",
                      cluster: str | Sequence[str] = "prompt_index", by: str | None = "tag") -> pd.DataFrame:
    """Per prompt: mean pairwise ``metric`` distance (scipy ``pdist``) between its images' feature rows.

    ``features[i]`` belongs to ``df.iloc[i]``. Rows of NaN features are left out (and counted). Returns
    ``cluster, by, n_images, n_features_null, mean_pairwise_distance`` (NaN for a prompt with < 2 images).
    """
    from scipy.spatial.distance import pdist

    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] != len(df):
        raise AnalysisError(f"features must be an (n_images, d) array aligned with the {len(df)} records, "
                            f"got shape {f.shape}")
    if np.isinf(f).any():
        raise AnalysisError("features hold an infinite value")
    null = np.isnan(f).any(axis=1)
    codes = cluster_codes(df, cluster)
    frame = _prompt_frame(df, cluster, by)
    keys = list(frame.columns)
    rows = []
    for code in np.unique(codes):
        m = codes == code
        ok = m & ~null
        dist = float(pdist(f[ok], metric=metric).mean()) if ok.sum() >= 2 else np.nan
        first = int(np.flatnonzero(m)[0])
        rows.append({**{k: frame[k].iloc[first] for k in keys}, "n_images": int(ok.sum()),
                     "n_features_null": int((m & null).sum()), "mean_pairwise_distance": dist})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- layouts
def _detections(value: Any, where: str) -> list[dict]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise AnalysisError(f"{where}: field 'detections' is not valid JSON ({e})") from None
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise AnalysisError(f"{where}: field 'detections' is null")
    if isinstance(value, np.ndarray):
        value = list(value)
    if not isinstance(value, list):
        raise AnalysisError(f"{where}: field 'detections' must be a JSON list, got {type(value).__name__}")
    return value


def layout_key(detections: Any, *, canvas: int = CANVAS, patch: int = PATCH,
               where: str = "detections") -> tuple[tuple[str, str, int, int], ...]:
    """The scene layout of one image: sorted (label, color, column, row) of each detection's box centre cell.

    ``detections``: a list of ``{"label", "box": [x1, y1, x2, y2], "color", ...}`` dicts or its JSON text.
    The cell is ``floor(centre / patch)`` clipped to the ``canvas // patch`` grid. A missing color is "".
    """
    grid = canvas // patch
    out = []
    for j, d in enumerate(_detections(detections, where)):
        here = f"{where}, detection {j}"
        if not isinstance(d, dict) or "label" not in d or "box" not in d:
            raise AnalysisError(f"{here}: must be an object with 'label' and 'box', got {d!r}")
        box = d["box"]
        try:
            x1, y1, x2, y2 = (float(v) for v in box)
        except (TypeError, ValueError):
            raise AnalysisError(f"{here}: 'box' must be four numbers [x1, y1, x2, y2], got {box!r}") from None
        col = min(max(int(np.floor((x1 + x2) / 2 / patch)), 0), grid - 1)
        row = min(max(int(np.floor((y1 + y2) / 2 / patch)), 0), grid - 1)
        out.append((str(d["label"]), str(d.get("color") or ""), col, row))
    return tuple(sorted(out))


def layout_diversity(df: pd.DataFrame, *, canvas: int = CANVAS, patch: int = PATCH,
                     cluster: str | Sequence[str] = "prompt_index", by: str | None = "tag") -> pd.DataFrame:
    """Per prompt: ``n_images``, ``n_layouts`` (distinct layout keys) and ``layout_distinct_fraction``."""
    require_columns(df, ["detections"])
    keys = [layout_key(v, canvas=canvas, patch=patch, where=row_label(df, i))
            for i, v in enumerate(df["detections"].to_numpy(dtype=object))]
    frame = _prompt_frame(df, cluster, by)
    group_cols = list(frame.columns)
    frame["_layout"] = [json.dumps(k) for k in keys]
    out = frame.groupby(group_cols, sort=False).agg(n_images=("_layout", "size"), n_layouts=("_layout", "nunique"))
    out = out.reset_index()
    out["layout_distinct_fraction"] = _distinct_fraction(out["n_layouts"], out["n_images"])
    return out


# ----------------------------------------------------------------------------------------------- pixels
def pixel_hash(path: str | Path) -> str:
    """SHA-256 of an image's decoded RGB pixels and shape (so PNG encoder differences do not matter)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise AnalysisError(f"{path}: cannot read the image ({e})") from None
    h = hashlib.sha256(repr(a.shape).encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def pixel_diversity(df: pd.DataFrame, root: str | Path, *, cluster: str | Sequence[str] = "prompt_index",
                    by: str | None = "tag") -> pd.DataFrame:
    """Per prompt: ``n_images_found`` and ``n_distinct_images`` by exact pixel hash.

    ``image`` paths are relative to ``root`` (the eval run folder); records with a null ``image`` are
    skipped. A path given but missing is an error naming the record.
    """
    require_columns(df, ["image"])
    root = Path(root)
    hashes: list[str | None] = []
    for i, rel in enumerate(df["image"].to_numpy(dtype=object)):
        if rel is None or (isinstance(rel, float) and np.isnan(rel)) or rel == "":
            hashes.append(None)
            continue
        p = root / str(rel)
        if not p.is_file():
            raise AnalysisError(f"{row_label(df, i)}: image file {p} does not exist")
        hashes.append(pixel_hash(p))
    frame = _prompt_frame(df, cluster, by)
    group_cols = list(frame.columns)
    frame["_hash"] = hashes
    out = frame.groupby(group_cols, sort=False).agg(n_images_found=("_hash", "count"),
                                                    n_distinct_images=("_hash", "nunique"))
    out = out.reset_index()
    out["image_distinct_fraction"] = _distinct_fraction(out["n_distinct_images"], out["n_images_found"])
    return out


def has_images(df: pd.DataFrame, root: str | Path) -> bool:
    """True when the records name image files and the first of them exists under ``root``."""
    if "image" not in df.columns:
        return False
    named = [v for v in df["image"].to_numpy(dtype=object) if isinstance(v, str) and v]
    return bool(named) and (Path(root) / named[0]).is_file()


# ------------------------------------------------------------------------------------------- aggregate
def summarize_diversity(per_prompt: pd.DataFrame, metrics: Sequence[str] | None = None, *, by: str | None = "tag",
                        n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Mean over prompts of each per-prompt diversity metric, overall and per ``by`` group, with CIs.

    ``metrics``: numeric columns of ``per_prompt`` (default: the diversity columns this module makes that
    are present). Rows: ``metric, by, group, n_prompts, mean, ci_low, ci_high`` (+ ``run`` if present).
    """
    check_confidence(confidence)
    known = ("mean_pairwise_distance", "n_layouts", "layout_distinct_fraction", "n_distinct_images",
             "image_distinct_fraction")
    metrics = [m for m in known if m in per_prompt.columns] if metrics is None else list(metrics)
    require_columns(per_prompt, metrics, "per-prompt diversity table")
    if by is not None and by not in per_prompt.columns:
        by = None
    runs = [(None, per_prompt)] if "run" not in per_prompt.columns else list(per_prompt.groupby("run", sort=False))
    rows = []
    for run, frame in runs:
        frame = frame.reset_index(drop=True)
        for metric in metrics:
            values = pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=np.float64)
            for g, m in groups(frame, by):
                v = values[m & ~np.isnan(values)]
                row = {**({"run": run} if run is not None else {}), "metric": metric, "by": by, "group": g,
                       "n_prompts": int(v.size), "mean": float(v.mean()) if v.size else np.nan,
                       "ci_low": np.nan, "ci_high": np.nan}
                if v.size:
                    row["ci_low"], row["ci_high"] = bootstrap_ci(v[:, None], "mean", n_resamples=n_resamples,
                                                                 confidence=confidence, seed=seed)
                rows.append(row)
    return pd.DataFrame(rows)


def prompt_diversity(df: pd.DataFrame, *, root: str | Path | None = None, features: np.ndarray | None = None,
                     cluster: str | Sequence[str] = "prompt_index", by: str | None = "tag",
                     metric: str = "cosine", layouts: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Every diversity measure the records allow, joined per prompt; and notes on what was skipped.

    ``layouts``: count shapes-world layouts from ``detections`` (turn off for other worlds, whose boxes are
    not on the 32-pixel canvas).
    """
    frame = _prompt_frame(df, cluster, by)
    keys = list(frame.columns)
    out = frame.drop_duplicates(subset=keys).reset_index(drop=True)
    notes: list[str] = []
    if not layouts:
        notes.append("not the shapes world: layout diversity skipped")
    elif "detections" in df.columns and df["detections"].notna().all():
        out = out.merge(layout_diversity(df, cluster=cluster, by=by), on=keys, how="left")
    else:
        notes.append("no detections: layout diversity skipped")
    if root is not None and has_images(df, root):
        out = out.merge(pixel_diversity(df, root, cluster=cluster, by=by), on=keys, how="left")
    else:
        notes.append("no image files: pixel-hash diversity skipped")
    if features is not None:
        out = out.merge(feature_diversity(df, features, metric=metric, cluster=cluster, by=by)
                        .rename(columns={"n_images": "n_images_features"}), on=keys, how="left")
    else:
        notes.append("no feature vectors given: feature diversity skipped")
    return out, notes


__all__ = ["ALL", "feature_diversity", "has_images", "layout_diversity", "layout_key", "pixel_diversity",
           "pixel_hash", "prompt_diversity", "summarize_diversity"]
