"""Quick GenEval (shapes) score of a shapes-lm checkpoint: per-tag accuracy on a split, printed as JSON.

A thin front to the evaluator (``irisbench.evaluation.evaluate``), used to pick and document the shipped base: the
same per-image seeds, exact detector, GenEval rules and summary (``overall`` = the mean of the per-tag
accuracies) as ``irisbench eval``, written to a temporary run folder (no PNGs) and reduced to one JSON
line of figures. ``--limit`` keeps the first N prompts of the split.

    python benchmarks/eval_shapes_base.py irisbench/assets/shapes-base --split test --n 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any


def quick_geneval(policy: Any, split: str = "test", n: int = 4, seed: int = 0, limit: int | None = None,
                  cfg: float | None = None, temperature: float | None = None,
                  top_k: int | None = None) -> dict[str, Any]:
    """Per-tag and overall accuracy of ``policy`` (a loaded policy) on ``split`` with ``n`` images per entry."""
    from irisbench.core.records import read_records
    from irisbench.evaluation.evaluate import EvalOptions, evaluate

    opts = EvalOptions(policy=getattr(policy, "name", "shapes-lm"), suite="geneval", split=split,
                       images_per_prompt=n, seed=seed, limit=limit, cfg=cfg, temperature=temperature,
                       top_k=top_k, save_images=False, n_resamples=0)
    with tempfile.TemporaryDirectory() as tmp:
        results = evaluate(opts, Path(tmp) / "run", policy=policy, progress=False)
        sc_img = [r["sc_image"] for r in read_records(Path(tmp) / "run" / "records.jsonl")
                  if r.get("sc_image") is not None]
    scores = results["scores"]
    return {"split": split, "images": results["counts"]["actual"], "n": n, "seed": seed,
            "per_tag": {tag: s["score"] for tag, s in scores["tags"].items()},
            "overall": scores["overall"]["score"],
            "mean_sc_image": sum(sc_img) / len(sc_img) if sc_img else None,
            "total_seconds": results["timing"]["seconds"]}


def main() -> None:
    import torch

    from irisbench.policies.shapes_lm import ShapesLMPolicy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    policy = ShapesLMPolicy.load(args.checkpoint)
    result = quick_geneval(policy, args.split, args.n, args.seed, limit=args.limit)
    print(json.dumps({"checkpoint": args.checkpoint, **result}, indent=1))


if __name__ == "__main__":
    main()
