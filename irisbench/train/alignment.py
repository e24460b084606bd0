"""Reward-quality alignment before training: does a reward's GRPO advantage favour the right images?

``probe_alignment`` samples G rollouts per prompt from a policy (its own ``sample``, with the trainer's
settings: CFG, temperature, top-k), scores them with each chosen reward from the registry
(``irisbench.train.rewards.build_reward``, the trainer's reward path, with the trainer's context:
``irisbench.train.rewards.reward_context``, the shapes world's exact judge and a ``clip`` term's CLIP) and turns
the rewards into GRPO advantages with ``irisbench.train.grpo.group_advantages`` (group-normalised, as the
trainer does). It then asks, per reward and per tag:

- ``rho_correct``: the within-group Spearman rank correlation of the advantage with correctness (0/1),
  averaged over the groups where both vary (a group of all-right or all-wrong images, or of equal
  rewards, has no ranking to compare and is left out; ``groups_used`` says how many were used);
- ``adv_correct`` / ``adv_incorrect``: the mean advantage of correct and of incorrect images, and their
  gap (correct minus incorrect);
- ``rho_plan_len`` / ``rho_objects``: the within-group Spearman correlation of the advantage with the
  plan length (text tokens, EOP included) and with the number of objects the detector finds;
- ``rho_clip``: the within-group Spearman correlation of the advantage with a CLIP score of the image
  against its prompt (the shipped ``shapes-clip`` in the shapes world; a CLIP for real images elsewhere),
  the quality signal where no judge exists: an open-world policy (Janus-Pro) is probed with it alone, and
  its correctness, object and accuracy figures are then empty;

each with a 95% prompt-bootstrap interval (``irisbench.core.stats``: prompts are resampled, a prompt's
images stay together). A reward whose advantage already favours wrong images at step 0 (negative
``rho_correct`` and gap) pushes the policy towards them from the first update: a zero-training
predictor of whether the reward can help. It reads one policy snapshot: it says nothing about where
the policy goes after a few updates.

Departure from training: the statistics a reward reads are the sampling loop's own per-token values
(the conditional logits); the shapes presets read teacher-forced conditional statistics
(``sc_source: teacher-forced``), the same numbers up to float round-off. Rows are sampled with seeds
derived from ``seed``, not from a training step.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from irisbench.core.errors import UsageError
from irisbench.policies.base import TEXT, derive_seed

METRICS = ("rho_correct", "adv_correct", "adv_incorrect", "adv_gap", "rho_plan_len", "rho_objects", "rho_clip")
EMPTY: dict[str, float | int | None] = {"mean": None, "lo": None, "hi": None, "n": 0}  # a metric without its input


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (ties averaged; scipy), NaN where either side is constant."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _mean_ci(per_prompt: list[float], n_resamples: int, seed: int) -> dict[str, float | int | None]:
    """Mean of the per-prompt values that exist, with a prompt-bootstrap 95% interval."""
    from irisbench.core.stats import bootstrap_ci

    vals = [v for v in per_prompt if not math.isnan(v)]
    if not vals:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    lo, hi = bootstrap_ci([[v] for v in vals], "cluster_mean", n_resamples=n_resamples, seed=seed)
    return {"mean": float(np.mean(vals)), "lo": lo, "hi": hi, "n": len(vals)}


def _class_means(adv: list[np.ndarray], correct: list[np.ndarray], n_resamples: int,
                 seed: int) -> dict[str, dict[str, float | int | None]]:
    """Mean advantage of correct images, of incorrect ones, and the gap, under one prompt bootstrap.

    The three share each replicate's resampled prompts (the gap is paired), so this draws the prompt
    indices itself, as ``irisbench.core.stats`` does, and takes the same percentile interval."""
    from irisbench.core.stats import percentile_interval

    sums = np.array([[a[c].sum(), a[~c].sum()] for a, c in zip(adv, correct, strict=True)])
    counts = np.array([[c.sum(), (~c).sum()] for c in correct], dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(adv), size=(n_resamples, len(adv)))
    rs, rc = sums[idx].sum(1), counts[idx].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = {"adv_correct": rs[:, 0] / rc[:, 0], "adv_incorrect": rs[:, 1] / rc[:, 1]}
    reps["adv_gap"] = reps["adv_correct"] - reps["adv_incorrect"]
    tot_s, tot_c = sums.sum(0), counts.sum(0)
    point = {"adv_correct": tot_s[0] / tot_c[0] if tot_c[0] else float("nan"),
             "adv_incorrect": tot_s[1] / tot_c[1] if tot_c[1] else float("nan")}
    point["adv_gap"] = point["adv_correct"] - point["adv_incorrect"]
    out: dict[str, dict[str, float | int | None]] = {}
    for key, r in reps.items():
        r = r[np.isfinite(r)]
        n = int(tot_c[0] if key == "adv_correct" else tot_c[1] if key == "adv_incorrect" else min(tot_c))
        if not math.isfinite(point[key]) or r.size == 0:
            out[key] = {"mean": None, "lo": None, "hi": None, "n": n}
        else:
            lo, hi = percentile_interval(r, 0.95)
            out[key] = {"mean": float(point[key]), "lo": lo, "hi": hi, "n": n}
    return out


def summarise(adv: np.ndarray, correct: np.ndarray | None, plan_len: np.ndarray, objects: np.ndarray | None, g: int,
              *, clip: np.ndarray | None = None, n_resamples: int = 2000,
              seed: int = 0) -> dict[str, dict[str, float | int | None]]:
    """The alignment metrics (``METRICS``) of group-major per-image arrays (B,), B = prompts x ``g``. A
    missing input (``correct`` without a judge, ``objects`` without a detector, ``clip`` without a CLIP)
    leaves its metrics empty (``EMPTY``)."""
    groups = [slice(i, i + g) for i in range(0, len(adv), g)]
    a = [np.asarray(adv[s], dtype=np.float64) for s in groups]

    def rho(values: np.ndarray | None) -> dict[str, float | int | None]:
        if values is None:
            return dict(EMPTY)
        return _mean_ci([_spearman(x, np.asarray(values[s], float)) for x, s in zip(a, groups, strict=True)],
                        n_resamples, seed)

    if correct is None:
        out = {k: dict(EMPTY) for k in ("rho_correct", "adv_correct", "adv_incorrect", "adv_gap")}
    else:
        out = {"rho_correct": rho(np.asarray(correct, bool))}
        out.update(_class_means(a, [np.asarray(correct[s], dtype=bool) for s in groups], n_resamples, seed))
    out.update(rho_plan_len=rho(plan_len), rho_objects=rho(objects), rho_clip=rho(clip))
    return out


def shapes_judge_and_count() -> tuple[Callable[[dict, np.ndarray], bool], Callable[[np.ndarray], int]]:
    """The shapes world's exact GenEval judgement (as the trainer's verifier uses) and its object count."""
    from irisbench.protocols.geneval import judge
    from irisbench.world.detector import detect

    return (lambda meta, image: bool(judge(meta, detect(image)).correct)), (lambda image: len(detect(image)))


def probe_alignment(policy: Any, items: Sequence[dict], rewards: Sequence[str], *, g: int = 8, seed: int = 0,
                    cfg: float | None = None, temperature: float | None = None, top_k: int | None = None,
                    judge: Callable[[dict, np.ndarray], bool] | None = None,
                    count_objects: Callable[[np.ndarray], int] | None = None,
                    clip_score: Callable[[Sequence[np.ndarray], Sequence[str]], Any] | None = None,
                    reward_options: dict[str, dict[str, Any]] | None = None, prompts_per_batch: int = 8,
                    n_resamples: int = 2000, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Sample ``g`` rollouts per item, score every reward, and summarise alignment overall and per tag.

    ``items``: prompt metadata dicts (``prompt``, ``tag``, and what ``judge`` reads). ``judge`` (correctness),
    ``count_objects`` and ``clip_score`` (raw cosines: ``clip_score(images, prompts) -> floats``) feed the
    metrics; at least a judge or a CLIP score is needed. A probed ``clip`` reward reads the scores
    ``clip_score`` gave the batch (on its own scale): its model is loaded once and each image scored once.
    ``reward_options``: per-reward factory options, as a preset's ``reward_options``. Returns ``{"rows":
    per-image records, "summary": {reward: {tag or "overall": metrics}}, "accuracy": ...}`` (``accuracy`` is
    None without a judge).
    """
    from irisbench.train.grpo import group_advantages
    from irisbench.train.rewards import ROW_KEYS, RowKeys, build_reward, reward_context

    if g < 2:
        raise UsageError(f"the probe needs at least 2 rollouts per prompt (a group), got g={g}")
    if not items:
        raise UsageError("the probe needs at least one prompt")
    if judge is None and clip_score is None:
        raise UsageError("the probe needs a judge of correctness or a CLIP score to compare the advantages with")
    options = reward_options or {}
    # unknown names fail here, before sampling; each reward's context as the trainer builds it
    terms = {name: build_reward(name, options={name: options[name]} if name in options else None)
             for name in rewards}
    world = getattr(policy, "world", "shapes")
    judged = {"judge": judge} if judge else {}
    scored: dict[str, Any] = {}  # the batch's images and their CLIP scores, computed once for the clip column

    def batch_clip(images: Any, prompts: Sequence[str]) -> Any:  # a probed clip reward reads those scores
        return scored["clip"] if images is scored.get("images") else clip_score(images, prompts)

    contexts = {name: {**reward_context(reward, world, raw_clip_score=batch_clip if clip_score else None), **judged}
                for name, reward in terms.items()}
    records: list[dict[str, Any]] = []
    values: dict[str, list[np.ndarray]] = {name: [] for name in rewards}
    for start in range(0, len(items), prompts_per_batch):
        batch = list(items[start:start + prompts_per_batch])
        seeds = [derive_seed(seed, "probe", start + k, j) for k in range(len(batch)) for j in range(g)]
        roll = policy.sample([it["prompt"] for it in batch], n=g, seed=seeds, cfg=cfg, temperature=temperature,
                             top_k=top_k)
        metas = [it for it in batch for _ in range(g)]
        clip = (np.asarray(clip_score(roll.images, [m["prompt"] for m in metas]), np.float64).reshape(-1)
                if clip_score is not None else None)
        scored.update(images=roll.images, clip=clip)
        for name, reward in terms.items():
            keys = RowKeys.groups(seed, 0, range(start, start + len(batch)), g)  # the null rewards' keys
            values[name].append(reward.evaluate(roll, {**contexts[name], "metadata": metas, ROW_KEYS: keys})[0])
        text = roll.token_mask & (roll.modality == TEXT) if roll.tokens.size else np.zeros((len(roll), 1), bool)
        for row in range(len(roll)):
            meta, image = metas[row], roll.images[row]
            records.append({"prompt": meta["prompt"], "tag": meta.get("tag", "all"), "group": start + row // g,
                            "row": row % g, "seed": seeds[row],
                            "correct": bool(judge(meta, image)) if judge else None,
                            "plan_len": int(text[row].sum()),
                            "objects": int(count_objects(image)) if count_objects else None,
                            "clip": float(clip[row]) if clip is not None else None,
                            "plan": roll.plans[row] if roll.plans else ""})
        if progress is not None:
            progress(min(start + prompts_per_batch, len(items)), len(items))

    def column(key: str, dtype: Any) -> np.ndarray | None:
        return None if records[0][key] is None else np.array([r[key] for r in records], dtype=dtype)

    correct, objects, clip_all = column("correct", bool), column("objects", np.float64), column("clip", np.float64)
    plan_len = np.array([r["plan_len"] for r in records])
    tags = np.array([r["tag"] for r in records])

    def part(x: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
        return None if x is None else x[keep]

    summary: dict[str, dict[str, Any]] = {}
    for name in rewards:
        raw = np.concatenate(values[name])
        adv = group_advantages(raw, g)[0].numpy()
        for rec, r, a in zip(records, raw, adv, strict=True):
            rec[f"reward:{name}"], rec[f"adv:{name}"] = float(r), float(a)
        per = {"overall": summarise(adv, correct, plan_len, objects, g, clip=clip_all, n_resamples=n_resamples,
                                    seed=seed)}
        for tag in dict.fromkeys(tags.tolist()):
            keep = tags == tag
            per[tag] = summarise(adv[keep], part(correct, keep), plan_len[keep], part(objects, keep), g,
                                 clip=part(clip_all, keep), n_resamples=n_resamples, seed=seed)
        summary[name] = per
    acc = None
    if correct is not None:
        acc = {"overall": float(correct.mean())}
        acc.update({tag: float(correct[tags == tag].mean()) for tag in dict.fromkeys(tags.tolist())})
    return {"rows": records, "summary": summary, "accuracy": acc, "g": g, "prompts": len(items)}


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary as tidy rows: reward, tag, metric, mean, lo, hi, n."""
    out = []
    for reward, per in result["summary"].items():
        for tag, metrics in per.items():
            for metric, v in metrics.items():
                out.append({"reward": reward, "tag": tag, "metric": metric, **v})
    return out


def write_outputs(result: dict[str, Any], folder: str | Path) -> list[Path]:
    """``alignment.json`` (everything), ``alignment.csv`` (tidy summary), ``alignment_rows.csv`` (per image)."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "alignment.json", folder / "alignment.csv", folder / "alignment_rows.csv"]
    paths[0].write_text(json.dumps(result, indent=1) + "\n")
    for path, rows in ((paths[1], summary_rows(result)), (paths[2], result["rows"])):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return paths


def format_cell(v: dict[str, Any]) -> str:
    if v.get("mean") is None:
        return "–"
    return f"{v['mean']:+.3f} [{v['lo']:+.3f}, {v['hi']:+.3f}]"


__all__ = ["EMPTY", "METRICS", "format_cell", "probe_alignment", "shapes_judge_and_count", "summarise", "summary_rows",
           "write_outputs"]
