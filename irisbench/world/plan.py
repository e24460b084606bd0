"""The shapes world's semantic plan: a short text describing a scene, its analogue of a chain of thought.

One phrase per object, ``"{small|big} {color} {shape} {row} {column}"``, with objects sorted
top-to-bottom then left-to-right by their coarse cell (then by exact box centre) and joined by ``" ; "``, e.g.
``"big red circle top left ; small blue square bottom right"``. Rows and columns are thirds of the
canvas (top/middle/bottom x left/center/right) decided by the box centre; "small" is the smallest
object size, "big" any larger one. The background is not described. Two objects of a valid scene
never share a coarse cell (their centres are >= 12 px apart on some axis, a third is 10.7 px).

Departure from IRIS/T2I-R1: their semantic-level CoT is free text written by the model; here it is a
fixed, parseable grammar so a plan can be checked against the image it precedes.
"""

from __future__ import annotations

from irisbench.world.scene import Obj, Scene
from irisbench.world.vocab import CANVAS, COLORS, SHAPES, SIZES

ROWS: tuple[str, ...] = ("top", "middle", "bottom")
COLUMNS: tuple[str, ...] = ("left", "center", "right")
SIZE_WORDS: tuple[str, ...] = ("small", "big")
SEPARATOR = ";"
PLAN_WORDS: tuple[str, ...] = (*SIZE_WORDS, *COLORS, *SHAPES, *ROWS, *COLUMNS, SEPARATOR)


def _third(centre2: int) -> int:
    """Index 0..2 of the canvas third holding a coordinate given as twice the centre (exact integers)."""
    return min(3 * centre2 // (2 * CANVAS), 2)


def object_phrase(o: Obj) -> str:
    """``"{size} {color} {shape} {row} {column}"`` for one object."""
    size = SIZE_WORDS[0] if o.size == min(SIZES) else SIZE_WORDS[1]
    row = ROWS[_third(2 * o.y + o.size)]
    col = COLUMNS[_third(2 * o.x + o.size)]
    return f"{size} {o.color} {o.shape} {row} {col}"


def plan_text(scene: Scene) -> str:
    """The plan of ``scene`` (empty string for a scene with no objects)."""
    objs = sorted(scene.objects, key=lambda o: (_third(2 * o.y + o.size), _third(2 * o.x + o.size),
                                               2 * o.y + o.size, 2 * o.x + o.size))
    return f" {SEPARATOR} ".join(object_phrase(o) for o in objs)
