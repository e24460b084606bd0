"""The paper's experiment in one command, on an embedded world (the README's main job is the shapes world).

``world="shapes"`` (default, the main job) trains IRIS as coded (``iris-shapes``), the external verifier and
the null control ``null-random`` (``null-shapes``: ``iris-shapes`` with a reward of i.i.d. N(0, 1) noise, so
every other method's effect can be stated against what an uninformative reward does at the same lr, steps and
seeds) and scores GenEval; ``extended`` (``--extended``) adds IRIS as released (``iris-shapes-faithful``) and
the CompBench-style suite, past the main job's 30-minute budget; ``world="textures"``
(``irisbench.world.textures``) trains those four plus ``nsc-balanced`` from its own base on both suites
(``DEFAULT_METHODS``). The second null, ``null-shuffled-shapes`` (``nsc`` permuted within each group), Intuitor's
``sc`` and ``entropy`` are left out of the defaults to keep three training seeds in the main job's budget;
``methods`` (``--method LABEL=PRESET``) adds any preset.

Stages, each resumable (re-running skips finished work: a finished training run is not opened again,
an unfinished one resumes from its last checkpoint, evaluations from their last record):

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

Evaluations: ``(1 + references) x suites x splits`` for the base and references, then per method
``suites x (1 val + S best-val test + up to S last test)`` for S seeds (last only where it is not the best).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from irisbench.core.errors import UsageError
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

REFERENCE_POLICIES = ("oracle", "random")
BEST, LAST = "best val", "last"  # the checkpoint kinds
VAL, TEST = "val", "test"
# the RL-training texts' split (irisbench.world.prompts.seen_split): each seed's best-val checkpoint and the base are
# also scored there, so a gain can be read on seen and on unseen (test) prompts
SEEN, SEEN_SUITE = "seen", "geneval"
# what changes with --world (irisbench.world.textures): the base, the default methods, where it is published
WORLD_BASES = {"shapes": "shapes-base", "textures": "textures-base"}
NULL_METHOD = "null-random"  # the null control every method's effect is stated against (summary: vs the null)
# labels pandas.read_csv reads as missing (its default na_values): a method so named would vanish from the tidy tables
NA_LABELS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                       "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
DEFAULT_METHODS = {
    # the main job (README's first command, <= 30 min on a quiet 2-core CPU): three training seeds of IRIS as coded,
    # the external verifier and the null control (iris-shapes with a random reward), GenEval only; IRIS as released
    # and the CompBench-style suite run with --extended (EXTENDED_METHODS, EXTENDED_SUITES); the shuffled-nsc null,
    # sc and entropy (which collapsed in every earlier run) via --method
    "shapes": {"iris-nsc": "iris-shapes", "verifier": "verifier-shapes", NULL_METHOD: "null-shapes"},
    # the textures world asks whether IRIS still collapses once image tokens are genuinely uncertain
    "textures": {"iris-nsc": "iris-shapes", "nsc-balanced": "nsc-balanced-shapes",
                 "iris-faithful": "iris-shapes-faithful", "verifier": "verifier-shapes", NULL_METHOD: "null-shapes"},
}
# what --extended adds to the shapes world's main job (published in results/experiment-extended): IRIS as released
# (beta, frozen image head), inserted after iris-nsc, and the CompBench-style suite (GenEval's own items under
# T2I-CompBench's rules: a second set of scoring rules, not a second benchmark)
EXTENDED_METHODS = {"shapes": {"iris-faithful": "iris-shapes-faithful"}}
MAIN_SUITES, EXTENDED_SUITES = ("geneval",), ("geneval", "compbench")


def default_methods(world: str, extended: bool) -> dict[str, str]:
    """The methods ``irisbench experiment`` trains without ``--method`` (``extended``: with ``--extended``)."""
    methods = dict(DEFAULT_METHODS[world])
    extra = EXTENDED_METHODS.get(world, {}) if extended else {}
    if not extra:
        return methods
    first, *rest = methods.items()
    return dict([first, *extra.items(), *rest])


@dataclass
class ExperimentConfig:
    methods: dict[str, str] | None = None  # label -> preset (None: DEFAULT_METHODS of the world)
    steps: int = 40
    checkpoint_every: int = 20
    suites: tuple[str, ...] | None = None  # None: GenEval in the shapes main job, both suites extended or textures
    splits: tuple[str, ...] = ("val", "test")
    val_images_per_prompt: int = 2  # in-training val evaluations (checkpoint selection)
    seed: int = 0  # evaluation seed: the base and every checkpoint draw the same sampling seeds (paired deltas)
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds: each method trains once per seed
    train_overrides: dict[str, Any] = field(default_factory=dict)  # applied to every method
    references: tuple[str, ...] = REFERENCE_POLICIES
    base: str | None = None  # a policy name or checkpoint folder (None: the world's shipped base)
    world: str = "shapes"  # "shapes" or "textures" (irisbench.world.textures)
    eval_limit: int | None = None  # smoke runs only: the first N prompts of each split
    threads: int | None = None  # torch threads (None: torch's default); 1 is faster on a busy machine
    eval_images_per_prompt: int | None = 2  # 2 per prompt keeps each checkpoint's evaluation cheap on CPU
    # the base is evaluated once and shared by every method and seed: more images per prompt make its own sampling
    # error (carried into the across-seed intervals, irisbench.report.seeds) small; the references keep 2
    base_images_per_prompt: int | None = 8
    seen: bool = True  # also score the base and each best-val checkpoint on GenEval's seen split (RL-training texts)
    device: str | None = None  # every evaluation and training run (irisbench.core.devices; None: cuda when available)
    extended: bool = False  # the shapes world's extended run: EXTENDED_METHODS and EXTENDED_SUITES

    def suites_to_run(self) -> tuple[str, ...]:
        """``suites``, or where unset: GenEval in the shapes world's main job, both suites extended or textures."""
        if self.suites is not None:
            return self.suites
        return MAIN_SUITES if self.world == "shapes" and not self.extended else EXTENDED_SUITES

    def check(self) -> None:
        """One-line ``UsageError`` for a config the experiment cannot run; fills the world's defaults."""
        from irisbench.world.textures import check_world

        check_world(self.world, "--world")
        self.base = self.base or WORLD_BASES[self.world]
        self.methods = default_methods(self.world, self.extended) if self.methods is None else self.methods
        self.suites = self.suites_to_run()
        if not self.methods:
            raise UsageError("the experiment needs at least one method")
        for label in self.methods:
            if label.strip() in NA_LABELS:
                raise UsageError(f"method label {label!r} reads as a missing value in the tidy tables (pandas' CSV "
                                 f"reader): give it another name, e.g. --method {label.strip() or 'x'}-run=PRESET")
        self.seeds = check_seeds(self.seeds)
        from irisbench.train.config import load_preset

        for preset in self.methods.values():  # an unknown or broken preset fails here, before the base is evaluated
            load_preset(preset)
        if TEST not in self.splits:
            raise UsageError(f"splits {self.splits} must include {TEST!r}: checkpoints are reported on test")
        for name in ("eval_images_per_prompt", "base_images_per_prompt", "val_images_per_prompt"):
            n = getattr(self, name)
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                flag = " (--base-images)" if name == "base_images_per_prompt" else ""
                raise UsageError(f"{name}{flag} must be a positive integer, got {n!r}")
        if "seed" in self.train_overrides:
            raise UsageError("train_overrides must not set 'seed': the training seeds are ExperimentConfig.seeds")


