"""What an evaluation scores: its options, its prompts (limited per tag), where its images come from and
what it records.

``generated_plan`` loads the policy (after checking the suite has a scorer for its world) and resolves the
suite's prompts; its images come from ``PolicySource``, each image's seed derived from (base seed,
suite/world/split, the prompt's index in the full prompt set, sample), never from its batch.
``external_plan`` reads a folder in any official layout (``irisbench.evaluation.layouts``: GenEval, T2I-CompBench, or
another eval run), names its prompt set, checks its coverage (missing, extra, misnamed, unreadable images)
and reads its images through ``FolderSource``. ``irisbench.evaluation.evaluate`` runs either plan.

An image source (``ImageSource``: these two, and WISE's in ``irisbench.evaluation.wise_eval``) is what the
evaluation loop (``irisbench.evaluation.evaluate.produce_and_score``) asks for images, and it declares what the
run records about it: its config fields (the sampling settings, or the folder and its coverage check) and its
fields of ``results.json``'s ``counts`` (a folder's coverage check). The plan carries the suite's scorer entry,
looked up once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from irisbench.evaluation.eval_run import RESULTS, EvalError, EvalRun
from irisbench.policies.base import derive_seed
from irisbench.scorers.contract import ImageInput

__all__ = ["EvalError", "EvalOptions", "EvalPlan", "ImageSource", "check_weights", "external_plan", "generated_plan",
           "scorer_entry"]

Key = tuple[int, int]  # (prompt_index, sample_index): a record's key
Items = Sequence[dict] | Mapping[int, dict]  # the prompts, by prompt_index


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
    images: str | None = None  # score this folder (evaluation.layouts) instead of generating: policy "external"
    category: str | None = None  # T2I-CompBench layout: the category of a one-category folder
    allow_missing: bool = False  # score an incomplete folder (missing/extra/unreadable images are counted)
    allow_config_change: bool = False  # resume with changes that leave the images alone (the metrics block)
    device: str | None = None  # where the policy runs (irisbench.core.devices; None: cuda when available, else cpu)


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


def limit_items(items: list[dict], prov: dict[str, Any], opts: EvalOptions) -> tuple[list[dict], list[int] | None]:
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


class ImageSource(Protocol):
    """Where an evaluation's images come from, and what the run records about it."""

    present: Mapping[Key, Path] | None  # the keys a folder has images for; None: every key (a policy draws them)

    def produce(self, batch: Sequence[Key], items: Items) -> list[tuple[ImageInput, dict, Path | None]]:
        """Per key of ``batch``: the image, the record fields the source adds (``seed``...), and the file it was
        read from (None for a drawn image)."""
        ...

    def config_fields(self) -> dict[str, Any]:
        """What the run's config records about the images' source (compared on resume)."""
        ...

    def count_fields(self) -> dict[str, Any]:
        """What the source adds to ``results.json``'s ``counts`` (keys declared in ``eval_run.Counts``)."""
        ...


def sampling_config(opts: Any) -> dict[str, Any]:
    """The ``sampling`` config block of a policy source: the options that change the images."""
    return {"sampling": {"cfg": opts.cfg, "temperature": opts.temperature, "top_k": opts.top_k}}


@dataclass
class EvalPlan:
    """What an evaluation scores: the prompts, where the images come from, and the suite's scorer."""

    suite: Any
    world: str
    items: list[dict]
    prompt_prov: dict[str, Any]
    n: int
    source: ImageSource
    policy_info: dict[str, Any]
    entry: Any  # the suite's scorer for this world (``irisbench.core.registry.SCORERS`` entry), looked up once


class PolicySource:
    """Images drawn by a policy; each image's seed from (base seed, suite/world/split, source prompt, sample)."""

    present = None

    def __init__(self, policy: Any, opts: EvalOptions, seed_key: str, source_index: list[int] | None):
        self.policy, self.opts, self.seed_key, self.source_index = policy, opts, seed_key, source_index

    def produce(self, batch: Sequence[Key], items: Items) -> list[tuple[ImageInput, dict, Path | None]]:
        src = self.source_index
        seeds = [derive_seed(self.opts.seed, self.seed_key, src[i] if src else i, j) for i, j in batch]
        rollout = self.policy.sample([items[i]["prompt"] for i, _ in batch], n=1, seed=seeds, cfg=self.opts.cfg,
                                     temperature=self.opts.temperature, top_k=self.opts.top_k)
        if len(rollout) != len(batch):
            raise EvalError(f"policy returned {len(rollout)} samples for {len(batch)} requests")
        return [(rollout.images[r], {"seed": seeds[r], "plan": rollout.plans[r] if rollout.plans else "",
                                     **rollout.token_summary(r)}, None) for r in range(len(batch))]

    def config_fields(self) -> dict[str, Any]:
        return sampling_config(self.opts)

    def count_fields(self) -> dict[str, Any]:
        return {}


