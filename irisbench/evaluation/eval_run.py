"""The owner of an evaluation run folder: its file names, records, ``results.json``, images and resume rules.

Every evaluation (``irisbench eval`` for GenEval, T2I-CompBench and WISE, the trainer's in-training
evaluations) writes one run folder, and everything that reads one (``metrics``, ``analyze``, ``report``,
``experiment``'s summary, the ``--images`` reader of ``irisbench.evaluation.layouts``) finds its files through
``EvalRun``. No other module spells a run-folder file name (``tests/test_eval_run.py`` checks it).

Run folder::

    run.json, config.yaml, env.json     identity and provenance (``irisbench.core.runs.RunDir``)
    records.jsonl                       one JSON line per image, appended and fsynced as produced
    records.rank-<r>.jsonl              a process's records in a multi-process run, merged at the end
    records.parquet                     the same records, written once complete
    images/<prompt:05d>/<sample:02d>.png    GenEval and T2I-CompBench runs
    images/<prompt_id>.png              WISE runs (WISE's official layout)
    results.json                        the aggregates: ``Results`` below, versioned (``SCHEMA_VERSION``)
    results.jsonl                       GenEval runs: the official evaluator's per-image output

``results.json`` is declared once, as the ``Results`` TypedDict; a new key is one line there (and the
writer that fills it: the runner, an image source's ``count_fields`` (``irisbench.evaluation.eval_plan``), or, for a
key the results repeat from the run's config, the config and ``CONFIG_IN_RESULTS``).
Writing refuses a top-level or ``counts`` key that is not declared (``CLOSED_SCHEMAS``), so the declaration is
the one place the document's keys are listed; ``scores`` stays open (an aggregation adds its own figures). It is
validated on read (``read_results``): a missing or wrong-typed field is one line naming the file and the dotted
field; a file written by a newer irisbench (a higher ``schema_version``) is refused. Files written before the
version existed have no ``schema_version`` and read as version 1.

The resume rule: re-running into a folder skips every image already recorded. A resumed evaluation may change
its config only where ``check_config_change`` allows: the ``metrics`` block (CLIP score, FID, KID; the images
and per-image scores are untouched), or for WISE the judge's URL, model and retry settings
(``irisbench.evaluation.wise_eval.JUDGE_CHANGEABLE``). ``RunDir.open_or_create`` alone would accept any change
(the trainer needs that); an eval run's records would then be a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from irisbench.core.errors import IrisbenchError, read_json
from irisbench.core.records import (
    RecordWriter,
    atomic_write_json,
    atomic_write_text,
    read_records,
    to_jsonable,
    write_parquet,
)
from irisbench.core.runs import CONFIG_FILE, RUN_MARKER, RunDir, _flatten, _normalise_config

RECORDS = "records.jsonl"
RECORDS_PARQUET = "records.parquet"
RESULTS = "results.json"
IMAGES = "images"
GENEVAL_RESULTS = "results.jsonl"  # GenEval's official per-image output format
SHARD_PREFIX = "records.rank-"
KEY_FIELDS = ("prompt_index", "sample_index")
SCHEMA_VERSION = 1
IMAGE_NEUTRAL_KEYS = ("metrics",)  # top-level config keys an eval run may change on resume
RUN_FILES = (RUN_MARKER, CONFIG_FILE, RECORDS, RECORDS_PARQUET, RESULTS, GENEVAL_RESULTS)  # the owner's file names

__all__ = ["CONFIG_FILE", "RUN_MARKER", "EvalError", "EvalRun", "Results", "ResultsSchemaError"]


class EvalError(IrisbenchError, ValueError):
    """An evaluation that cannot run as asked (the message says why and what to do)."""


class ResultsSchemaError(IrisbenchError, ValueError):
    """A ``results.json`` that does not follow the declared schema (the message names the file and field)."""


# ------------------------------------------------------------------------------------------ the schema


class Score(TypedDict, total=False):
    """One score with its interval: a tag's or the overall."""

    score: float | None
    ci_low: float | None
    ci_high: float | None
    n_images: int


class _ScoresRequired(TypedDict):
    overall: Score
    tags: dict[str, Score]


class Scores(_ScoresRequired, total=False):
    """The aggregates, as the suite's ``metric_list`` declares them (``irisbench.evaluation.aggregation``)."""

    metric_list: list[dict[str, Any]]
    label: str
    overall_label: str
    extra: dict[str, Any]
    ci: dict[str, Any]


class _CountsRequired(TypedDict):
    expected: int
    actual: int
    complete: bool


