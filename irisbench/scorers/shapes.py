"""GenEval perception for the shapes world: the exact detector feeding the official judge.

The rules are the same pure function (``irisbench.protocols.geneval.judge``) a real detector would feed;
only perception differs (exact palette/connected-component detection instead of Mask2Former + CLIP).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from irisbench.core.errors import UsageError


class ShapesGenEvalScorer:
    name = "shapes-exact"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "detector": "irisbench.world.detector.detect (exact)",
                "judge": "irisbench.protocols.geneval.judge (official rules)"}

    def score(self, images: Sequence[np.ndarray], items: Sequence[dict]) -> list[dict[str, Any]]:
        from irisbench.protocols.geneval import judge
        from irisbench.world.detector import detect

        if len(images) != len(items):
            raise UsageError(f"{len(images)} images but {len(items)} metadata entries")
        out = []
        for image, meta in zip(images, items, strict=True):
            dets = detect(image)
            verdict = judge(meta, dets)
            out.append({
                "correct": bool(verdict.correct),
                "reason": verdict.reason,
                "detections": [
                    {**asdict(d), "box": [float(v) for v in d.box], "score": float(d.score)} for d in dets
                ],
            })
        return out
