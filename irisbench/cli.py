"""The ``irisbench`` command line (Typer + rich).

Every command imports its heavy libraries (torch, transformers) inside its body, so ``irisbench --help``
and listing commands stay instant. The project's own errors (``irisbench.errors.IrisbenchError``: bad
input, unknown names, locked runs) and a missing file print one clear line and exit with code 2; any
other exception is a fault and keeps its traceback. ``irisbench --debug CMD`` shows the traceback for
every error. Run folders that a command creates by default go under ``results/runs/``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from irisbench import distributed
from irisbench.errors import IrisbenchError, UsageError, parse_key_value, parse_key_values, parse_named


class _PlainHelp:
    """Help without the ``<bool>``/``<str>`` type column: flags show nothing, value options a plain
    upper-case word (N, X, PATH, TEXT; ``...`` when repeatable)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if param.param_type_name == "option" and param.metavar is None:
                param.metavar = "" if getattr(param, "is_flag", False) else _metavar(param)
            elif param.param_type_name == "argument" and param.metavar is None:
                param.metavar = param.name.upper()
                param.display_type_rich = lambda ctx: None  # the name column already says it
        return params


class _Command(_PlainHelp, TyperCommand):
    pass


class _Group(_PlainHelp, TyperGroup):
    pass


def _metavar(param: Any) -> str:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    repeatable = getattr(annotation, "__origin__", None) is list
    if repeatable:
        annotation = annotation.__args__[0]
    word = {int: "N", float: "X", Path: "PATH", str: "TEXT"}.get(annotation, "VALUE")
    return word + ("..." if repeatable else "")


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=_Group,
                  help="irisbench: RL of autoregressive text-to-image models from intrinsic rewards.")
suites_app = typer.Typer(no_args_is_help=True, cls=_Group, help="List, show, validate and build evaluation suites.")
app.add_typer(suites_app, name="suites")
scorers_app = typer.Typer(no_args_is_help=True, help="Check the model weights of the real-image scorers.")
app.add_typer(scorers_app, name="scorers")
console = Console()
err = Console(stderr=True)
T = TypeVar("T")

EXIT_USAGE = 2
RUNS_ROOT = Path("results") / "runs"  # where run folders go by default (ignored by git)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("irisbench")
        except PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
            v = "0.1.0 (not installed)"
        console.print(f"irisbench {v}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of every error, the project's own too."),
) -> None:
    """irisbench: RL of autoregressive text-to-image models from intrinsic rewards."""
    _state["debug"] = debug


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _guard(fn: Callable[[], T], *, options: bool = False) -> T:
    """Run a command body; the project's errors (and a missing file) become one line and exit code 2.

    ``options=True`` marks a body that only reads the command's flags: a ``ValueError`` there is bad
    input too. Anything else propagates with its traceback; ``--debug`` lets every error through.
    """
    expected: tuple[type[BaseException], ...] = (IrisbenchError, FileNotFoundError, NotADirectoryError,
                                                 UnicodeDecodeError)
    if options:
        expected = (*expected, ValueError)
    try:
        return fn()
    except expected as e:
        if _state["debug"]:
            raise
        _fail(str(e) if not isinstance(e, OSError) or not e.filename else f"{e.strerror}: {e.filename}")
        raise  # unreachable


def _refuse_run_folder(out: Path | None, command: str) -> None:
    """``report``/``analyze`` write their own folder: never into a run folder (their files would mix)."""
    from irisbench.runs import RUN_MARKER

    if out is not None and (out / RUN_MARKER).is_file():
        try:
            kind = json.loads((out / RUN_MARKER).read_text(encoding="utf-8")).get("kind", "?")
        except (OSError, ValueError, AttributeError):
            kind = "?"
        raise UsageError(f"--out {out} is an irisbench {kind} run folder; {command} writes a folder of its own "
                         f"beside the runs: pass a new --out (e.g. {out.parent / (command + '-' + out.name)})")


