"""T2I-CompBench's detection-based rules: UniDet 2D spatial, UniDet 3D spatial (++) and numeracy (++).

Detections (label, box, score) and MiDaS depth maps come from elsewhere; the functions here take plain data
and return the numbers the official scripts would write (docs/protocols.md §2).

Departures from the official code, all deliberate (the official code crashes or is undefined here):

- 2D/3D IoU with a zero union is taken as 0 (official: ZeroDivisionError).
- A prompt with no NOUN gives no objects and score 0 (official: IndexError).
- Numeracy: a prompt whose parse leaves a number word with no next token is skipped at that token (official:
  IndexError); "two <singular-only noun>" and "a/an <plural-only noun>" raise ``PromptParseError`` (official:
  ValueError crash, or silently misaligned counts); no target at all raises ``PromptParseError`` (official:
  ZeroDivisionError).
- Detections are put in descending-score order (stable) and, when ``score_threshold`` is given (default 0.5,
  the detector's ``SCORE_THRESH_TEST``), those with score <= threshold are dropped, as detectron2 does; feeding
  raw detectron2 output gives the same order and set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from irisbench.core.errors import UsageError
from irisbench.protocols.compbench_language import _analyse
from irisbench.protocols.compbench_prompts import PromptFileError, PromptParseError, load_prompt_file

# ------------------------------------------------------------------------------------ detections


@dataclass(frozen=True)
class _Det:
    label: str
    box: tuple[float, float, float, float]
    score: float


def _as_dets(detections: Iterable[Any], score_threshold: float | None) -> list[_Det]:
    out: list[_Det] = []
    for k, det in enumerate(detections):
        if hasattr(det, "label") and hasattr(det, "box") and hasattr(det, "score"):
            label, box, score = det.label, det.box, det.score
        else:
            try:
                label, box, score = det
            except (TypeError, ValueError):
                raise UsageError(f"detections[{k}] must be (label, box, score) or have .label/.box/.score") from None
        if not isinstance(label, str):
            raise UsageError(f"detections[{k}].label must be a string, got {label!r}")
        box_t = tuple(float(v) for v in box)
        if len(box_t) != 4 or not all(math.isfinite(v) for v in box_t):
            raise UsageError(f"detections[{k}].box must be 4 finite numbers (x1, y1, x2, y2), got {box!r}")
        score = float(score)
        if not math.isfinite(score):
            raise UsageError(f"detections[{k}].score must be finite, got {score!r}")
        if score_threshold is not None and not score > score_threshold:
            continue
        out.append(_Det(label, box_t, score))  # type: ignore[arg-type]
    # Descending score, stable (== detectron2's output order when it is already sorted).
    return sorted(out, key=lambda d: -d.score)


def _iou_no_plus1(b1: Sequence[float], b2: Sequence[float]) -> float:
    x_overlap = max(0.0, min(b1[2], b2[2]) - max(b1[0], b2[0]))
    y_overlap = max(0.0, min(b1[3], b2[3]) - max(b1[1], b2[1]))
    inter = x_overlap * y_overlap
    union = (b1[2] - b1[0]) * (b1[3] - b1[1]) + (b2[2] - b2[0]) * (b2[3] - b2[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre_offset(b1: Sequence[float], b2: Sequence[float]) -> tuple[float, float]:
    """(dx, dy) = centre of box 2 minus centre of box 1."""
    return ((b2[0] + b2[2]) / 2 - (b1[0] + b1[2]) / 2, (b2[1] + b2[3]) / 2 - (b1[1] + b1[3]) / 2)


# ---------------------------------------------------------------------------------------- 2D spatial

SPATIAL_LOCALITIES = (
    "on side of", "next to", "near", "on the left of", "on the right of", "on the bottom of", "on the top of",
    "on top of",
)
COMPLEX_PREPOSITIONS = ("on top of", "on bottom of", "on the left", "on the right", "next to", "on side of", "near")
PERSON_ALIASES = frozenset(["girl", "boy", "man", "woman"])


def locality(prompt: str, vocabulary: Sequence[str] = SPATIAL_LOCALITIES) -> str | None:
    """The first entry of ``vocabulary`` (official order) that occurs as a substring of ``prompt``, else None."""
    for word in vocabulary:
        if word in prompt:
            return word
    return None


def _person(name: str | None) -> str | None:
    return "person" if name in PERSON_ALIASES else name


def spatial_objects(prompt: str, complex: bool = False, *, method: str = "auto") -> tuple[str, str] | None:
    """The two object names the UniDet rules look for, after the person alias (girl/boy/man/woman -> person).

    Simple mode: the first and the last NOUN token (the same token if there is one noun; None if none).
    Complex mode: for each occurrence of a phrase of ``COMPLEX_PREPOSITIONS`` (matched on 3-, 2-, then 1-token
    spans), the nearest NOUN/PROPN before it and the first NOUN after it (if no NOUN follows, the first PROPN
    that is not followed by another PROPN); exactly 2 names overall, else None.
    """
    toks, _, _ = _analyse(prompt, method)
    if not complex:
        nouns = [t.text for t in toks if t.pos == "NOUN"]
        if not nouns:
            return None
        return _person(nouns[0]), _person(nouns[-1])  # type: ignore[return-value]
    n = len(toks)

    def span_text(i: int, k: int) -> str:
        end = min(i + k, n)
        return prompt[toks[i].start : toks[end - 1].end] if end > i else ""

    objects: list[str] = []
    for i in range(n):
        k = next((k for k in (3, 2, 1) if span_text(i, k) in COMPLEX_PREPOSITIONS), 0)
        if not k:
            continue
        for j in range(i - 1, -1, -1):
            if toks[j].pos in ("NOUN", "PROPN"):
                objects.append(toks[j].text)
                break
        reached_end = False
        for j in range(i + k, n):
            if toks[j].pos == "NOUN":
                objects.append(toks[j].text)
                break
            if j == n - 1:
                reached_end = True
        if reached_end:
            for j in range(i + k, n):
                if j + 1 < n and toks[j].pos == "PROPN" and toks[j + 1].pos != "PROPN":
                    objects.append(toks[j].text)
                    break
    if len(objects) != 2:
        return None
    return _person(objects[0]), _person(objects[1])  # type: ignore[return-value]


def position_score_2d(
    where: str | None,
    box1: Sequence[float],
    box2: Sequence[float],
    *,
    iou_threshold: float = 0.1,
    distance_threshold: float = 150.0,
) -> float:
    """Soft position score of box 1 (first object) relative to box 2, docs/protocols.md §2.4 table.

    dx, dy = centre2 - centre1 in pixels (~480-px images), IoU without the +1 convention.
    "next to"/"on side of"/"near": 1 if |dx| < 150 or |dy| < 150, else 150 / max(|dx|, |dy|).
    "on the right of": needs dx < 0 and |dx| > |dy|: 1 if IoU < 0.1 else 0.1 / IoU; otherwise 0.
    "on the left of": dx > 0; "on the bottom of": dy < 0 and |dy| > |dx|; "on the top of": dy > 0.
    Anything else ("on top of" included, None included): 0.
    """
    dx, dy = _centre_offset(box1, box2)
    iou = _iou_no_plus1(box1, box2)

    def directional(ok: bool, dominant: bool) -> float:
        if ok and dominant:
            return 1.0 if iou < iou_threshold else iou_threshold / iou
        return 0.0

    if where in ("next to", "on side of", "near"):
        if abs(dx) < distance_threshold or abs(dy) < distance_threshold:
            return 1.0
        return distance_threshold / max(abs(dx), abs(dy))
    if where == "on the right of":
        return directional(dx < 0, abs(dx) > abs(dy))
    if where == "on the left of":
        return directional(dx > 0, abs(dx) > abs(dy))
    if where == "on the bottom of":
        return directional(dy < 0, abs(dy) > abs(dx))
    if where == "on the top of":
        return directional(dy > 0, abs(dy) > abs(dx))
    return 0.0


def unidet_2d_score_objects(
    obj1: str | None,
    obj2: str | None,
    where: str | None,
    detections: Iterable[Any],
    *,
    score_threshold: float | None = 0.5,
) -> float:
    """2D spatial image score for given object names and locality (names must equal a label exactly).

    Each name takes its first (most confident) detection. Both found: 0.25*s1 + 0.25*s2 + 0.5*position;
    one found: 0.25*s; none: 0. Then a score below 0.5 becomes 0 (so one found object always gives 0).
    """
    dets = _as_dets(detections, score_threshold)
    labels = [d.label for d in dets]
    d1 = dets[labels.index(obj1)] if obj1 in labels else None
    d2 = dets[labels.index(obj2)] if obj2 in labels else None
    if d1 is not None and d2 is not None:
        score = 0.25 * d1.score + 0.25 * d2.score + position_score_2d(where, d1.box, d2.box) / 2
    elif d1 is not None:
        score = 0.25 * d1.score
    elif d2 is not None:
        score = 0.25 * d2.score
    else:
        score = 0.0
    return 0.0 if score < 0.5 else score


def unidet_2d_score(
    prompt: str,
    detections: Iterable[Any],
    complex: bool = False,
    *,
    score_threshold: float | None = 0.5,
    method: str = "auto",
) -> float:
    """2D spatial (UniDet) image score of ``prompt`` given the detector's (label, box, score) list.

    ``complex=True`` is the complex category's mode (objects around the preposition phrase). Boxes are
    (x1, y1, x2, y2) in the detector's input pixels (short side 479, long side at most 480).
    """
    objects = spatial_objects(prompt, complex=complex, method=method)
    obj1, obj2 = objects if objects is not None else (None, None)
    return unidet_2d_score_objects(obj1, obj2, locality(prompt), detections, score_threshold=score_threshold)


# ---------------------------------------------------------------------------------------- 3D spatial

SPATIAL_3D_LOCALITIES = ("in front of", "behind", "hidden")


def _mean_depth(depth: np.ndarray, box: Sequence[float]) -> float:
    # Official quirk: the first index runs over x, the second over y (transposed axes); int() truncates.
    region = depth[int(box[0]) : int(box[2]), int(box[1]) : int(box[3])]
    if region.size == 0:
        return math.nan  # torch's mean of an empty tensor; every comparison with it is False
    return float(np.mean(region, dtype=np.float64))


def position_score_3d(
    where: str | None,
    box1: Sequence[float],
    box2: Sequence[float],
    depth: np.ndarray,
    *,
    iou_threshold: float = 0.5,
) -> float:
    """3D position score, docs/protocols.md §2.5: IoU (no +1) and mean depth over each box (MiDaS: larger = nearer).

    "in front of": depth1 > depth2 needed; IoU > 0.5 -> 1, 0 < IoU < 0.5 -> IoU/0.5, else 0.
    "behind"/"hidden": depth1 < depth2 needed, same IoU table. IoU exactly 0.5 gives 0 (official branches).
    Depth is read as ``depth[x1:x2, y1:y2]`` (transposed axes, as the official code).
    """
    if where not in SPATIAL_3D_LOCALITIES:
        return 0.0
    iou = _iou_no_plus1(box1, box2)
    diff = _mean_depth(depth, box1) - _mean_depth(depth, box2)
    nearer = diff > 0 if where == "in front of" else diff < 0
    if iou > iou_threshold:
        return 1.0 if nearer else 0.0
    if 0 < iou < iou_threshold:
        return iou / iou_threshold if nearer else 0.0
    return 0.0


def unidet_3d_score(
    prompt: str,
    detections: Iterable[Any],
    depth: np.ndarray,
    *,
    score_threshold: float | None = 0.5,
    method: str = "auto",
) -> float:
    """3D spatial (UniDet + MiDaS) image score: 0.25*s1 + 0.25*s2 + 0.5*position, no 0.5 cut.

    ``depth`` is the 2-D depth map (min-max normalised, 8-bit in the official pipeline) resized to the image
    that the boxes refer to. Objects are the first/last NOUN (person alias applied); locality the first of
    "in front of", "behind", "hidden" in the prompt. Names match by substring: a name is "present" when it
    occurs in the space-joined label list; its detection index is found by scanning the detections in order
    and keeping, for each name, the last match seen before both names have matched (official quirk).
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise UsageError(f"depth must be a 2-D array, got shape {depth.shape}")
    dets = _as_dets(detections, score_threshold)
    objects = spatial_objects(prompt, complex=False, method=method)
    if objects is None:
        return 0.0
    obj1, obj2 = objects
    labels = [d.label for d in dets]
    joined = " ".join(labels)
    in1, in2 = obj1 in joined, obj2 in joined
    if in1 and in2:
        pos1 = pos2 = None
        for i, label in enumerate(labels):
            if obj1 in label:
                pos1 = i
            if obj2 in label:
                pos2 = i
            if pos1 is not None and pos2 is not None:
                break
        if pos1 is not None and pos2 is not None:
            d1, d2 = dets[pos1], dets[pos2]
            where = locality(prompt, SPATIAL_3D_LOCALITIES)
            return 0.25 * d1.score + 0.25 * d2.score + position_score_3d(where, d1.box, d2.box, depth) / 2
        # Only reachable for a name holding a space matched across two joined labels: treat it as absent.
        in1, in2 = pos1 is not None, pos2 is not None
    for name, present in ((obj1, in1), (obj2, in2)):
        if present:
            first = next((d for d in dets if name in d.label), None)
            if first is not None:
                return 0.25 * first.score
    return 0.0


