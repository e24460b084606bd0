"""Seed-level deltas: each training seed's paired delta against the base, and their mean across seeds.

A method trained with several seeds gives one checkpoint per seed. For each (method, checkpoint kind, suite)
on a split (test), every seed's overall delta ``checkpoint - base`` comes with its paired cluster-bootstrap
interval over prompts (``irisbench.report.deltas.delta_cis``, the numbers of the report's delta tables);
the seeds' deltas are then averaged with a Student-t interval across seeds (n - 1 degrees of freedom,
``irisbench.core.stats.mean_t_interval``; none with one seed). The per-prompt interval measures how sure one
run's delta is; the across-seed interval measures whether the method's effect survives a new training seed.

The base is one evaluation shared by every seed (the experiment draws more images per prompt for it, 8 against
the checkpoints' 2): its own sampling error shifts every seed's delta alike, so the seeds' spread does not hold
it and the Student-t interval treats the base score as exact. A second interval carries it: with ``base_se`` the
analytic standard error of the base's overall score over its prompts (``irisbench.core.stats.stratified_se``: per tag
the variance of its mean over prompts, the overall score's ``sum(v_t) / T^2``), ``se = sqrt(s^2 / n + base_se^2)``
with Welch-Satterthwaite degrees of freedom capped at ``n - 1`` (``irisbench.core.stats.mean_t_interval_plus``: never
narrower than the Student-t interval). That ``base_se`` holds the base's prompt-to-prompt spread too, which the
checkpoints share (same prompts): the wider interval is the conservative one. Both are kept (``ci_low``,
``ci_high`` and ``ci_low_with_base``, ``ci_high_with_base``); the verdict's class is the Student-t one, and the
sentence says when the wider interval reaches 0 (arithmetic and a worked example in docs/null-control.md).

``seed_deltas`` returns JSON-able entries (summary.json), ``seed_rows`` the tidy rows of ``seed_deltas.csv``
(one per seed, plus one "mean" row per entry), ``seed_markdown`` the summary's tables and ``seed_verdicts``
one sentence per entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irisbench.core.errors import UsageError
from irisbench.report.loading import LoadedRun, RunRef, load_run
from irisbench.report.tables import IMPROVES, NO_DIFFERENCE, WORSE, _missing, base_words, delta_class, fmt_delta

SEED_COLUMNS = ("method", "checkpoint", "suite", "split", "metric", "seed", "step", "label", "delta", "ci_low",
                "ci_high", "interval", "n_seeds", "images_per_prompt", "base_images_per_prompt", "base_se",
                "ci_low_with_base", "ci_high_with_base", "se_with_base", "df_with_base")
MEAN = "mean"  # the ``seed`` of the across-seed rows of seed_deltas.csv
PER_PROMPT = "paired bootstrap over prompts"
ACROSS_SEEDS = "Student t across seeds (n-1 df)"


@dataclass(frozen=True)
class SeedEval:
    """One training seed's evaluated checkpoint of a method: ``folders`` maps "suite/split" to eval folders."""

    method: str
    checkpoint: str  # "best val" or "last"
    seed: int
    step: int
    label: str
    folders: Mapping[str, str | Path]


def _loader() -> Any:
    cache: dict[str, LoadedRun] = {}

    def load(label: str, folder: str | Path) -> LoadedRun:
        key = str(Path(folder).resolve())
        if key not in cache:
            cache[key] = load_run(RunRef(label, folder))
        return cache[key]

    return load


def _seed_entry(base: LoadedRun, run: LoadedRun, ev: SeedEval, kw: dict[str, Any]) -> dict[str, Any]:
    from irisbench.report.deltas import delta_cis

    d = delta_cis(base, run, **kw)["overall"]
    return {"seed": ev.seed, "step": ev.step, "label": ev.label, "delta": d.delta, "ci_low": d.ci_low,
            "ci_high": d.ci_high, "mode": d.mode, "class": delta_class(d.ci_low, d.ci_high),
            "images_per_prompt": run.results.get("images_per_prompt")}


