"""The paper's experiment in one command, on the embedded shapes world (the README's main job).

Stages, each resumable (re-running skips finished work: training resumes from its last checkpoint,
evaluations from their last record):

1. evaluate the shipped base and the reference bounds (``oracle``, ``random``) on every suite x split;
2. train each method from the base with GRPO (IRIS = ``nsc``, Intuitor's ``sc``, ``entropy``, and the
   external ``verifier`` baseline), evaluating every ``checkpoint_every`` steps on the **val** split;
3. for each method pick the checkpoint with the best val overall (ties: the earliest) and evaluate it on
   every suite x split; the last checkpoint is evaluated too (fixed-step results);
4. analyse (self-certainty vs quality, best-of-N, diversity, training dynamics, selection) and write the
   report (tables with CIs and deltas vs the base, plots, HTML gallery).

Checkpoints are never chosen on test. ``summary.md`` states the rule and gives both rows per method.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from irisbench.errors import UsageError

REFERENCE_POLICIES = ("oracle", "random")
README_BEGIN = "<!-- experiment:begin -->"
README_END = "<!-- experiment:end -->"


@dataclass
class ExperimentConfig:
    methods: dict[str, str] = field(default_factory=lambda: {
        "iris-nsc": "iris-shapes", "sc": "sc-shapes", "entropy": "entropy-shapes", "verifier": "verifier-shapes"})
    steps: int = 40
    checkpoint_every: int = 20
    suites: tuple[str, ...] = ("geneval", "compbench")
    splits: tuple[str, ...] = ("val", "test")
    val_images_per_prompt: int = 2  # in-training val evaluations (checkpoint selection)
    seed: int = 0
    train_overrides: dict[str, Any] = field(default_factory=dict)  # applied to every method
    references: tuple[str, ...] = REFERENCE_POLICIES
    base: str = "shapes-base"
    eval_limit: int | None = None  # smoke runs only: the first N prompts of each split
    threads: int | None = None  # torch threads (None: torch's default); 1 is faster on a busy machine
    eval_images_per_prompt: int | None = 2  # 2 per prompt keeps the whole experiment near 30 min on 2 cores
    device: str | None = None  # every evaluation and training run (irisbench.devices; None: cuda when available)


def _eval(policy: str, suite: str, split: str, out: Path, cfg: ExperimentConfig, console: Console) -> dict[str, Any]:
    from irisbench.evaluate import EvalOptions, evaluate

    console.print(f"[bold]eval[/] {policy} on {suite}/{split}")
    return evaluate(EvalOptions(policy=policy, suite=suite, split=split, seed=cfg.seed, limit=cfg.eval_limit,
                                images_per_prompt=cfg.eval_images_per_prompt, device=cfg.device), out)


def selected_steps(run: Path) -> tuple[int, int]:
    """(best-val step, last step) of a training run among its in-training val evaluations (ties: earliest),
    by ``irisbench.analysis.select_checkpoint``, the selection the analysis reports."""
    from irisbench.analysis.records import AnalysisError
    from irisbench.analysis.selection import select_checkpoint

    try:
        best = select_checkpoint(run, "best-val", test_split=None)["step"]
        last = select_checkpoint(run, "last", test_split=None)["step"]
    except AnalysisError as e:
        raise UsageError(f"{run}: no val evaluation to select a checkpoint with ({e})") from None
    return best, last


def run_experiment(out: str | Path, cfg: ExperimentConfig | None = None, *, console: Console | None = None,
                   publish_readme: Path | None = None) -> dict[str, Any]:
    from irisbench.devices import resolve_device
    from irisbench.policies.shapes_lm import SHIPPED_BASE
    from irisbench.runs import atomic_write_json, atomic_write_text
    from irisbench.train_config import resolve_config
    from irisbench.trainer import GRPOTrainer

    cfg = cfg or ExperimentConfig()
    cfg.device = resolve_device(cfg.device)  # one line before anything is written; recorded in summary.json
    console = console or Console()
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if cfg.base == "shapes-base" and not (SHIPPED_BASE / "model.safetensors").is_file():
        raise FileNotFoundError("the shipped shapes base checkpoint is missing; reinstall irisbench")
    evals: dict[str, dict[str, Path]] = {}  # label -> {"suite/split": folder}

    def evaluate_all(label: str, policy: str, root: Path, splits: tuple[str, ...] | None = None) -> None:
        for suite in cfg.suites:
            for split in splits or cfg.splits:
                folder = root / f"{suite}-{split}"
                _eval(policy, suite, split, folder, cfg, console)
                evals.setdefault(label, {})[f"{suite}/{split}"] = folder

    console.rule("[bold]1. base and reference policies")
    evaluate_all("base", cfg.base, out / "eval" / "base")
    for ref in cfg.references:
        evaluate_all(ref, ref, out / "eval" / ref)

    console.rule("[bold]2. GRPO training")
    train_runs: dict[str, Path] = {}
    for label, preset in cfg.methods.items():
        console.print(f"[bold]train[/] {label} ({preset})")
        overrides = {"policy": cfg.base, "steps": cfg.steps, "checkpoint_every": cfg.checkpoint_every,
                     "eval_every": cfg.checkpoint_every, "eval_split": "val",
                     "eval_images_per_prompt": cfg.val_images_per_prompt, "seed": cfg.seed,
                     **({"num_threads": cfg.threads} if cfg.threads else {}), **cfg.train_overrides}
        run = out / "train" / label
        GRPOTrainer(resolve_config(preset, overrides), run, progress=True, device=cfg.device).train()
        train_runs[label] = run

    console.rule("[bold]3. selected (best val) and last checkpoints on every suite and split")
    selection: dict[str, dict[str, int]] = {}
    for label, run in train_runs.items():
        best, last = selected_steps(run)
        selection[label] = {"best_val_step": best, "last_step": last}
        ckpts = run / "checkpoints"
        evaluate_all(f"{label} (best val)", str(ckpts / f"step-{best}"), out / "eval" / f"{label}-step-{best}")
        # the fixed-step result: the last checkpoint on test (the same folders when it is also the best on val)
        evaluate_all(f"{label} (last)", str(ckpts / f"step-{last}"), out / "eval" / f"{label}-step-{last}",
                     splits=("test",))

    console.rule("[bold]4. analysis and report")
    from irisbench.analysis import analyze_runs
    from irisbench.report import RunRef, build_report

    analysis_inputs = {f"{lab}|{key}": path for lab, d in evals.items() for key, path in d.items()
                       if key.endswith("/test")}
    analysis_inputs.update({f"train|{lab}": run for lab, run in train_runs.items()})
    named = {k.replace("/", "-").replace("|", "-").replace(" ", ""): v for k, v in analysis_inputs.items()}
    analysis = analyze_runs(named, out / "analysis", n_resamples=1000, seed=cfg.seed,
                            features=_clip_features({k: v for k, v in named.items() if not k.startswith("train")}))
    refs = [RunRef(lab, str(path)) for lab, d in evals.items() for path in d.values()]
    report = build_report(refs, out / "report", base="base", title="IRIS on the shapes world")
    elapsed = time.perf_counter() - started
    summary = {"config": asdict(cfg), "selection": selection, "evals": {k: {s: str(p) for s, p in d.items()}
                                                                        for k, d in evals.items()},
               "report": str(report["html"]), "analysis": analysis.get("runs", {}),
               "verdicts": report["verdicts"], "seconds": round(elapsed, 1)}
    atomic_write_json(out / "summary.json", summary)
    md = summary_markdown(evals, selection, report["verdicts"], train_runs, elapsed)
    atomic_write_text(out / "summary.md", md)
    console.print(summary_table(evals))
    console.print(f"summary: {out / 'summary.md'}\nreport: {report['html']}")
    if publish_readme is not None:
        publish(publish_readme, md, report, train_runs, out, evals)
    return summary


def _clip_features(runs: dict[str, Path]) -> dict[str, Any]:
    """Shapes-CLIP image features of every record of each eval run (record order), for diversity."""
    import numpy as np
    from PIL import Image

    from irisbench.analysis import load_records
    from irisbench.metrics.clip_score import default_clip

    clip, out = default_clip(), {}
    for name, folder in runs.items():
        df = load_records(folder)
        if "image" not in df or df["image"].isna().any():
            continue
        images = [np.asarray(Image.open(Path(folder) / rel).convert("RGB")) for rel in df["image"]]
        out[name] = clip.encode_images(images)
    return out


def _overall(folder: Path) -> tuple[float, float, float, dict[str, float]]:
    res = json.loads((folder / "results.json").read_text())
    o = res["scores"]["overall"]
    return o["score"], o["ci_low"], o["ci_high"], {t: v["score"] for t, v in res["scores"]["tags"].items()}


def summary_markdown(evals: dict[str, dict[str, Path]], selection: dict[str, dict[str, int]],
                     verdicts: list[str], train_runs: dict[str, Path], elapsed: float) -> str:
    keys = list(next(iter(evals.values())))
    lines = ["| run | " + " | ".join(f"{k} overall [95% CI]" for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for label, d in evals.items():
        cells = []
        for k in keys:
            if k not in d:
                cells.append("–")
                continue
            s, lo, hi, _ = _overall(d[k])
            cells.append(f"{s:.3f} [{lo:.3f}, {hi:.3f}]")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rule = ("Checkpoint rule: *best val* = the checkpoint with the best GenEval overall on the val split "
            "(ties: earliest), then reported on every split; *last* = the final step (fixed-step result). "
            "Test scores never choose a checkpoint.")
    sel = ", ".join(f"{k}: best val step {v['best_val_step']}, last step {v['last_step']}"
                    for k, v in selection.items())
    curves = []
    from irisbench.trainer import read_metrics

    for label, run in train_runs.items():
        rows = read_metrics(run)
        if rows:
            a, b = rows[0], rows[-1]
            curves.append(f"| {label} | {a['sc_image']:.3f} → {b['sc_image']:.3f} | "
                          f"{a['sc_text']:.3f} → {b['sc_text']:.3f} | {a.get('train_correct', float('nan')):.3f} → "
                          f"{b.get('train_correct', float('nan')):.3f} |")
    out = ["\n".join(lines), "", rule, "", f"Selected steps: {sel}.", ""]
    if curves:
        out += ["| method | image self-certainty (first → last step) | plan self-certainty | train accuracy |",
                "|---|---|---|---|", *curves, ""]
    out += ["Verdicts against the base (paired bootstrap over prompts):", ""]
    out += [f"- {v}" for v in verdicts]
    out += ["", f"Wall time: {elapsed / 60:.1f} min."]
    return "\n".join(out) + "\n"


def summary_table(evals: dict[str, dict[str, Path]]) -> Table:
    keys = list(next(iter(evals.values())))
    table = Table(title="overall scores (95% CI)")
    table.add_column("run", no_wrap=True)
    for k in keys:
        table.add_column(k, justify="right")
    for label, d in evals.items():
        row = []
        for k in keys:
            if k not in d:
                row.append("–")
                continue
            s, lo, hi, _ = _overall(d[k])
            row.append(f"{s:.3f} [{lo:.2f}, {hi:.2f}]")
        table.add_row(label, *row)
    return table


PUBLISHED = Path("results") / "experiment"  # beside the README: the published tables and plots (tracked)


def publish(readme: Path, md: str, report: dict[str, Any], train_runs: dict[str, Path], out: Path,
            evals: dict[str, dict[str, Path]] | None = None) -> dict[str, Path]:
    """Write the published experiment under ``results/experiment/`` beside the README (tidy score tables
    as CSV and Parquet, the plots) and replace the README's experiment block, whose images link there.
    Returns the tidy tables' paths (none without ``evals``)."""
    import shutil

    from irisbench.report.tidy import write_tidy

    text = readme.read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        return {}
    folder = readme.parent / PUBLISHED
    folder.mkdir(parents=True, exist_ok=True)
    tables = write_tidy(evals, folder, relative_to=out) if evals else {}  # run folders relative to `out`
    link = PUBLISHED.as_posix()
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
    block = f"{README_BEGIN}\n{md}\n" + "\n".join(images) + f"\n{README_END}"
    pattern = re.compile(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), re.S)
    readme.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")
    return tables


def _training_plot(train_runs: dict[str, Path], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from irisbench.trainer import read_metrics

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for label, run in train_runs.items():
        rows = read_metrics(run)
        steps = [r["step"] for r in rows]
        for ax, key in zip(axes, ("sc_image", "sc_text", "train_correct"), strict=True):
            ax.plot(steps, [r.get(key) for r in rows], label=label)
            ax.set_title(key)
            ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
