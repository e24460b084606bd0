"""The ``irisbench`` command line (Typer + rich).

Every command imports its heavy libraries (torch, transformers) inside its body, so ``irisbench --help``
and listing commands stay instant. Expected failures (bad input, unknown names, locked runs) print one
clear message and exit with code 2; they never show a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from irisbench import distributed

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="irisbench: RL of autoregressive text-to-image models from intrinsic rewards.")
suites_app = typer.Typer(no_args_is_help=True, help="List, show, validate and build evaluation suites.")
app.add_typer(suites_app, name="suites")
console = Console()
err = Console(stderr=True)
T = TypeVar("T")

EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _guard(fn: Callable[[], T]) -> T:
    """Run a command body, turning expected errors into one clear message and a non-zero exit."""
    from irisbench.runs import NotARunError, RunLockedError

    try:
        return fn()
    except (ValueError, FileNotFoundError, NotImplementedError, RunLockedError, NotARunError,
            UnicodeDecodeError, RuntimeError) as e:
        _fail(str(e))
        raise  # unreachable


def _default_out(prefix: str) -> Path:
    from irisbench.runs import new_run_path

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each process would reserve a folder of its own
        raise ValueError("under torchrun / accelerate launch pass --out DIR: every process must write the same "
                         "run folder")
    return new_run_path("results", prefix)


@app.command("eval")
def eval_cmd(
    suite: str = typer.Option("geneval", help="Suite name (see `irisbench suites ls`) or a suite YAML file."),
    policy: str = typer.Option("shapes-base", help="Policy name (see `irisbench ls`) or a checkpoint folder."),
    model: str = typer.Option(None, help="Model id or local folder for policies that need one."),
    split: str = typer.Option(None, help="Prompt split (shapes world: val or test; default: the suite's)."),
    prompts: Path = typer.Option(None, help="An official-format GenEval metadata JSONL replacing the suite's."),
    images_per_prompt: int = typer.Option(None, "--images-per-prompt", "-n", help="Default: the suite's."),
    seed: int = typer.Option(0, help="Base seed; each image's seed derives from it, the prompt and sample."),
    batch_size: int = typer.Option(64, help="Images generated per batch (does not change results)."),
    cfg: float = typer.Option(None, help="Classifier-free guidance scale (default: the policy's)."),
    temperature: float = typer.Option(None, help="Sampling temperature (default: the policy's)."),
    top_k: int = typer.Option(None, help="Top-k sampling (default: the policy's)."),
    limit: int = typer.Option(None, help="Only the first N prompts (smoke runs)."),
    save_images: bool = typer.Option(True, help="Write every image as PNG into the run folder."),
    metrics: str = typer.Option(None, help="Image metrics beside the suite's score: any of clip,fid,kid."),
    clip_model: str = typer.Option(None, help="CLIP backbone for --metrics (default: the shapes CLIP)."),
    clip_pretrained: str = typer.Option(None, help="CLIP pretrained tag or local weights file."),
    clip_scale: str = typer.Option("raw", help="CLIP score scale: raw, 100-clamp or 2.5."),
    fid_reference: Path = typer.Option(None, help="Folder of reference PNGs for FID/KID (open world)."),
    scorer_option: list[str] = typer.Option([], help="KEY=VALUE for the suite's scorer, e.g. "
                                                     "detector_model=/models/mask2former (repeatable)."),
    out: Path = typer.Option(None, help="Run folder (default: a new folder under results/). "
                                        "Re-running into the same folder resumes."),
    device: str = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when a GPU is visible, else cpu; "
                                          "under torchrun each process takes cuda:LOCAL_RANK)."),
) -> None:
    """Generate images for a suite's prompts, score them and write per-image records and results."""
    from irisbench.evaluate import EvalOptions, evaluate

    def options() -> EvalOptions:
        from irisbench.metrics.suite_metrics import MetricOptions, check_scale_name, parse_metric_names

        metric_opts = MetricOptions(parse_metric_names(metrics), clip_model, clip_pretrained,
                                    check_scale_name(clip_scale), str(fid_reference) if fid_reference else None)
        return EvalOptions(policy=policy, model=model, suite=suite, split=split, images_per_prompt=images_per_prompt,
                           seed=seed, batch_size=batch_size, cfg=cfg, temperature=temperature, top_k=top_k,
                           limit=limit, prompts_file=str(prompts) if prompts else None, save_images=save_images,
                           metrics=metric_opts, scorer_options=_key_values(scorer_option, "--scorer-option"),
                           device=device)

    opts = _guard(options)
    target = out or _guard(lambda: _default_out(f"eval-{suite}-{Path(policy).name}"))
    results = _guard(lambda: evaluate(opts, target))
    distributed.end()
    if int(os.environ.get("RANK", "0")) != 0:
        return
    print_scores(results, title=f"{results['suite']} ({results['world']} world, {results['split']}) — "
                                f"{results['policy']['name']}")
    extra = results.get("metrics", {})
    if "clip" in extra:
        c = extra["clip"]
        console.print(f"CLIP score ({c['scale']}): {c['mean']:.4f} [{c['ci_low']:.4f}, {c['ci_high']:.4f}]")
    if "fid" in extra:
        console.print(f"FID ({extra['reference']['n_real']} real vs {extra['reference']['n_fake']} generated, "
                      f"CLIP features): {extra['fid']:.3f}")
    if "kid" in extra:
        console.print(f"KID: {extra['kid']['mean']:.5f} ± {extra['kid']['std']:.5f}")
    console.print(f"run folder: {target}")


