"""Re-implementation of GenEval's prompt generator (``prompts/create_prompts.py``).

With the defaults (seed 43, n=100, the 80 GenEval names, the 10 GenEval colors) ``write_metadata_jsonl``
reproduces the official ``evaluation_metadata.jsonl`` byte for byte (sha256 ``OFFICIAL_METADATA_SHA256``;
553 prompts). The random draws are made in the official order with the official ``numpy.random.Generator``
calls, so the stream is the same; see docs/protocols.md §1.1.

Departures from the official script, none of which change the output for the official inputs:

- generic over ``classes``/``colors``; the class that is never colored ("person") is a parameter, and if
  it is absent from ``classes`` colored samples draw from all classes;
- de-duplication compares a canonical JSON dump of each sample instead of its YAML dump (both are
  key-sorted dumps of the same plain data, so the same samples are dropped) — no PyYAML needed;
- positions are built as lists (the official tuples are written as JSON lists anyway).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from irisbench.core.errors import UsageError
from irisbench.protocols.geneval import COCO_CLASSES, GENEVAL_COLORS, GENEVAL_RELATIONS

OFFICIAL_METADATA_SHA256 = "5c48e0813e812e3c373fa5c8ed07a8f0a483be30272b4427b0559c8048e67c13"
OFFICIAL_SEED = 43
OFFICIAL_N = 100
NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
)


def with_article(word: str) -> str:
    """GenEval's article rule: 'an' before a lowercase vowel letter, else 'a'."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def make_plural(word: str) -> str:
    """GenEval's plural rule, quirks kept: '+es' after a final 's', else '+s' ("knifes", "sheeps")."""
    return f"{word}es" if word.endswith("s") else f"{word}s"


class _Sampler:
    """The six GenEval task samplers sharing one random stream."""

    def __init__(
        self,
        rng: np.random.Generator,
        classes: Sequence[str],
        colors: Sequence[str],
        relations: Sequence[str],
        uncolored: str | None,
    ) -> None:
        self.rng = rng
        self.classes = list(classes)
        self.colors = list(colors)
        self.relations = list(relations)
        self.uncolored_index = self.classes.index(uncolored) if uncolored in self.classes else None

    def single_objects(self) -> list[dict]:
        n = len(self.classes)
        order = self.rng.choice(n, size=n, replace=False)
        return [
            {"tag": "single_object", "include": [{"class": self.classes[i], "count": 1}],
             "prompt": f"a photo of {with_article(self.classes[i])}"}
            for i in order
        ]

    def two_object(self) -> dict:
        a, b = (self.classes[i] for i in self.rng.choice(len(self.classes), size=2, replace=False))
        return {"tag": "two_object",
                "include": [{"class": a, "count": 1}, {"class": b, "count": 1}],
                "prompt": f"a photo of {with_article(a)} and {with_article(b)}"}

    def counting(self, max_count: int = 4) -> dict:
        name = self.classes[self.rng.choice(len(self.classes))]
        num = int(self.rng.integers(2, max_count, endpoint=True))
        return {"tag": "counting",
                "include": [{"class": name, "count": num}],
                "exclude": [{"class": name, "count": num + 1}],
                "prompt": f"a photo of {NUMBER_WORDS[num]} {make_plural(name)}"}

    def _colorable(self, size: int | None) -> list[int]:
        """Class indices that skip ``uncolored``: draw from n-1, add 1, rotate by its index modulo n."""
        n = len(self.classes)
        if self.uncolored_index is None:
            drawn = self.rng.choice(n) if size is None else self.rng.choice(n, size=size, replace=False)
            return [int(i) for i in np.atleast_1d(drawn)]
        drawn = self.rng.choice(n - 1) if size is None else self.rng.choice(n - 1, size=size, replace=False)
        return [int((i + 1 + self.uncolored_index) % n) for i in np.atleast_1d(drawn)]

    def colors_sample(self) -> dict:
        (idx,) = self._colorable(None)
        name = self.classes[idx]
        color = self.colors[self.rng.choice(len(self.colors))]
        return {"tag": "colors",
                "include": [{"class": name, "count": 1, "color": color}],
                "prompt": f"a photo of {with_article(color)} {name}"}

    def position(self) -> dict:
        a, b = (self.classes[i] for i in self.rng.choice(len(self.classes), size=2, replace=False))
        rel = self.relations[self.rng.choice(len(self.relations))]
        # The target (the object after the relation word) is group 0.
        return {"tag": "position",
                "include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [rel, 0]}],
                "prompt": f"a photo of {with_article(a)} {rel} {with_article(b)}"}

    def color_attr(self) -> dict:
        a, b = (self.classes[i] for i in self._colorable(2))
        ca, cb = (self.colors[i] for i in self.rng.choice(len(self.colors), size=2, replace=False))
        return {"tag": "color_attr",
                "include": [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}],
                "prompt": f"a photo of {with_article(ca)} {a} and {with_article(cb)} {b}"}


def generate_official_metadata(
    seed: int = OFFICIAL_SEED,
    n: int = OFFICIAL_N,
    classes: Sequence[str] = COCO_CLASSES,
    colors: Sequence[str] = GENEVAL_COLORS,
    *,
    relations: Sequence[str] = GENEVAL_RELATIONS,
    uncolored: str | None = "person",
) -> list[dict]:
    """GenEval metadata in official order: every class once, then ``n`` samples per other task, de-duplicated.

    Task order: single_object, two_object, counting (N in 2..4), colors, position, color_attr. Exact
    duplicate samples are dropped, the first occurrence kept.
    """
    if n < 0:
        raise UsageError(f"n must be >= 0, got {n}")
    if len(classes) < 3 or len(set(classes)) != len(classes):
        raise UsageError("classes must hold at least 3 distinct names")
    if len(colors) < 2 or len(set(colors)) != len(colors):
        raise UsageError("colors must hold at least 2 distinct names")
    sampler = _Sampler(np.random.default_rng(seed), classes, colors, relations, uncolored)
    samples = sampler.single_objects()
    for make in (sampler.two_object, sampler.counting, sampler.colors_sample, sampler.position,
                 sampler.color_attr):
        samples.extend(make() for _ in range(n))
    unique: list[dict] = []
    seen: set[str] = set()
    for sample in samples:
        key = json.dumps(sample, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(sample)
    return unique


def metadata_jsonl(items: Sequence[dict]) -> str:
    """The official file text: ``json.dumps`` defaults (", "/": " separators, ASCII), one object a line."""
    return "".join(json.dumps(item) + "\n" for item in items)


def write_metadata_jsonl(items: Sequence[dict], path: str | os.PathLike[str]) -> None:
    """Write ``items`` as the official ``evaluation_metadata.jsonl`` format (LF line ends, final newline)."""
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(metadata_jsonl(items))


def generation_prompts(items: Sequence[dict]) -> list[str]:
    """The ``prompt`` of each item: line i of the official ``generation_prompts.txt``."""
    return [item["prompt"] for item in items]
