"""Declarative evaluation suites: which prompts, which protocol, which scorer, how many images.

A suite is a YAML file in the top-level ``suites/`` folder (``geneval.yaml``, ...; a wheel carries them
as ``irisbench/_suites``, an editable install or a checkout reads them in place). It names a protocol and, per *world*
(``shapes`` for the embedded shapes world, ``open`` for real open-vocabulary models), where the prompts
come from and which scorer perceives the images. ``--suite geneval`` therefore follows the policy: a
shapes-world policy gets the GenEval protocol over the shapes vocabulary, an open-vocabulary policy the
official 553 prompts. The resolved prompt set (source, count, sha256 of its canonical JSONL) goes into
the run's provenance.

A suite declares how its per-image records are aggregated in ``metric_list`` (lm-evaluation-harness's
idea): each entry names the per-image ``metric`` (``correct`` for GenEval, ``score`` for CompBench), the
``aggregation`` (``mean_of_tag_means``: per-tag mean over images, overall = unweighted mean of the tags,
with stratified cluster-bootstrap intervals; ``compbench_mean_of_6``: the IRIS-style mean of the six
classic categories, when all are present) and ``higher_is_better``. The first entry is the suite's
headline score; ``irisbench.evaluation.evaluate.summarize`` computes exactly what the list says.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from irisbench.core.errors import IrisbenchError, did_you_mean
from irisbench.core.registry import SCORERS, unknown_name_message
from irisbench.core.specs import read_spec, spec_names

WORLDS = ("shapes", "open")
_SPEC_KEYS = {"name", "protocol", "description", "images_per_prompt", "prompts", "scorer", "metric_list"}
_METRIC_KEYS = {"metric", "aggregation", "higher_is_better"}
RECORD_METRICS = ("correct", "score")  # per-image record fields a suite may aggregate
AGGREGATIONS = ("mean_of_tag_means", "compbench_mean_of_6")
_PROMPT_KEYS = {"generator", "seed", "sha256", "splits", "default_split", "file"}
GENERATORS = ("shapes-geneval", "geneval-official", "shapes-compbench", "compbench-official")
PROTOCOLS = ("geneval", "compbench")
# The T2I-CompBench categories the open world reads from --prompts DIR (numeracy when its file is there):
# 3d_spatial is left out, its rule needs a depth model that irisbench.scorers.compbench_scorer does not have.
OPEN_COMPBENCH_CATEGORIES = ("color", "shape", "texture", "spatial", "non_spatial", "complex", "numeracy")


class SuiteError(IrisbenchError, ValueError):
    """A suite file or name that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class PromptSource:
    generator: str | None
    seed: int
    splits: tuple[str, ...]
    default_split: str
    sha256: str | None = None
    file: str | None = None


@dataclass(frozen=True)
class MetricSpec:
    """One ``metric_list`` entry: the per-image record field, how it is aggregated, and its direction."""

    metric: str
    aggregation: str = "mean_of_tag_means"
    higher_is_better: bool = True


DEFAULT_METRIC_LIST: dict[str, tuple[MetricSpec, ...]] = {
    "geneval": (MetricSpec("correct"),),
    "compbench": (MetricSpec("score"), MetricSpec("score", "compbench_mean_of_6")),
}


@dataclass(frozen=True)
class Suite:
    name: str
    protocol: str
    description: str
    images_per_prompt: int
    prompts: dict[str, PromptSource]
    scorer: dict[str, str]
    metric_list: tuple[MetricSpec, ...] = ()
    path: str = ""

    def source(self, world: str) -> PromptSource:
        if world not in self.prompts:
            raise SuiteError(f"suite {self.name!r} has no prompts for the {world!r} world "
                             f"(it has: {', '.join(self.prompts)})")
        return self.prompts[world]


