"""Bounded retries with exponential backoff, for calls to a judge server (WISE's ``OpenAIJudge``, or any other
judge-backed scorer).

``Backoff(attempts, first_wait, factor, max_wait)``: at most ``attempts`` calls; after failed call ``k``
(1-based, not the last) the caller waits ``min(first_wait * factor**(k-1), max_wait)`` seconds. The official
WISE loop retries without waiting; waiting lets a judge that is restarting or overloaded come back, and the
cap keeps a dead judge from stalling a run for long (the total wait per item is bounded by
``(attempts - 1) * max_wait``). The wait goes through ``Backoff.sleep`` (default: this module's ``sleep``,
i.e. ``time.sleep``), so tests inject a recorder and never sleep for real.

``short_cause`` turns an exception into the short cause a user reads first ("Connection refused",
"HTTP 503", "timed out").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from irisbench.core.errors import UsageError


def sleep(seconds: float) -> None:
    """The default wait (``time.sleep``), looked up at call time so tests can replace it."""
    time.sleep(seconds)


@dataclass(frozen=True)
class Backoff:
    attempts: int = 3
    first_wait: float = 2.0
    factor: float = 2.0
    max_wait: float = 30.0
    sleep: Callable[[float], None] | None = None  # None: this module's ``sleep``

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise UsageError(f"retries must be >= 1 (attempts per item), got {self.attempts!r}")
        for name in ("first_wait", "max_wait"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise UsageError(f"backoff {name} must be a finite number of seconds >= 0, got {value!r}")
        if not isinstance(self.factor, (int, float)) or not 1 <= self.factor < float("inf"):
            raise UsageError(f"backoff factor must be >= 1, got {self.factor!r}")

    def wait_after(self, attempt: int) -> float:
        """Seconds to wait after failed call ``attempt`` (1-based) before the next one."""
        return float(min(self.first_wait * self.factor ** (attempt - 1), self.max_wait))

    def waits(self) -> list[float]:
        """Every wait of an item whose calls all fail (``attempts - 1`` of them)."""
        return [self.wait_after(k) for k in range(1, self.attempts)]

    def pause(self, attempt: int) -> None:
        """Wait after failed call ``attempt``, unless it was the last one."""
        if attempt < self.attempts:
            seconds = self.wait_after(attempt)
            if seconds > 0:
                (self.sleep or sleep)(seconds)

    def describe(self) -> dict[str, float | int]:
        return {"attempts": self.attempts, "first_wait_s": self.first_wait, "factor": self.factor,
                "max_wait_s": self.max_wait}


def short_cause(err: BaseException) -> str:
    """The innermost human-readable reason of a failed call (an OS error's strerror, a URLError's reason)."""
    reason = getattr(err, "reason", None)
    if isinstance(reason, BaseException):
        return short_cause(reason)
    strerror = getattr(err, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror
    if isinstance(reason, str) and reason:
        return reason
    text = " ".join(str(err).split())
    return text or type(err).__name__
