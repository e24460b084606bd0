"""T2I-CompBench perception for the shapes world: exact detections feed the official rules.

- color (BLIP-VQA rule): the VQA model is replaced by an exact oracle that answers "{noun phrase}?" with
  P(yes) = the best detector score (template IoU) among detected objects of that colour and shape, 0 if none;
- spatial (UniDet 2D rule) and numeracy: the exact detector's boxes, scaled from the 32-px canvas to the
  480-px frame the rules' pixel thresholds assume (x15), with label = shape and score = template IoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from irisbench.core.errors import UsageError

RULE_SCALE = 480 / 32  # the CompBench rules' pixel constants (150 px, ...) assume ~480-px images


class ShapesCompBenchScorer:
    name = "shapes-compbench"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "perception": "irisbench.world.detector.detect (exact)",
                "vqa": "exact oracle: P(yes) = best matching detection score",
                "rules": "irisbench.protocols.compbench", "box_scale": RULE_SCALE}

    def score(self, images: Sequence[np.ndarray], items: Sequence[dict]) -> list[dict[str, Any]]:
        from irisbench.protocols import compbench as cb
        from irisbench.world.detector import detect
        from irisbench.world.vocab import COLORS, SHAPES, plural

        objects = [(s, plural(s)) for s in SHAPES]
        out = []
        for image, item in zip(images, items, strict=True):
            dets = detect(image)
            scaled = [(d.label, tuple(v * RULE_SCALE for v in d.box), d.score) for d in dets]
            text, cat = item["rule_prompt"], item["tag"]
            if cat == "color":
                phrases, method = cb.noun_phrases(text, method="rules")
                scores = []
                for ph in phrases:
                    words = ph.split()
                    color = next((w for w in words if w in COLORS), None)
                    shape = next((w for w in words if w in SHAPES), None)
                    p_yes = max((d.score for d in dets if d.label == shape and (color is None or d.color == color)),
                                default=0.0)
                    scores.append(cb.vqa_phrase_score(p_yes, 1.0 - p_yes) if p_yes < 1 else 1.0)
                value = cb.blip_vqa_image_score(scores)
            elif cat == "spatial":
                value = cb.unidet_2d_score(text, scaled, method="rules")
            elif cat == "numeracy":
                value = cb.numeracy_score(cb.numeracy_targets(text, objects=objects, method="rules"), scaled)
            else:
                raise UsageError(f"shapes CompBench has no category {cat!r}")
            out.append({"score": float(value), "reason": "",
                        "detections": [{**asdict(d), "box": [float(v) for v in d.box]} for d in dets]})
        return out