class FolderSource:
    """Images read from a folder (``irisbench.evaluation.layouts``); generation fields carried over from a source
    run. ``info`` describes the folder, ``check`` its coverage (recorded in the config and the counts)."""

    def __init__(self, root: Path, present: dict[Key, Path], carry: dict[Key, dict], info: dict[str, Any],
                 check: dict[str, Any]):
        self.root, self.present, self.carry, self.info, self.check = root, present, carry, info, check

    def config_fields(self) -> dict[str, Any]:
        return {"images": self.info, "image_check": self.check}

    def count_fields(self) -> dict[str, Any]:
        return {"image_check": self.check}

    def produce(self, batch: Sequence[Key], items: Items) -> list[tuple[ImageInput, dict, Path | None]]:
        from irisbench.evaluation.layouts import load_rgb

        empty = {"seed": None, "plan": "", **NO_TOKENS}
        out = []
        for key in batch:
            path = self.present[key]
            fields = {**empty, **self.carry.get(key, {}), "source_image": os.path.relpath(path, self.root)}
            out.append((load_rgb(path), fields, path))
        return out


NO_TOKENS = {"sc_text": None, "entropy_text": None, "sc_image": None, "entropy_image": None,
              "sc_all": None, "entropy_all": None, "plan_len": 0}


def generated_plan(opts: EvalOptions, policy: Any, device: str) -> EvalPlan:
    from irisbench.core.registry import POLICIES
    from irisbench.policies import NEEDS_MODEL, load_policy
    from irisbench.suites import load_suite, resolve_prompts

    suite = load_suite(opts.suite or "geneval")
    entry, known_world = None, None
    if policy is None:
        # check the scorer (and its weights) before loading a (possibly large) model
        registered = POLICIES.get(opts.policy) if opts.policy in POLICIES else None
        if opts.policy in NEEDS_MODEL and not opts.model:
            raise EvalError(f"policy {opts.policy!r} needs --model (a model id or a local folder)")
        if registered is not None and registered.world is not None:
            known_world = registered.world
            entry = scorer_entry(suite, known_world)
            check_weights(entry, opts.scorer_options)
        policy = load_policy(opts.policy, opts.model, device=device)
    world = policy.world
    checked = entry is not None and world == known_world
    if not checked:  # the policy's world was not known before it was loaded
        entry = scorer_entry(suite, world)
    items, prompt_prov = resolve_prompts(suite, world, opts.split, opts.prompts_file)
    items, source_index = limit_items(items, prompt_prov, opts)
    if not checked:
        check_weights(entry, opts.scorer_options)  # before any image is generated
    n = suite.images_per_prompt if opts.images_per_prompt is None else opts.images_per_prompt
    if n < 1:
        raise EvalError(f"images per prompt must be >= 1, got {n}")
    check = getattr(policy, "check_prompts", None)
    if check is not None:
        check([it["prompt"] for it in items])
    seed_key = f"{suite.name}/{world}/{prompt_prov['split']}"
    return EvalPlan(suite, world, items, prompt_prov, n, PolicySource(policy, opts, seed_key, source_index),
                    policy.describe(), entry)


