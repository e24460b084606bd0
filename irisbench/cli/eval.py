"""The ``eval`` and ``metrics`` commands: generate or read images, score them, print the tables.

Their options are dataclasses (``EvalArgs``, ``MetricsArgs``) built on the shared ones of
``irisbench.cli.options``; each field says where it does not apply, and ``eval`` refuses such an option with
one line (the WISE options outside ``--suite wise``, the generation options when a folder is scored, ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from irisbench.cli.options import (
    GENERATED,
    IMAGES,
    NO_MODEL,
    NOT_WISE,
    WISE,
    WISE_GENERATED,
    WISE_IMAGES,
    DeviceOption,
    MetricFlags,
    PolicyOptions,
    SamplingOptions,
    ScorerOptionFlag,
    SeedOption,
    command,
    option,
)
from irisbench.cli.shared import claim_out, console, default_out, err, fail, guard
from irisbench.core import distributed
from irisbench.core.errors import parse_key_values

WISE_ONLY = "it is read by --suite wise only"
GENERATES = "every prompt's image is generated"


@dataclass(kw_only=True)
class EvalArgs(ScorerOptionFlag, MetricFlags, DeviceOption, SamplingOptions, SeedOption, PolicyOptions):
    """``eval``'s options: the shared ones (``irisbench.cli.options``) and its own."""

    suite: str | None = option(None, "Suite name (see `irisbench suites ls`) or a suite YAML file (default: geneval; "
                                     "with --images, the folder's).")
    split: str | None = option(None, "Prompt split (shapes world: val or test; default: the suite's).",
                               not_for={WISE: "its prompts are the --prompts file(s)"})
    prompts: Path | None = option(None, "The suite's prompts from a file: GenEval, an official-format metadata "
                                        "JSONL; T2I-CompBench, the folder of the official *_val.txt files (open "
                                        "world); WISE, its JSON file(s).")
    images_per_prompt: int | None = option(None, "Default: the suite's; with --images, the folder's.",
                                           "--images-per-prompt", "-n")
    batch_size: int = option(64, "Images generated per batch (does not change results).",
                             not_for={WISE_IMAGES: NO_MODEL})
    limit: int | None = option(None, "Only the first N prompts of every tag (smoke runs; recorded).")
    images: Path | None = option(None, "Score this folder instead of generating: a GenEval or T2I-CompBench "
                                       "folder, an eval run, or WISE images (layouts: docs/layouts.md).")
    category: str | None = option(None, "With --images: the T2I-CompBench category of a one-category folder "
                                        "(default: from the folder name or its prompts).",
                                  not_for={WISE: "it is a T2I-CompBench option",
                                           GENERATED: "it names the category of a scored folder"})
    allow_missing: bool = option(False, "With --images: score an incomplete folder (missing, misnamed, unreadable "
                                        "images and prompts are counted; extra images are never dropped).",
                                 "--allow-missing", not_for={WISE_GENERATED: GENERATES, GENERATED: GENERATES})
    no_save_images: bool = option(False, "Do not write the images (as PNG) into the run folder.",
                                  "--no-save-images",
                                  not_for={WISE: "the judge reads the images saved in the run folder"})
    out: Path | None = option(None, "Run folder (default: a new folder under results/runs/). Re-running into the "
                                    "same folder resumes.")
    allow_config_change: bool = option(False, "Resume with changes that leave the images alone (--metrics; wise: "
                                              "the judge); others are refused.", "--allow-config-change")
    judge: str | None = option(None, "--suite wise: the judge, an OpenAI-compatible API URL (e.g. "
                                     "http://127.0.0.1:8000/v1), or stub-for-tests (tests only).",
                               not_for={NOT_WISE: WISE_ONLY})
    judge_model: str | None = option(None, "--suite wise: the model name the judge server serves.",
                                     not_for={NOT_WISE: WISE_ONLY})
    judge_api_key_env: str | None = option(None, "--suite wise: env variable holding the judge's API key (default: "
                                                 "none).", not_for={NOT_WISE: WISE_ONLY})
    judge_workers: int = option(1, "--suite wise: concurrent judge requests.", not_for={NOT_WISE: WISE_ONLY})
    wise_protocol: str = option("legacy", "--suite wise: legacy (WiScore, 0-2 criteria) or verified (WISE_Verified, "
                                          "binary).", not_for={NOT_WISE: WISE_ONLY})
    judge_retries: int = option(3, "--suite wise: calls per image at most (backoff doubles, <= 30 s).",
                                not_for={NOT_WISE: WISE_ONLY})
    judge_backoff: float = option(2.0, "--suite wise: seconds after the first failed call.",
                                  not_for={NOT_WISE: WISE_ONLY})
    allow_failures: bool = option(False, "--suite wise: exit 0 despite failed judge calls (a re-run judges only "
                                         "those).", "--allow-failures", not_for={NOT_WISE: WISE_ONLY})

    def eval_options(self) -> Any:
        """The ``irisbench.evaluation.eval_plan.EvalOptions`` of a suite other than WISE."""
        from irisbench.evaluation.eval_plan import EvalOptions

        return EvalOptions(policy=self.policy or "shapes-base", model=self.model, suite=self.suite, split=self.split,
                           images_per_prompt=self.images_per_prompt, seed=self.seed, batch_size=self.batch_size,
                           cfg=self.cfg, temperature=self.temperature, top_k=self.top_k, limit_per_tag=self.limit,
                           prompts_file=str(self.prompts) if self.prompts else None,
                           save_images=not self.no_save_images, metrics=self.metric_options(),
                           scorer_options=parse_key_values(self.scorer_option, "--scorer-option", numbers=False),
                           images=str(self.images) if self.images is not None else None, category=self.category,
                           allow_missing=self.allow_missing, allow_config_change=self.allow_config_change,
                           device=self.device)

    def wise_options(self) -> Any:
        """The ``irisbench.evaluation.wise_eval.WiseOptions`` of ``--suite wise``."""
        from irisbench.evaluation.wise_eval import WiseOptions

        return WiseOptions(prompts=str(self.prompts), judge=self.judge, judge_model=self.judge_model,
                           judge_api_key_env=self.judge_api_key_env, judge_workers=self.judge_workers,
                           protocol=self.wise_protocol, images=str(self.images) if self.images else None,
                           allow_missing=self.allow_missing, policy=self.policy or "shapes-base", model=self.model,
                           seed=self.seed, batch_size=self.batch_size, cfg=self.cfg, temperature=self.temperature,
                           top_k=self.top_k, limit=self.limit, retries=self.judge_retries,
                           backoff=self.judge_backoff, allow_config_change=self.allow_config_change,
                           device=self.device)