def _default_out(prefix: str) -> Path:
    from irisbench.runs import new_run_path

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each process would reserve a folder of its own
        raise UsageError("under torchrun / accelerate launch pass --out DIR: every process must write the same "
                         "run folder")
    return new_run_path(RUNS_ROOT, prefix)


@app.command("eval", cls=_Command)
def eval_cmd(
    suite: str = typer.Option(None, help="Suite name (see `irisbench suites ls`) or a suite YAML file "
                                         "(default: geneval; with --images, the folder's)."),
    policy: str = typer.Option(None, help="Policy name (see `irisbench ls`) or a checkpoint folder "
                                          "(default: shapes-base)."),
    model: str = typer.Option(None, help="Model id or local folder for policies that need one."),
    split: str = typer.Option(None, help="Prompt split (shapes world: val or test; default: the suite's)."),
    prompts: Path = typer.Option(None, help="An official-format GenEval metadata JSONL replacing the suite's."),
    images_per_prompt: int = typer.Option(None, "--images-per-prompt", "-n", help="Default: the suite's."),
    seed: int = typer.Option(0, help="Base seed; each image's seed derives from it, the prompt and sample."),
    batch_size: int = typer.Option(64, help="Images generated per batch (does not change results)."),
    cfg: float = typer.Option(None, help="Classifier-free guidance scale (default: the policy's)."),
    temperature: float = typer.Option(None, help="Sampling temperature (default: the policy's)."),
    top_k: int = typer.Option(None, help="Top-k sampling (default: the policy's)."),
    limit: int = typer.Option(None, help="Only the first N prompts of every tag (smoke runs; recorded)."),
    images: Path = typer.Option(None, help="Score this folder instead of generating: a GenEval folder "
                                           "(<00000>/metadata.jsonl + samples/<k>.png), a T2I-CompBench "
                                           "folder (samples/{prompt}_{NNNNNN}.png), an eval run folder, or "
                                           "with --suite wise <DIR>/{prompt_id}.png."),
    category: str = typer.Option(None, help="With --images: the T2I-CompBench category of a one-category "
                                            "folder (default: from the folder name or its prompts)."),
    allow_missing: bool = typer.Option(False, help="With --images: score an incomplete folder; missing, extra, "
                                                   "misnamed and unreadable images are counted in the results."),
    save_images: bool = typer.Option(True, help="Write every image as PNG into the run folder."),
    metrics: str = typer.Option(None, help="Image metrics beside the suite's score: any of clip,fid,kid."),
    clip_model: str = typer.Option(None, help="CLIP backbone for --metrics (default: the shapes CLIP)."),
    clip_pretrained: str = typer.Option(None, help="CLIP pretrained tag or local weights file."),
    clip_scale: str = typer.Option("raw", help="CLIP score scale: raw, 100-clamp or 2.5."),
    fid_reference: Path = typer.Option(None, help="Folder of reference PNGs for FID/KID (open world)."),
    scorer_option: list[str] = typer.Option([], help="KEY=VALUE for the suite's scorer, e.g. "
                                                     "detector_model=/models/mask2former (repeatable)."),
    out: Path = typer.Option(None, help="Run folder (default: a new folder under results/runs/). "
                                        "Re-running into the same folder resumes."),
    allow_config_change: bool = typer.Option(False, help="Resume with changes that leave the images alone "
                                                         "(--metrics and its options); others are refused."),
    judge: str = typer.Option(None, help="--suite wise: the judge, an OpenAI-compatible API URL (e.g. "
                                         "http://127.0.0.1:8000/v1), or stub-for-tests (tests only)."),
    judge_model: str = typer.Option(None, help="--suite wise: the model name the judge server serves."),
    judge_api_key_env: str = typer.Option(None, help="--suite wise: environment variable holding the judge's API "
                                                     "key (none by default, as for a local server)."),
    judge_workers: int = typer.Option(1, help="--suite wise: concurrent judge requests."),
    wise_protocol: str = typer.Option("legacy", help="--suite wise: legacy (WiScore, 0-2 criteria) or verified "
                                                     "(WISE_Verified, binary)."),
    device: str = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when a GPU is visible, else cpu; "
                                          "under torchrun each process takes cuda:LOCAL_RANK)."),
) -> None:
    """Generate images for a suite's prompts (or read them with --images), score them and write per-image
    records, results and the suite's official layout and files."""
    from irisbench.evaluate import EvalOptions, evaluate

    if suite == "wise":
        _wise_eval(locals())
        return
    if judge is not None:
        _fail("--judge is read by --suite wise only")

    def options() -> EvalOptions:
        from irisbench.metrics.suite_metrics import MetricOptions, check_scale_name, parse_metric_names

        if images is not None:
            given = [flag for flag, v in (("--policy", policy), ("--model", model), ("--cfg", cfg),
                                          ("--temperature", temperature), ("--top-k", top_k)) if v is not None]
            if given:
                raise ValueError(f"--images scores a folder of images: {', '.join(given)} do(es) not apply")

        metric_opts = MetricOptions(parse_metric_names(metrics), clip_model, clip_pretrained,
                                    check_scale_name(clip_scale), str(fid_reference) if fid_reference else None)
        return EvalOptions(policy=policy or "shapes-base", model=model, suite=suite, split=split,
                           images_per_prompt=images_per_prompt, seed=seed, batch_size=batch_size, cfg=cfg,
                           temperature=temperature, top_k=top_k, limit_per_tag=limit,
                           prompts_file=str(prompts) if prompts else None, save_images=save_images,
                           metrics=metric_opts,
                           scorer_options=parse_key_values(scorer_option, "--scorer-option", numbers=False),
                           images=str(images) if images is not None else None, category=category,
                           allow_missing=allow_missing, allow_config_change=allow_config_change,
                           device=device)

    opts = _guard(options, options=True)
    name = f"eval-{suite or 'images'}-{images.resolve().name}" if images is not None else \
        f"eval-{suite or 'geneval'}-{Path(policy or 'shapes-base').name}"
    target = out or _guard(lambda: _default_out(name))
    results = _guard(lambda: evaluate(opts, target))
    distributed.end()
    if int(os.environ.get("RANK", "0")) != 0:
        return
    print_scores(results, title=f"{results['suite']} ({results['world']} world, {results['split']}) — "
                                f"{results['policy']['name']}")
    check = results["counts"].get("image_check")
    if check and (check["missing"] or check.get("first")):
        console.print(f"[yellow]scored an incomplete folder:[/] {check['missing']} image(s) missing"
                      + (f"; {check['first']}" if check.get("first") else ""))
    if "limit" in results:
        lim = results["limit"]
        console.print(f"limited to {lim['per_tag']} prompt(s) per tag" if isinstance(lim, dict)
                      else f"limited to the first {lim} prompt(s)")
    print_metrics(results.get("metrics", {}))
    console.print(f"run folder: {target}")


