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
(DEPENDENCIES.md section 4). Store ``score_identity(clip, scale)`` next to any reported number.

Departure from the usual practice: a prompt longer than the text tower's context raises
``PromptTooLongError`` instead of being silently truncated (pass ``truncate=True`` to truncate).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.errors import IrisbenchError, did_you_mean

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


class ImageInputError(IrisbenchError, ValueError):
    """Images that are not uint8 (H, W, 3) arrays."""


class PromptTooLongError(IrisbenchError, ValueError):
    """A prompt with more tokens than the text tower's context length."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def as_image_list(images: Any, what: str = "images") -> list[np.ndarray]:
    """Validate ``images`` (a sequence of uint8 (H, W, 3) arrays, or one (N, H, W, 3) array) into a list."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ImageInputError(f"{what}: an array of images must be (N, H, W, 3), got shape {images.shape}")
        images = list(images)
    if not isinstance(images, Sequence):
        raise ImageInputError(f"{what} must be a sequence of uint8 (H, W, 3) arrays, got {type(images).__name__}")
    out = []
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
            desc = f"{im.dtype} {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
            raise ImageInputError(f"{what}[{i}] must be a uint8 (H, W, 3) array, got {desc}")
        out.append(im)
    return out


@dataclass
class ClipModel:
    """An open_clip model in eval mode with its own preprocessing and tokenizer.

    ``encode_images`` / ``encode_texts`` return L2-normalised float32 features, shape (N, embed_dim).
    """

    model: Any  # open_clip CLIP (torch.nn.Module)
    preprocess: Callable[[Any], Any]  # PIL image -> (3, S, S) float tensor
    tokenizer: Any  # open_clip tokenizer: list[str] -> (N, context_length) int64
    backbone: str
    pretrained: str | None
    weights_file: str | None = None
    weights_sha256: str | None = None
    device: str = "cpu"
    truncate: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def context_length(self) -> int:
        return int(self.model.context_length)

    def pixels(self, images: Sequence[np.ndarray]) -> Any:
        """The model's own preprocessing of uint8 (H, W, 3) images: a float (N, 3, S, S) tensor."""
        import torch
        from PIL import Image

        return torch.stack([self.preprocess(Image.fromarray(im)) for im in images])

    def image_features(self, pixels: Any, normalize: bool = True) -> Any:
        """Embeddings of a preprocessed pixel batch (a torch tensor, no grad)."""
        import torch

        with torch.no_grad():
            return self.model.encode_image(pixels.to(self.device), normalize=normalize).float().cpu()

    def encode_images(self, images: Any, batch_size: int = 128, normalize: bool = True) -> np.ndarray:
        """L2-normalised (unless ``normalize=False``) float32 (N, D) features of uint8 (H, W, 3) images."""
        ims = as_image_list(images)
        _check_batch_size(batch_size)
        if not ims:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        out = [self.image_features(self.pixels(ims[s:s + batch_size]), normalize).numpy()
               for s in range(0, len(ims), batch_size)]
        return np.concatenate(out).astype(np.float32, copy=False)

    def tokenize(self, texts: Sequence[str]) -> Any:
        """Token ids (N, context_length); raises ``PromptTooLongError`` unless ``truncate``."""
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
        encode = getattr(self.tokenizer, "encode", None)
        if not self.truncate and callable(encode):
            limit = self.context_length - 2  # start and end tokens
            for i, t in enumerate(texts):
                n = len(encode(t))
                if n > limit:
                    raise PromptTooLongError(
                        f"texts[{i}] {t!r} has {n} tokens but {self.backbone}'s text tower takes at most {limit}; "
                        "shorten it or load the model with truncate=True")
        return self.tokenizer(list(texts))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 512, normalize: bool = True) -> np.ndarray:
        """L2-normalised (unless ``normalize=False``) float32 (N, D) features of ``texts``."""
        import torch

        _check_batch_size(batch_size)
        tokens = self.tokenize(texts)
        if len(tokens) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        out = []
        with torch.no_grad():
            for s in range(0, len(tokens), batch_size):
                f = self.model.encode_text(tokens[s:s + batch_size].to(self.device), normalize=normalize)
                out.append(f.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        """Identity of the model for result files: backbone, weights source and hash, sizes, logit scale."""
        import open_clip

        return {
            "backbone": self.backbone,
            "pretrained": self.pretrained,
            "weights_file": self.weights_file,
            "weights_sha256": self.weights_sha256,
            "embed_dim": self.embed_dim,
            "image_size": self.image_size,
            "context_length": self.context_length,
            "logit_scale": float(self.model.logit_scale.exp().item()),
            "open_clip_version": open_clip.__version__,
            **self.extra,
        }


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


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
        raise ValueError(f"unknown CLIP score scale {scale!r}; expected one of {list(SCORE_SCALES)}")
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
        raise ValueError(f"clip_score needs one prompt per image: got {len(ims)} images and {len(prompts)} prompts")
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
