"""Synthetic per-image records and run folders for the analysis tests (known relations, hand-set scores)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

TAGS = ("single_object", "counting", "position")


def synthetic_records(n_prompts: int = 90, n_samples: int = 4, slope: float = -2.0, seed: int = 0) -> pd.DataFrame:
    """Records whose ``correct`` depends on ``sc_image`` through ``slope`` (0 = independent).

    Each prompt has its own mean certainty; P(correct) = sigmoid(slope * standardised sc_image).
    ``sc_text`` is pure noise; ``score`` is a continuous quality that also follows ``slope``.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        base = rng.normal(20.0, 0.6)
        for s in range(n_samples):
            sc = base + rng.normal(0.0, 0.5)
            z = (sc - 20.0) / 0.8
            correct = bool(rng.random() < 1.0 / (1.0 + np.exp(-slope * z)))
            score = float(np.clip(0.5 + 0.15 * slope * z / 2 + rng.normal(0, 0.1), 0, 1))
            rows.append({"prompt_index": p, "sample_index": s, "seed": 1000 * p + s, "tag": TAGS[p % len(TAGS)],
                         "prompt": f"prompt {p}", "metadata": json.dumps({"tag": TAGS[p % len(TAGS)]}),
                         "correct": correct, "reason": "", "detections": "[]", "image": None, "plan": "",
                         "plan_len": 0, "sc_text": float(rng.normal(11.0, 0.3)), "sc_image": float(sc),
                         "sc_all": float(sc - 1.0), "entropy_text": float(rng.normal(2.0, 0.2)),
                         "entropy_image": float(30.0 - sc), "entropy_all": float(29.0 - sc), "score": score})
    return pd.DataFrame(rows)


def write_eval_run(path: Path, df: pd.DataFrame, *, world: str = "shapes", n_resamples: int = 0) -> Path:
    """An eval run folder as ``irisbench.evaluation.evaluate`` leaves it (records.jsonl, results.json, config,
    marker)."""
    from irisbench.core.stats import geneval_summary

    path.mkdir(parents=True, exist_ok=True)
    (path / "run.json").write_text(json.dumps({"irisbench_run": 1, "kind": "eval", "created": "now"}))
    (path / "config.yaml").write_text(f"command: eval\nworld: {world}\n")
    recs = df.to_dict("records")
    clean = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in recs]
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in clean))
    scores = geneval_summary(clean, n_resamples=n_resamples)
    (path / "results.json").write_text(json.dumps({"scores": scores, "counts": {"complete": True}}))
    return path


def write_results(path: Path, overall: float, tags: dict[str, float] | None = None) -> None:
    """A minimal results.json with hand-set scores (intervals +-0.05)."""
    path.mkdir(parents=True, exist_ok=True)
    def entry(s: float) -> dict:
        return {"score": s, "ci_low": s - 0.05, "ci_high": s + 0.05, "n_images": 40, "n_prompts": 10}
    scores = {"overall": entry(overall), "tags": {t: entry(v) for t, v in (tags or {}).items()}}
    (path / "results.json").write_text(json.dumps({"scores": scores, "counts": {"complete": True}}))


def write_train_run(path: Path, val: dict[int, float], test: dict[int, float], n_steps: int = 6) -> Path:
    """A training run folder: train/metrics.jsonl for steps 1..n_steps and eval/{val,test}/step-N results."""
    (path / "train").mkdir(parents=True, exist_ok=True)
    (path / "run.json").write_text(json.dumps({"irisbench_run": 1, "kind": "train", "created": "now"}))
    lines = [json.dumps({"step": s, "reward_mean": -20.0 + 0.1 * s, "reward_std": 0.5, "sc_text": 11.0 - 0.01 * s,
                         "sc_image": 20.2 - 0.2 * s, "entropy_image": 3.0 + 0.1 * s, "kl": 0.001 * s,
                         "loss": 0.0, "lr": 1e-6, "train_correct": 0.3 + 0.02 * s, "plan_len": 12.0})
             for s in range(1, n_steps + 1)]
    (path / "train" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    for split, scores in (("val", val), ("test", test)):
        for step, s in scores.items():
            write_results(path / "eval" / split / f"step-{step}", s, {"counting": s / 2, "position": s})
    return path
