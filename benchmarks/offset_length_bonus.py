"""The per-plan-token bonus of IRIS's as-coded ``nsc`` under each self-certainty offset order, on the shipped base.

``nsc`` pools tokens: ``r = -(sum_text s_t + sum_image s_t) / (L + n)`` for ``L`` plan and ``n`` image tokens, each
``s_t = KL_t + log K_m`` (``K`` the vocabulary the offset is taken from). With offsets kept, a plan token whose
value is below the image tokens' raises ``r``: a length bonus. This script samples G rollouts of distinct val prompts
from ``irisbench/assets/shapes-base`` (the trainer's sampling settings: the base's defaults, CFG 3) and scores each
under the three orders of ``irisbench.train.rewards.OFFSET_ORDERS``: ``world`` (24 plan symbols, 763 codes), ``janus``
(Janus-Pro's 102,400 / 16,384, ``offset_vocab``) and ``none`` (offsets removed). Per order it reports
``d(reward)/d(plan length)`` three ways, each with a 95% interval from a bootstrap over prompts (groups resampled
whole):

- ``within_prompt``: the slope after removing each prompt's mean (prompt fixed effects): the comparison GRPO's
  group advantages make, so the bonus the policy gradient sees;
- ``pooled_ols``: the slope over all rollouts (confounded by prompt kind: counting prompts have longer plans);
- ``analytic``: ``mean_r (sbar_image - sbar_text) * n / (L + n)^2``, the derivative of ``r`` in ``L`` holding
  each rollout's per-modality means fixed (the figure the length-bonus argument quotes: pooling alone).

``within_prompt`` exceeds ``analytic`` by what a longer plan goes with inside a prompt: the ``any`` rows give the
within-prompt slopes of the raw per-modality SC means on ``L`` (offset-free: a longer plan draws more objects, whose
image tokens are less certain, which ``nsc`` also rewards).

Since an order only adds constants ``a_text``, ``a_image`` per token, ``r_a = r_none - a_image - L (a_text -
a_image) / (L + n)``: the within-prompt slope is linear in the offset gap ``Delta = a_text - a_image``, and the
``break_even`` row gives the gap (and the vocabulary ratio ``exp(Delta)``) at which the bonus vanishes.

    PYTHONPATH=. python benchmarks/offset_length_bonus.py --prompts 96 --g 8 --out results/offsets

writes ``length_bonus.csv`` (tidy: order, estimator, slope, interval), ``rollouts.csv`` (one row per rollout:
prompt, plan length, per-modality raw SC, reward under each order: every figure can be re-derived from it) and
``summary.json``, and prints the summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irisbench.core.records import atomic_write_text
from irisbench.policies.base import IMAGE, TEXT
from irisbench.train.rewards import OFFSET_ORDERS, make_reward


def pick_prompts(items: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` distinct prompt texts spread over the tags (round-robin over seeded shuffles of each tag)."""
    rng = np.random.default_rng([seed, 0x0FF5E7])
    by_tag: dict[str, dict[str, dict]] = {}
    for it in items:
        by_tag.setdefault(str(it["tag"]), {}).setdefault(it["prompt"], it)
    queues = [[list(g.values())[i] for i in rng.permutation(len(g))] for g in by_tag.values()]
    out: list[dict] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def _group_sums(group: np.ndarray, n_groups: int, **columns: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.bincount(group, weights=v, minlength=n_groups) for k, v in columns.items()}


