"""T2I-CompBench-style categories over the shapes world.

The shapes policy speaks the world's template language, so the prompts it is given are the GenEval-style
prompts of the world's val/test splits; each item also carries the CompBench phrasing of the same request
(``rule_prompt``), which the T2I-CompBench rules (``irisbench.protocols.compbench``) parse:

| category | source tag   | rule          | example rule_prompt               |
|----------|--------------|---------------|-----------------------------------|
| color    | color_attr   | BLIP-VQA      | "a red circle and a blue square"  |
| spatial  | position     | UniDet 2D     | "a circle on the left of a square" |
| numeracy | counting     | numeracy      | "three circles"                   |

Departure from T2I-CompBench: texture, shape (object-shape adjectives), non-spatial actions, complex and 3D
have no meaning in a world of flat coloured shapes, so they are absent; the "mean of 6" is therefore not
reported for the shapes world.

Not an independent suite: its items are GenEval's own color_attr, position and counting entries of the same
split, judged by T2I-CompBench's rules instead of GenEval's. A result that holds on both says the verdict does
not hinge on one set of scoring rules; it is not corroboration on other prompts, and the README reports it as
such.
"""

from __future__ import annotations

from irisbench.core.errors import UsageError
from irisbench.world.vocab import NUMBER_WORDS, article, plural

CATEGORY_OF_TAG = {"color_attr": "color", "position": "spatial", "counting": "numeracy"}
# GenEval relation -> the T2I-CompBench locality phrase the 2D rule recognises
LOCALITY = {"left of": "on the left of", "right of": "on the right of", "above": "on the top of",
            "below": "on the bottom of"}


def rule_prompt(metadata: dict) -> str:
    """The T2I-CompBench phrasing of a shapes-world GenEval metadata entry."""
    tag, inc = metadata["tag"], metadata["include"]
    if tag == "color_attr":
        a, b = inc
        return f"{article(a['color'])} {a['color']} {a['class']} and {article(b['color'])} {b['color']} {b['class']}"
    if tag == "position":
        target, subject = inc  # GenEval puts the target first; the prompt reads "subject <rel> target"
        rel = LOCALITY[subject["position"][0]]
        return f"{article(subject['class'])} {subject['class']} {rel} {article(target['class'])} {target['class']}"
    if tag == "counting":
        return f"{NUMBER_WORDS[inc[0]['count']]} {plural(inc[0]['class'])}"
    raise UsageError(f"tag {tag!r} has no T2I-CompBench category in the shapes world")


def compbench_items(split_items: list[dict]) -> list[dict]:
    """CompBench items (tag = category) from a GenEval split of the shapes world, in split order."""
    out = []
    for md in split_items:
        category = CATEGORY_OF_TAG.get(md["tag"])
        if category is not None:
            out.append({"tag": category, "prompt": md["prompt"], "rule_prompt": rule_prompt(md), "metadata": md})
    return out
