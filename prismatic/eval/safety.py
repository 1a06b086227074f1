"""Between the policy and a real robot: a safety layer that bounds every commanded action, and a stop
signal (a key on the terminal, or Ctrl-C) that ends an episode without touching the robot further.

The layer works on end-effector delta actions in the Bridge layout [dx, dy, dz, droll, dpitch, dyaw,
gripper] and the robot's state [x, y, z, roll, pitch, yaw, gripper] (metres, radians, robot base frame).
Per step, in order:
  1. a non-finite or short action stops the episode (nothing is sent);
  2. the translation (dx, dy, dz) is scaled down to at most `max_translation` (its direction is kept),
     the rotation (droll, dpitch, dyaw) to at most `max_rotation`;
  3. the target position state[:3] + delta is kept inside the workspace box: clipped onto it
     (`on_violation="clip"`) or the episode stops (`"stop"`);
  4. the gripper command is binarised at `gripper_threshold` (1 = open, 0 = closed), or passed through.
Every change is recorded as an event, so a run's results show how often the layer stepped in.
The defaults are the workspace bounds of the original Bridge evaluation
(`experiments/robot/bridge/run_bridgev2_eval.py`) and limits well above Bridge data's per-step motion.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

log = logging.getLogger(__name__)

VIOLATION_MODES = ("clip", "stop")


@dataclass
class SafetyConfig:
    # fmt: off
    workspace_low: list[float] = field(default_factory=lambda: [0.1, -0.20, -0.01])   # xyz (m), Bridge eval bounds
    workspace_high: list[float] = field(default_factory=lambda: [0.45, 0.25, 0.30])
    max_translation: float = 0.05          # metres per step (norm of dx, dy, dz)
    max_rotation: float = 0.25             # radians per step (norm of droll, dpitch, dyaw)
    gripper_threshold: float | None = 0.5  # >= threshold -> 1 (open), else 0 (closed); None: pass through
    on_violation: str = "clip"             # clip | stop: what a target outside the workspace does
    stop_key: str = "q"                    # pressing it (in the terminal running the evaluation) stops the episode
    # fmt: on

    def __post_init__(self) -> None:
        problems = []
        if len(self.workspace_low) != 3 or len(self.workspace_high) != 3:
            problems.append("workspace_low and workspace_high need 3 values each (x, y, z in metres)")
        elif any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high)):
            problems.append(
                f"workspace_low {self.workspace_low} must be below workspace_high {self.workspace_high}"
            )
        if not self.max_translation > 0 or not self.max_rotation > 0:
            problems.append("max_translation and max_rotation must be > 0")
        if self.gripper_threshold is not None and not 0.0 <= self.gripper_threshold <= 1.0:
            problems.append(f"gripper_threshold must be in [0, 1] or None, got {self.gripper_threshold}")
        if self.on_violation not in VIOLATION_MODES:
            problems.append(f"on_violation {self.on_violation!r} is not one of: {', '.join(VIOLATION_MODES)}")
        if len(self.stop_key) != 1 or not self.stop_key.isprintable():
            problems.append(f"stop_key must be one printable character, got {self.stop_key!r}")
        if problems:
            raise ValueError("invalid --safety settings: " + "; ".join(problems))


@dataclass(frozen=True)
class SafeAction:
    action: np.ndarray | None  # what to send to the robot (None when stopping)
    events: tuple[str, ...]  # what the layer changed, in words
    stop: str | None = None  # why the episode must stop, if it must


class SafetyLayer:
    """Bounds each action given the robot's current state (see the module docstring)."""

    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        self.low, self.high = (
            np.asarray(config.workspace_low, float),
            np.asarray(config.workspace_high, float),
        )

    def filter(self, action: Any, state: Any) -> SafeAction:
        a = np.array(action, dtype=np.float64).reshape(-1)
        if a.shape[0] < 7 or not np.all(np.isfinite(a)):
            return SafeAction(None, (), f"unsafe action {np.round(a, 4).tolist()}: needs 7 finite values")
        events: list[str] = []
        c = self.config
        for name, sl, limit in (
            ("translation", slice(0, 3), c.max_translation),
            ("rotation", slice(3, 6), c.max_rotation),
        ):
            norm = float(np.linalg.norm(a[sl]))
            if norm > limit:
                a[sl] *= limit / norm
                events.append(f"{name} {norm:.4f} limited to {limit}")
        position = np.asarray(state, dtype=np.float64).reshape(-1)[:3]
        target = position + a[:3]
        if np.any(target < self.low) or np.any(target > self.high):
            where = np.round(target, 4).tolist()
            if c.on_violation == "stop":
                return SafeAction(
                    None,
                    tuple(events),
                    f"target {where} outside the workspace {self.low.tolist()}..{self.high.tolist()}",
                )
            a[:3] = np.clip(target, self.low, self.high) - position
            events.append(f"target {where} clipped to the workspace")
        if c.gripper_threshold is not None:
            a[6] = 1.0 if a[6] >= c.gripper_threshold else 0.0
        return SafeAction(a, tuple(events))


class StopSignal:
    """The operator's stop: a key pressed in the terminal, or Ctrl-C, while an episode runs.

    Use as a context manager around an episode. On a terminal, stdin is put in cbreak mode (keys arrive
    without Enter, nothing else changes) and restored on exit; when stdin is not a terminal (piped, a
    service, CI) the key is unavailable, which is logged once, and Ctrl-C (SIGINT, main thread only)
    still works. `poll()` returns the reason once a stop was requested; `trigger()` requests one
    programmatically (another UI, a test).
    """

    _warned_no_tty = False

    def __init__(self, key: str = "q", stream: TextIO | None = None) -> None:
        self.key, self.stream = key, stream if stream is not None else sys.stdin
        self.reason: str | None = None
        self._fd: int | None = None
        self._saved_tty: Any = None
        self._saved_sigint: Any = None

    def trigger(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def __enter__(self) -> StopSignal:
        self.reason = None
        try:
            is_tty = self.stream is not None and self.stream.isatty()
        except (AttributeError, ValueError):
            is_tty = False
        if is_tty:
            import termios
            import tty

            self._fd = self.stream.fileno()
            self._saved_tty = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        elif not StopSignal._warned_no_tty:
            StopSignal._warned_no_tty = True
            log.warning(
                "stdin is not a terminal: the stop key is off; stop an episode with Ctrl-C (or the robot's e-stop)"
            )
        if threading.current_thread() is threading.main_thread():
            self._saved_sigint = signal.signal(signal.SIGINT, lambda *_: self.trigger("Ctrl-C"))
        return self

    def poll(self) -> str | None:
        if self.reason is None and self._fd is not None:
            while select.select([self._fd], [], [], 0)[0]:
                char = os.read(self._fd, 1).decode("utf-8", "replace")
                if not char:
                    break
                if char == self.key:
                    self.trigger(f"stop key {self.key!r}")
                    break
        return self.reason

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved_tty)
            self._fd = None
        if self._saved_sigint is not None:
            signal.signal(signal.SIGINT, self._saved_sigint)
            self._saved_sigint = None
