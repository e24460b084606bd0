"""Random scenes: ones that satisfy a GenEval metadata dict exactly, and unconstrained ones.

``scene_for`` builds the objects the metadata asks for (random colors where it names none), sometimes
adds one distractor of a class the metadata does not mention (GenEval tolerates such extra objects in
every tag; ``DISTRACTOR_PROB`` per scene), places everything on the patch grid with random sizes and
positions, and checks the result against GenEval's rules before returning it (retrying otherwise).
Kept deliberately clean:

- counting: exactly N instances of the class (the exclude clause forbids N+1);
- colors / color_attr / position: exactly one instance of each named class, so GenEval's "top
  instance" is unambiguous;
- position: the relation holds under GenEval's box-centre rule with ``REL_MARGIN`` to spare
  (normalised offset beyond 0.5 + REL_MARGIN); other relations may hold too (diagonals), as in GenEval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from irisbench.core.errors import IrisbenchError
from irisbench.world.scene import Obj, Scene, boxes_clear
from irisbench.world.vocab import BACKGROUNDS, CANVAS, COLORS, PATCH, RELATIONS, SHAPES, SIZES, TAGS

POSITION_THRESHOLD = 0.1  # GenEval's default margin factor
REL_MARGIN = 0.1  # extra slack beyond GenEval's 0.5 cut on the normalised offset
DISTRACTOR_PROB = 0.25
MAX_TRIES = 1000
# Tags that may get a distractor: all, since GenEval never penalises an object of an unmentioned class.
DISTRACTOR_TAGS = frozenset(TAGS)


class SamplerError(IrisbenchError, ValueError):
    """Metadata the shapes world cannot satisfy (unknown class/color/relation, impossible layout)."""


def relation_offsets(box_a: Sequence[float], box_b: Sequence[float],
                     threshold: float = POSITION_THRESHOLD) -> tuple[float, float] | None:
    """GenEval's normalised (dx, dy) of box A relative to box B, or None if A has no relation to B.

    Centres' offset o = cA - cB is shrunk per axis by ``threshold`` x the sum of the two box sizes on
    that axis, then divided by |o| (docs/protocols.md §1.4).
    """
    ca = np.array([(box_a[0] + box_a[2]) / 2, (box_a[1] + box_a[3]) / 2])
    cb = np.array([(box_b[0] + box_b[2]) / 2, (box_b[1] + box_b[3]) / 2])
    dims = np.array([box_a[2] - box_a[0] + box_b[2] - box_b[0], box_a[3] - box_a[1] + box_b[3] - box_b[1]])
    o = ca - cb
    r = np.sign(o) * np.maximum(np.abs(o) - threshold * dims, 0.0)
    if np.all(np.abs(r) < 1e-3):
        return None
    d = r / np.linalg.norm(o)
    return float(d[0]), float(d[1])


def relation_holds(relation: str, box_a: Sequence[float], box_b: Sequence[float], cut: float = 0.5) -> bool:
    """Whether A is ``relation`` B under GenEval's rule (with ``cut`` on the normalised offset)."""
    d = relation_offsets(box_a, box_b)
    if d is None:
        return False
    dx, dy = d
    return {"left of": dx < -cut, "right of": dx > cut, "above": dy < -cut, "below": dy > cut}[relation]


def _check_metadata(md: Mapping[str, Any]) -> None:
    if not isinstance(md, Mapping) or "include" not in md:
        raise SamplerError(f"metadata must be a dict with 'include', got {md!r}")
    for key in ("include", "exclude"):
        for i, c in enumerate(md.get(key, [])):
            where = f"metadata {key}[{i}] of {md.get('prompt', '?')!r}"
            if c.get("class") not in SHAPES:
                raise SamplerError(f"{where}: class {c.get('class')!r} is not a shape {SHAPES}")
            if not isinstance(c.get("count"), int) or c["count"] < 0:
                raise SamplerError(f"{where}: count {c.get('count')!r} must be a non-negative int")
            if c.get("color") is not None and c["color"] not in COLORS:
                raise SamplerError(f"{where}: color {c['color']!r} is not one of {COLORS}")
            if "position" in c:
                pos = c["position"]
                ok = isinstance(pos, (list, tuple)) and len(pos) == 2 and pos[0] in RELATIONS \
                    and isinstance(pos[1], int) and 0 <= pos[1] < i and key == "include"
                if not ok:
                    raise SamplerError(f"{where}: bad position {pos!r} (expected [relation, earlier include "
                                       "index])")


