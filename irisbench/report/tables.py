"""The comparison table: runs x (suite/split, metric) with 95% CIs, deltas vs a base run, and verdicts.

``comparison_table`` returns a TIDY DataFrame, one row per (run, suite/split, metric) with the numbers of
each run's results.json (score, ci_low, ci_high, counts) and, against the base run, the delta with its
bootstrap interval (``irisbench.report.deltas``: paired over prompts when the prompt sets match, else
unpaired; the ``delta_mode`` column says which). ``wide_table`` pivots it to runs x metrics. Renderers
turn it into Markdown, CSV, LaTeX (booktabs) and rich tables; ``verdicts`` says in words, for each run on
each suite/split, whether it beats the base: "improves" only when the whole CI of the delta is above 0,
"is worse" when it is below 0, otherwise "does not improve". Incomplete runs (fewer images than expected)
are flagged in every rendering.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import pandas as pd

from irisbench.core.errors import UsageError
from irisbench.report.deltas import NO_CI, delta_cis
from irisbench.report.loading import LoadedRun, ReportError, RunRef, ensure_loaded

IMPROVES, NO_DIFFERENCE, WORSE, UNKNOWN = "improves", "no difference", "worse", "unknown"
INCOMPLETE = "INCOMPLETE"

TIDY_COLUMNS = ["label", "group", "suite", "split", "world", "metric", "score", "ci_low", "ci_high", "n_images",
                "n_prompts", "expected", "actual", "complete", "policy", "path", "is_base", "delta",
                "delta_ci_low", "delta_ci_high", "delta_mode", "delta_note", "delta_class", "cell", "delta_cell"]


# --------------------------------------------------------------------------------------------------
# formatting and words
# --------------------------------------------------------------------------------------------------

def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and x != x)


def fmt_ci(score: float, lo: float | None, hi: float | None, digits: int = 3) -> str:
    """``0.612 [0.590, 0.634]`` (or just ``0.612`` without an interval)."""
    if _missing(lo) or _missing(hi):
        return f"{score:.{digits}f}"
    return f"{score:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def fmt_delta(delta: float | None, lo: float | None, hi: float | None, digits: int = 3) -> str:
    """``+0.031 [+0.008, +0.054]``; ``+0.031 (no CI)`` without an interval; ``n/a`` without a delta."""
    if _missing(delta):
        return "n/a"
    if _missing(lo) or _missing(hi):
        return f"{delta:+.{digits}f} (no CI)"
    return f"{delta:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def delta_class(lo: float | None, hi: float | None) -> str:
    """IMPROVES if the interval is entirely above 0, WORSE if entirely below, else NO_DIFFERENCE."""
    if _missing(lo) or _missing(hi):
        return UNKNOWN
    if lo > 0:
        return IMPROVES
    if hi < 0:
        return WORSE
    return NO_DIFFERENCE


def base_words(base: str) -> str:
    return "the base" if base.strip().lower() == "base" else f"the base ({base})"


def verdict(label: str, delta: float | None, ci_low: float | None, ci_high: float | None, *, base: str = "base",
            scope: str = "", mode: str = "", confidence: float = 0.95, incomplete: bool = False) -> str:
    """One plain sentence on ``label`` vs the base, e.g.
    ``IRIS (nsc) does not improve on the base: delta -0.012 [-0.035, +0.011] (95% CI includes 0)``.
    ``scope`` (e.g. "geneval/test") and ``mode`` ("paired"/"unpaired") are added when given."""
    where = f" on {scope}" if scope else ""
    b = base_words(base)
    pct = f"{round(confidence * 100):g}%"
    how = f", {mode} bootstrap" if mode and mode != NO_CI else ""
    text = fmt_delta(delta, ci_low, ci_high)
    cls = delta_class(ci_low, ci_high)
    if _missing(delta):
        sentence = f"{label} cannot be compared with {b}{where}"
    elif cls == IMPROVES:
        sentence = f"{label} improves on {b}{where}: delta {text} ({pct} CI above 0{how})"
    elif cls == WORSE:
        sentence = f"{label} is worse than {b}{where}: delta {text} ({pct} CI below 0{how})"
    elif cls == NO_DIFFERENCE:
        sentence = f"{label} does not improve on {b}{where}: delta {text} ({pct} CI includes 0{how})"
    else:
        sentence = (f"{label}: no interval for the delta against {b}{where} (delta {text}); "
                    "cannot say whether it improves")
    if incomplete:
        sentence += f" [{INCOMPLETE} run: its scores cover only the images present]"
    return sentence


# --------------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------------

def _group_name(run: LoadedRun, worlds_per_suite_split: dict[tuple[str, str], set[str]]) -> str:
    name = f"{run.suite}/{run.split}"
    if len(worlds_per_suite_split[(run.suite, run.split)]) > 1:
        name += f" ({run.world})"
    return name


def comparison_table(runs: Sequence[RunRef | LoadedRun], base: str | None = None, *, n_resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Tidy comparison table (columns ``TIDY_COLUMNS``), one row per (run, suite/split, metric).

    ``runs``: refs to eval run folders (or already loaded runs); a label may have one folder per
    suite/split. ``base``: the label the others are compared with (None: no deltas). Scores and CIs are
    results.json's; deltas are ``run - base`` with ``n_resamples`` bootstrap replicates (see ``deltas``).
    ``df.attrs`` holds ``base``, ``confidence`` and ``labels`` (row order).
    """
    loaded = ensure_loaded(runs)
    labels = list(dict.fromkeys(r.label for r in loaded))
    if base is not None and base not in labels:
        raise ReportError(f"base {base!r} is not one of the run labels {labels}")
    worlds: dict[tuple[str, str], set[str]] = {}
    for r in loaded:
        worlds.setdefault((r.suite, r.split), set()).add(r.world)
    groups = list(dict.fromkeys(r.group for r in loaded))
    rows: list[dict[str, Any]] = []
    for g in groups:
        members = sorted((r for r in loaded if r.group == g), key=lambda r: labels.index(r.label))
        base_run = next((r for r in members if r.label == base), None)
        metrics = ["overall"] + list(dict.fromkeys(t for r in members for t in r.tags))
        for run in members:
            deltas = {}
            if base_run is not None and run is not base_run:
                deltas = delta_cis(base_run, run, n_resamples=n_resamples, confidence=confidence, seed=seed)
            scores = run.results["scores"]
            for m in metrics:
                entry = scores["overall"] if m == "overall" else scores["tags"].get(m)
                if entry is None:
                    continue
                d = deltas.get(m)
                row = {
                    "label": run.label, "group": _group_name(run, worlds), "suite": run.suite, "split": run.split,
                    "world": run.world, "metric": m, "score": float(entry["score"]),
                    "ci_low": entry.get("ci_low"), "ci_high": entry.get("ci_high"),
                    "n_images": entry.get("n_images"), "n_prompts": entry.get("n_prompts"),
                    "expected": run.counts["expected"], "actual": run.counts["actual"], "complete": run.complete,
                    "policy": run.policy_name, "path": str(run.path), "is_base": run is base_run,
                    "delta": d.delta if d else None, "delta_ci_low": d.ci_low if d else None,
                    "delta_ci_high": d.ci_high if d else None, "delta_mode": d.mode if d else None,
                    "delta_note": d.note if d else None,
                    "delta_class": delta_class(d.ci_low, d.ci_high) if d and d.delta is not None else None,
                }
                row["cell"] = fmt_ci(row["score"], row["ci_low"], row["ci_high"])
                row["delta_cell"] = fmt_delta(row["delta"], row["delta_ci_low"], row["delta_ci_high"]) if d else ""
                rows.append(row)
    df = pd.DataFrame(rows, columns=TIDY_COLUMNS)
    df.attrs.update(base=base, confidence=confidence, labels=labels, n_resamples=n_resamples)
    return df


