"""Differences between a run and the base run, with cluster-bootstrap confidence intervals.

A delta is ``score(run) - score(base)`` for the overall score and each tag, with the point estimate taken
from the two ``results.json`` files (so the table's delta is exactly the difference of the table's scores).
Its interval comes from the per-image records, in the style of ``irisbench.core.stats.geneval_summary``: a
stratified cluster bootstrap that resamples PROMPTS within every tag (percentile method), the overall
replicate being the unweighted mean of the tag replicates.

- **Paired** when both runs were evaluated on the same prompt set: the same prompts sha256 in results.json
  and the same prompt indices (with the same tags) in the records. Then each replicate draws ONE set of
  prompts and evaluates both runs on it, so the prompt-difficulty variance shared by the runs cancels out.
- **Unpaired** otherwise (different prompt sets, or a run missing some prompts): each run is resampled
  independently and the replicate delta is the difference of the two replicates.

Each delta says which mode gave it. A missing ``records.jsonl`` leaves the delta without an interval.
No counterpart in the paper or official code (neither reports intervals).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irisbench.core.errors import UsageError
from irisbench.core.stats import cluster_draws, cluster_key, percentile_interval, ratio_of, ratio_replicates
from irisbench.evaluation.eval_run import RECORDS, RESULTS
from irisbench.report.loading import LoadedRun, prompt_sort_key

PAIRED = "paired"
UNPAIRED = "unpaired"
NO_CI = "no interval"


@dataclass(frozen=True)
class Delta:
    """``run - base`` on one metric ("overall" or a tag), with its interval and how it was obtained."""

    metric: str
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    mode: str  # PAIRED, UNPAIRED or NO_CI
    note: str = ""


Clusters = dict[str, dict[int | str, tuple[float, int]]]  # tag -> prompt text -> (sum of values, n images)


def prompt_clusters(run: LoadedRun) -> Clusters:
    """Per tag, per prompt text (``irisbench.core.stats.cluster_key``): the sum of the per-image values and the
    number of images."""
    if run.records is None:
        raise UsageError(f"{run.path}: no records")
    out: Clusters = {}
    for r in run.records:
        by_prompt = out.setdefault(r["tag"], {})
        key = cluster_key(r)
        s, n = by_prompt.get(key, (0.0, 0))
        by_prompt[key] = (s + float(r[run.value_field]), n + 1)
    return out


def pairing(base: LoadedRun, run: LoadedRun) -> tuple[bool, str]:
    """Whether the two runs can be compared prompt by prompt, and why (or why not)."""
    if base.records is None or run.records is None:
        missing = base if base.records is None else run
        return False, f"{RECORDS} missing in {missing.path}"
    sha_a, sha_b = base.prompts_sha256, run.prompts_sha256
    if sha_a is None or sha_b is None:
        return False, f"prompt set sha256 missing from {RESULTS}"
    if sha_a != sha_b:
        return False, "different prompt sets (sha256 differ)"
    a = {p: t for t, ps in prompt_clusters(base).items() for p in ps}
    b = {p: t for t, ps in prompt_clusters(run).items() for p in ps}
    if a != b:
        return False, "same prompt file but different prompts present (an incomplete run?)"
    return True, "same prompts: paired bootstrap over prompts"


def _arrays(clusters: dict, prompts: list) -> tuple[np.ndarray, np.ndarray]:
    sums = np.array([clusters[p][0] for p in prompts], dtype=np.float64)
    counts = np.array([clusters[p][1] for p in prompts], dtype=np.float64)
    return sums, counts


def _tag_replicates(ca: dict, cb: dict, paired: bool, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of ``mean(run) - mean(base)`` for one tag."""
    if paired:
        prompts = sorted(ca, key=prompt_sort_key)
        sa, na = _arrays(ca, prompts)
        sb, nb = _arrays(cb, prompts)
        # paired: one draw of prompts serves both runs
        return np.concatenate([ratio_of(sb, nb, idx) - ratio_of(sa, na, idx)
                               for idx in cluster_draws(len(prompts), n_resamples, rng)])
    pa, pb = sorted(ca, key=prompt_sort_key), sorted(cb, key=prompt_sort_key)
    sa, na = _arrays(ca, pa)
    sb, nb = _arrays(cb, pb)
    reps_a = ratio_replicates(sa, na, n_resamples, rng)
    return ratio_replicates(sb, nb, n_resamples, rng) - reps_a


def delta_cis(base: LoadedRun, run: LoadedRun, *, n_resamples: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> dict[str, Delta]:
    """Deltas ``run - base`` for "overall" and every tag the two runs share (base's tag order).

    The overall delta needs both runs to have the same tags (else it is None, with a note). Tags are
    resampled in base's order from one generator seeded with ``seed``: the result is deterministic.
    """
    if n_resamples < 1:
        raise UsageError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise UsageError(f"confidence must be in (0, 1), got {confidence}")
    if base.group != run.group:
        raise UsageError(f"cannot compare {run.label!r} ({'/'.join(run.group)}) with base {base.label!r} "
                         f"({'/'.join(base.group)}): different suite, split or world")
    tags_a, tags_b = base.results["scores"]["tags"], run.results["scores"]["tags"]
    common = [t for t in tags_a if t in tags_b]
    same_tags = set(tags_a) == set(tags_b)
    paired, why = pairing(base, run)
    mode = PAIRED if paired else UNPAIRED
    have_records = base.records is not None and run.records is not None
    if not have_records:
        mode = NO_CI

    reps: dict[str, np.ndarray] = {}
    if have_records:
        rng = np.random.default_rng(seed)
        ca, cb = prompt_clusters(base), prompt_clusters(run)
        for t in common:
            reps[t] = _tag_replicates(ca[t], cb[t], paired, n_resamples, rng)

    out: dict[str, Delta] = {}
    if same_tags:
        d = float(run.results["scores"]["overall"]["score"]) - float(base.results["scores"]["overall"]["score"])
        lo = hi = None
        if have_records:
            lo, hi = percentile_interval(np.mean([reps[t] for t in common], axis=0), confidence)
        out["overall"] = Delta("overall", d, lo, hi, mode, why)
    else:
        out["overall"] = Delta("overall", None, None, None, NO_CI,
                               f"not comparable: tags differ ({sorted(set(tags_a) ^ set(tags_b))})")
    for t in common:
        d = float(tags_b[t]["score"]) - float(tags_a[t]["score"])
        lo, hi = percentile_interval(reps[t], confidence) if have_records else (None, None)
        out[t] = Delta(t, d, lo, hi, mode, why)
    return out
