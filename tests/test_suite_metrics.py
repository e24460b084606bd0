"""``irisbench eval --metrics clip,fid,kid``: CLIP score in every record, FID/KID against ground-truth renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from irisbench.cli import app
from irisbench.evaluation.evaluate import EvalError, EvalOptions, evaluate
from irisbench.metrics.suite_metrics import MetricOptions, parse_metric_names

runner = CliRunner()


@pytest.mark.slow
def test_oracle_is_closer_to_real_scenes_than_random(tmp_path: Path) -> None:
    res = {}
    for policy in ("oracle", "random"):
        opts = EvalOptions(policy=policy, limit=24, images_per_prompt=2,
                           metrics=MetricOptions(("clip", "fid"), clip_scale="raw"))
        res[policy] = evaluate(opts, tmp_path / policy, progress=False)
    assert res["oracle"]["metrics"]["fid"] < res["random"]["metrics"]["fid"] / 2
    assert res["oracle"]["metrics"]["reference"]["n_real"] == res["oracle"]["counts"]["actual"] == 48
    records = [json.loads(x) for x in (tmp_path / "oracle" / "records.jsonl").read_text().splitlines()]
    mean = sum(r["clip_score"] for r in records) / len(records)
    clip = res["oracle"]["metrics"]["clip"]
    assert clip["mean"] == pytest.approx(mean) and clip["ci_low"] <= mean <= clip["ci_high"]
    assert res["oracle"]["metrics"]["identity"]["clip"]["score_scale"] == "raw"


def test_fid_references_take_the_policy_s_world_look(tmp_path: Path) -> None:
    """A textures-world policy is compared with shaded ground-truth renders (the shading drawn from the same
    held-out stream after the scene), a shapes-world policy with flat ones."""
    import numpy as np

    from irisbench.metrics.suite_metrics import SuiteMetrics
    from irisbench.policies.base import derive_seed
    from irisbench.world.sampler import scene_for
    from irisbench.world.scene import render
    from irisbench.world.textures import render_world

    items = [{"prompt": "a photo of a red circle", "tag": "single_object",
              "include": [{"class": "circle", "count": 1, "color": "red"}]}]
    records = [{"prompt_index": 0, "sample_index": s} for s in range(3)]
    flat, src_flat = SuiteMetrics(MetricOptions(("fid",)), "shapes")._reference(records, items, 5)
    shaded, src = SuiteMetrics(MetricOptions(("fid",)), "shapes", render_world="textures")._reference(records, items, 5)
    assert "textures world" in src and "textures" not in src_flat
    for r, a, b in zip(records, flat, shaded, strict=True):
        rng = np.random.default_rng(derive_seed(5, "fid-reference", 0, r["sample_index"]))
        scene = scene_for(items[0], rng)
        np.testing.assert_array_equal(a, render(scene))
        np.testing.assert_array_equal(b, render_world([scene], "textures", rng)[0])
        assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="world"):
        SuiteMetrics(MetricOptions(("fid",)), "shapes", render_world="marble")._reference(records, items, 5)
    # eval passes the policy's look through: the shipped textures base gets shaded references
    res = evaluate(EvalOptions(policy="textures-base", limit=1, images_per_prompt=2,
                               metrics=MetricOptions(("fid",))), tmp_path / "tex", progress=False)
    assert "textures world" in res["metrics"]["reference"]["source"]


def test_metric_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metric_names("clip,fd")
    with pytest.raises(EvalError, match="save-images"):
        evaluate(EvalOptions(policy="oracle", limit=2, save_images=False, metrics=MetricOptions(("fid",))),
                 tmp_path / "x", progress=False)
    result = runner.invoke(app, ["eval", "--policy", "oracle", "--limit", "2", "--metrics", "clip,fd",
                                 "--out", str(tmp_path / "y")])
    assert result.exit_code != 0 and "unknown metric" in result.output
    result = runner.invoke(app, ["eval", "--policy", "oracle", "--limit", "2", "--metrics", "clip",
                                 "--clip-scale", "200", "--out", str(tmp_path / "z")])
    assert result.exit_code != 0 and "scale" in result.output


@pytest.mark.slow
def test_pretrain_clip_command_writes_a_loadable_model(tmp_path: Path) -> None:
    out = tmp_path / "clip"
    result = runner.invoke(app, ["pretrain-clip", "--steps", "2", "--batch-size", "8", "--out", str(out),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    from irisbench.metrics.clip_score import load_clip

    clip = load_clip("shapes-clip", out / "model.safetensors")
    assert clip.encode_texts(["a photo of a red circle"]).shape[0] == 1


def test_truncated_or_foreign_images_are_clear_errors(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from irisbench.metrics.suite_metrics import read_png

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(good)
    assert read_png(good).shape == (32, 32, 3)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ValueError, match="cut.png"):
        read_png(cut)
    jpg = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(jpg, format="JPEG")
    with pytest.raises(ValueError, match="not a PNG"):
        read_png(jpg)
    # an image removed from a finished run is reported, not silently skipped
    run = tmp_path / "run"
    opts = EvalOptions(policy="oracle", limit=2, images_per_prompt=2)
    evaluate(opts, run, progress=False)
    records = [json.loads(x) for x in (run / "records.jsonl").read_text().splitlines()]
    (run / records[0]["image"]).unlink()
    from irisbench.metrics.suite_metrics import SuiteMetrics

    with pytest.raises(ValueError, match="1 of 4 are missing"):
        SuiteMetrics(MetricOptions(("fid",)), "shapes").finalize(run, records, [{}] * 2, 0)
