"""Scenes of the shapes world and their exact, aliased renderer.

A scene is a flat gray background (one of ``BACKGROUNDS``) with a few solid shapes. Every object sits
on the 4-px patch grid with a box side of 8 or 12 px, and boxes keep at least ``MIN_GAP`` px apart, so
objects never overlap or touch. Grid alignment is what makes the patch tokenizer lossless: every 4x4
patch of a rendered image is an exact piece of one shape mask (see docs/shapes-world.md).

Shape masks are defined by pixel-centre tests, with no anti-aliasing, and every mask touches all four
sides of its box, so the tight box of an object's pixels equals the object's box.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from irisbench.core.errors import IrisbenchError
from irisbench.world.vocab import BACKGROUNDS, CANVAS, COLORS, MIN_GAP, PALETTE, PATCH, SHAPES, SIZES


class SceneError(IrisbenchError, ValueError):
    """An invalid object or scene (bad field, off-grid, out of canvas, overlapping)."""


@dataclass(frozen=True)
class Obj:
    """One solid shape; ``x``, ``y`` are its box's top-left pixel (multiples of ``PATCH``)."""

    shape: str
    color: str
    x: int
    y: int
    size: int

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise SceneError(f"object shape {self.shape!r} is not one of {SHAPES}")
        if self.color not in COLORS:
            raise SceneError(f"object color {self.color!r} is not one of {COLORS}")
        if self.size not in SIZES:
            raise SceneError(f"object size {self.size!r} is not one of {SIZES}")
        for name, v in (("x", self.x), ("y", self.y)):
            if not isinstance(v, (int, np.integer)) or v % PATCH or not 0 <= v <= CANVAS - self.size:
                raise SceneError(
                    f"object {name}={v!r} must be a multiple of {PATCH} in [0, {CANVAS - self.size}]"
                )

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) in pixels, x2/y2 exclusive."""
        return (self.x, self.y, self.x + self.size, self.y + self.size)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "color": self.color, "x": int(self.x), "y": int(self.y),
                "size": int(self.size)}


def boxes_clear(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int = MIN_GAP) -> bool:
    """True if boxes ``a`` and ``b`` are at least ``gap`` px apart along x or along y."""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


@dataclass(frozen=True)
class Scene:
    """Objects (in drawing order) on background ``BACKGROUNDS[background]``."""

    objects: tuple[Obj, ...]
    background: int

    def __post_init__(self) -> None:
        if not isinstance(self.objects, tuple) or not all(isinstance(o, Obj) for o in self.objects):
            raise SceneError("scene objects must be a tuple of Obj")
        if not isinstance(self.background, (int, np.integer)) or not 0 <= self.background < len(BACKGROUNDS):
            raise SceneError(f"scene background {self.background!r} must be an index < {len(BACKGROUNDS)}")
        for i, a in enumerate(self.objects):
            for b in self.objects[i + 1:]:
                if not boxes_clear(a.box, b.box):
                    raise SceneError(f"objects {a} and {b} are closer than {MIN_GAP} px")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"background": int, "objects": [{shape, color, x, y, size}, ...]}``."""
        return {"background": int(self.background), "objects": [o.to_dict() for o in self.objects]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scene:
        """Inverse of ``to_dict``; raises ``SceneError`` naming the bad field."""
        if not isinstance(d, Mapping) or "objects" not in d or "background" not in d:
            raise SceneError(f"scene dict needs 'objects' and 'background', got {d!r}")
        objs = []
        for i, od in enumerate(d["objects"]):
            if not isinstance(od, Mapping):
                raise SceneError(f"scene objects[{i}] must be a dict, got {od!r}")
            missing = {"shape", "color", "x", "y", "size"} - set(od)
            if missing:
                raise SceneError(f"scene objects[{i}] lacks field(s) {sorted(missing)}")
            try:
                objs.append(Obj(od["shape"], od["color"], od["x"], od["y"], od["size"]))
            except SceneError as e:
                raise SceneError(f"scene objects[{i}]: {e}") from None
        return cls(tuple(objs), d["background"])


@lru_cache(maxsize=256)
def _shape_mask(shape: str, size: int) -> np.ndarray:
    c = size / 2.0
    yy, xx = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    dx, dy = np.abs(xx - c), np.abs(yy - c)
    if shape == "square":
        m = np.ones((size, size), dtype=bool)
    elif shape == "circle":
        m = dx**2 + dy**2 <= c * c
    elif shape == "diamond":
        m = dx + dy <= c
    elif shape == "triangle":  # apex up: half-width grows linearly from the top row to the full base
        m = dx <= (np.floor(yy) + 1.0) / size * c
    elif shape == "funnel":  # the triangle upside down: apex at the bottom
        m = dx <= (size - np.floor(yy)) / size * c
    elif shape == "cross":  # an upright plus sign, arms a third of the box wide
        m = (dx <= c / 3) | (dy <= c / 3)
    elif shape == "ring":  # the circle with a hole of half its radius
        m = (dx**2 + dy**2 <= c * c) & (dx**2 + dy**2 > (c / 2) ** 2)
    elif shape == "frame":  # the square with a hole of half its side
        m = np.maximum(dx, dy) > c / 2
    elif shape == "hourglass":  # two triangles meeting at their apexes, bases top and bottom
        m = dy >= dx
    elif shape == "bowtie":  # the hourglass on its side
        m = dx >= dy
    else:
        raise SceneError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    m.setflags(write=False)
    return m


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean (size, size) mask of ``shape`` (read-only, cached); it touches all four box sides."""
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise SceneError(f"mask size must be a positive int, got {size!r}")
    return _shape_mask(shape, int(size))


_PALETTE_ARR = {name: np.array(rgb, dtype=np.uint8) for name, rgb in PALETTE.items()}


def render_into(canvas: np.ndarray, scene: Scene) -> np.ndarray:
    """Draw ``scene`` into a (CANVAS, CANVAS, 3) uint8 array in place and return it."""
    canvas[...] = BACKGROUNDS[scene.background]
    for o in scene.objects:
        canvas[o.y:o.y + o.size, o.x:o.x + o.size][shape_mask(o.shape, o.size)] = _PALETTE_ARR[o.color]
    return canvas


def render(scene: Scene) -> np.ndarray:
    """The scene as a uint8 (CANVAS, CANVAS, 3) RGB image with exact palette colors."""
    return render_into(np.empty((CANVAS, CANVAS, 3), dtype=np.uint8), scene)


def render_batch(scenes: Sequence[Scene]) -> np.ndarray:
    """uint8 (B, CANVAS, CANVAS, 3) images of ``scenes``."""
    out = np.empty((len(scenes), CANVAS, CANVAS, 3), dtype=np.uint8)
    for i, s in enumerate(scenes):
        render_into(out[i], s)
    return out
