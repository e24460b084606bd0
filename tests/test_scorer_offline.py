"""The real-image scorers never reach the network: every load is local-only (irisbench sets the hub's offline
flags itself), ``eval`` runs the ``scorers check`` test before generating or reading anything, and a missing,
wrong or corrupt weight folder is one line naming the scorer, the path and the option to set. Tiny random
models saved locally (tests/perception_tiny.py) and missing folders; nothing is downloaded."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("transformers")
pytest.importorskip("open_clip")

from perception_tiny import TINY_CLIP_NAME, build_tiny_mask2former, register_tiny_open_clip  # noqa: E402

from irisbench.cli import app  # noqa: E402
from irisbench.core.errors import IrisbenchError  # noqa: E402

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_network(monkeypatch, tmp_path: Path) -> list:
    """Offline flags cleared (as on a user's machine), an empty Hugging Face cache, and every socket
    connection recorded and refused."""
    import huggingface_hub.constants as hub

    tried: list = []

    def connect(self, address):
        tried.append(address)
        raise OSError("network disabled in tests")

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: connect(None, address))
    return tried


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("offline")
    return {"m2f": build_tiny_mask2former(root / "m2f"), "clip": register_tiny_open_clip(root / "clip")}


def geneval_folder(root: Path, n_images: int = 4) -> Path:
    """A one-prompt GenEval folder of real-world (COCO) prompts, with images that are not even PNGs: the
    weights check must come before any image is read."""
    sample = root / "00000" / "samples"
    sample.mkdir(parents=True)
    meta = {"tag": "single_object", "include": [{"class": "bird", "count": 1}], "prompt": "a photo of a bird"}
    (root / "00000" / "metadata.jsonl").write_text(json.dumps(meta) + "\n")
    for k in range(n_images):
        Image.fromarray(np.full((64, 64, 3), 40 * k, dtype=np.uint8)).save(sample / f"{k:04d}.png")
    return root


def one_line(output: str) -> str:
    """The error line; nothing else but (when the plan was made) the run header before it."""
    lines = [x for x in output.splitlines() if x.strip() and not x.startswith("eval ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def test_loaders_set_offline_flags_and_never_connect(no_network):
    import os

    from irisbench.scorers.compbench_real import BlipVQA, ClipCosine, OpenVocabDetector
    from irisbench.scorers.geneval_real import ClipColorClassifier, Mask2FormerDetector

    for load in (lambda: Mask2FormerDetector("facebook/mask2former-swin-small-coco-instance"),
                 lambda: BlipVQA("Salesforce/blip-vqa-capfilt-large"),
                 lambda: OpenVocabDetector("google/owlv2-base-patch16-ensemble"),
                 lambda: ClipColorClassifier.from_open_clip("ViT-B-32", "openai"),
                 lambda: ClipCosine.from_open_clip("ViT-B-32", "openai")):
        with pytest.raises(IrisbenchError) as e:
            load()
        assert "\n" not in str(e.value) and "never downloads" in str(e.value)
    assert no_network == []
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_eval_with_default_hub_ids_is_one_line_before_reading_images(no_network, tmp_path: Path):
    folder = geneval_folder(tmp_path / "folder")
    (folder / "00000" / "samples" / "0001.png").write_bytes(b"not a png")  # never read: the check comes first
    result = runner.invoke(app, ["eval", "--images", str(folder), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    line = one_line(result.output)
    assert "geneval-mask2former" in line and "facebook/mask2former-swin-small-coco-instance" in line
    assert "--scorer-option detector_model=" in line and "--scorer-option clip_pretrained=" in line
    assert no_network == []
    assert not (tmp_path / "run").exists()


def test_eval_with_a_wrong_local_path_names_scorer_path_and_option(tiny, tmp_path: Path):
    folder = geneval_folder(tmp_path / "folder")
    wrong = tmp_path / "models" / "mask2former"
    result = runner.invoke(app, ["eval", "--images", str(folder), "--scorer-option", f"detector_model={wrong}",
                                 "--scorer-option", f"clip_model={TINY_CLIP_NAME}",
                                 "--scorer-option", f"clip_pretrained={tiny['clip']}",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    line = one_line(result.output)
    assert "geneval-mask2former" in line and str(wrong) in line and "--scorer-option detector_model=" in line
    assert "clip_pretrained" not in line  # the CLIP weights are there
    assert not (tmp_path / "run").exists()


def test_a_corrupt_weights_file_is_one_line_and_a_new_out_folder_is_removed(tiny, tmp_path: Path):
    folder = geneval_folder(tmp_path / "folder")
    m2f = shutil.copytree(tiny["m2f"], tmp_path / "m2f")
    (m2f / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    args = ["eval", "--images", str(folder), "--allow-missing", "--scorer-option", f"detector_model={m2f}",
            "--scorer-option", f"clip_model={TINY_CLIP_NAME}", "--scorer-option", f"clip_pretrained={tiny['clip']}"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    line = one_line(result.output)
    assert "geneval-mask2former" in line and str(m2f) in line and "detector_model" in line
    assert not (tmp_path / "run").exists()  # created by this invocation, left without output
    (tmp_path / "mine").mkdir()
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "mine")])
    assert result.exit_code == 2 and (tmp_path / "mine").is_dir()  # the user's own folder is kept


def test_eval_header_names_world_scorer_and_images_per_prompt(tmp_path: Path):
    result = runner.invoke(app, ["eval", "--policy", "oracle", "--limit", "1", "-n", "2",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    head = result.output.splitlines()[0]
    assert "world shapes" in head and "scorer shapes-exact" in head and "2 images per prompt" in head
