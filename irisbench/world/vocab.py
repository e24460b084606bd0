"""The shapes world's vocabulary and geometry constants (shared by renderer, prompts, tokenizer, policy).

Departure from GenEval: the 80 COCO classes become ten shape classes; the ten GenEval colors and
the GenEval templates (articles, plurals, number words) are kept verbatim. Ten classes (rather than the
first world's four) give every tag enough distinct prompt texts for RL-training, val and test prompts to be
disjoint (``irisbench.world.prompts``); docs/shapes-world.md shows the masks and their confusability.
"""

from __future__ import annotations

CANVAS = 32  # image side in pixels
PATCH = 4  # tokenizer patch side; objects are aligned to this grid
GRID = CANVAS // PATCH  # 8 x 8 = 64 image tokens
SIZES = (8, 12)  # object box side in pixels (2x2 or 3x3 patches)
MIN_GAP = PATCH  # pixels between object boxes (one empty patch)

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "diamond", "cross", "ring", "frame", "hourglass", "funnel", "bowtie",
)
# Version of the world's language and masks: 1 had the first four shapes only. Recorded with shipped
# bases and published results so that a result made in another world version is never mixed with this one.
WORLD_VERSION = 2
# GenEval's color list, in its order.
COLORS: tuple[str, ...] = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "orange": (255, 140, 0),
    "yellow": (255, 225, 25),
    "green": (40, 170, 60),
    "blue": (30, 80, 230),
    "purple": (140, 50, 190),
    "pink": (255, 130, 200),
    "brown": (125, 70, 25),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
}
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((105, 105, 105), (135, 135, 135), (165, 165, 165))
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
)
COUNTS = (2, 3, 4)  # the counting tag's N, as in GenEval
TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def article(word: str) -> str:
    """GenEval's article rule: 'an' before a vowel letter, else 'a'."""
    return "an" if word[0] in "aeiou" else "a"


def plural(word: str) -> str:
    """GenEval's plural rule: '+es' after a final 's', else '+s'."""
    return word + "es" if word.endswith("s") else word + "s"
