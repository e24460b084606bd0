"""Does an image's own self-certainty (or entropy) predict its quality? Correlations over per-image records.

IRIS (arXiv 2509.25562) argues that low self-certainty goes with richer, better images but shows no
per-image evidence and no intervals (docs/method.md §5.2). Here, from the evaluator's records alone:

- ``correlate``: Spearman, Pearson (point-biserial when y is binary — the same number, scipy's
  ``pointbiserialr``) and Kendall tau-b between uncertainty columns (x) and quality columns (y), overall and
  per group (e.g. tag), each with a 95% **cluster-bootstrap** interval that resamples PROMPTS and keeps all
  their images. The p-values are scipy's, which treat images as independent: with several images per prompt
  they are too small; the prompt-bootstrap intervals are the honest uncertainty.
- ``within_prompt``: among the samples of ONE prompt, is the less certain one the better one? The fraction
  of within-prompt pairs (with different y) in which the lower-x sample has the higher y (ties in x count
  1/2; 0.5 = no relation), and the mean within-prompt Spearman — both free of between-prompt confounding
  (hard prompts may both lower certainty and lower accuracy).
- ``binned``: mean quality by quantile bin of x with prompt-bootstrap intervals (for plots);
  ``prompt_means``: per-prompt means of x and y (for scatter plots).

Rows whose x or y is null (e.g. policies that draw no tokens) are dropped and counted. The bootstrap of a
correlation is computed exactly on the resampled data, vectorised: a replicate is a vector of per-image
weights (how often the image's prompt was drawn); weighted Pearson on values, on mid-ranks (Spearman) and
a weighted concordance count (Kendall tau-b) equal scipy's statistics on the expanded resample (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from irisbench.analysis.record_frames import (
    ALL,
    AnalysisError,
    check_confidence,
    cluster_codes,
    groups,
    numeric_column,
    percentile_ci,
    recode,
    resampled_weights,
    resolve_columns,
)
from irisbench.core.stats import bootstrap_ci

DEFAULT_X: tuple[str, ...] = ("sc_text", "sc_image", "sc_all", "entropy_text", "entropy_image", "entropy_all")
DEFAULT_Y: tuple[str, ...] = ("correct", "score", "clip_score")
STATS: tuple[str, ...] = ("spearman", "pearson", "kendall")
_DENSE_LEVELS = 16  # Kendall by level counts when one variable has at most this many distinct values


# ------------------------------------------------------------------------- weighted statistics (bootstrap)
def _pearson(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Weighted Pearson per replicate row of ``w`` (R, n) for (n,) vectors: sums as matrix products."""
    a, b = a - a.mean(), b - b.mean()  # global centring keeps the one-pass sums well conditioned
    n = w.sum(axis=1)
    sa, sb = w @ a, w @ b
    cov = w @ (a * b) - sa * sb / n
    va = w @ (a * a) - sa * sa / n
    vb = w @ (b * b) - sb * sb / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(cov / np.sqrt(va * vb), -1.0, 1.0)


def _centred_midranks(c: np.ndarray) -> np.ndarray:
    """(R, G) mid-rank of each value group minus the mean rank (N + 1) / 2, from group weights ``c``."""
    n = c.sum(axis=1, keepdims=True)
    return np.cumsum(c, axis=1) - c + (c + 1.0) / 2.0 - (n + 1.0) / 2.0


