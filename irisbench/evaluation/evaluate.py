"""Generate -> score -> per-image records -> aggregates, resumable at image granularity.

One record per generated image is written (and fsynced) as soon as it is scored, so a crash loses at
most the batch in flight; re-running the same command skips every (prompt, sample) pair already
recorded. Each image's seed derives from (base seed, suite/world/split, prompt index, sample index),
never from its batch, so an interrupted-and-resumed run gives the same records as an uninterrupted one,
whatever the batch size.

The run folder (records, images, ``results.json``, the resume rules) is ``irisbench.evaluation.eval_run.EvalRun``'s;
beside it this flow writes the suite's official layout (hard links, ``irisbench.evaluation.layouts``) and official
score files (GenEval's per-image output, T2I-CompBench's ``vqa_result.json`` per category).

What is scored (options, prompts, the image source) is planned by ``irisbench.evaluation.eval_plan``. Every suite,
WISE included (``irisbench.evaluation.wise_eval``), draws or reads its images and scores them through one loop,
``produce_and_score``: an image source's ``produce``, the images saved into the run, the scorer (the scorer contract,
``irisbench.scorers.contract``), one record per image, a progress bar. What differs per suite is handed to it: where
its images go in the run folder and how its records look (``suite_record`` here, ``wise_record`` for WISE). Images made
elsewhere (``EvalOptions.images``: a GenEval or T2I-CompBench folder, or another run) go through the same
records and summaries; the policy is recorded as "external" and their seeds as null.
``limit_per_tag`` (the CLI's ``--limit``) keeps the first N prompts of every tag; each image's seed still
derives from the prompt's index in the full prompt set, so a limited run draws the images the full run does.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from irisbench.core.records import RecordWriter
from irisbench.evaluation.aggregation import aggregate
from irisbench.evaluation.eval_plan import (
    EvalError,
    EvalOptions,
    ImageSource,
    Items,
    Key,
    external_plan,
    generated_plan,
)
from irisbench.evaluation.eval_run import (  # noqa: F401  (save_png: old path)
    EvalRun,
    image_relpath,
    results_from_config,
    save_png,
)
from irisbench.scorers.contract import Scorer

# How a suite's record of one image is made: (key, prompt item, the source's fields, the scorer's fields, the
# image's path in the run or None, the per-image metrics) -> the record
RecordMaker = Callable[[Key, dict, dict, dict, "str | None", dict], dict]


def evaluate(opts: EvalOptions, out: str | Path, *, policy: Any = None, progress: bool = True,
             on_start: Callable[[dict[str, Any]], None] | None = None) -> dict:
    """Run (or resume) one evaluation into ``out``; returns the results dict written to results.json.

    With ``opts.images`` the images are read from that folder (``irisbench.evaluation.layouts``) instead of generated;
    the rest (records, summaries, official layouts) is the same. ``on_start(config)`` is called once the plan
    is made (world, scorer, images per prompt known), before the run folder is written or the scorer loaded."""
    from irisbench.core.devices import device_record, resolve_device
    from irisbench.core.provenance import env_info
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
        **plan.source.config_fields(),
        "scorer": plan.entry.name,
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
        run, changed = EvalRun.open_or_create(out, config, {**env_info(), **device_record(device)},
                                              allow_config_change=opts.allow_config_change)
    ranks.barrier()
    if rank != 0:
        run = EvalRun.open(out)
    scorer = _make_scorer(plan.entry, opts.scorer_options or {})
    started = time.perf_counter()
    lock = run.lock() if rank == 0 else contextlib.nullcontext()
    available = plan.source.present
    with lock:
        if rank == 0:
            run.merge_shards()  # shards a crashed multi-process run left behind
        ranks.barrier()
        done = run.done_keys()
        with run.writer(rank, world_size) as writer:
            # prompts are sharded by rank (prompt_index mod world size); each rank writes its own file
            mine = [(i, j) for i in range(rank, len(items), world_size) for j in range(n)
                    if available is None or (i, j) in available]
            pending = [key for key in mine if key not in done and not writer.done(key)]
            produce_and_score(plan.source, scorer, items, pending, writer, run, batch_size=opts.batch_size,
                              progress=progress and rank == 0, resumed=len(mine) - len(pending),
                              image_relpath=image_relpath if opts.save_images else None, metrics=metrics)
        ranks.barrier()
        if rank != 0:
            ranks.barrier()
            return dict(run.read_results())
        run.merge_shards()
        records = run.read_records()
        expected = len(items) * n
        counts = count_check(expected, len(records))
        if counts["complete"]:
            run.write_parquet()
        official = _write_official(run, suite.protocol, items, records, n, opts.save_images)
        elapsed = time.perf_counter() - started
        generated = len(records) - len(done)  # images made (or, from a folder, read and scored) by this call
        external = opts.images is not None
        results = {
            **results_from_config(config),
            "protocol": suite.protocol,
            "scorer": scorer.describe(),
            **({"limit": prompt_prov["limit"]} if "limit" in prompt_prov else {}),
            "counts": {**counts, "resumed": len(done), ("scored_now" if external else "generated_now"): generated,
                       "processes": world_size,
                       **plan.source.count_fields()},
            "scores": summarize(suite, records, n_resamples=opts.n_resamples, seed=opts.seed),
            "official": official,
            "timing": {"seconds": round(elapsed, 3),
                       "images_per_s": round(generated / elapsed, 2) if generated and elapsed > 0 else None},
        }
        if metrics is not None and counts["complete"]:
            from irisbench.evaluation.run_metrics import attach_metrics

            attach_metrics(results, metrics, run, records, items, opts.seed,
                           recompute_clip=any(k.startswith("metrics.") for k in changed),
                           command=f"irisbench metrics {run.path} --metrics {','.join(opts.metrics.names)}")
        results = dict(run.write_results(results))
    ranks.barrier()
    return results


def _write_official(run: EvalRun, protocol: str, items: list[dict], records: list[dict], n: int,
                    save_images: bool) -> dict[str, Any]:
    """The suite's official layout of the run's images (irisbench.evaluation.layouts), and its official score files:
    GenEval's per-image output, T2I-CompBench's per-category vqa_result.json (protocols.compbench_outputs)."""
    from irisbench.evaluation.layouts import write_geneval_results, write_official_layout

    out: dict[str, Any] = {}
    if save_images:
        linked = write_official_layout(run.path, protocol, items, records, n)
        out["layout"] = {"folder": protocol, "images": linked}
    if protocol == "geneval":
        path = run.geneval_results_path
        out["results_jsonl"] = {"file": path.name, "lines": write_geneval_results(path, records)}
    elif protocol == "compbench" and records:
        from irisbench.protocols.compbench_outputs import write_compbench_files

        out["score_files"] = write_compbench_files(run.path, items, records, n)
    return out


def merge_shards(root: Path) -> int:
    """Append every per-rank record not yet in the run's records to them, then delete the shard files."""
    return EvalRun(root).merge_shards()


