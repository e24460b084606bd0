"""GenEval prompts and metadata over the shapes vocabulary, their parser and the train/val/test splits.

Metadata dicts follow GenEval's ``evaluation_metadata.jsonl`` schema exactly (docs/protocols.md §1.2): keys
in the order ``tag, include, [exclude,] prompt``; clause keys ``class, count, [color | position]``;
the same templates, articles, plurals and number words; counting N in {2, 3, 4} with ``exclude``
N+1; position clauses ``[relation, 0]`` with the target object (the one after the relation words)
first in ``include``.

Departures from GenEval's ``create_prompts.py``: instead of sampling 100 prompts per tag from 80 COCO
classes, the shapes world enumerates *every* distinct prompt of its 10 classes (``all_prompts``: 10 +
90 + 30 + 100 + 360 + 8100 = 8690), and draws its own train/val/test splits (``build_splits``). "person"
is not a class here, so no class is excluded from the color tags.

The splits are disjoint as texts for every tag: a prompt an RL run trains on is never a val or test
prompt, so a test score measures prompts the RL stage has not seen (``split_overlap`` checks it). The
shipped bases are pretrained on the whole language (every split's texts, fresh images), as a real T2I
model has met most phrasings before RL; the RL stage is what the split keeps honest.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any

import numpy as np

from irisbench.core.errors import IrisbenchError, UsageError
from irisbench.core.stats import prompt_key
from irisbench.world.vocab import COLORS, COUNTS, NUMBER_WORDS, RELATIONS, SHAPES, TAGS, article, plural

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Entries per tag in val and in test. Chosen as the smallest round size for which the overall score's
# bootstrap 95% CI half-width is <= 0.025 for a mid-range policy (per-prompt success ~ Beta(1, 1),
# 4 images per prompt): analytically 1.96 * sqrt((1/12 + 1/24) / (6 n)) <= 0.025 needs n >= 129;
# 132 (= 11 x 12, so the 4- and 12-prompt tags are covered evenly) gives ~0.0246.
# tests/test_world_prompts.py re-measures it by simulation.
DEFAULT_PER_TAG = 132

# Share of a tag's distinct prompt texts given to val and to test each (at most DEFAULT_PER_TAG texts,
# at least one); train keeps the rest, so at least 60%. Val and test cycle through their texts to fill
# ``per_tag`` entries. With 10 shapes: single_object 2 / 2 / 6 texts (val / test / train), two_object
# 18 / 18 / 54, counting 6 / 6 / 18, colors 20 / 20 / 60, position 72 / 72 / 216, color_attr 132 / 132 / 7836.
EVAL_SHARE = 0.2
# Entries per tag of the ``seen`` evaluation set (RL-training texts, ``seen_split``): a third of a val/test
# split, enough to tell a seen-vs-unseen gap of ~0.1 from zero across seeds, cheap beside the test split.
SEEN_PER_TAG = 44
# Every tag is split by text (v1 of the world shared texts across splits for five of six tags).
SPLIT_KIND: dict[str, str] = dict.fromkeys(TAGS, "disjoint")


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


def eval_text_count(tag: str, per_tag: int = DEFAULT_PER_TAG) -> int:
    """How many distinct prompt texts val (and, separately, test) hold for ``tag``."""
    n = len(_all_prompts(tag))
    return max(1, min(per_tag, math.ceil(EVAL_SHARE * n)))


def build_splits(seed: int = 0, per_tag: int = DEFAULT_PER_TAG) -> dict[str, list[dict[str, Any]]]:
    """Train/val/test metadata lists, deterministic for ``seed``; disjoint as prompt texts for every tag.

    For each tag a seeded permutation of its distinct prompts gives test the first ``eval_text_count``
    texts, val the next as many, and train the rest (each once, in vocabulary order). Val and test hold
    ``per_tag`` entries each, cycling through their texts in seeded orders (each text ``per_tag // k``
    or one more times). Entries are grouped by tag in ``TAGS`` order.
    """
    if not isinstance(per_tag, (int, np.integer)) or per_tag < 1:
        raise UsageError(f"per_tag must be a positive int, got {per_tag!r}")
    splits: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for ti, tag in enumerate(TAGS):
        prompts = _all_prompts(tag)
        n, k = len(prompts), eval_text_count(tag, per_tag)
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, ti])
        perm = rng.permutation(n)
        texts = {"test": perm[:k], "val": perm[k:2 * k], "train": np.sort(perm[2 * k:])}
        chosen = {"train": texts["train"]}
        for s in ("val", "test"):
            reps = -(-per_tag // k)
            chosen[s] = np.concatenate([texts[s][rng.permutation(k)] for _ in range(reps)])[:per_tag]
        for s in SPLITS:
            splits[s].extend(copy.deepcopy(prompts[i]) for i in chosen[s])
    return splits


def seen_split(seed: int = 0, per_tag: int = SEEN_PER_TAG) -> list[dict[str, Any]]:
    """The ``seen`` evaluation set: ``per_tag`` entries per tag drawn from that tag's RL-training texts
    (``build_splits(seed)["train"]``; distinct texts where the tag has enough, else cycling through them as
    val and test do; seeded), so that a trained policy's score on
    prompts it was trained on can be read beside its score on unseen ones (test). Nothing trains on it."""
    train = build_splits(seed)["train"]
    out: list[dict[str, Any]] = []
    for ti, tag in enumerate(TAGS):
        texts = [md for md in train if md["tag"] == tag]
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, ti, 0x5EE7])
        reps = -(-per_tag // len(texts))
        picked = np.concatenate([rng.permutation(len(texts)) for _ in range(reps)])[:per_tag]
        out.extend(copy.deepcopy(texts[i]) for i in picked)
    return out


def split_overlap(train: Sequence[dict[str, Any]], held_out: Sequence[dict[str, Any]]) -> list[str]:
    """Prompt texts (normalised as ``parse_prompt`` does) found in both ``train`` and ``held_out``, sorted."""
    def norm(items: Sequence[dict[str, Any]]) -> set[str]:
        return {prompt_key(md["prompt"]) for md in items}

    return sorted(norm(train) & norm(held_out))
