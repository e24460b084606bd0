"""Where the shipped shapes-world base checkpoint lives, and loading it as the ``shapes-base`` policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SHIPPED_BASE = Path(__file__).resolve().parent.parent / "assets" / "shapes-base"


def shipped_base_available() -> bool:
    return (SHIPPED_BASE / "model.safetensors").is_file()


def load_shipped_base(**kwargs: Any) -> Any:
    if not shipped_base_available():
        raise FileNotFoundError(f"the shipped shapes base checkpoint is missing from {SHIPPED_BASE}; "
                                "reinstall irisbench or train one with `irisbench pretrain`")
    from irisbench.policies.shapes_lm import ShapesLMPolicy

    return ShapesLMPolicy.load(SHIPPED_BASE, **kwargs)
