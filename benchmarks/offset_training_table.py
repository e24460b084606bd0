"""Tidy tables of IRIS runs trained under different self-certainty offset orders (docs/self-certainty.md).

Reads training run folders (``irisbench train --out RUN``: ``train/metrics.jsonl`` and the in-training val
evaluations ``eval/val/step-N/results.json``) and test evaluations (``irisbench eval --out EVAL``:
``results.json``), and writes

- ``training_scores.csv``: one row per (arm, step, split): GenEval overall (mean of tag means) with its 95%
  interval (the evaluator's stratified cluster bootstrap over prompts), images per prompt, images;
- ``training_metrics.csv``: one row per (arm, step): reward, raw plan / image self-certainty, plan length,
  training accuracy.

    PYTHONPATH=. python benchmarks/offset_training_table.py --out results/offsets \\
        --run janus=RUNS/train-janus --run world=RUNS/train-world \\
        --test janus:20=RUNS/eval-janus-step20 --test janus:40=RUNS/eval-janus-step40 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from irisbench.core.records import atomic_write_text

METRICS = ("reward_mean", "sc_text", "sc_image", "plan_len", "train_correct")


def score_row(arm: str, step: int, split: str, results: Path) -> dict[str, Any]:
    d = json.loads(results.read_text())
    overall = d["scores"]["overall"]
    return {"arm": arm, "step": step, "split": split, "score": overall["score"], "ci_low": overall["ci_low"],
            "ci_high": overall["ci_high"], "images_per_prompt": d["images_per_prompt"],
            "n_images": overall["n_images"], "n_prompts": overall["n_prompts"], "eval_seed": d["seed"],
            "source": str(results)}


def run_tables(arm: str, run: Path) -> tuple[list[dict], list[dict], dict[str, Any]]:
    config = yaml.safe_load((run / "config.yaml").read_text())
    scores = [score_row(arm, int(p.parent.name.removeprefix("step-")), "val", p)
              for p in sorted((run / "eval" / "val").glob("step-*/results.json"))]
    metrics = []
    for line in (run / "train" / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        metrics.append({"arm": arm, "step": m["step"], **{k: m.get(k) for k in METRICS}})
    return scores, metrics, config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", default=[], help="ARM=RUN_FOLDER (repeatable)")
    ap.add_argument("--test", action="append", default=[], help="ARM:STEP=EVAL_FOLDER (repeatable)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    scores: list[dict] = []
    metrics: list[dict] = []
    arms: dict[str, dict[str, Any]] = {}
    for spec in args.run:
        arm, _, folder = spec.partition("=")
        if not folder or not (Path(folder) / "train" / "metrics.jsonl").is_file():
            print(f"offset_training_table: --run {spec!r}: give ARM=RUN_FOLDER of a training run", file=sys.stderr)
            return 2
        s, m, config = run_tables(arm, Path(folder))
        arms[arm] = {"reward_options": json.dumps(config.get("reward_options") or {}),
                     "training_seed": config["seed"], "lr": config["lr"]}
        for row in s + m:
            row.update(arms[arm])
        scores += s
        metrics += m
    for spec in args.test:
        key, _, folder = spec.partition("=")
        arm, _, step = key.partition(":")
        if not folder or not step.isdigit() or not (Path(folder) / "results.json").is_file():
            print(f"offset_training_table: --test {spec!r}: give ARM:STEP=EVAL_FOLDER of a finished evaluation",
                  file=sys.stderr)
            return 2
        scores.append({**score_row(arm, int(step), "test", Path(folder) / "results.json"), **arms.get(arm, {})})
    args.out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(scores).sort_values(["arm", "split", "step"])
    atomic_write_text(args.out / "training_scores.csv", table.drop(columns="source").to_csv(index=False,
                                                                                             float_format="%.6g"))
    atomic_write_text(args.out / "training_metrics.csv", pd.DataFrame(metrics).to_csv(index=False,
                                                                                      float_format="%.6g"))
    print(table[["arm", "step", "split", "score", "ci_low", "ci_high", "n_images"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
