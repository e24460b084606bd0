"""WISE's judge as a scorer (``irisbench.scorers.contract.Scorer``): each image is sent to a judge model.

The judge is any callable ``judge(png_bytes, prompt) -> answer text``: an OpenAI-compatible server
(``irisbench.protocols.wise.OpenAIJudge``) or the tests' stub (``irisbench.evaluation.wise_eval.StubJudge``).
The asking, retrying and parsing are ``irisbench.protocols.wise.score_wise``'s; this class gives them the
scorer contract, so the evaluation runner calls a judge as it calls a detector. Each image's fields are the
judge's numbers, ``ok``/``error``/``cause`` when all attempts failed (a failure, never a 0), and ``score``:
the WiScore (legacy protocol) or the binary score (WISE_Verified), the value the suite aggregates.

Images are PNG file paths (sent as they are, byte for byte) or HxWx3 uint8 arrays (encoded as PNG).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.core.retry import Backoff
from irisbench.protocols.wise import score_wise
from irisbench.scorers.contract import ImageInput


def png_bytes(image: ImageInput | bytes) -> bytes | Path:
    """What the judge is sent for one image: a file's path (read unchanged) or the PNG encoding of pixels."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        return Path(image)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class WiseJudgeScorer:
    """Scores WISE prompts' images with a judge; ``describe()`` is the judge's description (never its key)."""

    name = "wise-judge"
    reads_files = True  # the evaluation loop gives it each image's file: the judge is sent the bytes on disk

    def __init__(self, judge: Any, protocol: str, retries: int, *, workers: int = 1, backoff: Backoff | None = None,
                 description: dict[str, Any] | None = None) -> None:
        self.judge, self.protocol, self.retries = judge, protocol, retries
        self.workers, self.backoff = workers, backoff
        self.description = description or {"kind": getattr(judge, "name", type(judge).__name__)}

    def describe(self) -> dict[str, Any]:
        return self.description

    def score(self, images: Sequence[ImageInput], items: Sequence[dict]) -> list[dict[str, Any]]:
        if len(images) != len(items):
            raise ValueError(f"{len(images)} images but {len(items)} WISE prompts")
        given = {item["prompt_id"]: png_bytes(image) for image, item in zip(images, items, strict=True)}
        judged = {r["prompt_id"]: r for r in score_wise(given, list(items), self.judge, self.protocol, self.retries,
                                                       max_workers=self.workers, backoff=self.backoff)}
        value = "wiscore" if self.protocol == "legacy" else "score"
        return [{**judged[item["prompt_id"]], "score": judged[item["prompt_id"]].get(value)} for item in items]