class Counts(_CountsRequired, total=False):
    """Expected against actual images, and what this call did (resumed, generated, judged...)."""

    resumed: int
    generated_now: int
    scored_now: int
    processes: int
    image_check: dict[str, Any]
    judged: int
    failed: int
    missing_images: int
    rejudged: int
    judged_now: int


class _ResultsRequired(TypedDict):
    suite: str
    scores: Scores
    counts: Counts


class Results(_ResultsRequired, total=False):
    """``results.json``: the one declaration of its keys (a new key is a new line here)."""

    schema_version: int
    protocol: str
    label: str  # WISE: the protocol's name ("WISE (GPT-4o legacy)" or "WISE_Verified")
    world: str | None
    split: str | None
    policy: dict[str, Any]
    scorer: dict[str, Any]
    judge: dict[str, Any]  # WISE: the judge's description (never its API key)
    judged_by: dict[str, int]  # WISE: images per judge (model @ URL)
    config_changes: list[str]
    prompts: dict[str, Any]
    limit: Any
    images_per_prompt: int | None
    seed: int
    official: dict[str, Any]
    timing: dict[str, Any]
    metrics: dict[str, Any]
    metrics_error: str
    failures: dict[str, Any]


# The keys results.json repeats from the run's config, as the config has them (``results_from_config``): every
# writer takes them from there, so such a key is added to the config and named here, once.
CONFIG_IN_RESULTS = ("suite", "label", "world", "split", "policy", "prompts", "images_per_prompt", "seed")


def results_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``CONFIG_IN_RESULTS`` keys the config has, for a results document."""
    return {k: config[k] for k in CONFIG_IN_RESULTS if k in config}


# The schemas whose every key is declared: writing an undeclared key into them is refused (``write_results``)
CLOSED_SCHEMAS: tuple[type, ...] = (Results, Counts)


def _is_typeddict(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, dict) and hasattr(hint, "__required_keys__")


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if _is_typeddict(hint) or origin is dict or hint is dict:
        return isinstance(value, dict)
    if origin is list or hint is list:
        return isinstance(value, list)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if _is_typeddict(hint):
        return "object"
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    return {dict: "object", list: "list", str: "string", int: "integer", float: "number", bool: "bool",
            type(None): "null"}.get(typing.get_origin(hint) or hint, str(hint))


def check_schema(doc: Any, schema: type, where: str, prefix: str = "", *, required: bool = True,
                 closed: bool = False) -> None:
    """``doc`` against a TypedDict: required keys present (unless ``required=False``), every declared key of the
    declared type (nested TypedDicts checked in turn); undeclared keys are let through, except, with ``closed``,
    in the ``CLOSED_SCHEMAS``. One ``ResultsSchemaError`` line names the file and the dotted field."""
    if not isinstance(doc, dict):
        raise ResultsSchemaError(f"{where}: {prefix.rstrip('.') or 'the document'} must be a JSON object, got "
                                 f"{type(doc).__name__}")
    hints = typing.get_type_hints(schema)
    for key in sorted(schema.__required_keys__) if required else ():
        if key not in doc:
            raise ResultsSchemaError(f"{where}: missing field {prefix + key!r}")
    undeclared = sorted(k for k in doc if k not in hints) if closed and schema in CLOSED_SCHEMAS else []
    if undeclared:
        raise ResultsSchemaError(f"{where}: field {prefix + undeclared[0]!r} is not declared ({RESULTS}'s keys are "
                                 f"declared in irisbench.evaluation.eval_run.{schema.__name__}: add it there)")
    for key, hint in hints.items():
        if key not in doc:
            continue
        value = doc[key]
        if not _type_ok(value, hint):
            raise ResultsSchemaError(f"{where}: field {prefix + key!r} must be {_type_name(hint)}, got "
                                     f"{type(value).__name__} {value!r:.60}")
        if _is_typeddict(hint):
            check_schema(value, hint, where, f"{prefix}{key}.", required=required, closed=closed)
        elif typing.get_origin(hint) is dict and _is_typeddict(typing.get_args(hint)[1]):
            for k, v in value.items():
                check_schema(v, typing.get_args(hint)[1], where, f"{prefix}{key}.{k}.", required=required,
                             closed=closed)


def validate_results(doc: Any, where: str | Path, *, partial: bool = False, closed: bool = False) -> Results:
    """``doc`` as ``Results`` if it follows the schema of this version (or an older one), else one line.

    ``partial``: only ``scores.overall`` is required (the readers of score curves accept hand-made files that
    hold just the scores); every field present must still have its declared type. ``closed``: keys that are
    not declared are refused too (what ``write_results`` asks)."""
    where = str(where)
    if isinstance(doc, dict) and "schema_version" in doc:
        version = doc["schema_version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ResultsSchemaError(f"{where}: field 'schema_version' must be a positive integer, got {version!r}")
        if version > SCHEMA_VERSION:
            raise ResultsSchemaError(f"{where}: schema_version {version} was written by a newer irisbench (this one "
                                     f"reads up to {SCHEMA_VERSION}); upgrade irisbench to read it")
    check_schema(doc, Results, where, required=not partial, closed=closed)
    if partial:
        scores = doc.get("scores")
        if not isinstance(scores, dict) or "overall" not in scores:
            field = "scores.overall" if isinstance(scores, dict) else "scores"
            raise ResultsSchemaError(f"{where}: missing field {field!r}")
    return typing.cast(Results, doc)


# ------------------------------------------------------------------------------------ config changes


def changed_config_keys(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys that differ between the saved config and ``new`` (compared as they read back from YAML)."""
    a, b = _flatten(dict(saved)), _flatten(_normalise_config(new))
    missing = object()
    return sorted(k for k in set(a) | set(b) if a.get(k, missing) != b.get(k, missing))


