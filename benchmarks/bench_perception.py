"""Throughput of the real-model perception code paths on tiny random models (CPU), printed as JSON.

Builds the tiny offline models of tests/perception_tiny.py in a temporary folder and times, on random
images: Mask2Former detection + mmdet post-processing (at a small test scale and at mmdet's real
(1333, 800) scale), the CLIP color classifier batched vs one by one on the same objects (the detector's top
detections, prototypes already cached), BLIP-VQA yes/no, OWLv2 detection and CLIP cosine. The models are
tiny, so the numbers measure the harness's own overhead (pre/post-processing, crops, batching), not what the
real checkpoints cost.

    python benchmarks/bench_perception.py --images 16 --size 64 --threads 1 [--out bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else float("inf")


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run(n_images: int, size: int, mmdet_images: int, objects_per_image: int, color_batch: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import open_clip
    import torch
    import transformers
    from perception_tiny import (
        TINY_CLIP_NAME,
        build_tiny_blip_vqa,
        build_tiny_mask2former,
        build_tiny_owlv2,
        register_tiny_open_clip,
    )

    from irisbench.scorers.compbench_real import BlipVQA, ClipCosine, OpenVocabDetector
    from irisbench.scorers.geneval_real import ClipColorClassifier, ColorQuery, Mask2FormerDetector

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n_images)]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        m2f_dir = build_tiny_mask2former(root / "m2f")
        clip_weights = register_tiny_open_clip(root / "clip")
        blip_dir = build_tiny_blip_vqa(root / "blip")
        owl_dir = build_tiny_owlv2(root / "owl")

        small = Mask2FormerDetector(m2f_dir, device="cpu", scale=(96, 64))
        small.detect(images[:2])  # warm-up
        detected, seconds = _timed(small.detect, images)
        results["mask2former_small_scale"] = {"scale": [96, 64], "images": n_images, "seconds": round(seconds, 3),
                                              "images_per_s": _rate(n_images, seconds)}
        full = Mask2FormerDetector(m2f_dir, device="cpu")
        full.detect(images[:1])
        _, seconds = _timed(full.detect, images[:mmdet_images])
        results["mask2former_mmdet_scale"] = {"scale": [1333, 800], "input": list(full._resize(images[0]).shape[:2]),
                                              "images": mmdet_images, "seconds": round(seconds, 3),
                                              "images_per_s": _rate(mmdet_images, seconds)}

        clf = ClipColorClassifier.from_open_clip(TINY_CLIP_NAME, str(clip_weights), device="cpu",
                                                 batch_size=color_batch)
        queries = [ColorQuery(image, mask, det.box, det.label) for image, pairs in zip(images, detected, strict=True)
                   for det, mask in pairs[:objects_per_image]]
        classes = sorted({q.class_name for q in queries})
        _, proto_seconds = _timed(lambda: [clf.prototypes(c) for c in classes])
        clf.classify_batch(queries[:2])
        batched, batch_seconds = _timed(clf.classify_batch, queries)
        single, single_seconds = _timed(lambda: [clf.classify(q.image, q.mask, q.box, q.class_name) for q in queries])
        results["clip_color"] = {
            "objects": len(queries), "classes": len(classes), "batch_size": color_batch,
            "prototype_seconds_all_classes": round(proto_seconds, 3),
            "batched_objects_per_s": _rate(len(queries), batch_seconds),
            "one_by_one_objects_per_s": _rate(len(queries), single_seconds),
            "speedup": round(single_seconds / batch_seconds, 2),
            "agreement": sum(a == b for a, b in zip(batched, single, strict=True)) / len(queries),
        }

        blip = BlipVQA(blip_dir, device="cpu")
        questions = ["a red cube?", "a blue metallic ball and a green cube?"] * n_images
        blip.yes_no_prob(images[:2], questions[:2])
        _, seconds = _timed(blip.yes_no_prob, images, questions[:n_images])
        results["blip_vqa_yes_no"] = {"images": n_images, "images_per_s": _rate(n_images, seconds)}

        owl = OpenVocabDetector(owl_dir, device="cpu")
        owl.detect(images[:2], ["a cat", "a dog"])
        _, seconds = _timed(owl.detect, images, ["a cat", "a dog"])
        results["owlv2_detect"] = {"images": n_images, "queries": 2, "images_per_s": _rate(n_images, seconds)}

        cosine = ClipCosine.from_open_clip(TINY_CLIP_NAME, str(clip_weights), device="cpu")
        cosine.cosine(images[:2], ["a cat"] * 2)
        _, seconds = _timed(cosine.cosine, images, ["a photo of a cat"] * n_images)
        results["clip_cosine"] = {"images": n_images, "images_per_s": _rate(n_images, seconds)}

    return {
        "benchmark": "bench_perception (tiny random models, CPU)",
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                    "load_average_1m": round(os.getloadavg()[0], 2)},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "open_clip": open_clip.__version__},
        "image_size": [size, size], **results,
    }


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--mmdet-images", type=int, default=2, help="images timed at mmdet's (1333, 800) scale")
    ap.add_argument("--objects-per-image", type=int, default=4, help="top detections color-classified per image")
    ap.add_argument("--color-batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads; on a busy shared machine more threads mostly wait on each other")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report = run(args.images, args.size, args.mmdet_images, args.objects_per_image, args.color_batch)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
