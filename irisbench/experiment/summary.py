"""An experiment's written results: ``summary.md``, the wall-time log, and the block and files it publishes
beside the README.

``irisbench.experiment.run`` runs the stages; this module turns their folders into text. ``summary.md`` holds the
scores table with CIs, the checkpoint rule, the selected steps, the seed-level deltas, the training curves,
the verdicts and a wall-time line naming the CPU. ``invocations.jsonl`` logs every invocation that reached its
summary, so a resumed experiment's wall time is their sum. ``publish`` rewrites the README's block for the
world (``readme_markers``) and copies tidy tables and plots under ``results/experiment[-<world>]/``;
``publish_to`` writes the same files and ``summary.md`` into any folder, the README left alone (an extended
experiment's publication, e.g. ``results/released-recipe/``).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from irisbench.evaluation.eval_run import RECORDS_PARQUET, EvalRun

INVOCATIONS = "invocations.jsonl"  # one line per invocation that reached its summary: wall seconds, CPU
README_BEGIN = "<!-- experiment:begin -->"
README_END = "<!-- experiment:end -->"
Evals = dict[str, dict[str, Path]]  # label -> {"suite/split": eval folder}
TrainRuns = dict[str, dict[int, Path]]  # method -> {training seed: run folder}


def log_invocation(out: Path, seconds: float, threads: int | None, jobs: int = 1) -> dict[str, Any]:
    """Append this invocation (wall seconds, CPU, processes and torch threads each, ISA overrides) to
    ``invocations.jsonl`` and return it with the totals over every invocation that got this far. A resumed
    experiment's wall time is the sum; an invocation stopped before its summary is not in the file (its
    training and evaluations are kept and not redone, so its time is missing from the total)."""
    import torch

    from irisbench.core.provenance import cpu_model, isa_overrides

    path = out / INVOCATIONS
    rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(seconds, 1), "cpu": cpu_model(),
           "capability": str(torch.backends.cpu.get_cpu_capability()),
           "threads": threads or torch.get_num_threads(), "jobs": jobs,
           "isa_env": isa_overrides()}
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {**rec, "invocations": len(rows), "total_seconds": round(sum(r["seconds"] for r in rows), 1)}


def _timing_line(elapsed: float, timing: dict[str, Any] | None) -> str:
    """The summary's wall-time line, naming the CPU it ran on."""
    if not timing:
        return f"Wall time: {elapsed / 60:.1f} min."
    isa = ", ".join(f"{k}={v}" for k, v in timing["isa_env"].items())
    where = (f"{timing['cpu']}, ATen capability {timing['capability']}{f' ({isa})' if isa else ''}, "
             f"{timing['threads']} torch thread{'s' if timing['threads'] != 1 else ''}")
    if timing.get("jobs", 1) > 1:
        where += f" in each of {timing['jobs']} processes"
    line = f"Wall time: {timing['seconds'] / 60:.1f} min on {where}"  # the logged seconds: summary.json agrees
    if timing["invocations"] > 1:
        line += (f"; {timing['total_seconds'] / 60:.1f} min over the {timing['invocations']} invocations that "
                 f"reached a summary ({INVOCATIONS})")
    return line + "."


def _overall(folder: Path) -> tuple[float, float, float, dict[str, float]]:
    res = EvalRun(folder).read_results(partial=True)
    o = res["scores"]["overall"]
    return o["score"], o["ci_low"], o["ci_high"], {t: v["score"] for t, v in res["scores"]["tags"].items()}


def images_per_prompt(folder: Path) -> int | None:
    """The images per prompt an eval run drew (its ``results.json``)."""
    return EvalRun(folder).read_results(partial=True).get("images_per_prompt")


def _score_rows(evals: Evals, ci_digits: int) -> tuple[list[str], list[tuple[str, list[str], str]], str]:
    """The ``suite/split`` keys, per run its overall score cells ("score [lo, hi]"; "–" where not run) and its
    images per prompt, and the table's words for them: "N images per prompt in every evaluation" when every run
    drew N, else "images per prompt in each row" (each row's count, e.g. the base's 8 and the checkpoints' 2;
    "2/8" where a row's evaluations differ)."""
    keys = list(next(iter(evals.values())))
    counts = {images_per_prompt(f) for d in evals.values() for f in d.values()}
    uniform = len(counts) == 1 and None not in counts
    rows = []
    for label, d in evals.items():
        cells = []
        for k in keys:
            if k not in d:
                cells.append("–")
                continue
            s, lo, hi, _ = _overall(d[k])
            cells.append(f"{s:.3f} [{lo:.{ci_digits}f}, {hi:.{ci_digits}f}]")
        mine = sorted({images_per_prompt(f) for f in d.values()}, key=lambda n: (n is None, n or 0))
        rows.append((label, cells, "/".join("?" if n is None else str(n) for n in mine)))
    (n,) = counts if uniform else (None,)
    return keys, rows, (f"{n} image{'s' if n != 1 else ''} per prompt in every evaluation" if uniform
                        else "images per prompt in each row")


