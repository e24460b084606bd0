"""Mutation check for the core modules: does some non-slow test fail for each plausible one-line bug?

A curated list of mutations (one line each, written as an exact ``old`` -> ``new`` text replacement in one
file) is applied, one at a time, to a temporary copy of the checkout; the relevant non-slow tests run
against that copy. A mutation is *killed* when a test fails, *survived* when all pass, *not applied* when
its ``old`` text is not found exactly once (the code moved: re-target the entry). Prints JSON with every
outcome and the kill rate (killed / applied).

    python tools/mutation_check.py                # all mutations
    python tools/mutation_check.py --only sc-sign --only bootstrap-percentile
    python tools/mutation_check.py --list

Targets are plain text on purpose: when a module is rewritten, the entry names the file and the line it
expects, so updating it is a matter of editing ``old``/``new`` here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments (files or node ids), run with -m "not slow"
    why: str


MUTATIONS: tuple[Mutation, ...] = (
    Mutation("trainer-ascends-loss", "irisbench/train/trainer.py", "loss.backward()", "(-loss).backward()",
             ("tests/test_trainer.py",), "the update descends -loss: rewards go down"),
    Mutation("eval-sample-index-0", "irisbench/evaluation/eval_plan.py",
             "seeds = [derive_seed(self.opts.seed, self.seed_key, src[i] if src else i, j) for i, j in batch]",
             "seeds = [derive_seed(self.opts.seed, self.seed_key, src[i] if src else i, 0) for i, j in batch]",
             ("tests/test_evaluate.py",), "every image of a prompt drawn with the seed of sample 0"),
    Mutation("experiment-last-not-best", "irisbench/experiment/run.py",
             'best = select_checkpoint(run, "best-val", test_split=None)["step"]',
             'best = select_checkpoint(run, "last", test_split=None)["step"]',
             ("tests/test_experiment.py",), "the experiment reports the last step as its best-val step"),
    Mutation("selection-min-val", "irisbench/analysis/selection.py",
             "        scores = val.loc[common, \"score\"].astype(float)\n"
             "        step = int(scores[scores == scores.max()].index.min())",
             "        scores = val.loc[common, \"score\"].astype(float)\n"
             "        step = int(scores[scores == scores.min()].index.min())",
             ("tests/test_analysis_runs.py",), "analysis' best-val selection picks the worst step"),
    Mutation("sc-sign", "irisbench/core/uncertainty.py",
             "    sc = torch.logsumexp(d, dim=-1) - d.mean(dim=-1)",
             "    sc = d.mean(dim=-1) - torch.logsumexp(d, dim=-1)",
             ("tests/test_uncertainty.py",), "self-certainty with its sign flipped"),
    Mutation("sc-raw-sign", "irisbench/core/uncertainty.py",
             "    sc_raw = torch.logsumexp(d, dim=-1) - d.mean(dim=-1)",
             "    sc_raw = d.mean(dim=-1) - torch.logsumexp(d, dim=-1)",
             ("tests/test_uncertainty.py", "tests/test_rewards.py"), "the sampling loop's self-certainty flipped"),
    Mutation("advantage-std-multiplies", "irisbench/train/grpo.py", "        adv = adv / (std + eps)",
             "        adv = adv * (std + eps)", ("tests/test_grpo.py",), "advantages scaled by std instead of 1/std"),
    Mutation("advantage-no-centering", "irisbench/train/grpo.py", "    adv = grouped - mean",
             "    adv = grouped + 0 * mean",
             ("tests/test_grpo.py",), "advantages not centred on the group mean"),
    Mutation("judge-margin-grows", "irisbench/protocols/geneval.py",
             "math.copysign(max(abs(o) - threshold * s, 0.0), o)", "math.copysign(max(abs(o) + threshold * s, 0.0), o)",
             ("tests/test_geneval_judge.py",), "the position margin widens the offset instead of shrinking it"),
    Mutation("judge-left-inclusive", "irisbench/protocols/geneval.py", "    if dx < -0.5:", "    if dx <= -0.5:",
             ("tests/test_geneval_judge.py",), "'left of' at exactly -0.5"),
    Mutation("judge-above-inclusive", "irisbench/protocols/geneval.py", "    if dy < -0.5:", "    if dy <= -0.5:",
             ("tests/test_geneval_judge.py",), "'above' at exactly -0.5"),
    Mutation("judge-below-inclusive", "irisbench/protocols/geneval.py", "    if dy > 0.5:", "    if dy >= 0.5:",
             ("tests/test_geneval_judge.py",), "'below' at exactly 0.5"),
    Mutation("judge-cut-coarse", "irisbench/protocols/geneval.py", "if all(abs(r) < 1e-3 for r in shrunk):",
             "if all(abs(r) < 1e-2 for r in shrunk):", ("tests/test_geneval_judge.py",),
             "the no-relation cut ten times wider"),
    Mutation("bootstrap-percentile-swapped", "irisbench/core/stats.py",
             "    lo, hi = np.percentile(reps, [100 * alpha, 100 * (1 - alpha)])",
             "    lo, hi = np.percentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)])",
             ("tests/test_stats.py",), "a 97.5% interval reported as 95%"),
    Mutation("bootstrap-resample-images", "irisbench/core/stats.py",
             "    return sums[idx].sum(axis=1) / counts[idx].sum(axis=1)",
             "    return sums[idx].sum(axis=1) / counts.sum() * len(counts) / idx.shape[1]",
             ("tests/test_stats.py",), "the ratio ignores which prompts (and how many images) were drawn"),
    Mutation("geneval-overall-per-image", "irisbench/core/stats.py",
             "    overall: dict[str, Any] = {\"score\": float(np.mean([tag_out[t][\"score\"] for t in order])),",
             "    overall: dict[str, Any] = {\"score\": all_correct / all_images,",
             ("tests/test_stats.py",), "overall as a per-image mean instead of the mean of tags"),
    Mutation("paired-delta-sign", "irisbench/report/deltas.py",
             "        return np.concatenate([ratio_of(sb, nb, idx) - ratio_of(sa, na, idx)",
             "        return np.concatenate([ratio_of(sa, na, idx) - ratio_of(sb, nb, idx)",
             ("tests/test_report_tables.py",), "paired delta intervals of base - run"),
    Mutation("paired-delta-unpaired-draws", "irisbench/report/deltas.py",
             "        return np.concatenate([ratio_of(sb, nb, idx) - ratio_of(sa, na, idx)\n"
             "                               for idx in cluster_draws(len(prompts), n_resamples, rng)])",
             "        return (ratio_replicates(sb, nb, n_resamples, rng) - ratio_replicates(sa, na, n_resamples, rng))",
             ("tests/test_report_tables.py",), "paired runs resampled independently (intervals too wide)"),
    Mutation("masked-mean-empty-zero", "irisbench/core/uncertainty.py",
             "        return np.where(count > 0, total / np.maximum(count, 1), np.nan)",
             "        return np.where(count > 0, total / np.maximum(count, 1), 0.0)",
             ("tests/test_uncertainty.py", "tests/test_rewards.py"), "an absent modality counts as 0"),
    Mutation("nsc-sign", "irisbench/train/rewards.py",
             '"nsc": (_preset("self_certainty", -1, -1, False, "tokens", "nsc"),',
             '"nsc": (_preset("self_certainty", 1, 1, False, "tokens", "nsc"),',
             ("tests/test_rewards.py",), "IRIS's reward maximises self-certainty instead of minimising it"),
    Mutation("count-check-lenient", "irisbench/core/stats.py",
             "\"complete\": int(expected) == int(actual)}", "\"complete\": int(expected) <= int(actual) + 1}",
             ("tests/test_stats.py", "tests/test_evaluate.py"), "a run missing an image counts as complete"),
)


def _copy_tree(dst: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "results", "build", "*.egg-info")
    for name in ("irisbench", "tests", "suites", "benchmarks"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, dst / name, ignore=ignore, symlinks=True)
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dst / name)


def run_one(m: Mutation, timeout: float) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"mut-{m.name}-") as tmp:
        dst = Path(tmp)
        _copy_tree(dst)
        path = dst / m.file
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        count = text.count(m.old)
        if count != 1:
            return {"name": m.name, "file": m.file, "status": "not applied",
                    "detail": f"target text found {count} times (re-target this entry)"}
        path.write_text(text.replace(m.old, m.new), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(dst), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider", *m.tests]
        try:
            proc = subprocess.run(cmd, cwd=dst, env=env, capture_output=True, text=True, timeout=timeout)
            status = "survived" if proc.returncode == 0 else "killed" if proc.returncode == 1 else "error"
            tail = (proc.stdout.strip().splitlines() or [""])[-1]
        except subprocess.TimeoutExpired:
            status, tail = "timeout", f"no verdict in {timeout:.0f} s"
    return {"name": m.name, "file": m.file, "status": status, "why": m.why, "tests": list(m.tests),
            "pytest": tail, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", default=[], help="run only these mutation names (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per mutation's test run")
    args = ap.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:32s} {m.file}: {m.why}")
        return
    unknown = sorted(set(args.only) - {m.name for m in MUTATIONS})
    if unknown:
        sys.exit(f"unknown mutation(s): {', '.join(unknown)}")
    results = []
    for m in chosen:
        r = run_one(m, args.timeout)
        print(json.dumps(r), file=sys.stderr, flush=True)
        results.append(r)
    applied = [r for r in results if r["status"] in ("killed", "survived")]
    killed = [r for r in applied if r["status"] == "killed"]
    print(json.dumps({
        "killed": len(killed), "applied": len(applied), "total": len(results),
        "kill_rate": round(len(killed) / len(applied), 3) if applied else None,
        "survived": [r["name"] for r in applied if r["status"] == "survived"],
        "not_applied_or_error": [r["name"] for r in results if r["status"] not in ("killed", "survived")],
        "results": results,
    }, indent=1))


if __name__ == "__main__":
    main()