def wide_table(tidy: pd.DataFrame, value: str = "cell") -> pd.DataFrame:
    """Runs x (group, metric) view of one tidy column (``cell``, ``score``, ``delta_cell``, ``delta`` ...)."""
    if value not in tidy.columns:
        raise UsageError(f"wide_table: no column {value!r} in the table (columns: {list(tidy.columns)})")
    wide = tidy.set_index(["label", "group", "metric"])[value].unstack(["group", "metric"])
    labels = list(dict.fromkeys(tidy["label"]))
    cols = list(dict.fromkeys(zip(tidy["group"], tidy["metric"], strict=True)))
    return wide.reindex(index=labels, columns=pd.MultiIndex.from_tuples(cols, names=["group", "metric"]))


def _runs_of(tidy: pd.DataFrame, group: str) -> pd.DataFrame:
    """One row per run of ``group`` (its overall row), in label order."""
    sub = tidy[(tidy["group"] == group) & (tidy["metric"] == "overall")]
    return sub.set_index("label", drop=False)


def verdicts(tidy: pd.DataFrame) -> list[dict[str, str]]:
    """``[{"label", "group", "class", "text"}]``: each non-base run vs the base, per suite/split (overall)."""
    base = tidy.attrs.get("base")
    if base is None:
        return []
    out = []
    for group in dict.fromkeys(tidy["group"]):
        runs = _runs_of(tidy, group)
        scope = group if tidy["group"].nunique() > 1 else ""
        for label, r in runs.iterrows():
            if label == base:
                continue
            if base not in runs.index:
                text = f"{label}: no base run ({base}) on {group} to compare with"
                out.append({"label": label, "group": group, "class": UNKNOWN, "text": text})
                continue
            cls = r["delta_class"] if r["delta_class"] else UNKNOWN
            text = verdict(label, r["delta"], r["delta_ci_low"], r["delta_ci_high"], base=base, scope=scope,
                           mode=r["delta_mode"] or "", confidence=tidy.attrs.get("confidence", 0.95),
                           incomplete=not r["complete"])
            out.append({"label": label, "group": group, "class": cls, "text": text})
    return out


