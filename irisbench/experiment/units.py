"""The experiment's units of work, each self-contained so that a worker process can run it alone
(``irisbench.experiment.parallel``): one evaluation of a policy on one suite x split (``EvalTask``), and one
training run of a method at one training seed followed by the evaluations of its selected checkpoints
(``TrainUnit``). Every unit writes only into its own folders and is resumable: a finished unit run again costs
a look at its files, so the experiment's serial pass after a parallel one only collects what the workers made.

The checkpoint rule is the experiment's (``irisbench.experiment.run``): the best val step of each run (ties:
the earliest) on test, the first seed's also on val and seen, and the last step on test where it differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from irisbench.core.errors import UsageError
from irisbench.core.provenance import code_fingerprint
from irisbench.experiment.config import SEEN, SEEN_SUITE, TEST, VAL, ExperimentConfig
from irisbench.experiment.summary import Evals
from irisbench.train.config import EXECUTION_FIELDS

BEST, LAST = "best val", "last"  # the checkpoint kinds


def check_code(started_with: str) -> None:
    """A one-line ``UsageError`` when irisbench's sources changed since the experiment started
    (``code_fingerprint``): its stages and worker processes import modules as they go, and old and new ones must not
    meet in one run (nor one experiment's units be made by two versions of the code)."""
    if code_fingerprint() != started_with:
        raise UsageError("irisbench's source files changed while this experiment ran (an update or a checkout): "
                         "what finished is kept; run the same command again to resume with the code as it is now")


@dataclass(frozen=True)
class EvalTask:
    """One evaluation: ``policy`` on ``suite``/``split`` into ``folder``, recorded under ``label``."""

    label: str
    policy: str
    suite: str
    split: str
    folder: Path
    images_per_prompt: int | None  # None: cfg.eval_images_per_prompt

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.split}"

    def describe(self) -> str:
        return f"eval {self.label} on {self.key}"


@dataclass(frozen=True)
class TrainUnit:
    """One training run of ``method`` (``preset``) at training seed ``seed``, then its checkpoints' evaluations."""

    method: str
    preset: str
    seed: int

    def describe(self) -> str:
        return f"train {self.method} seed {self.seed}"


def run_label(method: str, kind: str, seed: int, first_seed: int) -> str:
    """The eval label of a checkpoint: ``iris-nsc (best val)`` for the first seed (the report's rows),
    ``iris-nsc s1 (best val)`` for the others."""
    return f"{method} ({kind})" if seed == first_seed else f"{method} s{seed} ({kind})"


def train_folder(out: Path, method: str, seed: int) -> Path:
    return out / "train" / method / f"seed-{seed}"


def checkpoint_eval_folder(out: Path, method: str, seed: int, step: int) -> Path:
    return out / "eval" / method / f"seed-{seed}" / f"step-{step}"


def base_eval_tasks(out: Path, cfg: ExperimentConfig) -> list[EvalTask]:
    """The base on every suite x split (on test and seen at ``base_images_per_prompt``: its deltas are read
    there; its val columns only sit beside the first seed's val evaluation, at the checkpoints' count), then the
    reference policies at the checkpoints' count."""
    tasks = [EvalTask("base", cfg.base, suite, split, out / "eval" / "base" / f"{suite}-{split}",
                      cfg.base_images_per_prompt if split == TEST else None)
             for suite in cfg.suites for split in cfg.splits]
    if cfg.seen:
        tasks.append(EvalTask("base", cfg.base, SEEN_SUITE, SEEN, out / "eval" / "base" / f"{SEEN_SUITE}-{SEEN}",
                              cfg.base_images_per_prompt))
    tasks += [EvalTask(ref, ref, suite, split, out / "eval" / ref / f"{suite}-{split}", None)
              for ref in cfg.references for suite in cfg.suites for split in cfg.splits]
    return tasks


def evaluate_task(task: EvalTask, cfg: ExperimentConfig, console: Console, *, progress: bool = True,
                  evals: Evals | None = None) -> None:
    """Run (or resume, or find finished) one evaluation; record its folder in ``evals``."""
    from irisbench.evaluation.evaluate import EvalOptions, evaluate

    n = task.images_per_prompt or cfg.eval_images_per_prompt
    console.print(f"[bold]eval[/] {task.policy} on {task.key} ({n or 'the suite default'} images per prompt)")
    evaluate(EvalOptions(policy=task.policy, suite=task.suite, split=task.split, seed=cfg.seed, limit=cfg.eval_limit,
                         images_per_prompt=n, device=cfg.device), task.folder, progress=progress)
    if evals is not None:
        evals.setdefault(task.label, {})[task.key] = task.folder


