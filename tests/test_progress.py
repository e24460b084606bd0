"""Progress: plain periodic lines when stdout is not a terminal (cluster logs), rich's bar on one."""

from __future__ import annotations

import io

from irisbench.core.progress import PlainProgress, progress_bar


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_plain_progress_prints_every_interval_and_at_the_end() -> None:
    clock, out = FakeClock(), io.StringIO()
    with PlainProgress("grpo", every_s=10, stream=out, clock=clock) as bar:
        task = bar.add_task("grpo", total=4, completed=0, reward=float("nan"))
        for step in range(1, 5):
            clock.t += 4.0
            bar.update(task, completed=step, reward=0.5 * step)
    lines = out.getvalue().splitlines()
    # 4 s per step: a line once 10 s have passed (step 3, t=12) and at the end (step 4), no other
    assert lines == ["grpo 3/4 (75%) reward=1.5 elapsed 0:00:12 eta 0:00:04",
                     "grpo 4/4 (100%) reward=2 elapsed 0:00:16"]


def test_plain_progress_counts_from_a_resumed_start_and_flushes_the_last_state() -> None:
    clock, out = FakeClock(), io.StringIO()
    with PlainProgress("eval", every_s=100, stream=out, clock=clock) as bar:
        task = bar.add_task("eval", total=10, completed=6)
        clock.t = 8.0
        bar.advance(task, 2)
    # no interval passed and not finished: the closing line still reports where it stopped
    assert out.getvalue().splitlines() == ["eval 8/10 (80%) elapsed 0:00:08 eta 0:00:08"]


def test_progress_bar_is_plain_when_stdout_is_not_a_terminal(capsys) -> None:
    from rich.progress import Progress

    bar = progress_bar(label="pretrain")  # pytest captures stdout: not a terminal
    assert isinstance(bar, PlainProgress) and bar.label == "pretrain"
    assert isinstance(progress_bar(disable=True), Progress)