def suites_folder() -> Any:
    """The folder of the shipped suite specs: ``suites/`` beside the package in a checkout or editable
    install, else the copy a wheel installs as ``irisbench/_suites``."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "suites").is_dir():
        return checkout / "suites"
    return resources.files("irisbench") / "_suites"


def suite_names() -> list[str]:
    return spec_names(suites_folder())


def load_suite(name_or_path: str | Path) -> Suite:
    """A suite by registered name or from a YAML file path."""
    raw, where = read_spec(name_or_path, suites_folder(), "suite", SuiteError)
    return parse_suite(raw, where)


def parse_suite(raw: object, where: str) -> Suite:
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a suite file must hold a mapping, got {type(raw).__name__}")
    if "metrics" in raw:
        raise SuiteError(f"{where}: field 'metrics' is replaced by 'metric_list' (entries with metric, "
                         f"aggregation, higher_is_better), which the summary reads")
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise SuiteError(f"{where}: unknown field(s) {sorted(unknown)}; valid: {sorted(_SPEC_KEYS)}")
    for key in ("name", "protocol", "prompts", "scorer"):
        if key not in raw:
            raise SuiteError(f"{where}: missing field {key!r}")
    if raw["protocol"] not in PROTOCOLS:
        raise SuiteError(f"{where}: field 'protocol': unknown protocol {raw['protocol']!r} "
                         f"(known: {', '.join(PROTOCOLS)})")
    ipp = raw.get("images_per_prompt", 4)
    if not isinstance(ipp, int) or isinstance(ipp, bool) or ipp < 1:
        raise SuiteError(f"{where}: field 'images_per_prompt' must be a positive integer, got {ipp!r}")
    prompts: dict[str, PromptSource] = {}
    for world, src in (raw["prompts"] or {}).items():
        w = f"{where}: prompts.{world}"
        if world not in WORLDS:
            raise SuiteError(f"{w}: unknown world (known: {', '.join(WORLDS)})")
        if not isinstance(src, dict) or set(src) - _PROMPT_KEYS:
            raise SuiteError(f"{w}: expected a mapping with keys among {sorted(_PROMPT_KEYS)}")
        gen = src.get("generator")
        if gen is None and "file" not in src:
            raise SuiteError(f"{w}: needs 'generator' or 'file'")
        if gen is not None and gen not in GENERATORS:
            raise SuiteError(f"{w}.generator: unknown generator {gen!r} (known: {', '.join(GENERATORS)})")
        splits = tuple(src.get("splits", ["test"]))
        default = src.get("default_split", splits[-1])
        if default not in splits:
            raise SuiteError(f"{w}.default_split: {default!r} is not one of the splits {list(splits)}")
        prompts[world] = PromptSource(gen, int(src.get("seed", 0)), splits, default,
                                      src.get("sha256"), src.get("file"))
    scorer = dict(raw["scorer"] or {})
    for world, name in scorer.items():
        if name not in SCORERS:
            raise SuiteError(f"{where}: scorer.{world}: " + unknown_name_message("scorer", name, SCORERS.names()))
    metric_list = _parse_metric_list(raw.get("metric_list"), str(raw["protocol"]), where)
    return Suite(str(raw["name"]), str(raw["protocol"]), str(raw.get("description", "")), ipp, prompts,
                 scorer, metric_list, where)


def _parse_metric_list(raw: Any, protocol: str, where: str) -> tuple[MetricSpec, ...]:
    if raw is None:
        return DEFAULT_METRIC_LIST[protocol]
    if not isinstance(raw, list) or not raw:
        raise SuiteError(f"{where}: field 'metric_list' must be a non-empty list of mappings")
    out = []
    for i, entry in enumerate(raw):
        w = f"{where}: metric_list[{i}]"
        if not isinstance(entry, dict) or "metric" not in entry or set(entry) - _METRIC_KEYS:
            raise SuiteError(f"{w}: expected a mapping with 'metric' and keys among {sorted(_METRIC_KEYS)}")
        spec = MetricSpec(entry["metric"], entry.get("aggregation", "mean_of_tag_means"),
                          entry.get("higher_is_better", True))
        if spec.metric not in RECORD_METRICS:
            raise SuiteError(f"{w}.metric: unknown per-image metric {spec.metric!r} "
                             f"(known: {', '.join(RECORD_METRICS)})")
        if spec.aggregation not in AGGREGATIONS:
            raise SuiteError(f"{w}.aggregation: unknown aggregation {spec.aggregation!r}"
                             f"{did_you_mean(str(spec.aggregation), AGGREGATIONS)} (known: {', '.join(AGGREGATIONS)})")
        if not isinstance(spec.higher_is_better, bool):
            raise SuiteError(f"{w}.higher_is_better: must be true or false, got {spec.higher_is_better!r}")
        if spec.aggregation == "compbench_mean_of_6" and protocol != "compbench":
            raise SuiteError(f"{w}: compbench_mean_of_6 applies to the compbench protocol only")
        out.append(spec)
    if out[0].aggregation != "mean_of_tag_means":
        raise SuiteError(f"{where}: metric_list[0] is the headline score and must use mean_of_tag_means")
    return tuple(out)


def canonical_jsonl(items: list[dict]) -> str:
    return "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items)


def prompt_set_sha256(items: list[dict]) -> str:
    return hashlib.sha256(canonical_jsonl(items).encode("utf-8")).hexdigest()


def world_classes(world: str) -> tuple[str, ...]:
    if world == "shapes":
        from irisbench.world.vocab import SHAPES

        return SHAPES
    from irisbench.protocols.geneval_prompts import COCO_CLASSES

    return tuple(COCO_CLASSES)


def resolve_prompts(suite: Suite, world: str, split: str | None = None, prompts_file: str | Path | None = None,
                    *, training: bool = False) -> tuple[list[dict], dict[str, Any]]:
    """The suite's prompt metadata for a world and split, and its provenance record.

    ``prompts_file`` (an official-format metadata JSONL) replaces the suite's own prompts. Only training
    (``training=True``) may ask for the shapes world's ``train`` split; evaluation never sees it.
    """
    from irisbench.protocols.geneval import load_metadata

    if suite.protocol == "compbench":
        items, prov = _compbench_prompts(suite, world, split, prompts_file, training)
    elif prompts_file is not None:
        items = load_metadata(prompts_file, classes=world_classes(world))
        prov = {"source": "file", "file": str(prompts_file), "split": split or "file"}
    else:
        src = suite.source(world)
        split = _check_split(suite, world, src, split, training)
        if src.generator == "shapes-geneval":
            from irisbench.world.prompts import build_splits, seen_split

            items = seen_split(seed=src.seed) if split == "seen" else build_splits(seed=src.seed)[split]
        elif src.generator == "geneval-official":
            from irisbench.protocols.geneval_prompts import generate_official_metadata

            items = generate_official_metadata(seed=src.seed)
        else:
            items = load_metadata(src.file, classes=world_classes(world))
        prov = {"source": src.generator or src.file, "seed": src.seed, "split": split}
        if src.sha256:
            actual = official_format_sha256(items)
            if actual != src.sha256:
                raise SuiteError(f"suite {suite.name!r}: regenerated prompts have sha256 {actual}, "
                                 f"expected {src.sha256}")
            prov["official_sha256"] = actual
    prov["world"] = world
    prov["n_prompts"] = len(items)
    prov["sha256"] = prompt_set_sha256(items)
    return items, prov


def _check_split(suite: Suite, world: str, src: PromptSource, split: str | None, training: bool) -> str:
    split = split or src.default_split
    train_ok = training and split == "train" and src.generator in ("shapes-geneval", "shapes-compbench")
    if split not in src.splits and not train_ok:
        raise SuiteError(f"suite {suite.name!r} ({world} world) has no split {split!r}; "
                         f"splits: {', '.join(src.splits)}")
    return split


def _compbench_prompts(suite: Suite, world: str, split: str | None, prompts_dir: str | Path | None,
                       training: bool) -> tuple[list[dict], dict[str, Any]]:
    src = suite.source(world)
    split = _check_split(suite, world, src, split, training)
    if src.generator == "shapes-compbench":
        if prompts_dir is not None:
            raise SuiteError("the shapes-world CompBench suite builds its own prompts; --prompts is for the open world")
        from irisbench.world.compbench_items import compbench_items
        from irisbench.world.prompts import build_splits

        items = compbench_items(build_splits(seed=src.seed)[split])
        return items, {"source": src.generator, "seed": src.seed, "split": split}
    if prompts_dir is None or not Path(prompts_dir).is_dir():
        raise SuiteError("T2I-CompBench's prompt files are not shipped: pass --prompts DIR, the folder holding "
                         "color_val.txt, shape_val.txt, ... (T2I-CompBench's examples/dataset)"
                         + (f"; {prompts_dir} is not a folder" if prompts_dir is not None else ""))
    from irisbench.protocols import compbench as cb

    items = []
    spatial_set, action_set = cb.load_complex_subsets(prompts_dir)
    for category in OPEN_COMPBENCH_CATEGORIES:
        path = Path(prompts_dir) / cb.category_file(category)
        if category not in cb.MEAN_OF_6 and not path.is_file():
            continue  # a T2I-CompBench folder from before the ++ categories
        for prompt in cb.load_prompt_file(path):
            item = {"tag": category, "prompt": prompt, "rule_prompt": prompt}
            if category == "complex":  # which 3-in-1 formula applies (T2I-CompBench's subset files)
                key = cb.normalise_complex_prompt(prompt)
                item["complex_kind"] = "spatial" if key in spatial_set else "action" if key in action_set else "other"
            items.append(item)
    return items, {"source": src.generator, "folder": str(prompts_dir), "split": split}


def official_format_sha256(items: list[dict]) -> str:
    """sha256 of the items written exactly as the official evaluation_metadata.jsonl is."""
    import tempfile

    from irisbench.protocols.geneval_prompts import write_metadata_jsonl

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "evaluation_metadata.jsonl"
        write_metadata_jsonl(items, path)
        return hashlib.sha256(path.read_bytes()).hexdigest()
