"""The paper's experiment in one command, on an embedded world (the README's main job is the shapes world).

``world="shapes"`` (default, the main job) trains IRIS as coded (``iris-shapes``), the external verifier and
the null control ``null-random`` (``null-shapes``: ``iris-shapes`` with a reward of i.i.d. N(0, 1) noise, so
every other method's effect can be stated against what an uninformative reward does at the same lr, steps and
seeds) and scores GenEval; ``extended`` (``--extended``) adds IRIS as released (``iris-shapes-faithful``) and
the CompBench-style suite, past the main job's 30-minute budget; ``world="textures"``
(``irisbench.world.textures``) trains those four plus ``nsc-balanced`` from its own base on both suites
(``DEFAULT_METHODS``); ``arch="janus"`` (``--arch janus``) trains IRIS, the verifier and the null through the
Janus path (the shipped tiny transformers Janus, ``JANUS_METHODS``) on the shapes world's main job. The second null,
``null-shuffled-shapes`` (``nsc`` permuted within each group), Intuitor's
``sc`` and ``entropy`` are left out of the defaults to keep three training seeds in the main job's budget;
``methods`` (``--method LABEL=PRESET``) adds any preset.

Stages, each resumable (re-running skips finished work: a finished training run is not opened again,
an unfinished one resumes from its last checkpoint, evaluations from their last record; each stage and each worker
first checks that irisbench's sources are those the experiment started with, ``units.check_code``, and stops in
one line where they changed under it):

1. evaluate the shipped base on every suite x split (on test and on GenEval's seen split at
   ``base_images_per_prompt``, 8 images per prompt: it is evaluated once and shared by every method and seed, so
   its own sampling error is kept small; on val at the checkpoints' 2) and the reference bounds (``oracle``,
   ``random``; ``eval_images_per_prompt``, 2, as every checkpoint);
2. train each method from the base with GRPO once per training seed (``seeds``, into ``train/<method>/seed-<s>``),
   evaluating every ``checkpoint_every`` steps on the **val** split;
3. for each method and seed pick the checkpoint with the best val overall (ties: the earliest) and evaluate
   it on every suite's test split, and the last checkpoint too when it is another step (fixed-step results).
   The first seed's best-val checkpoint is also evaluated on every suite's val split (the val columns);
4. the seed-level statistics: per seed the paired delta against the base on test (bootstrap over prompts),
   and the mean across seeds with a Student-t interval, and beside it the interval that also carries the base's
   own sampling error (``irisbench.report.seeds``; ``seed_deltas.csv``); then each method's effect
   relative to every null control among the methods (a preset whose reward is in ``NULL_REWARDS``): the
   difference of the across-seed mean deltas with a Welch t interval (``vs_null.csv``,
   ``irisbench.report.null_control``); and the val curve, every in-training val evaluation of every method and
   seed beside the base (``curve.csv``, ``irisbench.report.val_curve``: an early gain before a decline shows there);
5. analyse (self-certainty vs quality, best-of-N, diversity, training dynamics, selection) and write the
   report (tables with CIs and deltas vs the base, plots, HTML gallery) for the first seed.

Every evaluation uses the evaluation ``seed``: the base and each checkpoint draw the same sampling seeds on
the same prompts, so their deltas are paired (the base's 8 images of a prompt against a checkpoint's 2: the
paired bootstrap resamples prompts, each with all its images). Checkpoints are never chosen on test.
``summary.md`` states the rule, gives both rows per method and seed, and says how many images per prompt every
score is over. A resumed folder whose base drew another number of images per prompt is refused in one line
(``check_base_resume``; ``--base-images`` resumes it as it was).

The experiment writes only into its folder (default ``results/runs/experiment[-<world>]``, git-ignored);
``publish_readme`` (the CLI's ``--publish``) also rewrites the README's block and the tracked
``results/experiment[-<world>]/`` (``irisbench.experiment.summary.publish``); ``publish_folder`` (``--publish-to
DIR``) publishes the same tables and the summary into DIR without touching the README (extended runs such as the
released recipe's, ``results/released-recipe/``).

Stages 1-3 are units of work (``irisbench.experiment.units``: one evaluation; one training run with its
checkpoints' evaluations). With ``jobs`` > 1 (the default on a multi-core CPU: one process per usable core, one
torch thread each) they run side by side first (``irisbench.experiment.parallel``), and the stages then find them
finished and collect them; the numbers are a serial run's at the same thread count.

Evaluations: ``(1 + references) x suites x splits`` for the base and references, then per method
``suites x (1 val + S best-val test + up to S last test)`` for S seeds (last only where it is not the best).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from irisbench.core.errors import UsageError
from irisbench.experiment.config import (
    DEFAULT_METHODS,
    NULL_METHOD,
    REFERENCE_POLICIES,
    SEEN,
    SEEN_SUITE,
    TEST,
    VAL,
    WORLD_BASES,
    ExperimentConfig,
    null_methods,
    parse_seeds,
)
from irisbench.experiment.parallel import run_units
from irisbench.experiment.summary import (
    SEED_DELTAS,
    SEEN_UNSEEN,
    VS_NULL,
    Evals,
    TrainRuns,
    log_invocation,
    publish,
    publish_to,
    summary_markdown,
    summary_table,
)
from irisbench.experiment.units import (
    BEST,
    LAST,
    TrainUnit,
    base_eval_tasks,
    check_code,
    evaluate_checkpoints,
    evaluate_task,
    finished_run,
    run_label,
    selected_steps,
    train,
)

__all__ = ["DEFAULT_METHODS", "NULL_METHOD", "REFERENCE_POLICIES", "WORLD_BASES", "ExperimentConfig",
           "check_base_resume", "finished_run", "null_methods", "parse_seeds", "run_experiment", "selected_steps"]

def check_base_resume(out: Path, cfg: ExperimentConfig) -> None:
    """A resumed experiment folder whose base was evaluated at another number of images per prompt is refused
    in one line before anything runs (as every resumed run with a changed config is, ``irisbench.core.runs``): the
    base's scores, and every delta against them, would mix two evaluations."""
    from irisbench.core.runs import RUN_MARKER, RunDir

    for suite, split in [(suite, TEST) for suite in cfg.suites_to_run()] + ([(SEEN_SUITE, SEEN)] if cfg.seen else []):
        folder = out / "eval" / "base" / f"{suite}-{split}"
        if not (folder / RUN_MARKER).is_file():
            continue
        had = RunDir.open(folder).config.get("images_per_prompt")
        if cfg.base_images_per_prompt is not None and had != cfg.base_images_per_prompt:
            raise UsageError(f"{folder} evaluated the base at {had} images per prompt, this experiment at "
                             f"{cfg.base_images_per_prompt}: use a new --out, or --base-images "
                             f"{had} to resume this folder")


