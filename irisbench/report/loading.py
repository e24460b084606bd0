"""Reading eval run folders for a report: ``RunRef(label, path)`` -> ``LoadedRun`` (results + records).

An eval run folder (written by ``irisbench.evaluation.evaluate``) holds ``results.json`` (aggregates with CIs and
expected/actual counts), ``records.jsonl`` (one line per image) and ``images/``. The report shows the
numbers of ``results.json`` as they are, and derives from the records only what results.json cannot give:
the intervals of deltas between runs and the image gallery. To make sure both describe the same images,
the per-tag scores recomputed from the records must equal those of results.json; a stale results.json
(records appended after it was written) is an error, never a silently mixed table.

The per-image value is ``correct`` (bool) for the GenEval protocol and ``score`` (in [0, 1]) for the others
(T2I-CompBench), as ``irisbench.evaluation.evaluate.summarize`` aggregates them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irisbench.core.errors import IrisbenchError
from irisbench.evaluation.eval_run import RECORDS as RECORDS_FILE
from irisbench.evaluation.eval_run import RESULTS as RESULTS_FILE
from irisbench.evaluation.eval_run import EvalRun

_SCORE_TOLERANCE = 1e-9


class ReportError(IrisbenchError, ValueError):
    """Input a report cannot be built from (the message names the file and field)."""


@dataclass(frozen=True)
class RunRef:
    """One row of a report: a display ``label`` and the eval run folder at ``path``.

    Several refs may share a label (one eval folder per suite/split of the same policy or checkpoint).
    """

    label: str
    path: str | Path

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip():
            raise ReportError(f"RunRef label must be a non-empty string, got {self.label!r}")


@dataclass
class LoadedRun:
    """An eval run read from disk. ``records`` is None when ``records.jsonl`` is absent."""

    label: str
    path: Path
    results: dict[str, Any]
    records: list[dict[str, Any]] | None
    value_field: str = "correct"
    notes: list[str] = field(default_factory=list)

    @property
    def suite(self) -> str:
        return str(self.results["suite"])

    @property
    def split(self) -> str:
        return str(self.results.get("split") or "-")

    @property
    def world(self) -> str:
        return str(self.results.get("world") or "-")

    @property
    def group(self) -> tuple[str, str, str]:
        """The report column group this run belongs to: (suite, split, world)."""
        return (self.suite, self.split, self.world)

    @property
    def prompts_sha256(self) -> str | None:
        prompts = self.results.get("prompts")
        return prompts.get("sha256") if isinstance(prompts, dict) else None

    @property
    def policy_name(self) -> str:
        policy = self.results.get("policy")
        return str(policy.get("name", "?")) if isinstance(policy, dict) else str(policy or "?")

    @property
    def counts(self) -> dict[str, Any]:
        return self.results["counts"]

    @property
    def complete(self) -> bool:
        return bool(self.counts.get("complete"))

    @property
    def tags(self) -> list[str]:
        return list(self.results["scores"]["tags"])


def prompt_sort_key(prompt_index: int | str) -> tuple[int, int, str]:
    """Order prompt indices numerically (ints first, then strings), whatever their mix of types."""
    if isinstance(prompt_index, str):
        return (1, 0, prompt_index)
    return (0, int(prompt_index), "")


def _require(obj: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ReportError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ReportError(f"{where}: field {key!r} has the wrong type ({type(value).__name__}: {value!r})")
    return value


def _check_score_entry(entry: Any, where: str) -> None:
    score = _require(entry, "score", where, (int, float))
    if not math.isfinite(score):
        raise ReportError(f"{where}: field 'score' is not finite ({score!r})")
    lo, hi = entry.get("ci_low"), entry.get("ci_high")
    if (lo is None) != (hi is None):
        raise ReportError(f"{where}: 'ci_low' and 'ci_high' must both be numbers or both null")
    if lo is not None and not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo <= hi):
        raise ReportError(f"{where}: bad interval ci_low={lo!r}, ci_high={hi!r}")


def read_results(path: Path) -> dict[str, Any]:
    """``results.json`` of an eval run, with the fields a report needs checked (``ReportError`` if not)."""
    run = EvalRun(path)
    file = run.results_path
    if not file.is_file():
        raise ReportError(f"{path} is not an eval run folder: {RESULTS_FILE} is missing (run `irisbench eval` "
                          f"first, or point the report at the folder that holds {RESULTS_FILE})")
    results = dict(run.read_results(ReportError))  # the schema; below, what a report needs beyond it
    where = str(file)
    _require(results, "suite", where, str)
    scores = _require(results, "scores", where, dict)
    _check_score_entry(_require(scores, "overall", f"{where}: scores", dict), f"{where}: scores.overall")
    tags = _require(scores, "tags", f"{where}: scores", dict)
    if not tags:
        raise ReportError(f"{where}: scores.tags is empty")
    for tag, entry in tags.items():
        _check_score_entry(entry, f"{where}: scores.tags.{tag}")
    counts = _require(results, "counts", where, dict)
    for key in ("expected", "actual"):
        _require(counts, key, f"{where}: counts", int)
    _require(counts, "complete", f"{where}: counts", bool)
    return results


def _value_field(results: dict[str, Any]) -> str:
    return "correct" if results.get("protocol", "geneval") == "geneval" else "score"


def _check_records(records: list[dict], value_field: str, file: Path) -> None:
    for i, r in enumerate(records):
        where = f"{file}: line {i + 1} (prompt_index={r.get('prompt_index')!r}, sample_index={r.get('sample_index')!r})"
        for key in ("tag", "prompt_index", "sample_index", value_field):
            if key not in r:
                raise ReportError(f"{where}: missing field {key!r}")
        v = r[value_field]
        if value_field == "correct":
            if not isinstance(v, bool) and v not in (0, 1):
                raise ReportError(f"{where}: field 'correct' must be a bool, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise ReportError(f"{where}: field {value_field!r} must be a number in [0, 1], got {v!r}")


def _check_consistent(run: LoadedRun) -> None:
    """Per-tag means of the records must equal results.json's scores (else results.json is stale)."""
    assert run.records is not None
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for r in run.records:
        sums[r["tag"]] = sums.get(r["tag"], 0.0) + float(r[run.value_field])
        counts[r["tag"]] = counts.get(r["tag"], 0) + 1
    file = EvalRun(run.path).results_path
    tags = run.results["scores"]["tags"]
    if set(tags) - set(sums):
        raise ReportError(f"{file}: tag(s) {sorted(set(tags) - set(sums))} have no records in "
                          f"{run.path / RECORDS_FILE}; {RESULTS_FILE} and {RECORDS_FILE} disagree (re-run the eval "
                          f"to refresh {RESULTS_FILE})")
    for tag, entry in tags.items():
        mean = sums[tag] / counts[tag]
        if abs(mean - float(entry["score"])) > _SCORE_TOLERANCE:
            raise ReportError(f"{file}: scores.tags.{tag}.score = {entry['score']!r} but the records give {mean!r}; "
                              f"{RESULTS_FILE} is stale (re-run the same eval command to resume and refresh it)")


