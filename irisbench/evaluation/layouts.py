"""Image folder layouts: read images made anywhere, and lay a run's images out as the official tools expect.

Reading (``irisbench eval --images DIR``). One reader per layout turns a folder into the same thing: the
prompt items (index = prompt index) and a list of ``LayoutImage(prompt_index, sample_index, path)``, plus
the files it could not place (misnamed). Everything after that (missing / extra / unreadable counts, image
checks, scoring, summaries) is common, so a new layout is one reader and one entry in ``LAYOUTS``:

- ``geneval`` (docs/protocols.md §1.3): ``DIR/<digits>/metadata.jsonl`` + ``samples/<digits>.png``. The prompt
  items come from the folders (each ``metadata.jsonl`` is one JSON object, validated as a prompt file is);
  folder ``k`` is prompt ``k``, so the folder numbers must run 0..N-1 without a gap.
- ``compbench`` (§2.2): ``DIR/samples/{prompt}_{NNNNNN}.png`` for one category, or ``DIR/<category>/samples/``
  for several (``color_val/`` read as ``color/``). NNNNNN = n·i + k (prompt i of the category, sample k, n
  images per prompt). The prompt items are the suite's; the file-name prompt must equal the item's CompBench
  phrasing (``rule_prompt``: "a circle on the top of a square" in the shapes world) or its prompt.
- ``run``: an irisbench eval run folder (``run.json``): its records name every image and carry its item.

Images per prompt (n) come from the folder (``folder_images_per_prompt``): the count its layout fixes (the
T2I-CompBench numbering, decoded at whichever count makes every name its own prompt's; a run's config), else
the largest number of images a prompt has; ``-n`` must agree, and the error names both numbers.

Departures from the official evaluators, deliberate: they score every PNG they find; here a folder must
hold exactly n images for every prompt (missing, unreadable or misnamed files are counted and named, and
refused unless ``allow_missing``; extra images are always refused, never dropped), and a prompt with no
image at all, duplicate sample indices, a gap in the GenEval folder numbers, or an image of the wrong size
for the world (the shapes world draws 32×32) are errors. Only ``.png`` is read, as the official evaluators
read it; a folder of ``.jpg`` images is refused saying so. Hidden files (names starting with ".") and
GenEval's optional ``grid.png`` are ignored.

Writing (every eval run): ``write_official_layout`` hard-links (or copies, across file systems) the run's
images into ``<run>/geneval/<00000>/samples/<00000>.png`` + ``metadata.jsonl``, or
``<run>/compbench/<category>/samples/{prompt}_{NNNNNN}.png``; ``write_geneval_results`` writes
``<run>/results.jsonl`` with the fields of GenEval's ``evaluate_images.py`` so that its ``summary_scores.py``
reads it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irisbench.core.errors import IrisbenchError
from irisbench.evaluation.eval_run import IMAGES, RECORDS, RUN_MARKER, EvalRun, link_or_copy

GENEVAL_LAYOUT = "<DIR>/<00000>/metadata.jsonl + <DIR>/<00000>/samples/<k>.png (GenEval)"
COMPBENCH_LAYOUT = "<DIR>/samples/{prompt}_{NNNNNN}.png or <DIR>/<category>/samples/... (T2I-CompBench)"
RUN_LAYOUT = f"an irisbench eval run folder ({RUN_MARKER}, {RECORDS}, {IMAGES}/)"
_SAMPLE_RE = re.compile(r"^(\d+)\.png$")
_COMPBENCH_RE = re.compile(r"^(.*)_(\d+)\.png$")
MAX_IMAGES_PER_PROMPT = 100  # the largest count a T2I-CompBench folder's numbering is decoded at


class LayoutError(IrisbenchError, ValueError):
    """A folder that cannot be read as images for the suite (the message names the path and what was expected)."""


@dataclass(frozen=True)
class LayoutImage:
    prompt_index: int
    sample_index: int
    path: Path


@dataclass
class LayoutContext:
    """What a reader may need besides the folder: the suite, its prompt items (when the layout does not carry
    its own), the images per prompt, a category."""

    suite: Any
    world: str | None = None
    items: Callable[[], list[dict]] | None = None  # the suite's prompt items, resolved on demand
    images_per_prompt: int | None = None
    category: str | None = None


@dataclass
class LayoutRead:
    layout: str
    root: Path
    items: list[dict]
    images: list[LayoutImage]
    misnamed: list[Path] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # provenance: category, prompt set, source run ...
    carry: dict[tuple[int, int], dict] = field(default_factory=dict)  # fields kept from a source run's records
    n: int | None = None  # images per prompt fixed by the layout itself (CompBench numbering, a run's config)


def _visible(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not p.name.startswith("."))


def detect_layout(root: Path) -> str:
    """The name of the layout of ``root`` (the first of ``LAYOUTS`` whose ``detect`` accepts it), or a
    ``LayoutError`` naming the first entry of the folder and the layouts expected."""
    if not root.exists():
        raise LayoutError(f"{root}: does not exist (--images needs a folder of images)")
    if not root.is_dir():
        raise LayoutError(f"{root}: not a folder (--images needs a folder of images)")
    entries = _visible(root)
    for name, layout in LAYOUTS.items():
        if layout.detect(root, entries):
            return name
    expected = "; ".join(layout.expected for layout in LAYOUTS.values())
    first = f"{entries[0]}: not part of a known image layout" if entries else f"{root}: empty folder"
    raise LayoutError(f"{first}; expected {expected}")


# ------------------------------------------------------------------------------------------------ GenEval


def read_geneval(root: Path, ctx: LayoutContext) -> LayoutRead:
    from irisbench.protocols.geneval import MetadataError, validate_metadata
    from irisbench.suites import world_classes

    folders: dict[int, Path] = {}
    misnamed: list[Path] = []
    for p in _visible(root):
        if not (p.is_dir() and p.name.isdigit()):
            raise LayoutError(f"{p}: not a prompt folder; expected {GENEVAL_LAYOUT}")
        k = int(p.name)
        if k in folders:
            raise LayoutError(f"{p}: prompt folder {k} appears twice (also {folders[k].name})")
        folders[k] = p
    gap = next((k for k in range(len(folders)) if k not in folders), None)
    if gap is not None:
        raise LayoutError(f"{root}: no prompt folder {gap:05d} (folders must run 00000..{len(folders) - 1:05d}: "
                          f"prompt {gap} has no images)")
    raw: list[dict] = []
    for k in range(len(folders)):
        meta = folders[k] / "metadata.jsonl"
        if not meta.is_file():
            raise LayoutError(f"{meta}: missing; expected {GENEVAL_LAYOUT}")
        try:
            obj = json.loads(meta.read_text(encoding="utf-8"))  # one object, as the official json.load
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LayoutError(f"{meta}: not one JSON object ({e})") from None
        raw.append(obj)
    world = ctx.world or _geneval_world(raw)
    classes = world_classes(world)
    items = []
    for k, obj in enumerate(raw):
        try:
            items.append(validate_metadata(obj, classes=classes, where=str(folders[k] / "metadata.jsonl")))
        except MetadataError as e:
            raise LayoutError(str(e)) from None
    images: list[LayoutImage] = []
    for k in range(len(folders)):
        samples = folders[k] / "samples"
        if not samples.is_dir():
            raise LayoutError(f"{samples}: missing (prompt {k} has no images); expected {GENEVAL_LAYOUT}")
        seen: dict[int, Path] = {}
        for p in _visible(samples):
            m = _SAMPLE_RE.match(p.name)
            if m is None or not p.is_file():
                misnamed.append(p)
                continue
            j = int(m.group(1))
            if j in seen:
                raise LayoutError(f"{p}: duplicate sample index {j} (also {seen[j].name})")
            seen[j] = p
            images.append(LayoutImage(k, j, p))
    return LayoutRead("geneval", root, items, images, misnamed, {"world": world})


def _geneval_world(raw: list[dict]) -> str:
    """open when the metadata names any of the 80 GenEval (COCO) classes, else shapes; validation against
    that world's classes then names the first file with a class outside it."""
    from irisbench.protocols.geneval import COCO_CLASSES

    names = {c.get("class") for obj in raw if isinstance(obj, dict) for key in ("include", "exclude")
             if isinstance(obj.get(key), list) for c in obj[key] if isinstance(c, dict)}
    return "open" if names & set(COCO_CLASSES) else "shapes"


