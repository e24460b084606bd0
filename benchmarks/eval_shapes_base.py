"""Quick GenEval (shapes) score of a shapes-lm checkpoint: per-tag accuracy on a split, printed as JSON.

A stand-in for the real evaluator (``irisbench.evaluate``) used to pick and document the shipped base:
each split entry gets ``--n`` images, seeded from (seed, entry index, sample index) via ``row_seeds``,
judged with the world's exact detector and GenEval's rules. ``overall`` is the mean of the per-tag
accuracies (GenEval's convention).

    python benchmarks/eval_shapes_base.py irisbench/assets/shapes-base --split test --n 4
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def quick_geneval(policy: Any, split: str = "test", n: int = 4, seed: int = 0, split_seed: int = 0,
                  limit_per_tag: int | None = None, **sample_kwargs: Any) -> dict[str, Any]:
    """Per-tag and overall accuracy of ``policy`` on ``split`` with ``n`` images per entry."""
    from irisbench.protocols.geneval import judge
    from irisbench.world.detector import detect
    from irisbench.world.prompts import build_splits
    from irisbench.world.vocab import TAGS

    entries = build_splits(split_seed)[split]
    if limit_per_tag is not None:
        entries = [md for tag in TAGS for md in [m for m in entries if m["tag"] == tag][:limit_per_tag]]
    t0 = time.perf_counter()
    rollout = policy.sample([md["prompt"] for md in entries], n=n, seed=seed, **sample_kwargs)
    t_sample = time.perf_counter() - t0
    correct: dict[str, list[bool]] = {tag: [] for tag in TAGS}
    for row, image in enumerate(rollout.images):
        md = entries[row // n]
        correct[md["tag"]].append(bool(judge(md, detect(image)).correct))
    per_tag = {tag: sum(v) / len(v) for tag, v in correct.items() if v}
    summary = rollout.token_summary
    sc_img = [summary(r)["sc_image"] for r in range(len(rollout))]
    return {"split": split, "images": len(rollout), "n": n, "seed": seed, "settings": rollout.settings,
            "per_tag": per_tag, "overall": sum(per_tag.values()) / len(per_tag),
            "mean_sc_image": sum(sc_img) / len(sc_img), "sample_seconds": round(t_sample, 2),
            "total_seconds": round(time.perf_counter() - t0, 2)}


def main() -> None:
    import torch

    from irisbench.policies.shapes_lm import ShapesLMPolicy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit-per-tag", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    policy = ShapesLMPolicy.load(args.checkpoint)
    result = quick_geneval(policy, args.split, args.n, args.seed, limit_per_tag=args.limit_per_tag)
    print(json.dumps({"checkpoint": args.checkpoint, **result}, indent=1))


if __name__ == "__main__":
    main()