@command("eval", EvalArgs)
def eval_cmd(args: EvalArgs) -> None:
    """Generate images for a suite's prompts (or read them with --images), score them and write per-image
    records, results and the suite's official layout and files."""
    from irisbench.evaluation.evaluate import evaluate

    if args.suite == "wise":
        _wise_eval(args)
        return
    refused = args.refused(NOT_WISE)
    if refused:
        fail(f"{refused[0][0]} is read by --suite wise only (this is --suite {args.suite or 'geneval'})")
    if args.images is not None:
        refused = args.refused(IMAGES)
        if refused:
            fail(f"--images scores a folder of images: {', '.join(flag for flag, _ in refused)} do(es) not apply")
    elif args.refused(GENERATED):
        flag, reason = args.refused(GENERATED)[0]
        fail(f"{flag} applies with --images only: {reason}")
    opts = guard(args.eval_options, options=True)
    images, policy = args.images, args.policy
    name = f"eval-{args.suite or 'images'}-{images.resolve().name}" if images is not None else \
        f"eval-{args.suite or 'geneval'}-{Path(policy or 'shapes-base').name}"
    target = claim_out(args.out) if args.out else guard(lambda: default_out(name))
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


def _wise_eval(args: EvalArgs) -> None:
    """``eval --suite wise``: generate or read one image per WISE prompt, judge it, print per-category scores."""
    from irisbench.evaluation.wise_eval import evaluate_wise, failure_line

    if args.prompts is None:
        fail("--suite wise needs --prompts FILE or DIR: the official WISE JSON prompt file(s) (not shipped)")
    for context in (WISE, WISE_IMAGES if args.images is not None else WISE_GENERATED):
        refused = args.refused(context)
        if refused:
            fail(f"{refused[0][0]} does not apply to {context}: {refused[0][1]}")
    if args.images_per_prompt not in (None, 1):
        fail("WISE has one image per prompt: drop --images-per-prompt")
    opts = args.wise_options()
    name = "external" if opts.images else Path(opts.policy).name
    target = claim_out(args.out) if args.out else guard(lambda: default_out(f"eval-wise-{name}"))

    def header() -> None:  # the run header, as print_header for the other suites
        if int(os.environ.get("RANK", "0")) == 0:
            source = f"images from {opts.images}" if opts.images else f"policy {opts.policy}"
            console.print(f"eval wise: judge {opts.judge} (model {opts.judge_model}, {opts.protocol} protocol), "
                          f"1 image per prompt; {source}; run folder {target}", highlight=False, soft_wrap=True)

    results = guard(lambda: evaluate_wise(opts, target, on_start=header))
    print_wise(results)
    console.print(f"run folder: {target}")
    if "failures" in results:
        if not args.allow_failures:
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


@dataclass(kw_only=True)
class MetricsArgs(MetricFlags, DeviceOption):
    run: Path = option(..., "A finished eval run folder (with its images).", argument=True)
    kid_subset_size: int | None = option(None, "KID subset size (default: min(100, n/2)).")


@command("metrics", MetricsArgs, defaults={"metrics": ...})
def metrics_cmd(args: MetricsArgs) -> None:
    """(Re)compute CLIP score, FID and KID on an eval run from its saved images, without generating again."""

    def body() -> dict[str, Any]:
        from irisbench.core.devices import resolve_device
        from irisbench.evaluation.run_metrics import compute_run_metrics

        opts = args.metric_options(kid_subset_size=args.kid_subset_size, device=resolve_device(args.device))
        return compute_run_metrics(args.run, opts)

    from irisbench.evaluation.eval_run import EvalRun

    results = guard(body)
    print_metrics(results["metrics"])
    console.print(f"metrics written to {EvalRun(args.run).results_path}")


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
