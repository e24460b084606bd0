"""Each method's effect relative to the null control: the difference of across-seed means, Welch t interval.

A null control (``null-shapes``: the ``iris-shapes`` recipe with an N(0, 1) reward; ``null-shuffled-shapes``:
``nsc`` permuted within each group; ``irisbench.train.rewards``) is trained with the same lr, steps, training seeds and
evaluation as the methods, so "the method moved accuracy" can be told from "any uninformative reward at this
learning rate moves it as much". The comparison reads the seed-level entries (``irisbench.report.seeds``):
per training seed ``s``, a method's delta ``d_m,s = score(method, seed s) - score(base)`` and the null's
``d_0,s`` on the same suite, split and checkpoint kind, all evaluated with the same evaluation seed.

Arithmetic (also in docs/null-control.md). Seed ``s`` of the method and seed ``s`` of the null are different
trainings (they share the step's prompts and the first step's rollouts, nothing after the first update), so
there is no per-seed paired difference; the two sets of seeds are treated as independent samples:

- ``diff = mean_s(d_m,s) - mean_s(d_0,s)``; the base's score cancels (both deltas subtract the same base
  evaluation, at its own images per prompt), so its own sampling error is not part of the comparison and the
  seed tables' second interval, which carries it (``irisbench.report.seeds``: ``base_se``), has no counterpart
  here; ``images_per_prompt`` is the checkpoints' count;
- ``v_m = var(d_m) / n_m`` and ``v_0 = var(d_0) / n_0`` (sample variances, ``ddof=1``), ``se = sqrt(v_m + v_0)``;
- Welch-Satterthwaite ``df = (v_m + v_0)^2 / (v_m^2 / (n_m - 1) + v_0^2 / (n_0 - 1))``;
- interval ``diff +- t(0.975, df) * se`` (``irisbench.core.stats.welch_interval``, the interval of
  ``scipy.stats.ttest_ind(equal_var=False)``).

With 3 seeds a side ``df`` lies between 2 and 4, so the interval is wide: it says whether the method's effect
survives a new training seed *beyond* what the null does, not how large the effect is to two decimals. A shared
training seed, if anything, correlates a method's and the null's deltas positively, which makes this interval
wider than a paired one would be. Fewer than two seeds on a side give no interval.

``null_comparisons`` returns JSON-able rows (``summary.json``, ``vs_null.csv``), ``null_markdown`` the summary's
table and ``null_verdicts`` one sentence per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from irisbench.core.stats import welch_interval
from irisbench.report.seeds import images_per_prompt
from irisbench.report.tables import IMPROVES, NO_DIFFERENCE, UNKNOWN, WORSE, _missing, delta_class, fmt_delta

VS_NULL = "vs_null.csv"
NULL_COLUMNS = ("method", "null", "checkpoint", "suite", "split", "metric", "images_per_prompt", "method_mean",
                "null_mean", "diff", "ci_low", "ci_high", "se", "df", "n_method", "n_null", "interval")
WELCH = "Welch t, difference of across-seed means"


def null_comparisons(entries: Sequence[Mapping[str, Any]], nulls: Sequence[str],
                     confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per (null, non-null method, checkpoint kind, suite, split) present in ``entries``
    (``irisbench.report.seeds.seed_deltas``): the method's and the null's mean delta vs the base, their
    difference with a Welch t interval (``se``, ``df``, seed counts) and its ``class``."""
    out = []
    for null in nulls:
        by_key = {(e["checkpoint"], e["suite"], e["split"]): e for e in entries if e["method"] == null}
        for e in entries:
            ref = by_key.get((e["checkpoint"], e["suite"], e["split"]))
            if e["method"] in nulls or ref is None:
                continue
            a = [s["delta"] for s in e["seeds"] if not _missing(s["delta"])]
            b = [s["delta"] for s in ref["seeds"] if not _missing(s["delta"])]
            row = {"method": e["method"], "null": null, "checkpoint": e["checkpoint"], "suite": e["suite"],
                   "split": e["split"], "metric": e.get("metric", "overall"),
                   "images_per_prompt": e.get("images_per_prompt"), "interval": WELCH}
            if not a or not b:
                out.append({**row, "method_mean": None, "null_mean": None, "diff": None, "ci_low": None,
                            "ci_high": None, "se": None, "df": None, "n_method": len(a), "n_null": len(b),
                            "class": UNKNOWN})
                continue
            w = welch_interval(a, b, confidence)
            out.append({**row, "method_mean": w["mean_a"], "null_mean": w["mean_b"], "diff": w["diff"],
                        "ci_low": w["ci_low"], "ci_high": w["ci_high"], "se": w["se"], "df": w["df"],
                        "n_method": w["n_a"], "n_null": w["n_b"], "class": delta_class(w["ci_low"], w["ci_high"])})
    return out


