"""Best-of-N by self-uncertainty, with no external model: pick one of a prompt's N samples by its own x.

If a model's self-certainty (x) carries information about quality (y), picking among a prompt's samples
the one with the lowest (or highest) x should beat a random pick. For every prompt this module reports

- ``pick``: y of the sample with the lowest (``select="lowest"``) or highest x; when several samples tie
  on that x, the mean of their y (the expected value of a random tie-break);
- ``random``: the expected y of a uniformly random pick = the mean y of the prompt's samples;
- ``oracle``: the best y among them (an upper bound no selector can pass);

and averages them over prompts (each prompt weighs the same), overall and per group, with
prompt-bootstrap 95% intervals on each level and on the ``gain`` = pick - random (the resampling of
``irisbench.core.stats.bootstrap_ci`` — prompts drawn with replacement — with one set of draws per group
shared by all levels, so the gain's interval is that of a paired difference).

Sub-sampled N' < N: every subset of N' of a prompt's samples when there are at most ``max_subsets`` of
them (exact expectation), else ``n_random_subsets`` random subsets drawn once from a fixed seed and used
for every prompt with that N (samples of a prompt are exchangeable). A prompt enters the N' rows when it
has at least N' samples with non-null x and y.

When groups are given, a ``tag_mean`` row also averages the per-group levels with equal weight per group
(GenEval's overall is the unweighted mean of tag scores), its interval from a stratified bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from irisbench.analysis.record_frames import (
    ALL,
    AnalysisError,
    check_confidence,
    cluster_codes,
    groups,
    numeric_column,
    percentile_ci,
    resampled_weights,
)

LEVELS: tuple[str, ...] = ("pick", "random", "oracle", "gain")
TAG_MEAN = "tag_mean"
_LEVEL_COLUMNS = [f"{lv}{suffix}" for lv in LEVELS for suffix in ("", "_ci_low", "_ci_high")] + ["gain_of_oracle"]


def subsets(n: int, k: int, *, max_subsets: int = 256, n_random_subsets: int = 256,
            seed: int = 0) -> tuple[np.ndarray, str]:
    """Index sets of size ``k`` out of ``n`` samples, ``(M, k)``, and a description of how they were chosen."""
    if not 1 <= k <= n:
        raise AnalysisError(f"subset size must be in 1..{n}, got {k}")
    total = math.comb(n, k)
    if total <= max_subsets:
        return np.array(list(combinations(range(n), k)), dtype=np.int64).reshape(total, k), f"all {total}"
    rng = np.random.default_rng([seed, n, k])
    draws = np.argsort(rng.random((n_random_subsets, n)), axis=1)[:, :k]
    return np.sort(draws, axis=1), f"random {n_random_subsets} of {total}"


def pick_values(x: np.ndarray, y: np.ndarray, select: str = "lowest") -> np.ndarray:
    """``(..., k)`` arrays -> y of the lowest/highest-x sample along the last axis (ties: mean of their y)."""
    if select not in ("lowest", "highest"):
        raise AnalysisError(f"select must be 'lowest' or 'highest', got {select!r}")
    best = x.min(axis=-1, keepdims=True) if select == "lowest" else x.max(axis=-1, keepdims=True)
    chosen = x == best
    return (y * chosen).sum(axis=-1) / chosen.sum(axis=-1)


def _per_prompt(xm: np.ndarray, ym: np.ndarray, k: int, select: str, max_subsets: int, n_random_subsets: int,
                seed: int) -> tuple[dict[str, np.ndarray], str]:
    """Per-prompt levels for prompts with exactly ``xm.shape[1]`` samples, choosing ``k`` of them."""
    sub, how = subsets(xm.shape[1], k, max_subsets=max_subsets, n_random_subsets=n_random_subsets, seed=seed)
    xs, ys = xm[:, sub], ym[:, sub]  # (P, M, k)
    levels = {"pick": pick_values(xs, ys, select).mean(axis=1), "random": ys.mean(axis=(1, 2)),
              "oracle": ys.max(axis=2).mean(axis=1)}
    levels["gain"] = levels["pick"] - levels["random"]
    return levels, how


def _prompt_matrices(x: np.ndarray, y: np.ndarray, codes: np.ndarray,
                     order_key: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{N: (prompt codes, X (P, N), Y (P, N))} for prompts by their number of usable samples."""
    order = np.lexsort((order_key, codes))
    cs, xs, ys = codes[order], x[order], y[order]
    bounds = np.flatnonzero(np.r_[True, np.diff(cs) != 0, True])
    by_n: dict[int, list[int]] = {}
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        by_n.setdefault(int(b - a), []).append(int(a))
    out = {}
    for n, starts in by_n.items():
        idx = np.asarray(starts)[:, None] + np.arange(n)[None, :]
        out[n] = (cs[idx[:, 0]], xs[idx], ys[idx])
    return out


