"""FID and KID with torchmetrics, on features that work offline: a CLIP image tower or a local InceptionV3 file.

``make_feature_extractor`` builds the feature module torchmetrics runs on every image batch:

- ``"clip"`` (default): the image tower of a ``ClipModel`` (the shipped shapes CLIP unless ``clip`` is
  given), through the model's own preprocessing (so uint8 images of any size are resized to the tower's
  input size); features are the tower's projected embeddings before L2 normalisation (``normalize=True``
  normalises them). Raw is the default because KID's kernel ``(x.y / d + 1) ** 3`` assumes feature
  scales like Inception's: on unit vectors it is nearly linear and KID barely separated random scenes
  from real ones (2.5 sigma raw vs 1.5 sigma normalised, measured on an earlier shapes-CLIP checkpoint); FID ratios
  were the same either way;
- ``"inception"``: torchmetrics' FID InceptionV3 (2048-d pool features) from a LOCAL weights file, e.g.
  torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``. It cannot be downloaded here; torchmetrics'
  default tries to and fails. torch-fidelity loads that file with ``torch.load(weights_only=False)``, so we
  first check it loads with ``weights_only=True`` (tensors only) and refuse it otherwise.

Every extractor has ``num_features`` (torchmetrics then skips its dummy forward) and ``describe()``; store
``features.describe()`` next to any FID/KID number, since values from different features are not comparable.

Departures from the standard FID: with ``"clip"`` features this is a Fréchet distance in CLIP space
(as in "FD_CLIP"), not Inception FID; numbers are only comparable between runs with the same features.
KID subsets are drawn with a fixed torch seed (``seed``), so repeated calls give the same value.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.core.errors import IrisbenchError, UsageError
from irisbench.metrics.clip_model import as_image_list, file_sha256

FEATURE_KINDS = ("clip", "inception")
INCEPTION_REFERENCE_SHA256_PREFIX = "6726825d"  # torch-fidelity's FID weights file name suffix


class FeatureError(IrisbenchError, ValueError):
    """A feature extractor that cannot be built (unknown kind, missing or unsafe weights file)."""


class SampleSizeError(IrisbenchError, ValueError):
    """Too few images for the requested metric or KID subset size."""


def _clip_features_class() -> type:
    import torch

    class ClipImageFeatures(torch.nn.Module):
        """torchmetrics feature module over a CLIP image tower.

        Accepts (B, 3, H, W) uint8 in [0, 255] or float in [0, 1]; images go through the model's own
        preprocessing (resize to the tower's input size, normalisation).
        """

        def __init__(self, clip: Any, normalize: bool = False) -> None:
            super().__init__()
            self.clip = clip
            self.net = clip.model  # registered, so .to()/.eval() reach it
            self.normalize = normalize
            self.num_features = clip.embed_dim

        def forward(self, imgs: torch.Tensor) -> torch.Tensor:
            if imgs.ndim != 4 or imgs.shape[1] != 3:
                raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(imgs.shape)}")
            if imgs.dtype != torch.uint8:
                if not imgs.is_floating_point() or imgs.min() < 0 or imgs.max() > 1:
                    raise ValueError("float images must lie in [0, 1]; pass uint8 images in [0, 255] otherwise")
                imgs = (imgs * 255).round().to(torch.uint8)
            hwc = imgs.permute(0, 2, 3, 1).cpu().numpy()
            return self.clip.image_features(self.clip.pixels(list(hwc)), normalize=self.normalize)

        def describe(self) -> dict[str, Any]:
            return {"kind": "clip", "num_features": self.num_features, "normalized": self.normalize,
                    "clip": self.clip.describe()}

    return ClipImageFeatures


def _inception_features_class() -> type:
    import torch

    class InceptionFeatures(torch.nn.Module):
        """torchmetrics' FID InceptionV3 (2048-d pool3 features) from a local weights file; uint8 input."""

        def __init__(self, weights_path: Path) -> None:
            super().__init__()
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                          feature_extractor_weights_path=str(weights_path))
            self.num_features = 2048
            self.weights_path = str(weights_path)
            self.sha256 = file_sha256(weights_path)

        def forward(self, imgs: torch.Tensor) -> torch.Tensor:
            if imgs.dtype != torch.uint8 or imgs.ndim != 4 or imgs.shape[1] != 3:
                raise ValueError(f"InceptionV3 features need uint8 (B, 3, H, W) images, got {imgs.dtype} "
                                 f"{tuple(imgs.shape)}")
            return self.net(imgs)

        def describe(self) -> dict[str, Any]:
            return {"kind": "inception", "num_features": 2048, "weights_file": self.weights_path,
                    "weights_sha256": self.sha256,
                    "reference_weights": self.sha256.startswith(INCEPTION_REFERENCE_SHA256_PREFIX)}

    return InceptionFeatures


