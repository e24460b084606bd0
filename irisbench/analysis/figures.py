"""Matplotlib figures of the analysis tables (PNG, Agg canvas; no pyplot global state is touched).

Each function takes a tidy table made by this package and a path, draws one figure and returns the path:
quality by decile of self-certainty, per-prompt mean self-certainty vs accuracy, best-of-N gain vs N, and
training dynamics (self-certainty by modality beside validation accuracy — the paper's Figure 2 analogue).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def _figure(n_panels: int, *, width: float = 4.2, height: float = 3.4, sharex: bool = False):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(n_panels, 3)
    rows = -(-n_panels // cols)
    w, h = width * cols, height * rows + 0.5
    fig = Figure(figsize=(w, h))  # fixed margins: constrained layout would double the drawing time
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.75 / w, right=1 - 0.2 / w, bottom=0.6 / h, top=1 - 0.75 / h,
                        wspace=0.3, hspace=0.4)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=sharex).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _err(mean: pd.Series, lo: pd.Series, hi: pd.Series) -> np.ndarray:
    m, low, high = (np.asarray(v, dtype=np.float64) for v in (mean, lo, hi))
    return np.vstack([np.clip(m - low, 0, None), np.clip(high - m, 0, None)])


def plot_binned(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Mean quality by quantile bin of each x (one panel per x), with prompt-bootstrap intervals."""
    xs = list(dict.fromkeys(table["x"]))
    fig, axes = _figure(max(len(xs), 1))
    for ax, x in zip(axes, xs, strict=False):
        t = table[table["x"] == x]
        ax.errorbar(t["x_mean"], t["y_mean"], yerr=_err(t["y_mean"], t["ci_low"], t["ci_high"]), fmt="o-",
                    capsize=3)
        ax.set_xlabel(f"{x} (bin mean)")
        ax.set_ylabel(f"mean {t['y'].iloc[0]}")
        ax.grid(alpha=0.3)
    fig.suptitle(title or "quality by quantile bin of self-uncertainty (95% prompt-bootstrap CI)")
    return _save(fig, path)


def plot_prompt_scatter(table: pd.DataFrame, path: str | Path, by: str | None = "tag", title: str = "") -> Path:
    """Per-prompt mean x vs mean y (one panel per x column of ``prompt_means`` rows), coloured by group."""
    xs = list(dict.fromkeys(table["x_col"]))
    fig, axes = _figure(max(len(xs), 1))
    for ax, x in zip(axes, xs, strict=False):
        t = table[table["x_col"] == x]
        parts = list(t.groupby(by, sort=False)) if by and by in t.columns else [("all", t)]
        for g, part in parts:
            ax.scatter(part["x"], part["y"], s=9, alpha=0.6, label=str(g))
        ax.set_xlabel(f"prompt mean {x}")
        ax.set_ylabel(f"prompt mean {t['y_col'].iloc[0]}")
        ax.grid(alpha=0.3)
    if xs:
        axes[0].legend(fontsize=7, markerscale=1.5)
    fig.suptitle(title or "per-prompt mean self-uncertainty vs quality")
    return _save(fig, path)


def plot_bestofn(table: pd.DataFrame, path: str | Path, group: str = "all", title: str = "") -> Path:
    """Gain of the best-of-N' pick over a random pick vs N', one panel per selection direction."""
    t = table[table["group"] == group]
    selects = list(dict.fromkeys(t["select"]))
    fig, axes = _figure(max(len(selects), 1))
    for ax, sel in zip(axes, selects, strict=False):
        part = t[t["select"] == sel]
        for x, line in part.groupby("x", sort=False):
            ax.errorbar(line["n"], line["gain"], yerr=_err(line["gain"], line["gain_ci_low"], line["gain_ci_high"]),
                        fmt="o-", capsize=3, label=x)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xlabel("N (samples to choose from)")
        ax.set_ylabel(f"gain in mean {part['y'].iloc[0]} over random pick")
        ax.set_title(f"pick the {sel} x")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or f"best-of-N by self-uncertainty ({group}; 95% prompt-bootstrap CI)")
    return _save(fig, path)


def plot_dynamics(table: pd.DataFrame, path: str | Path, split: str = "val",
                  metrics: Sequence[str] = ("sc_image", "sc_text", "reward_mean"), title: str = "") -> Path:
    """Training metrics over steps (one panel each) beside the ``split`` overall score with its interval."""
    metrics = [m for m in metrics if m in table.columns and table[m].notna().any()]
    score = f"{split}_score"
    panels = metrics + ([score] if score in table.columns and table[score].notna().any() else [])
    fig, axes = _figure(max(len(panels), 1), sharex=True)
    for ax, m in zip(axes, panels, strict=False):
        for run, part in table.groupby("run", sort=False):
            part = part[part[m].notna()]
            if m == score:
                ax.plot(part["step"], part[m], "o-", label=str(run))
                lo, hi = part[f"{split}_ci_low"].astype(float), part[f"{split}_ci_high"].astype(float)
                ax.fill_between(part["step"], lo, hi, alpha=0.2)
            else:
                ax.plot(part["step"], part[m], label=str(run))
        ax.set_xlabel("step")
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
    if panels:
        axes[0].legend(fontsize=7)
    fig.suptitle(title or f"training dynamics (self-certainty by modality) and {split} accuracy (95% CI)")
    return _save(fig, path)


__all__ = ["plot_bestofn", "plot_binned", "plot_dynamics", "plot_prompt_scatter"]
