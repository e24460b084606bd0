"""Statistics on per-image records: cluster-bootstrap confidence intervals and the GenEval summary.

Images of one prompt are not independent (same prompt, same difficulty), so intervals resample PROMPTS
(clusters) with replacement and keep each prompt's images together — a cluster bootstrap. A cluster is a
distinct prompt *text* (``cluster_key``): a split that repeats a text over several entries (the shapes world's
val and test cycle through their texts) has as many clusters as texts, so an interval speaks of the
population of prompts, not of repeated draws of a few. The GenEval
summary follows the official ``summary_scores.py`` (docs/protocols.md §1.5): a tag's score is the mean of
``correct`` over all its images, and the overall score is the UNWEIGHTED mean of the tag scores (not a
per-image mean). Its intervals come from a stratified cluster bootstrap: each replicate resamples prompts
within every tag (tags keep their prompt counts), computes each tag mean, and the mean of the tag means.

Departures from the official code: the official script prints no intervals at all; and it identifies a
prompt by its metadata string, here by ``prompt_index``. Intervals use the percentile method (the same as
``scipy.stats.bootstrap(method="percentile")``; scipy cannot resample clusters, so the resampling is our
own, vectorised with numpy). No torch import.

This module is the one home of the cluster bootstrap: ``cluster_draws`` (the resampled prompt indices, in
bounded chunks), ``ratio_replicates`` (sum/count statistics over them) and ``percentile_interval``; the
analysis (``irisbench.analysis.record_frames.resampled_weights``) and the report's deltas
(``irisbench.report.deltas``) draw their replicates through them.

Across a handful of training seeds (too few to bootstrap), ``mean_t_interval`` gives the mean of the per-seed
values with a Student-t interval (n - 1 degrees of freedom, scipy), and ``welch_interval`` the difference of two
such means (two methods trained with independent seeds: nothing pairs seed s of one with seed s of the other)
with a Welch t interval (Welch-Satterthwaite degrees of freedom; scipy's ``ttest_ind(equal_var=False)``).
``stratified_se`` is the analytic standard error of a GenEval-style overall score over its prompts (the shared
base's own sampling error), and ``mean_t_interval_plus`` widens the across-seed interval of mean deltas by it
(Welch-Satterthwaite df capped at n - 1, so it is never narrower than the Student-t one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from irisbench.core.errors import UsageError

Statistic = str | Callable[[np.ndarray], float]
CHUNK_ELEMENTS = 1 << 22  # bound each (replicates x width) block to ~32 MB at a time


def prompt_key(text: str) -> str:
    """A prompt text as the project compares texts: lower case, runs of whitespace made one space."""
    return " ".join(str(text).lower().split())


def cluster_key(record: Mapping[str, Any]) -> Any:
    """The bootstrap cluster of a record: its prompt text (case and runs of whitespace normalised) when it
    has one, else its ``prompt_index``."""
    text = record.get("prompt")
    if isinstance(text, str) and text.strip():
        return prompt_key(text)
    prompt = record["prompt_index"]
    return int(prompt) if isinstance(prompt, np.integer) else prompt


def _cluster_arrays(values_by_cluster: Any, where: str = "values_by_cluster") -> list[np.ndarray]:
    if isinstance(values_by_cluster, Mapping):
        values_by_cluster = values_by_cluster.values()
    clusters = list(values_by_cluster)
    if not clusters:
        raise UsageError(f"{where}: no clusters to resample")
    out = []
    for i, c in enumerate(clusters):
        a = np.asarray(c, dtype=np.float64).reshape(-1)
        if a.size == 0:
            raise UsageError(f"{where}: cluster {i} has no values")
        if not np.all(np.isfinite(a)):
            raise UsageError(f"{where}: cluster {i} has a non-finite value")
        out.append(a)
    return out


def _check_ci_args(n_resamples: int, confidence: float) -> None:
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise UsageError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise UsageError(f"confidence must be in (0, 1), got {confidence!r}")


def percentile_interval(replicates: np.ndarray, confidence: float, *, finite_only: bool = False) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates. ``finite_only``: drop non-finite replicates first
    (NaN, NaN when none is left)."""
    reps = np.asarray(replicates, dtype=np.float64)
    if finite_only:
        reps = reps[np.isfinite(reps)]
        if reps.size == 0:
            return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(reps, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def cluster_draws(n_clusters: int, n_resamples: int, rng: np.random.Generator,
                  width: int | None = None) -> Iterator[np.ndarray]:
    """The cluster bootstrap's draws: ``(chunk, n_clusters)`` arrays of cluster indices drawn with
    replacement, ``n_resamples`` rows in all. Chunks keep ``chunk * width`` (default ``n_clusters``)
    under ``CHUNK_ELEMENTS``; the draws do not depend on the chunking."""
    step = max(1, CHUNK_ELEMENTS // max(width or n_clusters, 1))
    for start in range(0, n_resamples, step):
        yield rng.integers(0, n_clusters, size=(min(step, n_resamples - start), n_clusters))


def ratio_of(sums: np.ndarray, counts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per row of ``idx``: ``sum(sums[idx]) / sum(counts[idx])`` (a mean over the drawn clusters' images)."""
    return sums[idx].sum(axis=1) / counts[idx].sum(axis=1)


def ratio_replicates(sums: np.ndarray, counts: np.ndarray, n_resamples: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of ``sum(sums) / sum(counts)`` under the cluster bootstrap over the clusters."""
    return np.concatenate([ratio_of(sums, counts, idx) for idx in cluster_draws(sums.shape[0], n_resamples, rng)])


def bootstrap_replicates(values_by_cluster: Any, statistic: Statistic = "mean", n_resamples: int = 2000,
                         seed: int | np.random.Generator = 0) -> np.ndarray:
    """The bootstrap distribution behind ``bootstrap_ci`` (array of ``n_resamples`` statistic values)."""
    clusters = _cluster_arrays(values_by_cluster)
    _check_ci_args(n_resamples, 0.5)
    rng = np.random.default_rng(seed)
    if statistic == "mean":
        sums = np.array([c.sum() for c in clusters])
        counts = np.array([c.size for c in clusters], dtype=np.float64)
        return ratio_replicates(sums, counts, n_resamples, rng)
    if statistic == "cluster_mean":
        means = np.array([c.mean() for c in clusters])
        return ratio_replicates(means, np.ones_like(means), n_resamples, rng)
    if callable(statistic):
        n = len(clusters)
        return np.array([float(statistic(np.concatenate([clusters[j] for j in rng.integers(0, n, size=n)])))
                         for _ in range(n_resamples)])
    raise UsageError(f"statistic must be 'mean', 'cluster_mean' or a callable, got {statistic!r}")


def bootstrap_ci(values_by_cluster: Any, statistic: Statistic = "mean", n_resamples: int = 2000,
                 confidence: float = 0.95, seed: int | np.random.Generator = 0) -> tuple[float, float]:
    """Percentile confidence interval of a statistic under a cluster bootstrap.

    ``values_by_cluster``: per-prompt arrays of per-image values (a sequence, or a mapping prompt ->
    values). Each replicate draws as many prompts as there are, with replacement, keeping each prompt's
    images together. ``statistic``: ``"mean"`` (mean over all images of the resample, i.e. weighted by
    prompt size — the GenEval tag score), ``"cluster_mean"`` (mean of per-prompt means), both vectorised;
    or a callable applied to the concatenated image values of each replicate (a Python loop: slower).
    Returns ``(low, high)``.
    """
    _check_ci_args(n_resamples, confidence)
    reps = bootstrap_replicates(values_by_cluster, statistic, n_resamples, seed)
    return percentile_interval(reps, confidence)


# --------------------------------------------------------------------------------------------------
# GenEval summary
# --------------------------------------------------------------------------------------------------

def _as_correct(v: Any, where: str) -> float:
    if isinstance(v, (bool, np.bool_)):
        return float(bool(v))
    if isinstance(v, (int, np.integer)) and int(v) in (0, 1):
        return float(v)
    raise UsageError(f"{where}: 'correct' must be a bool (or 0/1), got {v!r}")


def _columns(records: Any) -> list[dict]:
    if hasattr(records, "to_dict") and hasattr(records, "columns"):  # a pandas DataFrame
        return records.to_dict("records")
    return list(records)


def _as_score(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not 0 <= float(v) <= 1:
        raise UsageError(f"{where}: 'score' must be a number in [0, 1], got {v!r}")
    return float(v)


def score_summary(records: Any, tags: Sequence[str] | None = None, *, n_resamples: int = 2000,
                  seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Like ``geneval_summary`` for a continuous per-image ``score`` in [0, 1] (T2I-CompBench-style):
    per-tag mean over images, overall = unweighted mean of tags, the same stratified cluster bootstrap."""
    return geneval_summary(records, tags, n_resamples=n_resamples, seed=seed, confidence=confidence,
                           value="score")


def geneval_summary(records: Any, tags: Sequence[str] | None = None, *, n_resamples: int = 2000,
                    seed: int = 0, confidence: float = 0.95, value: str = "correct") -> dict[str, Any]:
    """GenEval scores with stratified cluster-bootstrap intervals from per-image records.

    ``value="score"`` summarises a continuous per-image score in [0, 1] instead of the boolean ``correct``
    (the "correct" fractions then count a prompt or image as correct when its score is > 0).

    ``records``: a DataFrame or a list of dicts with ``tag``, ``prompt_index`` and ``correct`` (bool), and
    usually ``prompt`` (the text: entries of one text form one cluster, and ``n_prompts`` counts texts).
    ``tags``: the tags to score, in this order (each must have records; records of other tags are left out
    and counted in ``n_images_excluded``); ``None`` = every tag, in order of first appearance (as the
    official script). ``n_resamples=0`` skips the intervals (``ci_low``/``ci_high`` are None).

    Returns ``{"overall": {score, ci_low, ci_high, n_images, n_prompts}, "tags": {tag: {score, ci_low,
    ci_high, n_images, n_prompts, correct_prompts_fraction}}, "n_images", "n_prompts",
    "correct_images_fraction", "correct_prompts_fraction", "n_images_excluded", "ci": {...}}``.
    Scores and fractions are in [0, 1]; ``correct_*`` fractions are the official informational figures
    ("% correct images/prompts", a prompt counting as correct if any of its images is).
    """
    if n_resamples != 0:
        _check_ci_args(n_resamples, confidence)
    rows = _columns(records)
    by_tag: dict[str, dict[Any, list[float]]] = {}
    tag_of_prompt: dict[Any, tuple[str, int]] = {}
    wanted = None if tags is None else list(tags)
    if wanted is not None and len(set(wanted)) != len(wanted):
        raise UsageError(f"tags has duplicates: {wanted}")
    excluded = 0
    for i, r in enumerate(rows):
        where = f"record {i}" + (f" (prompt_index={r.get('prompt_index')!r}, sample_index="
                                 f"{r.get('sample_index')!r})" if isinstance(r, Mapping) else "")
        if not isinstance(r, Mapping):
            raise UsageError(f"{where}: a record must be a dict, got {type(r).__name__}")
        for field in ("tag", "prompt_index", value):
            if field not in r:
                raise UsageError(f"{where}: missing field {field!r}")
        tag, prompt = r["tag"], r["prompt_index"]
        if not isinstance(tag, str):
            raise UsageError(f"{where}: 'tag' must be a string, got {tag!r}")
        if isinstance(prompt, (np.integer,)):
            prompt = int(prompt)
        if not isinstance(prompt, (int, str)) or isinstance(prompt, bool):
            raise UsageError(f"{where}: 'prompt_index' must be an int or a string, got {prompt!r}")
        correct = _as_correct(r["correct"], where) if value == "correct" else _as_score(r[value], where)
        if prompt in tag_of_prompt and tag_of_prompt[prompt][0] != tag:
            raise UsageError(f"{where}: prompt_index {prompt!r} has tag {tag!r} but record "
                             f"{tag_of_prompt[prompt][1]} gives it tag {tag_of_prompt[prompt][0]!r}")
        tag_of_prompt.setdefault(prompt, (tag, i))
        if wanted is not None and tag not in wanted:
            excluded += 1
            continue
        by_tag.setdefault(tag, {}).setdefault(cluster_key(r), []).append(correct)
    order = wanted if wanted is not None else list(by_tag)
    if not order:
        raise UsageError("geneval_summary: no records to score")
    missing = [t for t in order if t not in by_tag]
    if missing:
        raise UsageError(f"geneval_summary: no records for tag(s) {missing} (tags present: {sorted(by_tag)})")

    rng = np.random.default_rng(seed)
    tag_out: dict[str, dict[str, Any]] = {}
    tag_reps = []
    all_images = all_prompts = all_prompts_correct = 0
    all_correct = 0.0
    for t in order:
        clusters = [np.asarray(v) for v in by_tag[t].values()]
        sums = np.array([c.sum() for c in clusters])
        counts = np.array([c.size for c in clusters], dtype=np.float64)
        n_img, n_correct = int(counts.sum()), float(sums.sum())
        any_correct = int(np.count_nonzero(sums > 0))
        entry: dict[str, Any] = {"score": n_correct / n_img, "ci_low": None, "ci_high": None,
                                 "n_images": n_img, "n_prompts": len(clusters),
                                 "correct_prompts_fraction": any_correct / len(clusters)}
        if n_resamples:
            reps = ratio_replicates(sums, counts, n_resamples, rng)
            entry["ci_low"], entry["ci_high"] = percentile_interval(reps, confidence)
            tag_reps.append(reps)
        tag_out[t] = entry
        all_images += n_img
        all_correct += n_correct
        all_prompts += len(clusters)
        all_prompts_correct += any_correct
    overall: dict[str, Any] = {"score": float(np.mean([tag_out[t]["score"] for t in order])),
                               "ci_low": None, "ci_high": None,
                               "n_images": all_images, "n_prompts": all_prompts}
    if n_resamples:
        overall["ci_low"], overall["ci_high"] = percentile_interval(np.mean(tag_reps, axis=0), confidence)
    return {
        "overall": overall,
        "tags": tag_out,
        "n_images": all_images,
        "n_prompts": all_prompts,
        "correct_images_fraction": all_correct / all_images,
        "correct_prompts_fraction": all_prompts_correct / all_prompts,
        "n_images_excluded": excluded,
        "ci": {"method": "stratified cluster bootstrap over prompts (percentile)", "confidence": confidence,
               "n_resamples": n_resamples, "seed": seed},
    }


def mean_t_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean of a few values (e.g. one delta per training seed) with a Student-t interval.

    ``{"mean", "ci_low", "ci_high", "sd", "n"}``: the interval is ``mean +- t(1 - alpha/2, n - 1) * sd / sqrt(n)``
    (``scipy.stats.t.interval``, sample sd with ``ddof=1``). One value gives no interval (``ci_low`` and
    ``ci_high`` are None, ``sd`` too); equal values give a zero-width interval.
    """
    from scipy import stats as sps

    if not 0.0 < confidence < 1.0:
        raise UsageError(f"confidence must be in (0, 1), got {confidence!r}")
    a = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise UsageError("mean_t_interval: no values")
    if not np.all(np.isfinite(a)):
        raise UsageError(f"mean_t_interval: non-finite value in {a.tolist()}")
    mean = float(a.mean())
    if a.size == 1:
        return {"mean": mean, "ci_low": None, "ci_high": None, "sd": None, "n": 1}
    sd = float(a.std(ddof=1))
    if sd == 0.0:
        lo = hi = mean
    else:
        lo, hi = (float(x) for x in sps.t.interval(confidence, a.size - 1, loc=mean, scale=sd / np.sqrt(a.size)))
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "sd": sd, "n": int(a.size)}


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """``mean(a) - mean(b)`` with a Welch t interval, for two small independent samples (e.g. one value per
    training seed of two methods).

    With sample variances ``s_a^2``, ``s_b^2`` (``ddof=1``) and sizes ``n_a``, ``n_b``: ``v_a = s_a^2 / n_a``,
    ``v_b = s_b^2 / n_b``, ``se = sqrt(v_a + v_b)``, Welch-Satterthwaite ``df = (v_a + v_b)^2 / (v_a^2 / (n_a - 1)
    + v_b^2 / (n_b - 1))``, interval ``diff +- t(1 - alpha/2, df) * se`` (the interval of
    ``scipy.stats.ttest_ind(a, b, equal_var=False)``). Returns ``{"diff", "ci_low", "ci_high", "se", "df",
    "n_a", "n_b", "mean_a", "mean_b"}``; fewer than 2 values on either side give no interval (``ci_low``,
    ``ci_high``, ``se`` and ``df`` None), and no spread on either side a zero-width one (``df`` None).
    """
    from scipy import stats as sps

    if not 0.0 < confidence < 1.0:
        raise UsageError(f"confidence must be in (0, 1), got {confidence!r}")
    xs = [np.asarray(list(v), dtype=np.float64).reshape(-1) for v in (a, b)]
    for name, x in zip("ab", xs, strict=True):
        if x.size == 0:
            raise UsageError(f"welch_interval: no values in {name}")
        if not np.all(np.isfinite(x)):
            raise UsageError(f"welch_interval: non-finite value in {name}: {x.tolist()}")
    xa, xb = xs
    diff = float(xa.mean() - xb.mean())
    out: dict[str, Any] = {"diff": diff, "ci_low": None, "ci_high": None, "se": None, "df": None,
                           "n_a": int(xa.size), "n_b": int(xb.size), "mean_a": float(xa.mean()),
                           "mean_b": float(xb.mean())}
    if xa.size < 2 or xb.size < 2:
        return out
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    se = float(np.sqrt(va + vb))
    if se == 0.0:
        return {**out, "ci_low": diff, "ci_high": diff, "se": 0.0}
    df = float((va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1)))
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * se
    return {**out, "ci_low": diff - half, "ci_high": diff + half, "se": se, "df": df}


def stratified_se(clusters: Mapping[str, Any]) -> dict[str, Any]:
    """Analytic standard error of the overall score (the unweighted mean of the tag means) over its prompts.

    ``clusters``: per tag, per prompt ``(sum of the per-image values, number of images)`` (e.g.
    ``irisbench.report.deltas.prompt_clusters``; a mapping prompt -> pair, or a sequence of pairs). A tag's score
    is the ratio ``r_t = sum(y_i) / sum(m_i)`` over its ``n_t`` prompts; its variance over prompts is the
    linearised ratio variance ``v_t = n_t / (n_t - 1) * sum((y_i - r_t m_i)^2) / (sum m_i)^2`` (with equal
    ``m_i``: the sample variance of the per-prompt means over ``n_t``, ``s_t^2 / n_t``). The overall score's is
    ``v = sum(v_t) / T^2`` for ``T`` tags, with Welch-Satterthwaite ``df = (sum v_t)^2 / sum(v_t^2 / (n_t - 1))``.
    This is the variance the stratified cluster bootstrap of ``geneval_summary`` estimates by resampling.

    Returns ``{"se", "df", "n_prompts", "n_tags"}``; ``se`` and ``df`` are None when a tag has fewer than two
    prompts (no variance to estimate), ``df`` None also when ``se`` is 0.
    """
    vs, dfs, n_prompts = [], [], 0
    for tag, by_prompt in clusters.items():
        pairs = list(by_prompt.values()) if isinstance(by_prompt, Mapping) else list(by_prompt)
        if not pairs:
            raise UsageError(f"stratified_se: tag {tag!r} has no prompts")
        y = np.array([p[0] for p in pairs], dtype=np.float64)
        m = np.array([p[1] for p in pairs], dtype=np.float64)
        if np.any(m <= 0) or not np.all(np.isfinite(y)):
            raise UsageError(f"stratified_se: tag {tag!r} has a prompt without images or a non-finite value")
        n_prompts += y.size
        n = y.size
        if n < 2:
            vs.append(None)
            continue
        r = y.sum() / m.sum()
        vs.append(float(n / (n - 1) * np.sum((y - r * m) ** 2) / m.sum() ** 2))
        dfs.append(n - 1)
    out: dict[str, Any] = {"se": None, "df": None, "n_prompts": n_prompts, "n_tags": len(vs)}
    if not vs:
        raise UsageError("stratified_se: no tags")
    if any(v is None for v in vs):
        return out
    total = float(sum(vs))
    out["se"] = float(np.sqrt(total)) / len(vs)
    if total > 0:
        out["df"] = total**2 / sum(v**2 / d for v, d in zip(vs, dfs, strict=True))
    return out


def mean_t_interval_plus(values: Sequence[float], extra_se: float | None, extra_df: float | None = None,
                         confidence: float = 0.95) -> dict[str, Any]:
    """``mean_t_interval`` of ``values`` widened by an independent error of known standard error ``extra_se``
    (the shared base's own sampling error under a mean of deltas ``checkpoint - base``: the base is one
    evaluation subtracted from every value, so its error moves them all together and is not in their spread).

    ``v_s = s^2 / n`` (sample variance, ``ddof=1``), ``v_b = extra_se^2``, ``se = sqrt(v_s + v_b)``,
    Welch-Satterthwaite ``df_welch = (v_s + v_b)^2 / (v_s^2 / (n - 1) + v_b^2 / extra_df)`` (``extra_df`` None:
    infinite, the term drops), used capped: ``df = min(df_welch, n - 1)``, interval ``mean +- t(1 - alpha/2, df)
    * se``. The cap is the conservative choice: a well-measured extra term raises ``df_welch`` above ``n - 1``,
    and with a handful of seeds the smaller t quantile would more than pay for the added variance, giving an
    interval narrower than ``mean_t_interval``'s; capped, it is never narrower. Returns ``{"mean", "ci_low",
    "ci_high", "se", "df", "df_welch", "n"}``; one value or no ``extra_se`` gives no interval (None), ``se`` 0 a
    zero-width one.
    """
    from scipy import stats as sps

    base = mean_t_interval(values, confidence)
    out: dict[str, Any] = {"mean": base["mean"], "ci_low": None, "ci_high": None, "se": None, "df": None,
                           "df_welch": None, "n": base["n"]}
    if base["n"] < 2 or extra_se is None:
        return out
    if not np.isfinite(extra_se) or extra_se < 0 or (extra_df is not None and not extra_df > 0):
        raise UsageError(f"mean_t_interval_plus: extra_se must be >= 0 and extra_df > 0, got {extra_se!r}, "
                         f"{extra_df!r}")
    vs, vb = base["sd"] ** 2 / base["n"], float(extra_se) ** 2
    se = float(np.sqrt(vs + vb))
    if se == 0.0:
        return {**out, "ci_low": out["mean"], "ci_high": out["mean"], "se": 0.0}
    denom = vs**2 / (base["n"] - 1) + (vb**2 / extra_df if extra_df else 0.0)
    welch = float((vs + vb) ** 2 / denom) if denom > 0 else float("inf")  # no spread and an exact extra term
    df = min(welch, float(base["n"] - 1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * se
    return {**out, "ci_low": out["mean"] - half, "ci_high": out["mean"] + half, "se": se, "df": df,
            "df_welch": welch}


def count_check(expected: int, actual: int) -> dict[str, Any]:
    """``{"expected", "actual", "complete"}``: complete only when exactly the expected number is present."""
    for name, v in (("expected", expected), ("actual", actual)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
            raise UsageError(f"count_check: {name} must be a non-negative integer, got {v!r}")
    return {"expected": int(expected), "actual": int(actual), "complete": int(expected) == int(actual)}