def _scores_table(evals: Evals) -> list[str]:
    keys, rows, ipp = _score_rows(evals, 3)
    per_row = not ipp.endswith("every evaluation")
    lines = [f"Overall scores with 95% CIs (cluster bootstrap over prompts), {ipp}:", "",
             "| run | " + ("images per prompt | " if per_row else "")
             + " | ".join(f"{k} overall [95% CI]" for k in keys) + " |",
             "|---|" + "---|" * (len(keys) + per_row)]
    return lines + [f"| {label} | " + (f"{n} | " if per_row else "") + " | ".join(cells) + " |"
                    for label, cells, n in rows]


def _rules(seeds: tuple[int, ...], eval_seed: int, val_images_per_prompt: int | None = None) -> str:
    first, others = seeds[0], ", ".join(map(str, seeds[1:]))
    n = val_images_per_prompt
    val_n = f"{n} image{'s' if n != 1 else ''} per prompt; " if n else ""
    text = ("Checkpoint rule: for each method and training seed, *best val* = the checkpoint with the best "
            f"GenEval overall among the run's in-training val evaluations ({val_n}ties: earliest); *last* = the final "
            "step (fixed-step result). Test scores never choose a checkpoint. "
            f"Each method is trained once per training seed ({', '.join(map(str, seeds))}); every evaluation "
            f"uses evaluation seed {eval_seed}, so the base and each checkpoint are scored on the same prompts "
            "with the same sampling seeds (paired deltas). "
            f"Rows without a seed are training seed {first}: the only seed whose best-val checkpoint is also "
            "evaluated on the val split (the val columns), and the one the HTML report and its plots show")
    if others:
        text += f"; rows `sN` are training seed N ({others}), evaluated on test only"
    return text + "."


def _curves(train_runs: TrainRuns) -> list[str]:
    from irisbench.train.trainer import read_metrics

    nan = float("nan")
    curves = []
    for label, runs in train_runs.items():
        for seed, run in runs.items():
            rows = read_metrics(run)
            if rows:
                a, b = rows[0], rows[-1]
                curves.append(f"| {label} | {seed} | {a['sc_image']:.3f} → {b['sc_image']:.3f} | "
                              f"{a['sc_text']:.3f} → {b['sc_text']:.3f} | {a.get('train_correct', nan):.3f} → "
                              f"{b.get('train_correct', nan):.3f} |")
    if not curves:
        return []
    return ["| method | training seed | image self-certainty (first → last step) | plan self-certainty | "
            "train accuracy (the step's rollouts: num_generations per prompt) |", "|---|---|---|---|---|", *curves,
            ""]