def write_null_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """The comparisons as CSV (columns ``NULL_COLUMNS``, full precision, empty cells for missing values)."""
    import pandas as pd

    path = Path(path)
    df = pd.DataFrame([{c: r.get(c) for c in NULL_COLUMNS} for r in rows], columns=list(NULL_COLUMNS))
    df["images_per_prompt"] = df["images_per_prompt"].astype("Int64")
    df.to_csv(path, index=False)
    return path


def _diff_cell(r: Mapping[str, Any]) -> str:
    if _missing(r["diff"]):
        return "n/a"
    if _missing(r["ci_low"]):
        return f"{r['diff']:+.3f} (n/a: one seed on a side)"
    return fmt_delta(r["diff"], r["ci_low"], r["ci_high"])


def null_markdown(rows: Sequence[Mapping[str, Any]], presets: Mapping[str, str] | None = None,
                  confidence: float = 0.95) -> str:
    """The summary's table per null: method | checkpoint | suite | method's and null's mean delta vs the base |
    difference [Welch CI] | df | seeds."""
    pct, presets = f"{round(confidence * 100):g}%", presets or {}
    out: list[str] = []
    for null in dict.fromkeys(r["null"] for r in rows):
        mine = [r for r in rows if r["null"] == null]
        name = f"`{null}` ({presets[null]})" if null in presets else f"`{null}`"
        out += [f"Effect relative to the null control {name} on {mine[0]['split']}, {images_per_prompt(mine)}: "
                "each method's mean delta vs the base across training seeds minus the null's (the base cancels), "
                f"{pct} Welch t interval across seeds (the seeds of two methods are different trainings: no "
                "paired difference; arithmetic in docs/null-control.md)", "",
                f"| method | checkpoint | suite | method: mean delta vs base | {null}: mean delta vs base | "
                f"method − {null} [{pct} CI, Welch t] | df | seeds (method, null) |",
                "|---|---|---|---|---|---|---|---|"]
        for r in mine:
            df = "–" if _missing(r["df"]) else f"{r['df']:.1f}"
            means = [("n/a" if _missing(r[k]) else f"{r[k]:+.3f}") for k in ("method_mean", "null_mean")]
            out.append(f"| {r['method']} | {r['checkpoint']} | {r['suite']} | {means[0]} | {means[1]} | "
                       f"{_diff_cell(r)} | {df} | {r['n_method']}, {r['n_null']} |")
        out.append("")
    return "\n".join(out)


def null_verdict(r: Mapping[str, Any], confidence: float = 0.95) -> str:
    """One sentence on a comparison, e.g. ``iris-nsc (best val) is below the null control `null-random` on geneval/test
    (2 images per prompt): -0.052 [-0.090, -0.014] (95% Welch t interval below 0, df 3.4; 3 and 3 seeds)``."""
    pct = f"{round(confidence * 100):g}%"
    who, where = f"{r['method']} ({r['checkpoint']})", f"{r['suite']}/{r['split']}"
    ipp = f" ({images_per_prompt([r])})" if r.get("images_per_prompt") is not None else ""
    null = f"the null control `{r['null']}`"
    if _missing(r["diff"]):
        return f"{who} cannot be compared with {null} on {where}{ipp}"
    if _missing(r["ci_low"]):
        return (f"{who} vs {null} on {where}{ipp}: difference {r['diff']:+.3f}, no interval (fewer than 2 seeds "
                f"on a side: {r['n_method']} and {r['n_null']})")
    words = {IMPROVES: ("is above", "above 0"), WORSE: ("is below", "below 0"),
             NO_DIFFERENCE: ("cannot be told from", "includes 0")}[r["class"]]
    df = "df –" if _missing(r["df"]) else f"df {r['df']:.1f}"
    return (f"{who} {words[0]} {null} on {where}{ipp}: {_diff_cell(r)} ({pct} Welch t interval {words[1]}, {df}; "
            f"{r['n_method']} and {r['n_null']} seeds)")


def null_verdicts(rows: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> list[str]:
    return [null_verdict(r, confidence) for r in rows]