def _wise_eval(args: dict[str, Any]) -> None:
    """``eval --suite wise``: generate or read one image per WISE prompt, judge it, print per-category scores."""
    from irisbench.wise_eval import WiseOptions, evaluate_wise

    if args["prompts"] is None:
        _fail("--suite wise needs --prompts FILE or DIR: the official WISE JSON prompt file(s) (not shipped)")
    for name in ("metrics", "split", "scorer_option"):
        if args[name]:
            _fail(f"--{name.replace('_', '-')} does not apply to --suite wise")
    if args["images_per_prompt"] not in (None, 1):
        _fail("WISE has one image per prompt: drop --images-per-prompt")
    opts = WiseOptions(
        prompts=str(args["prompts"]), judge=args["judge"], judge_model=args["judge_model"],
        judge_api_key_env=args["judge_api_key_env"], judge_workers=args["judge_workers"],
        protocol=args["wise_protocol"], images=str(args["images"]) if args["images"] else None,
        allow_missing=args["allow_missing"], policy=args["policy"] or "shapes-base", model=args["model"],
        seed=args["seed"],
        batch_size=args["batch_size"], cfg=args["cfg"], temperature=args["temperature"], top_k=args["top_k"],
        limit=args["limit"])
    name = "external" if opts.images else Path(opts.policy).name
    target = args["out"] or _guard(lambda: _default_out(f"eval-wise-{name}"))
    results = _guard(lambda: evaluate_wise(opts, target))
    print_wise(results)
    console.print(f"run folder: {target}")