def check_config_change(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The changed keys, if every change leaves the generated images and their scores alone; else an error.

    Allowed: the ``metrics`` block (names, CLIP model and scale, FID reference). Refused: everything else,
    with the reason.
    """
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


# ------------------------------------------------------------------------------------------------ images


def save_png(image: np.ndarray, path: Path) -> None:
    """Write a PNG atomically (tmp file + rename), so a crash never leaves a truncated image."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, path)


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes a hard link to ``src`` (a copy where hard links are impossible); an existing ``dst`` is
    replaced unless it already is ``src``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if os.path.samefile(src, dst):
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def image_relpath(prompt_index: int, sample_index: int) -> str:
    """Where a run keeps image ``sample_index`` of prompt ``prompt_index`` (GenEval, T2I-CompBench)."""
    return f"{IMAGES}/{prompt_index:05d}/{sample_index:02d}.png"


def wise_image_relpath(prompt_id: int) -> str:
    """Where a run keeps the image of a WISE prompt: the official layout, ``images/{prompt_id}.png``."""
    return f"{IMAGES}/{prompt_id}.png"


# --------------------------------------------------------------------------------------------- the run


class _InRun:
    """A file of the run folder as a read-only attribute: ``run.records_path`` is ``run.path / RECORDS``."""

    def __init__(self, name: str) -> None:
        self.name = name

    @typing.overload
    def __get__(self, run: None, owner: type | None = None) -> _InRun: ...
    @typing.overload
    def __get__(self, run: EvalRun, owner: type | None = None) -> Path: ...
    def __get__(self, run: EvalRun | None, owner: type | None = None) -> Path | _InRun:
        return self if run is None else run.path / self.name


class EvalRun:
    """One evaluation run folder. ``EvalRun(path)`` names it; ``open_or_create`` makes or resumes it."""

    def __init__(self, path: str | Path, run_dir: RunDir | None = None):
        self.path = Path(path)
        self._dir = run_dir

    # -- identity ---------------------------------------------------------------------------------------
    @classmethod
    def open_or_create(cls, path: str | Path, config: Mapping[str, Any], env: Mapping[str, Any], *,
                       allow_config_change: bool = False,
                       check_change: Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]] = check_config_change,
                       ) -> tuple[EvalRun, list[str]]:
        """Create the run, or resume it with the same config; with ``allow_config_change`` a changed config
        passes ``check_change(saved, new)`` (which raises for a refused change). Returns the run and the
        changed keys."""
        changed: list[str] = []
        if allow_config_change and cls(path).is_run():
            changed = check_change(RunDir.open(path).config, config)
        run_dir = RunDir.open_or_create(path, kind="eval", config=config, env=env,
                                        allow_config_change=allow_config_change)
        return cls(run_dir.path, run_dir), changed

    @classmethod
    def open(cls, path: str | Path) -> EvalRun:
        """An existing run folder (``NotARunError`` if ``path`` holds no run)."""
        run_dir = RunDir.open(path)
        return cls(run_dir.path, run_dir)

    @property
    def dir(self) -> RunDir:
        if self._dir is None:
            self._dir = RunDir.open(self.path)
        return self._dir

    @property
    def config(self) -> dict:
        return self.dir.config

    @property
    def kind(self) -> str:
        return self.dir.kind

    def lock(self) -> contextlib.AbstractContextManager[Any]:
        return self.dir.lock()

    # -- what the folder holds --------------------------------------------------------------------------
    marker_path = _InRun(RUN_MARKER)
    config_path = _InRun(CONFIG_FILE)
    records_path = _InRun(RECORDS)
    parquet_path = _InRun(RECORDS_PARQUET)
    results_path = _InRun(RESULTS)
    geneval_results_path = _InRun(GENEVAL_RESULTS)

    def shard_path(self, rank: int) -> Path:
        return self.path / f"{SHARD_PREFIX}{rank}.jsonl"

    def is_run(self) -> bool:
        """Whether the folder holds a run marker (any kind of run)."""
        return self.marker_path.is_file()

    def has_records(self) -> bool:
        return self.records_path.is_file() or self.parquet_path.is_file()

    def has_results(self) -> bool:
        return self.results_path.is_file()

    def image_path(self, relpath: str) -> Path:
        """A record's ``image`` (relative to the run, or absolute for WISE folders scored in place)."""
        return self.path / relpath

    # -- records ----------------------------------------------------------------------------------------
    def read_records(self, *, sort: bool = False) -> list[dict]:
        """The crash-safe records (a torn last line is ignored); ``[]`` before the first one is written."""
        if not self.records_path.exists():
            return []
        records = read_records(self.records_path)
        if sort:
            records.sort(key=lambda r: (r["prompt_index"], r["sample_index"]))
        return records

    def done_keys(self) -> set[tuple[int, int]]:
        """The (prompt_index, sample_index) pairs already recorded: what a resume skips."""
        return {(r["prompt_index"], r["sample_index"]) for r in self.read_records()}

    def writer(self, rank: int = 0, world_size: int = 1) -> RecordWriter:
        """The records writer of one process (its own shard file when several processes run)."""
        path = self.records_path if world_size == 1 else self.shard_path(rank)
        return RecordWriter(path, key_fields=KEY_FIELDS)

    def merge_shards(self) -> int:
        """Append every per-rank record not yet in the records file to it, then delete the shard files."""
        shards = sorted(self.path.glob(f"{SHARD_PREFIX}*.jsonl"))
        if not shards:
            return 0
        added = 0
        with RecordWriter(self.records_path, key_fields=KEY_FIELDS) as writer:
            for shard in shards:
                new = [r for r in read_records(shard) if not writer.done((r["prompt_index"], r["sample_index"]))]
                new.sort(key=lambda r: (r["prompt_index"], r["sample_index"]))
                if new:
                    writer.append(new)
                    added += len(new)
        for shard in shards:
            shard.unlink()
        return added

    def rewrite_records(self, records: Sequence[dict], complete: bool) -> None:
        """Replace the records atomically with ``records`` (same order), and the Parquet copy when complete."""
        lines = [json.dumps(to_jsonable(r, f"record {i}"), allow_nan=False, ensure_ascii=False) + "\n"
                 for i, r in enumerate(records)]
        atomic_write_text(self.records_path, "".join(lines))
        if complete:
            self.write_parquet()

    def write_parquet(self) -> None:
        write_parquet(self.records_path, self.parquet_path)

    # -- results ----------------------------------------------------------------------------------------
    def read_results(self, error: type[IrisbenchError] = ResultsSchemaError, *, partial: bool = False) -> Results:
        """``results.json``, validated against ``Results`` (``partial``: see ``validate_results``); a missing,
        unreadable or invalid file raises ``error`` (one line naming the file and field)."""
        doc = read_json(self.results_path, error, "results file")
        try:
            return validate_results(doc, self.results_path, partial=partial)
        except ResultsSchemaError as e:
            if error is ResultsSchemaError:
                raise
            raise error(str(e)) from None

    def write_results(self, results: Mapping[str, Any]) -> Results:
        """Write ``results.json`` atomically, stamped with ``SCHEMA_VERSION`` and checked against the schema,
        every key declared."""
        doc = validate_results({"schema_version": SCHEMA_VERSION, **results}, self.results_path, closed=True)
        atomic_write_json(self.results_path, doc)
        return doc

    # -- images -----------------------------------------------------------------------------------------
    def save_image(self, image: np.ndarray | Path, relpath: str) -> None:
        """An image into the run: pixels as a PNG written atomically, a file as a hard link (or copy)."""
        if isinstance(image, Path):
            link_or_copy(image, self.path / relpath)
        else:
            save_png(image, self.path / relpath)

    def __repr__(self) -> str:
        return f"EvalRun({str(self.path)!r})"


def eval_folders(root: str | Path, pattern: str = "*") -> Iterator[Path]:
    """The folders under ``root`` matching ``pattern`` (a glob relative to it) that hold a ``results.json``."""
    for folder in sorted(Path(root).glob(pattern)):
        if EvalRun(folder).has_results():
            yield folder
