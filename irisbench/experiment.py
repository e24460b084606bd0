"""The main job on the embedded default: evaluate the shapes-world policies on GenEval, val and test.

Today it evaluates the reference bounds (``oracle``, ``random``) and, when its checkpoint is shipped,
the ``shapes-base`` policy; each (policy, split) is its own resumable eval run under ``<out>``. A
summary table (Markdown and JSON) is written beside them. The training and report stages extend
this into the paper's whole experiment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REFERENCE_POLICIES = ("oracle", "random")


def experiment_policies() -> list[str]:
    from irisbench.policies.shapes_lm_assets import shipped_base_available

    return [*REFERENCE_POLICIES, *(["shapes-base"] if shipped_base_available() else [])]


def run_experiment(out: str | Path, *, splits: list[str], seed: int = 0,
                   console: Console | None = None) -> dict[str, Any]:
    from irisbench.evaluate import EvalOptions, evaluate
    from irisbench.runs import atomic_write_json, atomic_write_text

    console = console or Console()
    out = Path(out)
    rows: list[dict[str, Any]] = []
    for policy in experiment_policies():
        for split in splits:
            console.rule(f"[bold]{policy}[/] on geneval ({split})")
            res = evaluate(EvalOptions(policy=policy, suite="geneval", split=split, seed=seed),
                           out / policy / split)
            s = res["scores"]
            rows.append({"policy": policy, "split": split,
                         "overall": s["overall"]["score"],
                         "overall_ci": [s["overall"]["ci_low"], s["overall"]["ci_high"]],
                         "tags": {t: v["score"] for t, v in s["tags"].items()},
                         "images": res["counts"]["actual"], "expected": res["counts"]["expected"],
                         "images_per_s": res["timing"]["images_per_s"]})
    summary = {"suite": "geneval", "world": "shapes", "seed": seed, "rows": rows}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", summary_markdown(rows))
    console.print(summary_table(rows))
    console.print(f"summary: {out / 'summary.md'}")
    return summary


def _tags(rows: list[dict[str, Any]]) -> list[str]:
    return list(rows[0]["tags"]) if rows else []


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    tags = _tags(rows)
    head = ["policy", "split", "overall (95% CI)", *tags, "images"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lo, hi = r["overall_ci"]
        cells = [r["policy"], r["split"], f"{r['overall']:.3f} [{lo:.3f}, {hi:.3f}]",
                 *(f"{r['tags'][t]:.3f}" for t in tags), f"{r['images']}/{r['expected']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


SHORT_TAGS = {"single_object": "single", "two_object": "two", "counting": "count", "colors": "colors",
              "position": "pos", "color_attr": "attr"}


def summary_table(rows: list[dict[str, Any]]) -> Table:
    tags = _tags(rows)
    table = Table(title="GenEval (shapes world)")
    table.add_column("policy", no_wrap=True)
    table.add_column("split")
    table.add_column("overall [95% CI]", justify="right", no_wrap=True)
    for t in tags:
        table.add_column(SHORT_TAGS.get(t, t), justify="right")
    for r in rows:
        lo, hi = r["overall_ci"]
        table.add_row(r["policy"], r["split"], f"{r['overall']:.3f} [{lo:.2f}, {hi:.2f}]",
                      *(f"{r['tags'][t]:.2f}" for t in tags))
    return table


def load_summary(out: str | Path) -> dict[str, Any]:
    return json.loads((Path(out) / "summary.json").read_text(encoding="utf-8"))