def print_wise(results: dict[str, Any]) -> None:
    scores = results["scores"]
    table = Table(title=f"{scores['label']} — {results['policy']['name']} (judge: {results['judge']['kind']})")
    for col, justify in (("category", "left"), ("score", "right"), ("95% CI", "right"), ("images", "right"),
                         ("weight", "right")):
        table.add_column(col, justify=justify)
    for cat, s in scores["tags"].items():
        table.add_row(cat, "-" if s["score"] is None else f"{s['score']:.3f}", _ci(s),
                      f"{s['n_images']}/{s['n_expected']}", f"{s['weight']:g}")
    o = scores["overall"]
    table.add_row("[bold]overall", "-" if o["score"] is None else f"[bold]{o['score']:.3f}", _ci(o),
                  str(o["n_images"]), "")
    console.print(table)
    if o["note"]:
        console.print(f"[yellow]{o['note']}[/]: missing ids {', '.join(scores['missing_ids']) or 'none'}; failed ids "
                      f"{', '.join(scores['failed_ids']) or 'none'}", highlight=False, soft_wrap=True)
    if results["judge"]["kind"] == "stub-for-tests":
        err.print("[yellow]warning:[/] stub judge: these numbers are image colours, not WISE scores")


def print_metrics(extra: dict[str, Any]) -> None:
    if "clip" in extra:
        c = extra["clip"]
        console.print(f"CLIP score ({c['scale']}): {c['mean']:.4f} [{c['ci_low']:.4f}, {c['ci_high']:.4f}]")
    if "fid" in extra:
        console.print(f"FID ({extra['reference']['n_real']} real vs {extra['reference']['n_fake']} generated, "
                      f"CLIP features): {extra['fid']:.3f}")
        if extra.get("fid_warning"):
            err.print(f"[yellow]warning:[/] {extra['fid_warning']}", highlight=False, soft_wrap=True)
    if "kid" in extra:
        k = extra["kid"]
        console.print(f"KID: {k['mean']:.5f} ± {k['std']:.5f} (subset size {k['subset_size']}, {k.get('subsets')} "
                      "subsets)")


@app.command("metrics", cls=_Command)
def metrics_cmd(
    run: Path = typer.Argument(..., help="A finished eval run folder (with its images)."),
    metrics: str = typer.Option(..., help="Any of clip,fid,kid."),
    clip_model: str = typer.Option(None, help="CLIP backbone (default: the shapes CLIP)."),
    clip_pretrained: str = typer.Option(None, help="CLIP pretrained tag or local weights file."),
    clip_scale: str = typer.Option("raw", help="CLIP score scale: raw, 100-clamp or 2.5."),
    fid_reference: Path = typer.Option(None, help="Folder of reference PNGs for FID/KID (open world)."),
    kid_subset_size: int = typer.Option(None, help="KID subset size (default: min(100, n/2))."),
) -> None:
    """(Re)compute CLIP score, FID and KID on an eval run from its saved images, without generating again."""

    def body() -> dict[str, Any]:
        from irisbench.metrics.suite_metrics import MetricOptions, check_scale_name, parse_metric_names
        from irisbench.run_metrics import compute_run_metrics

        opts = MetricOptions(parse_metric_names(metrics), clip_model, clip_pretrained, check_scale_name(clip_scale),
                             str(fid_reference) if fid_reference else None, kid_subset_size)
        return compute_run_metrics(run, opts)

    results = _guard(body)
    print_metrics(results["metrics"])
    console.print(f"metrics written to {run / 'results.json'}")