def summary_markdown(evals: Evals, selection: dict[str, dict[str, dict[str, int]]], verdicts: list[str],
                     train_runs: TrainRuns, elapsed: float, *, entries: list[dict[str, Any]] | None = None,
                     seed_verdict_lines: list[str] | None = None, seeds: tuple[int, ...] = (0,),
                     eval_seed: int = 0, timing: dict[str, Any] | None = None,
                     vs_null: list[dict[str, Any]] | None = None, null_presets: dict[str, str] | None = None,
                     val_images_per_prompt: int | None = None, references: tuple[str, ...] = ("oracle", "random"),
                     curve: str = "", seen_unseen: list[dict[str, Any]] | None = None) -> str:
    """summary.md: the scores table, the rules, the selected steps, the seed-level deltas, each method's effect
    relative to the null control (``vs_null``: ``irisbench.report.null_control.null_comparisons``), the
    val curve (``curve``: ``irisbench.report.val_curve.curve_markdown``), the training curves and the verdicts
    (across seeds, vs the null, then the first seed's per-prompt ones). Every score and delta says how many
    images per prompt its evaluations drew."""
    from irisbench.report.null_control import null_markdown, null_verdicts
    from irisbench.report.seeds import images_per_prompt as entries_ipp
    from irisbench.report.seeds import seed_markdown

    sel = "; ".join(f"{m}: " + ", ".join(f"{k} best val step {v['best_val_step']} (last {v['last_step']})"
                                          for k, v in by_seed.items())
                    for m, by_seed in selection.items())
    out = ["\n".join(_scores_table(evals)), "", _rules(tuple(seeds), eval_seed, val_images_per_prompt), "",
           f"Selected steps: {sel}.", ""]
    if entries:
        out += [seed_markdown(entries)]
    if vs_null:
        out += [null_markdown(vs_null, null_presets)]
    if seen_unseen:
        from irisbench.report.seen_unseen import seen_markdown

        out += ["Seen vs unseen prompts (GenEval, best-val checkpoints): the delta against the base on RL-training "
                "texts (the seen split, 44 entries per tag) and on test texts no RL run trained on:", "",
                seen_markdown(seen_unseen), ""]
    if curve:
        out += [curve]
    out += _curves(train_runs)
    if seed_verdict_lines:
        out += ["Verdicts across training seeds (mean of the per-seed paired deltas on test, "
                f"{entries_ipp(entries or [])}, 95% Student-t interval across seeds, then the interval that adds "
                "the base's own sampling error):", "",
                *[f"- {v}" for v in seed_verdict_lines], ""]
    if vs_null:
        out += ["Verdicts relative to the null control (difference of across-seed means, 95% Welch t interval):", "",
                *[f"- {v}" for v in null_verdicts(vs_null)], ""]
    base_n = sorted({images_per_prompt(f) for lab, d in evals.items() if lab == "base" for f in d.values()} - {None})
    run_n = sorted({images_per_prompt(f) for lab, d in evals.items() if lab not in ("base", *references)
                    for f in d.values()} - {None})
    ipp = (f", the checkpoints {'/'.join(map(str, run_n))} and the base {'/'.join(map(str, base_n))} images per "
           "prompt" if run_n and base_n and run_n != base_n
           else f", {'/'.join(map(str, run_n or base_n))} images per prompt" if run_n or base_n else "")
    out += [f"Verdicts for training seed {seeds[0]} against the base (paired bootstrap over prompts{ipp}):", ""]
    out += [f"- {v}" for v in verdicts]
    out += ["", _timing_line(elapsed, timing)]
    return "\n".join(out) + "\n"


def summary_table(evals: dict[str, dict[str, Path]]) -> Table:
    keys, rows, ipp = _score_rows(evals, 2)
    per_row = not ipp.endswith("every evaluation")
    table = Table(title=f"overall scores (95% CI), {ipp}")
    table.add_column("run", no_wrap=True)
    if per_row:
        table.add_column("images per prompt", justify="right")
    for k in keys:
        table.add_column(k, justify="right")
    for label, cells, n in rows:
        table.add_row(label, *([n] if per_row else []), *cells)
    return table


PUBLISHED = Path("results") / "experiment"  # beside the README: the published tables and plots (tracked)


def readme_markers(world: str = "shapes") -> tuple[str, str]:
    """The README block an experiment on ``world`` rewrites (the shapes world's is the main job's)."""
    if world == "shapes":
        return README_BEGIN, README_END
    return f"<!-- experiment-{world}:begin -->", f"<!-- experiment-{world}:end -->"


def published_folder(world: str = "shapes") -> Path:
    """Where, beside the README, an experiment on ``world`` publishes its tables and plots (tracked)."""
    return PUBLISHED if world == "shapes" else PUBLISHED.with_name(f"experiment-{world}")
SEED_DELTAS = "seed_deltas.csv"
VS_NULL = "vs_null.csv"  # irisbench.report.null_control.VS_NULL
CURVE = "curve.csv"  # irisbench.report.val_curve.CURVE
SEEN_UNSEEN = "seen_unseen.csv"  # irisbench.report.seen_unseen
# the experiment folder's tables a publication copies as they are: (key, file, what the Markdown link says)
COPIED_TABLES = (
    ("seed_deltas", SEED_DELTAS, "Seed-level deltas (one row per method, checkpoint, suite, split and training "
                                 "seed, plus the mean across seeds)"),
    ("curve", CURVE, "Val curve (every in-training val evaluation of every method and training seed, the base at "
                     "step 0)"),
    ("vs_null", VS_NULL, "Each method relative to the null control (difference of across-seed means, Welch t "
                         "interval)"),
    ("seen_unseen", SEEN_UNSEEN, "Seen vs unseen prompts (per method, across seeds)"),
)


