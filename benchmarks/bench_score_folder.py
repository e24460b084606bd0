"""Time to score a folder of images (``eval --images``) against generating and scoring them (the baseline).

The oracle policy draws the shapes-world test split (792 prompts x 4 images by default) into a run folder,
which also lays the images out in GenEval's layout; then ``eval --images <run>/geneval`` scores that folder:
reading the layout, validating every metadata file and PNG, decoding, scoring, writing records, links and
results. Both runs must give the same scores (checked). Printed as JSON.

Usage: ``python benchmarks/bench_score_folder.py [--per-tag N] [--images-per-prompt 4] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-tag", type=int, default=None, help="Prompts per tag (default: the whole split).")
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from irisbench.evaluation.evaluate import EvalOptions, evaluate

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        gen = evaluate(EvalOptions(policy="oracle", limit_per_tag=args.per_tag,
                                   images_per_prompt=args.images_per_prompt), Path(tmp) / "gen", progress=False)
        generate_s = time.perf_counter() - start
        start = time.perf_counter()
        ext = evaluate(EvalOptions(images=str(Path(tmp) / "gen" / "geneval"), limit_per_tag=args.per_tag,
                                   images_per_prompt=args.images_per_prompt), Path(tmp) / "ext", progress=False)
        folder_s = time.perf_counter() - start
    if ext["scores"] != gen["scores"]:
        raise SystemExit("scores from the folder differ from the generated run's")
    n = gen["counts"]["actual"]
    print(json.dumps({"prompts": gen["prompts"]["n_prompts"], "images": n, "threads": args.threads,
                      "generate_and_score_s": round(generate_s, 2), "score_folder_s": round(folder_s, 2),
                      "folder_images_per_s": round(n / folder_s, 1), "overall": gen["scores"]["overall"]["score"],
                      "same_scores": True}, indent=2))


if __name__ == "__main__":
    main()