def _ci(s: dict[str, Any]) -> str:
    return f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]" if s.get("ci_low") is not None else "-"


def _key_values(items: list[str], flag: str) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} {item!r} is not of the form KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def print_scores(results: dict[str, Any], title: str) -> None:
    scores = results["scores"]
    table = Table(title=title)
    table.add_column("tag")
    table.add_column("score", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("images", justify="right")
    for tag, s in scores["tags"].items():
        table.add_row(tag, f"{s['score']:.3f}", _ci(s), str(s["n_images"]))
    o = scores["overall"]
    table.add_row("[bold]overall", f"[bold]{o['score']:.3f}", _ci(o),
                  str(results["counts"]["actual"]))
    console.print(table)
    c = results["counts"]
    status = "[green]complete" if c["complete"] else "[red]INCOMPLETE"
    console.print(f"images: expected {c['expected']}, actual {c['actual']} ({status}[/])")


@app.command("pretrain")
def pretrain_cmd(
    out: Path = typer.Option(None, help="Output folder (default: a new folder under results/); re-running resumes."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a PretrainConfig field: key=value."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    device: str = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when a GPU is visible, else cpu; "
                                          "under torchrun each process takes cuda:LOCAL_RANK)."),
) -> None:
    """Supervised pretraining of a shapes-world base policy on freshly rendered scenes (resumable)."""

    def body() -> None:
        import yaml

        from irisbench.pretrain import PretrainConfig, run_pretrain

        values = {}
        for item in set_:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set {item!r} is not of the form key=value")
            parsed = yaml.safe_load(value)
            if isinstance(parsed, str):  # YAML reads 1e-3 as a string
                with contextlib.suppress(ValueError):
                    parsed = float(parsed)
            values[key.strip()] = parsed
        from irisbench.devices import resolve_device

        cfg = PretrainConfig.from_dict(values)
        dev = resolve_device(device)  # before the output folder is made
        target = out or _default_out("pretrain")
        last = run_pretrain(cfg, target, progress=progress, device=dev)
        console.print(f"last checkpoint: {last}\nuse it with: irisbench eval --policy {last}")

    _guard(body)


@app.command("pretrain-clip")
def pretrain_clip_cmd(
    out: Path = typer.Option(None, help="Output folder (default: a new folder under results/)."),
    steps: int = typer.Option(None, help="Training steps (default: the shipped model's recipe)."),
    batch_size: int = typer.Option(None, help="Batch size (default: the shipped model's recipe)."),
    seed: int = typer.Option(0, help="Seed."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a small CLIP contrastively on rendered shapes scenes and captions (the shipped shapes-clip)."""

    def body() -> None:
        from irisbench.metrics.shapes_clip import DEFAULT_BATCH_SIZE, DEFAULT_STEPS, train_shapes_clip

        target = out or _default_out("shapes-clip")
        result = train_shapes_clip(steps or DEFAULT_STEPS, batch_size or DEFAULT_BATCH_SIZE, seed, target,
                                   progress=progress)
        console.print(f"shapes CLIP written to {target}")
        if isinstance(result, dict):
            console.print_json(json.dumps(result, default=str))

    _guard(body)


@app.command("experiment")
def experiment_cmd(
    out: Path = typer.Option(Path("results/experiment"), help="Experiment folder (re-running resumes)."),
    steps: int = typer.Option(40, help="GRPO steps per method."),
    checkpoint_every: int = typer.Option(20, help="Checkpoint (and val evaluation) interval."),
    method: list[str] = typer.Option([], help="LABEL=PRESET to train (repeatable; default: iris-nsc, sc, "
                                               "entropy, verifier)."),
    seed: int = typer.Option(0, help="Base seed."),
    threads: int = typer.Option(None, help="torch threads (default: torch's; 1 is faster on a busy machine)."),
    publish_readme: bool = typer.Option(True, help="Rewrite the experiment block of ./README.md (when it has one) "
                                                   "and its plots under docs/experiment/."),
    device: str = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when a GPU is visible, else cpu; "
                                          "under torchrun each process takes cuda:LOCAL_RANK)."),
) -> None:
    """The paper's experiment on the shapes world: train IRIS and its variants, evaluate, analyse, report."""
    from irisbench.experiment import README_BEGIN, ExperimentConfig, run_experiment

    def body() -> None:
        cfg = ExperimentConfig(steps=steps, checkpoint_every=checkpoint_every, seed=seed, threads=threads,
                               device=device)
        if method:
            cfg.methods = dict(m.split("=", 1) for m in method)
        readme = Path("README.md")
        target = readme if publish_readme and readme.is_file() and README_BEGIN in readme.read_text() else None
        run_experiment(out, cfg, console=console, publish_readme=target)

    _guard(body)


@suites_app.command("ls")
def suites_ls() -> None:
    """List the registered suites."""
    from irisbench.suites import load_suite, suite_names

    table = Table(title="suites")
    for col in ("name", "protocol", "images/prompt", "worlds", "description"):
        table.add_column(col)
    for name in suite_names():
        s = load_suite(name)
        table.add_row(s.name, s.protocol, str(s.images_per_prompt), ", ".join(s.prompts), s.description)
    console.print(table)


@suites_app.command("show")
def suites_show(name: str, world: str = typer.Option("shapes", help="shapes or open"),
                split: str = typer.Option(None, help="Split to summarise (default: the suite's).")) -> None:
    """Show a suite: its spec and the resolved prompt set (counts per tag, split kinds, sha256)."""

    def body() -> None:
        from collections import Counter

        from irisbench.suites import load_suite, resolve_prompts

        s = load_suite(name)
        items, prov = resolve_prompts(s, world, split)
        console.print(f"[bold]{s.name}[/]: {s.description}")
        console.print(f"protocol {s.protocol}, {s.images_per_prompt} images per prompt, "
                      f"scorer {s.scorer.get(world)}")
        console.print_json(json.dumps(prov))
        table = Table(title=f"prompts per tag ({world} world, {prov['split']})")
        table.add_column("tag")
        table.add_column("entries", justify="right")
        table.add_column("distinct prompts", justify="right")
        if world == "shapes":
            table.add_column("split kind")
            from irisbench.world.prompts import SPLIT_KIND
        by_tag = Counter(it["tag"] for it in items)
        for tag, count in by_tag.items():
            distinct = len({it["prompt"] for it in items if it["tag"] == tag})
            row = [tag, str(count), str(distinct)]
            if world == "shapes":
                row.append(SPLIT_KIND.get(tag, "?"))
            table.add_row(*row)
        console.print(table)

    _guard(body)


@suites_app.command("validate")
def suites_validate(
    file: Path,
    world: str = typer.Option("open", help="Vocabulary to check classes against: open (COCO) or shapes."),
) -> None:
    """Check a suite YAML or an official-format GenEval metadata JSONL; report the first error precisely."""

    def body() -> None:
        if file.suffix in (".yaml", ".yml"):
            from irisbench.suites import load_suite

            s = load_suite(file)
            console.print(f"[green]ok[/]: suite {s.name!r} ({s.protocol})")
            return
        from collections import Counter

        from irisbench.protocols.geneval import load_metadata
        from irisbench.suites import world_classes

        items = load_metadata(file, classes=world_classes(world))
        tags = Counter(it["tag"] for it in items)
        console.print(f"[green]ok[/]: {len(items)} prompts in {file} ({dict(tags)})")

    _guard(body)


@suites_app.command("build")
def suites_build(
    name: str = typer.Argument("geneval"),
    world: str = typer.Option("open", help="open: the official prompts; shapes: the shapes-world splits."),
    out: Path = typer.Option(None, help="Output file (open) or folder (shapes). Default: results/prompts/."),
) -> None:
    """Regenerate a suite's prompt files with the project's own generator (GenEval: sha256-checked)."""

    def body() -> None:
        import hashlib

        from irisbench.suites import load_suite

        s = load_suite(name)
        if s.protocol != "geneval":
            raise ValueError(f"suite {name!r}: building is implemented for GenEval suites")
        if world == "open":
            from irisbench.protocols.geneval_prompts import generate_official_metadata, write_metadata_jsonl

            src = s.source("open")
            path = out or Path("results/prompts/evaluation_metadata.jsonl")
            path.parent.mkdir(parents=True, exist_ok=True)
            items = generate_official_metadata(seed=src.seed)
            write_metadata_jsonl(items, path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            ok = digest == src.sha256
            console.print(f"wrote {len(items)} prompts to {path}\nsha256 {digest} "
                          + ("[green](matches the official file)" if ok else f"[red](expected {src.sha256})"))
            if not ok:
                raise typer.Exit(1)
        elif world == "shapes":
            from irisbench.protocols.geneval_prompts import write_metadata_jsonl
            from irisbench.world.prompts import build_splits

            folder = out or Path("results/prompts/shapes")
            folder.mkdir(parents=True, exist_ok=True)
            for split, items in build_splits(seed=s.source("shapes").seed).items():
                write_metadata_jsonl(items, folder / f"{split}.jsonl")
                console.print(f"{split}: {len(items)} prompts -> {folder / f'{split}.jsonl'}")
        else:
            raise ValueError(f"unknown world {world!r} (shapes or open)")

    _guard(body)


@app.command("ls")
def ls_cmd() -> None:
    """List registered policies, suites, scorers and metrics."""
    from irisbench.registry import METRICS, POLICIES, SCORERS
    from irisbench.suites import suite_names

    for reg in (POLICIES, SCORERS, METRICS):
        table = Table(title=f"{reg.kind}s")
        table.add_column("name")
        table.add_column("status")
        table.add_column("what")
        for e in reg.entries():
            table.add_row(e.name, "ready" if e.available else "[yellow]planned", e.summary)
        console.print(table)
    console.print(f"suites: {', '.join(suite_names())}")


@app.command("env")
def env_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Versions, devices and the git hash: what a run records as provenance."""
    import torch  # noqa: F401  (so env_info can report devices)

    from irisbench.devices import cpu_has_native_bf16
    from irisbench.runs import env_info

    info = env_info()
    info["torch_threads"] = torch.get_num_threads()
    info["cuda_available"] = torch.cuda.is_available()
    info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    info["cpu_native_bf16"] = cpu_has_native_bf16()
    if as_json:
        console.print_json(json.dumps(info, default=str))
        return
    table = Table(title="irisbench environment")
    table.add_column("key")
    table.add_column("value")
    for k, v in info.items():
        table.add_row(k, json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v))
    console.print(table)


@app.command("train")
def train_cmd(
    config: str = typer.Option("iris-shapes", "--config", "-c",
                               help="A preset name (see --list-presets) or a YAML config file."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a field: key=value (repeatable)."),
    out: Path = typer.Option(None, help="Run folder (default: a new folder under results/). "
                                        "Re-running into it resumes from the last checkpoint."),
    allow_config_change: bool = typer.Option(False, help="Resume even if the config differs from the saved one."),
    list_presets: bool = typer.Option(False, "--list-presets", help="List the config presets and exit."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    device: str = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when a GPU is visible, else cpu; "
                                          "under torchrun each process takes cuda:LOCAL_RANK)."),
) -> None:
    """GRPO training with intrinsic (IRIS: nsc, sc, entropy, ...) or external (verifier, clip) rewards."""
    from irisbench.train_config import load_preset, preset_names, resolve_config

    if list_presets:
        table = Table(title="training presets")
        table.add_column("preset")
        table.add_column("reward")
        table.add_column("description")
        for name in preset_names():
            raw = load_preset(name)
            table.add_row(name, str(raw.get("reward", "nsc")), _preset_description(name))
        console.print(table)
        return

    def body() -> Path:
        from irisbench.devices import resolve_device
        from irisbench.trainer import GRPOTrainer

        cfg = resolve_config(config, set_)
        resolve_device(device)  # one line before a run folder is made (the trainer resolves it again per rank)
        target = out or _default_out(f"train-{Path(config).stem}")
        trainer = GRPOTrainer(cfg, target, progress=progress, allow_config_change=allow_config_change,
                              device=device)
        last = trainer.train()
        distributed.end()
        if trainer.dist.main:
            console.print(f"run folder: {target}\nlast checkpoint: {last}")
        return last

    _guard(body)


def _preset_description(name: str) -> str:
    from irisbench.train_config import _read_yaml

    return str(_read_yaml(name)[0].get("description", ""))


@app.command("analyze")
def analyze_cmd(
    runs: list[str] = typer.Argument(..., help="Eval or training run folders, as NAME=PATH or PATH."),
    out: Path = typer.Option(None, help="Analysis folder (default: a new folder under results/)."),
    n_resamples: int = typer.Option(2000, help="Bootstrap resamples for every interval."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    plots: bool = typer.Option(True, help="Write PNG plots."),
) -> None:
    """Self-uncertainty vs quality: correlations, within-prompt concordance, best-of-N by self-certainty,
    diversity, training dynamics and val-based checkpoint selection, as tidy tables and plots."""

    def body() -> None:
        from irisbench.analysis import analyze_runs

        named = {}
        for item in runs:
            name, sep, path = item.partition("=")
            named[name if sep else Path(item).name] = path if sep else item
        target = out or _default_out("analysis")
        summary = analyze_runs(named, target, n_resamples=n_resamples, seed=seed, make_plots=plots)
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

    _guard(body)


@app.command("report")
def report_cmd(
    runs: list[str] = typer.Argument(..., help="Eval run folders as LABEL=PATH (or PATH: the folder name is the "
                                               "label). Give one label several times for several suites/splits."),
    base: str = typer.Option(None, help="The label deltas are computed against (default: none)."),
    out: Path = typer.Option(None, help="Report folder (default: a new folder under results/)."),
    title: str = typer.Option("irisbench report", help="Report title."),
    gallery_prompts: int = typer.Option(24, help="Prompts shown side by side in the HTML gallery."),
) -> None:
    """Comparison tables (terminal, Markdown, CSV, LaTeX) with CIs and deltas, plots and an HTML gallery."""

    def body() -> None:
        from irisbench.report import RunRef, build_report, render_rich

        refs = []
        for item in runs:
            label, sep, path = item.partition("=")
            refs.append(RunRef(label, path) if sep else RunRef(Path(item).name, item))
        target = out or _default_out("report")
        paths = build_report(refs, target, base=base, title=title, gallery_prompts=gallery_prompts)
        console.print(render_rich(paths["table"]))
        console.print(f"report: {paths['html']}")

    _guard(body)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