def publish(readme: Path, md: str, report: dict[str, Any], train_runs: TrainRuns, out: Path,
            evals: Evals | None = None, *, world: str = "shapes", runs: dict[str, dict[str, Any]] | None = None
            ) -> dict[str, Path]:
    """Write the published experiment under ``results/experiment/`` beside the README (tidy score tables
    as CSV and Parquet, ``seed_deltas.csv``, the plots) and replace the README's experiment block, whose
    images link there. Returns the tidy tables' paths (none without ``evals``; ``seed_deltas`` when the
    experiment folder has one). ``runs``: the tidy tables' method/checkpoint/seed/step per run label."""
    begin, end = readme_markers(world)
    text = readme.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        return {}
    published = published_folder(world)
    tables, images = _publish_files(readme.parent / published, published.as_posix(), report, train_runs, out,
                                    evals, runs)
    block = f"{begin}\n{md}\n" + "\n".join(images) + f"\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    readme.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")
    return tables


def publish_to(folder: Path, md: str, report: dict[str, Any], train_runs: TrainRuns, out: Path,
               evals: Evals | None = None, *, runs: dict[str, dict[str, Any]] | None = None) -> dict[str, Path]:
    """An extended experiment's publication, the README left alone: the files ``publish`` writes (tidy tables,
    per-image records, ``seed_deltas.csv``, ``vs_null.csv``, ``curve.csv``, the plots) and ``summary.md`` with
    links to them, all in ``folder`` (e.g. ``results/released-recipe``)."""
    from irisbench.core.records import atomic_write_text

    tables, images = _publish_files(Path(folder), ".", report, train_runs, out, evals, runs)
    atomic_write_text(Path(folder) / "summary.md", md + "\n" + "\n".join(images) + "\n")
    return {**tables, "summary": Path(folder) / "summary.md"}


def _publish_files(folder: Path, link: str, report: dict[str, Any], train_runs: TrainRuns, out: Path,
                   evals: Evals | None, runs: dict[str, dict[str, Any]] | None
                   ) -> tuple[dict[str, Path], list[str]]:
    """Write the published files into ``folder``; return their paths and the Markdown lines that link them
    (``link``: the folder as the Markdown sees it)."""
    import shutil

    from irisbench.report.tidy import write_records, write_tidy

    folder.mkdir(parents=True, exist_ok=True)
    tables = write_tidy(evals, folder, relative_to=out, runs=runs) if evals else {}  # run folders relative to `out`
    images = []
    for png in report.get("plots", []):
        target = folder / Path(png).name
        shutil.copyfile(png, target)
        images.append(f"![{target.stem}]({link}/{target.name})")
    if train_runs and _training_plot(train_runs, folder / "training_dynamics.png"):
        images.append(f"![training dynamics]({link}/training_dynamics.png)")
    if tables:
        images.append(f"Tidy tables (one row per run, suite, split and tag): [{link}/scores.csv]({link}/scores.csv), "
                      f"[{link}/scores.parquet]({link}/scores.parquet).")
    if evals:
        tables = {**tables, "records": write_records(evals, folder, runs=runs)}
        images.append(f"Per-image records of every evaluation above (score, prompt, sample and seed; any interval "
                      f"can be re-derived from them): [{link}/{RECORDS_PARQUET}]({link}/{RECORDS_PARQUET}).")
    for key, name, what in COPIED_TABLES:
        if (out / name).is_file():
            tables = {**tables, key: folder / name}
            shutil.copyfile(out / name, folder / name)
            images.append(f"{what}: [{link}/{name}]({link}/{name}).")
    return tables, images


def _training_plot(train_runs: TrainRuns, path: Path) -> bool:
    """Image self-certainty, plan self-certainty and train accuracy per step: one colour per method, one
    line per training seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from irisbench.train.trainer import read_metrics

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, runs) in enumerate(train_runs.items()):
        for j, run in enumerate(runs.values()):
            rows = read_metrics(run)
            steps = [r["step"] for r in rows]
            for ax, key in zip(axes, ("sc_image", "sc_text", "train_correct"), strict=True):
                ax.plot(steps, [r.get(key) for r in rows], color=colours[i % len(colours)], alpha=0.8, lw=1.2,
                        label=label if j == 0 else None)
                ax.set_title(key)
                ax.set_xlabel("step")
    axes[0].legend(fontsize=8, title="one line per seed", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