# ------------------------------------------------------------------------------------------ numeracy

NUMBER_WORDS = ("a", "an", "one", "two", "three", "four", "five", "six", "seven", "eight")
_NUMBER_VALUES = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
NUMERACY_ALIASES = {
    "boy": "person", "girl": "person", "man": "person", "woman": "person", "ship": "boat",
    "telivision": "tv",  # sic: the official alias is misspelt, so "television" is *not* mapped to "tv"
    "goldfish": "fish", "painting": "picture",
}
# The singular - plural list of the official ``examples/dataset/new_objects.txt`` (file order, duplicates kept),
# used when no file is given. tests/test_compbench_files.py checks it against the reference copy.
NUMERACY_OBJECTS: tuple[tuple[str, str], ...] = tuple(
    tuple(pair.split("-"))  # type: ignore[misc]
    for pair in """
    bottle-bottles cup-cups cake-cakes bird-birds knife-knives microwave-microwaves desk-desks book-books
    helmet-helmets pillow-pillows bowl-bowls flag-flags stool-stools toy-toys pen-pens microphone-microphones
    bread-breads fish-fish camera-cameras candle-candles paddle-paddles drum-drums guitar-guitars
    tomato-tomatoes tent-tents kite-kites lemon-lemons strawberry-strawberries suitcase-suitcases pear-pears
    printer-printers duck-ducks hamburger-hamburgers deer-deer egg-eggs ship-ships chicken-chickens
    peach-peaches helicopter-helicopters swan-swans camel-camels goldfish-goldfish shrimp-shrimp
    banana-bananas balloon-balloons giraffe-giraffes frog-frogs horse-horses man-men rabbit-rabbits
    bicycle-bicycles bee-bees girl-girls mouse-mice painting-paintings fish-fish chicken-chickens desk-desks
    lamp-lamps cow-cows train-trains vase-vases pig-pigs sheep-sheep airplane-airplanes woman-women
    phone-phones boy-boys plate-plates bird-birds computer-computers book-books couch-couches turtle-turtles
    bowl-bowls cup-cups bag-bags car-cars backpack-backpacks microwave-microwaves dog-dogs
    television-televisions butterfly-butterflies cat-cats person-people table-tables sofa-sofas key-keys
    refrigerator-refrigerators clock-clocks candle-candles chair-chairs pig-pigs rabbit-rabbits truck-trucks
    boat-boats bear-bears bicycle-bicycles sink-sinks horse-horses apple-apples
    """.split()
)


