"""The one progress bar of the package: tqdm on a terminal, a few plain lines anywhere else.

On a terminal the bar redraws in place as tqdm's does. When the stream is not a terminal (a log
file, a pipe, CI), every redraw would be one more line in the log (the tabletop demo wrote 8,000):
there the bar writes a whole line (ending in a newline) at most every `LOG_INTERVAL_S` seconds,
plus the first and the last. Postfix updates (loss, success rate) never force a redraw; they show
at the next one.

    bar = progress(total=steps, desc="train", unit="step")
    for ...:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
    bar.close()
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm

LOG_INTERVAL_S = 10.0  # seconds between lines when the output is not a terminal
TTY_INTERVAL_S = 0.1  # tqdm's own default on a terminal


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class Progress(tqdm):
    """tqdm whose redraws are rate-limited and line-based when its stream is not a terminal."""

    def __init__(self, iterable: Iterable | None = None, *, file: IO[str] | None = None,
                 mininterval: float | None = None, **kwargs: Any) -> None:  # fmt: skip
        file = sys.stderr if file is None else file
        self._as_lines = not is_terminal(file)
        if mininterval is None:
            mininterval = LOG_INTERVAL_S if self._as_lines else TTY_INTERVAL_S
        if self._as_lines:
            kwargs["dynamic_ncols"] = False  # no terminal to measure
            kwargs["maxinterval"] = max(kwargs.get("maxinterval", mininterval), mininterval)
        super().__init__(iterable, file=file, mininterval=mininterval, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if not self._as_lines:
            return super().display(msg, pos)
        if msg == "":  # tqdm clearing the bar (leave=False): nothing to erase in a log
            return False
        self.fp.write((self.__str__() if msg is None else msg) + "\n")
        self.fp.flush()
        return True

    def close(self) -> None:
        if self._as_lines and not self.disable:
            if (self.leave is None or self.leave) and self.n != self.last_print_n:
                self.display()  # the final state, unless the last line already showed it
            self.leave = False  # tqdm would otherwise redraw it and end with a bare newline
        super().close()

    # `refresh` stays in the signatures for tqdm's callers; a postfix never forces a redraw here.
    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        del refresh
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        del refresh
        super().set_postfix_str(s, refresh=False)


def progress(iterable: Iterable | None = None, **kwargs: Any) -> Progress:
    """A progress bar (tqdm's arguments: total, desc, unit, file, disable, leave, ...); see the module docstring."""
    return Progress(iterable, **kwargs)
