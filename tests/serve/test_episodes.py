"""Closed-loop episodes through the server equal the same episodes with the local policy, action for
action: the harness with `RemotePolicy` (REST), and vla-eval's own episode runner with a benchmark over
the tabletop environment (vla-eval protocol, images PNG-encoded on the wire)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from serve_helpers import running
from vla_eval.benchmarks.base import StepBenchmark, StepResult
from vla_eval.connection import Connection
from vla_eval.runners.sync_runner import SyncEpisodeRunner

from prismatic.envs import TabletopEnv
from prismatic.eval import EvalTask, GymEnvAdapter, RemotePolicy, VLAPolicy, run_episode
from prismatic.serve import ServedModel

SEED, STEPS, IMAGE_SIZE, KEY = 11, 4, 64, "bridge_orig"
TASK = EvalTask("reach", "", max_steps=STEPS, inits=[SEED])


class Recording:
    """A policy wrapper that keeps every action it returns."""

    def __init__(self, policy) -> None:
        self.policy, self.actions = policy, []

    def reset(self) -> None:
        self.policy.reset()

    def act(self, obs) -> np.ndarray:
        self.actions.append(np.asarray(self.policy.act(obs)))
        return self.actions[-1]


def _episode(policy):
    recording = Recording(policy)
    env = GymEnvAdapter(TabletopEnv(IMAGE_SIZE, max_steps=STEPS))
    record = run_episode(env, recording, TASK, 0)
    assert record.error is None, record.error
    return record, np.stack(recording.actions)


@pytest.fixture(scope="module")
def local_episode(tiny_vla):
    return _episode(VLAPolicy(tiny_vla, unnorm_key=KEY))


@pytest.fixture(scope="module")
def served(tiny_vla):
    with running(ServedModel(tiny_vla, "openvla-tiny", default_unnorm_key=KEY)) as server:
        yield server


def test_harness_episode_through_the_server_equals_local(local_episode, served):
    record, actions = _episode(RemotePolicy(f"{served.url}/act", unnorm_key=KEY, timeout_s=120))
    local_record, local_actions = local_episode
    assert (record.success, record.steps, record.instruction) == (local_record.success, local_record.steps,
                                                                   local_record.instruction)  # fmt: skip
    assert actions.shape == (STEPS, 7)
    np.testing.assert_array_equal(actions, local_actions)


class TabletopBenchmark(StepBenchmark):
    """A vla-eval benchmark over the embedded tabletop environment (observations in vla-eval's keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.env, self.actions = TabletopEnv(IMAGE_SIZE, max_steps=STEPS), []

    def get_tasks(self):
        return [{"name": "reach", "seed": SEED}]

    def reset(self, task):
        self.actions.clear()
        return self.env.reset(seed=task["seed"])[0]

    def step(self, action):
        self.actions.append(np.asarray(action["actions"]))
        obs, reward, terminated, truncated, info = self.env.step(self.actions[-1])
        return StepResult(obs, reward, terminated or truncated, info)

    def make_obs(self, raw_obs, task):
        return {"images": {"agentview": raw_obs["image"]}, "task_description": raw_obs["instruction"],
                "state": raw_obs["state"]}  # fmt: skip

    def get_step_result(self, step_result):
        return {"success": bool(step_result.info.get("success", False))}


def test_vlaeval_runner_episode_through_the_server_equals_local(local_episode, served):
    async def main():
        benchmark = TabletopBenchmark()
        async with Connection(f"{served.ws_url}/vla-eval", timeout=120, max_retries=1) as conn:
            result = await SyncEpisodeRunner().run_episode(
                benchmark, benchmark.get_tasks()[0], conn, max_steps=STEPS
            )
        return result, np.stack(benchmark.actions)

    result, actions = asyncio.run(asyncio.wait_for(main(), 300))
    local_record, local_actions = local_episode
    assert result["metrics"]["success"] == local_record.success and result["steps"] == local_record.steps
    np.testing.assert_array_equal(actions, local_actions)
