"""A tiny random open_clip model for tests of ``irisbench.metrics`` (docs/dependencies.md section 3).

``register_tiny_clip(folder)`` writes an open_clip JSON config (64 px ViT with 16 px patches, 2 layers,
32-d embeddings, a 16-token text context) and registers it with ``open_clip.add_model_config`` under
``TINY_CLIP``. Its 64 px input differs from the shapes world's 32 px images on purpose, so that the
resize in the model's preprocessing is exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_CLIP = "irisbench-test-tiny-clip"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def register_tiny_clip(folder: Path) -> str:
    import open_clip

    path = Path(folder) / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(path)
    return TINY_CLIP