def satisfies(md: Mapping[str, Any], scene: Scene, cut: float = 0.5) -> bool:
    """GenEval's verdict for a perfectly detected ``scene`` (every object found, score 1).

    Ties between instances of one class make GenEval's "top instance" ill-defined, so a clause with a
    color or a position, or one referenced by a position, requires exactly ``count`` instances.
    """
    by_class: dict[str, list[Obj]] = {}
    for o in scene.objects:
        by_class.setdefault(o.shape, []).append(o)
    include = md["include"]
    referenced = {c["position"][1] for c in include if "position" in c}
    groups: list[list[Obj]] = []
    for i, c in enumerate(include):
        found = by_class.get(c["class"], [])
        if len(found) < c["count"]:
            return False
        strict = c.get("color") is not None or "position" in c or i in referenced
        if strict and len(found) != c["count"]:
            return False
        if c.get("color") is not None and any(o.color != c["color"] for o in found):
            return False
        if "position" in c:
            rel, idx = c["position"]
            if not all(relation_holds(rel, a.box, b.box, cut) for a in found for b in groups[idx]):
                return False
        groups.append(found)
    return all(len(by_class.get(c["class"], [])) < c["count"] for c in md.get("exclude", []))


def _free_cells(placed: Sequence[Obj], size: int) -> list[tuple[int, int]]:
    cells = []
    for y in range(0, CANVAS - size + 1, PATCH):
        for x in range(0, CANVAS - size + 1, PATCH):
            box = (x, y, x + size, y + size)
            if all(boxes_clear(box, p.box) for p in placed):
                cells.append((x, y))
    return cells


def scene_for(metadata: Mapping[str, Any], rng: np.random.Generator) -> Scene:
    """A random scene that GenEval judges correct for ``metadata`` (under perfect detection)."""
    _check_metadata(metadata)
    include = list(metadata["include"])
    mentioned = {c["class"] for c in include} | {c["class"] for c in metadata.get("exclude", [])}
    spare = [s for s in SHAPES if s not in mentioned]
    allow_distractor = metadata.get("tag") in DISTRACTOR_TAGS and bool(spare)
    for _ in range(MAX_TRIES):
        # Specs per clause: each clause's instances share a group index, so positions can reference them.
        specs: list[tuple[str, str, tuple[str, int] | None]] = []
        groups: list[int] = []
        for gi, c in enumerate(include):
            for _k in range(c["count"]):
                color = c.get("color") or str(rng.choice(COLORS))
                pos = tuple(c["position"]) if "position" in c else None
                specs.append((c["class"], color, pos))  # type: ignore[arg-type]
                groups.append(gi)
        if allow_distractor and rng.random() < DISTRACTOR_PROB:
            specs.append((str(rng.choice(spare)), str(rng.choice(COLORS)), None))
            groups.append(len(include))
        # Place targets before the clauses that reference them (GenEval only references earlier clauses).
        scene = _place_grouped(specs, groups, rng, int(rng.integers(len(BACKGROUNDS))))
        if scene is not None and satisfies(metadata, scene):
            order = rng.permutation(len(scene.objects))  # drawing order carries no information
            return Scene(tuple(scene.objects[i] for i in order), scene.background)
    raise SamplerError(f"no valid scene found for {metadata.get('prompt', metadata)!r} in {MAX_TRIES} tries")


def _place_grouped(specs: Sequence[tuple[str, str, tuple[str, int] | None]], groups: Sequence[int],
                   rng: np.random.Generator, background: int) -> Scene | None:
    placed: list[Obj] = []
    group_of: list[int] = []
    for (shape, color, pos), g in zip(specs, groups, strict=True):
        size = int(rng.choice(SIZES))
        cells = _free_cells(placed, size)
        if pos is not None:
            rel, idx = pos
            targets = [p for p, pg in zip(placed, group_of, strict=True) if pg == idx]
            cells = [(x, y) for x, y in cells
                     if all(relation_holds(rel, (x, y, x + size, y + size), t.box, 0.5 + REL_MARGIN)
                            for t in targets)]
        if not cells:
            return None
        x, y = cells[int(rng.integers(len(cells)))]
        placed.append(Obj(shape, color, x, y, size))
        group_of.append(g)
    return Scene(tuple(placed), background)


def random_scene(rng: np.random.Generator, max_objects: int = 4) -> Scene:
    """1..``max_objects`` objects with random shape, color, size and grid position; random background."""
    for _ in range(MAX_TRIES):
        n = int(rng.integers(1, max_objects + 1))
        specs = [(str(rng.choice(SHAPES)), str(rng.choice(COLORS)), None) for _ in range(n)]
        scene = _place_grouped(specs, list(range(n)), rng, int(rng.integers(len(BACKGROUNDS))))
        if scene is not None:
            return scene
    raise SamplerError(f"could not place {max_objects} objects in {MAX_TRIES} tries")
