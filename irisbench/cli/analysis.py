"""Reading results: ``analyze`` (self-uncertainty vs quality), ``report`` (comparison tables, plots, HTML)
and ``probe`` (reward-quality alignment before training).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from irisbench.cli.options import (
    DeviceOption,
    PolicyOptions,
    ResamplesOption,
    SamplingOptions,
    SeedOption,
    command,
    option,
)
from irisbench.cli.shared import Command, app, console, default_out, guard, refuse_run_folder
from irisbench.core.errors import UsageError, parse_named


@dataclass(kw_only=True)
class AnalyzeArgs(ResamplesOption, SeedOption):
    runs: list[str] = option(..., "Eval or training run folders, as NAME=PATH or PATH.", argument=True)
    out: Path | None = option(None, "Analysis folder (default: a new folder under results/runs/).")
    plots: bool = option(True, "Write PNG plots.")


@command("analyze", AnalyzeArgs)
def analyze_cmd(args: AnalyzeArgs) -> None:
    """Self-uncertainty vs quality: correlations, within-prompt concordance, best-of-N by self-certainty,
    diversity, training dynamics and val-based checkpoint selection, as tidy tables and plots."""

    def body() -> None:
        from irisbench.analysis import analyze_runs

        refuse_run_folder(args.out, "analyze")
        named = {}
        for item in args.runs:
            name, path = parse_named(item)
            named[name or Path(path).name] = path
        target = args.out or default_out("analysis")
        summary = analyze_runs(named, target, n_resamples=args.n_resamples, seed=args.seed, make_plots=args.plots)
        table = Table(title="tables written")
        table.add_column("table")
        table.add_column("rows", justify="right")
        table.add_column("csv")
        for name, info in summary["tables"].items():
            if info:
                table.add_row(name, str(info.get("rows", "")), str(info.get("csv", "")))
        console.print(table)
        for note in summary["notes"]:
            console.print(f"[yellow]note:[/] {note}")
        console.print(f"analysis folder: {target}")

    guard(body)


@app.command("report", cls=Command)
def report_cmd(
    runs: list[str] = typer.Argument(..., help="Eval run folders as LABEL=PATH (or PATH: the folder name is the "
                                               "label). Give one label several times for several suites/splits."),
    base: str = typer.Option(None, help="The label deltas are computed against (default: none)."),
    out: Path = typer.Option(None, help="Report folder (default: a new folder under results/runs/)."),
    title: str = typer.Option("irisbench report", help="Report title."),
    gallery_prompts: int = typer.Option(24, help="Prompts shown side by side in the HTML gallery."),
) -> None:
    """Comparison tables (terminal, Markdown, CSV, LaTeX) with CIs and deltas, plots and an HTML gallery."""

    def body() -> None:
        from irisbench.report import RunRef, build_report, render_rich

        refuse_run_folder(out, "report")
        refs = []
        for item in runs:
            label, path = parse_named(item)
            refs.append(RunRef(label or Path(path).name, path))
        target = out or default_out("report")
        paths = build_report(refs, target, base=base, title=title, gallery_prompts=gallery_prompts)
        console.print(render_rich(paths["table"]))
        console.print(f"report: {paths['html']}")

    guard(body)


@dataclass(kw_only=True)
class ProbeArgs(ResamplesOption, DeviceOption, SamplingOptions, SeedOption, PolicyOptions):
    suite: str = option("geneval", "Suite whose prompts to probe.")
    split: str | None = option(None, "Split of the suite's prompts (default: val in the shapes world, never test for "
                                     "choosing a method; the suite's own elsewhere).")
    prompts_file: Path | None = option(None, "Official-format prompts replacing the suite's (GenEval metadata JSONL, "
                                             "or the T2I-CompBench folder), as eval --prompts.")
    g: int = option(8, "Rollouts per prompt (the GRPO group size).", "--g")
    rewards: str | None = option(None, "Comma-separated reward names (default: nsc, nsc-balanced, sc, entropy, "
                                       "verifier, clip in the shapes world; the intrinsic ones elsewhere).")
    n_prompts: int = option(48, "Prompts to probe (0: all), spread evenly over the tags.", "--prompts")
    clip_model: str | None = option(None, "CLIP for rho(adv, clip) and the clip reward (default: the shipped "
                                          "shapes-clip in the shapes world; an open_clip backbone elsewhere).")
    clip_pretrained: str | None = option(None, "Local weights (.safetensors) of --clip-model.")
    out: Path | None = option(None, "Output folder (default: a new folder under results/runs/).")


@command("probe", ProbeArgs)
def probe_cmd(args: ProbeArgs) -> None:
    """Reward-quality alignment before training: do a reward's GRPO advantages favour correct images?
    --seed also picks the prompt subset."""

    def body() -> None:
        from irisbench.core.devices import device_record, resolve_device
        from irisbench.core.provenance import env_info
        from irisbench.core.runs import RunDir
        from irisbench.policies import load_policy
        from irisbench.suites import load_suite, resolve_prompts
        from irisbench.train.alignment import probe_alignment, shapes_judge_and_count, write_outputs

        a = args
        policy = a.policy or "shapes-base"
        where = resolve_device(a.device)  # before anything is loaded or written: one line if unusable
        pol = load_policy(policy, a.model, device=where)
        world = getattr(pol, "world", "shapes")
        shapes = world == "shapes"
        if not shapes and a.clip_model is None:
            raise UsageError(f"policy {policy!r} draws in the {world!r} world, which has no judge of correctness: "
                             "the probe then compares the advantages with a CLIP score; give --clip-model and "
                             "--clip-pretrained (an open_clip backbone and its local weights)")
        default = "nsc,nsc-balanced,sc,entropy,verifier,clip" if shapes else "nsc,nsc-balanced,sc,entropy"
        names = [r.strip() for r in (a.rewards or default).split(",") if r.strip()]
        split_used = a.split or ("val" if shapes else None)
        items, prov = resolve_prompts(load_suite(a.suite), world, split_used, a.prompts_file)
        if a.n_prompts:
            items = _even_subset(items, a.n_prompts, a.seed)
        judge, count = shapes_judge_and_count() if shapes else (None, None)
        clip_options = {k: v for k, v in (("model", a.clip_model), ("pretrained", a.clip_pretrained)) if v is not None}
        clip = _probe_clip(clip_options, where)
        sampling = {k: v for k, v in (("temperature", a.temperature), ("top_k", a.top_k)) if v is not None}
        config = {"policy": policy, "model": a.model, "suite": a.suite, "split": prov.get("split", split_used),
                  "prompts_file": str(a.prompts_file) if a.prompts_file else None, "g": a.g, "rewards": names,
                  "prompts": len(items), "cfg": a.cfg, **sampling, "seed": a.seed, "n_resamples": a.n_resamples,
                  "clip": clip_options or "shapes-clip"}
        run = RunDir.create(a.out or default_out("probe"), kind="probe", config=config,
                            env={**env_info(), **device_record(where)})
        result = probe_alignment(pol, items, names, g=a.g, seed=a.seed, cfg=a.cfg, temperature=a.temperature,
                                 top_k=a.top_k, judge=judge, count_objects=count,
                                 clip_score=clip, n_resamples=a.n_resamples,
                                 reward_options={"clip": clip_options} if "clip" in names and clip_options else None)
        result["config"], result["prompt_provenance"] = config, prov
        write_outputs(result, run.path)
        _print_probe(result, len(items), a.g)
        console.print(f"written: {run.path}/alignment.json, alignment.csv, alignment_rows.csv")

    guard(body)


def _probe_clip(options: dict[str, str], device: str) -> Callable[[Any, Any], Any]:
    """The probe's CLIP scorer on ``device``: ``options`` (model, pretrained) or the shipped shapes-clip, raw
    cosine."""
    from irisbench.metrics.clip_score import clip_score, load_clip

    clip = load_clip(**options, device=device)
    return lambda images, prompts: clip_score(images, prompts, clip)


def _print_probe(result: dict[str, Any], n_items: int, g: int) -> None:
    from irisbench.train.alignment import format_cell

    acc = result["accuracy"]
    console.print(f"{n_items} prompts x {g} rollouts" + (f", accuracy {acc['overall']:.3f}" if acc else
                                                         " (no judge: correctness columns are empty)"))
    for tag_filter in ("overall", "by tag"):
        table = Table(title=f"alignment of the GRPO advantage ({tag_filter}; mean [95% prompt-bootstrap CI])")
        for col in ("reward", "tag", "rho(adv, correct)", "adv correct", "adv incorrect", "rho(adv, plan len)",
                    "rho(adv, objects)", "rho(adv, clip)"):
            table.add_column(col)
        for name, per in result["summary"].items():
            for tag, m in per.items():
                if (tag == "overall") != (tag_filter == "overall"):
                    continue
                table.add_row(name, tag, *(format_cell(m[k]) for k in ("rho_correct", "adv_correct", "adv_incorrect",
                                                                     "rho_plan_len", "rho_objects", "rho_clip")))
        console.print(table)


def _even_subset(items: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` items spread evenly over the tags (round-robin over seeded shuffles of each tag)."""
    import numpy as np

    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x9B0BE])
    by_tag: dict[str, list[dict]] = {}
    for it in items:
        by_tag.setdefault(str(it.get("tag", "")), []).append(it)
    queues = [[group[i] for i in rng.permutation(len(group))] for group in by_tag.values()]
    out: list[dict] = []
    while len(out) < min(n, len(items)):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out
