"""Generate -> score -> per-image records -> aggregates, resumable at image granularity.

One record per generated image is written (and fsynced) as soon as it is scored, so a crash loses at
most the batch in flight; re-running the same command skips every (prompt, sample) pair already
recorded. Each image's seed derives from (base seed, suite/world/split, prompt index, sample index),
never from its batch, so an interrupted-and-resumed run gives the same records as an uninterrupted one,
whatever the batch size.

Run folder::

    <out>/run.json, config.yaml, env.json   identity and provenance
    <out>/records.jsonl                      one JSON line per image, appended as produced
    <out>/records.parquet                    the same, written once complete
    <out>/images/<prompt:05d>/<sample:02d>.png
    <out>/results.json                       per-tag scores, overall, bootstrap CIs, expected vs actual counts
    <out>/geneval/<00000>/metadata.jsonl, samples/<00000>.png     the images in the suite's official layout
    <out>/compbench/<category>/samples/{prompt}_{NNNNNN}.png        (hard links; irisbench.evaluation.layouts)
    <out>/results.jsonl                      GenEval suites: the official evaluator's per-image output format
    <out>/compbench/<category>/annotation_*/vqa_result.json   T2I-CompBench suites: the official score files

What is scored (options, prompts, the image source) is planned by ``irisbench.evaluation.eval_plan``. Images made
elsewhere (``EvalOptions.images``: a GenEval or T2I-CompBench folder, or another run) go through the same
records and summaries; the policy is recorded as "external" and their seeds as null.
``limit_per_tag`` (the CLI's ``--limit``) keeps the first N prompts of every tag; each image's seed still
derives from the prompt's index in the full prompt set, so a limited run draws the images the full run does.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.evaluation.eval_plan import EvalError, EvalOptions, external_plan, generated_plan, scorer_entry


def save_png(image: np.ndarray, path: Path) -> None:
    """Write a PNG atomically (tmp file + rename), so a crash never leaves a truncated image."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, path)


def image_relpath(prompt_index: int, sample_index: int) -> str:
    return f"images/{prompt_index:05d}/{sample_index:02d}.png"