def within_slope(x: np.ndarray, y: np.ndarray, group: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fixed-effects slope of y on x for each row of group ``weights`` (bootstrap counts, (B, n_groups))."""
    g = int(group.max()) + 1
    s = _group_sums(group, g, n=np.ones_like(x), x=x, y=y, xx=x * x, xy=x * y)
    sxx = s["xx"] - s["x"] ** 2 / s["n"]  # within-group sums of squares / cross-products per group
    sxy = s["xy"] - s["x"] * s["y"] / s["n"]
    return (weights @ sxy) / (weights @ sxx)


def pooled_slope(x: np.ndarray, y: np.ndarray, group: np.ndarray, weights: np.ndarray) -> np.ndarray:
    g = int(group.max()) + 1
    s = _group_sums(group, g, n=np.ones_like(x), x=x, y=y, xx=x * x, xy=x * y)
    n, sx, sy, sxx, sxy = (weights @ s[k] for k in ("n", "x", "y", "xx", "xy"))
    return (sxy - sx * sy / n) / (sxx - sx * sx / n)


def group_mean(v: np.ndarray, group: np.ndarray, weights: np.ndarray) -> np.ndarray:
    g = int(group.max()) + 1
    s = _group_sums(group, g, n=np.ones_like(v), v=v)
    return (weights @ s["v"]) / (weights @ s["n"])


def sample_rows(n_prompts: int, g: int, seed: int, split: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Sample and score; one DataFrame row per rollout."""
    import torch

    from irisbench.policies.shapes_lm import load_shipped_base
    from irisbench.suites import load_suite, resolve_prompts

    torch.set_num_threads(1)
    policy = load_shipped_base()
    items, prov = resolve_prompts(load_suite("geneval"), "shapes", split)
    chosen = pick_prompts(items, n_prompts, seed)
    t0 = time.perf_counter()
    r = policy.sample([it["prompt"] for it in chosen], n=g, seed=seed)
    seconds = time.perf_counter() - t0
    text = r.token_mask & (r.modality == TEXT)
    image = r.token_mask & (r.modality == IMAGE)
    sc = r.self_certainty.astype(np.float64)
    frame = pd.DataFrame({
        "prompt_index": np.repeat(np.arange(len(chosen)), g),
        "tag": [chosen[i // g]["tag"] for i in range(len(r))],
        "prompt": r.prompts, "seed": r.seeds,
        "plan_len": text.sum(1), "image_len": image.sum(1),
        "sc_text_raw": np.where(text, sc, 0).sum(1) / text.sum(1),
        "sc_image_raw": np.where(image, sc, 0).sum(1) / image.sum(1),
    })
    for order, options in OFFSET_ORDERS.items():
        frame[f"reward_{order}"] = make_reward("nsc", **options)(r, {})
    meta = {"policy": "shapes-base", "split": split, "prompt_set_sha256": prov["sha256"], "n_prompts": len(chosen),
            "g": g, "rollouts": len(r), "seed": seed, "cfg": r.settings["cfg"], "vocab_size": r.settings["vocab_size"],
            "sampling_seconds_1_thread": round(seconds, 2)}
    return frame, meta


def order_offsets(vocab: dict[str, int]) -> dict[str, tuple[float, float]]:
    """(a_text, a_image): the constant each order leaves in a token's value on top of its KL."""
    out = {}
    for order, options in OFFSET_ORDERS.items():
        if options.get("subtract_log_vocab"):
            out[order] = (0.0, 0.0)
        else:
            sizes = options.get("offset_vocab", vocab)
            out[order] = (math.log(sizes["text"]), math.log(sizes["image"]))
    return out


def analyse(frame: pd.DataFrame, vocab: dict[str, int], resamples: int, seed: int) -> tuple[pd.DataFrame, dict]:
    group = frame["prompt_index"].to_numpy()
    n_groups = int(group.max()) + 1
    rng = np.random.default_rng([seed, 0xB007])
    weights = np.vstack([np.ones(n_groups), rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups),
                                                            size=resamples)])
    length = frame["plan_len"].to_numpy(float)
    n_img = frame["image_len"].to_numpy(float)
    kl_text = frame["sc_text_raw"].to_numpy() - math.log(vocab["text"])
    kl_image = frame["sc_image_raw"].to_numpy() - math.log(vocab["image"])
    rows = []

    def add(order: str, a_text: float, a_image: float, estimator: str, values: np.ndarray) -> None:
        lo, hi = np.quantile(values[1:], [0.025, 0.975])
        rows.append({"order": order, "offset_text": a_text, "offset_image": a_image,
                     "offset_gap": a_text - a_image, "estimator": estimator, "value": float(values[0]),
                     "ci_low": float(lo), "ci_high": float(hi), "interval": "95% bootstrap over prompts",
                     "n_rollouts": len(frame), "n_prompts": n_groups})

    for order, (a_text, a_image) in order_offsets(vocab).items():
        y = frame[f"reward_{order}"].to_numpy()
        add(order, a_text, a_image, "within_prompt", within_slope(length, y, group, weights))
        add(order, a_text, a_image, "pooled_ols", pooled_slope(length, y, group, weights))
        analytic = ((kl_image + a_image) - (kl_text + a_text)) * n_img / (length + n_img) ** 2
        add(order, a_text, a_image, "analytic", group_mean(analytic, group, weights))
    # what a longer plan goes with inside a prompt (no offset involved): the raw per-modality SC means
    for column in ("sc_text_raw", "sc_image_raw"):
        add("any", float("nan"), float("nan"), f"within_prompt_slope_of_{column}",
            within_slope(length, frame[column].to_numpy(), group, weights))
    # break-even gap: slope_none - Delta * slope(L / (L + n)) = 0
    share = length / (length + n_img)
    none = within_slope(length, frame["reward_none"].to_numpy(), group, weights)
    gap = none / within_slope(length, share, group, weights)
    add("break_even", float("nan"), float("nan"), "offset_gap_for_zero_within_prompt_bonus", gap)
    add("break_even", float("nan"), float("nan"), "vocab_ratio_text_over_image_for_zero_bonus", np.exp(gap))
    table = pd.DataFrame(rows)
    within_var = frame.groupby("prompt_index")["plan_len"].var(ddof=0)
    facts = {"plan_len_mean": float(length.mean()), "plan_len_sd": float(length.std()),
             "plan_len_within_prompt_sd": float(np.sqrt(within_var.mean())),
             "prompts_with_varying_plan_len": int((within_var > 0).sum()),
             "sc_text_raw_mean": float(frame["sc_text_raw"].mean()),
             "sc_image_raw_mean": float(frame["sc_image_raw"].mean()),
             "kl_text_mean": float(kl_text.mean()), "kl_image_mean": float(kl_image.mean())}
    return table, facts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=96, help="distinct val prompts, spread over the tags")
    ap.add_argument("--g", type=int, default=8, help="rollouts per prompt (the GRPO group)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="val")
    ap.add_argument("--resamples", type=int, default=4000)
    ap.add_argument("--out", type=Path, default=None, help="folder for length_bonus.csv, rollouts.csv, summary.json")
    args = ap.parse_args(argv)
    if args.prompts < 2 or args.g < 2:
        print("offset_length_bonus: --prompts and --g must be >= 2 (a slope within prompts needs groups)",
              file=sys.stderr)
        return 2
    frame, meta = sample_rows(args.prompts, args.g, args.seed, args.split)
    table, facts = analyse(frame, meta["vocab_size"], args.resamples, args.seed)
    command = "PYTHONPATH=. python benchmarks/offset_length_bonus.py " + " ".join(
        f"--{k} {v}" for k, v in (("prompts", args.prompts), ("g", args.g), ("seed", args.seed),
                                  ("split", args.split), ("resamples", args.resamples)))
    summary = {**meta, **facts, "command": command,
               "bonus": {f"{r.order}/{r.estimator}": [round(r.value, 5), round(r.ci_low, 5), round(r.ci_high, 5)]
                         for r in table.itertuples()}}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "length_bonus.csv", table.to_csv(index=False, float_format="%.6g"))
        atomic_write_text(args.out / "rollouts.csv", frame.to_csv(index=False, float_format="%.6g"))
        atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