def _check_inception_file(weights_path: str | Path | None) -> Path:
    if weights_path is None:
        raise FeatureError(
            "InceptionV3 FID features need a LOCAL weights file (weights_path=...): the default weights are "
            "downloaded from GitHub by torch-fidelity, which this machine cannot reach and irisbench never does. "
            "Copy torch-fidelity's weights-inception-2015-12-05-6726825d.pth here and pass its path, or use "
            "kind='clip' (the shapes CLIP by default)")
    path = Path(weights_path)
    if not path.is_file():
        raise FeatureError(f"InceptionV3 weights file {path} does not exist")
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not a plain tensor file"
        raise FeatureError(f"{path} is not a plain tensor state dict (torch.load(weights_only=True) failed: "
                           f"{type(e).__name__}); refusing it, since torch-fidelity would unpickle it in "
                           "full") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FeatureError(f"{path} does not hold an InceptionV3 state dict (a non-empty dict of tensors)")
    return path


def make_feature_extractor(kind: str = "clip", weights_path: str | Path | None = None, clip: Any = None, *,
                           normalize: bool = False) -> Any:
    """A torchmetrics feature module with ``num_features`` and ``describe()`` (see the module docstring)."""
    if kind == "clip":
        if weights_path is not None:
            raise FeatureError("weights_path is for kind='inception'; for CLIP features pass clip=load_clip(...)")
        if clip is None:
            from irisbench.metrics.clip_score import default_clip

            clip = default_clip()
        module = _clip_features_class()(clip, normalize=normalize)
    elif kind == "inception":
        if clip is not None:
            raise FeatureError("clip= is for kind='clip', not for kind='inception'")
        module = _inception_features_class()(_check_inception_file(weights_path))
    else:
        raise FeatureError(f"unknown feature kind {kind!r}; expected one of {FEATURE_KINDS}")
    return module.eval()


def _batches(images: list[np.ndarray], batch_size: int) -> Any:
    import torch

    for s in range(0, len(images), batch_size):
        chunk = images[s:s + batch_size]
        shapes = {im.shape for im in chunk}
        if len(shapes) != 1:
            raise UsageError(f"images {s}..{s + len(chunk) - 1} differ in size {sorted(shapes)}; "
                             "resize them to one size")
        yield torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).contiguous()


def _prepare(real: Any, fake: Any, features: Any, batch_size: int) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    r, f = as_image_list(real, "real_images"), as_image_list(fake, "fake_images")
    return r, f, make_feature_extractor("clip") if features is None else features


def fid(real_images: Any, fake_images: Any, *, features: Any = None, batch_size: int = 128) -> float:
    """Fréchet distance between the feature Gaussians of two image sets (torchmetrics' FID).

    Images are uint8 (H, W, 3) arrays; ``features`` comes from ``make_feature_extractor`` (default: shapes CLIP).
    """
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake, features = _prepare(real_images, fake_images, features, batch_size)
    if len(real) < 2 or len(fake) < 2:
        raise SampleSizeError(f"FID needs at least 2 real and 2 fake images, got {len(real)} real and {len(fake)} fake")
    metric = FrechetInceptionDistance(feature=features, reset_real_features=True)
    with torch.no_grad():
        for batch in _batches(real, batch_size):
            metric.update(batch, real=True)
        for batch in _batches(fake, batch_size):
            metric.update(batch, real=False)
        return float(metric.compute())


def kid(real_images: Any, fake_images: Any, *, features: Any = None, subset_size: int = 100, subsets: int = 100,
        seed: int = 0, batch_size: int = 128) -> tuple[float, float]:
    """Kernel distance (torchmetrics' KID, cubic polynomial kernel): (mean, std) over ``subsets`` random subsets.

    ``subset_size`` must lie in [2, min(#real, #fake)].
    """
    import torch
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake, features = _prepare(real_images, fake_images, features, batch_size)
    if not isinstance(subsets, (int, np.integer)) or subsets < 1:
        raise UsageError(f"subsets must be a positive int, got {subsets!r}")
    hi = min(len(real), len(fake))
    if not isinstance(subset_size, (int, np.integer)) or not 2 <= subset_size <= hi:
        valid = f"[2, {hi}]" if hi >= 2 else "empty (need at least 2 real and 2 fake images)"
        raise SampleSizeError(f"KID subset_size={subset_size!r} is out of range for {len(real)} real and {len(fake)} "
                              f"fake images; the valid range is {valid}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=features, subsets=int(subsets), subset_size=int(subset_size))
    with torch.no_grad():
        for batch in _batches(real, batch_size):
            metric.update(batch, real=True)
        for batch in _batches(fake, batch_size):
            metric.update(batch, real=False)
        with torch.random.fork_rng(devices=[]):  # the subsets are drawn with torch.randperm on the CPU
            torch.manual_seed(seed)
            mean, std = metric.compute()
    return float(mean), float(std)
