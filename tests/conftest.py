"""Shared test setup: offline hubs, the reference prompt folder, small fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The suite's references are CPU computations: everything that resolves the default device
# (irisbench.core.devices) runs on the CPU, also on a GPU host, and torchrun tests use gloo; tests marked
# ``gpu`` (tests/test_gpu.py) pass device="cuda" explicitly.
os.environ.setdefault("IRISBENCH_DEVICE", "cpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.gpu`` tests where no CUDA GPU is visible."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def reference_dir() -> Path:
    env = os.environ.get("IRISBENCH_REFERENCE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture
def reference() -> Path:
    path = reference_dir()
    if not path.is_dir():
        pytest.skip(f"official reference prompt files not found at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random shapes-LM policy folder (1 layer, 32 wide) for trainer tests."""
    from irisbench.policies.shapes_lm import ShapesLMPolicy
    from irisbench.world.tokenizer import fit_patch_tokenizer

    tok = fit_patch_tokenizer(n_scenes=1500, seed=0)
    pol = ShapesLMPolicy.create(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=0)
    path = tmp_path_factory.mktemp("tiny") / "policy"
    pol.save(path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny models
    gain nothing from intra-op threads, and on a shared 2-core machine extra threads only spin-wait."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random open_clip model (``clip_tiny.py``), seeded, loaded through ``irisbench``'s loader."""
    import torch
    from clip_tiny import TINY_CLIP, register_tiny_clip

    from irisbench.metrics.clip_score import load_clip

    register_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))
    torch.manual_seed(0)
    return load_clip(TINY_CLIP, None)


@pytest.fixture(scope="module")
def tiny_janus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random Janus folder (tests/janus_tiny.py) and a three-line prompts file, built once per module."""
    from janus_tiny import build_tiny_janus

    root = tmp_path_factory.mktemp("janus")
    prompts = root / "prompts.txt"
    prompts.write_text("a red apple on a table\ntwo cats\nthree blue cups\n")
    return build_tiny_janus(root / "janus"), prompts