def evaluate(opts: EvalOptions, out: str | Path, *, policy: Any = None, progress: bool = True,
             on_start: Callable[[dict[str, Any]], None] | None = None) -> dict:
    """Run (or resume) one evaluation into ``out``; returns the results dict written to results.json.

    With ``opts.images`` the images are read from that folder (``irisbench.evaluation.layouts``) instead of generated;
    the rest (records, summaries, official layouts) is the same. ``on_start(config)`` is called once the plan
    is made (world, scorer, images per prompt known), before the run folder is written or the scorer loaded."""
    from irisbench.core.devices import device_record, resolve_device
    from irisbench.core.provenance import env_info
    from irisbench.core.records import RecordWriter, atomic_write_json, read_records, write_parquet
    from irisbench.core.runs import RunDir
    from irisbench.core.stats import count_check

    device = resolve_device(opts.device)  # before anything is loaded or written: one line if unusable
    if opts.batch_size < 1:
        raise EvalError(f"--batch-size must be >= 1, got {opts.batch_size}")
    if opts.images is not None:
        if policy is not None:
            raise EvalError("images from a folder are scored without a policy")
        plan = external_plan(opts)
    else:
        plan = generated_plan(opts, policy, device)
    suite, world, items, prompt_prov, n = plan.suite, plan.world, plan.items, plan.prompt_prov, plan.n
    entry = scorer_entry(suite, world)
    split = prompt_prov["split"]
    metrics = None
    if opts.metrics is not None and opts.metrics.names:
        from irisbench.metrics.suite_metrics import SuiteMetrics

        if ("fid" in opts.metrics.names or "kid" in opts.metrics.names) and not opts.save_images:
            raise EvalError("FID/KID read the generated images back: drop --no-save-images")
        metrics = SuiteMetrics(opts.metrics, world, render_world=plan.policy_info.get("render_world") or "shapes")

    config = {
        "command": "eval",
        "policy": plan.policy_info,
        "suite": suite.name,
        "world": world,
        "split": split,
        "prompts": prompt_prov,
        "images_per_prompt": n,
        "seed": opts.seed,
        **plan.config_extra,
        "scorer": entry.name,
        **({"scorer_options": opts.scorer_options} if opts.scorer_options else {}),
        "save_images": opts.save_images,
        **({"metrics": {"names": list(opts.metrics.names), "clip_model": opts.metrics.clip_model,
                        "clip_pretrained": opts.metrics.clip_pretrained, "clip_scale": opts.metrics.clip_scale,
                        "fid_reference": opts.metrics.fid_reference,
                        **({"preference": opts.metrics.preference} if opts.metrics.preference else {})}}
        if metrics is not None else {}),
    }
    if on_start is not None:
        on_start(config)
    from irisbench.core.distributed import Dist

    ranks = Dist.from_env(device)
    rank, world_size = ranks.rank, ranks.world_size
    changed: list[str] = []
    if rank == 0:
        from irisbench.core.runs import RUN_MARKER

        if opts.allow_config_change and (Path(out) / RUN_MARKER).is_file():
            from irisbench.evaluation.run_metrics import check_config_change

            changed = check_config_change(RunDir.open(out).config, config)
        run = RunDir.open_or_create(out, kind="eval", config=config, env={**env_info(), **device_record(device)},
                                    allow_config_change=opts.allow_config_change)
    ranks.barrier()
    if rank != 0:
        run = RunDir.open(out)
    scorer = _make_scorer(entry, opts.scorer_options or {})
    started = time.perf_counter()
    lock = run.lock() if rank == 0 else contextlib.nullcontext()
    available = getattr(plan.source, "present", None)
    with lock:
        if rank == 0:
            merge_shards(run.path)  # shards a crashed multi-process run left behind
        ranks.barrier()
        done = {(r["prompt_index"], r["sample_index"]) for r in read_records(run.path / "records.jsonl")} \
            if (run.path / "records.jsonl").exists() else set()
        path = run.path / ("records.jsonl" if world_size == 1 else f"records.rank-{rank}.jsonl")
        with RecordWriter(path, key_fields=("prompt_index", "sample_index")) as writer:
            # prompts are sharded by rank (prompt_index mod world size); each rank writes its own file
            mine = [(i, j) for i in range(rank, len(items), world_size) for j in range(n)
                    if available is None or (i, j) in available]
            pending = [key for key in mine if key not in done and not writer.done(key)]
            _generate(plan.source, scorer, items, pending, writer, run.path, opts,
                      progress and rank == 0, len(mine) - len(pending), metrics)
        ranks.barrier()
        if rank != 0:
            ranks.barrier()
            return json.loads((run.path / "results.json").read_text(encoding="utf-8"))
        merge_shards(run.path)
        records = read_records(run.path / "records.jsonl")
        expected = len(items) * n
        counts = count_check(expected, len(records))
        if counts["complete"]:
            write_parquet(run.path / "records.jsonl", run.path / "records.parquet")
        official = _write_official(run.path, suite.protocol, items, records, n, opts.save_images)
        elapsed = time.perf_counter() - started
        generated = len(records) - len(done)  # images made (or, from a folder, read and scored) by this call
        external = opts.images is not None
        results = {
            "suite": suite.name,
            "protocol": suite.protocol,
            "world": world,
            "split": split,
            "policy": plan.policy_info,
            "scorer": scorer.describe(),
            "prompts": prompt_prov,
            **({"limit": prompt_prov["limit"]} if "limit" in prompt_prov else {}),
            "images_per_prompt": n,
            "seed": opts.seed,
            "counts": {**counts, "resumed": len(done), ("scored_now" if external else "generated_now"): generated,
                       "processes": world_size,
                       **plan.counts_extra},
            "scores": summarize(suite, records, n_resamples=opts.n_resamples, seed=opts.seed),
            "official": official,
            "timing": {"seconds": round(elapsed, 3),
                       "images_per_s": round(generated / elapsed, 2) if generated and elapsed > 0 else None},
        }
        if metrics is not None and counts["complete"]:
            from irisbench.evaluation.run_metrics import attach_metrics

            attach_metrics(results, metrics, run.path, records, items, opts.seed,
                           recompute_clip=any(k.startswith("metrics.") for k in changed),
                           command=f"irisbench metrics {run.path} --metrics {','.join(opts.metrics.names)}")
        atomic_write_json(run.path / "results.json", results)
    ranks.barrier()
    return results


def _write_official(root: Path, protocol: str, items: list[dict], records: list[dict], n: int,
                    save_images: bool) -> dict[str, Any]:
    """The suite's official layout of the run's images (irisbench.evaluation.layouts), and its official score files:
    GenEval's results.jsonl, T2I-CompBench's per-category vqa_result.json (protocols.compbench_outputs)."""
    from irisbench.evaluation.layouts import write_geneval_results, write_official_layout

    out: dict[str, Any] = {}
    if save_images:
        linked = write_official_layout(root, protocol, items, records, n)
        out["layout"] = {"folder": protocol, "images": linked}
    if protocol == "geneval":
        out["results_jsonl"] = {"file": "results.jsonl", "lines": write_geneval_results(root / "results.jsonl",
                                                                                         records)}
    elif protocol == "compbench" and records:
        from irisbench.protocols.compbench_outputs import write_compbench_files

        out["score_files"] = write_compbench_files(root, items, records, n)
    return out


