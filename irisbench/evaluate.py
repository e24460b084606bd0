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
    <out>/compbench/<category>/samples/{prompt}_{NNNNNN}.png        (hard links; irisbench.layouts)
    <out>/results.jsonl                      GenEval suites: the official evaluator's per-image output format

Images made elsewhere (``EvalOptions.images``: a GenEval or T2I-CompBench folder, or another run) go through
the same records and summaries; the policy is recorded as "external" and their seeds as null.
``limit_per_tag`` (the CLI's ``--limit``) keeps the first N prompts of every tag; each image's seed still
derives from the prompt's index in the full prompt set, so a limited run draws the images the full run does.
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

from irisbench.errors import IrisbenchError
from irisbench.policies.base import derive_seed


@dataclass
class EvalOptions:
    policy: str = "shapes-base"
    model: str | None = None
    suite: str | None = None  # None: geneval when generating; from the folder with ``images``
    split: str | None = None
    images_per_prompt: int | None = None
    seed: int = 0
    batch_size: int = 64
    cfg: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    limit: int | None = None  # the first N prompts (training-time evaluations)
    limit_per_tag: int | None = None  # the first N prompts of every tag (``--limit``): see ``stratified_indices``
    prompts_file: str | None = None
    save_images: bool = True
    n_resamples: int = 2000
    metrics: Any = None  # irisbench.metrics.suite_metrics.MetricOptions: CLIP score, FID, KID beside the protocol
    scorer_options: dict[str, Any] | None = None  # e.g. detector_model / clip_model ids or local paths
    images: str | None = None  # score this folder (irisbench.layouts) instead of generating: policy "external"
    category: str | None = None  # T2I-CompBench layout: the category of a one-category folder
    allow_missing: bool = False  # score an incomplete folder (missing/extra/unreadable images are counted)
    allow_config_change: bool = False  # resume with changes that leave the images alone (the metrics block)
    device: str | None = None  # where the policy runs (irisbench.devices; None: cuda when available, else cpu)


class EvalError(IrisbenchError, ValueError):
    """An evaluation that cannot run as asked (the message says why and what to do)."""


LIMIT_RULE = "the first N prompts of every tag, in prompt-file order (kept in that order)"


def stratified_indices(items: list[dict], per_tag: int) -> list[int]:
    """Indices of the first ``per_tag`` prompts of every tag, in prompt-file order (deterministic, no seed):
    a smoke run covers every tag, so its "overall" is still the mean over all tags."""
    if per_tag < 1:
        raise EvalError(f"--limit must be >= 1, got {per_tag}")
    taken: dict[str, int] = {}
    out = []
    for k, it in enumerate(items):
        if taken.get(it["tag"], 0) < per_tag:
            taken[it["tag"]] = taken.get(it["tag"], 0) + 1
            out.append(k)
    return out


def _limit(items: list[dict], prov: dict[str, Any], opts: EvalOptions) -> tuple[list[dict], list[int] | None]:
    """Apply ``limit`` / ``limit_per_tag``; record how in ``prov``. Returns the items and their source indices."""
    from irisbench.suites import prompt_set_sha256

    if opts.limit is not None and opts.limit_per_tag is not None:
        raise EvalError("give a per-tag limit or a first-N limit, not both")
    if opts.limit is not None:
        if opts.limit < 1:
            raise EvalError(f"--limit must be >= 1, got {opts.limit}")
        chosen = list(range(min(opts.limit, len(items))))
        how: Any = opts.limit
    elif opts.limit_per_tag is not None:
        chosen = stratified_indices(items, opts.limit_per_tag)
        how = {"per_tag": opts.limit_per_tag, "rule": LIMIT_RULE, "source_indices": chosen}
    else:
        return items, None
    out = [items[k] for k in chosen]
    prov.update(limit=how, n_prompts_source=len(items), sha256_source=prov.get("sha256"), n_prompts=len(out),
                sha256=prompt_set_sha256(out))
    return out, chosen


def save_png(image: np.ndarray, path: Path) -> None:
    """Write a PNG atomically (tmp file + rename), so a crash never leaves a truncated image."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, path)


def image_relpath(prompt_index: int, sample_index: int) -> str:
    return f"images/{prompt_index:05d}/{sample_index:02d}.png"


@dataclass
class _Plan:
    """What an evaluation scores: the prompts, where the images come from, and the config to record."""

    suite: Any
    world: str
    items: list[dict]
    prompt_prov: dict[str, Any]
    n: int
    source: Any  # _PolicySource | _FolderSource
    policy_info: dict[str, Any]
    config_extra: dict[str, Any]
    counts_extra: dict[str, Any]


class _PolicySource:
    """Images drawn by a policy; each image's seed from (base seed, suite/world/split, source prompt, sample)."""

    def __init__(self, policy: Any, opts: EvalOptions, seed_key: str, source_index: list[int] | None):
        self.policy, self.opts, self.seed_key, self.source_index = policy, opts, seed_key, source_index

    def produce(self, batch: list[tuple[int, int]], items: list[dict]) -> list[tuple[Any, dict, Path | None]]:
        src = self.source_index
        seeds = [derive_seed(self.opts.seed, self.seed_key, src[i] if src else i, j) for i, j in batch]
        rollout = self.policy.sample([items[i]["prompt"] for i, _ in batch], n=1, seed=seeds, cfg=self.opts.cfg,
                                     temperature=self.opts.temperature, top_k=self.opts.top_k)
        if len(rollout) != len(batch):
            raise EvalError(f"policy returned {len(rollout)} samples for {len(batch)} requests")
        return [(rollout.images[r], {"seed": seeds[r], "plan": rollout.plans[r] if rollout.plans else "",
                                     **rollout.token_summary(r)}, None) for r in range(len(batch))]


class _FolderSource:
    """Images read from a folder (``irisbench.layouts``); generation fields carried over from a source run."""

    def __init__(self, root: Path, present: dict[tuple[int, int], Path], carry: dict[tuple[int, int], dict]):
        self.root, self.present, self.carry = root, present, carry

    def produce(self, batch: list[tuple[int, int]], items: list[dict]) -> list[tuple[Any, dict, Path | None]]:
        from irisbench.layouts import load_rgb

        empty = {"seed": None, "plan": "", **_NO_TOKENS}
        out = []
        for key in batch:
            path = self.present[key]
            fields = {**empty, **self.carry.get(key, {}), "source_image": os.path.relpath(path, self.root)}
            out.append((load_rgb(path), fields, path))
        return out


_NO_TOKENS = {"sc_text": None, "entropy_text": None, "sc_image": None, "entropy_image": None,
              "sc_all": None, "entropy_all": None, "plan_len": 0}


def _generated_plan(opts: EvalOptions, policy: Any, device: str) -> _Plan:
    from irisbench.policies import NEEDS_MODEL, load_policy
    from irisbench.registry import POLICIES
    from irisbench.suites import load_suite, resolve_prompts

    suite = load_suite(opts.suite or "geneval")
    if policy is None:
        # check the scorer before loading a (possibly large) model
        entry = POLICIES.get(opts.policy) if opts.policy in POLICIES else None
        if opts.policy in NEEDS_MODEL and not opts.model:
            raise EvalError(f"policy {opts.policy!r} needs --model (a model id or a local folder)")
        if entry is not None and entry.world is not None:
            _scorer_entry(suite, entry.world)
        policy = load_policy(opts.policy, opts.model, device=device)
    world = policy.world
    _scorer_entry(suite, world)
    items, prompt_prov = resolve_prompts(suite, world, opts.split, opts.prompts_file)
    items, source_index = _limit(items, prompt_prov, opts)
    n = suite.images_per_prompt if opts.images_per_prompt is None else opts.images_per_prompt
    if n < 1:
        raise EvalError(f"images per prompt must be >= 1, got {n}")
    check = getattr(policy, "check_prompts", None)
    if check is not None:
        check([it["prompt"] for it in items])
    seed_key = f"{suite.name}/{world}/{prompt_prov['split']}"
    return _Plan(suite, world, items, prompt_prov, n, _PolicySource(policy, opts, seed_key, source_index),
                 policy.describe(), {"sampling": {"cfg": opts.cfg, "temperature": opts.temperature,
                                                  "top_k": opts.top_k}}, {})


def _external_plan(opts: EvalOptions) -> _Plan:
    """Read ``opts.images`` in whichever layout it is, check it against the suite, and plan its scoring."""
    from irisbench import layouts
    from irisbench.suites import load_suite, prompt_set_sha256, resolve_prompts

    root = Path(opts.images)
    layout = layouts.detect_layout(root)
    run_info: dict[str, Any] = {}
    if layout == "run":
        from irisbench.runs import RunDir

        cfg = RunDir.open(root).config
        run_info = {"suite": cfg.get("suite"), "world": cfg.get("world"), "n": cfg.get("images_per_prompt")}
    suite = load_suite(opts.suite or run_info.get("suite") or ("compbench" if layout == "compbench" else "geneval"))
    protocol = layouts.LAYOUTS[layout].protocol
    if protocol is not None and suite.protocol != protocol:
        raise EvalError(f"{root}: a {layout} layout, but suite {suite.name!r} follows the {suite.protocol} protocol")
    world = None if layout == "geneval" else (run_info.get("world") or ("open" if opts.prompts_file else "shapes"))

    suite_prov: dict[str, Any] = {}

    def suite_items() -> list[dict]:  # the suite's prompts, limited as asked (T2I-CompBench layout)
        items, p = resolve_prompts(suite, world, opts.split, opts.prompts_file)
        items, _ = _limit(items, p, opts)
        suite_prov.update(p)
        return items

    n_hint = opts.images_per_prompt or run_info.get("n")
    ctx = layouts.LayoutContext(suite, world, suite_items, n_hint, opts.category)
    read = layouts.read_layout(root, ctx, layout)
    world = read.info.get("world") or world
    _scorer_entry(suite, world)
    prov: dict[str, Any] = {"source": "images", "layout": layout, "folder": str(root.resolve()), "world": world}
    if layout == "geneval":
        prov.update(_geneval_folder_prompts(suite, world, read.items, opts))
    elif layout == "compbench":
        prov.update({k: v for k, v in suite_prov.items() if k not in ("n_prompts", "sha256", "sha256_source")},
                    categories=read.info["categories"], source="images", world=world)
    else:
        src_prov = read.info.get("source_prompts") or {}
        prov.update(split=read.info.get("split"), source_run=str(root.resolve()),
                    **{k: v for k, v in src_prov.items() if k in ("source", "file", "folder", "seed", "limit")})
        if opts.split and opts.split != read.info.get("split"):
            raise EvalError(f"{root}: the run scored split {read.info.get('split')!r}, not {opts.split!r}")
    prov.setdefault("split", opts.split or "images")
    prov.update(n_prompts=len(read.items), sha256=prompt_set_sha256(read.items))
    if layout != "compbench":  # the layout carries its own prompts: keep the first N of every tag
        limited, chosen = _limit(read.items, prov, opts)
        if chosen is not None:
            new = {old: k for k, old in enumerate(chosen)}
            read.images = [layouts.LayoutImage(new[im.prompt_index], im.sample_index, im.path)
                           for im in read.images if im.prompt_index in new]
            read.carry = {(new[i], j): c for (i, j), c in read.carry.items() if i in new}
            read.items = limited
    items = read.items
    n = opts.images_per_prompt or run_info.get("n") or suite.images_per_prompt
    coverage = layouts.check_coverage(read, n, world)
    problems = coverage.problems()
    if any(problems.values()) and not opts.allow_missing:
        raise EvalError(f"{root}: incomplete image folder ({coverage.summary(items)}); fix the folder, or pass "
                        "--allow-missing to score the images that are there")
    present, carry, limited = coverage.present, read.carry, items
    expected_missing = len(limited) * n - len(present)
    info = {"name": "external", "images": str(root.resolve()), "layout": layout}
    if layout == "run":
        info["source_policy"] = read.info.get("source_policy")
    check = {**problems, "missing": expected_missing, "allow_missing": opts.allow_missing}
    if any(problems.values()):
        check["first"] = coverage.summary(items)
    return _Plan(suite, world, limited, prov, n, _FolderSource(root, present, carry), info,
                 {"images": info, "image_check": check}, {"image_check": check})


def _geneval_folder_prompts(suite: Any, world: str, items: list[dict], opts: EvalOptions) -> dict[str, Any]:
    """Name the folder's prompt set (the official 553, a suite split, or the folder's own) and check it against
    the suite's prompts when --prompts or --split asks for them."""
    from irisbench.suites import official_format_sha256, prompt_set_sha256, resolve_prompts

    out: dict[str, Any] = {"official_format_sha256": official_format_sha256(items)}
    digest = prompt_set_sha256(items)
    if opts.prompts_file or opts.split:
        want, _ = resolve_prompts(suite, world, opts.split, opts.prompts_file)
        for k, (a, b) in enumerate(zip(items, want, strict=False)):
            if a != b:
                raise EvalError(f"{opts.images}/{k:05d}/metadata.jsonl: {a['prompt']!r} differs from the suite's "
                                f"prompt {k} {b['prompt']!r}")
        if len(items) != len(want):
            raise EvalError(f"{opts.images}: {len(items)} prompt folders, the suite's prompts have {len(want)}")
    src = suite.prompts.get(world)
    if src is None:
        return {**out, "name": "folder"}
    if src.sha256 and out["official_format_sha256"] == src.sha256:
        return {**out, "name": "official", "split": src.default_split}
    from collections import Counter

    per_tag = max(Counter(it["tag"] for it in items).values())
    for split in src.splits:
        try:
            full = resolve_prompts(suite, world, split)[0]
        except ValueError:
            continue
        if prompt_set_sha256(full) == digest:
            return {**out, "name": f"{suite.name} {world} {split}", "split": split}
        if [full[k] for k in stratified_indices(full, per_tag)] == items:  # a run made with --limit
            return {**out, "name": f"{suite.name} {world} {split}, first {per_tag} per tag", "split": split}
    return {**out, "name": "folder"}


def evaluate(opts: EvalOptions, out: str | Path, *, policy: Any = None, progress: bool = True) -> dict:
    """Run (or resume) one evaluation into ``out``; returns the results dict written to results.json.

    With ``opts.images`` the images are read from that folder (``irisbench.layouts``) instead of generated;
    the rest (records, summaries, official layouts) is the same."""
    from irisbench.devices import device_record, resolve_device
    from irisbench.provenance import env_info
    from irisbench.records import RecordWriter, atomic_write_json, read_records, write_parquet
    from irisbench.runs import RunDir
    from irisbench.stats import count_check

    device = resolve_device(opts.device)  # before anything is loaded or written: one line if unusable
    if opts.batch_size < 1:
        raise EvalError(f"--batch-size must be >= 1, got {opts.batch_size}")
    if opts.images is not None:
        if policy is not None:
            raise EvalError("images from a folder are scored without a policy")
        plan = _external_plan(opts)
    else:
        plan = _generated_plan(opts, policy, device)
    suite, world, items, prompt_prov, n = plan.suite, plan.world, plan.items, plan.prompt_prov, plan.n
    scorer_entry = _scorer_entry(suite, world)
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
        "scorer": scorer_entry.name,
        **({"scorer_options": opts.scorer_options} if opts.scorer_options else {}),
        "save_images": opts.save_images,
        **({"metrics": {"names": list(opts.metrics.names), "clip_model": opts.metrics.clip_model,
                        "clip_pretrained": opts.metrics.clip_pretrained, "clip_scale": opts.metrics.clip_scale,
                        "fid_reference": opts.metrics.fid_reference}} if metrics is not None else {}),
    }
    from irisbench.distributed import Dist

    ranks = Dist.from_env(device)
    rank, world_size = ranks.rank, ranks.world_size
    changed: list[str] = []
    if rank == 0:
        from irisbench.runs import RUN_MARKER

        if opts.allow_config_change and (Path(out) / RUN_MARKER).is_file():
            from irisbench.run_metrics import check_config_change

            changed = check_config_change(RunDir.open(out).config, config)
        run = RunDir.open_or_create(out, kind="eval", config=config, env={**env_info(), **device_record(device)},
                                    allow_config_change=opts.allow_config_change)
    ranks.barrier()
    if rank != 0:
        run = RunDir.open(out)
    scorer = _make_scorer(scorer_entry, opts.scorer_options or {})
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
        generated = len(records) - len(done)
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
            "counts": {**counts, "resumed": len(done), "generated_now": generated, "processes": world_size,
                       **plan.counts_extra},
            "scores": summarize(suite, records, n_resamples=opts.n_resamples, seed=opts.seed),
            "official": official,
            "timing": {"seconds": round(elapsed, 3),
                       "images_per_s": round(generated / elapsed, 2) if generated and elapsed > 0 else None},
        }
        if metrics is not None and counts["complete"]:
            from irisbench.run_metrics import attach_metrics

            attach_metrics(results, metrics, run.path, records, items, opts.seed,
                           recompute_clip=any(k.startswith("metrics.") for k in changed),
                           command=f"irisbench metrics {run.path} --metrics {','.join(opts.metrics.names)}")
        atomic_write_json(run.path / "results.json", results)
    ranks.barrier()
    return results


def _write_official(root: Path, protocol: str, items: list[dict], records: list[dict], n: int,
                    save_images: bool) -> dict[str, Any]:
    """The suite's official layout of the run's images, and GenEval's results.jsonl (irisbench.layouts)."""
    from irisbench.layouts import write_geneval_results, write_official_layout

    out: dict[str, Any] = {}
    if save_images:
        linked = write_official_layout(root, protocol, items, records, n)
        out["layout"] = {"folder": protocol, "images": linked}
    if protocol == "geneval":
        out["results_jsonl"] = {"file": "results.jsonl", "lines": write_geneval_results(root / "results.jsonl",
                                                                                         records)}
    return out


def merge_shards(root: Path) -> int:
    """Append every per-rank record not yet in ``records.jsonl`` to it, then delete the shard files."""
    from irisbench.records import RecordWriter, read_records

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


def _generate(source, scorer, items, pending, writer, root: Path, opts: EvalOptions, progress: bool,
              resumed: int, metrics: Any = None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from irisbench.layouts import link_or_copy
    from irisbench.progress import progress_bar

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
    from irisbench.stats import geneval_summary
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
