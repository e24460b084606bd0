"""Report plots with matplotlib (object API on ``Figure``, no pyplot state, rendered by Agg).

- ``score_bars``: overall and per-tag scores per run, with the 95% CI as error bars (one suite/split).
- ``delta_forest``: each run's delta vs the base per metric with its CI and a line at 0.
- ``training_curves``: step vs metric(s), one line per run, from a DataFrame (e.g. train/metrics.parquet
  files concatenated with a run column).
- ``figure_png`` / ``save_figure``: PNG bytes or file (the HTML report embeds the bytes as base64).

Incomplete runs are hatched and labelled INCOMPLETE; deltas are coloured by verdict (green: CI above 0,
red: CI below 0, grey: CI includes 0).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irisbench.core.errors import UsageError
from irisbench.report.tables import IMPROVES, INCOMPLETE, WORSE

_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD"]


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _one_group(tidy: pd.DataFrame, group: str | None) -> tuple[str, pd.DataFrame]:
    groups = list(dict.fromkeys(tidy["group"]))
    if group is None:
        if len(groups) != 1:
            raise UsageError(f"the table has several suite/splits {groups}; pass group=")
        group = groups[0]
    if group not in groups:
        raise UsageError(f"group {group!r} is not in the table (groups: {groups})")
    return group, tidy[tidy["group"] == group]


def _err(values: pd.Series, lo: pd.Series, hi: pd.Series) -> np.ndarray:
    v = values.to_numpy(dtype=float)
    low = np.nan_to_num(v - lo.to_numpy(dtype=float), nan=0.0)
    high = np.nan_to_num(hi.to_numpy(dtype=float) - v, nan=0.0)
    return np.vstack([np.maximum(low, 0), np.maximum(high, 0)])


def score_bars(tidy: pd.DataFrame, group: str | None = None) -> Any:
    """Grouped bars: x = overall and tags, one bar per run, CI error bars. Returns a matplotlib Figure."""
    group, sub = _one_group(tidy, group)
    metrics = list(dict.fromkeys(sub["metric"]))
    labels = list(dict.fromkeys(sub["label"]))
    width = 0.8 / len(labels)
    fig = _figure(min(11.0, max(6.0, 1.0 * len(metrics) + 0.25 * len(labels) * len(metrics))), 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(metrics))
    for i, label in enumerate(labels):
        rows = sub[sub["label"] == label].set_index("metric").reindex(metrics)
        complete = bool(rows["complete"].dropna().all())
        name = label if complete else f"{label} ({INCOMPLETE})"
        ax.bar(x - 0.4 + width * (i + 0.5), rows["score"].to_numpy(dtype=float), width, label=name,
               color=_COLORS[i % len(_COLORS)], hatch=None if complete else "//", edgecolor="black", linewidth=0.4,
               yerr=_err(rows["score"], rows["ci_low"], rows["ci_high"]), capsize=2, error_kw={"linewidth": 0.8})
    ax.set_xticks(x, metrics, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (95% CI)")
    ax.set_title(f"{group}: scores")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(len(labels), 4), loc="upper center", bbox_to_anchor=(0.5, -0.28))
    return fig


def delta_forest(tidy: pd.DataFrame, group: str | None = None) -> Any:
    """Forest plot of deltas vs the base (one row per run x metric), CI whiskers, a vertical line at 0."""
    group, sub = _one_group(tidy, group)
    rows = sub[sub["delta"].notna()]
    if rows.empty:
        raise UsageError(f"no deltas to plot for {group} (no base, or no other run)")
    fig = _figure(6.0, max(2.0, 0.2 * len(rows) + 1.0))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    names = [f"{r.label} · {r.metric}" + ("" if r.complete else f" ({INCOMPLETE})") for r in rows.itertuples()]
    colors = ["#2e7d32" if c == IMPROVES else "#c62828" if c == WORSE else "#757575" for c in rows["delta_class"]]
    err = _err(rows["delta"], rows["delta_ci_low"], rows["delta_ci_high"])
    for yi, d, e0, e1, c, overall in zip(y, rows["delta"].to_numpy(dtype=float), err[0], err[1], colors,
                                         rows["metric"] == "overall", strict=True):
        ax.errorbar(d, yi, xerr=[[e0], [e1]], fmt="D" if overall else "o", color=c, capsize=2,
                    markersize=6 if overall else 4)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel(f"delta vs {tidy.attrs.get('base')} (95% CI)")
    ax.set_title(f"{group}: deltas vs base")
    ax.grid(axis="x", alpha=0.3)
    return fig


def training_curves(df: pd.DataFrame, y: str | Sequence[str], *, x: str = "step", run: str | None = "run",
                    title: str | None = None) -> Any:
    """One panel per ``y`` column, ``x`` on the horizontal axis, one line per value of the ``run`` column
    (``run=None``: the whole frame is one run). Rows with a missing value are skipped per panel."""
    ys = [y] if isinstance(y, str) else list(y)
    if not ys:
        raise UsageError("training_curves: give at least one metric column")
    missing = [c for c in [x, *ys, *([run] if run else [])] if c not in df.columns]
    if missing:
        raise UsageError(f"training_curves: column(s) {missing} not in the DataFrame (columns: {list(df.columns)})")
    fig = _figure(5.0 * min(len(ys), 3), 3.2 * ((len(ys) + 2) // 3))
    runs = list(dict.fromkeys(df[run])) if run else [None]
    for k, col in enumerate(ys):
        ax = fig.add_subplot((len(ys) + 2) // 3, min(len(ys), 3), k + 1)
        for i, name in enumerate(runs):
            part = df if name is None else df[df[run] == name]
            part = part[[x, col]].dropna().sort_values(x)
            ax.plot(part[x], part[col], label=None if name is None else str(name), color=_COLORS[i % len(_COLORS)],
                    linewidth=1.2)
        ax.set_xlabel(x)
        ax.set_ylabel(col)
        ax.grid(alpha=0.3)
        if run and k == 0:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Write the figure as PNG at ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(fig, dpi))
    return path
