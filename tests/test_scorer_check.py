"""``irisbench scorers check``: the weights each real-model scorer would load, found or missing, without loading
them; on tiny saved folders (tests/perception_tiny.py), a fake Hugging Face cache and missing paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("transformers")
pytest.importorskip("open_clip")

from perception_tiny import (  # noqa: E402
    TINY_CLIP_NAME,
    build_tiny_blip_vqa,
    build_tiny_mask2former,
    build_tiny_owlv2,
    register_tiny_open_clip,
)

from irisbench.cli import app  # noqa: E402
from irisbench.scorer_check import check_scorers, check_transformers  # noqa: E402

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("perception")
    return {"m2f": build_tiny_mask2former(root / "m2f"), "blip": build_tiny_blip_vqa(root / "blip"),
            "owl": build_tiny_owlv2(root / "owl"), "clip": register_tiny_open_clip(root / "clip")}


def options(t: dict[str, Path], **changes: str) -> list[str]:
    values = {"detector_model": str(t["m2f"]), "blip": str(t["blip"]), "detector": str(t["owl"]),
              "clip_model": TINY_CLIP_NAME, "clip_pretrained": str(t["clip"]), **changes}
    return [x for k, v in values.items() for x in ("--scorer-option", f"{k}={v}")]


def test_complete_tiny_folders_pass(tiny):
    result = runner.invoke(app, ["scorers", "check", "--json", *options(tiny)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["scorer"] for r in rows] == ["geneval-mask2former"] * 2 + ["compbench-real"] * 3
    assert all(r["ok"] for r in rows)
    assert {r["path"] for r in rows} == {str(tiny["m2f"]), str(tiny["blip"]), str(tiny["owl"]), str(tiny["clip"])}
    assert rows[1]["source"] == f"open_clip {TINY_CLIP_NAME} (pretrained={tiny['clip']})"


def test_missing_pieces_are_named_and_exit_1(tiny, tmp_path: Path):
    blip = shutil.copytree(tiny["blip"], tmp_path / "blip")
    (blip / "model.safetensors").unlink()
    (blip / "tokenizer.json").unlink()
    missing = str(tmp_path / "no.safetensors")
    result = runner.invoke(app, ["scorers", "check", "--json", *options(tiny, blip=str(blip), clip_pretrained=missing)])
    assert result.exit_code == 1
    rows = {r["component"]: r for r in json.loads(result.stdout)}
    assert not rows["BLIP-VQA"]["ok"] and "model.safetensors" in rows["BLIP-VQA"]["detail"]
    assert "tokenizer.json" in rows["BLIP-VQA"]["detail"]
    assert not rows["CLIP"]["ok"] and "no such weights file" in rows["CLIP"]["detail"]
    assert rows["open-vocabulary detector (OWLv2)"]["ok"] and rows["detector (Mask2Former)"]["ok"]
    # clip_pretrained is an option of both scorers: the GenEval colour classifier misses it too
    assert not rows["color classifier (CLIP)"]["ok"]
    assert "3 of 5 model(s) missing" in result.stderr


def test_folder_checks(tiny, tmp_path: Path):
    m2f = shutil.copytree(tiny["m2f"], tmp_path / "m2f")
    assert check_transformers(str(m2f), False, None)[1:] == (True, "local folder: complete")
    (m2f / "preprocessor_config.json").unlink()
    assert "preprocessor_config.json" in check_transformers(str(m2f), False, None)[2]
    (m2f / "model.safetensors").rename(m2f / "pytorch_model.bin")
    assert "only pickle .bin weights" in check_transformers(str(m2f), False, None)[2]
    (m2f / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (m2f / "model-00001-of-00002.safetensors").write_bytes(b"x")
    detail = check_transformers(str(m2f), False, None)[2]
    assert "model-00002-of-00002.safetensors" in detail and "00001" not in detail
    assert check_transformers(str(tmp_path / "nope"), False, None) == (None, False,
                                                                       f"no such folder: {tmp_path / 'nope'}")


def test_hub_ids_are_looked_up_in_the_local_cache_only(tiny, tmp_path: Path):
    cache = tmp_path / "hub"
    repo = cache / "models--org--tiny-owl"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = shutil.copytree(tiny["owl"], repo / "snapshots" / "abc123")
    path, ok, detail = check_transformers("org/tiny-owl", True, str(cache))
    assert (path, ok, detail) == (str(snapshot), True, "Hugging Face cache: complete")
    path, ok, detail = check_transformers("org/not-there", True, str(cache))
    assert path is None and not ok and "not in the local Hugging Face cache" in detail
    rows = check_scorers(["compbench-real"], {"detector": "org/tiny-owl", "blip": str(tiny["blip"]),
                                              "clip_model": TINY_CLIP_NAME, "clip_pretrained": str(tiny["clip"])},
                         cache_dir=str(cache))
    assert [r.ok for r in rows] == [True, True, True]


def test_open_clip_checks(tiny):
    rows = check_scorers(["geneval-mask2former"], {"detector_model": str(tiny["m2f"]), "clip_model": "ViT-L-15"})
    assert not rows[1].ok and "not an open_clip model name" in rows[1].detail
    rows = check_scorers(["geneval-mask2former"], {"detector_model": str(tiny["m2f"]), "clip_pretrained": None})
    assert not rows[1].ok and "random weights" in rows[1].detail
    rows = check_scorers(["geneval-mask2former"], {"detector_model": str(tiny["m2f"]), "clip_pretrained": "nope"})
    assert not rows[1].ok and "neither an existing file nor a pretrained tag" in rows[1].detail


def test_bad_arguments_are_one_line():
    result = runner.invoke(app, ["scorers", "check", "--scorer-option", "detector_modle=/x"])
    assert result.exit_code == 2 and "detector_modle" in result.output
    result = runner.invoke(app, ["scorers", "check", "--scorer", "shapes-exact"])
    assert result.exit_code == 2 and "loads no model weights" in result.output
    result = runner.invoke(app, ["scorers", "check", "--scorer", "geneval-mask2formr"])
    assert result.exit_code == 2 and "mask2former" in result.output