def load_run(ref: RunRef) -> LoadedRun:
    """Read ``results.json`` and (if present) ``records.jsonl`` of ``ref.path``; check they agree."""
    from irisbench.core.records import read_records

    path = Path(ref.path)
    results = read_results(path)
    value_field = _value_field(results)
    run = LoadedRun(ref.label, path, results, None, value_field)
    records_file = EvalRun(path).records_path
    if records_file.is_file():
        try:
            records = read_records(records_file, key_fields=("prompt_index", "sample_index"))
        except ValueError as e:  # the records reader's messages name the file already
            raise ReportError(str(e) if str(records_file) in str(e) else f"{records_file}: {e}") from None
        _check_records(records, value_field, records_file)
        run.records = records
        _check_consistent(run)
    else:
        run.notes.append(f"{RECORDS_FILE} missing: no delta intervals and no gallery images for this run")
    return run


def load_runs(refs: Sequence[RunRef]) -> list[LoadedRun]:
    """Load every ref; a (label, suite, split, world) pair may appear only once."""
    return ensure_loaded(refs)


def ensure_loaded(items: Sequence[RunRef | LoadedRun]) -> list[LoadedRun]:
    """Refs loaded (already loaded runs kept), in order; a (label, suite/split/world) may appear only once."""
    if not items:
        raise ReportError("a report needs at least one run")
    runs = []
    for item in items:
        if isinstance(item, LoadedRun):
            runs.append(item)
        elif isinstance(item, RunRef):
            runs.append(load_run(item))
        else:
            raise ReportError(f"expected a RunRef(label, path), got {type(item).__name__}: {item!r}")
    seen: dict[tuple[str, tuple[str, str, str]], Path] = {}
    for run in runs:
        key = (run.label, run.group)
        if key in seen:
            raise ReportError(f"label {run.label!r} is given twice for suite {run.suite}/{run.split} "
                              f"({seen[key]} and {run.path}); give each run a distinct label")
        seen[key] = run.path
    return runs
