"""Experiment tracking for training runs: trl's ``report_to`` names, offline by default.

``report_to`` (a config field) is ``"none"`` (the default), one backend name, a list of them, or ``"all"``
(every installed backend, as in trl/transformers): ``tensorboard`` (``torch.utils.tensorboard``, event
files in ``<run>/tracking/tensorboard``), ``wandb``, ``trackio``, ``mlflow``. Each is an optional extra of
the package (``pip install 'irisbench[wandb]'``); a backend that is not installed is refused with one line
naming the extra, before the run folder is created (``check_report_to``).

What is logged, on the main process only: every training step's metrics exactly as ``train/metrics.jsonl``
holds them (tags ``train/<key>``; ``step`` and the wall-clock ``time`` are the step axis, not values; a
non-finite value, written ``null`` to the JSONL, is not logged); every in-training evaluation's headline
score with its interval and per-tag scores (``eval/<split>/overall``, ``.../overall_ci_low``,
``.../overall_ci_high``, ``.../tag/<tag>``); at evaluation steps, the first rollouts of that training step
as images with their prompts, where the backend takes images (tensorboard, wandb, mlflow; trackio logs
scalars only here).

Nothing reaches a network unless the user asks for it: wandb runs with ``WANDB_MODE`` (default
``offline``, files under ``<run>/tracking``); mlflow logs to ``MLFLOW_TRACKING_URI`` when set, else to a
file store ``<run>/tracking/mlruns``; trackio keeps its local database unless ``TRACKIO_SPACE_ID`` names a
Space. A resumed run keeps logging into the same TensorBoard folder, and the steps lost with the
interrupted checkpoint are purged from it (``purge_step``), as they are from the metrics file.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.core.errors import ConfigError, MissingDependencyError

BACKENDS: tuple[str, ...] = ("tensorboard", "wandb", "trackio", "mlflow")
# the module each backend imports, and the extra of pyproject.toml that installs it
_MODULE = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}
_EXTRA = {"tensorboard": "tracking", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}
TRACKING_DIR = "tracking"
PROJECT = "irisbench"
MAX_IMAGES = 8
_NOT_VALUES = ("step", "time")


def _installed(backend: str) -> bool:
    return importlib.util.find_spec(_MODULE[backend]) is not None


def report_to_names(report_to: str | Sequence[str] | None, *, installed: bool = True) -> list[str]:
    """The backends ``report_to`` names (``"none"``/None/[]: none; ``"all"``: every installed one).

    An unknown name raises ``ConfigError``; with ``installed``, a known one that is not installed raises
    ``MissingDependencyError`` naming the extra to install. The trainer calls it before anything is written.
    """
    if report_to is None:
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    if not all(isinstance(n, str) for n in names):
        raise ConfigError(f"report_to must be a name or a list of names, got {report_to!r}")
    if names in (["none"], []):
        return []
    if names == ["all"]:
        return [b for b in BACKENDS if _installed(b)]
    valid = ("none", "all", *BACKENDS)
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        raise ConfigError(f"report_to: unknown backend {bad[0]!r}; valid: {', '.join(valid)} "
                          "('none' and 'all' alone)")
    for n in names:
        if installed and not _installed(n):
            raise MissingDependencyError(f"report_to: {n} is not installed; install it with "
                                         f"pip install 'irisbench[{_EXTRA[n]}]' or set report_to=none")
    return list(dict.fromkeys(names))


def scalars(rec: dict[str, Any]) -> dict[str, float]:
    """The values of one metrics.jsonl line that trackers log: finite numbers, less the step and time."""
    out = {}
    for k, v in rec.items():
        if k in _NOT_VALUES or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


def eval_scalars(results: dict[str, Any]) -> dict[str, float]:
    """An evaluation's ``results.json`` as tracker scalars: the headline with its interval, and per-tag scores."""
    scores = results.get("scores") or {}
    split = results.get("split", "eval")
    out: dict[str, float] = {}
    overall = scores.get("overall") or {}
    for key, name in (("score", "overall"), ("ci_low", "overall_ci_low"), ("ci_high", "overall_ci_high")):
        if isinstance(overall.get(key), (int, float)):
            out[f"eval/{split}/{name}"] = float(overall[key])
    for tag, d in (scores.get("tags") or {}).items():
        if isinstance(d, dict) and isinstance(d.get("score"), (int, float)):
            out[f"eval/{split}/tag/{tag}"] = float(d["score"])
    return {k: v for k, v in out.items() if math.isfinite(v)}


