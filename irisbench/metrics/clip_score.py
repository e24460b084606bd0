"""CLIP models loaded offline with open_clip, and the CLIP score of images against their prompts.

``load_clip`` accepts three kinds of weights and never downloads anything:

- ``model="shapes-clip"``: the shapes-world CLIP trained and shipped by irisbench (``shapes_clip.py``), the
  default CLIP of the shapes world; ``pretrained`` may name another checkpoint folder made by
  ``train_shapes_clip``;
- an open_clip backbone name (``open_clip.list_models()``) with a local weights file: ``.safetensors``
  preferred; pickles (``.pt``, ``.pth``, ``.bin``, ``.ckpt``) only with ``allow_pickle=True``;
- an open_clip backbone name with a pretrained tag (e.g. ``"laion2b_s34b_b79k"``), only if the tag's file
  is already in the local Hugging Face or open_clip cache;
- ``pretrained=None`` on a backbone name gives random weights (tests only).

``clip_score`` is the cosine similarity of each image's and its prompt's embeddings, reported on an
explicit scale (``SCORE_SCALES``): raw cosine; ``max(100 cos, 0)`` as torchmetrics' ``CLIPScore`` does;
or ``2.5 max(cos, 0)``, the CLIP-S of Hessel et al. (2021). We compute it ourselves rather than through
torchmetrics' ``CLIPScore``, which cannot load open_clip models and fails with transformers 5
(docs/dependencies.md section 4). Store ``score_identity(clip, scale)`` next to any reported number.

Departure from the usual practice: a prompt longer than the text tower's context raises
``PromptTooLongError`` instead of being silently truncated (pass ``truncate=True`` to truncate).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.core.errors import IrisbenchError, UsageError, did_you_mean
from irisbench.metrics.clip_model import (  # noqa: F401  (re-exported: the public names of this module)
    ClipModel,
    ImageInputError,
    PromptTooLongError,
    as_image_list,
    file_sha256,
)

SHAPES_CLIP = "shapes-clip"
SCORE_SCALES: dict[str, str] = {
    "raw": "cos(image, text)",
    "100-clamp": "max(100 * cos(image, text), 0)  (torchmetrics CLIPScore convention)",
    "2.5": "2.5 * max(cos(image, text), 0)  (CLIP-S, Hessel et al. 2021)",
}
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
PICKLE_WARNING = (
    "pickle checkpoints can run arbitrary code when loaded; open_clip loads them with torch.load("
    "weights_only=True), whose restricted unpickler has had bypasses in the past, so irisbench refuses "
    "them unless you pass allow_pickle=True for a file you trust. Prefer a .safetensors file "
    "(convert once with safetensors.torch.save_file(torch.load(path, weights_only=True), out))."
)


class ClipLoadError(IrisbenchError, ValueError):
    """A CLIP model or weights source that cannot be used (unknown name or tag, bad file)."""


class PickleRefusedError(ClipLoadError):
    """A pickle weights file given without ``allow_pickle=True``."""


class WeightsNotAvailableError(ClipLoadError):
    """A pretrained tag whose weights are not on this machine (irisbench never downloads)."""


def _check_weights_file(path: Path, allow_pickle: bool) -> None:
    suffix = path.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        return
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise PickleRefusedError(f"refusing to load the pickle weights file {path}: {PICKLE_WARNING}")
        return
    raise ClipLoadError(f"weights file {path} has suffix {suffix!r}; expected one of "
                        f"{SAFE_SUFFIXES + PICKLE_SUFFIXES}")


def _cached_tag_file(model: str, tag: str) -> tuple[Path | None, list[str], dict[str, Any]]:
    """Local file of an open_clip pretrained tag, looked up in caches only (no network)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ClipLoadError(f"{tag!r} is neither an existing file nor a pretrained tag of {model!r} "
                            f"(its tags: {tags or 'none'})")
    looked: list[str] = []
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(cfg["hf_hub"])
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            looked.append(f"hf-hub {repo}/{name}")
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit), looked, cfg
    if cfg.get("url"):
        local = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        looked.append(str(local))
        if local.is_file():
            return local, looked, cfg
    return None, looked, cfg