# ------------------------------------------------------------------------------------------ T2I-CompBench


def read_compbench(root: Path, ctx: LayoutContext) -> LayoutRead:
    if ctx.items is None:
        raise LayoutError(f"{root}: the T2I-CompBench layout needs the suite's prompts")
    all_items = ctx.items()
    categories = list(dict.fromkeys(it["tag"] for it in all_items))
    if (root / "samples").is_dir():
        category = ctx.category or _category_from_name(root, categories, ctx.world) or _category_from_prompts(
            root / "samples", all_items, categories)
        folders = {category: root / "samples"}
    else:
        folders = {}
        for p in _visible(root):
            if not (p.is_dir() and (p / "samples").is_dir()):
                raise LayoutError(f"{p}: not a category folder; expected {COMPBENCH_LAYOUT}")
            name = p.name if p.name in categories else p.name.removesuffix("_val")  # color_val/ as color/
            if name not in categories:
                _not_scored(p, name, categories, ctx.world)
                raise LayoutError(f"{p}: {p.name!r} is not a category of this suite ({', '.join(categories)})")
            if name in folders:
                raise LayoutError(f"{p}: category {name!r} appears twice ({folders[name].parent.name} and {p.name})")
            folders[name] = p / "samples"
        if ctx.category is not None:
            if ctx.category not in folders:
                raise LayoutError(f"{root}: no folder for category {ctx.category!r}")
            folders = {ctx.category: folders[ctx.category]}
    for c in folders:
        if c not in categories:
            raise LayoutError(f"--category {c!r} is not a category of this suite ({', '.join(categories)})")
    items: list[dict] = []
    images: list[LayoutImage] = []
    misnamed: list[Path] = []
    strides: dict[str, int] = {}
    n_given = ctx.images_per_prompt
    for category, folder in ((c, folders[c]) for c in categories if c in folders):
        cat_items = [it for it in all_items if it["tag"] == category]
        files = []
        for p in _visible(folder):
            m = _COMPBENCH_RE.match(p.name)
            if m is None or not p.is_file():
                misnamed.append(p)
            else:
                files.append((p, m.group(1), int(m.group(2))))
        n = _compbench_n(folder, files, cat_items, n_given, ctx.suite.images_per_prompt)
        strides[category] = n
        offset = len(items)
        seen: dict[tuple[int, int], Path] = {}
        for p, _, index in files:
            i, k = divmod(index, n)
            if (i, k) in seen:
                raise LayoutError(f"{p}: duplicate sample index (prompt {i}, sample {k}; also {seen[(i, k)].name})")
            seen[(i, k)] = p
            images.append(LayoutImage(offset + i, k, p))
        items.extend(cat_items)
    if len(set(strides.values())) > 1:
        raise LayoutError(f"{root}: the categories' file names are numbered at different images per prompt ("
                          + ", ".join(f"{c}: {k}" for c, k in strides.items()) + "); score them one at a time")
    return LayoutRead("compbench", root, items, images, misnamed,
                      {"categories": [c for c in categories if c in folders], "world": ctx.world},
                      n=next(iter(strides.values()), None))


