"""Metrics that fit the sample, metrics on an existing run (``irisbench metrics``), ``eval --allow-config-change``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from irisbench.cli import app
from irisbench.evaluation.evaluate import EvalError, EvalOptions, evaluate
from irisbench.evaluation.run_metrics import MetricsError, check_config_change, compute_run_metrics
from irisbench.metrics.suite_metrics import FID_MIN_IMAGES, MetricOptions, fid_variance_note, kid_subset_size_for

pytest.importorskip("open_clip")
pytest.importorskip("torchmetrics")
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


def _opts(names: tuple[str, ...] = (), **kw) -> EvalOptions:
    return EvalOptions(policy="oracle", limit=3, images_per_prompt=2, metrics=MetricOptions(names), **kw)


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "records.jsonl").read_text().splitlines()]


def _mtimes(run: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted((run / "images").rglob("*.png"))}


def test_kid_subset_size_adapts_to_the_sample():
    assert kid_subset_size_for(32, 32) == (16, "auto: min(100, n // 2) with n = 32")
    assert kid_subset_size_for(500, 400)[0] == 100
    assert kid_subset_size_for(201, 1000)[0] == 100
    assert kid_subset_size_for(199, 1000)[0] == 99
    assert kid_subset_size_for(3, 10)[0] == 2
    assert kid_subset_size_for(2, 2)[0] == 2
    assert kid_subset_size_for(32, 32, requested=7) == (7, "given")
    with pytest.raises(ValueError, match="at least 2 real and 2 generated images, got 1 real"):
        kid_subset_size_for(1, 50)


def test_fid_high_variance_note():
    assert fid_variance_note(FID_MIN_IMAGES, FID_MIN_IMAGES, 128) is None
    note = fid_variance_note(FID_MIN_IMAGES - 1, 10_000, 128)
    assert note is not None and f"{FID_MIN_IMAGES - 1} real" in note and "singular" not in note
    assert "singular" in fid_variance_note(100, 100, 128)
    assert "singular" in fid_variance_note(600, 600, 1024)


def test_small_run_gets_kid_and_a_flagged_fid(tmp_path: Path):
    res = evaluate(_opts(("clip", "fid", "kid")), tmp_path / "run", progress=False)
    m = res["metrics"]
    assert m["reference"]["n_real"] == m["reference"]["n_fake"] == 6
    assert m["kid"]["subset_size"] == 3 and m["kid"]["subsets"] == 100
    assert m["fid_high_variance"] is True and "6 real and 6 generated" in m["fid_warning"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["metrics"]["kid"]["subset_size"] == 3


def test_metrics_on_an_existing_run_equal_the_ones_eval_computes(tmp_path: Path):
    with_metrics = evaluate(_opts(("clip", "fid", "kid")), tmp_path / "a", progress=False)["metrics"]
    evaluate(_opts(), tmp_path / "b", progress=False)
    assert "clip_score" not in _records(tmp_path / "b")[0]
    before = _mtimes(tmp_path / "b")
    res = compute_run_metrics(tmp_path / "b", MetricOptions(("clip", "fid", "kid")))
    assert _mtimes(tmp_path / "b") == before  # nothing generated again
    for key in ("fid", "fid_high_variance"):
        assert res["metrics"][key] == with_metrics[key]
    assert res["metrics"]["kid"] == with_metrics["kid"]
    assert res["metrics"]["clip"] == with_metrics["clip"]
    assert [r["clip_score"] for r in _records(tmp_path / "b")] == [r["clip_score"] for r in _records(tmp_path / "a")]
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["metrics"]["computed"]["by"] == "irisbench metrics" and saved["scores"] == res["scores"]
    import pandas as pd

    assert "clip_score" in pd.read_parquet(tmp_path / "b" / "records.parquet").columns


def test_a_metrics_failure_keeps_the_images_and_the_metrics_command_finishes_the_run(tmp_path: Path, monkeypatch):
    import irisbench.metrics.fid as fid_module

    def broken_kid(*args, **kwargs):
        raise fid_module.SampleSizeError("KID exploded")

    monkeypatch.setattr(fid_module, "kid", broken_kid)
    with pytest.raises(MetricsError, match="KID exploded.*are kept in.*irisbench metrics"):
        evaluate(_opts(("fid", "kid")), tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "KID exploded" in saved["metrics_error"] and "metrics" not in saved
    assert saved["counts"]["complete"] and saved["scores"]["overall"]["score"] == 1.0
    assert len(_mtimes(tmp_path / "run")) == 6
    monkeypatch.undo()
    result = runner.invoke(app, ["metrics", str(tmp_path / "run"), "--metrics", "fid,kid"])
    assert result.exit_code == 0, result.output
    assert "subset size 3" in result.output and "high-variance" in result.output
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "metrics_error" not in saved and saved["metrics"]["kid"]["subset_size"] == 3


def test_allow_config_change_accepts_metric_changes_without_regenerating(tmp_path: Path):
    run = tmp_path / "run"
    evaluate(_opts(("clip",)), run, progress=False)
    raw = [r["clip_score"] for r in _records(run)]
    before = _mtimes(run)
    with pytest.raises(ValueError, match="config differs"):
        evaluate(_opts(("clip", "kid")), run, progress=False)
    opts = _opts(("clip", "kid"), allow_config_change=True)
    opts.metrics.clip_scale = "2.5"
    res = evaluate(opts, run, progress=False)
    assert res["counts"]["generated_now"] == 0 and _mtimes(run) == before
    assert res["metrics"]["kid"]["subset_size"] == 3 and res["metrics"]["clip"]["scale"] == "2.5"
    # the per-image CLIP scores were recomputed on the new scale: 2.5 * max(cos, 0)
    assert [r["clip_score"] for r in _records(run)] == pytest.approx([2.5 * max(v, 0.0) for v in raw])
    assert list(run.glob("config.*.yaml")), "the old config is kept"


@pytest.mark.parametrize("change, key", [({"seed": 1}, "seed"), ({"images_per_prompt": 3}, "images_per_prompt"),
                                         ({"cfg": 2.0}, "sampling.cfg"), ({"policy": "random"}, "policy.name")])
def test_allow_config_change_refuses_changes_to_the_images(tmp_path: Path, change, key):
    run = tmp_path / "run"
    evaluate(_opts(), run, progress=False)
    before = _mtimes(run)
    opts = _opts(("clip",), allow_config_change=True)
    for k, v in change.items():
        setattr(opts, k, v)
    with pytest.raises(EvalError, match=f"refused: .*{key}"):
        evaluate(opts, run, progress=False)
    assert _mtimes(run) == before and "clip_score" not in _records(run)[0]


def test_check_config_change_names_scorer_options():
    saved = {"seed": 0, "scorer_options": {"threshold": 0.3}, "metrics": {"names": ["clip"]}}
    assert check_config_change(saved, {**saved, "metrics": {"names": ["clip", "fid"]}}) == ["metrics.names"]
    with pytest.raises(EvalError, match="refused: scorer_options.threshold .*per-image scores"):
        check_config_change(saved, {**saved, "scorer_options": {"threshold": 0.5}})


def test_metrics_command_errors_are_one_line(tmp_path: Path):
    result = runner.invoke(app, ["metrics", str(tmp_path), "--metrics", "fid"])
    assert result.exit_code != 0 and "not an irisbench run" in result.output
    run = tmp_path / "run"
    evaluate(_opts(save_images=False), run, progress=False)
    result = runner.invoke(app, ["metrics", str(run), "--metrics", "kid"])
    assert result.exit_code != 0 and "no-save-images" in result.output
    result = runner.invoke(app, ["metrics", str(run), "--metrics", "fd"])
    assert result.exit_code != 0 and "unknown metric" in result.output
