"""Seen vs unseen prompts: a trained policy's gain on its RL-training texts beside its gain on unseen ones.

In the shapes world (version 2) every val and test text is unseen by the RL stage (``irisbench.world.prompts``),
so the test split says how a method does on new prompts. The ``seen`` split holds RL-training texts (fresh
images). Reading the two side by side tells a method that learned the task from one that learned its training
prompts: the first gains on both, the second on the seen texts only.

Arithmetic. Per training seed ``s`` of a method's best-val checkpoint, the seed-level entries
(``irisbench.report.seeds``) give ``d_seen,s = score(seen) - score_base(seen)`` and ``d_test,s = score(test) -
score_base(test)``, each a paired delta against the base on the same prompts. The gap ``g_s = d_seen,s -
d_test,s`` is paired by seed (the same checkpoint is evaluated on both), so its across-seed mean gets a Student-t
interval over the ``g_s`` (``irisbench.core.stats.mean_t_interval``). The two bases' sampling errors enter every
``g_s`` alike and are not in that interval (as in the seed tables' first interval). Both splits are scored at
the checkpoints' images per prompt; the seen split has 44 entries per tag, test 132.

``seen_unseen_rows`` returns JSON-able rows (``summary.json``, ``seen_unseen.csv``), ``seen_markdown`` the
summary's table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from irisbench.core.stats import mean_t_interval
from irisbench.report.tables import delta_class, fmt_delta

SEEN = "seen"
CSV_COLUMNS = ("method", "checkpoint", "suite", "n_seeds", "seen_delta", "seen_ci_low", "seen_ci_high",
               "unseen_delta", "unseen_ci_low", "unseen_ci_high", "gap", "gap_ci_low", "gap_ci_high", "gap_class",
               "seen_seed_deltas", "unseen_seed_deltas")


def seen_unseen_rows(test_entries: Sequence[Mapping[str, Any]], seen_entries: Sequence[Mapping[str, Any]],
                     confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per (method, checkpoint kind, suite) present in both entry lists, over the seeds present in both."""
    unseen = {(e["method"], e["checkpoint"], e["suite"]): e for e in test_entries}
    rows = []
    for e in seen_entries:
        key = (e["method"], e["checkpoint"], e["suite"])
        if key not in unseen:
            continue
        d_seen = {s["seed"]: s["delta"] for s in e["seeds"]}
        d_test = {s["seed"]: s["delta"] for s in unseen[key]["seeds"]}
        seeds = [s for s in d_seen if s in d_test]
        if not seeds:
            continue
        seen_m = mean_t_interval([d_seen[s] for s in seeds], confidence)
        test_m = mean_t_interval([d_test[s] for s in seeds], confidence)
        gap = mean_t_interval([d_seen[s] - d_test[s] for s in seeds], confidence)
        rows.append({"method": key[0], "checkpoint": key[1], "suite": key[2], "n_seeds": len(seeds),
                     "seen_delta": seen_m["mean"], "seen_ci_low": seen_m["ci_low"], "seen_ci_high": seen_m["ci_high"],
                     "unseen_delta": test_m["mean"], "unseen_ci_low": test_m["ci_low"],
                     "unseen_ci_high": test_m["ci_high"], "gap": gap["mean"], "gap_ci_low": gap["ci_low"],
                     "gap_ci_high": gap["ci_high"], "gap_class": delta_class(gap["ci_low"], gap["ci_high"]),
                     "seen_seed_deltas": [d_seen[s] for s in seeds],
                     "unseen_seed_deltas": [d_test[s] for s in seeds]})
    return rows


def write_seen_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """``seen_unseen.csv``: the rows, per-seed deltas joined by ``;``."""
    import pandas as pd

    from irisbench.core.records import atomic_write_text

    df = pd.DataFrame([{c: (";".join(f"{v:.4f}" for v in r[c]) if c.endswith("seed_deltas") else r[c])
                        for c in CSV_COLUMNS} for r in rows], columns=list(CSV_COLUMNS))
    atomic_write_text(Path(path), df.to_csv(index=False, float_format="%.4f"))
    return Path(path)


def seen_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The summary's table: gain on seen texts, on unseen texts (test) and the paired gap, across seeds."""
    if not rows:
        return ""
    lines = ["| method | checkpoint | suite | seeds | seen (RL-training texts) | unseen (test) | seen − unseen |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['checkpoint']} | {r['suite']} | {r['n_seeds']} | "
                     f"{fmt_delta(r['seen_delta'], r['seen_ci_low'], r['seen_ci_high'])} | "
                     f"{fmt_delta(r['unseen_delta'], r['unseen_ci_low'], r['unseen_ci_high'])} | "
                     f"{fmt_delta(r['gap'], r['gap_ci_low'], r['gap_ci_high'])} |")
    lines.append("")
    lines.append("Each cell: the mean across training seeds of the delta against the base (Student-t 95% interval); "
                 "seen − unseen is paired by seed (the same checkpoint on both splits).")
    return "\n".join(lines)
