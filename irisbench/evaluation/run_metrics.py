"""Image metrics (CLIP score, FID, KID) on an eval run folder that already holds its images.

``irisbench metrics RUN --metrics clip,fid,kid`` reads the run's saved PNGs and records, computes the metrics
with ``SuiteMetrics`` (the same code ``eval --metrics`` uses, so the numbers are identical) and writes them
into the run: per-image ``clip_score`` into ``records.jsonl``/``records.parquet``, and the ``metrics`` block
of ``results.json``. Nothing is generated again.

``eval`` uses the same pieces: a metrics failure after generation keeps the images and records, writes
``results.json`` with the protocol scores and ``metrics_error``, and says which command computes the metrics;
``eval --allow-config-change`` accepts config changes that leave the images alone (``check_config_change``)
and refuses the others.

Departure from a plain resume: ``allow_config_change`` in ``RunDir.open_or_create`` accepts any change (the
trainer needs that); for eval runs only the ``metrics`` block may change, since anything else (policy,
seed, sampling, images per prompt, prompts, scorer and its options) would make the run's records a mix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from irisbench.core.errors import IrisbenchError, read_json

IMAGE_NEUTRAL_KEYS = ("metrics",)  # top-level config keys an eval run may change on resume


class MetricsError(IrisbenchError, ValueError):
    """Metrics that could not be computed on a run (the images and records are kept)."""


def changed_config_keys(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys that differ between the saved config and ``new`` (compared as they read back from YAML)."""
    from irisbench.core.runs import _flatten, _normalise_config

    a, b = _flatten(dict(saved)), _flatten(_normalise_config(new))
    missing = object()
    return sorted(k for k in set(a) | set(b) if a.get(k, missing) != b.get(k, missing))


def check_config_change(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The changed keys, if every change leaves the generated images and their scores alone; else an error.

    Allowed: the ``metrics`` block (names, CLIP model and scale, FID reference). Refused: everything else,
    with the reason.
    """
    from irisbench.evaluation.eval_plan import EvalError

    changed = changed_config_keys(saved, new)
    refused = [k for k in changed if k.split(".")[0] not in IMAGE_NEUTRAL_KEYS]
    if refused:
        scorer = [k for k in refused if k.split(".")[0] in ("scorer", "scorer_options")]
        why = ("they change the images or how they were made" if len(scorer) < len(refused)
               else "they change the per-image scores already recorded")
        hint = ("; to score the same images with other scorer options, score the run's images into a new folder"
                if scorer else "")
        raise EvalError(f"--allow-config-change only accepts changes to {', '.join(IMAGE_NEUTRAL_KEYS)}; refused: "
                        f"{', '.join(refused)} ({why}). Use a new run folder{hint}")
    return changed


def rewrite_records(root: Path, records: list[dict], complete: bool) -> None:
    """Replace ``records.jsonl`` atomically with ``records`` (same order), and its Parquet copy when complete."""
    from irisbench.core.records import atomic_write_text, to_jsonable, write_parquet

    lines = [json.dumps(to_jsonable(r, f"record {i}"), allow_nan=False, ensure_ascii=False) + "\n"
             for i, r in enumerate(records)]
    atomic_write_text(root / "records.jsonl", "".join(lines))
    if complete:
        write_parquet(root / "records.jsonl", root / "records.parquet")


def add_clip_scores(metrics: Any, root: Path, records: list[dict]) -> None:
    """Per-image CLIP score of every record, from its saved PNG, written into the record dicts."""
    from irisbench.metrics.suite_metrics import read_png

    missing = [r for r in records if not r.get("image") or not (root / r["image"]).is_file()]
    if missing:
        r = missing[0]
        raise MetricsError(f"the CLIP score needs every image on disk: {len(missing)} of {len(records)} are missing "
                           f"(first: prompt {r['prompt_index']} sample {r['sample_index']}, "
                           f"{r.get('image') or 'not saved'})")
    batch = 64
    for start in range(0, len(records), batch):
        chunk = records[start:start + batch]
        values = metrics.per_image([read_png(root / r["image"]) for r in chunk], [r["prompt"] for r in chunk])
        for r, v in zip(chunk, values, strict=True):
            r.update(v)


def attach_metrics(results: dict, metrics: Any, root: Path, records: list[dict], items: Any, seed: int, *,
                   recompute_clip: bool = False, command: str = "irisbench metrics RUN --metrics ...") -> dict:
    """Compute the metrics of a complete run into ``results["metrics"]`` (records gain missing CLIP scores).

    ``recompute_clip`` recomputes every per-image CLIP score from the PNGs (the CLIP options may have changed);
    otherwise only records without one are scored. On failure ``results`` gets ``metrics_error``, is written
    to ``results.json``, and ``MetricsError`` says the images are kept and how to compute the metrics later.
    """
    from irisbench.core.records import atomic_write_json

    try:
        keys = metrics.per_image_keys()
        if keys:
            todo = records if recompute_clip else [r for r in records if any(k not in r for k in keys)]
            if todo:
                add_clip_scores(metrics, root, todo)
                rewrite_records(root, records, complete=True)
        results["metrics"] = metrics.finalize(root, records, items, seed)
        results.pop("metrics_error", None)
    except (ValueError, RuntimeError, OSError) as e:
        results.pop("metrics", None)
        results["metrics_error"] = f"{type(e).__name__}: {e}"
        atomic_write_json(root / "results.json", results)
        raise MetricsError(f"metrics failed: {e}. The {len(records)} images, their records and the protocol scores "
                           f"are kept in {root}; compute the metrics with `{command}`") from None
    return results


def compute_run_metrics(run_path: str | Path, opts: Any, *, n_resamples: int = 2000) -> dict:
    """(Re)compute ``opts.names`` on a finished eval run from its saved images; returns the updated results.

    The run must be complete (``results.json`` written by eval, every image recorded). CLIP scores are
    recomputed for every image. The run is locked while this runs.
    """
    from irisbench.core.records import atomic_write_json, read_records
    from irisbench.core.runs import RunDir, _now_iso
    from irisbench.metrics.suite_metrics import SuiteMetrics

    if not opts.names:
        raise MetricsError("no metrics asked for: pass --metrics with any of clip,fid,kid,pickscore,hpsv2")
    run = RunDir.open(run_path)
    if run.kind != "eval":
        raise MetricsError(f"{run.path} is a {run.kind!r} run; metrics are computed on eval runs")
    results_path = run.path / "results.json"
    if not results_path.is_file():
        raise MetricsError(f"{results_path} is missing: finish the run first by re-running its eval command with "
                           f"--out {run.path} (it resumes; images already made are not generated again)")
    with run.lock():
        results = read_json(results_path, MetricsError, "results file")
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
        records = read_records(run.path / "records.jsonl")
        records.sort(key=lambda r: (r["prompt_index"], r["sample_index"]))
        items = {r["prompt_index"]: json.loads(r["metadata"]) for r in records}
        metrics = SuiteMetrics(opts, config["world"])
        attach_metrics(results, metrics, run.path, records, items, int(config["seed"]), recompute_clip=True,
                       command=f"irisbench metrics {run.path} --metrics {','.join(opts.names)}")
        results["metrics"]["computed"] = {"by": "irisbench metrics", "time": _now_iso(),
                                          "device": getattr(opts, "device", "cpu")}
        atomic_write_json(results_path, results)
    return results