def external_plan(opts: EvalOptions) -> EvalPlan:
    """Read ``opts.images`` in whichever layout it is, check it against the suite, and plan its scoring."""
    from irisbench.evaluation import layouts
    from irisbench.suites import load_suite, prompt_set_sha256, resolve_prompts

    root = Path(opts.images)
    layout = layouts.detect_layout(root)
    run_info: dict[str, Any] = {}
    if layout == "run":
        cfg = EvalRun.open(root).config
        run_info = {"suite": cfg.get("suite"), "world": cfg.get("world"), "n": cfg.get("images_per_prompt")}
    suite = load_suite(opts.suite or run_info.get("suite") or ("compbench" if layout == "compbench" else "geneval"))
    protocol = layouts.LAYOUTS[layout].protocol
    if protocol is not None and suite.protocol != protocol:
        raise EvalError(f"{root}: a {layout} layout, but suite {suite.name!r} follows the {suite.protocol} protocol")
    world = None if layout == "geneval" else (run_info.get("world") or ("open" if opts.prompts_file else "shapes"))

    suite_prov: dict[str, Any] = {}

    def suite_items() -> list[dict]:  # the suite's prompts, limited as asked (T2I-CompBench layout)
        items, p = resolve_prompts(suite, world, opts.split, opts.prompts_file)
        items, _ = limit_items(items, p, opts)
        suite_prov.update(p)
        return items

    ctx = layouts.LayoutContext(suite, world, suite_items, opts.images_per_prompt, opts.category)
    read = layouts.read_layout(root, ctx, layout)
    world = read.info.get("world") or world
    entry = scorer_entry(suite, world)
    check_weights(entry, opts.scorer_options)  # before any image is read
    prov: dict[str, Any] = {"source": "images", "layout": layout, "folder": str(root.resolve()), "world": world}
    if layout == "geneval":
        prov.update(geneval_folder_prompts(suite, world, read.items, opts))
    elif layout == "compbench":
        prov.update({k: v for k, v in suite_prov.items() if k not in ("n_prompts", "sha256", "sha256_source",
                                                                     "folder")},
                    categories=read.info["categories"], source="images", world=world)
        if "folder" in suite_prov:  # the official prompt files' folder (open world), beside the images folder
            prov["prompts_folder"] = suite_prov["folder"]
    else:
        src_prov = read.info.get("source_prompts") or {}
        prov.update(split=read.info.get("split"), source_run=str(root.resolve()),
                    **{k: v for k, v in src_prov.items() if k in ("source", "file", "folder", "seed", "limit")})
        if opts.split and opts.split != read.info.get("split"):
            raise EvalError(f"{root}: the run scored split {read.info.get('split')!r}, not {opts.split!r}")
    prov.setdefault("split", opts.split or "images")
    prov.update(n_prompts=len(read.items), sha256=prompt_set_sha256(read.items))
    if layout != "compbench":  # the layout carries its own prompts: keep the first N of every tag
        limited, chosen = limit_items(read.items, prov, opts)
        if chosen is not None:
            new = {old: k for k, old in enumerate(chosen)}
            read.images = [layouts.LayoutImage(new[im.prompt_index], im.sample_index, im.path)
                           for im in read.images if im.prompt_index in new]
            read.carry = {(new[i], j): c for (i, j), c in read.carry.items() if i in new}
            read.items = limited
    items = read.items
    n = layouts.folder_images_per_prompt(read, opts.images_per_prompt, opts.allow_missing)
    coverage = layouts.check_coverage(read, n, world)
    problems = coverage.problems()
    if coverage.extra:  # never dropped, not even with --allow-missing
        where = {im.path: im for im in read.images}
        first = where[coverage.extra[0]]
        raise EvalError(f"{coverage.extra[0]}: sample index {first.sample_index} is past the {n} images per "
                        f"prompt ({len(coverage.extra)} such image(s)); number each prompt's images 0..{n - 1}, "
                        "or remove the extra ones")
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
    return EvalPlan(suite, world, limited, prov, n, FolderSource(root, present, carry, info, check), info, entry)


def geneval_folder_prompts(suite: Any, world: str, items: list[dict], opts: EvalOptions) -> dict[str, Any]:
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
    known: list[tuple[str, str | None, list[dict]]] = []  # (name, split, prompts) of the known sets
    if src.sha256:
        if out["official_format_sha256"] == src.sha256:
            return {**out, "name": "official", "split": src.default_split}
        try:
            known.append(("official", src.default_split, resolve_prompts(suite, world)[0]))
        except ValueError:
            pass
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
        known.append((f"{suite.name} {world} {split}", split, full))
    for name, split, full in known:
        missing = missing_from(items, full)
        if missing is None:
            continue
        label = f"{len(items)} of the {len(full)} {'official prompts' if name == 'official' else 'prompts of ' + name}"
        shown = ", ".join(f"{k:05d}" for k in missing[:10]) + (", ..." if len(missing) > 10 else "")
        if not opts.allow_missing:
            raise EvalError(f"{opts.images}: {label}; missing: {shown} (a strict subset of a known prompt set): "
                            "add the missing prompt folders, or pass --allow-missing to score the subset "
                            f"(recorded in {RESULTS})")
        return {**out, "name": label, "split": split, "subset_of": name, "n_prompts_missing": len(missing),
                "missing_prompts": missing}
    return {**out, "name": "folder"}


def missing_from(items: list[dict], full: list[dict]) -> list[int] | None:
    """The indices of ``full`` that ``items`` lacks when ``items`` is a strict subset of ``full`` in its order
    (each item matched to the first unmatched equal one), else None."""
    if len(items) >= len(full):
        return None
    matched: list[int] = []
    j = 0
    for item in items:
        while j < len(full) and full[j] != item:
            j += 1
        if j == len(full):
            return None
        matched.append(j)
        j += 1
    taken = set(matched)
    return [k for k in range(len(full)) if k not in taken]


def scorer_entry(suite: Any, world: str) -> Any:
    """The suite's scorer for ``world`` (an ``irisbench.core.registry.SCORERS`` entry); one line if the suite has
    none there or it is not built."""
    from irisbench.core.registry import SCORERS

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


def check_weights(entry: Any, options: dict[str, Any] | None) -> None:
    """The weights check of ``irisbench scorers check`` for the scorer ``entry`` with its ``--scorer-option``s
    (``scorers.weights.require_weights``): missing weights are one line, up front."""
    from irisbench.scorers.weights import require_weights

    require_weights(entry.name, options or {})