def _make_scorer(entry: Any, options: dict[str, Any]) -> Scorer:
    """The scorer object, with user options (model ids or local paths) checked against its signature; it must
    implement the scorer contract (``irisbench.scorers.contract.Scorer``)."""
    import inspect

    cls = entry.load()
    params = inspect.signature(cls).parameters
    unknown = [k for k in options if k not in params]
    if unknown:
        valid = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        raise EvalError(f"scorer {entry.name!r} has no option(s) {unknown}; its options: {valid or 'none'}")
    scorer = cls(**options)
    if not isinstance(scorer, Scorer):
        raise EvalError(f"scorer {entry.name!r} ({cls.__name__}) does not implement the scorer contract "
                        "(irisbench.scorers.contract.Scorer: score(images, items) and describe())")
    return scorer


def produce_and_score(source: ImageSource, scorer: Scorer, items: Items, pending: Sequence[Key],
                      writer: RecordWriter, run: EvalRun, *, batch_size: int, progress: bool, resumed: int,
                      image_relpath: Callable[[int, int], str] | None = image_relpath,
                      make_record: RecordMaker | None = None, metrics: Any = None) -> None:
    """The evaluation loop of every suite: per batch of ``pending`` keys, the source's images, saved into the run
    (at ``image_relpath(prompt_index, sample_index)``; None: not saved), scored, and one record each appended.

    A scorer that reads files (``reads_files``: the WISE judge) is given each image's file, the saved one or the
    one it was read from, so it sees the bytes on disk; other scorers are given the pixels. ``make_record``
    (default ``suite_record``) builds each record; ``metrics`` adds per-image metrics (CLIP score...)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from irisbench.core.progress import progress_bar

    make_record = make_record or suite_record
    reads_files = getattr(scorer, "reads_files", False)
    total = len(pending) + resumed
    with progress_bar(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      disable=not progress, label="eval") as bar:
        task = bar.add_task("eval", total=total, completed=resumed)
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            rows = source.produce(batch, items)
            saved: list[str | None] = []
            for (i, j), (image, _, src) in zip(batch, rows, strict=True):
                rel = image_relpath(i, j) if image_relpath is not None else None
                if rel is not None:  # before scoring: a judge that fails leaves the image for the next call
                    run.save_image(src if src is not None else image, rel)
                saved.append(rel)
            images = [image for image, _, _ in rows]
            if reads_files:
                given = [run.image_path(rel) if rel is not None else src if src is not None else image
                         for rel, (image, _, src) in zip(saved, rows, strict=True)]
            else:
                given = images
            scores = scorer.score(given, [items[i] for i, _ in batch])
            extras = metrics.per_image(images, [items[i]["prompt"] for i, _ in batch]) \
                if metrics is not None else [{} for _ in batch]
            writer.append([make_record(key, items[key[0]], rows[k][1], s, saved[k], extras[k])
                           for k, (key, s) in enumerate(zip(batch, scores, strict=True))])
            bar.advance(task, len(batch))


def suite_record(key: Key, item: dict, fields: dict, s: dict, image: str | None, extra: dict) -> dict:
    """A GenEval or T2I-CompBench record: the prompt, the scorer's verdict, the source's fields (seed, plan,
    token statistics), the image's path in the run, and the per-image metrics."""
    i, j = key
    fields = dict(fields)
    scorer_extra = {k: v for k, v in s.items() if k not in ("detections", "reason", "correct", "score")}
    return {
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
        "image": image,
        "plan": fields.pop("plan", ""),
        **fields,
        **scorer_extra,
        **extra,
    }


def summarize(suite: Any, records: list[dict], *, n_resamples: int, seed: int) -> dict[str, Any]:
    """Aggregate per-image records as the suite's ``metric_list`` declares (``irisbench.suites``), through the
    aggregation registry (``irisbench.evaluation.aggregation``).

    ``suite``: a ``Suite`` (or a protocol name, for its default list). The first entry is the headline
    (``mean_of_tag_means`` of ``correct`` for GenEval, of ``score`` for CompBench); later entries add
    figures beside it (CompBench's IRIS-style mean of 6). ``out["metric_list"]`` records what was used.
    """
    from irisbench.suites import DEFAULT_METRIC_LIST

    metric_list = suite.metric_list if hasattr(suite, "metric_list") else DEFAULT_METRIC_LIST[suite]
    return aggregate(metric_list, records, n_resamples=n_resamples, seed=seed)
