"""What the evaluation harness runs: tasks, environments and the factories that build them.

An `EnvFactory` lists `EvalTask`s (each with its initial states or seeds) and builds one `EvalEnv` per
task; `EvalEnv.step` returns a `Step`. Any object with these methods works (they are Protocols);
`GymEnvAdapter` / `GymEnvFactory` wrap Gymnasium-style envs. A new environment is one module with a
factory, registered by name in `ENV_FACTORIES` so `make_env_factory(name, ...)` builds it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from prismatic.eval.policy import Observation
from prismatic.util.registry import Registry


@dataclass(frozen=True)
class EvalTask:
    """One task: episodes are run from `inits` (initial simulator states or seeds), one per episode."""

    name: str
    instruction: str
    max_steps: int
    inits: Sequence[Any]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"task {self.name!r}: max_steps must be >= 1, got {self.max_steps}")
        if len(self.inits) == 0:
            raise ValueError(f"task {self.name!r} has no initial states / seeds")


class Step(NamedTuple):
    obs: Observation
    success: bool
    done: bool  # episode over for any reason (success, failure state, the env's own time limit)
    info: Mapping[str, Any]


@runtime_checkable
class EvalEnv(Protocol):
    """An episode source. It may also define `episode_summary(success, steps, error) -> dict`, called once
    when an episode ends: its "success" and "failure_reason" keys override the record's, the rest goes to
    `EpisodeRecord.extra` (a real robot, whose outcome only the operator knows, uses it)."""

    def reset(self, init: Any) -> Observation: ...  # start an episode from one entry of EvalTask.inits

    def step(self, action: np.ndarray) -> Step: ...

    def close(self) -> None: ...


@runtime_checkable
class EnvFactory(Protocol):
    name: str

    def tasks(self) -> Sequence[EvalTask]: ...

    def make(self, task: EvalTask) -> EvalEnv: ...


class GymEnvAdapter:
    """Wraps a Gymnasium-style env (`reset(seed=)` -> (obs, info); `step` -> 5-tuple) as an `EvalEnv`.

    Success is `info["success"]` when the env reports it, else `terminated` (goal-reaching envs terminate
    only on success). The task instruction fills obs["instruction"] when the env does not provide one.
    """

    def __init__(self, env: Any, instruction: str = "") -> None:
        self.env, self.instruction = env, instruction

    def _obs(self, obs: Any) -> dict[str, Any]:
        out = dict(obs) if isinstance(obs, Mapping) else {"image": obs}
        out.setdefault("instruction", self.instruction)
        return out

    def reset(self, init: Any) -> Observation:
        obs, _ = self.env.reset(seed=int(init))
        return self._obs(obs)

    def step(self, action: np.ndarray) -> Step:
        obs, _reward, terminated, truncated, info = self.env.step(action)
        success = bool(info.get("success", terminated)) if isinstance(info, Mapping) else bool(terminated)
        return Step(self._obs(obs), success, bool(terminated or truncated), info)

    def close(self) -> None:
        self.env.close()


class GymEnvFactory:
    """Seed-based tasks over Gymnasium-style envs: `make_env(task)` builds the raw env for a task."""

    def __init__(self, name: str, tasks: Sequence[EvalTask], make_env: Callable[[EvalTask], Any]) -> None:
        self.name, self._tasks, self._make_env = name, list(tasks), make_env

    def tasks(self) -> Sequence[EvalTask]:
        return self._tasks

    def make(self, task: EvalTask) -> EvalEnv:
        return GymEnvAdapter(self._make_env(task), task.instruction)


ENV_FACTORIES: Registry[Callable[..., EnvFactory]] = Registry("evaluation environment", flag="env")
