"""The ``eval`` and ``metrics`` commands: generate or read images, score them, print the tables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from irisbench.cli.shared import (
    Command,
    app,
    claim_out,
    console,
    default_out,
    device_option,
    err,
    fail,
    given_flags,
    guard,
)
from irisbench.core import distributed
from irisbench.core.errors import parse_key_values


@app.command("eval", cls=Command)
def eval_cmd(
    ctx: typer.Context,
    suite: str = typer.Option(None, help="Suite name (see `irisbench suites ls`) or a suite YAML file "
                                         "(default: geneval; with --images, the folder's)."),
    policy: str = typer.Option(None, help="Policy name (see `irisbench ls`) or a checkpoint folder "
                                          "(default: shapes-base)."),
    model: str = typer.Option(None, help="Model id or local folder for policies that need one."),
    split: str = typer.Option(None, help="Prompt split (shapes world: val or test; default: the suite's)."),
    prompts: Path = typer.Option(None, help="The suite's prompts from a file: GenEval, an official-format "
                                            "metadata JSONL; T2I-CompBench, the folder of the official "
                                            "*_val.txt files (open world); WISE, its JSON file(s)."),
    images_per_prompt: int = typer.Option(None, "--images-per-prompt", "-n",
                                          help="Default: the suite's; with --images, the folder's."),
    seed: int = typer.Option(0, help="Base seed; each image's seed derives from it, the prompt and sample."),
    batch_size: int = typer.Option(64, help="Images generated per batch (does not change results)."),
    cfg: float = typer.Option(None, help="Classifier-free guidance scale (default: the policy's)."),
    temperature: float = typer.Option(None, help="Sampling temperature (default: the policy's)."),
    top_k: int = typer.Option(None, help="Top-k sampling (default: the policy's)."),
    limit: int = typer.Option(None, help="Only the first N prompts of every tag (smoke runs; recorded)."),
    images: Path = typer.Option(None, help="Score this folder instead of generating: a GenEval or "
                                           "T2I-CompBench folder, an eval run, or WISE images (layouts: "
                                           "docs/layouts.md)."),
    category: str = typer.Option(None, help="With --images: the T2I-CompBench category of a one-category "
                                            "folder (default: from the folder name or its prompts)."),
    allow_missing: bool = typer.Option(False, "--allow-missing",
                                       help="With --images: score an incomplete folder (missing, misnamed, "
                                            "unreadable images and prompts are counted; extra images are "
                                            "never dropped)."),
    no_save_images: bool = typer.Option(False, "--no-save-images",
                                        help="Do not write the images (as PNG) into the run folder."),
    metrics: str = typer.Option(None, help="Image metrics, any of clip,fid,kid,pickscore,hpsv2."),
    metric_option: list[str] = typer.Option([], help="KEY=VALUE for pickscore/hpsv2, e.g. hpsv2_model=FILE "
                                                     "(repeatable)."),
    clip_model: str = typer.Option(None, help="CLIP backbone for --metrics (default: the shapes CLIP)."),
    clip_pretrained: str = typer.Option(None, help="CLIP pretrained tag or local weights file."),
    clip_scale: str = typer.Option("raw", help="CLIP score scale: raw, 100-clamp or 2.5."),
    fid_reference: Path = typer.Option(None, help="Folder of reference PNGs for FID/KID (open world)."),
    scorer_option: list[str] = typer.Option([], help="KEY=VALUE for the suite's scorer, e.g. detector_model=DIR "
                                                     "(repeatable)."),
    out: Path = typer.Option(None, help="Run folder (default: a new folder under results/runs/). "
                                        "Re-running into the same folder resumes."),
    allow_config_change: bool = typer.Option(False, "--allow-config-change",
                                             help="Resume with changes that leave the images alone "
                                                  "(--metrics; wise: the judge); others are refused."),
    judge: str = typer.Option(None, help="--suite wise: the judge, an OpenAI-compatible API URL (e.g. "
                                         "http://127.0.0.1:8000/v1), or stub-for-tests (tests only)."),
    judge_model: str = typer.Option(None, help="--suite wise: the model name the judge server serves."),
    judge_api_key_env: str = typer.Option(None, help="--suite wise: env variable holding the judge's API key "
                                                     "(default: none)."),
    judge_workers: int = typer.Option(1, help="--suite wise: concurrent judge requests."),
    wise_protocol: str = typer.Option("legacy", help="--suite wise: legacy (WiScore, 0-2 criteria) or verified "
                                                     "(WISE_Verified, binary)."),
    judge_retries: int = typer.Option(3, help="--suite wise: calls per image at most (backoff doubles, <= 30 s)."),
    judge_backoff: float = typer.Option(2.0, help="--suite wise: seconds after the first failed call."),
    allow_failures: bool = typer.Option(False, "--allow-failures",
                                        help="--suite wise: exit 0 despite failed judge calls (a re-run "
                                             "judges only those)."),
    device: str = device_option(),
) -> None:
    """Generate images for a suite's prompts (or read them with --images), score them and write per-image
    records, results and the suite's official layout and files."""
    from irisbench.evaluation.evaluate import EvalOptions, evaluate

    if suite == "wise":
        _wise_eval(locals())
        return
    wise_only = given_flags(ctx, WISE_ONLY)
    if wise_only:
        fail(f"{wise_only[0]} is read by --suite wise only (this is --suite {suite or 'geneval'})")

    def options() -> EvalOptions:
        from irisbench.metrics.preference import metric_options
        from irisbench.metrics.suite_metrics import MetricOptions, check_scale_name, parse_metric_names

        if images is not None:
            given = [flag for flag, v in (("--policy", policy), ("--model", model), ("--cfg", cfg),
                                          ("--temperature", temperature), ("--top-k", top_k)) if v is not None]
            if given:
                raise ValueError(f"--images scores a folder of images: {', '.join(given)} do(es) not apply")

        metric_opts = MetricOptions(parse_metric_names(metrics), clip_model, clip_pretrained,
                                    check_scale_name(clip_scale), str(fid_reference) if fid_reference else None)
        metric_opts.preference = metric_options(metric_opts.names, parse_key_values(metric_option, "--metric-option",
                                                                                    numbers=False))
        return EvalOptions(policy=policy or "shapes-base", model=model, suite=suite, split=split,
                           images_per_prompt=images_per_prompt, seed=seed, batch_size=batch_size, cfg=cfg,
                           temperature=temperature, top_k=top_k, limit_per_tag=limit,
                           prompts_file=str(prompts) if prompts else None, save_images=not no_save_images,
                           metrics=metric_opts,
                           scorer_options=parse_key_values(scorer_option, "--scorer-option", numbers=False),
                           images=str(images) if images is not None else None, category=category,
                           allow_missing=allow_missing, allow_config_change=allow_config_change,
                           device=device)

    opts = guard(options, options=True)
    name = f"eval-{suite or 'images'}-{images.resolve().name}" if images is not None else \
        f"eval-{suite or 'geneval'}-{Path(policy or 'shapes-base').name}"
    target = claim_out(out) if out else guard(lambda: default_out(name))
    results = guard(lambda: evaluate(opts, target, on_start=lambda config: print_header(config, target)))
    distributed.end()
    if int(os.environ.get("RANK", "0")) != 0:
        return
    print_scores(results, title=f"{results['suite']} ({results['world']} world, {results['split']}) — "
                                f"{results['policy']['name']}")
    check = results["counts"].get("image_check")
    if check and (check["missing"] or check.get("first")):
        console.print(f"[yellow]scored an incomplete folder:[/] {check['missing']} image(s) missing"
                      + (f"; {check['first']}" if check.get("first") else ""))
    if results["prompts"].get("subset_of"):
        p = results["prompts"]
        console.print(f"[yellow]scored a subset:[/] {p['name']} ({p['n_prompts_missing']} prompt(s) missing, first: "
                      f"{p['missing_prompts'][0]:05d})", highlight=False)
    if "limit" in results:
        lim = results["limit"]
        console.print(f"limited to {lim['per_tag']} prompt(s) per tag" if isinstance(lim, dict)
                      else f"limited to the first {lim} prompt(s)")
    print_metrics(results.get("metrics", {}))
    console.print(f"run folder: {target}")


