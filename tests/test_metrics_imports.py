"""irisbench.metrics has no import cycle: the graph of its modules' imports (lazy ones inside functions
included) is acyclic, and every module imports alone in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import irisbench.metrics

METRICS_DIR = Path(irisbench.metrics.__file__).parent
MODULES = sorted(p.stem for p in METRICS_DIR.glob("*.py") if p.stem != "__init__")


def metrics_imports(module: str) -> set[str]:
    """The irisbench.metrics modules that ``module`` imports anywhere in its source (top level or lazy)."""
    tree = ast.parse((METRICS_DIR / f"{module}.py").read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["irisbench", "metrics"] and len(parts) >= 3 and parts[2] in MODULES:
                out.add(parts[2])
    out.discard(module)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"clip_score": {"shapes_clip"}, "shapes_clip": {"fid"}, "fid": {"clip_score"}}
    assert find_cycle(graph) == ["clip_score", "shapes_clip", "fid", "clip_score"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_metrics_import_graph_is_acyclic():
    graph = {m: metrics_imports(m) for m in MODULES}
    assert {"clip_score", "clip_model", "fid", "shapes_clip", "shapes_clip_train"} <= set(MODULES)
    assert "fid" in graph["shapes_clip_train"]  # the graph does see lazy imports
    assert find_cycle(graph) is None, f"import cycle in irisbench.metrics: {' -> '.join(find_cycle(graph))}"


@pytest.mark.parametrize("module", MODULES)
def test_each_metrics_module_imports_alone(module):
    proc = subprocess.run([sys.executable, "-c", f"import irisbench.metrics.{module}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
