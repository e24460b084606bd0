"""Synthetic eval run folders for the report tests (results.json + records.jsonl + 32x32 PNGs)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from irisbench.core.records import RecordWriter, atomic_write_json
from irisbench.core.runs import RunDir
from irisbench.core.stats import count_check, geneval_summary, score_summary

ImageFn = Callable[[int, int], np.ndarray]  # (prompt_index, sample_index) -> HxWx3 uint8


def solid(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (32, 32, 3)).copy()


def checker(a: tuple[int, int, int], b: tuple[int, int, int]) -> np.ndarray:
    """32x32 one-pixel checkerboard of two colours (blurs to their mix unless drawn pixelated)."""
    yy, xx = np.mgrid[0:32, 0:32]
    return np.where(((yy + xx) % 2 == 0)[..., None], np.array(a, np.uint8), np.array(b, np.uint8)).astype(np.uint8)


def make_run(path: Path, correct: Mapping[tuple[int, int], bool], tags: Mapping[int, str], *,
             policy: str = "synthetic", sha256: str = "a" * 64, expected: int | None = None,
             image: ImageFn | None = None, sc: Callable[[int, int], float | None] | None = None,
             prompts: Sequence[str] | None = None, n_resamples: int = 200, split: str = "test",
             suite: str = "geneval", scores: Mapping[tuple[int, int], float] | None = None) -> Path:
    """Write an eval run at ``path``: one record per (prompt_index, sample_index) key of ``correct``.

    With ``scores`` the run is a continuous-score (CompBench-style) run: records carry ``score`` and the
    summary is the mean score (``irisbench.core.stats.score_summary``)."""
    run = RunDir.create(path, kind="eval", config={"command": "eval", "policy": {"name": policy}}, env={})
    records = []
    for (p, s), ok in sorted(correct.items()):
        rel = None
        if image is not None:
            from PIL import Image

            rel = f"images/{p:05d}/{s:02d}.png"
            (run.path / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image(p, s)).save(run.path / rel)
        value = sc(p, s) if sc else None
        records.append({"prompt_index": p, "sample_index": s, "tag": tags[p],
                        "prompt": prompts[p] if prompts else f"prompt number {p} <{tags[p]}>",
                        "correct": bool(ok), "image": rel, "plan": "", "sc_text": value,
                        "sc_image": None if value is None else value + 1.0, "sc_all": value,
                        **({"score": scores[(p, s)]} if scores is not None else {})})
    with RecordWriter(run.path / "records.jsonl", key_fields=("prompt_index", "sample_index")) as w:
        w.append(records)
    n_prompts = len({p for p, _ in correct})
    results = {
        "suite": suite, "protocol": "geneval" if scores is None else "compbench", "world": "shapes", "split": split,
        "policy": {"name": policy},
        "prompts": {"n_prompts": n_prompts, "sha256": sha256},
        "counts": count_check(len(records) if expected is None else expected, len(records)),
        "scores": (geneval_summary(records, n_resamples=n_resamples, seed=0) if scores is None
                   else score_summary(records, n_resamples=n_resamples, seed=0)),
    }
    atomic_write_json(run.path / "results.json", results)
    return run.path