def print_header(config: dict[str, Any], target: Path) -> None:
    """What an eval is about to do, before it loads a scorer or reads an image."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    policy = config["policy"]
    source = f"images from {policy['images']}" if policy.get("name") == "external" and policy.get("images") \
        else f"policy {policy.get('name')}"
    n, n_prompts = config["images_per_prompt"], config["prompts"].get("n_prompts")
    console.print(f"eval {config['suite']}: world {config['world']}, scorer {config['scorer']}, "
                  f"{n} image{'s' if n != 1 else ''} per prompt"
                  + (f", {n_prompts} prompt{'s' if n_prompts != 1 else ''}" if n_prompts is not None else "")
                  + f"; {source}; run folder {target}", highlight=False, soft_wrap=True)


# eval's options that only --suite wise reads
WISE_ONLY = ("judge", "judge_model", "judge_api_key_env", "judge_workers", "wise_protocol", "judge_retries",
             "judge_backoff", "allow_failures")
def _wise_eval(args: dict[str, Any]) -> None:
    """``eval --suite wise``: generate or read one image per WISE prompt, judge it, print per-category scores."""
    from irisbench.evaluation.wise_eval import WiseOptions, check_wise_options, evaluate_wise, failure_line

    if args["prompts"] is None:
        fail("--suite wise needs --prompts FILE or DIR: the official WISE JSON prompt file(s) (not shipped)")
    ctx = args["ctx"]
    given = {p.name: flag for p in ctx.command.params for flag in given_flags(ctx, (p.name,))}
    guard(lambda: check_wise_options(given, images=args["images"] is not None, allow_missing=args["allow_missing"],
                                     images_per_prompt=args["images_per_prompt"]), options=True)
    opts = WiseOptions(
        prompts=str(args["prompts"]), judge=args["judge"], judge_model=args["judge_model"],
        judge_api_key_env=args["judge_api_key_env"], judge_workers=args["judge_workers"],
        protocol=args["wise_protocol"], images=str(args["images"]) if args["images"] else None,
        allow_missing=args["allow_missing"], policy=args["policy"] or "shapes-base", model=args["model"],
        seed=args["seed"],
        batch_size=args["batch_size"], cfg=args["cfg"], temperature=args["temperature"], top_k=args["top_k"],
        limit=args["limit"], retries=args["judge_retries"], backoff=args["judge_backoff"],
        allow_config_change=args["allow_config_change"], device=args["device"])
    name = "external" if opts.images else Path(opts.policy).name
    target = claim_out(args["out"]) if args["out"] else guard(lambda: default_out(f"eval-wise-{name}"))

    def header() -> None:  # the run header, as print_header for the other suites
        if int(os.environ.get("RANK", "0")) == 0:
            source = f"images from {opts.images}" if opts.images else f"policy {opts.policy}"
            console.print(f"eval wise: judge {opts.judge} (model {opts.judge_model}, {opts.protocol} protocol), "
                          f"1 image per prompt; {source}; run folder {target}", highlight=False, soft_wrap=True)

    results = guard(lambda: evaluate_wise(opts, target, on_start=header))
    print_wise(results)
    console.print(f"run folder: {target}")
    if "failures" in results:
        if not args["allow_failures"]:
            fail(failure_line(results, target), code=1)
        err.print(f"[yellow]warning:[/] {failure_line(results, target)}", highlight=False, soft_wrap=True)


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
    for name in ("pickscore", "hpsv2"):
        if name in extra:
            p = extra[name]
            console.print(f"{name} ({p['formula'].split(',')[0]}): {p['mean']:.4f} [{p['ci_low']:.4f}, "
                          f"{p['ci_high']:.4f}]", highlight=False)
    if "fid" in extra:
        console.print(f"FID ({extra['reference']['n_real']} real vs {extra['reference']['n_fake']} generated, "
                      f"CLIP features): {extra['fid']:.3f}")
        if extra.get("fid_warning"):
            err.print(f"[yellow]warning:[/] {extra['fid_warning']}", highlight=False, soft_wrap=True)
    if "kid" in extra:
        k = extra["kid"]
        console.print(f"KID: {k['mean']:.5f} ± {k['std']:.5f} (subset size {k['subset_size']}, {k.get('subsets')} "
                      "subsets)")


@app.command("metrics", cls=Command)
def metrics_cmd(
    run: Path = typer.Argument(..., help="A finished eval run folder (with its images)."),
    metrics: str = typer.Option(..., help="Any of clip,fid,kid,pickscore,hpsv2."),
    metric_option: list[str] = typer.Option([], help="KEY=VALUE for a preference metric, e.g. pickscore_model="
                                                     "/models/PickScore_v1 (repeatable)."),
    clip_model: str = typer.Option(None, help="CLIP backbone (default: the shapes CLIP)."),
    clip_pretrained: str = typer.Option(None, help="CLIP pretrained tag or local weights file."),
    clip_scale: str = typer.Option("raw", help="CLIP score scale: raw, 100-clamp or 2.5."),
    fid_reference: Path = typer.Option(None, help="Folder of reference PNGs for FID/KID (open world)."),
    kid_subset_size: int = typer.Option(None, help="KID subset size (default: min(100, n/2))."),
    device: str = device_option(),
) -> None:
    """(Re)compute CLIP score, FID and KID on an eval run from its saved images, without generating again."""

    def body() -> dict[str, Any]:
        from irisbench.core.devices import resolve_device
        from irisbench.evaluation.run_metrics import compute_run_metrics
        from irisbench.metrics.preference import metric_options
        from irisbench.metrics.suite_metrics import MetricOptions, check_scale_name, parse_metric_names

        opts = MetricOptions(parse_metric_names(metrics), clip_model, clip_pretrained, check_scale_name(clip_scale),
                             str(fid_reference) if fid_reference else None, kid_subset_size,
                             device=resolve_device(device))
        opts.preference = metric_options(opts.names, parse_key_values(metric_option, "--metric-option", numbers=False))
        return compute_run_metrics(run, opts)

    from irisbench.evaluation.eval_run import EvalRun

    results = guard(body)
    print_metrics(results["metrics"])
    console.print(f"metrics written to {EvalRun(run).results_path}")


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