def _across(per_seed: list[dict[str, Any]], confidence: float, base_se: Mapping[str, Any]) -> dict[str, Any]:
    """The mean of the seeds' deltas with its Student-t interval and the one that adds ``base_se``'s variance."""
    from irisbench.core.stats import mean_t_interval, mean_t_interval_plus

    values = [s["delta"] for s in per_seed if not _missing(s["delta"])]
    none = {"ci_low_with_base": None, "ci_high_with_base": None, "se_with_base": None, "df_with_base": None}
    if not values:
        return {"delta": None, "ci_low": None, "ci_high": None, "sd": None, "n_seeds": 0, "interval": ACROSS_SEEDS,
                **none}
    m = mean_t_interval(values, confidence)
    w = mean_t_interval_plus(values, base_se["se"], base_se["df"], confidence)
    return {"delta": m["mean"], "ci_low": m["ci_low"], "ci_high": m["ci_high"], "sd": m["sd"], "n_seeds": m["n"],
            "interval": ACROSS_SEEDS, "ci_low_with_base": w["ci_low"], "ci_high_with_base": w["ci_high"],
            "se_with_base": w["se"], "df_with_base": w["df"]}


def base_se(base: LoadedRun) -> dict[str, Any]:
    """``{"se", "df", "n_prompts", "n_tags"}``: the analytic standard error of the base's overall score over its
    prompts (``irisbench.core.stats.stratified_se`` of its per-prompt records); all None without records."""
    from irisbench.core.stats import stratified_se
    from irisbench.report.deltas import prompt_clusters

    if base.records is None:
        return {"se": None, "df": None, "n_prompts": None, "n_tags": None}
    clusters = prompt_clusters(base)
    return stratified_se({t: clusters[t] for t in base.results["scores"]["tags"] if t in clusters})