def _category_from_name(root: Path, categories: Sequence[str], world: str | None = None) -> str | None:
    for name in (root.name, root.name.removesuffix("_val")):
        if name in categories:
            return name
    _not_scored(root, root.name.removesuffix("_val"), categories, world)
    return None


def _not_scored(path: Path, name: str, categories: Sequence[str], world: str | None) -> None:
    """Raise for a folder named after a T2I-CompBench category that the suite does not score."""
    from irisbench.protocols.compbench import CATEGORIES

    if name in CATEGORIES and name not in categories:
        raise LayoutError(f"{path}: {name!r} is a T2I-CompBench category, not scored by this suite in the "
                          f"{world or 'shapes'} world (its categories: {', '.join(categories)}); move the folder "
                          "out, or score one category with --category")


def file_prompt(item: dict) -> str:
    """The prompt in a T2I-CompBench image name: the CompBench phrasing the rules score (``rule_prompt``,
    "a circle on the top of a square" in the shapes world), else the prompt."""
    return item.get("rule_prompt") or item["prompt"]


def _names(item: dict) -> tuple[str, str]:  # a file name may carry either (folders written before rule_prompt)
    return (file_prompt(item), item["prompt"])


def _category_from_prompts(samples: Path, items: list[dict], categories: Sequence[str]) -> str:
    entries = _visible(samples)
    prefixes = {m.group(1) for p in entries if (m := _COMPBENCH_RE.match(p.name))}
    if not prefixes:
        not_png(samples, entries)
        raise LayoutError(f"{samples}: no image named {{prompt}}_{{NNNNNN}}.png; expected {COMPBENCH_LAYOUT}")
    fits = [c for c in categories if prefixes <= {n for it in items if it["tag"] == c for n in _names(it)}]
    if not fits:  # --category cannot help: name a prompt that no category has
        known = {n for it in items for n in _names(it)}
        stray = sorted(prefixes - known)
        first = repr(stray[0]) if stray else "the prompts of two categories"
        raise LayoutError(f"{samples}: no category of the suite has all the file names' prompts ({first} is "
                          f"in none of {', '.join(categories)}); the suite's prompts differ from the folder's "
                          "(--prompts DIR for the official files, the same --limit as the run that wrote it)")
    if len(fits) > 1:
        raise LayoutError(f"{samples}: cannot tell the category from the prompts (several fit: {', '.join(fits)}); "
                          "pass --category")
    return fits[0]


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def not_png(where: Path, files: Sequence[Path], what: str = "the images") -> None:
    """Raise the real cause when ``files`` hold images in another format than PNG and no PNG."""
    others = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if others and not any(p.suffix.lower() == ".png" for p in files):
        suffixes = "/".join(sorted({p.suffix.lower() for p in others}))
        raise LayoutError(f"{where}: {what} are {suffixes} ({len(others)} files, first: {others[0]}); only "
                          ".png is read, as the official evaluators read it (GenEval: samples/<digits>.png, "
                          "T2I-CompBench: samples/{prompt}_{NNNNNN}.png): convert them to PNG")


