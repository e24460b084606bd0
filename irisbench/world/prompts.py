"""GenEval prompts and metadata over the shapes vocabulary, their parser and the train/val/test splits.

Metadata dicts follow GenEval's ``evaluation_metadata.jsonl`` schema exactly (docs/protocols.md §1.2): keys
in the order ``tag, include, [exclude,] prompt``; clause keys ``class, count, [color | position]``;
the same templates, articles, plurals and number words; counting N in {2, 3, 4} with ``exclude``
N+1; position clauses ``[relation, 0]`` with the target object (the one after the relation words)
first in ``include``.

Departures from GenEval's ``create_prompts.py``: instead of sampling 100 prompts per tag from 80 COCO
classes, the shapes world enumerates *every* distinct prompt of its 4 classes (``all_prompts``: 4 +
12 + 12 + 40 + 48 + 1080 = 1196), and draws its own train/val/test splits (``build_splits``). "person"
is not a class here, so no class is excluded from the color tags.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any

import numpy as np

from irisbench.errors import IrisbenchError, UsageError
from irisbench.world.vocab import COLORS, COUNTS, NUMBER_WORDS, RELATIONS, SHAPES, TAGS, article, plural

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Entries per tag in val and in test. Chosen as the smallest round size for which the overall score's
# bootstrap 95% CI half-width is <= 0.025 for a mid-range policy (per-prompt success ~ Beta(1, 1),
# 4 images per prompt): analytically 1.96 * sqrt((1/12 + 1/24) / (6 n)) <= 0.025 needs n >= 129;
# 132 (= 11 x 12, so the 4- and 12-prompt tags are covered evenly) gives ~0.0246.
# tests/test_world_prompts.py re-measures it by simulation.
DEFAULT_PER_TAG = 132

# "disjoint": train/val/test hold different prompt texts; "shared": every split sees every prompt text
# (only the images differ: seeds are separated by split name elsewhere). A tag is disjoint only when it
# has enough prompts to give val and test DEFAULT_PER_TAG distinct prompts each and keep at least half
# of its prompts for training.
SPLIT_KIND: dict[str, str] = {
    "single_object": "shared",
    "two_object": "shared",
    "counting": "shared",
    "colors": "shared",
    "position": "shared",
    "color_attr": "disjoint",
}


class UnknownWordsError(IrisbenchError, ValueError):
    """A prompt contains words outside the shapes-world GenEval vocabulary."""

    def __init__(self, text: str, words: Sequence[str]) -> None:
        self.words = tuple(words)
        super().__init__(f"prompt {text!r} has words outside the shapes vocabulary: {', '.join(self.words)}")


def _clause(cls: str, count: int = 1, color: str | None = None,
            position: tuple[str, int] | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"class": cls, "count": count}
    if color is not None:
        c["color"] = color
    if position is not None:
        c["position"] = [position[0], position[1]]
    return c


def _a(cls: str, color: str | None = None) -> str:
    """'{a/an} {cls}' or '{a/an} {color} {cls}' (the article follows the first word, as in GenEval)."""
    return f"{article(cls)} {cls}" if color is None else f"{article(color)} {color} {cls}"


def make_metadata(tag: str, classes: Sequence[str], colors: Sequence[str] = (), count: int = 1,
                  relation: str | None = None) -> dict[str, Any]:
    """GenEval metadata for ``tag``; ``classes`` (and ``colors``) are in prompt order.

    Works for any class names (the tests rebuild the official COCO metadata with it); the shapes-world
    vocabulary is enforced by ``all_prompts``, not here.
    """
    classes, colors = list(classes), list(colors)
    expect = {"single_object": (1, 0), "two_object": (2, 0), "counting": (1, 0), "colors": (1, 1),
              "position": (2, 0), "color_attr": (2, 2)}
    if tag not in expect:
        raise UsageError(f"unknown GenEval tag {tag!r}; expected one of {TAGS}")
    if (len(classes), len(colors)) != expect[tag]:
        raise UsageError(f"tag {tag!r} needs {expect[tag][0]} class(es) and {expect[tag][1]} color(s), "
                         f"got classes={classes} colors={colors}")
    if (tag == "position") != (relation is not None):
        raise UsageError(f"a relation is required for position and only for it (tag {tag!r}, "
                         f"relation {relation!r})")
    if tag == "single_object":
        include, exclude, prompt = [_clause(classes[0])], None, f"a photo of {_a(classes[0])}"
    elif tag == "two_object":
        include = [_clause(classes[0]), _clause(classes[1])]
        exclude, prompt = None, f"a photo of {_a(classes[0])} and {_a(classes[1])}"
    elif tag == "counting":
        if not 1 <= count < len(NUMBER_WORDS) - 1:
            raise UsageError(f"counting needs 1 <= count < {len(NUMBER_WORDS) - 1}, got {count}")
        include, exclude = [_clause(classes[0], count)], [_clause(classes[0], count + 1)]
        prompt = f"a photo of {NUMBER_WORDS[count]} {plural(classes[0])}"
    elif tag == "colors":
        include, exclude = [_clause(classes[0], 1, colors[0])], None
        prompt = f"a photo of {_a(classes[0], colors[0])}"
    elif tag == "position":
        a, b = classes
        include, exclude = [_clause(b), _clause(a, position=(relation, 0))], None
        prompt = f"a photo of {_a(a)} {relation} {_a(b)}"
    else:  # color_attr
        include = [_clause(classes[0], 1, colors[0]), _clause(classes[1], 1, colors[1])]
        exclude = None
        prompt = f"a photo of {_a(classes[0], colors[0])} and {_a(classes[1], colors[1])}"
    md: dict[str, Any] = {"tag": tag, "include": include}
    if exclude is not None:
        md["exclude"] = exclude
    md["prompt"] = prompt
    return md


def _pairs() -> list[tuple[str, str]]:
    return [(a, b) for a in SHAPES for b in SHAPES if a != b]


@cache
def _all_prompts(tag: str) -> tuple[dict[str, Any], ...]:
    if tag == "single_object":
        out = [make_metadata(tag, [s]) for s in SHAPES]
    elif tag == "two_object":
        out = [make_metadata(tag, p) for p in _pairs()]
    elif tag == "counting":
        out = [make_metadata(tag, [s], count=n) for s in SHAPES for n in COUNTS]
    elif tag == "colors":
        out = [make_metadata(tag, [s], [c]) for s in SHAPES for c in COLORS]
    elif tag == "position":
        out = [make_metadata(tag, p, relation=r) for p in _pairs() for r in RELATIONS]
    elif tag == "color_attr":
        out = [make_metadata(tag, p, (c1, c2))
               for p in _pairs() for c1 in COLORS for c2 in COLORS if c1 != c2]
    else:
        raise UsageError(f"unknown GenEval tag {tag!r}; expected one of {TAGS}")
    return tuple(out)


def all_prompts(tag: str) -> list[dict[str, Any]]:
    """Every distinct metadata dict of ``tag``, in a fixed order (vocabulary order); fresh copies."""
    return copy.deepcopy(list(_all_prompts(tag)))


@lru_cache(maxsize=1)
def _prompt_index() -> dict[str, dict[str, Any]]:
    index = {md["prompt"]: md for tag in TAGS for md in _all_prompts(tag)}
    assert len(index) == sum(len(_all_prompts(t)) for t in TAGS), "prompt texts must be unique"
    return index


@lru_cache(maxsize=1)
def _prompt_words() -> tuple[str, ...]:
    words: dict[str, None] = {}
    for tag in TAGS:
        for md in _all_prompts(tag):
            words.update(dict.fromkeys(md["prompt"].split()))
    return tuple(words)


PROMPT_WORDS: tuple[str, ...] = _prompt_words()


def parse_prompt(text: str) -> dict[str, Any]:
    """The metadata dict of a shapes-world GenEval prompt (exact inverse of the templates).

    Case and runs of whitespace are normalised. Raises ``UnknownWordsError`` (a ``ValueError``) listing
    the words outside ``PROMPT_WORDS``, or ``ValueError`` if the words are known but the sentence is not
    one of the templates.
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    words = text.lower().split()
    known = set(PROMPT_WORDS)
    unknown = list(dict.fromkeys(w for w in words if w not in known))
    if unknown:
        raise UnknownWordsError(text, unknown)
    md = _prompt_index().get(" ".join(words))
    if md is None:
        raise UsageError(f"prompt {text!r} uses only known words but matches no shapes-world GenEval "
                         "template")
    return copy.deepcopy(md)