def seed_deltas(base: Mapping[str, str | Path], evals: Sequence[SeedEval], *, split: str = "test",
                n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> list[dict[str, Any]]:
    """One entry per (method, checkpoint kind, suite) on ``split``, in order of first appearance.

    ``base``: the base's eval folders ("suite/split" -> folder); ``evals``: every (method, kind, seed)
    checkpoint's. Each entry: ``method``, ``checkpoint``, ``suite``, ``split``, ``metric`` ("overall"),
    ``images_per_prompt`` (the checkpoints' evaluations'; None if they differ), ``base_images_per_prompt``,
    ``base_se`` and ``base_se_df`` (``base_se``), ``seeds`` (per seed: ``seed``, ``step``, ``label``,
    ``delta``, ``ci_low``, ``ci_high``, ``mode``, ``class``, ``images_per_prompt``), ``mean`` (``delta``,
    ``ci_low``, ``ci_high``, ``sd``, ``n_seeds``, ``interval``, and ``ci_low_with_base``, ``ci_high_with_base``,
    ``se_with_base``, ``df_with_base``; no interval with one seed), ``seeds_above_0``, ``seeds_below_0``,
    ``class`` (of the Student-t interval across seeds) and ``class_with_base`` (of the one with the base's error).
    ``n_resamples``/``seed`` are the bootstrap's (the report's defaults give the report's intervals).
    """
    load = _loader()
    kw = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    groups: dict[tuple[str, str, str], list[SeedEval]] = {}
    base_errors: dict[str, dict[str, Any]] = {}  # "suite/split" -> base_se of the base's evaluation
    suites = [k.split("/")[0] for k in base if k.endswith(f"/{split}")]
    for ev in evals:
        for suite in suites:
            if f"{suite}/{split}" in ev.folders:
                groups.setdefault((ev.method, ev.checkpoint, suite), []).append(ev)
    out = []
    for (method, kind, suite), members in groups.items():
        seeds = [ev.seed for ev in members]
        if len(set(seeds)) != len(seeds):
            raise UsageError(f"{method} ({kind}) on {suite}/{split}: a seed appears twice in {seeds}")
        key = f"{suite}/{split}"
        base_run = load("base", base[key])
        if key not in base_errors:
            base_errors[key] = base_se(base_run)
        per_seed = [_seed_entry(base_run, load(ev.label, ev.folders[key]), ev, kw) for ev in members]
        mean = _across(per_seed, confidence, base_errors[key])
        counts = {s["images_per_prompt"] for s in per_seed}
        out.append({"method": method, "checkpoint": kind, "suite": suite, "split": split, "metric": "overall",
                    "images_per_prompt": counts.pop() if len(counts) == 1 else None,
                    "base_images_per_prompt": base_run.results.get("images_per_prompt"),
                    "base_se": base_errors[key]["se"], "base_se_df": base_errors[key]["df"],
                    "seeds": per_seed, "mean": mean,
                    "seeds_above_0": sum(s["class"] == IMPROVES for s in per_seed),
                    "seeds_below_0": sum(s["class"] == WORSE for s in per_seed),
                    "class": delta_class(mean["ci_low"], mean["ci_high"]),
                    "class_with_base": delta_class(mean["ci_low_with_base"], mean["ci_high_with_base"])})
    return out


def seed_rows(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tidy rows (columns ``SEED_COLUMNS``): one per seed of each entry, then its across-seed "mean" row."""
    rows = []
    for e in entries:
        common = {"method": e["method"], "checkpoint": e["checkpoint"], "suite": e["suite"], "split": e["split"],
                  "metric": e["metric"], "base_images_per_prompt": e.get("base_images_per_prompt")}
        for s in e["seeds"]:
            rows.append({**common, "seed": s["seed"], "step": s["step"], "label": s["label"], "delta": s["delta"],
                         "ci_low": s["ci_low"], "ci_high": s["ci_high"], "interval": PER_PROMPT, "n_seeds": 1,
                         "images_per_prompt": s.get("images_per_prompt")})
        m = e["mean"]
        rows.append({**common, "seed": MEAN, "step": None, "label": None, "delta": m["delta"], "ci_low": m["ci_low"],
                     "ci_high": m["ci_high"], "interval": m["interval"],
                     "n_seeds": m["n_seeds"], "images_per_prompt": e.get("images_per_prompt"),
                     "base_se": e.get("base_se"), **{k: m.get(k) for k in ("ci_low_with_base", "ci_high_with_base",
                                                                           "se_with_base", "df_with_base")}})
    return [{c: r.get(c) for c in SEED_COLUMNS} for r in rows]


def write_seed_csv(entries: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write ``seed_rows(entries)`` as CSV (full precision; empty cells for missing values)."""
    import pandas as pd

    path = Path(path)
    df = pd.DataFrame(seed_rows(entries), columns=list(SEED_COLUMNS))
    df["step"] = df["step"].astype("Int64")  # integers, empty on the "mean" rows
    for col in ("images_per_prompt", "base_images_per_prompt"):
        df[col] = df[col].astype("Int64")
    df.to_csv(path, index=False)
    return path


def images_per_prompt(entries: Sequence[Mapping[str, Any]]) -> str:
    """``2 images per prompt`` (``2/8 images per prompt`` when the entries' evaluations differ), then
    ``, the base 8`` when the base drew another number (``base_images_per_prompt``)."""
    def words(values: list[int]) -> str:
        return f"{'/'.join(map(str, values))} image{'s' if values != [1] else ''} per prompt"

    values = sorted({v for e in entries for v in (e.get("images_per_prompt"),
                                                  *(s.get("images_per_prompt") for s in e.get("seeds", ())))
                     if v is not None})
    base = sorted({e["base_images_per_prompt"] for e in entries if e.get("base_images_per_prompt") is not None})
    if not values:
        return f"the base {words(base)}" if base else "images per prompt not recorded"
    return words(values) + (f", the base {'/'.join(map(str, base))}" if base and base != values else "")


def _mean_cell(m: Mapping[str, Any], with_base: bool = False) -> str:
    if _missing(m["delta"]):
        return "n/a"
    if m["n_seeds"] < 2:
        return f"{m['delta']:+.3f} (n/a: one seed)"
    lo, hi = (m.get("ci_low_with_base"), m.get("ci_high_with_base")) if with_base else (m["ci_low"], m["ci_high"])
    return "n/a" if _missing(lo) else fmt_delta(m["delta"], lo, hi)


def base_arithmetic(entries: Sequence[Mapping[str, Any]]) -> str:
    """The one line saying how the interval with the base's error is computed, with each suite's ``base_se``."""
    ses = {f"{e['suite']}/{e['split']}": e.get("base_se") for e in entries}
    known = ", ".join(f"{k} {v:.4f}" for k, v in ses.items() if not _missing(v)) or "n/a (no per-image records)"
    n = sorted({e["base_images_per_prompt"] for e in entries if e.get("base_images_per_prompt") is not None})
    ipp = f" at {'/'.join(map(str, n))} image{'s' if n != [1] else ''} per prompt" if n else ""
    return ("With the base's error: the base is one evaluation shared by every seed, so its sampling error is not "
            "in the seeds' spread; se = sqrt(s²/n + base_se²) with Welch–Satterthwaite df capped at n − 1 (never "
            "narrower than the Student-t interval), where s is the sd of the per-seed deltas, n the seeds and "
            "base_se the analytic standard error of the base's overall score "
            f"over its prompts{ipp} (per tag the variance of its mean over prompts; conservative: it includes the "
            f"prompt spread the checkpoints share); base_se: {known}.")


def _seeds_cell(e: Mapping[str, Any], sep: str) -> str:
    return sep.join(f"s{s['seed']}: {fmt_delta(s['delta'], s['ci_low'], s['ci_high'])}" for s in e["seeds"])


def seed_markdown(entries: Sequence[Mapping[str, Any]], confidence: float = 0.95) -> str:
    """One Markdown table per checkpoint kind: method | suite | per-seed deltas | mean across seeds | counts."""
    pct = f"{round(confidence * 100):g}%"
    out = []
    for kind in dict.fromkeys(e["checkpoint"] for e in entries):
        rows = [e for e in entries if e["checkpoint"] == kind]
        split = rows[0]["split"]
        out += [f"*{kind}* checkpoints on {split}, {images_per_prompt(rows)}: delta vs the base (overall) per "
                "training seed and across seeds",
                "",
                f"| method | suite | per-seed deltas [{pct} CI over prompts, paired] | "
                f"mean across seeds [{pct} CI across seeds, Student t] | the same with the base's error "
                f"[{pct} CI, t with df ≤ n − 1] | seeds with CI above 0 / below 0 |",
                "|---|---|---|---|---|---|"]
        for e in rows:
            counts = f"{e['seeds_above_0']} / {e['seeds_below_0']} of {len(e['seeds'])}"
            out.append(f"| {e['method']} | {e['suite']} | {_seeds_cell(e, '<br>')} | {_mean_cell(e['mean'])} "
                       f"| {_mean_cell(e['mean'], with_base=True)} | {counts} |")
        out += ["", base_arithmetic(rows), ""]
    return "\n".join(out)


def seed_verdict(e: Mapping[str, Any], base: str = "base", confidence: float = 0.95) -> str:
    """One sentence on an entry, from its across-seed interval (none with one seed), with each seed's delta."""
    pct = f"{round(confidence * 100):g}%"
    who, where, b = f"{e['method']} ({e['checkpoint']})", f"{e['suite']}/{e['split']}", base_words(base)
    m, n = e["mean"], e["mean"]["n_seeds"]
    if e.get("images_per_prompt") is not None or e.get("base_images_per_prompt") is not None:
        where += f" ({images_per_prompt([e])})"
    each = f"each seed: {_seeds_cell(e, '; ')}"
    counts = f"{e['seeds_above_0']} of {len(e['seeds'])} seeds' CIs above 0, {e['seeds_below_0']} below"
    if _missing(m["delta"]):
        return f"{who} cannot be compared with {b} on {where} ({each})"
    if n < 2:
        return (f"{who} on {where}: one training seed, no interval across seeds (n/a): "
                f"delta {m['delta']:+.3f} ({each})")
    text = fmt_delta(m["delta"], m["ci_low"], m["ci_high"])
    words = {IMPROVES: (f"improves on {b}", "above 0"), WORSE: (f"is worse than {b}", "below 0"),
             NO_DIFFERENCE: (f"does not improve on {b}", "includes 0")}[e["class"]]
    wider = ""
    if not _missing(m.get("ci_low_with_base")):
        inside = {IMPROVES: "above 0", WORSE: "below 0", NO_DIFFERENCE: "includes 0"}[e["class_with_base"]]
        wider = (f"; with the base's own error (se {e['base_se']:.4f}): {_mean_cell(m, with_base=True)}, "
                 f"{'also ' if e['class_with_base'] == e['class'] else ''}{inside}")
    return (f"{who} {words[0]} on {where} across {n} seeds: mean delta {text} ({pct} t-interval across seeds "
            f"{words[1]}{wider}); {each}; {counts}")


def seed_verdicts(entries: Sequence[Mapping[str, Any]], base: str = "base", confidence: float = 0.95) -> list[str]:
    return [seed_verdict(e, base, confidence) for e in entries]
