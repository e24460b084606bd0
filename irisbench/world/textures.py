"""The textures world: the shapes world with per-patch shading, so that image tokens are genuinely uncertain.

Why it exists. In the shapes world every object is one flat palette colour on a flat gray background and the
patch tokenizer is lossless, so given the plan almost every image token is determined: a policy's image
tokens can only become *less certain* by drawing extra objects or noise. That is one explanation of why
IRIS (minimising self-certainty) collapses accuracy there (README, "Reading it honestly"). This world keeps
the same scenes, prompts, plans and exact judge, and adds irreducible uncertainty to every token:

- **Shading.** After the flat render, each 4x4 patch (object pieces and background alike) is shifted in
  brightness by one of ``SHADES`` = (-12, 0, +12) on all three channels, drawn uniformly and independently
  per patch. So every image token carries log 3 nats of uncertainty that no plan can remove, inside
  objects and on the background alike (object count no longer changes how uncertain a token may be).
- **A lossy tokenizer.** Shading triples the set of distinct patches (4,539 here) beyond the recipe's
  ``max_codes`` = 3,328, so the codebook (fitted by counting, ``fit_patch_tokenizer(world="textures")``)
  keeps the most frequent patches and maps the rest to their nearest code in L2: decoding is approximate.
  The nearest code of a rare shaded patch is, in practice, the same mask piece in another shade (a shade
  step moves a patch by 12·√48 ≈ 83 in L2, one wrong pixel by ≥ 89), so shapes and colours survive.
- **The judge stays exact.** A shift of ≤ 12 per channel moves a pixel at most 12·√3 ≈ 20.8 in RGB, less than
  half the smallest gap between palette entries (52, between background grays) and well inside the
  detector's ``COLOR_CAP`` (40), so ``irisbench.world.detector`` needs no change. Measured round trip
  (render → encode → decode → detect → GenEval verdict) on this world's tokenizer: see
  ``tests/test_world_textures.py`` (≥ 99.5% of scenes keep their verdict).

Departure from the paper: Janus-Pro's images have natural texture and a learned VQ tokenizer; this is
the smallest change to the shapes world that gives image tokens real uncertainty while keeping an exact judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from irisbench.core.errors import UsageError
from irisbench.world.vocab import GRID, PATCH

if TYPE_CHECKING:  # pragma: no cover
    from irisbench.world.scene import Scene

WORLDS: tuple[str, ...] = ("shapes", "textures")
SHADES: tuple[int, ...] = (-12, 0, 12)  # brightness offsets per patch, on all three channels


def check_world(world: str, where: str = "world") -> str:
    """``world`` if it is one of ``WORLDS``, else a one-line ``UsageError``."""
    if world not in WORLDS:
        raise UsageError(f"{where} must be one of {', '.join(WORLDS)}, got {world!r}")
    return world


def shade(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift every 4x4 patch of uint8 (B, 32, 32, 3) ``images`` by a uniform draw from ``SHADES``
    (clipped to [0, 255]); returns a new array. One draw per patch, row-major, image by image."""
    b = images.shape[0]
    offsets = np.asarray(SHADES, dtype=np.int16)[rng.integers(len(SHADES), size=(b, GRID, GRID))]
    per_pixel = np.repeat(np.repeat(offsets, PATCH, axis=1), PATCH, axis=2)[..., None]  # (B, 32, 32, 1)
    return np.clip(images.astype(np.int16) + per_pixel, 0, 255).astype(np.uint8)


def render_world(scenes: Sequence[Scene], world: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 (B, 32, 32, 3) images of ``scenes`` in ``world``: the exact flat render for ``"shapes"``
    (``rng`` unused), plus per-patch shading drawn from ``rng`` for ``"textures"``."""
    from irisbench.world.scene import render_batch

    check_world(world)
    images = render_batch(scenes)
    if world == "shapes":
        return images
    if rng is None:
        raise UsageError("render_world(world='textures') needs an rng for the shading")
    return shade(images, rng)


__all__ = ["SHADES", "WORLDS", "check_world", "render_world", "shade"]