class Tracker:
    """The open backends of one run; ``log_step``, ``log_eval``, ``log_images``; a context manager."""

    def __init__(self, names: Sequence[str], run_dir: str | Path, config: dict[str, Any], start_step: int = 0):
        self.names = list(names)
        self.root = Path(run_dir) / TRACKING_DIR
        self._tb = self._wandb = self._mlflow = self._trackio = None
        if not self.names:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        run_name = Path(run_dir).resolve().name
        if "tensorboard" in self.names:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.root / "tensorboard"),
                                     purge_step=start_step + 1 if start_step else None)
        if "wandb" in self.names:
            import wandb

            self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), name=run_name,
                                     id=_stable_id(run_dir), resume="allow", dir=str(self.root), config=config,
                                     mode=os.environ.get("WANDB_MODE", "offline"))
        if "mlflow" in self.names:
            import mlflow

            mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or (self.root / "mlruns").resolve().as_uri())
            mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT))
            self._mlflow = mlflow
            mlflow.start_run(run_name=run_name)
            mlflow.log_params({k: str(v)[:500] for k, v in _flat(config).items()})
        if "trackio" in self.names:
            import trackio

            self._trackio = trackio
            trackio.init(project=os.environ.get("TRACKIO_PROJECT", PROJECT), name=run_name, config=config,
                         resume="allow")

    def log(self, values: dict[str, float], step: int) -> None:
        if not values:
            return
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(values, step=step)
        if self._mlflow is not None:
            self._mlflow.log_metrics({_mlflow_key(k): v for k, v in values.items()}, step=step)
        if self._trackio is not None:
            self._trackio.log(values, step=step)

    def log_step(self, rec: dict[str, Any]) -> None:
        """One metrics.jsonl line (its ``step`` is the axis)."""
        self.log({f"train/{k}": v for k, v in scalars(rec).items()}, int(rec["step"]))

    def log_eval(self, results: dict[str, Any], step: int) -> None:
        self.log(eval_scalars(results), step)

    def log_images(self, images: Sequence[np.ndarray], captions: Sequence[str], step: int,
                   tag: str = "samples/train") -> None:
        """Up to ``MAX_IMAGES`` uint8 (H, W, 3) images with their captions, where the backend takes images."""
        images, captions = list(images)[:MAX_IMAGES], list(captions)[:MAX_IMAGES]
        if not images:
            return
        if self._tb is not None:
            for i, (im, cap) in enumerate(zip(images, captions, strict=True)):
                self._tb.add_image(f"{tag}/{i}", np.asarray(im, dtype=np.uint8), step, dataformats="HWC")
                self._tb.add_text(f"{tag}/{i}/prompt", cap, step)
            self._tb.flush()
        if self._wandb is not None:
            import wandb

            self._wandb.log({tag: [wandb.Image(np.asarray(im), caption=c) for im, c in zip(images, captions,
                                                                                           strict=True)]}, step=step)
        if self._mlflow is not None:
            for i, im in enumerate(images):
                self._mlflow.log_image(np.asarray(im, dtype=np.uint8), key=_mlflow_key(f"{tag}/{i}"), step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._mlflow is not None:
            self._mlflow.end_run()
        if self._trackio is not None:
            self._trackio.finish()
        self._tb = self._wandb = self._mlflow = self._trackio = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _stable_id(run_dir: str | Path) -> str:
    """A wandb run id derived from the run folder's absolute path, so a resumed run continues its wandb run."""
    import hashlib

    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def _mlflow_key(key: str) -> str:
    """mlflow keys allow letters, digits, ``_ - . / space``: anything else becomes ``_``."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