class _PromptBootstrap:
    """Prompt-bootstrap means of per-prompt values, with the draws shared by every column of one prompt set.

    The draws are those of ``irisbench.core.stats.bootstrap_replicates(statistic="mean")`` on one value per
    prompt (P prompts drawn with replacement), held as per-prompt counts so that all levels, x columns,
    selection directions and N' of one group reuse one set of draws: ``counts @ values / P``. Each group has
    its own stream (seed, group index), so groups are independent strata for the ``tag_mean`` row.
    """

    _CACHE_ELEMENTS = 1 << 24  # keep at most ~128 MB of counts per prompt set; beyond, redraw in chunks

    def __init__(self, n_resamples: int, seed: int):
        self.n_resamples, self.seed = n_resamples, seed
        self._cache: dict[tuple[int, bytes], list[np.ndarray]] = {}

    def replicates(self, group_index: int, prompts: np.ndarray, values: np.ndarray) -> np.ndarray:
        """(n_resamples, L) bootstrap means of ``values`` (P, L), one row per prompt of ``prompts``."""
        p = len(prompts)
        key = (group_index, np.asarray(prompts).tobytes())
        chunks = self._cache.get(key)
        if chunks is None:
            rng = np.random.default_rng([self.seed, group_index])
            chunks = resampled_weights(np.arange(p), p, self.n_resamples, rng)
            if p * self.n_resamples <= self._CACHE_ELEMENTS:
                chunks = self._cache.setdefault(key, list(chunks))
        return np.concatenate([c @ values / p for c in chunks], axis=0)


def _interval_row(levels: dict[str, float], reps: np.ndarray, confidence: float) -> dict[str, float]:
    row: dict[str, float] = {}
    for j, name in enumerate(LEVELS):
        row[name] = levels[name]
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = percentile_ci(reps[:, j], confidence)
    span = row["oracle"] - row["random"]
    row["gain_of_oracle"] = row["gain"] / span if span > 0 else np.nan
    return row