def run_experiment(out: str | Path, cfg: ExperimentConfig | None = None, *, console: Console | None = None,
                   publish_readme: Path | None = None, publish_folder: Path | None = None) -> dict[str, Any]:
    """Run (or resume) the experiment into ``out``; ``publish_readme``: also rewrite that README's block and
    publish beside it (``summary.publish``); ``publish_folder``: also publish the tables, plots,
    ``curve.csv`` and ``summary.md`` into that folder, the README left alone (``summary.publish_to``)."""
    from irisbench.core.devices import resolve_device
    from irisbench.core.provenance import code_fingerprint
    from irisbench.core.records import atomic_write_json, atomic_write_text
    from irisbench.policies.shapes_lm import SHIPPED_BASES

    cfg = cfg or ExperimentConfig()
    cfg.check()
    nulls = null_methods(cfg.methods or {}, cfg.train_overrides)
    cfg.device = resolve_device(cfg.device)  # one line before anything is written; recorded in summary.json
    cfg.resolve_jobs()
    console = console or Console()
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    code = code_fingerprint()  # each stage and worker checks it: no run mixes two versions of the code
    out = Path(out)
    check_base_resume(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    shipped = SHIPPED_BASES.get(cfg.base)
    if shipped is not None and not (shipped / "model.safetensors").is_file():
        raise FileNotFoundError(f"the shipped {cfg.base} checkpoint is missing ({shipped}); reinstall irisbench")
    evals: Evals = {}

    units = [TrainUnit(label, preset, seed) for label, preset in cfg.methods.items() for seed in cfg.seeds]
    base_tasks = base_eval_tasks(out, cfg)
    if cfg.jobs > 1:  # the heavy work side by side; the stages below then find it finished and collect it
        console.rule(f"[bold]1-3. training and evaluations in {cfg.jobs} processes")
        run_units([*units, *base_tasks], out, cfg, console, code)

    check_code(code)
    console.rule("[bold]1. base and reference policies")
    for task in base_tasks:
        evaluate_task(task, cfg, console, evals=evals)

    check_code(code)
    console.rule(f"[bold]2. GRPO training (seeds {', '.join(map(str, cfg.seeds))})")
    train_runs: TrainRuns = {}
    for unit in units:
        train_runs.setdefault(unit.method, {})[unit.seed] = train(unit, out, cfg, console)

    check_code(code)
    console.rule("[bold]3. selected (best val) and last checkpoints on test")
    selection: dict[str, dict[str, dict[str, int]]] = {}
    seed_evals = []
    for unit in units:
        chosen, unit_evals = evaluate_checkpoints(evals, unit, train_runs[unit.method][unit.seed], out, cfg, console)
        selection.setdefault(unit.method, {})[f"seed-{unit.seed}"] = chosen
        seed_evals += unit_evals

    check_code(code)
    console.rule("[bold]4. seed-level deltas and 5. analysis and report")
    from irisbench.report import RunRef, build_report
    from irisbench.report.null_control import null_comparisons, write_null_csv
    from irisbench.report.seeds import seed_deltas, seed_verdicts, write_seed_csv

    entries = seed_deltas(evals["base"], seed_evals, split=TEST)
    write_seed_csv(entries, out / SEED_DELTAS)
    seen_rows = []
    if cfg.seen:
        from irisbench.report.seen_unseen import seen_unseen_rows, write_seen_csv

        seen_rows = seen_unseen_rows(entries, seed_deltas(evals["base"], seed_evals, split=SEEN))
        write_seen_csv(seen_rows, out / SEEN_UNSEEN)
    vs_null = null_comparisons(entries, nulls)
    if vs_null:
        write_null_csv(vs_null, out / VS_NULL)
    else:
        (out / VS_NULL).unlink(missing_ok=True)  # a stale table of an earlier method list is not published
    from irisbench.report.val_curve import CURVE, curve_markdown, val_curve, write_curve_csv

    curve = val_curve(train_runs, VAL, base=evals["base"], eval_seed=cfg.seed)
    write_curve_csv(curve, out / CURVE)
    analysis = _analyse(evals, train_runs, out, cfg)
    shown = _report_labels(cfg)
    refs = [RunRef(lab, str(path)) for lab, d in evals.items() if lab in shown for path in d.values()]
    report = build_report(refs, out / "report", base="base", title=f"IRIS on the {cfg.world} world"
                          + (" (Janus path)" if cfg.arch == "janus" else ""))
    s_verdicts = seed_verdicts(entries)
    elapsed = time.perf_counter() - started
    timing = log_invocation(out, elapsed, cfg.threads, cfg.jobs)
    summary = {"config": asdict(cfg), "selection": selection, "evals": {k: {s: str(p) for s, p in d.items()}
                                                                        for k, d in evals.items()},
               "train_runs": {m: {f"seed-{s}": str(p) for s, p in d.items()} for m, d in train_runs.items()},
               "report": str(report["html"]), "analysis": analysis.get("runs", {}),
               "verdicts": report["verdicts"], "seed_deltas": entries, "seed_verdicts": s_verdicts,
               "seed_deltas_csv": str(out / SEED_DELTAS), "curve_csv": str(out / CURVE), "null_methods": nulls,
               "vs_null": vs_null, "seen_unseen": seen_rows, "seconds": round(elapsed, 1), "timing": timing}
    atomic_write_json(out / "summary.json", summary)
    md = summary_markdown(evals, selection, report["verdicts"], train_runs, elapsed, entries=entries,
                          seed_verdict_lines=s_verdicts, seeds=cfg.seeds, eval_seed=cfg.seed, timing=timing,
                          vs_null=vs_null, null_presets={n: cfg.methods[n] for n in nulls},
                          val_images_per_prompt=cfg.val_images_per_prompt, references=tuple(cfg.references),
                          curve=curve_markdown(curve), seen_unseen=seen_rows)
    atomic_write_text(out / "summary.md", md)
    console.print(summary_table(evals))
    console.print(f"summary: {out / 'summary.md'}\nseed deltas: {out / SEED_DELTAS}\nreport: {report['html']}")
    if vs_null:
        console.print(f"vs the null control: {out / VS_NULL}")
    runs = {ev.label: {"method": ev.method, "checkpoint": ev.checkpoint, "training_seed": ev.seed, "step": ev.step}
            for ev in seed_evals}
    if publish_readme is not None:
        publish(publish_readme, md, report, train_runs, out, evals, world=cfg.name, runs=runs)
    if publish_folder is not None:
        publish_to(publish_folder, md, report, train_runs, out, evals, runs=runs)
        console.print(f"published: {publish_folder}")
    return summary


def _report_labels(cfg: ExperimentConfig) -> set[str]:
    """The labels of the HTML report: the base, the references and the first seed's checkpoints."""
    first = cfg.seeds[0]
    return {"base", *cfg.references, *(run_label(m, k, first, first) for m in cfg.methods for k in (BEST, LAST))}


def _analyse(evals: Evals, train_runs: TrainRuns, out: Path, cfg: ExperimentConfig) -> dict[str, Any]:
    """The analysis of the report's eval runs on test and of every training run (all seeds)."""
    from irisbench.analysis import analyze_runs

    shown = _report_labels(cfg)
    inputs: dict[str, Path] = {f"{lab}|{key}": path for lab, d in evals.items() if lab in shown
                               for key, path in d.items() if key.endswith(f"/{TEST}")}
    inputs.update({f"train|{m}|seed-{s}": run for m, runs in train_runs.items() for s, run in runs.items()})
    named = {k.replace("/", "-").replace("|", "-").replace(" ", ""): v for k, v in inputs.items()}
    return analyze_runs(named, out / "analysis", n_resamples=1000, seed=cfg.seed,
                        features=_clip_features({k: v for k, v in named.items() if not k.startswith("train")}))


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
