"""GenEval scoring rules (Ghosh et al., 2023) as pure functions, plus the metadata schema.

Contract shared by every perception layer: a detector turns pixels into ``Detection`` objects,
``judge`` turns (metadata, detections) into a ``Verdict``. See docs/protocols.md §1.4.

``judge`` re-implements the official ``evaluation/evaluate_images.py`` decision logic (per-class sort,
strict score cut, top-16, ANDed include clauses with color and position checks, ORed exclude clauses)
and words its failure reasons the same way. Departures from the official code, all deliberate:

- Colors are an input (``Detection.color``), not computed here; ``None`` never matches a color and is
  left out of the color tally in the reason text.
- The greedy per-class IoU filter is not implemented: its official default (``max_overlap=1.0``)
  disables it.
- Ties in score keep a deterministic order: reversed input order, as ``np.argsort(kind="stable")[::-1]``
  (the official ``np.argsort`` default is not guaranteed stable for large arrays).
- ``relation`` computes in Python floats (float64); the official code inherits mmdet's float32 boxes.
  The two can only disagree within float32 rounding of a decision boundary.
- When a position check fails, the official reason lists the found relations in set-iteration order;
  here they are listed in the fixed order left of, right of, above, below.
- Metadata is validated (``validate_metadata``/``load_metadata``) instead of failing with a KeyError
  deep in the evaluator or silently ignoring a misspelt key.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from irisbench.core.errors import IrisbenchError, read_utf8

# The 80 GenEval object names in COCO category order (``object_names.txt``). Three differ from COCO:
# "computer mouse" (COCO "mouse"), "tv remote" ("remote"), "computer keyboard" ("keyboard").
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote", "computer keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)
GENEVAL_COLORS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
)
GENEVAL_RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
GENEVAL_TAGS: tuple[str, ...] = (
    "single_object", "two_object", "counting", "colors", "position", "color_attr",
)

_INCLUDE_KEYS = frozenset({"class", "count", "color", "position"})
_EXCLUDE_KEYS = frozenset({"class", "count"})


@dataclass(frozen=True)
class Detection:
    """One detected object. ``box`` is (x1, y1, x2, y2) in pixels; ``color`` a GenEval color name."""

    label: str
    box: tuple[float, float, float, float]
    score: float
    color: str | None = None


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str = ""


class MetadataError(IrisbenchError, ValueError):
    """A GenEval metadata object or file that does not follow the schema (message names where and field)."""


# ---------------------------------------------------------------------------------------------- rules


def relation(
    box_a: Sequence[float], box_b: Sequence[float], threshold: float = 0.1
) -> set[str]:
    """Relations of box A relative to box B, GenEval style (image y axis points down).

    Offset of the centres o = cA - cB; each axis is shrunk towards 0 by ``threshold`` times the sum
    of the two boxes' sizes on that axis; if both shrunk components are below 1e-3 there is no
    relation; otherwise the shrunk offset is divided by the norm of the *original* offset and each
    component compared with ±0.5. Diagonal placements give two relations.
    """
    ax1, ay1, ax2, ay2 = (float(v) for v in box_a[:4])
    bx1, by1, bx2, by2 = (float(v) for v in box_b[:4])
    offset = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2, (ay1 + ay2) / 2 - (by1 + by2) / 2)
    sums = (abs(ax2 - ax1) + abs(bx2 - bx1), abs(ay2 - ay1) + abs(by2 - by1))
    shrunk = tuple(
        math.copysign(max(abs(o) - threshold * s, 0.0), o) if o != 0 else 0.0
        for o, s in zip(offset, sums, strict=True)
    )
    if all(abs(r) < 1e-3 for r in shrunk):
        return set()
    norm = math.hypot(*offset)
    dx, dy = shrunk[0] / norm, shrunk[1] / norm
    found = set()
    if dx < -0.5:
        found.add("left of")
    if dx > 0.5:
        found.add("right of")
    if dy < -0.5:
        found.add("above")
    if dy > 0.5:
        found.add("below")
    return found


def _kept_by_class(
    detections: Sequence[Detection], cut: float, max_objects: int
) -> dict[str, list[Detection]]:
    """Per class: most confident first, strictly above ``cut``, at most ``max_objects``."""
    by_class: dict[str, list[Detection]] = {}
    for det in detections:
        by_class.setdefault(det.label, []).append(det)
    kept: dict[str, list[Detection]] = {}
    for label, dets in by_class.items():
        # Stable ascending sort then reverse == np.argsort(kind="stable")[::-1].
        ordered = sorted(dets, key=lambda d: d.score)[::-1]
        top = [d for d in ordered if d.score > cut][:max_objects]
        if top:
            kept[label] = top
    return kept


def kept_by_class(
    detections: Sequence[Detection], cut: float, max_objects: int = 16
) -> dict[str, list[Detection]]:
    """The detections the judge reads, per class: score strictly above ``cut``, most confident first, at most
    ``max_objects`` (the official ``details`` field of ``results.jsonl``)."""
    return _kept_by_class(detections, cut, max_objects)


def _ordered_relations(rels: set[str]) -> list[str]:
    return [r for r in GENEVAL_RELATIONS if r in rels]


def judge(
    metadata: dict,
    detections: Sequence[Detection],
    *,
    threshold: float = 0.3,
    counting_threshold: float = 0.9,
    max_objects: int = 16,
    position_threshold: float = 0.1,
) -> Verdict:
    """Decide whether one image satisfies one GenEval metadata object (official rules).

    ``detections`` may hold any classes, in any order; their ``color`` is only read for clauses with a
    ``color``. The confidence cut is ``counting_threshold`` for the counting tag, ``threshold`` otherwise.
    ``metadata`` is assumed to have passed ``validate_metadata``; only a position pointing at no earlier
    include group is re-checked here (``MetadataError``), since it would otherwise read the wrong group.
    """
    cut = counting_threshold if metadata.get("tag") == "counting" else threshold
    objects = _kept_by_class(detections, cut, max_objects)
    correct = True
    reasons: list[str] = []
    matched_groups: list[list[Detection] | None] = []

    for index, clause in enumerate(metadata.get("include", [])):
        name, count = clause["class"], clause["count"]
        found = objects.get(name, [])[:count]
        matched = True
        if len(found) < count:
            matched = False
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if "color" in clause:
                want = clause["color"]
                colors = [d.color for d in found]
                if colors.count(want) < count:
                    matched = False
                    tally = ", ".join(f"{colors.count(c)} {c}" for c in GENEVAL_COLORS if c in colors)
                    reasons.append(
                        f"expected {want} {name}>={count}, found {colors.count(want)} {want}; and {tally}"
                    )
            if "position" in clause and matched:
                expected_rel, target = clause["position"]
                if not (isinstance(target, int) and 0 <= target < index):
                    raise MetadataError(
                        f"include[{index}].position: target {target!r} is not an earlier include group"
                    )
                targets = matched_groups[target]
                if targets is None:
                    matched = False
                    reasons.append(f"no target for {name} to be {expected_rel}")
                else:
                    for obj in found:
                        for target_obj in targets:
                            rels = relation(obj.box, target_obj.box, position_threshold)
                            if expected_rel not in rels:
                                matched = False
                                reasons.append(
                                    f"expected {name} {expected_rel} target, found "
                                    f"{' and '.join(_ordered_relations(rels))} target"
                                )
                                break
                        if not matched:
                            break
        correct = correct and matched
        matched_groups.append(found if matched else None)

    for clause in metadata.get("exclude", []):
        name, count = clause["class"], clause["count"]
        n_found = len(objects.get(name, []))
        if n_found >= count:
            correct = False
            reasons.append(f"expected {name}<{count}, found {n_found}")

    return Verdict(correct=correct, reason="\n".join(reasons))


# --------------------------------------------------------------------------------------------- schema


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_clause(
    clause: object,
    field: str,
    *,
    allowed: frozenset[str],
    group: int | None,
    classes: Collection[str] | None,
    where: str,
) -> None:
    if not isinstance(clause, dict):
        raise MetadataError(f"{where}: {field} must be an object, got {type(clause).__name__}")
    extra = sorted(set(clause) - allowed)
    if extra:
        raise MetadataError(f"{where}: {field} has unknown key(s) {extra}; allowed: {sorted(allowed)}")
    if "class" not in clause:
        raise MetadataError(f"{where}: {field}.class is missing")
    name = clause["class"]
    if not isinstance(name, str):
        raise MetadataError(f"{where}: {field}.class must be a string, got {name!r}")
    if classes is not None and name not in classes:
        raise MetadataError(f"{where}: {field}.class {name!r} is not a known class")
    if "count" not in clause:
        raise MetadataError(f"{where}: {field}.count is missing")
    count = clause["count"]
    if not _is_int(count) or count < 1:
        raise MetadataError(f"{where}: {field}.count must be a positive integer, got {count!r}")
    if "color" in clause and clause["color"] not in GENEVAL_COLORS:
        raise MetadataError(
            f"{where}: {field}.color {clause['color']!r} is not a GenEval color {list(GENEVAL_COLORS)}"
        )
    if "position" in clause:
        pos = clause["position"]
        if not isinstance(pos, (list, tuple)) or len(pos) != 2:
            raise MetadataError(
                f"{where}: {field}.position must be a [relation, group index] pair, got {pos!r}"
            )
        rel, target = pos
        if rel not in GENEVAL_RELATIONS:
            raise MetadataError(
                f"{where}: {field}.position relation {rel!r} is not one of {list(GENEVAL_RELATIONS)}"
            )
        assert group is not None  # position is only allowed in include clauses
        if not _is_int(target) or not 0 <= target < group:
            raise MetadataError(
                f"{where}: {field}.position index {target!r} must reference an earlier include group "
                f"(0..{group - 1})"
                if group
                else f"{where}: {field}.position index {target!r} has no earlier include group to reference"
            )


def validate_metadata(
    obj: object, *, classes: Collection[str] | None = None, where: str = "metadata"
) -> dict:
    """Check one parsed GenEval metadata object against the schema; return it unchanged.

    Raises ``MetadataError`` naming ``where`` (e.g. ``"prompts.jsonl:12"``) and the offending field.
    Extra top-level keys are allowed; extra clause keys are not (the evaluator would silently ignore a
    misspelt "colour"). ``classes`` restricts class names when given.
    """
    if not isinstance(obj, dict):
        raise MetadataError(f"{where}: metadata must be a JSON object, got {type(obj).__name__}")
    for key in ("tag", "include", "prompt"):
        if key not in obj:
            raise MetadataError(f"{where}: required field {key!r} is missing")
    if obj["tag"] not in GENEVAL_TAGS:
        raise MetadataError(f"{where}: tag {obj['tag']!r} is not one of {list(GENEVAL_TAGS)}")
    if not isinstance(obj["prompt"], str):
        raise MetadataError(f"{where}: prompt must be a string, got {obj['prompt']!r}")
    include = obj["include"]
    if not isinstance(include, list) or not include:
        raise MetadataError(f"{where}: include must be a non-empty list, got {include!r}")
    for i, clause in enumerate(include):
        _check_clause(clause, f"include[{i}]", allowed=_INCLUDE_KEYS, group=i, classes=classes, where=where)
    if "exclude" in obj:
        exclude = obj["exclude"]
        if not isinstance(exclude, list):
            raise MetadataError(f"{where}: exclude must be a list, got {exclude!r}")
        for i, clause in enumerate(exclude):
            _check_clause(
                clause, f"exclude[{i}]", allowed=_EXCLUDE_KEYS, group=None, classes=classes, where=where
            )
    return obj


def load_metadata(path: str | os.PathLike[str], *, classes: Collection[str] | None = None) -> list[dict]:
    """Read a GenEval metadata JSONL file (one object per line, blank lines skipped), validated."""
    text = read_utf8(path, MetadataError, "metadata file", "a metadata .jsonl file")
    items: list[dict] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise MetadataError(f"{where}: invalid JSON: {err.msg} (column {err.colno})") from None
        items.append(validate_metadata(obj, classes=classes, where=where))
    if not items:
        raise MetadataError(f"{path}: metadata file is empty (no non-blank lines)")
    return items
