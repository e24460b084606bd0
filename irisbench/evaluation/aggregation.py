"""The aggregation registry: how a suite's per-image records become the ``scores`` block of ``results.json``.

A suite declares its aggregation in ``metric_list`` (lm-evaluation-harness's ``metric_list``/aggregation
registry is the model): each entry names the per-image record field (``metric``) and an aggregation
registered here by name; ``aggregate`` applies the list, the first entry giving the headline (``overall`` and
``tags``), later entries adding figures beside it. A new aggregation is one registered function; the runner
has no branch per suite.

Registered:

- ``mean_of_tag_means`` (GenEval, T2I-CompBench): per-tag mean over images, overall = unweighted mean of the
  tags, stratified cluster-bootstrap intervals (``irisbench.core.stats.geneval_summary``). Beside a headline
  it adds ``extra[metric]``.
- ``compbench_mean_of_6``: the IRIS-style mean of the six classic T2I-CompBench categories, ``None`` (with the
  missing ones listed) unless all six are present.
- ``wiscore_weighted`` (WISE legacy) and ``wise_verified_weighted`` (WISE_Verified): per-category means with
  bootstrap intervals, overall = the protocol's category weights applied to the category means, and only when
  every one of the 1000 prompt ids has a parsed score (docs/protocols.md §3); the overall interval weights
  the categories' bootstrap replicates the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from irisbench.core.stats import bootstrap_replicates, geneval_summary, percentile_interval
from irisbench.protocols.compbench import MEAN_OF_6, MEAN_OF_6_LABEL
from irisbench.protocols.wise import category_of, legacy_summary, verified_summary, wise_categories


class AggregationFn(Protocol):
    def __call__(self, records: list[dict], metric: str, summary: dict[str, Any], *, n_resamples: int,
                 seed: int) -> dict[str, Any]:
        """The keys this aggregation adds to the ``scores`` block (``summary``: the block so far, empty for
        the headline)."""
        ...


@dataclass(frozen=True)
class Aggregation:
    name: str
    fn: AggregationFn
    headline: bool  # may be a suite's first metric_list entry (gives overall and tags)
    protocol: str | None = None  # the only protocol it applies to; None: any
    description: str = ""


AGGREGATIONS: dict[str, Aggregation] = {}


def register(name: str, *, headline: bool, protocol: str | None = None,
             description: str = "") -> Callable[[AggregationFn], AggregationFn]:
    def add(fn: AggregationFn) -> AggregationFn:
        AGGREGATIONS[name] = Aggregation(name, fn, headline, protocol, description)
        return fn
    return add


@register("mean_of_tag_means", headline=True,
          description="per-tag mean over images; overall: unweighted mean of the tags; cluster-bootstrap CIs")
def mean_of_tag_means(records: list[dict], metric: str, summary: dict[str, Any], *, n_resamples: int,
                      seed: int) -> dict[str, Any]:
    out = geneval_summary(records, n_resamples=n_resamples, seed=seed, value=metric)
    if not summary:  # the headline
        if metric == "score":
            out["overall_label"] = "mean of categories present"
        return out
    return {"extra": {**summary.get("extra", {}), metric: {"overall": out["overall"], "tags": out["tags"]}}}


@register("compbench_mean_of_6", headline=False, protocol="compbench",
          description="IRIS-style mean of the six classic T2I-CompBench categories (null unless all present)")
def compbench_mean_of_6(records: list[dict], metric: str, summary: dict[str, Any], *, n_resamples: int,
                        seed: int) -> dict[str, Any]:
    tags = summary["tags"]
    missing = [c for c in MEAN_OF_6 if c not in tags]
    value = None if missing else float(np.mean([tags[c]["score"] for c in MEAN_OF_6]))
    return {MEAN_OF_6_LABEL: value, "mean_of_6_missing": missing}


def summarize_wise(records: Sequence[dict], protocol: str, *, n_resamples: int = 2000, seed: int = 0,
                   confidence: float = 0.95) -> dict[str, Any]:
    """The WISE protocol's summary (``legacy_summary`` / ``verified_summary``) with bootstrap CIs.

    ``tags[category]``: mean, percentile CI (prompts resampled within the category), counts; ``overall``: the
    weighted overall and its CI (each replicate weights the categories' replicates), both None unless all
    1000 ids have a parsed score.
    """
    cats = wise_categories(protocol)
    summary = legacy_summary(records) if protocol == "legacy" else verified_summary(records)
    value_key = "wiscore" if protocol == "legacy" else "score"
    values: dict[str, list[float]] = {c.name: [] for c in cats}
    for r in records:
        if r.get("ok", True) and r.get(value_key) is not None:
            values[category_of(r["prompt_id"], protocol)].append(float(r[value_key]))
    rng = np.random.default_rng(seed)
    tags: dict[str, Any] = {}
    reps: dict[str, np.ndarray] = {}
    for c in cats:
        entry = summary["per_category"][c.name]
        out = {"score": entry["mean"], "ci_low": None, "ci_high": None, "n_images": entry["n"],
               "n_prompts": entry["n"], "n_expected": entry["n_expected"], "n_failed": entry["n_failed"],
               "weight": c.weight}
        if values[c.name] and n_resamples:
            reps[c.name] = bootstrap_replicates([[v] for v in values[c.name]], "mean", n_resamples, rng)
            out["ci_low"], out["ci_high"] = percentile_interval(reps[c.name], confidence)
        tags[c.name] = out
    overall: dict[str, Any] = {"score": summary["overall"], "ci_low": None, "ci_high": None,
                               "n_images": summary["n_scored"], "note": summary["note"]}
    if summary["overall"] is not None and n_resamples:
        combined = sum(c.weight * reps[c.name] for c in cats)
        overall["ci_low"], overall["ci_high"] = percentile_interval(combined, confidence)
    return {
        "label": summary["label"],
        "value": "WiScore = (0.7 consistency + 0.2 realism + 0.1 aesthetic) / 2" if protocol == "legacy"
        else "binary judge score (0/1)",
        "overall": overall,
        "tags": tags,
        **{k: summary[k] for k in ("n_scored", "n_failed", "failed_ids", "n_missing", "missing_ids")},
        "ci": {"method": "cluster bootstrap over prompts within each category (percentile); overall: the "
                         "weighted sum of the category replicates", "confidence": confidence,
               "n_resamples": n_resamples, "seed": seed},
    }


@register("wiscore_weighted", headline=True, protocol="wise-legacy",
          description="WISE legacy: per-category mean WiScore; overall: the protocol's category weights")
def wiscore_weighted(records: list[dict], metric: str, summary: dict[str, Any], *, n_resamples: int,
                     seed: int) -> dict[str, Any]:
    return summarize_wise(records, "legacy", n_resamples=n_resamples, seed=seed)


@register("wise_verified_weighted", headline=True, protocol="wise-verified",
          description="WISE_Verified: per-category mean binary score; overall: the protocol's category weights")
def wise_verified_weighted(records: list[dict], metric: str, summary: dict[str, Any], *, n_resamples: int,
                           seed: int) -> dict[str, Any]:
    return summarize_wise(records, "verified", n_resamples=n_resamples, seed=seed)


def aggregate(metric_list: Sequence[Any], records: list[dict], *, n_resamples: int, seed: int) -> dict[str, Any]:
    """The ``scores`` block: ``metric_list`` (entries with ``metric`` and ``aggregation``) applied in order.

    Records are taken in (prompt, sample) order, so the bootstrap intervals do not depend on the order the
    records file was written in (several processes, resumed runs). ``out["metric_list"]`` records the list.
    """
    records = sorted(records, key=lambda r: (r["prompt_index"], r["sample_index"]))
    out: dict[str, Any] = {}
    for k, spec in enumerate(metric_list):
        agg = AGGREGATIONS.get(spec.aggregation)
        if agg is None:
            raise KeyError(f"unknown aggregation {spec.aggregation!r} (registered: {', '.join(AGGREGATIONS)})")
        if k == 0 and not agg.headline:
            raise ValueError(f"aggregation {spec.aggregation!r} cannot be a headline (metric_list[0])")
        out.update(agg.fn(records, spec.metric, out, n_resamples=n_resamples, seed=seed))
    out["metric_list"] = [dict(vars(m)) for m in metric_list]
    return out