def incomplete_warnings(tidy: pd.DataFrame) -> list[str]:
    """One loud line per incomplete run (fewer or more images than expected)."""
    out = []
    for group in dict.fromkeys(tidy["group"]):
        for label, r in _runs_of(tidy, group).iterrows():
            if not r["complete"]:
                out.append(f"{INCOMPLETE}: {label} on {group} has {r['actual']} of {r['expected']} expected images "
                           f"({r['path']}); its scores and deltas cover only what is present")
    return out


def images_cell(r: pd.Series) -> str:
    text = f"{r['actual']}/{r['expected']}"
    return text if r["complete"] else f"{text} {INCOMPLETE}"


def group_blocks(tidy: pd.DataFrame) -> list[dict[str, Any]]:
    """Per suite/split: header, score rows and delta rows as plain strings (shared by all renderers)."""
    base = tidy.attrs.get("base")
    blocks = []
    for group in dict.fromkeys(tidy["group"]):
        sub = tidy[tidy["group"] == group]
        metrics = list(dict.fromkeys(sub["metric"]))
        runs = _runs_of(tidy, group)
        scores, deltas = [], []
        for label, r in runs.iterrows():
            cells = sub[sub["label"] == label].set_index("metric")
            scores.append({"label": label, "complete": bool(r["complete"]), "images": images_cell(r),
                           "cells": [cells["cell"].get(m, "") for m in metrics]})
            if base is not None and label != base and base in runs.index:
                deltas.append({"label": label, "complete": bool(r["complete"]), "mode": r["delta_mode"] or "",
                               "cells": [cells["delta_cell"].get(m, "") for m in metrics],
                               "classes": [cells["delta_class"].get(m) for m in metrics]})
        blocks.append({"group": group, "metrics": metrics, "scores": scores, "deltas": deltas})
    return blocks


# --------------------------------------------------------------------------------------------------
# renderers
# --------------------------------------------------------------------------------------------------

