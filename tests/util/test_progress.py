"""prismatic.util.progress: a bar on a terminal, a few whole lines in a log."""

from __future__ import annotations

import io
import time

from prismatic.util.progress import LOG_INTERVAL_S, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """Stands in for the bar's clock (tqdm reads time through `bar._time`), so no test sleeps."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_not_a_terminal_writes_the_first_and_last_state_as_whole_lines():
    log = io.StringIO()
    bar = progress(total=2000, desc="train", unit="step", file=log)
    for i in range(2000):  # a fast loop: no line is due in between
        bar.update(1)
        bar.set_postfix(loss=f"{i:.1f}")  # never forces a redraw
    bar.close()
    lines = log.getvalue().split("\n")
    assert "\r" not in log.getvalue() and lines[-1] == ""
    assert len(lines[:-1]) == 2, lines
    assert "0/2000" in lines[0] and "2000/2000" in lines[1] and "loss=1999.0" in lines[1]


def test_not_a_terminal_writes_at_most_one_line_per_interval():
    log, clock = io.StringIO(), Clock()
    bar = progress(total=600, desc="train", file=log)
    bar._time = clock
    for _ in range(600):  # 600 steps of 0.5 s: 300 s, so about 300 / LOG_INTERVAL_S lines
        clock.now += 0.5
        bar.update(1)
        bar.set_postfix(acc="0.9")
    bar.close()
    lines = log.getvalue().splitlines()
    assert 300 / LOG_INTERVAL_S - 2 <= len(lines) <= 300 / LOG_INTERVAL_S + 2, len(lines)
    assert lines[-1].startswith("train: 100%") and "600/600" in lines[-1]


def test_an_iterated_bar_that_does_not_stay_leaves_no_blank_line():
    log = io.StringIO()
    assert sum(progress(range(300), desc="render", file=log, leave=False)) == sum(range(300))
    assert log.getvalue().count("\n") == 1 and log.getvalue().startswith("render:")


def test_a_terminal_gets_tqdm_redrawing_in_place():
    tty = Terminal()
    bar = progress(total=3, desc="eval", file=tty, mininterval=0)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert tty.getvalue().count("\r") >= 3 and "3/3" in tty.getvalue()


def test_disabled_writes_nothing():
    log = io.StringIO()
    with progress(total=10, file=log, disable=True) as bar:
        bar.update(10)
    assert log.getvalue() == ""