def _ci(s: dict[str, Any]) -> str:
    return f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]" if s.get("ci_low") is not None else "-"


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


@app.command("pretrain", cls=_Command)
def pretrain_cmd(
    out: Path = typer.Option(None, help="Output folder (default: a new folder under results/runs/); "
                                        "re-running resumes."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a PretrainConfig field: key=value "
                                                          "(dotted keys reach into mapping fields)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    device: str = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when a GPU is visible, else cpu; "
                                          "under torchrun each process takes cuda:LOCAL_RANK)."),
    world: str = typer.Option("shapes", help="shapes (flat colours, lossless tokenizer) or textures (per-patch "
                                             "shading, lossy tokenizer): starts from that world's shipped recipe."),
    threads: int = typer.Option(None, help="torch threads (default: the recipe's 1, the fastest on a busy machine; "
                                           "on a quiet machine use its cores). May change on resume."),
) -> None:
    """Supervised pretraining of a shapes-world base policy on freshly rendered scenes (resumable)."""

    def body() -> None:
        from irisbench.pretrain import PretrainConfig, run_pretrain
        from irisbench.train_config import apply_override

        values: dict[str, Any] = {}
        for item in set_:
            apply_override(values, *parse_key_value(item, "--set"), where="--set")
        from irisbench.devices import resolve_device

        if threads is not None:
            values["num_threads"] = threads
        cfg = PretrainConfig.for_world(world, values)
        dev = resolve_device(device)  # before the output folder is made
        target = out or _default_out("pretrain")
        last = run_pretrain(cfg, target, progress=progress, device=dev)
        console.print(f"last checkpoint: {last}\nuse it with: irisbench eval --policy {last}")

    _guard(body)


