"""The scorer contract: what every scorer of an evaluation suite implements.

A scorer turns a batch of images and their prompt items into one dict per image, the per-image fields the
suite's rules and aggregation read (``correct`` and ``detections`` for GenEval, ``score`` for T2I-CompBench,
the judge's numbers for WISE). The evaluation loop of every suite, WISE included
(``irisbench.evaluation.evaluate.produce_and_score``), calls every scorer the same way: ``scorer.score(images,
items)``, and records ``scorer.describe()`` in ``results.json``.

Images are HxWx3 uint8 arrays; a scorer that sends files elsewhere (the WISE judge) also takes the path of a
PNG file, whose bytes it sends unchanged, and says so with a true ``reads_files`` attribute: the loop then gives
it each image's file (the one saved in the run, or the one it was read from).

Implemented by ``scorers.shapes.ShapesGenEvalScorer``, ``scorers.shapes_compbench.ShapesCompBenchScorer``,
``scorers.geneval_real.Mask2FormerScorer``, ``scorers.compbench_scorer.CompBenchScorer`` and
``scorers.wise_judge.WiseJudgeScorer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, Union, runtime_checkable

import numpy as np

ImageInput = Union[np.ndarray, Path]  # noqa: UP007  (a runtime alias: isinstance-friendly on Python 3.10)


@runtime_checkable
class Scorer(Protocol):
    """One scorer: ``score`` a batch, ``describe`` itself for the run's results."""

    def score(self, images: Sequence[ImageInput], items: Sequence[dict]) -> list[dict[str, Any]]:
        """One dict of per-image fields per image, in the order given (``items[k]`` is the prompt of image k)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the scorer is (name, models, thresholds), recorded in ``results.json``'s ``scorer``."""
        ...
