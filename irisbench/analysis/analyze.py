"""``analyze_runs``: every analysis over a set of run folders, written as tidy tables, plots and a summary.

Eval run folders (``records.jsonl``) get correlations, within-prompt concordance, binned quality,
per-prompt means, best-of-N and diversity; training run folders (``train/metrics.jsonl``) get training
curves, evaluation curves and checkpoint selection. What does not apply is skipped and said so in the
summary's ``notes`` (e.g. a policy that draws no tokens has no self-certainty, hence no correlation).
A checkpoint evaluation inside a training run (``<run>/eval/<split>/step-N``) is itself an eval run folder
and can be passed as one.

Outputs in ``out_dir``: ``<table>.csv`` and ``<table>.parquet`` for each table, PNG plots, and
``summary.json`` (the dict returned: paths, notes and headline numbers per run).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irisbench.analysis import figures
from irisbench.analysis.bestofn import best_of_n_table
from irisbench.analysis.correlation import DEFAULT_X, DEFAULT_Y, binned, correlate, prompt_means, within_prompt
from irisbench.analysis.diversity import prompt_diversity, summarize_diversity
from irisbench.analysis.dynamics import eval_curves, eval_splits, training_dynamics
from irisbench.analysis.record_frames import (
    ALL,
    AnalysisError,
    RunDirs,
    as_runs,
    jsonable,
    load_records,
    numeric_column,
    resolve_columns,
    run_kind,
    safe_name,
)
from irisbench.analysis.selection import selection_table
from irisbench.core.errors import IrisbenchError
from irisbench.evaluation.eval_run import RECORDS, EvalRun

HEADLINE_X: tuple[str, ...] = ("sc_image", "sc_all", "sc_text", "entropy_image", "entropy_all", "entropy_text")


def _world(path: Path) -> str | None:
    import yaml

    try:
        cfg = yaml.safe_load(EvalRun(path).config_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    return cfg.get("world") if isinstance(cfg, dict) else None


def _overall(path: Path) -> dict[str, Any] | None:
    try:
        res = EvalRun(path).read_results(partial=True)
        o = res["scores"]["overall"]
        return {"score": o["score"], "ci_low": o.get("ci_low"), "ci_high": o.get("ci_high")}
    except (IrisbenchError, KeyError, TypeError):
        return None


def _with_values(df: pd.DataFrame, cols: list[str]) -> tuple[list[str], list[str]]:
    """Split columns into those with some non-null value and those entirely null."""
    have, empty = [], []
    for c in cols:
        (have if (~np.isnan(numeric_column(df, c))).any() else empty).append(c)
    return have, empty


def _ci(row: Mapping[str, Any], stat: str) -> dict[str, Any]:
    return {stat: row[stat], "ci_low": row[f"{stat}_ci_low"], "ci_high": row[f"{stat}_ci_high"]}


def _analyze_eval(name: str, path: Path, out: Path, tables: dict[str, list[pd.DataFrame]], notes: list[str],
                  plot_paths: list[str], x_cols: Sequence[str] | None, y_cols: Sequence[str] | None,
                  by: str | None, bins: int, features: np.ndarray | None, kw: dict[str, Any],
                  make_plots: bool) -> dict[str, Any]:
    df = load_records(path)
    by_run = by if by is not None and by in df.columns else None
    head: dict[str, Any] = {"kind": "eval", "path": str(path), "n_images": len(df)}
    overall = _overall(path)
    if overall:
        head["overall"] = overall
    ys, empty_y = _with_values(df, resolve_columns(df, y_cols, DEFAULT_Y, "quality (y)"))
    xs, empty_x = _with_values(df, resolve_columns(df, x_cols, DEFAULT_X, "uncertainty (x)"))
    if empty_y:
        notes.append(f"{name}: quality column(s) {empty_y} have no values; left out")
    if empty_x:
        notes.append(f"{name}: uncertainty column(s) {empty_x} have no values (the policy draws no tokens?)")
    if not xs or not ys:
        notes.append(f"{name}: no {'uncertainty' if not xs else 'quality'} values: correlation, within-prompt, "
                     "binned and best-of-N analyses skipped")
    else:
        corr = correlate(df, xs, ys, by=by_run, **kw)
        tables["correlation"].append(corr.assign(run=name))
        within = pd.DataFrame([within_prompt(df, x, y, **kw) for x in xs for y in ys]).assign(run=name)
        tables["within_prompt"].append(within)
        bin_t = pd.concat([binned(df, x, y, bins, **kw) for x in xs for y in ys], ignore_index=True)
        tables["binned"].append(bin_t.assign(run=name))
        means = pd.concat([prompt_means(df, x, ys[0], by=by_run) for x in xs], ignore_index=True)
        tables["prompt_means"].append(means.assign(run=name))
        bon = pd.concat([best_of_n_table(df, xs, y, by=by_run, **kw) for y in ys], ignore_index=True)
        tables["bestofn"].append(bon.assign(run=name))
        hx = next((x for x in HEADLINE_X if x in xs), xs[0])
        hy = ys[0]
        c = corr[(corr["x"] == hx) & (corr["y"] == hy) & (corr["group"] == ALL)].iloc[0]
        w = within[(within["x"] == hx) & (within["y"] == hy)].iloc[0]
        head.update(x=hx, y=hy, spearman=_ci(c, "spearman"), n_prompts=int(c["n_prompts"]),
                    within_prompt_concordance=_ci(w, "concordance"))
        b = bon[(bon["x"] == hx) & (bon["y"] == hy) & (bon["group"] == ALL)]
        if not b.empty:
            top = b[b["n"] == b["n"].max()]
            head["best_of_n"] = {r["select"]: {"n": int(r["n"]), **_ci(r, "gain"), "pick": r["pick"],
                                               "random": r["random"], "oracle": r["oracle"]}
                                 for _, r in top.iterrows()}
        if make_plots:
            tag = safe_name(name)
            plot_paths.append(str(figures.plot_binned(bin_t[bin_t["y"] == hy], out / f"binned_{tag}.png",
                                                    f"{name}: mean {hy} by decile")))
            plot_paths.append(str(figures.plot_prompt_scatter(means, out / f"prompt_scatter_{tag}.png", by_run,
                                                            f"{name}: per-prompt means")))
            plot_paths.append(str(figures.plot_bestofn(bon[bon["y"] == hy], out / f"bestofn_{tag}.png",
                                                     title=f"{name}: best-of-N by self-uncertainty")))
    per_prompt, div_notes = prompt_diversity(df, root=path, features=features, by=by_run,
                                             layouts=_world(path) in (None, "shapes"))
    notes += [f"{name}: {n}" for n in div_notes]
    per_prompt = per_prompt.assign(run=name)
    tables["diversity_prompts"].append(per_prompt)
    div = summarize_diversity(per_prompt, by=by_run, **kw)
    tables["diversity"].append(div)
    head["diversity"] = {r["metric"]: {"mean": r["mean"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
                         for _, r in div[div["group"] == ALL].iterrows()}
    return head


def _analyze_train(name: str, path: Path, out: Path, tables: dict[str, list[pd.DataFrame]], notes: list[str],
                   plot_paths: list[str], val_split: str, test_split: str, make_plots: bool) -> dict[str, Any]:
    head: dict[str, Any] = {"kind": "train", "path": str(path)}
    splits = eval_splits(path)
    curves = eval_curves({name: path})
    tables["eval_curves"].append(curves)
    split = val_split if val_split in splits else (splits[0] if splits else val_split)
    dyn = training_dynamics({name: path}, split)
    tables["dynamics"].append(dyn)
    if not dyn.empty:
        last = dyn.dropna(subset=[c for c in ("sc_image",) if c in dyn.columns]).tail(1)
        if not last.empty:
            head["last_step"] = {k: last.iloc[0][k] for k in ("step", "sc_text", "sc_image", "reward_mean")
                                 if k in last.columns}
    if val_split in splits and test_split in splits:
        try:
            sel = selection_table({name: path}, val_split=val_split, test_split=test_split)
        except AnalysisError as e:
            notes.append(f"{name}: checkpoint selection skipped ({e})")
        else:
            tables["selection"].append(sel)
            head["selection"] = {r["rule"]: {"step": int(r["step"]), "val_score": r["val_score"],
                                             "test_score": r["test_score"], "test_ci_low": r["test_ci_low"],
                                             "test_ci_high": r["test_ci_high"]} for _, r in sel.iterrows()}
    else:
        notes.append(f"{name}: checkpoint selection needs evaluations on both {val_split!r} and {test_split!r} "
                     f"(found splits {splits}); skipped")
    if make_plots and not dyn.empty:
        plot_paths.append(str(figures.plot_dynamics(dyn, out / f"dynamics_{safe_name(name)}.png", split,
                                                  title=f"{name}: training dynamics")))
    return head


def _write(frames: list[pd.DataFrame], out: Path, name: str) -> dict[str, str] | None:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    if "run" in df.columns:
        df = df[["run"] + [c for c in df.columns if c != "run"]]
    csv, parquet = out / f"{name}.csv", out / f"{name}.parquet"
    df.to_csv(csv, index=False)
    df.to_parquet(parquet, index=False)
    return {"csv": str(csv), "parquet": str(parquet), "rows": len(df)}


def analyze_runs(run_dirs: RunDirs, out_dir: str | Path, *, x_cols: Sequence[str] | None = None,
                 y_cols: Sequence[str] | None = None, by: str | None = "tag", bins: int = 10,
                 n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95, val_split: str = "val",
                 test_split: str = "test", features: Mapping[str, np.ndarray] | None = None,
                 make_plots: bool = True) -> dict[str, Any]:
    """Analyse eval and training runs into ``out_dir``; returns (and writes as summary.json) a summary dict.

    ``run_dirs``: folders (named by their shortest distinct path suffix) or a ``{name: folder}`` map.
    ``x_cols`` / ``y_cols``: uncertainty / quality columns (default: those of ``DEFAULT_X`` / ``DEFAULT_Y``
    present). ``features``: optional ``{run name: (n_images, d) array}`` for feature diversity.
    Summary: ``{"out_dir", "tables": {name: {csv, parquet, rows}}, "plots": [...], "notes": [...],
    "runs": {name: headline numbers}, "settings": {...}}``.
    """
    runs = as_runs(run_dirs)
    if not runs:
        raise AnalysisError("no run folders given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kw = {"n_resamples": n_resamples, "seed": seed, "confidence": confidence}
    names = ("correlation", "within_prompt", "binned", "prompt_means", "bestofn", "diversity_prompts",
             "diversity", "dynamics", "eval_curves", "selection")
    tables: dict[str, list[pd.DataFrame]] = {n: [] for n in names}
    notes: list[str] = []
    plot_paths: list[str] = []
    heads: dict[str, Any] = {}
    for name, path in runs.items():
        kind = run_kind(path)
        if kind == "eval":
            feats = None if features is None else features.get(name)
            heads[name] = _analyze_eval(name, path, out, tables, notes, plot_paths, x_cols, y_cols, by, bins,
                                        feats, kw, make_plots)
        elif kind == "train":
            heads[name] = _analyze_train(name, path, out, tables, notes, plot_paths, val_split, test_split,
                                         make_plots)
        else:
            raise AnalysisError(f"{path}: neither an eval run ({RECORDS}) nor a training run "
                                "(train/metrics.jsonl)")
    if make_plots and len(tables["dynamics"]) > 1:
        dyn = pd.concat([d for d in tables["dynamics"] if not d.empty], ignore_index=True)
        split_cols = [c for c in dyn.columns if c.endswith("_score")]
        split = split_cols[0][: -len("_score")] if split_cols else val_split
        plot_paths.append(str(figures.plot_dynamics(dyn, out / "dynamics.png", split)))
    written = {n: w for n in names if (w := _write(tables[n], out, n)) is not None}
    summary = jsonable({"out_dir": str(out), "tables": written, "plots": plot_paths, "notes": notes,
                        "runs": heads, "settings": {"by": by, "bins": bins, "val_split": val_split,
                                                    "test_split": test_split, **kw}})
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


__all__ = ["analyze_runs"]