def train(unit: TrainUnit, out: Path, cfg: ExperimentConfig, console: Console, *, progress: bool = True) -> Path:
    """Train ``unit`` (skipped when that run already finished); its folder."""
    from irisbench.core.runs import RUN_MARKER
    from irisbench.train.config import resolve_config
    from irisbench.train.trainer import GRPOTrainer

    overrides = {"policy": cfg.base, "steps": cfg.steps, "checkpoint_every": cfg.checkpoint_every,
                 "eval_every": cfg.checkpoint_every, "eval_split": VAL,
                 "eval_images_per_prompt": cfg.val_images_per_prompt,
                 **({"num_threads": cfg.threads} if cfg.threads else {}), **cfg.train_overrides, "seed": unit.seed}
    run = train_folder(out, unit.method, unit.seed)
    if (run.parent / RUN_MARKER).is_file():
        raise UsageError(f"{run.parent} is a training run of the layout without seeds: use a new experiment folder")
    train_cfg = resolve_config(unit.preset, overrides)
    if finished_run(run, train_cfg.to_dict(), train_cfg.steps):
        console.print(f"[bold]train[/] {unit.method} ({unit.preset}) seed {unit.seed}: finished, skipped")
        return run
    console.print(f"[bold]train[/] {unit.method} ({unit.preset}) seed {unit.seed}")
    GRPOTrainer(train_cfg, run, progress=progress, device=cfg.device).train()
    return run


def finished_run(run: Path, config: dict[str, Any], steps: int) -> bool:
    """Whether ``run`` is a training run of this very ``config`` (execution settings such as the thread count
    aside) whose checkpoint of step ``steps`` is complete and, where it evaluates in training, whose evaluation
    of that step finished (then the trainer has nothing left to do; a changed config is left to the trainer,
    which refuses it)."""
    from irisbench.core.runs import NotARunError, RunDir
    from irisbench.train.checkpoints import complete_checkpoints
    from irisbench.train.trainer import eval_finished

    try:
        rundir = RunDir.open(run)
    except NotARunError:
        return False
    if rundir.kind != "train" or rundir.config_changes(config, ignoring=EXECUTION_FIELDS):
        return False
    ckpts = complete_checkpoints(run)
    if not ckpts or ckpts[-1][0] != steps:
        return False
    return not config.get("eval_every") or eval_finished(run, config.get("eval_split", VAL), steps)


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


def evaluate_checkpoints(evals: Evals, unit: TrainUnit, run: Path, out: Path, cfg: ExperimentConfig,
                         console: Console, *, progress: bool = True) -> tuple[dict[str, int], list[Any]]:
    """The best-val checkpoint of ``run`` on every suite's test split (the first seed's on every split, and on
    seen), the last one on test where it is another step (else the same folders). Returns the selection
    ``{"best_val_step", "last_step"}`` and the ``SeedEval`` of both kinds."""
    from irisbench.report.seeds import SeedEval

    first = cfg.seeds[0]
    best, last = selected_steps(run)
    seed_evals: list[SeedEval] = []
    for kind, step in ((BEST, best), (LAST, last)):
        label = run_label(unit.method, kind, unit.seed, first)
        if kind == LAST and last == best:  # the fixed-step result is the selected checkpoint's
            evals[label] = {k: v for k, v in evals[run_label(unit.method, BEST, unit.seed, first)].items()
                            if k.endswith(f"/{TEST}")}
        else:
            policy, folder = str(run / "checkpoints" / f"step-{step}"), checkpoint_eval_folder(out, unit.method,
                                                                                               unit.seed, step)
            splits = cfg.splits if kind == BEST and unit.seed == first else (TEST,)
            tasks = [EvalTask(label, policy, suite, split, folder / f"{suite}-{split}", None)
                     for suite in cfg.suites for split in splits]
            if kind == BEST and cfg.seen:
                tasks.append(EvalTask(label, policy, SEEN_SUITE, SEEN, folder / f"{SEEN_SUITE}-{SEEN}", None))
            for task in tasks:
                evaluate_task(task, cfg, console, progress=progress, evals=evals)
        seed_evals.append(SeedEval(unit.method, kind, unit.seed, step, label, dict(evals[label])))
    return {"best_val_step": best, "last_step": last}, seed_evals