def _spearman(w: np.ndarray, sx: np.ndarray, cx: np.ndarray, cy: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Weighted Spearman: Pearson of mid-ranks; rows sorted by x (groups at ``sx``), ``gy`` the y groups."""
    rx, ry = _centred_midranks(cx), _centred_midranks(cy)
    cov = (rx * np.add.reduceat(w * ry[:, gy], sx, axis=1)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt((cx * rx * rx).sum(axis=1) * (cy * ry * ry).sum(axis=1))
    return np.clip(r, -1.0, 1.0)


def _groups(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Value groups of ``v``: (each row's group, the sort order, group starts in that order, n groups)."""
    uniq, group = np.unique(v, return_inverse=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
    return group, order, starts, len(uniq)


def _kendall_numerator_levels(w: np.ndarray, starts: np.ndarray, level: np.ndarray, n_levels: int,
                              totals: np.ndarray) -> np.ndarray:
    """Sum over pairs of w_i w_j sgn(da) sgn(db), rows sorted by a (groups at ``starts``), b in few levels.

    For levels k < l of b, a pair (i in l, j in k) adds sgn(a_i - a_j): over a-groups g, the level-l weight
    at g times (weight of level k below g - weight of level k above g) = (2 C_k + c_k - T_k) at g.
    ``totals``: (R, G) weight of each a-group over all levels (gives the last level without a pass).
    """
    acc = np.zeros((w.shape[0], len(starts)))  # sum over lower levels k of (2 C_k + c_k - T_k)
    s = np.zeros(w.shape[0])
    rest = totals
    for k in range(n_levels):
        c = rest if k == n_levels - 1 else np.add.reduceat(w * (level == k), starts, axis=1)
        if k:
            s += (c * acc).sum(axis=1)
        if k == n_levels - 1:
            break
        rest = rest - c
        cum = np.cumsum(c, axis=1)
        acc += 2.0 * cum - c - cum[:, -1:]
    return s


def _kendall_numerator_tree(w: np.ndarray, starts: np.ndarray, level: np.ndarray, n_levels: int) -> np.ndarray:
    """The same numerator with a Fenwick tree over the levels of b, vectorised over replicates (many levels)."""
    wt = np.ascontiguousarray(w.T)  # (n, R)
    r, k = w.shape[0], n_levels
    tree = np.zeros((k + 1, r))
    total = np.zeros(r)
    s = np.zeros(r)

    def prefix(m: int) -> np.ndarray:  # total weight of levels < m
        acc = np.zeros(r)
        while m > 0:
            acc += tree[m]
            m -= m & -m
        return acc

    bounds = np.r_[starts, w.shape[1]]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        for i in range(a, b):  # compare with every earlier (smaller-a) row, before adding this a-group's rows
            lvl = int(level[i])
            lower, upto = prefix(lvl), prefix(lvl + 1)
            s += wt[i] * (lower - (total - upto))
        for i in range(a, b):
            m = int(level[i]) + 1
            while m <= k:
                tree[m] += wt[i]
                m += m & -m
            total += wt[i]
    return s


def _pairs(c: np.ndarray) -> np.ndarray:
    return (c * (c - 1.0) / 2.0).sum(axis=1)


def weighted_stats(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """Spearman, Pearson and Kendall tau-b of (x, y) under each replicate's integer weights ``w`` (R, n).

    Row ``r`` equals scipy's statistic on the data with row ``i`` repeated ``w[r, i]`` times; NaN where x or
    y is constant in that replicate.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    gx, ox, sx, kx = _groups(x)
    x, y, w, gx = x[ox], y[ox], w[:, ox], gx[ox]  # rows sorted by x from here on
    gy, oy, sy, ky = _groups(y)
    cx = np.add.reduceat(w, sx, axis=1)  # (R, Gx) weight of each x value
    cy = np.add.reduceat(w[:, oy], sy, axis=1)
    out = {"pearson": _pearson(w, x, y), "spearman": _spearman(w, sx, cx, cy, gy)}
    if ky <= _DENSE_LEVELS:
        num = _kendall_numerator_levels(w, sx, gy, ky, cx)
    elif kx <= _DENSE_LEVELS:
        num = _kendall_numerator_levels(w[:, oy], sy, gx[oy], kx, cy)
    else:
        num = _kendall_numerator_tree(w, sx, gy, ky)
    n = w.sum(axis=1)
    n0 = n * (n - 1.0) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = num / np.sqrt((n0 - _pairs(cx)) * (n0 - _pairs(cy)))
    out["kendall"] = np.clip(tau, -1.0, 1.0)
    constant = ((cx > 0).sum(axis=1) < 2) | ((cy > 0).sum(axis=1) < 2)
    for v in out.values():
        v[constant | ~np.isfinite(v)] = np.nan  # a constant variable in this replicate: undefined
    return out


# --------------------------------------------------------------------------------------------- correlate
def _is_binary(y: np.ndarray) -> bool:
    return bool(np.isin(y, (0.0, 1.0)).all())


def _point_stats(x: np.ndarray, y: np.ndarray, binary: bool) -> dict[str, float]:
    rho, p_rho = sps.spearmanr(x, y)
    if binary:
        r, p_r = sps.pointbiserialr(y.astype(bool), x)
    else:
        r, p_r = sps.pearsonr(x, y)
    tau, p_tau = sps.kendalltau(x, y)
    return {"spearman": float(rho), "spearman_p": float(p_rho), "pearson": float(r), "pearson_p": float(p_r),
            "kendall": float(tau), "kendall_p": float(p_tau)}


def _correlate_one(x: np.ndarray, y: np.ndarray, codes: np.ndarray, n_resamples: int, seed: int,
                   confidence: float) -> dict[str, Any]:
    keep = ~(np.isnan(x) | np.isnan(y))
    row: dict[str, Any] = {"n_images": int(keep.sum()), "n_null_x": int(np.isnan(x).sum()),
                           "n_null_y": int((~np.isnan(x) & np.isnan(y)).sum())}
    x, y = x[keep], y[keep]
    codes, n_prompts = recode(codes[keep]) if keep.any() else (codes[keep], 0)
    binary = len(y) > 0 and _is_binary(y)
    row.update(n_prompts=n_prompts, y_binary=binary, pearson_kind="point-biserial" if binary else "pearson")
    for s in STATS:
        row.update({s: np.nan, f"{s}_p": np.nan, f"{s}_ci_low": np.nan, f"{s}_ci_high": np.nan})
    row.update(n_resamples=n_resamples, n_degenerate_resamples=0, note="")
    if len(x) < 3:
        row["note"] = f"too few non-null rows ({len(x)})"
        return row
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        row["note"] = "x is constant" if np.ptp(x) == 0 else "y is constant"
        return row
    row.update(_point_stats(x, y, binary))
    if n_prompts < 2:
        row["note"] = "one prompt: no bootstrap interval"
        return row
    rng = np.random.default_rng(seed)
    reps: dict[str, list[np.ndarray]] = {s: [] for s in STATS}
    for w in resampled_weights(codes, n_prompts, n_resamples, rng, extra_width=4):
        for s, v in weighted_stats(x, y, w).items():
            reps[s].append(v)
    degenerate = 0
    for s in STATS:
        arr = np.concatenate(reps[s])
        degenerate = max(degenerate, int(np.isnan(arr).sum()))
        row[f"{s}_ci_low"], row[f"{s}_ci_high"] = percentile_ci(arr, confidence)
    row["n_degenerate_resamples"] = degenerate
    if degenerate:
        row["note"] = f"{degenerate} resamples had a constant variable (left out of the interval)"
    return row


def correlate(df: pd.DataFrame, x_cols: Sequence[str] | str | None = None, y_cols: Sequence[str] | str | None = None,
              by: str | None = None, *, cluster: str | Sequence[str] = "prompt_index", n_resamples: int = 2000,
              seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Correlations of every x column with every y column, overall (group ``"all"``) and per ``by`` group.

    ``x_cols`` / ``y_cols``: column names; ``None`` = those of ``DEFAULT_X`` / ``DEFAULT_Y`` the records have.
    ``cluster``: the column(s) naming a prompt (the bootstrap's resampling unit). Returns a tidy frame, one
    row per (x, y, group): ``x, y, by, group, n_images, n_prompts, n_null_x, n_null_y, y_binary,
    pearson_kind, {spearman,pearson,kendall}{,_p,_ci_low,_ci_high}, n_resamples, n_degenerate_resamples,
    note``. Replicates are paired across x and y columns of one group (same seed, same prompt draws).
    """
    check_confidence(confidence)
    xs = resolve_columns(df, x_cols, DEFAULT_X, "x")
    ys = resolve_columns(df, y_cols, DEFAULT_Y, "y")
    codes = cluster_codes(df, cluster)
    rows = []
    parts = groups(df, by)
    values = {c: numeric_column(df, c) for c in dict.fromkeys([*xs, *ys])}
    for xc in xs:
        for yc in ys:
            for g, mask in parts:
                r = _correlate_one(values[xc][mask], values[yc][mask], codes[mask], n_resamples, seed, confidence)
                rows.append({"x": xc, "y": yc, "by": by, "group": g, **r})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ within prompt
def within_prompt(df: pd.DataFrame, x: str, y: str = "correct", *, cluster: str | Sequence[str] = "prompt_index",
                  n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Does the lower-x sample of a prompt tend to have the higher y?

    Uses every prompt with >= 2 non-null samples whose y values are not all equal. Over its sample pairs
    with different y, a pair scores 1 if the lower-x sample has the higher y, 0 if the lower-x sample has the
    lower y, 1/2 if their x are equal. ``concordance`` = mean pair score pooled over prompts (0.5 = no
    relation; > 0.5: the less certain sample is the better one when x is self-certainty), with a
    prompt-bootstrap interval (``irisbench.core.stats.bootstrap_ci``, prompts resampled with their pairs).
    ``spearman_mean``: the mean over prompts of the within-prompt Spearman(x, y) (prompts with constant x
    left out), with a prompt-bootstrap interval.
    """
    check_confidence(confidence)
    xv, yv = numeric_column(df, x), numeric_column(df, y)
    codes = cluster_codes(df, cluster)
    keep = ~(np.isnan(xv) | np.isnan(yv))
    out: dict[str, Any] = {"x": x, "y": y, "n_null": int((~keep).sum())}
    xv, yv, codes = xv[keep], yv[keep], codes[keep]
    pair_scores: list[np.ndarray] = []
    rhos: list[float] = []
    single = constant = 0
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0, True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        idx = order[a:b]
        px, py = xv[idx], yv[idx]
        if len(idx) < 2:
            single += 1
            continue
        if np.ptp(py) == 0:
            constant += 1
            continue
        i, j = np.triu_indices(len(idx), k=1)
        differ = py[i] != py[j]
        dx, dy = px[i][differ] - px[j][differ], py[i][differ] - py[j][differ]
        pair_scores.append(np.where(dx == 0, 0.5, (dx * dy < 0).astype(np.float64)))
        if np.ptp(px) > 0:
            rhos.append(float(sps.spearmanr(px, py)[0]))
    out.update(n_prompts_used=len(pair_scores), n_prompts_single_sample=single, n_prompts_constant_y=constant,
               n_pairs=int(sum(len(p) for p in pair_scores)), concordance=np.nan, concordance_ci_low=np.nan,
               concordance_ci_high=np.nan, n_prompts_spearman=len(rhos), spearman_mean=np.nan,
               spearman_ci_low=np.nan, spearman_ci_high=np.nan)
    if pair_scores:
        out["concordance"] = float(np.concatenate(pair_scores).mean())
        out["concordance_ci_low"], out["concordance_ci_high"] = bootstrap_ci(
            pair_scores, "mean", n_resamples=n_resamples, confidence=confidence, seed=seed)
    if rhos:
        out["spearman_mean"] = float(np.mean(rhos))
        out["spearman_ci_low"], out["spearman_ci_high"] = bootstrap_ci(
            [[r] for r in rhos], "mean", n_resamples=n_resamples, confidence=confidence, seed=seed)
    return out


# ------------------------------------------------------------------------------------------------ binned
def binned(df: pd.DataFrame, x: str, y: str = "correct", bins: int = 10, *,
           cluster: str | Sequence[str] = "prompt_index", n_resamples: int = 2000, seed: int = 0,
           confidence: float = 0.95) -> pd.DataFrame:
    """Mean y by quantile bin of x (deciles by default; fewer when x has ties), with prompt-bootstrap CIs.

    One row per bin: ``x, y, bin, x_low, x_high, x_mean, n_images, n_prompts, y_mean, ci_low, ci_high``;
    a bin's interval resamples the prompts that have images in it (keeping those images).
    """
    check_confidence(confidence)
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise AnalysisError(f"bins must be a positive integer, got {bins!r}")
    xv, yv = numeric_column(df, x), numeric_column(df, y)
    codes = cluster_codes(df, cluster)
    keep = ~(np.isnan(xv) | np.isnan(yv))
    xv, yv, codes = xv[keep], yv[keep], codes[keep]
    cols = ["x", "y", "bin", "x_low", "x_high", "x_mean", "n_images", "n_prompts", "y_mean", "ci_low", "ci_high"]
    if len(xv) == 0:
        return pd.DataFrame(columns=cols)
    labels = pd.qcut(xv, q=int(bins), labels=False, duplicates="drop")
    labels = np.zeros(len(xv), dtype=np.int64) if np.ptp(xv) == 0 else np.asarray(labels, dtype=np.int64)
    rows = []
    for b in np.unique(labels):
        m = labels == b
        bc = codes[m]
        clusters = [yv[m][bc == c] for c in np.unique(bc)]
        lo, hi = bootstrap_ci(clusters, "mean", n_resamples=n_resamples, confidence=confidence, seed=seed)
        rows.append({"x": x, "y": y, "bin": int(b), "x_low": float(xv[m].min()), "x_high": float(xv[m].max()),
                     "x_mean": float(xv[m].mean()), "n_images": int(m.sum()), "n_prompts": len(clusters),
                     "y_mean": float(yv[m].mean()), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=cols)


def prompt_means(df: pd.DataFrame, x: str, y: str = "correct", *, cluster: str | Sequence[str] = "prompt_index",
                 by: str | None = "tag") -> pd.DataFrame:
    """Per prompt: mean x and mean y over its images with non-null x and y (``cluster, by, n_images, x, y``)."""
    cols = [cluster] if isinstance(cluster, str) else list(cluster)
    frame = df[cols + ([by] if by and by in df.columns else [])].copy()
    frame["_x"], frame["_y"] = numeric_column(df, x), numeric_column(df, y)
    frame = frame.dropna(subset=["_x", "_y"])
    keys = cols + ([by] if by and by in df.columns else [])
    out = frame.groupby(keys, sort=False).agg(n_images=("_x", "size"), x=("_x", "mean"), y=("_y", "mean"))
    return out.reset_index().assign(x_col=x, y_col=y)


__all__ = ["ALL", "DEFAULT_X", "DEFAULT_Y", "binned", "correlate", "prompt_means", "weighted_stats",
           "within_prompt"]