def build_splits(seed: int = 0, per_tag: int = DEFAULT_PER_TAG) -> dict[str, list[dict[str, Any]]]:
    """Train/val/test metadata lists, deterministic for ``seed``.

    val and test hold ``per_tag`` entries per tag. For a "disjoint" tag (``SPLIT_KIND``) they are
    distinct prompts that appear in no other split and train holds the rest; for a "shared" tag every
    split draws from all its prompts: val and test cycle through a seeded permutation (each prompt
    ``per_tag // n`` or one more times) and train holds each prompt once. Entries are grouped by tag in
    ``TAGS`` order.
    """
    if not isinstance(per_tag, (int, np.integer)) or per_tag < 1:
        raise UsageError(f"per_tag must be a positive int, got {per_tag!r}")
    splits: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for ti, tag in enumerate(TAGS):
        prompts = _all_prompts(tag)
        n = len(prompts)
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, ti])
        if SPLIT_KIND[tag] == "disjoint":
            if 2 * per_tag > n // 2:
                raise UsageError(f"per_tag={per_tag} is too large for the disjoint tag {tag!r} "
                                 f"({n} prompts; val + test may use at most half)")
            perm = rng.permutation(n)
            chosen = {"test": perm[:per_tag], "val": perm[per_tag:2 * per_tag],
                      "train": np.sort(perm[2 * per_tag:])}
        else:
            chosen = {"train": np.arange(n)}
            for s in ("val", "test"):
                reps = -(-per_tag // n)
                chosen[s] = np.concatenate([rng.permutation(n) for _ in range(reps)])[:per_tag]
        for s in SPLITS:
            splits[s].extend(copy.deepcopy(prompts[i]) for i in chosen[s])
    return splits