def null_methods(methods: dict[str, str], overrides: dict[str, Any] | None = None) -> list[str]:
    """The labels of ``methods`` whose preset (with ``overrides``, the experiment's ``train_overrides``) is a
    null control: every reward term in ``NULL_REWARDS``."""
    from irisbench.train.config import TrainConfig, load_preset
    from irisbench.train.rewards import NULL_REWARDS

    out = []
    for label, preset in methods.items():
        reward = {"reward": TrainConfig.reward, **load_preset(preset), **(overrides or {})}["reward"]
        names = [reward] if isinstance(reward, str) else list(reward)
        if all(n in NULL_REWARDS for n in names):
            out.append(label)
    return out


def check_seeds(seeds: Any) -> tuple[int, ...]:
    """The training seeds as a tuple: non-empty, distinct, non-negative integers."""
    if not isinstance(seeds, (list, tuple)):
        raise UsageError(f"seeds must be a tuple of integers, got {seeds!r}")
    values = tuple(seeds)
    if not values:
        raise UsageError("seeds: give at least one training seed")
    for s in values:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise UsageError(f"seeds: {s!r} is not a non-negative integer (seeds {list(values)})")
    if len(set(values)) != len(values):
        raise UsageError(f"seeds: {list(values)} has duplicates")
    return values


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)`` (the ``--seeds`` option); a one-line ``UsageError`` otherwise."""
    items = [x.strip() for x in str(text).split(",")]
    bad = next((x for x in items if not (x.isascii() and x.isdigit())), None)
    if bad is not None:
        what = "an empty item" if not bad else f"{bad!r} is not a non-negative integer"
        raise UsageError(f"--seeds {text!r}: {what} (give a comma list such as 0,1,2)")
    try:
        return check_seeds(tuple(int(x) for x in items))
    except UsageError as e:
        raise UsageError(f"--seeds {text!r}: {str(e).removeprefix('seeds: ')}") from None


def run_label(method: str, kind: str, seed: int, first_seed: int) -> str:
    """The eval label of a checkpoint: ``iris-nsc (best val)`` for the first seed (the report's rows),
    ``iris-nsc s1 (best val)`` for the others."""
    return f"{method} ({kind})" if seed == first_seed else f"{method} s{seed} ({kind})"


def train_folder(out: Path, method: str, seed: int) -> Path:
    return out / "train" / method / f"seed-{seed}"


def checkpoint_eval_folder(out: Path, method: str, seed: int, step: int) -> Path:
    return out / "eval" / method / f"seed-{seed}" / f"step-{step}"


def _eval(policy: str, suite: str, split: str, out: Path, cfg: ExperimentConfig, console: Console,
          images_per_prompt: int | None) -> dict[str, Any]:
    from irisbench.evaluation.evaluate import EvalOptions, evaluate

    console.print(f"[bold]eval[/] {policy} on {suite}/{split} ({images_per_prompt or 'the suite default'} images per "
                  "prompt)")
    return evaluate(EvalOptions(policy=policy, suite=suite, split=split, seed=cfg.seed, limit=cfg.eval_limit,
                                images_per_prompt=images_per_prompt, device=cfg.device), out)


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


def selected_steps(run: Path) -> tuple[int, int]:
    """(best-val step, last step) of a training run among its in-training val evaluations (ties: earliest),
    by ``irisbench.analysis.select_checkpoint``, the selection the analysis reports."""
    from irisbench.analysis.record_frames import AnalysisError
    from irisbench.analysis.selection import select_checkpoint

    try:
        best = select_checkpoint(run, "best-val", test_split=None)["step"]
        last = select_checkpoint(run, "last", test_split=None)["step"]
    except AnalysisError as e:
        raise UsageError(f"{run}: no val evaluation to select a checkpoint with ({e})") from None
    return best, last


def run_experiment(out: str | Path, cfg: ExperimentConfig | None = None, *, console: Console | None = None,
                   publish_readme: Path | None = None, publish_folder: Path | None = None) -> dict[str, Any]:
    """Run (or resume) the experiment into ``out``; ``publish_readme``: also rewrite that README's block and
    publish beside it (``summary.publish``); ``publish_folder``: also publish the tables, plots,
    ``curve.csv`` and ``summary.md`` into that folder, the README left alone (``summary.publish_to``)."""
    from irisbench.core.devices import resolve_device
    from irisbench.core.records import atomic_write_json, atomic_write_text
    from irisbench.policies.shapes_lm import SHIPPED_BASES

    cfg = cfg or ExperimentConfig()
    cfg.check()
    nulls = null_methods(cfg.methods or {}, cfg.train_overrides)
    cfg.device = resolve_device(cfg.device)  # one line before anything is written; recorded in summary.json
    console = console or Console()
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    out = Path(out)
    check_base_resume(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    shipped = SHIPPED_BASES.get(cfg.base)
    if shipped is not None and not (shipped / "model.safetensors").is_file():
        raise FileNotFoundError(f"the shipped {cfg.base} checkpoint is missing ({shipped}); reinstall irisbench")
    evals: Evals = {}

    console.rule("[bold]1. base and reference policies")
    # the base's deltas are read on test (and seen): there it draws base_images_per_prompt; its val columns only
    # sit beside the first seed's val evaluation, at the checkpoints' count
    for suite in cfg.suites:
        for split in cfg.splits:
            _evaluate_all(evals, "base", cfg.base, out / "eval" / "base", (split,), cfg, console, suites=(suite,),
                          images_per_prompt=cfg.base_images_per_prompt if split == TEST else None)
    if cfg.seen:
        _evaluate_all(evals, "base", cfg.base, out / "eval" / "base", (SEEN,), cfg, console,
                      images_per_prompt=cfg.base_images_per_prompt, suites=(SEEN_SUITE,))
    for ref in cfg.references:
        _evaluate_all(evals, ref, ref, out / "eval" / ref, cfg.splits, cfg, console)

    console.rule(f"[bold]2. GRPO training (seeds {', '.join(map(str, cfg.seeds))})")
    train_runs: TrainRuns = {}
    for label, preset in cfg.methods.items():
        for seed in cfg.seeds:
            train_runs.setdefault(label, {})[seed] = _train(label, preset, seed, out, cfg, console)

    console.rule("[bold]3. selected (best val) and last checkpoints on test")
    selection, seed_evals = _evaluate_checkpoints(evals, train_runs, out, cfg, console)

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
    report = build_report(refs, out / "report", base="base", title=f"IRIS on the {cfg.world} world")
    s_verdicts = seed_verdicts(entries)
    elapsed = time.perf_counter() - started
    timing = log_invocation(out, elapsed, cfg.threads)
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
        publish(publish_readme, md, report, train_runs, out, evals, world=cfg.world, runs=runs)
    if publish_folder is not None:
        publish_to(publish_folder, md, report, train_runs, out, evals, runs=runs)
        console.print(f"published: {publish_folder}")
    return summary


def _evaluate_all(evals: Evals, label: str, policy: str, root: Path, splits: tuple[str, ...],
                  cfg: ExperimentConfig, console: Console, *, images_per_prompt: int | None = None,
                  suites: tuple[str, ...] | None = None) -> None:
    """Evaluate ``policy`` on every suite (``suites``, default ``cfg.suites``) x ``splits`` into
    ``root/<suite>-<split>``, recorded under ``label``, at ``images_per_prompt`` (None:
    ``cfg.eval_images_per_prompt``, the checkpoints' and references')."""
    for suite in suites or cfg.suites:
        for split in splits:
            folder = root / f"{suite}-{split}"
            _eval(policy, suite, split, folder, cfg, console, images_per_prompt or cfg.eval_images_per_prompt)
            evals.setdefault(label, {})[f"{suite}/{split}"] = folder


def _train(label: str, preset: str, seed: int, out: Path, cfg: ExperimentConfig, console: Console) -> Path:
    """Train ``label`` with training seed ``seed`` (skipped when that run already finished); its folder."""
    from irisbench.core.runs import RUN_MARKER
    from irisbench.train.config import resolve_config
    from irisbench.train.trainer import GRPOTrainer

    overrides = {"policy": cfg.base, "steps": cfg.steps, "checkpoint_every": cfg.checkpoint_every,
                 "eval_every": cfg.checkpoint_every, "eval_split": VAL,
                 "eval_images_per_prompt": cfg.val_images_per_prompt,
                 **({"num_threads": cfg.threads} if cfg.threads else {}), **cfg.train_overrides, "seed": seed}
    run = train_folder(out, label, seed)
    if (run.parent / RUN_MARKER).is_file():
        raise UsageError(f"{run.parent} is a training run of the layout without seeds: use a new experiment folder")
    train_cfg = resolve_config(preset, overrides)
    if finished_run(run, train_cfg.to_dict(), train_cfg.steps):
        console.print(f"[bold]train[/] {label} ({preset}) seed {seed}: finished, skipped")
        return run
    console.print(f"[bold]train[/] {label} ({preset}) seed {seed}")
    GRPOTrainer(train_cfg, run, progress=True, device=cfg.device).train()
    return run


def finished_run(run: Path, config: dict[str, Any], steps: int) -> bool:
    """Whether ``run`` is a training run of this very ``config`` whose checkpoint of step ``steps`` is complete
    and, where it evaluates in training, whose evaluation of that step finished (then the trainer has nothing
    left to do; a changed config is left to the trainer, which refuses it)."""
    from irisbench.core.runs import NotARunError, RunDir
    from irisbench.train.checkpoints import complete_checkpoints
    from irisbench.train.trainer import eval_finished

    try:
        rundir = RunDir.open(run)
    except NotARunError:
        return False
    if rundir.kind != "train" or rundir.config_changes(config):
        return False
    ckpts = complete_checkpoints(run)
    if not ckpts or ckpts[-1][0] != steps:
        return False
    return not config.get("eval_every") or eval_finished(run, config.get("eval_split", VAL), steps)


def _evaluate_checkpoints(evals: Evals, train_runs: TrainRuns, out: Path, cfg: ExperimentConfig,
                          console: Console) -> tuple[dict[str, dict[str, dict[str, int]]], list[Any]]:
    """Per method and seed: the best-val checkpoint on every suite's test split (the first seed's on every
    split), the last one on test where it is another step (else the same folders). Returns the selection
    ``{method: {"seed-<s>": {"best_val_step", "last_step"}}}`` and the ``SeedEval`` of every checkpoint."""
    from irisbench.report.seeds import SeedEval

    first = cfg.seeds[0]
    selection: dict[str, dict[str, dict[str, int]]] = {}
    seed_evals: list[SeedEval] = []
    for method, runs in train_runs.items():
        for seed, run in runs.items():
            best, last = selected_steps(run)
            selection.setdefault(method, {})[f"seed-{seed}"] = {"best_val_step": best, "last_step": last}
            for kind, step, splits in ((BEST, best, cfg.splits if seed == first else (TEST,)), (LAST, last, (TEST,))):
                label = run_label(method, kind, seed, first)
                if kind == LAST and last == best:  # the fixed-step result is the selected checkpoint's
                    evals[label] = {k: v for k, v in evals[run_label(method, BEST, seed, first)].items()
                                    if k.endswith(f"/{TEST}")}
                else:
                    _evaluate_all(evals, label, str(run / "checkpoints" / f"step-{step}"),
                                  checkpoint_eval_folder(out, method, seed, step), splits, cfg, console)
                    if kind == BEST and cfg.seen:
                        _evaluate_all(evals, label, str(run / "checkpoints" / f"step-{step}"),
                                      checkpoint_eval_folder(out, method, seed, step), (SEEN,), cfg, console,
                                      suites=(SEEN_SUITE,))
                seed_evals.append(SeedEval(method, kind, seed, step, label, dict(evals[label])))
    return selection, seed_evals


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
