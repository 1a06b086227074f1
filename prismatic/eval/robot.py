"""Real-robot evaluation with the original Bridge protocol, through the evaluation harness.

The closed loop of the original `experiments/robot/bridge/run_bridgev2_eval.py`: the robot moves to its
start pose, the operator sets the scene and starts the episode, then at `control_hz` (5 Hz) for at most
`max_steps` (60) steps: observe, prepare the image exactly as the training data was (JPEG round trip,
lanczos3 resize to 224, no centre crop), ask the policy (un-normalised with `bridge_orig`), send the
action (non-blocking by default, `blocking=True` waits for each motion). Afterwards the operator labels
the episode: success, or one failure reason from `FAILURE_REASONS`.

Differences from the original, all on the safety side: every action passes the `SafetyLayer`
(`prismatic.eval.safety`) before it reaches the robot, a stop key or Ctrl-C ends the episode (the run
goes on with the next one), and tasks are listed up front (not typed before each episode), so the run
is a harness evaluation: `results.json` after every episode (success, failure reason, safety events,
the recorded data), videos of every episode, a rerun resumes, `--redo TASK:EPISODE` repeats one.

    robot = WidowXRobot(WidowXConfig())                    # or TabletopRobot() to rehearse in simulation
    policy = VLAPolicy(vla, "bridge_orig", preprocess=bridge_image_preprocessor())   # or RemotePolicy(...)
    results = run_robot_evaluation(robot, policy, "runs/robot/carrot", ["put the carrot on the plate"],
                                   episodes_per_task=10, operator=ConsoleOperator())

A robot is anything with `reset(seed)`, `observe() -> {"image", "state"}`, `apply(action, blocking)`
and `close()` (`RobotEnv`); each episode's states, policy actions and applied actions are written to
`episodes/<task>--epNNN.npz` next to `results.json`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from prismatic.eval.env import EvalTask, Step
from prismatic.eval.harness import RESULTS_FILE, EvalResults, run_evaluation
from prismatic.eval.policy import Observation, Policy
from prismatic.eval.safety import SafetyConfig, SafetyLayer, StopSignal
from prismatic.eval.video import slugify
from prismatic.util.io import atomic_write

log = logging.getLogger(__name__)

FAILURE_REASONS: dict[str, str] = {
    "perception_miss": "did not see or localise the target (reached for nothing, or the wrong place)",
    "wrong_object": "acted on another object than the instruction names",
    "bad_grasp": "reached the right object but the grasp failed or slipped",
    "collision_or_safety_stop": "hit something, or the safety layer / operator stopped the episode",
    "sequencing_error": "right pieces, wrong order or an unfinished sequence (e.g. never released)",
}
BRIDGE_UNNORM_KEY = "bridge_orig"
BRIDGE_IMAGE_SIZE = 224


# -- the robot -----------------------------------------------------------------------------------------
@runtime_checkable
class RobotEnv(Protocol):
    """A robot as the evaluation drives it. `observe()` returns {"image": HxWx3 uint8 (the full camera
    frame), "state": [x, y, z, roll, pitch, yaw, gripper]}; `apply` sends one delta action."""

    def reset(self, seed: int | None = None) -> None: ...

    def observe(self) -> Mapping[str, Any]: ...

    def apply(self, action: np.ndarray, blocking: bool = False) -> None: ...

    def close(self) -> None: ...


@dataclass
class WidowXConfig:
    # fmt: off
    host: str = "localhost"                 # the widowx_envs robot server (bridge_data_robot)
    port: int = 5556
    init_ee_pos: list[float] = field(default_factory=lambda: [0.3, -0.09, 0.26])   # start position (m)
    init_ee_quat: list[float] = field(default_factory=lambda: [0.0, -0.259, 0.0, -0.966])
    workspace_bounds: list[list[float]] = field(default_factory=lambda: [[0.1, -0.20, -0.01, -1.57, 0.0],
                                                                         [0.45, 0.25, 0.30, 1.57, 0.0]])
    camera_topics: list[str] = field(default_factory=lambda: ["/blue/image_raw"])
    observation_timeout_s: float = 30.0     # waiting longer for a camera frame is an error
    # fmt: on


class WidowXRobot:
    """A WidowX 250 through the `widowx_envs` client of rail-berkeley/bridge_data_robot, set up as the
    original Bridge evaluation does (its default env parameters, workspace bounds, camera topic, full
    images, start pose with the gripper pitched ~15 degrees, reached with a blocking move)."""

    # The original's start orientation (a rotation about y) with the position filled in per episode.
    START_ROTATION = np.array([[0.267, 0.000, 0.963], [0.000, 1.000, 0.000], [-0.963, 0.000, 0.267]])

    def __init__(self, config: WidowXConfig | None = None) -> None:
        try:
            from widowx_envs.widowx_env_service import WidowXClient, WidowXConfigs
        except ImportError as e:
            raise ImportError(
                "the WidowX robot needs the `widowx_envs` client from https://github.com/rail-berkeley/bridge_data_robot "
                "(not on PyPI): clone it and `pip install -e bridge_data_robot/widowx_envs` in this environment, "
                f"then start the robot server on the robot's computer ({e})"
            ) from None
        self.config = c = config or WidowXConfig()
        params = WidowXConfigs.DefaultEnvParams.copy()
        params.update(override_workspace_boundaries=c.workspace_bounds, return_full_image=True,
                      camera_topics=[{"name": t} for t in c.camera_topics],
                      start_state=list(np.concatenate([c.init_ee_pos, c.init_ee_quat])))  # fmt: skip
        self.client = WidowXClient(host=c.host, port=c.port)
        self.client.init(params)

    def reset(self, seed: int | None = None) -> None:
        self.client.reset()
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = self.START_ROTATION, self.config.init_ee_pos
        self.client.move(
            pose, duration=0.8, blocking=True
        )  # blocking: the controller re-reads its pose after

    def observe(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.config.observation_timeout_s
        while (obs := self.client.get_observation()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no observation from the WidowX server within {self.config.observation_timeout_s} s"
                )
            time.sleep(0.1)
        return {
            "image": np.asarray(obs["full_image"], dtype=np.uint8),
            "state": np.asarray(obs["state"], np.float64),
        }

    def apply(self, action: np.ndarray, blocking: bool = False) -> None:
        self.client.step_action(np.asarray(action, dtype=np.float64), blocking=blocking)

    def close(self) -> None:
        pass  # the server keeps the robot; nothing to release on this side


class TabletopRobot:
    """The embedded tabletop environment (`prismatic.envs.TabletopEnv`) behind the robot protocol: a
    simulated robot to rehearse an evaluation, and to test the loop end to end. Workspace: the table's
    reach, x and y in [-0.28, 0.28] m, z fixed at the hover height."""

    SAFE_WORKSPACE = ([-0.28, -0.28, 0.0], [0.28, 0.28, 0.2])

    def __init__(self, image_size: int = 224, num_objects: int = 3, start: str = "home") -> None:
        from prismatic.envs import TabletopEnv

        self.env = TabletopEnv(image_size, num_objects, max_steps=10_000, start=start)
        self._state: np.ndarray | None = None
        self._done = True

    def reset(self, seed: int | None = None) -> None:
        obs, _ = self.env.reset(seed=seed)
        self._state, self._done = obs["state"], False

    @property
    def instruction(self) -> str:
        return self.env.scene.instruction

    def observe(self) -> dict[str, Any]:
        if self._state is None:
            raise RuntimeError("TabletopRobot.observe() before reset()")
        return {"image": self.env.render(), "state": np.asarray(self._state, np.float64)}

    def apply(self, action: np.ndarray, blocking: bool = False) -> None:
        if self._done:  # the simulated task ended (touched): the arm holds still, as a real one would
            return
        obs, _, terminated, truncated, _ = self.env.step(np.asarray(action, np.float32))
        self._state, self._done = obs["state"], terminated or truncated

    def close(self) -> None:
        self.env.close()


def bridge_image_preprocessor(size: int = BRIDGE_IMAGE_SIZE) -> Callable[[np.ndarray], np.ndarray]:
    """The Bridge evaluation's image preparation: JPEG round trip, TF lanczos3 resize, no centre crop
    (the training data's own steps; `prismatic.eval.libero` holds the TF implementations)."""
    from prismatic.eval.libero import make_image_preprocessor

    return make_image_preprocessor(size, crop=False)


# -- the operator --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Label:
    success: bool
    failure_reason: str | None = None  # one of FAILURE_REASONS when success is False
    note: str = ""

    def __post_init__(self) -> None:
        if self.success and self.failure_reason is not None:
            raise ValueError("a successful episode has no failure reason")
        if not self.success and self.failure_reason not in FAILURE_REASONS:
            raise ValueError(
                f"failure reason {self.failure_reason!r} is not one of: {', '.join(FAILURE_REASONS)}"
            )


@dataclass(frozen=True)
class EpisodeReport:
    """What the operator is told before labelling an episode."""

    task: str
    episode: int
    steps: int
    stop: str | None  # the safety layer's or the operator's stop, if any
    interventions: int  # steps where the safety layer changed the action
    error: str | None

    @property
    def suggested_reason(self) -> str | None:
        return "collision_or_safety_stop" if self.stop else None


class Operator(Protocol):
    def start(self, task: EvalTask, episode: int) -> None: ...  # returns when the scene is set

    def label(self, report: EpisodeReport) -> Label: ...


class ConsoleOperator:
    """Prompts on the terminal: Enter to start each episode, then success (y/n) and a failure reason."""

    def __init__(self, ask: Callable[[str], str] = input, say: Callable[[str], None] = print) -> None:
        self.ask, self.say = ask, say

    def start(self, task: EvalTask, episode: int) -> None:
        self.ask(
            f"\n[{task.name} #{episode}] {task.instruction!r}: set up the scene, then press Enter to start "
        )

    def label(self, report: EpisodeReport) -> Label:
        stop = f", stopped: {report.stop}" if report.stop else ""
        error = f", error: {report.error}" if report.error else ""
        self.say(
            f"episode over after {report.steps} steps, {report.interventions} safety interventions{stop}{error}"
        )
        while (answer := self.ask("success? [y/n] ").strip().lower()) not in ("y", "n"):
            self.say("answer y or n")
        if answer == "y":
            return Label(True)
        reasons = list(FAILURE_REASONS)
        for i, name in enumerate(reasons, 1):
            self.say(f"  {i}. {name}: {FAILURE_REASONS[name]}")
        default = reasons.index(report.suggested_reason) + 1 if report.suggested_reason else None
        prompt = f"failure reason [1-{len(reasons)}]{f' (Enter: {default})' if default else ''} "
        while True:
            answer = self.ask(prompt).strip() or (str(default) if default else "")
            if answer.isdigit() and 1 <= int(answer) <= len(reasons):
                break
            self.say(f"type a number from 1 to {len(reasons)}")
        return Label(False, reasons[int(answer) - 1], self.ask("note (optional) ").strip())


class ScriptedOperator:
    """Labels given up front, in episode order (non-interactive runs: the simulated robot, tests)."""

    def __init__(self, labels: Sequence[Label | Mapping[str, Any]]) -> None:
        self._labels: Iterator[Label] = iter(x if isinstance(x, Label) else Label(**x) for x in labels)
        self.reports: list[EpisodeReport] = []

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedOperator:
        """A JSON list of {"success": bool, "failure_reason": str | null, "note": str}."""
        return cls(json.loads(Path(path).read_text()))

    def start(self, task: EvalTask, episode: int) -> None:
        pass

    def label(self, report: EpisodeReport) -> Label:
        self.reports.append(report)
        try:
            return next(self._labels)
        except StopIteration:
            raise RuntimeError(f"no operator label left for {report.task} #{report.episode}") from None


# -- the loop ------------------------------------------------------------------------------------------
class Pacer:
    """Fixed-rate ticks (the original's 5 Hz): `wait()` sleeps until the next tick; a late step starts the
    next period at once (no burst of catch-up steps). hz=0 disables pacing (simulation, tests)."""

    def __init__(
        self,
        hz: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if hz < 0 or not math.isfinite(hz):
            raise ValueError(f"control_hz must be >= 0 (0: no pacing), got {hz}")
        self.period, self.clock, self.sleep = (1.0 / hz if hz else 0.0), clock, sleep
        self.ticks: list[float] = []

    def start(self) -> None:
        self.ticks = [self.clock()]

    def wait(self) -> None:
        target, now = self.ticks[-1] + self.period, self.clock()
        if now < target:
            self.sleep(target - now)
            now = target
        self.ticks.append(now)

    def measured_hz(self) -> float | None:
        if len(self.ticks) < 2 or self.ticks[-1] == self.ticks[0]:
            return None
        return (len(self.ticks) - 1) / (self.ticks[-1] - self.ticks[0])


class RobotEvalEnv:
    """One task on the robot as a harness environment (`EvalEnv`): reset = start pose + operator go;
    step = stop check, safety layer, send, wait for the next tick, observe; the episode's end =
    recording + the operator's label (`episode_summary`)."""

    def __init__(
        self,
        robot: RobotEnv,
        task: EvalTask,
        out_dir: Path,
        safety: SafetyLayer,
        operator: Operator,
        control_hz: float = 5.0,
        blocking: bool = False,
        stop_signal: Callable[[], StopSignal] | None = None,
        pacer: Pacer | None = None,
        save_frames: bool = False,
    ) -> None:
        self.robot, self.task, self.out_dir, self.safety, self.operator = (
            robot,
            task,
            out_dir,
            safety,
            operator,
        )
        self.blocking, self.save_frames = blocking, save_frames
        self.pacer = pacer or Pacer(control_hz)
        self.make_stop = stop_signal or (lambda: StopSignal(safety.config.stop_key))
        self._stop: StopSignal | None = None
        self._reset_episode(-1)

    def _reset_episode(self, episode: int) -> None:
        self.episode, self.stop_reason = episode, None
        self.states: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.applied: list[np.ndarray] = []
        self.frames: list[np.ndarray] = []
        self.events: list[dict[str, Any]] = []

    def _observe(self) -> Observation:
        raw = self.robot.observe()
        image, state = np.asarray(raw["image"], np.uint8), np.asarray(raw["state"], np.float64)
        self.states.append(state)
        if self.save_frames:
            self.frames.append(image)
        self._last = {"image": image, "state": state, "instruction": self.task.instruction}
        return self._last

    def reset(self, init: Any) -> Observation:
        self._reset_episode(int(init))
        self.robot.reset(seed=int(init))
        self.operator.start(self.task, self.episode)
        self._stop = self.make_stop().__enter__()
        self.pacer.start()
        return self._observe()

    def step(self, action: np.ndarray) -> Step:
        step = len(self.actions)
        self.actions.append(np.asarray(action, np.float64).reshape(-1))
        reason = self._stop.poll() if self._stop is not None else None
        decision = None if reason else self.safety.filter(action, self.states[-1])
        if decision is not None and decision.events:
            self.events.append({"step": step, "events": list(decision.events)})
        reason = reason or (decision.stop if decision is not None else None)
        if reason:
            self.stop_reason = reason
            log.warning("episode stopped at step %d: %s", step, reason)
            return Step(self._last, False, True, {"stop": reason})
        self.applied.append(decision.action)
        self.robot.apply(decision.action, blocking=self.blocking)
        self.pacer.wait()
        return Step(self._observe(), False, False, {})

    def _save_data(self) -> str:
        path = self.out_dir / "episodes" / f"{slugify(self.task.name)}--ep{self.episode:03d}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        dim = len(self.actions[0]) if self.actions else 7
        arrays = {
            "states": np.asarray(self.states, np.float64),
            "actions": np.asarray(self.actions, np.float64).reshape(-1, dim),  # the policy's
            "applied_actions": np.asarray(self.applied, np.float64).reshape(
                -1, dim
            ),  # after the safety layer
            "tick_times": np.asarray(self.pacer.ticks, np.float64)
            - (self.pacer.ticks[0] if self.pacer.ticks else 0),
        }
        if self.save_frames:
            arrays["frames"] = np.asarray(self.frames, np.uint8)
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
        return str(path.relative_to(self.out_dir))

    def episode_summary(self, success: bool, steps: int, error: str | None) -> dict[str, Any]:
        if self._stop is not None:
            self._stop.__exit__(None, None, None)
            self._stop = None
        data = self._save_data()
        report = EpisodeReport(self.task.name, self.episode, steps, self.stop_reason, len(self.events), error)
        label = self.operator.label(report)
        hz = self.pacer.measured_hz()
        return {"success": label.success, "failure_reason": label.failure_reason, "note": label.note,
                "stop": self.stop_reason, "safety_interventions": len(self.events), "safety_events": self.events[:50],
                "data": data, "measured_hz": None if hz is None else round(hz, 2)}  # fmt: skip

    def close(self) -> None:
        if self._stop is not None:
            self._stop.__exit__(None, None, None)
            self._stop = None


class RobotEnvFactory:
    """The harness's view of a robot session: one task per instruction, `episodes_per_task` episodes each."""

    def __init__(self, name: str, robot: RobotEnv, instructions: Sequence[str], episodes_per_task: int,
                 max_steps: int, make_env: Callable[[EvalTask], RobotEvalEnv]) -> None:  # fmt: skip
        if not instructions:
            raise ValueError(
                "give at least one task instruction (--tasks '[\"put the carrot on the plate\"]')"
            )
        if len({slugify(i) for i in instructions}) != len(instructions):
            raise ValueError(f"task instructions must differ (after slugify): {list(instructions)}")
        if episodes_per_task < 1 or max_steps < 1:
            raise ValueError(
                f"episodes_per_task and max_steps must be >= 1, got {episodes_per_task}, {max_steps}"
            )
        self.name, self.robot, self._make_env = name, robot, make_env
        self._tasks = [
            EvalTask(slugify(i), i, max_steps, list(range(episodes_per_task))) for i in instructions
        ]

    def tasks(self) -> Sequence[EvalTask]:
        return self._tasks

    def make(self, task: EvalTask) -> RobotEvalEnv:
        return self._make_env(task)


def drop_episodes(out_dir: str | Path, which: Sequence[str]) -> list[str]:
    """Remove "TASK:EPISODE" records from out_dir/results.json so the next run repeats them (--redo)."""
    path = Path(out_dir) / RESULTS_FILE
    if not which or not path.exists():
        return []
    results = EvalResults.load(path)
    wanted = set()
    for spec in which:
        task, sep, ep = spec.rpartition(":")
        if not sep or not ep.isdigit():
            raise ValueError(
                f"--redo entries are TASK:EPISODE (e.g. put_the_carrot_on_the_plate:3), got {spec!r}"
            )
        wanted.add((task, int(ep)))
    known = {(e.task, e.episode) for e in results.episodes}
    missing = sorted(wanted - known)
    if missing:
        raise ValueError(f"--redo names episodes not in {path}: {missing}; recorded: {sorted(known)[:20]}")
    results.episodes = [e for e in results.episodes if (e.task, e.episode) not in wanted]
    results.save(out_dir)
    return [f"{t}:{e}" for t, e in sorted(wanted)]


def run_robot_evaluation(
    robot: RobotEnv,
    policy: Policy,
    out_dir: str | Path,
    instructions: Sequence[str],
    *,
    episodes_per_task: int = 10,
    max_steps: int = 60,
    control_hz: float = 5.0,
    blocking: bool = False,
    safety: SafetyConfig | None = None,
    operator: Operator | None = None,
    robot_name: str = "robot",
    config: Mapping[str, Any] | None = None,
    resume: bool = True,
    stop_signal: Callable[[], StopSignal] | None = None,
    save_frames: bool = False,
    progress: bool = True,
) -> EvalResults:
    """The Bridge protocol on `robot` for every instruction; results, videos and data under `out_dir`."""
    out_dir = Path(out_dir)
    layer = SafetyLayer(safety or SafetyConfig())
    operator = operator or ConsoleOperator()

    def make_env(task: EvalTask) -> RobotEvalEnv:
        return RobotEvalEnv(robot, task, out_dir, layer, operator, control_hz=control_hz, blocking=blocking,
                            stop_signal=stop_signal, save_frames=save_frames)  # fmt: skip

    factory = RobotEnvFactory(
        f"robot:{robot_name}", robot, instructions, episodes_per_task, max_steps, make_env
    )
    settings = {"control_hz": control_hz, "blocking": blocking, "max_steps": max_steps,
                "safety": vars(layer.config), **dict(config or {})}  # fmt: skip
    return run_evaluation(factory, policy, out_dir, video_episodes="all", video_fps=max(1, round(control_hz or 5)),
                          config=settings, resume=resume, progress=progress)  # fmt: skip
