"""Run the experiment's units of work (``irisbench.experiment.units``) in ``jobs`` worker processes.

The tiny policies of the embedded worlds hardly use a second core (an evaluation at 2 torch threads took
~36 s where 1 thread took ~26 s on a 2-core Xeon), so the experiment scales by running training seeds and
evaluations side by side, one process per core, each at ``cfg.threads`` torch threads. The training units go
first (the longest), the base and reference evaluations fill in behind them. Each unit is seeded and writes
only its own folders, so the numbers are those of a serial run at the same thread count; the serial pass that
follows (``irisbench.experiment.run``) finds every unit finished and only collects them.

A worker's output goes to ``<out>/logs/<unit>.log``; the console gets one line per finished unit. The first
failure stops the pool (units not started are cancelled, running ones finish) and is raised again here;
what finished is kept, and the same command resumes.
"""

from __future__ import annotations

import multiprocessing
import re
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from rich.console import Console

from irisbench.experiment.config import ExperimentConfig
from irisbench.experiment.units import EvalTask, TrainUnit, check_code, evaluate_checkpoints, evaluate_task, train

Unit = EvalTask | TrainUnit
LOGS = "logs"


def log_path(out: Path, unit: Unit) -> Path:
    """``<out>/logs/<unit>.log``: the unit's description as a file name."""
    return out / LOGS / (re.sub(r"[^A-Za-z0-9.-]+", "_", unit.describe()).strip("_") + ".log")


def run_unit(unit: Unit, out: Path, cfg: ExperimentConfig, code: str) -> float:
    """Run one unit in this (worker) process, its output appended to its log; its wall seconds. ``code``: the
    experiment's ``code_fingerprint`` at its start (a worker importing changed sources refuses to run)."""
    import torch

    check_code(code)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    path = log_path(out, unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(path, "a", encoding="utf-8") as f:
        console = Console(file=f, width=120, force_terminal=False)
        if isinstance(unit, TrainUnit):
            run = train(unit, out, cfg, console, progress=False)
            evaluate_checkpoints({}, unit, run, out, cfg, console, progress=False)
        else:
            evaluate_task(unit, cfg, console, progress=False)
    return time.perf_counter() - started


def run_units(units: Sequence[Unit], out: Path, cfg: ExperimentConfig, console: Console, code: str) -> None:
    """Run ``units`` in ``cfg.jobs`` spawned processes (spawn: no torch state or open run lock is inherited)."""
    context = multiprocessing.get_context("spawn")
    done = 0
    console.print(f"{len(units)} units of work in {cfg.jobs} processes, {cfg.threads} torch thread(s) each; "
                  f"their logs: {out / LOGS}")
    with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=context) as pool:
        futures: dict[Future[float], Unit] = {pool.submit(run_unit, unit, out, cfg, code): unit for unit in units}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                error = future.exception()
                unit = futures[future]
                if error is not None:
                    for other in pending:
                        other.cancel()
                    console.print(f"[red]failed[/] {unit.describe()} (its log: {log_path(out, unit)})")
                    raise error
                done += 1
                console.print(f"[{done}/{len(units)}] {unit.describe()}: {future.result() / 60:.1f} min")
