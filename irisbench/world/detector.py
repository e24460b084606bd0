"""The shapes world's exact object detector: pixels -> GenEval ``Detection`` objects.

Stages (pure numpy/scipy, no learning):

1. every pixel goes to its nearest palette entry (the 10 GenEval colors and the 3 background grays)
   if within ``COLOR_CAP`` (Euclidean RGB); farther pixels are noise and belong to nothing;
2. connected components (4-connectivity) per color, dropping those under ``MIN_AREA`` pixels;
3. shape by IoU against the renderer's own masks (``shape_mask``) at sizes around the component's
   bbox, centred on it; the label is the best shape, the score its IoU (1.0 for a perfectly rendered
   object, lower for a malformed blob), and components under ``MIN_IOU`` are dropped;
4. ``color`` is the component's palette color, ``box`` its tight bbox (x1, y1, x2, y2), x2/y2 exclusive.

Departure from GenEval: GenEval uses Mask2Former for classes/scores and CLIP for colors; here both come
from the renderer's exact definitions, so a rendered scene is detected perfectly. The score is a shape
IoU, not a class probability, but plays the same role under GenEval's 0.3 / 0.9 cuts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from irisbench.core.errors import IrisbenchError
from irisbench.protocols.geneval import Detection
from irisbench.world.scene import shape_mask
from irisbench.world.vocab import BACKGROUNDS, COLORS, PALETTE, SHAPES

COLOR_CAP = 40.0  # max RGB distance to a palette entry (colors are >= 89 apart, grays 52)
MIN_AREA = 24  # smallest component kept, in pixels (the smallest rendered object, an 8-px cross, has 28)
MIN_SIDE = 6  # both bbox sides must reach this: objects are 8 or 12 px, a lone 4x4 patch is not one
MIN_IOU = 0.5  # smallest template IoU kept

_ENTRIES = np.array([PALETTE[c] for c in COLORS] + list(BACKGROUNDS), dtype=np.int32)  # (13, 3)
_N_COLORS = len(COLORS)
_NOISE = len(_ENTRIES)  # index of "no palette entry"
_PACKED = (_ENTRIES[:, 0] << 16) | (_ENTRIES[:, 1] << 8) | _ENTRIES[:, 2]
_PACKED_ORDER = np.argsort(_PACKED)
_PACKED_SORTED = _PACKED[_PACKED_ORDER]


class ImageError(IrisbenchError, ValueError):
    """An input that is not a uint8 (H, W, 3) RGB image (or a batch of them)."""


def palette_index(images: np.ndarray) -> np.ndarray:
    """Per-pixel palette entry of uint8 (..., 3) images: 0..9 colors, 10..12 backgrounds, 13 noise.

    Exact palette pixels are found by a packed-RGB lookup; only the others pay for a distance search.
    """
    if images.dtype != np.uint8 or images.shape[-1] != 3:
        raise ImageError(f"expected uint8 (..., 3) RGB pixels, got {images.dtype} {images.shape}")
    px = images.astype(np.int32)
    packed = (px[..., 0] << 16) | (px[..., 1] << 8) | px[..., 2]
    pos = np.minimum(np.searchsorted(_PACKED_SORTED, packed), len(_PACKED_SORTED) - 1)
    exact = _PACKED_SORTED[pos] == packed
    out = np.where(exact, _PACKED_ORDER[pos], _NOISE).astype(np.int64)
    if not exact.all():
        miss = ~exact
        d2 = ((px[miss][:, None, :] - _ENTRIES[None]) ** 2).sum(-1)
        near = d2.argmin(1)
        ok = d2[np.arange(len(near)), near] <= COLOR_CAP**2
        out[miss] = np.where(ok, near, _NOISE)
    return out


def _templates(size: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.stack([shape_mask(s, size) for s in SHAPES])
    return t, t.reshape(len(SHAPES), -1).sum(1)


_TEMPLATE_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _cached_templates(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size not in _TEMPLATE_CACHE:
        _TEMPLATE_CACHE[size] = _templates(size)
    return _TEMPLATE_CACHE[size]


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """(best shape, its IoU) for a component cropped to its tight bbox (bool (h, w)).

    Templates of every size from min(h, w) - 1 to max(h, w) + 1 are tried, centred on the bbox (both
    roundings when the centring is fractional).
    """
    h, w = mask.shape
    area = int(mask.sum())
    if h == w:  # fast path: a perfectly rendered object matches its template exactly
        t, tarea = _cached_templates(h)
        inter = (t & mask).reshape(len(SHAPES), -1).sum(1)
        exact = np.flatnonzero((inter == area) & (tarea == area))
        if len(exact):
            return SHAPES[int(exact[0])], 1.0
    best_iou, best_shape = -1.0, SHAPES[0]
    for s in range(max(1, min(h, w) - 1), max(h, w) + 2):
        t, tarea = _cached_templates(s)
        oys = sorted({(h - s) // 2, -((s - h) // 2)})
        oxs = sorted({(w - s) // 2, -((s - w) // 2)})
        for oy in oys:
            for ox in oxs:
                # overlap of mask rows [0, h) with template rows placed at [oy, oy + s)
                y0, y1, x0, x1 = max(0, oy), min(h, oy + s), max(0, ox), min(w, ox + s)
                if y1 <= y0 or x1 <= x0:
                    continue
                inter = (t[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox] & mask[y0:y1, x0:x1]).reshape(
                    len(SHAPES), -1).sum(1)
                iou = inter / (area + tarea - inter)
                k = int(iou.argmax())
                if iou[k] > best_iou:
                    best_iou, best_shape = float(iou[k]), SHAPES[k]
    return best_shape, best_iou


def _detect_indexed(idx: np.ndarray) -> list[Detection]:
    dets: list[Detection] = []
    for c in np.unique(idx):
        if c >= _N_COLORS:
            continue
        lab, n = ndimage.label(idx == c)
        if n == 0:
            continue
        areas = np.bincount(lab.ravel(), minlength=n + 1)
        for k, sl in enumerate(ndimage.find_objects(lab), start=1):
            if sl is None or areas[k] < MIN_AREA:
                continue
            ys, xs = sl
            if min(ys.stop - ys.start, xs.stop - xs.start) < MIN_SIDE:
                continue
            shape, iou = classify_shape(lab[sl] == k)
            if iou < MIN_IOU:
                continue
            box = (float(xs.start), float(ys.start), float(xs.stop), float(ys.stop))
            dets.append(Detection(label=shape, box=box, score=iou, color=COLORS[int(c)]))
    dets.sort(key=lambda d: (-d.score, d.box[1], d.box[0]))
    return dets


def detect(image: np.ndarray) -> list[Detection]:
    """Objects in one uint8 (H, W, 3) image, most confident first."""
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        raise ImageError(f"expected one uint8 (H, W, 3) image, got {getattr(image, 'shape', type(image))}")
    return _detect_indexed(palette_index(image))


def detect_batch(images: np.ndarray | Sequence[np.ndarray]) -> list[list[Detection]]:
    """``detect`` for each image of a (B, H, W, 3) array or a sequence of images."""
    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise ImageError(f"expected a uint8 (B, H, W, 3) batch, got shape {images.shape}")
    return [detect(im) for im in images]
