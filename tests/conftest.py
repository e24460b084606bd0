"""Shared test setup: offline hubs, the reference prompt folder, small fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def reference_dir() -> Path:
    env = os.environ.get("IRISBENCH_REFERENCE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture
def reference() -> Path:
    path = reference_dir()
    if not path.is_dir():
        pytest.skip(f"official reference prompt files not found at {path}")
    return path