def load_clip(model: str = SHAPES_CLIP, pretrained: str | os.PathLike[str] | None = None, *, device: str = "cpu",
              allow_pickle: bool = False, truncate: bool = False) -> ClipModel:
    """Load a CLIP model offline (see the module docstring for the accepted ``model``/``pretrained`` pairs)."""
    if model == SHAPES_CLIP:
        from irisbench.metrics.shapes_clip import load_shapes_clip

        return load_shapes_clip(pretrained, device=device, truncate=truncate)

    import open_clip

    known = open_clip.list_models()
    if model not in known:
        hint = did_you_mean(model, [*known, SHAPES_CLIP])
        raise ClipLoadError(f"unknown CLIP backbone {model!r}." + (hint or f" See open_clip.list_models() or use "
                                                                           f"{SHAPES_CLIP!r}."))
    weights: Path | None = None
    kwargs: dict[str, Any] = {}
    if pretrained is not None:
        p = Path(pretrained)
        if p.is_file():
            weights = p
        elif p.suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES or os.sep in str(pretrained):
            raise ClipLoadError(f"weights file {p} does not exist")
        else:
            weights, looked, cfg = _cached_tag_file(model, str(pretrained))
            if weights is None:
                raise WeightsNotAvailableError(
                    f"the weights of {model!r} pretrained={str(pretrained)!r} are not on this machine (looked in: "
                    f"{'; '.join(looked)}), and irisbench never downloads them. Fetch the file elsewhere and pass "
                    "its local path (.safetensors preferred) as pretrained")
            kwargs = {"image_mean": cfg.get("mean"), "image_std": cfg.get("std"),
                      "image_interpolation": cfg.get("interpolation"), "image_resize_mode": cfg.get("resize_mode"),
                      "force_quick_gelu": bool(cfg.get("quick_gelu", False))}
        _check_weights_file(weights, allow_pickle)
    net, _, preprocess = open_clip.create_model_and_transforms(
        model, pretrained=str(weights) if weights else None, device=device, weights_only=True, **kwargs)
    net.eval()
    return ClipModel(
        model=net, preprocess=preprocess, tokenizer=open_clip.get_tokenizer(model), backbone=model,
        pretrained=None if pretrained is None else str(pretrained),
        weights_file=str(weights) if weights else None,
        weights_sha256=file_sha256(weights) if weights else None, device=device, truncate=truncate,
        extra={} if weights else {"note": "random weights"})


@functools.lru_cache(maxsize=1)
def default_clip() -> ClipModel:
    """The shapes world's default CLIP (the shipped ``shapes-clip``), loaded once per process on the CPU."""
    return load_clip(SHAPES_CLIP)


def check_scale(scale: str) -> str:
    if scale not in SCORE_SCALES:
        raise UsageError(f"unknown CLIP score scale {scale!r}; expected one of {list(SCORE_SCALES)}")
    return scale


def apply_scale(cos: np.ndarray, scale: str) -> np.ndarray:
    """Map raw cosines to the ``scale`` convention (``SCORE_SCALES``)."""
    check_scale(scale)
    cos = np.asarray(cos, dtype=np.float64)
    if scale == "raw":
        return cos
    if scale == "100-clamp":
        return np.maximum(100.0 * cos, 0.0)
    return 2.5 * np.maximum(cos, 0.0)


def clip_score(images: Any, prompts: Sequence[str], clip: ClipModel | None = None, *, scale: str = "raw",
               batch_size: int = 128) -> np.ndarray:
    """Per-image CLIP score (float64, shape (N,)) of ``images[i]`` against ``prompts[i]`` on ``scale``.

    ``clip`` defaults to the shapes world's CLIP (``default_clip()``).
    """
    check_scale(scale)
    ims = as_image_list(images)
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of str (one per image), got {type(prompts).__name__}")
    if len(prompts) != len(ims):
        raise UsageError(f"clip_score needs one prompt per image: got {len(ims)} images and {len(prompts)} prompts")
    if not ims:
        return np.zeros(0, dtype=np.float64)
    clip = default_clip() if clip is None else clip
    uniq = list(dict.fromkeys(prompts))
    index = {t: i for i, t in enumerate(uniq)}
    text = clip.encode_texts(uniq).astype(np.float64)
    img = clip.encode_images(ims, batch_size=batch_size).astype(np.float64)
    cos = np.einsum("nd,nd->n", img, text[[index[t] for t in prompts]])
    return apply_scale(cos, scale)


def score_identity(clip: ClipModel, scale: str) -> dict[str, Any]:
    """What a reported CLIP score was computed with: the model's ``describe()`` plus the scale and formula."""
    return {**clip.describe(), "score_scale": check_scale(scale), "score_formula": SCORE_SCALES[scale]}
