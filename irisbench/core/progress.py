"""Progress for long commands: a rich bar on a terminal, plain periodic lines anywhere else.

On a cluster, stdout is a log file: a live bar there writes nothing useful (rich draws only at the
end) or floods the log with redraws. ``progress_bar`` returns rich's ``Progress`` when stdout is a
terminal and otherwise a ``PlainProgress`` that prints one line, flushed, at most every ``every_s``
seconds (``IRISBENCH_PROGRESS_EVERY``, default 30) and at the end, e.g.
``grpo 12/40 (30%) reward=+0.123 sc=0.456 elapsed 0:01:23 eta 0:03:14``. Both take the same calls
(``add_task``, ``update``, ``advance``) so a command uses one code path.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class PlainProgress:
    """Rich-``Progress``-like tasks that print a plain line per ``every_s`` seconds and one at the end."""

    def __init__(self, label: str, *, every_s: float | None = None, stream: IO[str] | None = None,
                 clock: Any = time.monotonic) -> None:
        self.label = label
        self.every_s = float(os.environ.get("IRISBENCH_PROGRESS_EVERY", "30")) if every_s is None else every_s
        self.stream = stream
        self._clock = clock
        self._tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        for task_id, t in self._tasks.items():
            if t["printed_at"] != t["completed"]:
                self._print(task_id)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields: Any) -> int:
        task_id = len(self._tasks)
        now = self._clock()
        self._tasks[task_id] = {"description": description or self.label, "total": total, "completed": completed,
                                "start": completed, "fields": dict(fields), "started": now, "last": now,
                                "printed_at": completed}
        return task_id

    def update(self, task_id: int, *, completed: float | None = None, advance: float | None = None,
               total: float | None = None, **fields: Any) -> None:
        t = self._tasks[task_id]
        if total is not None:
            t["total"] = total
        if completed is not None:
            t["completed"] = completed
        if advance is not None:
            t["completed"] += advance
        t["fields"].update({k: v for k, v in fields.items() if k not in ("description", "refresh", "visible")})
        now = self._clock()
        finished = t["total"] is not None and t["completed"] >= t["total"]
        if finished or now - t["last"] >= self.every_s:
            self._print(task_id)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def line(self, task_id: int) -> str:
        t = self._tasks[task_id]
        done, total = t["completed"], t["total"]
        parts = [t["description"], f"{done:g}/{total:g}" if total else f"{done:g}"]
        if total:
            parts.append(f"({100 * done / total:.0f}%)")
        parts += [f"{k}={_value(v)}" for k, v in t["fields"].items()]
        elapsed = self._clock() - t["started"]
        parts.append(f"elapsed {_clock(elapsed)}")
        rate_done = done - t["start"]
        if total and rate_done > 0 and done < total:
            parts.append(f"eta {_clock(elapsed / rate_done * (total - done))}")
        return " ".join(parts)

    def _print(self, task_id: int) -> None:
        t = self._tasks[task_id]
        stream = self.stream or sys.stdout
        print(self.line(task_id), file=stream, flush=True)
        t["last"], t["printed_at"] = self._clock(), t["completed"]


def progress_bar(*columns: Any, disable: bool = False, label: str = "progress", transient: bool = False) -> Any:
    """Rich ``Progress(*columns)`` on a terminal; ``PlainProgress(label)`` when stdout is not one."""
    from rich.progress import Progress

    if disable or sys.stdout.isatty():
        return Progress(*columns, disable=disable, transient=transient)
    return PlainProgress(label)