def _decodes(files: list[tuple[Path, str, int]], items: list[dict], n: int) -> bool:
    return all(index // n < len(items) and prefix in _names(items[index // n]) for _, prefix, index in files)


def _compbench_n(folder: Path, files: list[tuple[Path, str, int]], items: list[dict], given: int | None,
                 default: int) -> int:
    """Images per prompt of a T2I-CompBench folder: the count under which every file name's index decodes to
    its own prompt (NNNNNN = n·i + k). Tried in order: the suite's, T2I-CompBench's 10, IRIS's 4, 1, then 2
    to ``MAX_IMAGES_PER_PROMPT``. With ``given`` (``-n``), that count must decode; when another one does, the
    error names both."""
    found = next((n for n in dict.fromkeys((default, 10, 4, 1, *range(2, MAX_IMAGES_PER_PROMPT + 1)))
                  if _decodes(files, items, n)), None)
    if given is not None:
        if _decodes(files, items, given):
            return given
        if found is not None:
            raise LayoutError(f"{folder}: the file names are numbered at {found} images per prompt "
                              f"(index = {found}·prompt + sample), -n {given} reads them as another prompt's: "
                              f"drop -n or pass -n {found}")
    n = given or found or default
    for p, prefix, index in files:  # the first name that does not decode, for the message
        i, k = divmod(index, n)
        if i >= len(items) or prefix not in _names(items[i]):
            want = f"prompt {i} is {file_prompt(items[i])!r}" if i < len(items) else \
                f"the category has {len(items)} prompts"
            raise LayoutError(f"{p}: index {index} at {n} images per prompt is prompt {i}, sample {k}, but {want} "
                              f"(no count from 1 to {MAX_IMAGES_PER_PROMPT} decodes every name: the suite's "
                              "prompts (--prompts, --limit) differ from the folder's, or pass --images-per-prompt)")
    return n


# -------------------------------------------------------------------------------------------- run folder

GENERATION_FIELDS = ("seed", "plan", "sc_text", "sc_image", "sc_all", "entropy_text", "entropy_image",
                     "entropy_all", "plan_len")


def read_run(root: Path, ctx: LayoutContext) -> LayoutRead:
    run = EvalRun.open(root)
    if run.kind != "eval":
        raise LayoutError(f"{root}: a {run.kind!r} run; --images reads eval run folders")
    config = run.config
    records_path = run.records_path
    if not records_path.is_file():
        raise LayoutError(f"{records_path}: missing (the run has no images yet)")
    records = run.read_records()
    n_prompts = int(config.get("prompts", {}).get("n_prompts", 0))
    items: dict[int, dict] = {}
    images: list[LayoutImage] = []
    carry: dict[tuple[int, int], dict] = {}
    for r in records:
        i, j = int(r["prompt_index"]), int(r["sample_index"])
        item = json.loads(r["metadata"])
        if items.setdefault(i, item) != item:
            raise LayoutError(f"{records_path}: prompt {i} has two different items in its records")
        if not r.get("image"):
            raise LayoutError(f"{records_path}: prompt {i}, sample {j} has no image (the run was made with "
                              "--no-save-images); nothing to score")
        images.append(LayoutImage(i, j, run.image_path(r["image"])))
        carry[(i, j)] = {k: r[k] for k in GENERATION_FIELDS if k in r}
    gap = next((i for i in range(max(n_prompts, len(items))) if i not in items), None)
    if gap is not None:
        raise LayoutError(f"{root}: prompt {gap} has no images in {RECORDS}")
    ordered = [items[i] for i in range(len(items))]
    from irisbench.suites import prompt_set_sha256

    want = config.get("prompts", {}).get("sha256")
    if want and prompt_set_sha256(ordered) != want:
        raise LayoutError(f"{root}: the records' prompt items do not match the run's prompt set (sha256 {want})")
    info = {"world": config.get("world"), "suite": config.get("suite"), "split": config.get("split"),
            "source_run": str(root), "source_prompts": config.get("prompts"),
            "images_per_prompt": config.get("images_per_prompt"), "source_policy": config.get("policy")}
    n = config.get("images_per_prompt")
    return LayoutRead("run", root, ordered, images, [], info, carry, n=int(n) if n else None)


@dataclass(frozen=True)
class Layout:
    """A folder layout: how to recognise it, how to read it, which protocol it belongs to (None: any)."""

    detect: Callable[[Path, list[Path]], bool]  # (folder, its visible entries) -> is it this layout
    read: Callable[[Path, LayoutContext], LayoutRead]
    expected: str  # how the layout looks, for error messages
    protocol: str | None = None


# Tried in this order; a new layout is one entry (and its reader).
LAYOUTS: dict[str, Layout] = {
    "run": Layout(lambda root, entries: EvalRun(root).is_run(), read_run, RUN_LAYOUT),
    "geneval": Layout(lambda root, entries: any(p.is_dir() and p.name.isdigit() for p in entries), read_geneval,
                      GENEVAL_LAYOUT, "geneval"),
    "compbench": Layout(lambda root, entries: (root / "samples").is_dir()
                        or any(p.is_dir() and (p / "samples").is_dir() for p in entries),
                        read_compbench, COMPBENCH_LAYOUT, "compbench"),
}


def read_layout(root: Path, ctx: LayoutContext, layout: str | None = None) -> LayoutRead:
    name = layout or detect_layout(root)
    if name not in LAYOUTS:
        raise LayoutError(f"unknown layout {name!r} (known: {', '.join(LAYOUTS)})")
    return LAYOUTS[name].read(root, ctx)


# ------------------------------------------------------------------------------------------ coverage check


def _per(n: int) -> str:
    return f"{n} image{'s' if n != 1 else ''} per prompt"


def folder_images_per_prompt(read: LayoutRead, given: int | None, allow_missing: bool) -> int:
    """Images per prompt for scoring ``read``: the folder's own count unless ``given`` (``-n``).

    The folder's count is the one its layout fixes (a T2I-CompBench folder's numbering, a source run's
    config), else the largest number of images any prompt has; without ``allow_missing``, prompts holding
    fewer are named. ``given`` must agree: a layout-fixed count that differs, or a prompt holding more images
    than ``given`` (they would go unscored: never allowed), is one line naming both numbers; a folder whose
    prompts all hold fewer is refused unless ``allow_missing``.
    """
    from collections import Counter

    per = Counter(im.prompt_index for im in read.images)
    counts = [per.get(i, 0) for i in range(len(read.items))]
    most = max(counts, default=0)
    if given is not None and given < 1:
        raise LayoutError(f"-n must be >= 1, got {given}")
    if read.n is not None:
        if given is not None and given != read.n:
            raise LayoutError(f"{read.root}: the folder holds {_per(read.n)} (its {read.layout} layout says so), "
                              f"-n {given} asks for {given}: drop -n or pass -n {read.n}")
        return read.n
    if given is not None:
        over = [i for i, c in enumerate(counts) if c > given]
        if over:
            extra = sum(counts[i] - given for i in over)
            raise LayoutError(f"{read.root}: prompt {over[0]} has {counts[over[0]]} images, -n {given} would leave "
                              f"{extra} image(s) of {len(over)} prompt(s) unscored: drop -n (the folder's "
                              f"{_per(most)} is used) or remove the extra images")
        if 0 < most < given and not allow_missing:
            raise LayoutError(f"{read.root}: the folder holds {_per(most)} (at most), -n {given} asks for {given}: "
                              f"drop -n or pass -n {most} (the folder's count), or --allow-missing to score it "
                              "as an incomplete folder")
        return given
    differ = [i for i, c in enumerate(counts) if 0 < c != most]
    if differ and not allow_missing:
        dist = Counter(c for c in counts if c)
        parts = ", ".join(f"{k} prompt{'s have' if k != 1 else ' has'} {c}" for c, k in dist.most_common())
        named = ", ".join(f"prompt {i} has {counts[i]}" for i in differ[:5]) + (", ..." if len(differ) > 5 else "")
        raise LayoutError(f"{read.root}: images per prompt differ ({parts}: {named}); fix the folder, or pass "
                          f"--allow-missing to score it at {_per(most)} with the others counted missing")
    return max(most, 1)



@dataclass
class Coverage:
    """Which expected (prompt, sample) images are there, and what else the folder holds."""

    present: dict[tuple[int, int], Path]
    missing: list[tuple[int, int]]
    extra: list[Path]
    misnamed: list[Path]
    unreadable: list[tuple[Path, str]]

    def problems(self) -> dict[str, int]:
        return {"missing": len(self.missing), "extra": len(self.extra), "misnamed": len(self.misnamed),
                "unreadable": len(self.unreadable)}

    def summary(self, items: list[dict]) -> str:
        parts = []
        if self.missing:
            i, j = self.missing[0]
            parts.append(f"{len(self.missing)} missing (first: prompt {i} {items[i]['prompt']!r}, sample {j})")
        if self.extra:
            parts.append(f"{len(self.extra)} extra (first: {self.extra[0]})")
        if self.misnamed:
            parts.append(f"{len(self.misnamed)} misnamed (first: {self.misnamed[0]})")
        if self.unreadable:
            p, why = self.unreadable[0]
            parts.append(f"{len(self.unreadable)} unreadable (first: {p}: {why})")
        return "; ".join(parts)


def check_coverage(read: LayoutRead, n: int, world: str) -> Coverage:
    """Place the layout's images on the expected grid (prompts x n samples) and check each image's file.

    Raises ``LayoutError`` for a prompt with no image at all or an image of the wrong size for the world;
    missing, extra, misnamed and unreadable images are returned for the caller to refuse or count.
    """
    present: dict[tuple[int, int], Path] = {}
    extra: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    size = _world_size(world)
    for im in read.images:
        if im.prompt_index >= len(read.items) or im.sample_index >= n:
            extra.append(im.path)
            continue
        why = image_problem(im.path, size)
        if why is not None:
            unreadable.append((im.path, why))
            continue
        present[(im.prompt_index, im.sample_index)] = im.path
    with_images = {i for i, _ in present} | {im.prompt_index for im in read.images}
    empty = next((i for i in range(len(read.items)) if i not in with_images), None)
    if empty is not None:
        if not read.images:
            not_png(read.root, read.misnamed)
        where, hint = read.root, ""
        if read.layout == "geneval":
            where = read.root / f"{empty:05d}" / "samples"
            mine = [p for p in read.misnamed if p.parent.name == "samples" and p.parent.parent.name.isdigit()
                    and int(p.parent.parent.name) == empty]
            not_png(where, mine, f"prompt {empty}'s images")
            hint = f" (expected <digits>.png; it holds {len(mine)} misnamed file(s), first: {mine[0].name})" \
                if mine else " (its samples/ holds no <digits>.png)"
        elif read.layout == "compbench":
            hint = " (a folder of a limited run needs the same --limit)"
        raise LayoutError(f"{where}: prompt {empty} ({read.items[empty]['prompt']!r}) has no image at all{hint}")
    missing = [(i, j) for i in range(len(read.items)) for j in range(n) if (i, j) not in present]
    return Coverage(present, missing, extra, list(read.misnamed), unreadable)


def _world_size(world: str) -> tuple[int, int] | None:
    if world == "shapes":
        from irisbench.world.vocab import CANVAS

        return (CANVAS, CANVAS)
    return None  # open world: models draw at their own sizes


def image_problem(path: Path, size: tuple[int, int] | None) -> str | None:
    """Why ``path`` is not a usable PNG (None if it is); a wrong size for the world raises ``LayoutError``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            fmt, dims = im.format, im.size
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return f"not a readable image ({type(e).__name__}: {e})"
    if fmt != "PNG":
        return f"a {fmt} file, not a PNG"
    if size is not None and dims != size:
        raise LayoutError(f"{path}: image is {dims[0]}x{dims[1]}, the shapes world draws {size[0]}x{size[1]}")
    return None


def load_rgb(path: Path):  # -> np.ndarray (H, W, 3) uint8
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ writing


def write_official_layout(run: Path, protocol: str, items: list[dict], records: list[dict], n: int) -> int:
    """Link every recorded image into the suite's official layout inside the run folder; returns the count."""
    done = 0
    if protocol == "geneval":
        for i in sorted({r["prompt_index"] for r in records}):
            meta = run / "geneval" / f"{i:05d}" / "metadata.jsonl"
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_text(json.dumps(items[i]) + "\n", encoding="utf-8")
    within: dict[int, int] = {}
    counts: dict[str, int] = {}
    for i, item in enumerate(items):
        within[i] = counts.get(item["tag"], 0)
        counts[item["tag"]] = within[i] + 1
    for r in records:
        if not r.get("image"):
            continue
        i, j = r["prompt_index"], r["sample_index"]
        if protocol == "geneval":
            rel = f"geneval/{i:05d}/samples/{j:05d}.png"
        else:
            item = items[i]
            rel = f"compbench/{item['tag']}/samples/{file_prompt(item)}_{n * within[i] + j:06d}.png"
        link_or_copy(run / r["image"], run / rel)
        done += 1
    return done


def geneval_results_lines(records: list[dict], *, threshold: float = 0.3, counting_threshold: float = 0.9,
                          max_objects: int = 16) -> list[dict]:
    """GenEval ``evaluate_images.py`` output rows for the records (docs/protocols.md §1.4), in (prompt, sample)
    order: filename (the image in the run's ``geneval/`` layout), tag, prompt, correct, reason, metadata (JSON
    string) and details (JSON string {class: [[x1, y1, x2, y2, score], ...]} of the detections the judge keeps)."""
    from irisbench.protocols.geneval import Detection, kept_by_class

    rows = []
    for r in sorted(records, key=lambda r: (r["prompt_index"], r["sample_index"])):
        dets = [Detection(d["label"], tuple(d["box"]), float(d["score"]), d.get("color"))
                for d in json.loads(r.get("detections") or "[]")]
        cut = counting_threshold if r["tag"] == "counting" else threshold
        kept = kept_by_class(dets, cut, max_objects)
        rows.append({
            "filename": f"geneval/{r['prompt_index']:05d}/samples/{r['sample_index']:05d}.png",
            "tag": r["tag"],
            "prompt": r["prompt"],
            "correct": bool(r["correct"]),
            "reason": r.get("reason") or "",
            "metadata": r["metadata"],
            "details": json.dumps({label: [[*map(float, d.box), float(d.score)] for d in ds]
                                   for label, ds in kept.items()}),
        })
    return rows


def write_geneval_results(path: Path, records: list[dict]) -> int:
    """Write ``results.jsonl`` in the official evaluator's format (one JSON object per image)."""
    from irisbench.core.records import atomic_write_text

    rows = geneval_results_lines(records)
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    return len(rows)