@app.command("pretrain-clip", cls=_Command)
def pretrain_clip_cmd(
    out: Path = typer.Option(None, help="Output folder (default: a new folder under results/runs/)."),
    steps: int = typer.Option(None, help="Training steps (default: the shipped model's recipe)."),
    batch_size: int = typer.Option(None, help="Batch size (default: the shipped model's recipe)."),
    seed: int = typer.Option(0, help="Seed."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a small CLIP contrastively on rendered shapes scenes and captions (the shipped shapes-clip)."""

    def body() -> None:
        from irisbench.metrics.shapes_clip_train import DEFAULT_BATCH_SIZE, DEFAULT_STEPS, train_shapes_clip

        target = out or _default_out("shapes-clip")
        result = train_shapes_clip(steps or DEFAULT_STEPS, batch_size or DEFAULT_BATCH_SIZE, seed, target,
                                   progress=progress)
        console.print(f"shapes CLIP written to {target}")
        if isinstance(result, dict):
            console.print_json(json.dumps(result, default=str))

    _guard(body)


@app.command("experiment", cls=_Command)
def experiment_cmd(
    out: Path = typer.Option(None, help="Experiment folder of run folders (re-running resumes; default: "
                                        "results/runs/experiment, or results/runs/experiment-WORLD)."),
    world: str = typer.Option("shapes", help="shapes, or textures (per-patch shading, lossy tokenizer: image tokens "
                                             "are genuinely uncertain); sets the base, the default methods and "
                                             "the README block."),
    steps: int = typer.Option(40, help="GRPO steps per method."),
    checkpoint_every: int = typer.Option(20, help="Checkpoint (and val evaluation) interval."),
    method: list[str] = typer.Option([], help="LABEL=PRESET to train (repeatable; default: iris-nsc, "
                                               "iris-faithful, verifier; textures world: iris-nsc, nsc-balanced, "
                                               "iris-faithful, verifier)."),
    seed: int = typer.Option(0, help="Evaluation seed: the base and every checkpoint are evaluated with the same "
                                     "sampling seeds (paired deltas)."),
    seeds: str = typer.Option("0,1,2", help="Training seeds, a comma list: each method trains once per seed, "
                                            "and the summary gives the mean delta across seeds with its CI."),
    threads: int = typer.Option(None, help="torch threads (default: torch's; 1 is faster on a busy machine)."),
    publish_readme: bool = typer.Option(True, help="Rewrite the experiment block of ./README.md (when it has one) "
                                                   "and publish its tidy tables and plots under results/experiment/."),
    device: str = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when a GPU is visible, else cpu; "
                                          "under torchrun each process takes cuda:LOCAL_RANK)."),
) -> None:
    """The paper's experiment on the shapes world: train IRIS and its variants, evaluate, analyse, report."""
    from irisbench.experiment import ExperimentConfig, parse_seeds, run_experiment
    from irisbench.experiment_summary import readme_markers

    def body() -> None:
        cfg = ExperimentConfig(steps=steps, checkpoint_every=checkpoint_every, seed=seed, seeds=parse_seeds(seeds),
                               threads=threads, device=device, world=world)
        if method:
            cfg.methods = {}
            for item in method:
                label, preset = parse_named(item)
                if not label or not preset:
                    raise UsageError(f"--method {item!r} is not of the form LABEL=PRESET")
                cfg.methods[label] = preset
        cfg.check()  # one line for a bad --world or method list, before anything is written
        readme = Path("README.md")
        begin = readme_markers(cfg.world)[0]
        target = readme if publish_readme and readme.is_file() and begin in readme.read_text() else None
        default_out = Path("results/runs") / ("experiment" if cfg.world == "shapes" else f"experiment-{cfg.world}")
        run_experiment(out or default_out, cfg, console=console, publish_readme=target)

    _guard(body)


@suites_app.command("ls", cls=_Command)
def suites_ls() -> None:
    """List the registered suites."""
    from irisbench.suites import load_suite, suite_names

    table = Table(title="suites")
    for col in ("name", "protocol", "images/prompt", "worlds", "description"):
        table.add_column(col)
    for name in suite_names():
        s = load_suite(name)
        table.add_row(s.name, s.protocol, str(s.images_per_prompt), ", ".join(s.prompts), s.description)
    table.add_row("wise", "wise-legacy, wise-verified", "1", "open (your prompt files)",
                  "WISE: world knowledge, scored by a judge model (eval --suite wise --prompts FILE --judge URL)")
    console.print(table)


@suites_app.command("show", cls=_Command)
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


@suites_app.command("validate", cls=_Command)
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


@suites_app.command("build", cls=_Command)
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


@scorers_app.command("check", cls=_Command)
def scorers_check(
    scorer: list[str] = typer.Option([], help="Scorer to check (repeatable; default: geneval-mask2former and "
                                              "compbench-real)."),
    scorer_option: list[str] = typer.Option([], help="KEY=VALUE as given to eval, e.g. "
                                                     "detector_model=/models/mask2former (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Which local weights each real-model scorer would load, and whether they are there (nothing is loaded or
    downloaded). Exits 1 when something is missing."""

    def body() -> list[Any]:
        from irisbench.scorer_check import check_scorers

        return check_scorers(scorer or None, parse_key_values(scorer_option, "--scorer-option", numbers=False))

    found = _guard(body)
    if as_json:
        from irisbench.scorer_check import as_dicts

        console.print_json(json.dumps(as_dicts(found)))
    else:
        table = Table(title="scorer weights")
        for col in ("scorer", "component", "options", "would load", "status", "found / why not"):
            table.add_column(col, overflow="fold")
        for c in found:
            table.add_row(c.scorer, c.component, c.options, c.source, "[green]ok" if c.ok else "[red]MISSING",
                          f"{c.path}\n{c.detail}" if c.path else c.detail)
        console.print(table)
    missing = [c for c in found if not c.ok]
    if missing:
        err.print(f"[bold red]{len(missing)} of {len(found)} model(s) missing[/]", highlight=False)
        raise typer.Exit(1)


@app.command("ls", cls=_Command)
def ls_cmd() -> None:
    """List registered policies, scorers, metrics, rewards and suites."""
    from irisbench.registry import METRICS, POLICIES, SCORERS
    from irisbench.rewards import REWARDS
    from irisbench.suites import suite_names

    for reg in (POLICIES, SCORERS, METRICS):
        table = Table(title=reg.plural)
        table.add_column("name")
        table.add_column("status")
        table.add_column("what")
        for e in reg.entries():
            table.add_row(e.name, "ready" if e.available else "[yellow]planned", e.summary)
        console.print(table)
    table = Table(title="rewards (train --set reward=NAME)")
    table.add_column("name")
    table.add_column("what")
    for name, (_, summary) in REWARDS.items():
        table.add_row(name, summary)
    console.print(table)
    console.print(f"suites: {', '.join(suite_names())}")


@app.command("env", cls=_Command)
def env_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Versions, devices and the git hash: what a run records as provenance."""
    import torch  # noqa: F401  (so env_info can report devices)

    from irisbench.devices import cpu_has_native_bf16
    from irisbench.provenance import env_info

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


@app.command("train", cls=_Command)
def train_cmd(
    config: str = typer.Option("iris-shapes", "--config", "-c",
                               help="A preset name (see --list-presets) or a YAML config file."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a field: key=value (repeatable); a dotted "
                                                          "key sets one entry, e.g. policy_options.max_plan_tokens=1."),
    out: Path = typer.Option(None, help="Run folder (default: a new folder under results/runs/). "
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
        main = trainer.dist.main
        del trainer  # its sharded model holds the process group: freed before the group is left
        distributed.end()
        if main:
            console.print(f"run folder: {target}\nlast checkpoint: {last}")
        return last

    _guard(body)


def _preset_description(name: str) -> str:
    from irisbench.train_config import _read_yaml

    return str(_read_yaml(name)[0].get("description", ""))


@app.command("analyze", cls=_Command)
def analyze_cmd(
    runs: list[str] = typer.Argument(..., help="Eval or training run folders, as NAME=PATH or PATH."),
    out: Path = typer.Option(None, help="Analysis folder (default: a new folder under results/runs/)."),
    n_resamples: int = typer.Option(2000, help="Bootstrap resamples for every interval."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    plots: bool = typer.Option(True, help="Write PNG plots."),
) -> None:
    """Self-uncertainty vs quality: correlations, within-prompt concordance, best-of-N by self-certainty,
    diversity, training dynamics and val-based checkpoint selection, as tidy tables and plots."""

    def body() -> None:
        from irisbench.analysis import analyze_runs

        _refuse_run_folder(out, "analyze")
        named = {}
        for item in runs:
            name, path = parse_named(item)
            named[name or Path(path).name] = path
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


@app.command("report", cls=_Command)
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

        _refuse_run_folder(out, "report")
        refs = []
        for item in runs:
            label, path = parse_named(item)
            refs.append(RunRef(label or Path(path).name, path))
        target = out or _default_out("report")
        paths = build_report(refs, target, base=base, title=title, gallery_prompts=gallery_prompts)
        console.print(render_rich(paths["table"]))
        console.print(f"report: {paths['html']}")

    _guard(body)


@app.command("probe", cls=_Command)
def probe_cmd(
    policy: str = typer.Option("shapes-base", help="Policy name or a shapes checkpoint folder."),
    model: str = typer.Option(None, help="Model id/path for policies that need one."),
    suite: str = typer.Option("geneval", help="Suite whose prompts to probe."),
    split: str = typer.Option(None, help="Split of the suite's prompts (default: val in the shapes world, never "
                                         "test for choosing a method; the suite's own elsewhere)."),
    prompts_file: Path = typer.Option(None, help="Official-format prompts replacing the suite's (GenEval metadata "
                                                 "JSONL, or the T2I-CompBench folder), as eval --prompts."),
    g: int = typer.Option(8, "--g", help="Rollouts per prompt (the GRPO group size)."),
    rewards: str = typer.Option(None, help="Comma-separated reward names (default: nsc, nsc-balanced, sc, entropy, "
                                           "verifier, clip in the shapes world; the intrinsic ones elsewhere)."),
    n_prompts: int = typer.Option(48, "--prompts", help="Prompts to probe (0: all), spread evenly over the tags."),
    cfg: float = typer.Option(None, help="CFG weight for sampling (default: the policy's; GRPO presets use 3)."),
    clip_model: str = typer.Option(None, help="CLIP for rho(adv, clip) and the clip reward (default: the shipped "
                                              "shapes-clip in the shapes world; an open_clip backbone elsewhere)."),
    clip_pretrained: str = typer.Option(None, help="Local weights (.safetensors) of --clip-model."),
    seed: int = typer.Option(0, help="Seed of the rollouts, the prompt subset and the bootstrap."),
    n_resamples: int = typer.Option(2000, help="Bootstrap resamples for the intervals."),
    out: Path = typer.Option(None, help="Output folder (default: a new folder under results/runs/)."),
) -> None:
    """Reward-quality alignment before training: do a reward's GRPO advantages favour correct images?"""

    def body() -> None:
        from irisbench.alignment import probe_alignment, shapes_judge_and_count, write_outputs
        from irisbench.policies import load_policy
        from irisbench.provenance import env_info
        from irisbench.runs import RunDir
        from irisbench.suites import load_suite, resolve_prompts

        pol = load_policy(policy, model)
        world = getattr(pol, "world", "shapes")
        shapes = world == "shapes"
        if not shapes and clip_model is None:
            raise UsageError(f"policy {policy!r} draws in the {world!r} world, which has no judge of correctness: "
                             "the probe then compares the advantages with a CLIP score; give --clip-model and "
                             "--clip-pretrained (an open_clip backbone and its local weights)")
        default = "nsc,nsc-balanced,sc,entropy,verifier,clip" if shapes else "nsc,nsc-balanced,sc,entropy"
        names = [r.strip() for r in (rewards or default).split(",") if r.strip()]
        split_used = split or ("val" if shapes else None)
        items, prov = resolve_prompts(load_suite(suite), world, split_used, prompts_file)
        if n_prompts:
            items = _even_subset(items, n_prompts, seed)
        judge, count = shapes_judge_and_count() if shapes else (None, None)
        clip_options = {k: v for k, v in (("model", clip_model), ("pretrained", clip_pretrained)) if v is not None}
        clip = _probe_clip(clip_options)
        config = {"policy": policy, "model": model, "suite": suite, "split": prov.get("split", split_used),
                  "prompts_file": str(prompts_file) if prompts_file else None, "g": g, "rewards": names,
                  "prompts": len(items), "cfg": cfg, "seed": seed, "n_resamples": n_resamples,
                  "clip": clip_options or "shapes-clip"}
        run = RunDir.create(out or _default_out("probe"), kind="probe", config=config, env=env_info())
        result = probe_alignment(pol, items, names, g=g, seed=seed, cfg=cfg, judge=judge, count_objects=count,
                                 clip_score=clip, n_resamples=n_resamples,
                                 reward_options={"clip": clip_options} if "clip" in names and clip_options else None)
        result["config"], result["prompt_provenance"] = config, prov
        write_outputs(result, run.path)
        _print_probe(result, len(items), g)
        console.print(f"written: {run.path}/alignment.json, alignment.csv, alignment_rows.csv")

    _guard(body)


def _probe_clip(options: dict[str, str]) -> Callable[[Any, Any], Any]:
    """The probe's CLIP scorer: ``options`` (model, pretrained) or the shipped shapes-clip, raw cosine."""
    from irisbench.metrics.clip_score import clip_score, load_clip

    clip = load_clip(**options)
    return lambda images, prompts: clip_score(images, prompts, clip)


def _print_probe(result: dict[str, Any], n_items: int, g: int) -> None:
    from irisbench.alignment import format_cell

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


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