def _md(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(tidy: pd.DataFrame, title: str | None = None) -> str:
    """Markdown: per suite/split a scores table, a deltas table and the verdicts; incomplete runs flagged."""
    conf = f"{round(tidy.attrs.get('confidence', 0.95) * 100):g}%"
    base = tidy.attrs.get("base")
    lines = [f"# {_md(title)}", ""] if title else []
    for w in incomplete_warnings(tidy):
        lines += [f"> **WARNING — {_md(w)}**", ""]
    verdict_list = verdicts(tidy)
    for b in group_blocks(tidy):
        head = ["run", "images", *b["metrics"]]
        lines += [f"## {_md(b['group'])}", "", f"Scores with {conf} cluster-bootstrap CIs (prompts resampled):", "",
                  "| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
        for s in b["scores"]:
            label = s["label"] + ("" if s["complete"] else f" ({INCOMPLETE})")
            lines.append("| " + " | ".join(_md(c) for c in [label, s["images"], *s["cells"]]) + " |")
        if b["deltas"]:
            dhead = ["run", "pairing", *b["metrics"]]
            lines += ["", f"Delta vs {_md(base_words(base))} ({conf} CI):", "",
                      "| " + " | ".join(_md(h) for h in dhead) + " |", "|" + "---|" * len(dhead)]
            for d in b["deltas"]:
                lines.append("| " + " | ".join(_md(c) for c in [d["label"], d["mode"], *d["cells"]]) + " |")
        vs = [v for v in verdict_list if v["group"] == b["group"]]
        if vs:
            lines += ["", "Verdicts:", ""] + [f"- {_md(v['text'])}" for v in vs]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render_csv(tidy: pd.DataFrame) -> str:
    """The tidy table as CSV (full-precision numbers plus the formatted ``cell``/``delta_cell`` strings)."""
    buf = io.StringIO()
    tidy.to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (``_`` -> ``\\_`` and friends)."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def render_latex(tidy: pd.DataFrame, caption: str | None = None) -> str:
    """LaTeX (booktabs): per suite/split one table, scores then deltas vs base; needs ``\\usepackage{booktabs}``."""
    conf = f"{round(tidy.attrs.get('confidence', 0.95) * 100):g}\\%"
    base = tidy.attrs.get("base")
    out = []
    for b in group_blocks(tidy):
        n = len(b["metrics"]) + 2
        cap = f"{caption} --- " if caption else ""
        out += ["\\begin{table}[t]", "\\centering", "\\small",
                f"\\caption{{{latex_escape(cap)}{latex_escape(b['group'])}: scores with {conf} CIs"
                + (f"; deltas vs {latex_escape(base)}" if b["deltas"] else "") + "}",
                "\\begin{tabular}{l" + "l" * (n - 1) + "}", "\\toprule",
                " & ".join(latex_escape(h) for h in ["run", "images", *b["metrics"]]) + " \\\\", "\\midrule"]
        for s in b["scores"]:
            label = latex_escape(s["label"]) + ("" if s["complete"] else "$^\\dagger$")
            images = latex_escape(s["images"]).replace(INCOMPLETE, f"\\textbf{{{INCOMPLETE}}}")
            out.append(" & ".join([label, images, *(latex_escape(c) for c in s["cells"])]) + " \\\\")
        if b["deltas"]:
            out += ["\\midrule", f"\\multicolumn{{{n}}}{{l}}{{\\emph{{$\\Delta$ vs {latex_escape(base)}}}}} \\\\"]
            for d in b["deltas"]:
                out.append(" & ".join([latex_escape(d["label"]), latex_escape(d["mode"]),
                                       *(latex_escape(c) for c in d["cells"])]) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}"]
        if any(not s["complete"] for s in b["scores"]):
            out.append(f"\\\\[2pt]{{\\footnotesize $^\\dagger$\\textbf{{{INCOMPLETE}}} run: fewer images than "
                       "expected.}")
        out += ["\\end{table}", ""]
    return "\n".join(out)


def render_rich(tidy: pd.DataFrame) -> Any:
    """A ``rich`` renderable (tables and verdict lines, one per line) for ``Console.print(render_rich(df))``."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    style = {IMPROVES: "green", WORSE: "red", NO_DIFFERENCE: "yellow", UNKNOWN: "dim", None: ""}
    base = tidy.attrs.get("base")
    out: list[Any] = [Text(w, style="bold red") for w in incomplete_warnings(tidy)]
    verdict_list = verdicts(tidy)
    for b in group_blocks(tidy):
        t = Table(title=f"{b['group']}: scores [95% CI]" + (f", delta vs {base}" if b["deltas"] else ""))
        for h in ["run", "images", *b["metrics"]]:
            t.add_column(h, overflow="fold")
        for s in b["scores"]:
            t.add_row(s["label"], s["images"], *s["cells"], style=None if s["complete"] else "bold red")
        if b["deltas"]:
            t.add_section()
            for d in b["deltas"]:
                cells = [Text(c, style=style.get(k, "")) for c, k in zip(d["cells"], d["classes"], strict=True)]
                t.add_row(f"Δ {d['label']}", d["mode"], *cells)
        out.append(t)
        for v in (v for v in verdict_list if v["group"] == b["group"]):
            out.append(Text(v["text"], style=style[v["class"]]))
    return Group(*out)
