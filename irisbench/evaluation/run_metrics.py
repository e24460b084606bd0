"""Image metrics (CLIP score, FID, KID) on an eval run folder that already holds its images.

``irisbench metrics RUN --metrics clip,fid,kid`` reads the run's saved PNGs and records, computes the metrics
with ``SuiteMetrics`` (the same code ``eval --metrics`` uses, so the numbers are identical) and writes them
into the run (through ``irisbench.evaluation.eval_run.EvalRun``): per-image ``clip_score`` into the records, and
the ``metrics`` block of the results. Nothing is generated again.

``eval`` uses the same pieces: a metrics failure after generation keeps the images and records, writes
``results.json`` with the protocol scores and ``metrics_error``, and says which command computes the metrics;
``eval --allow-config-change`` accepts config changes that leave the images alone (``check_config_change``)
and refuses the others.

The rule that a resumed eval may change only its ``metrics`` block is ``irisbench.evaluation.eval_run``'s
(``check_config_change``, re-exported here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from irisbench.core.errors import IrisbenchError
from irisbench.core.runs import _now_iso
from irisbench.evaluation.eval_run import (  # noqa: F401  (re-exported: their old import path)
    IMAGE_NEUTRAL_KEYS,
    EvalRun,
    changed_config_keys,
    check_config_change,
)


class MetricsError(IrisbenchError, ValueError):
    """Metrics that could not be computed on a run (the images and records are kept)."""


def rewrite_records(root: Path, records: list[dict], complete: bool) -> None:
    """Replace the run's records atomically with ``records`` (same order), and its Parquet copy when complete."""
    EvalRun(root).rewrite_records(records, complete)


def add_clip_scores(metrics: Any, run: EvalRun, records: list[dict]) -> None:
    """Per-image CLIP score of every record, from its saved PNG, written into the record dicts."""
    from irisbench.metrics.suite_metrics import read_png

    missing = [r for r in records if not r.get("image") or not run.image_path(r["image"]).is_file()]
    if missing:
        r = missing[0]
        raise MetricsError(f"the CLIP score needs every image on disk: {len(missing)} of {len(records)} are missing "
                           f"(first: prompt {r['prompt_index']} sample {r['sample_index']}, "
                           f"{r.get('image') or 'not saved'})")
    batch = 64
    for start in range(0, len(records), batch):
        chunk = records[start:start + batch]
        values = metrics.per_image([read_png(run.image_path(r["image"])) for r in chunk], [r["prompt"] for r in chunk])
        for r, v in zip(chunk, values, strict=True):
            r.update(v)


def attach_metrics(results: dict, metrics: Any, run: EvalRun | Path, records: list[dict], items: Any, seed: int, *,
                   recompute_clip: bool = False, command: str = "irisbench metrics RUN --metrics ...") -> dict:
    """Compute the metrics of a complete run into ``results["metrics"]`` (records gain missing CLIP scores).

    ``recompute_clip`` recomputes every per-image CLIP score from the PNGs (the CLIP options may have changed);
    otherwise only records without one are scored. On failure ``results`` gets ``metrics_error``, is written
    to the run's results, and ``MetricsError`` says the images are kept and how to compute the metrics later.
    """
    run = run if isinstance(run, EvalRun) else EvalRun(run)
    try:
        keys = metrics.per_image_keys()
        if keys:
            todo = records if recompute_clip else [r for r in records if any(k not in r for k in keys)]
            if todo:
                add_clip_scores(metrics, run, todo)
                run.rewrite_records(records, complete=True)
        results["metrics"] = metrics.finalize(run.path, records, items, seed)
        results.pop("metrics_error", None)
    except (ValueError, RuntimeError, OSError) as e:
        results.pop("metrics", None)
        results["metrics_error"] = f"{type(e).__name__}: {e}"
        run.write_results(results)
        raise MetricsError(f"metrics failed: {e}. The {len(records)} images, their records and the protocol scores "
                           f"are kept in {run.path}; compute the metrics with `{command}`") from None
    return results


def compute_run_metrics(run_path: str | Path, opts: Any, *, n_resamples: int = 2000) -> dict:
    """(Re)compute ``opts.names`` on a finished eval run from its saved images; returns the updated results.

    The run must be complete (results written by eval, every image recorded). CLIP scores are
    recomputed for every image. The run is locked while this runs.
    """
    from irisbench.metrics.suite_metrics import SuiteMetrics

    if not opts.names:
        raise MetricsError("no metrics asked for: pass --metrics with any of clip,fid,kid,pickscore,hpsv2")
    run = EvalRun.open(run_path)
    if run.kind != "eval":
        raise MetricsError(f"{run.path} is a {run.kind!r} run; metrics are computed on eval runs")
    if not run.has_results():
        raise MetricsError(f"{run.results_path} is missing: finish the run first by re-running its eval command with "
                           f"--out {run.path} (it resumes; images already made are not generated again)")
    with run.lock():
        results = dict(run.read_results(MetricsError))
        config = run.config
        if "world" not in config or config.get("suite") == "wise":
            raise MetricsError(f"{run.path} is a {config.get('suite', 'non-GenEval/CompBench')!r} run; CLIP score, "
                               "FID and KID are computed on GenEval and T2I-CompBench runs")
        if not results.get("counts", {}).get("complete"):
            c = results.get("counts", {})
            raise MetricsError(f"{run.path} is incomplete ({c.get('actual')} of {c.get('expected')} images): finish "
                               "it with its eval command first")
        if not config.get("save_images", True):
            raise MetricsError(f"{run.path} was made with --no-save-images: there are no images to compute "
                               "metrics on")
        records = run.read_records(sort=True)
        items = {r["prompt_index"]: json.loads(r["metadata"]) for r in records}
        metrics = SuiteMetrics(opts, config["world"])
        attach_metrics(results, metrics, run, records, items, int(config["seed"]), recompute_clip=True,
                       command=f"irisbench metrics {run.path} --metrics {','.join(opts.names)}")
        results["metrics"]["computed"] = {"by": "irisbench metrics", "time": _now_iso(),
                                          "device": getattr(opts, "device", "cpu")}
        run.write_results(results)
    return results
