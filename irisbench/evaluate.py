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
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.policies.base import derive_seed


@dataclass
class EvalOptions:
    policy: str = "shapes-base"
    model: str | None = None
    suite: str = "geneval"
    split: str | None = None
    images_per_prompt: int | None = None
    seed: int = 0
    batch_size: int = 64
    cfg: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    limit: int | None = None
    prompts_file: str | None = None
    save_images: bool = True
    n_resamples: int = 2000
    metrics: Any = None  # irisbench.metrics.suite_metrics.MetricOptions: CLIP score, FID, KID beside the protocol
    scorer_options: dict[str, Any] | None = None  # e.g. detector_model / clip_model ids or local paths
    device: str | None = None  # where the policy runs (irisbench.devices; None: cuda when available, else cpu)


class EvalError(ValueError):
    """An evaluation that cannot run as asked (the message says why and what to do)."""


def save_png(image: np.ndarray, path: Path) -> None:
    """Write a PNG atomically (tmp file + rename), so a crash never leaves a truncated image."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, path)


def image_relpath(prompt_index: int, sample_index: int) -> str:
    return f"images/{prompt_index:05d}/{sample_index:02d}.png"


def evaluate(opts: EvalOptions, out: str | Path, *, policy: Any = None, progress: bool = True) -> dict:
    """Run (or resume) one evaluation into ``out``; returns the results dict written to results.json."""
    from irisbench.devices import device_record, resolve_device
    from irisbench.policies import NEEDS_MODEL, load_policy
    from irisbench.registry import POLICIES
    from irisbench.runs import RecordWriter, RunDir, atomic_write_json, env_info, read_records, write_parquet
    from irisbench.stats import count_check
    from irisbench.suites import load_suite, resolve_prompts

    device = resolve_device(opts.device)  # before anything is loaded or written: one line if unusable
    suite = load_suite(opts.suite)
    if policy is None:
        # check the scorer before loading a (possibly large) model
        entry = POLICIES.get(opts.policy) if opts.policy in POLICIES else None
        if opts.policy in NEEDS_MODEL and not opts.model:
            raise EvalError(f"policy {opts.policy!r} needs --model (a model id or a local folder)")
        if entry is not None and entry.world is not None:
            _scorer_entry(suite, entry.world)
        policy = load_policy(opts.policy, opts.model, device=device)
    world = policy.world
    scorer_entry = _scorer_entry(suite, world)
    scorer_name = scorer_entry.name
    items, prompt_prov = resolve_prompts(suite, world, opts.split, opts.prompts_file)
    if opts.limit is not None:
        if opts.limit < 1:
            raise EvalError(f"--limit must be >= 1, got {opts.limit}")
        from irisbench.suites import prompt_set_sha256

        items = items[: opts.limit]
        prompt_prov.update(limit=opts.limit, n_prompts_source=prompt_prov["n_prompts"],
                           sha256_source=prompt_prov["sha256"], n_prompts=len(items),
                           sha256=prompt_set_sha256(items))
    n = suite.images_per_prompt if opts.images_per_prompt is None else opts.images_per_prompt
    if n < 1:
        raise EvalError(f"images per prompt must be >= 1, got {n}")
    if opts.batch_size < 1:
        raise EvalError(f"--batch-size must be >= 1, got {opts.batch_size}")
    prompts = [it["prompt"] for it in items]
    check = getattr(policy, "check_prompts", None)
    if check is not None:
        check(prompts)
    split = prompt_prov["split"]
    seed_key = f"{suite.name}/{world}/{split}"
    metrics = None
    if opts.metrics is not None and opts.metrics.names:
        from irisbench.metrics.suite_metrics import SuiteMetrics

        if ("fid" in opts.metrics.names or "kid" in opts.metrics.names) and not opts.save_images:
            raise EvalError("FID/KID read the generated images back: drop --no-save-images")
        metrics = SuiteMetrics(opts.metrics, world)

    config = {
        "command": "eval",
        "policy": policy.describe(),
        "suite": suite.name,
        "world": world,
        "split": split,
        "prompts": prompt_prov,
        "images_per_prompt": n,
        "seed": opts.seed,
        "sampling": {"cfg": opts.cfg, "temperature": opts.temperature, "top_k": opts.top_k},
        "scorer": scorer_name,
        **({"scorer_options": opts.scorer_options} if opts.scorer_options else {}),
        "save_images": opts.save_images,
        **({"metrics": {"names": list(opts.metrics.names), "clip_model": opts.metrics.clip_model,
                        "clip_pretrained": opts.metrics.clip_pretrained, "clip_scale": opts.metrics.clip_scale,
                        "fid_reference": opts.metrics.fid_reference}} if metrics is not None else {}),
    }
    from irisbench.distributed import Dist

    ranks = Dist.from_env(device)
    rank, world_size = ranks.rank, ranks.world_size
    if rank == 0:
        run = RunDir.open_or_create(out, kind="eval", config=config, env={**env_info(), **device_record(device)})
    ranks.barrier()
    if rank != 0:
        run = RunDir.open(out)
    scorer = _make_scorer(scorer_entry, opts.scorer_options or {})
    started = time.perf_counter()
    lock = run.lock() if rank == 0 else contextlib.nullcontext()
    with lock:
        if rank == 0:
            merge_shards(run.path)  # shards a crashed multi-process run left behind
        ranks.barrier()
        done = {(r["prompt_index"], r["sample_index"]) for r in read_records(run.path / "records.jsonl")} \
            if (run.path / "records.jsonl").exists() else set()
        path = run.path / ("records.jsonl" if world_size == 1 else f"records.rank-{rank}.jsonl")
        with RecordWriter(path, key_fields=("prompt_index", "sample_index")) as writer:
            # prompts are sharded by rank (prompt_index mod world size); each rank writes its own file
            mine = [(i, j) for i in range(rank, len(items), world_size) for j in range(n)]
            pending = [key for key in mine if key not in done and not writer.done(key)]
            _generate(policy, scorer, items, pending, writer, run.path, opts, seed_key,
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
        elapsed = time.perf_counter() - started
        generated = len(records) - len(done)
        results = {
            "suite": suite.name,
            "protocol": suite.protocol,
            "world": world,
            "split": split,
            "policy": policy.describe(),
            "scorer": scorer.describe(),
            "prompts": prompt_prov,
            "images_per_prompt": n,
            "seed": opts.seed,
            "counts": {**counts, "resumed": len(done), "generated_now": generated, "processes": world_size},
            "scores": summarize(suite.protocol, records, n_resamples=opts.n_resamples, seed=opts.seed),
            "timing": {"seconds": round(elapsed, 3),
                       "images_per_s": round(generated / elapsed, 2) if generated and elapsed > 0 else None},
        }
        if metrics is not None and counts["complete"]:
            results["metrics"] = metrics.finalize(run.path, records, items, opts.seed)
        atomic_write_json(run.path / "results.json", results)
    ranks.barrier()
    return results


def merge_shards(root: Path) -> int:
    """Append every per-rank record not yet in ``records.jsonl`` to it, then delete the shard files."""
    from irisbench.runs import RecordWriter, read_records

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


def _scorer_entry(suite: Any, world: str) -> Any:
    from irisbench.registry import SCORERS

    scorer_name = suite.scorer.get(world)
    if scorer_name is None:
        raise EvalError(f"suite {suite.name!r} has no scorer for the {world!r} world")
    entry = SCORERS.get(scorer_name)
    if not entry.available:
        raise EvalError(
            f"suite {suite.name!r} on the {world!r} world needs the scorer {scorer_name!r} "
            f"({entry.summary}), which is not built yet. Shapes-world policies (oracle, random, "
            "shapes-base) can be evaluated now."
        )
    return entry


def _generate(policy, scorer, items, pending, writer, root: Path, opts: EvalOptions, seed_key: str,
              progress: bool, resumed: int, metrics: Any = None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    total = len(pending) + resumed
    with Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=not progress, transient=False) as bar:
        task = bar.add_task("eval", total=total, completed=resumed)
        for start in range(0, len(pending), opts.batch_size):
            batch = pending[start : start + opts.batch_size]
            seeds = [derive_seed(opts.seed, seed_key, i, j) for i, j in batch]
            rollout = policy.sample([items[i]["prompt"] for i, _ in batch], n=1, seed=seeds,
                                    cfg=opts.cfg, temperature=opts.temperature, top_k=opts.top_k)
            if len(rollout) != len(batch):
                raise EvalError(f"policy returned {len(rollout)} samples for {len(batch)} requests")
            scores = scorer.score(rollout.images, [items[i] for i, _ in batch])
            extras = metrics.per_image(rollout.images, [items[i]["prompt"] for i, _ in batch]) \
                if metrics is not None else [{} for _ in batch]
            records = []
            for row, ((i, j), s) in enumerate(zip(batch, scores, strict=True)):
                rel = None
                if opts.save_images:
                    rel = image_relpath(i, j)
                    save_png(rollout.images[row], root / rel)
                item = items[i]
                extra = {k: v for k, v in s.items() if k not in ("detections", "reason", "correct", "score")}
                records.append({
                    "prompt_index": i,
                    "sample_index": j,
                    "seed": seeds[row],
                    "tag": item["tag"],
                    "prompt": item["prompt"],
                    "metadata": json.dumps(item),
                    "correct": s.get("correct"),
                    "score": float(s["score"]) if "score" in s else float(bool(s.get("correct"))),
                    "reason": s.get("reason", ""),
                    "detections": json.dumps(s.get("detections", [])),
                    "image": rel,
                    "plan": rollout.plans[row] if rollout.plans else "",
                    **rollout.token_summary(row),
                    **extra,
                    **extras[row],
                })
            writer.append(records)
            bar.advance(task, len(batch))


def summarize(protocol: str, records: list[dict], *, n_resamples: int, seed: int) -> dict[str, Any]:
    """Aggregate per-image records by the protocol's rule (GenEval: accuracy; CompBench: mean score)."""
    from irisbench.stats import geneval_summary, score_summary

    if protocol == "geneval":
        return geneval_summary(records, n_resamples=n_resamples, seed=seed)
    out = score_summary(records, n_resamples=n_resamples, seed=seed)
    from irisbench.protocols.compbench import MEAN_OF_6, MEAN_OF_6_LABEL

    missing = [c for c in MEAN_OF_6 if c not in out["tags"]]
    out["overall_label"] = "mean of categories present"
    out[MEAN_OF_6_LABEL] = None if missing else float(np.mean([out["tags"][c]["score"] for c in MEAN_OF_6]))
    out["mean_of_6_missing"] = missing
    return out
