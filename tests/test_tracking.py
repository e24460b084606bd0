"""Experiment tracking (report_to): TensorBoard event files read back equal metrics.jsonl and the in-training
evaluations; wandb and mlflow adapters offline by default; a backend that is not installed is one line."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from irisbench.cli import app
from irisbench.core.errors import MissingDependencyError
from irisbench.train.config import ConfigError, resolve_config
from irisbench.train.tracking import eval_scalars, report_to_names, scalars
from irisbench.train.trainer import GRPOTrainer, eval_folder, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

ARGS = ["steps=2", "prompts_per_step=2", "num_generations=2", "eval_every=2", "eval_prompts=4",
        "eval_images_per_prompt=1", "checkpoint_every=2", "lr=1e-3", "num_threads=1"]


def _f32(x: float) -> float:
    return float(np.float32(x))  # TensorBoard stores scalars as float32


def test_tensorboard_event_file_holds_the_metrics_and_evaluations(tiny_policy_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    GRPOTrainer(resolve_config("iris-shapes", [f"policy={tiny_policy_dir}", *ARGS, "report_to=tensorboard"]),
                run, progress=False).train()
    acc = EventAccumulator(str(run / "tracking" / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    rows = read_metrics(run)
    tags = set(acc.Tags()["scalars"])
    want = {f"train/{k}" for r in rows for k, v in r.items() if k not in ("step", "time") and v is not None}
    assert want <= tags and "train/reward_mean" in want and "train/kl" in want and "train/sc_image" in want
    for tag in want:
        got = {e.step: e.value for e in acc.Scalars(tag)}
        expect = {r["step"]: _f32(r[tag[6:]]) for r in rows if r.get(tag[6:]) is not None}
        assert got == expect, tag
    results = json.loads((eval_folder(run, "val", 2) / "results.json").read_text())
    overall = results["scores"]["overall"]
    assert [(e.step, e.value) for e in acc.Scalars("eval/val/overall")] == [(2, _f32(overall["score"]))]
    assert [e.value for e in acc.Scalars("eval/val/overall_ci_low")] == [_f32(overall["ci_low"])]
    for tag, d in results["scores"]["tags"].items():
        assert [e.value for e in acc.Scalars(f"eval/val/tag/{tag}")] == [_f32(d["score"])]
    images = [t for t in acc.Tags()["images"] if t.startswith("samples/train/")]
    assert len(images) == 4  # the step's 2 x 2 rollouts
    im = acc.Images(images[0])[0]
    assert im.step == 2 and im.width > 0 and im.height > 0


def test_a_backend_that_is_not_installed_is_one_line_before_anything_is_written(tiny_policy_dir: Path,
                                                                                tmp_path: Path,
                                                                                monkeypatch) -> None:
    import irisbench.train.tracking as tracking

    monkeypatch.setattr(tracking, "_installed", lambda b: b == "tensorboard")
    run = tmp_path / "run"
    with pytest.raises(MissingDependencyError, match=r"report_to: wandb is not installed; install it with "
                                                     r"pip install 'irisbench\[wandb\]'"):
        GRPOTrainer(resolve_config("iris-shapes", [f"policy={tiny_policy_dir}", *ARGS,
                                                   "report_to=[tensorboard, wandb]"]), run, progress=False)
    assert not run.exists()
    result = CliRunner().invoke(app, ["train", "--out", str(run), "--no-progress", "--set",
                                      f"policy={tiny_policy_dir}", "--set", "report_to=mlflow"])
    assert result.exit_code == 2 and "irisbench[mlflow]" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not run.exists()


def test_report_to_names() -> None:
    assert report_to_names("none") == [] and report_to_names([]) == [] and report_to_names(None) == []
    assert report_to_names("tensorboard") == ["tensorboard"]
    assert "tensorboard" in report_to_names("all")
    with pytest.raises(ConfigError, match="unknown backend 'tensorbord'"):
        resolve_config("iris-shapes", ["report_to=tensorbord"])
    assert resolve_config("iris-shapes", []).report_to == "none"


def test_scalars_leave_out_the_axis_and_non_finite_values() -> None:
    assert scalars({"step": 3, "time": 1e9, "loss": 0.5, "kl": None, "x": float("nan"), "n": 2, "ok": True}) == \
        {"loss": 0.5, "n": 2.0}
    res = {"split": "val", "scores": {"overall": {"score": 0.5, "ci_low": 0.25, "ci_high": None},
                                      "tags": {"counting": {"score": 0.75}}}}
    assert eval_scalars(res) == {"eval/val/overall": 0.5, "eval/val/overall_ci_low": 0.25,
                                 "eval/val/tag/counting": 0.75}


def _fake(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(mod, k, v)
    return mod


def test_wandb_and_mlflow_run_offline_and_log_the_metrics(tiny_policy_dir: Path, tmp_path: Path,
                                                          monkeypatch) -> None:
    """Stand-ins record the calls: wandb's mode is offline and its files stay in the run folder; mlflow logs to
    a file store in the run folder; both receive every metrics.jsonl value at its step."""
    calls: dict[str, list] = {"wandb.init": [], "wandb.log": [], "mlflow": [], "mlflow.metrics": [],
                              "mlflow.images": []}

    class Run:
        def log(self, values, step):
            calls["wandb.log"].append((step, values))

        def finish(self):
            calls["wandb.log"].append("finish")

    wandb = _fake("wandb", init=lambda **kw: calls["wandb.init"].append(kw) or Run(),
                  Image=lambda im, caption: ("image", np.asarray(im).shape, caption))
    mlflow = _fake("mlflow", set_tracking_uri=lambda uri: calls["mlflow"].append(("uri", uri)),
                   set_experiment=lambda name: calls["mlflow"].append(("experiment", name)),
                   start_run=lambda run_name: calls["mlflow"].append(("start", run_name)),
                   log_params=lambda p: calls["mlflow"].append(("params", p)),
                   log_metrics=lambda m, step: calls["mlflow.metrics"].append((step, m)),
                   log_image=lambda im, key, step: calls["mlflow.images"].append((key, step)),
                   end_run=lambda: calls["mlflow"].append(("end",)))
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    for var in ("WANDB_MODE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    run = tmp_path / "run"
    GRPOTrainer(resolve_config("iris-shapes", [f"policy={tiny_policy_dir}", *ARGS, "report_to=[wandb, mlflow]"]),
                run, progress=False).train()
    (init,) = calls["wandb.init"]
    assert init["mode"] == "offline" and Path(init["dir"]) == run / "tracking"
    assert init["config"]["report_to"] == ["wandb", "mlflow"]
    uri = dict(x for x in calls["mlflow"] if len(x) == 2)["uri"]
    assert uri == (run / "tracking" / "mlruns").resolve().as_uri() and calls["mlflow"][-1] == ("end",)
    rows = read_metrics(run)
    train_logs = [(s, v) for s, v in calls["wandb.log"][:-1] if "train/loss" in v]
    assert [s for s, _ in train_logs] == [1, 2]
    for (step, logged), row in zip(train_logs, rows, strict=True):
        assert step == row["step"]
        assert logged == {f"train/{k}": float(v) for k, v in row.items()
                          if k not in ("step", "time") and v is not None}
    assert any("eval/val/overall" in v for _, v in calls["mlflow.metrics"])
    assert len([x for x in calls["wandb.log"][:-1] if "samples/train" in x[1]]) == 1
    assert len(calls["mlflow.images"]) == 4 and calls["wandb.log"][-1] == "finish"