def load_numeracy_objects(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Read ``new_objects.txt`` ("singular - plural" per line, lowercased and stripped like the official code)."""
    pairs: list[tuple[str, str]] = []
    for lineno, line in enumerate(load_prompt_file(path), start=1):
        parts = line.split(" - ")
        if len(parts) < 2:
            raise PromptFileError(f"{path}:{lineno}: expected 'singular - plural', got {line!r}")
        pairs.append((parts[0].strip().lower(), parts[1].strip().lower()))
    return pairs


def numeracy_targets(
    prompt: str,
    *,
    objects: Sequence[tuple[str, str]] | None = None,
    method: str = "auto",
) -> list[tuple[str, int]]:
    """(object name, target count) pairs of a numeracy prompt, with the official aliases applied.

    A token equal to one of a/an/one..eight (case-sensitive, as the official code) followed by a noun of the
    singular/plural list (``objects``; default ``NUMERACY_OBJECTS``), either the next two tokens as one name or
    the next token. A plural (with a number other than a/an/one) gives the singular name and the number's
    value; a singular with a/an/one gives count 1; a two-token name in the singular list gives count 1.
    Raises ``PromptParseError`` where the official script would crash or misalign its counts, and when no
    target is found.
    """
    pairs = list(NUMERACY_OBJECTS if objects is None else objects)
    singular = [s for s, _ in pairs]
    plural = [p for _, p in pairs]
    toks = [t.text for t in _analyse(prompt, method)[0]]
    n = len(toks)
    found: list[tuple[str, int]] = []
    for i, word in enumerate(toks):
        if word not in NUMBER_WORDS or i + 1 >= n:
            continue
        two = f"{toks[i + 1]} {toks[i + 2]}" if i < n - 2 else None
        if two is not None and (two in singular or two in plural):
            if two in plural and word not in ("a", "an", "one"):
                found.append((singular[plural.index(two)], _NUMBER_VALUES[word]))
            else:
                found.append((two, 1))
        elif toks[i + 1] in singular or toks[i + 1] in plural:
            name = toks[i + 1]
            if name in singular and word in ("a", "an", "one"):
                found.append((name, 1))
            elif name not in plural:
                raise PromptParseError(
                    f"{prompt!r}: {word!r} followed by singular-only {name!r}; the official parser crashes here"
                )
            elif word not in _NUMBER_VALUES:
                raise PromptParseError(
                    f"{prompt!r}: {word!r} followed by plural {name!r}; the official parser misaligns counts here"
                )
            else:
                found.append((singular[plural.index(name)], _NUMBER_VALUES[word]))
    if not found:
        raise PromptParseError(f"{prompt!r}: no '<number word> <known object>' found (official: division by zero)")
    return [(NUMERACY_ALIASES.get(name, name), count) for name, count in found]


def _dup_overlap(b1: Sequence[float], b2: Sequence[float]) -> bool:
    """Official duplicate test (+1 pixel convention): IoU > 0.9, or either box > 90% covered by the overlap."""
    inter = max(0.0, min(b1[2], b2[2]) - max(b1[0], b2[0]) + 1) * max(0.0, min(b1[3], b2[3]) - max(b1[1], b2[1]) + 1)
    area1 = (b1[2] - b1[0] + 1) * (b1[3] - b1[1] + 1)
    area2 = (b2[2] - b2[0] + 1) * (b2[3] - b2[1] + 1)
    union = area1 + area2 - inter
    return (union > 0 and inter / union > 0.9) or (area1 > 0 and inter / area1 > 0.9) or (
        area2 > 0 and inter / area2 > 0.9
    )


def dedupe_detections(detections: Iterable[Any], *, score_threshold: float | None = 0.5) -> list[tuple[str, tuple]]:
    """(label, box) kept by the numeracy duplicate removal: a detection is dropped when an earlier kept one has
    the same label and overlaps it (``_dup_overlap``)."""
    kept: list[_Det] = []
    for det in _as_dets(detections, score_threshold):
        if not any(k.label == det.label and _dup_overlap(det.box, k.box) for k in kept):
            kept.append(det)
    return [(k.label, k.box) for k in kept]


def numeracy_score(
    targets: Sequence[tuple[str, int]],
    detections: Iterable[Any],
    *,
    score_threshold: float | None = 0.5,
) -> float:
    """Numeracy image score: each of the K targets weighs 1/K; +0.5/K if present, +0.5/K more if the count matches.

    Detections are de-duplicated first (``dedupe_detections``). A target absent by exact name renames every
    kept label that contains it as a substring to the target name (official quirk: the renaming persists for
    the following targets); the count is the number of kept labels equal to the name.
    """
    if not targets:
        raise UsageError("numeracy_score needs at least one target (official: division by zero)")
    names = [label for label, _ in dedupe_detections(detections, score_threshold=score_threshold)]
    weight = 1.0 / len(targets)
    score = 0.0
    for name, count in targets:
        name = NUMERACY_ALIASES.get(name, name)
        if name not in names:
            names = [name if name in label else label for label in names]
        if name in names:
            score += 0.5 * weight
            if names.count(name) == count:
                score += 0.5 * weight
    return score
