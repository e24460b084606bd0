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
from irisbench.scorers.weights import check_scorers, check_transformers  # noqa: E402

runner = CliRunner()
REAL = ["--scorer", "geneval-mask2former", "--scorer", "compbench-real"]  # the default adds pickscore and hpsv2
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
    result = runner.invoke(app, ["scorers", "check", "--json", *REAL, *options(tiny)])
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
    result = runner.invoke(app, ["scorers", "check", "--json", *REAL, *options(tiny, blip=str(blip),
                                                                               clip_pretrained=missing)])
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


def fake_hub_cache(root: Path, repos: dict[str, Path]) -> Path:
    """A Hugging Face hub cache holding ``repos`` (repo id -> folder copied in as its snapshot)."""
    for repo_id, folder in repos.items():
        repo = root / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("abc123")
        shutil.copytree(folder, repo / "snapshots" / "abc123")
    return root


def ls_row(output: str, name: str) -> str:
    """The ``irisbench ls`` row of ``name`` with its wrapped continuation lines, joined."""
    lines = output.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith(f"│ {name} "))
    rows = [lines[start]]
    for x in lines[start + 1:]:
        if not x.startswith("│ " + " " * len(name)):
            break
        rows.append(x)
    cells = [[c.strip() for c in r.strip().strip("│").split("│")] for r in rows]
    return " ".join(" ".join(col[k] for col in cells if col[k]) for k in range(len(cells[0])))


def test_ls_shows_what_the_check_says(tiny, tmp_path: Path, monkeypatch):
    import huggingface_hub.constants as hub

    from irisbench.cli import shared

    monkeypatch.setattr(shared.console, "width", 200)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty"))
    result = runner.invoke(app, ["ls"])
    assert result.exit_code == 0, result.output
    for name, missing in (("geneval-mask2former", "detector (Mask2Former)"),
                          ("compbench-real", "BLIP-VQA, open-vocabulary detector (OWLv2)")):
        row = ls_row(result.output, name)
        assert "ready" not in row and "no weights" in row and f"weights missing: {missing}" in row
        assert "irisbench scorers check" in row
    assert "ready" in ls_row(result.output, "shapes-exact")

    # every default model in the local cache (the CLIP file only needs to be there): ready
    clip_files = tmp_path / "clip-l"
    clip_files.mkdir()
    shutil.copy(tiny["clip"], clip_files / "open_clip_model.safetensors")
    cache = fake_hub_cache(tmp_path / "hub", {"facebook/mask2former-swin-small-coco-instance": tiny["m2f"],
                                              "timm/vit_large_patch14_clip_224.openai": clip_files})
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    result = runner.invoke(app, ["ls"])
    assert ls_row(result.output, "geneval-mask2former").split()[:2] == ["geneval-mask2former", "ready"]
    assert "no weights" in ls_row(result.output, "compbench-real")


def test_check_table_is_readable_at_80_columns(tiny, tmp_path: Path, monkeypatch):
    from irisbench.cli import shared

    monkeypatch.setattr(shared.console, "width", 80)
    result = runner.invoke(app, ["scorers", "check", *options(tiny, blip=str(tmp_path / "no-blip"))])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert max(len(x) for x in lines) <= 80
    text = "\n".join(lines)
    # names, components and option keys are never cut inside a word
    for word in ("geneval-mask2former", "compbench-real", "detector (Mask2Former)", "color classifier (CLIP)",
                 "BLIP-VQA", "--scorer-option detector_model", "--scorer-option blip", "MISSING"):
        assert word in text, word
    assert "no such folder" in text