def best_of_n(df: pd.DataFrame, x: str | Sequence[str], y: str = "correct", *,
              select: str | Sequence[str] = "lowest", by: str | None = "tag", n_values: Sequence[int] | None = None,
              cluster: str | Sequence[str] = "prompt_index", max_subsets: int = 256, n_random_subsets: int = 256,
              n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Best-of-N' by ``x`` for N' in ``n_values`` (default 1..the largest N), overall and per ``by`` group.

    ``x`` / ``select``: one or several x columns / directions (``"lowest"``, ``"highest"``); an x column
    with no values at all is skipped. Returns a tidy frame, one row per (x, select, group, N'): ``x, y,
    select, by, group, n, n_prompts, n_prompts_short, n_null, subsets, {pick,random,oracle,gain}{,_ci_low,
    _ci_high}, gain_of_oracle`` (gain / (oracle - random): the share of the achievable improvement realised;
    NaN when oracle = random). ``n_prompts_short``: prompts left out of that row for having fewer than N'
    usable samples. Intervals of one group share their prompt draws (paired across levels and columns).
    """
    check_confidence(confidence)
    xs = [x] if isinstance(x, str) else list(x)
    selects = [select] if isinstance(select, str) else list(select)
    for s in selects:
        pick_values(np.zeros((1, 1)), np.zeros((1, 1)), s)  # validates the name
    if by is not None and by not in df.columns:
        by = None
    yv = numeric_column(df, y)
    codes = cluster_codes(df, cluster)
    n_rows = len(df)
    sample_key = numeric_column(df, "sample_index") if "sample_index" in df.columns else np.arange(n_rows, dtype=float)
    parts = groups(df, by)
    boot = _PromptBootstrap(n_resamples, seed)
    rows = []
    for xc in xs:
        xv = numeric_column(df, xc)
        if np.isnan(xv).all():
            continue
        keep = ~(np.isnan(xv) | np.isnan(yv))
        n_null = int((~keep).sum())
        matrices = {g: _prompt_matrices(xv[keep & m], yv[keep & m], codes[keep & m], sample_key[keep & m])
                    for g, m in parts}
        biggest = max((n for mats in matrices.values() for n in mats), default=0)
        ns = list(range(1, biggest + 1)) if n_values is None else sorted({int(n) for n in n_values})
        if any(n < 1 for n in ns):
            raise AnalysisError(f"n_values must be positive, got {list(n_values or [])}")
        for sel in selects:
            for k in ns:
                strata_levels, strata_reps, strata_prompts, strata_short = [], [], 0, 0
                for gi, (g, _) in enumerate(parts):
                    per: dict[str, list[np.ndarray]] = {lv: [] for lv in LEVELS}
                    prompts, hows, short = [], [], 0
                    for n, (pc, xm, ym) in sorted(matrices[g].items()):
                        if n < k:
                            short += len(xm)
                            continue
                        lv, how = _per_prompt(xm, ym, k, sel, max_subsets, n_random_subsets, seed)
                        hows.append(f"N={n}: {how}")
                        prompts.append(pc)
                        for name in LEVELS:
                            per[name].append(lv[name])
                    row: dict[str, Any] = {"x": xc, "y": y, "select": sel, "by": by, "group": g, "n": k,
                                           "n_prompts": 0, "n_prompts_short": short, "n_null": n_null,
                                           "subsets": "; ".join(hows)}
                    if not prompts:
                        rows.append({**row, **{c: np.nan for c in _LEVEL_COLUMNS}})
                        continue
                    values = np.stack([np.concatenate(per[name]) for name in LEVELS], axis=1)  # (P, 4)
                    reps = boot.replicates(gi, np.concatenate(prompts), values)
                    levels = dict(zip(LEVELS, values.mean(axis=0).tolist(), strict=True))
                    rows.append({**row, "n_prompts": len(values), **_interval_row(levels, reps, confidence)})
                    if g != ALL:
                        strata_levels.append(levels)
                        strata_reps.append(reps)
                        strata_prompts += len(values)
                        strata_short += short
                if by is not None and strata_levels:
                    levels = {name: float(np.mean([lv[name] for lv in strata_levels])) for name in LEVELS}
                    rows.append({"x": xc, "y": y, "select": sel, "by": by, "group": TAG_MEAN, "n": k,
                                 "n_prompts": strata_prompts, "n_prompts_short": strata_short, "n_null": n_null,
                                 "subsets": "unweighted mean of the groups",
                                 **_interval_row(levels, np.mean(strata_reps, axis=0), confidence)})
    return pd.DataFrame(rows)


def best_of_n_table(df: pd.DataFrame, x_cols: Sequence[str], y: str = "correct", *,
                    selects: Sequence[str] = ("lowest", "highest"), **kwargs: Any) -> pd.DataFrame:
    """``best_of_n`` for every x column and selection direction (x columns with no values are skipped)."""
    return best_of_n(df, list(x_cols), y, select=list(selects), **kwargs)


__all__ = ["LEVELS", "TAG_MEAN", "best_of_n", "best_of_n_table", "pick_values", "subsets"]
