"""Loading the shapes-world CLIP: the shipped checkpoint or a folder made by ``train_shapes_clip``.

The shapes CLIP is a small open_clip model trained contrastively on rendered scenes and their captions; it is
the default CLIP of the shapes world, for CLIP score and FID/KID features (``load_clip("shapes-clip")``).
The shipped checkpoint lives in ``irisbench/assets/shapes-clip/``: ``shapes-clip.json`` (an open_clip model
config, registered with ``open_clip.add_model_config`` under its file stem), ``model.safetensors`` (weights
stored as float16 to stay small, loaded into float32), ``training.json`` and a README with the exact call.

This module only loads; training, its data and the checks of a trained model are in ``shapes_clip_train``
(which imports FID and the CLIP score; keeping them apart keeps ``clip_score -> shapes_clip`` free of cycles).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from irisbench.core.errors import IrisbenchError

NAME = "shapes-clip"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapes-clip"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "training.json"
FORMAT = "irisbench.shapes_clip.v1"


class ShapesClipError(IrisbenchError, ValueError):
    """A bad shapes-CLIP checkpoint folder, config or training argument."""


_REGISTERED: dict[str, str] = {}  # config name -> canonical JSON of the config registered under it


def register_config(path: str | Path) -> str:
    """Register an open_clip model config file (name = file stem) and return the name.

    Refuses a name already registered (by irisbench or open_clip) with a different architecture.
    """
    import open_clip

    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ShapesClipError(f"cannot read the shapes-clip config {path}: {e}") from None
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
    if missing:
        raise ShapesClipError(f"{path}: open_clip config lacks key(s) {missing}")
    name, canon = path.stem, json.dumps(cfg, sort_keys=True)
    if _REGISTERED.get(name) == canon:
        return name
    existing = open_clip.get_model_config(name)
    if name in _REGISTERED or (existing is not None and json.dumps(existing, sort_keys=True) != canon):
        raise ShapesClipError(f"{path}: an open_clip model named {name!r} is already registered with a different "
                              "architecture; give this config file another name")
    open_clip.add_model_config(path)
    _REGISTERED[name] = canon
    return name


def _find_checkpoint(path: str | Path | None) -> tuple[Path, Path]:
    """(config json, weights) of a checkpoint folder or weights file; None means the shipped one."""
    p = SHIPPED_DIR if path is None else Path(path)
    folder = p.parent if p.is_file() else p
    weights = p if p.is_file() else p / WEIGHTS_FILE
    if not weights.is_file():
        hint = " (the shipped checkpoint is missing: reinstall irisbench or run `irisbench pretrain-clip`)" \
            if path is None else ""
        raise ShapesClipError(f"no shapes-clip weights at {weights}{hint}")
    if weights.suffix != ".safetensors":
        raise ShapesClipError(f"shapes-clip weights must be a .safetensors file, got {weights}")
    configs = [c for c in sorted(folder.glob("*.json")) if c.name != META_FILE]
    if len(configs) != 1:
        raise ShapesClipError(f"{folder} must hold exactly one open_clip config .json besides {META_FILE}, "
                              f"found {[c.name for c in configs]}")
    return configs[0], weights


def load_shapes_clip(path: str | Path | None = None, *, device: str = "cpu", truncate: bool = False) -> Any:
    """The shapes CLIP as a ``ClipModel``: the shipped checkpoint, or a folder/weights file from training."""
    import open_clip

    from irisbench.metrics.clip_model import ClipModel, file_sha256

    config, weights = _find_checkpoint(path)
    name = register_config(config)
    net, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(weights), device=device)
    net.eval()
    meta_path = weights.parent / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    shipped = path is None
    return ClipModel(model=net, preprocess=preprocess, tokenizer=open_clip.get_tokenizer(name), backbone=name,
                     pretrained="shipped" if shipped else str(path), weights_file=str(weights),
                     weights_sha256=file_sha256(weights), device=device, truncate=truncate,
                     extra={"trained_steps": meta.get("steps"), "format": meta.get("format")})