def merge_shards(root: Path) -> int:
    """Append every per-rank record not yet in ``records.jsonl`` to it, then delete the shard files."""
    from irisbench.core.records import RecordWriter, read_records

    shards = sorted(root.glob("records.rank-*.jsonl"))
    if not shards:
        return 0
    added = 0
    with RecordWriter(root / "records.jsonl", key_fields=("prompt_index", "sample_index")) as writer:
        for shard in shards:
            new = [r for r in read_records(shard) if not writer.done((r["prompt_index"], r["sample_index"]))]
            new.sort(key=lambda r: (r["prompt_index"], r["sample_index"]))
            if new:
                writer.append(new)
                added += len(new)
    for shard in shards:
        shard.unlink()
    return added


def _make_scorer(entry: Any, options: dict[str, Any]) -> Any:
    """The scorer object, with user options (model ids or local paths) checked against its signature."""
    import inspect

    cls = entry.load()
    params = inspect.signature(cls).parameters
    unknown = [k for k in options if k not in params]
    if unknown:
        valid = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        raise EvalError(f"scorer {entry.name!r} has no option(s) {unknown}; its options: {valid or 'none'}")
    return cls(**options)


def _generate(source, scorer, items, pending, writer, root: Path, opts: EvalOptions, progress: bool,
              resumed: int, metrics: Any = None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from irisbench.core.progress import progress_bar
    from irisbench.evaluation.layouts import link_or_copy

    total = len(pending) + resumed
    with progress_bar(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      disable=not progress, label="eval") as bar:
        task = bar.add_task("eval", total=total, completed=resumed)
        for start in range(0, len(pending), opts.batch_size):
            batch = pending[start : start + opts.batch_size]
            rows = source.produce(batch, items)
            images = [image for image, _, _ in rows]
            scores = scorer.score(images, [items[i] for i, _ in batch])
            extras = metrics.per_image(images, [items[i]["prompt"] for i, _ in batch]) \
                if metrics is not None else [{} for _ in batch]
            records = []
            for row, ((i, j), s) in enumerate(zip(batch, scores, strict=True)):
                image, fields, src = rows[row]
                rel = None
                if opts.save_images:
                    rel = image_relpath(i, j)
                    if src is not None:
                        link_or_copy(src, root / rel)
                    else:
                        save_png(image, root / rel)
                item = items[i]
                extra = {k: v for k, v in s.items() if k not in ("detections", "reason", "correct", "score")}
                fields = dict(fields)
                records.append({
                    "prompt_index": i,
                    "sample_index": j,
                    "seed": fields.pop("seed", None),
                    "tag": item["tag"],
                    "prompt": item["prompt"],
                    "metadata": json.dumps(item),
                    "correct": s.get("correct"),
                    "score": float(s["score"]) if "score" in s else float(bool(s.get("correct"))),
                    "reason": s.get("reason", ""),
                    "detections": json.dumps(s.get("detections", [])),
                    "image": rel,
                    "plan": fields.pop("plan", ""),
                    **fields,
                    **extra,
                    **extras[row],
                })
            writer.append(records)
            bar.advance(task, len(batch))


def summarize(suite: Any, records: list[dict], *, n_resamples: int, seed: int) -> dict[str, Any]:
    """Aggregate per-image records as the suite's ``metric_list`` declares (``irisbench.suites``).

    ``suite``: a ``Suite`` (or a protocol name, for its default list). The first entry is the headline
    (``mean_of_tag_means`` of ``correct`` for GenEval, of ``score`` for CompBench); later entries add
    figures beside it (CompBench's IRIS-style mean of 6). ``out["metric_list"]`` records what was used.

    Records are taken in (prompt, sample) order, so the bootstrap intervals do not depend on the order the
    records file was written in (several processes, resumed runs).
    """
    from irisbench.core.stats import geneval_summary
    from irisbench.suites import DEFAULT_METRIC_LIST

    records = sorted(records, key=lambda r: (r["prompt_index"], r["sample_index"]))

    metric_list = suite.metric_list if hasattr(suite, "metric_list") else DEFAULT_METRIC_LIST[suite]
    head = metric_list[0]
    out = geneval_summary(records, n_resamples=n_resamples, seed=seed, value=head.metric)
    out["metric_list"] = [dict(vars(m)) for m in metric_list]
    if head.metric == "score":
        out["overall_label"] = "mean of categories present"
    for extra in metric_list[1:]:
        if extra.aggregation == "compbench_mean_of_6":
            from irisbench.protocols.compbench import MEAN_OF_6, MEAN_OF_6_LABEL

            missing = [c for c in MEAN_OF_6 if c not in out["tags"]]
            out[MEAN_OF_6_LABEL] = None if missing else float(np.mean([out["tags"][c]["score"] for c in MEAN_OF_6]))
            out["mean_of_6_missing"] = missing
        else:  # a second mean_of_tag_means, of another per-image field
            other = geneval_summary(records, n_resamples=n_resamples, seed=seed, value=extra.metric)
            out.setdefault("extra", {})[extra.metric] = {"overall": other["overall"], "tags": other["tags"]}
    return out
