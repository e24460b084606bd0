"""A loaded CLIP model (``ClipModel``) and the small helpers every metric shares.

This module imports nothing else from ``irisbench.metrics``, so the loaders (``clip_score.load_clip``,
``shapes_clip.load_shapes_clip``) and the metrics (``clip_score``, ``fid``) can all depend on it without a
cycle. torch and open_clip are imported inside methods.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.core.errors import IrisbenchError


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


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


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
