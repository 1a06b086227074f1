"""Policies and data helpers for `TabletopEnv`: scripted expert, random baseline, demo collection, rollouts,
and the language-swapped control (`SwappedInstructionEnv`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from prismatic.envs.tabletop import ACTION_HIGH, ACTION_LOW, TabletopEnv, king_step

# A policy maps (obs, info) to a 7-D action. Learned policies must read only `obs` (image, state,
# instruction); `info` carries the ground truth that only the scripted expert may use.
Policy = Callable[[Mapping[str, Any], Mapping[str, Any]], np.ndarray]


class ScriptedExpert:
    """King moves towards the target object (`tabletop.king_step`): +-MAX_DELTA or 0 on each of x, y.

    Each action dimension takes at most three values (a continuous remainder only in the rare case the
    success radius is below 0.71 * MAX_DELTA); z, rotations are 0 and the gripper stays open (1.0),
    i.e. constant dimensions a model learns trivially. `noise_std` (metres, per axis, on x and y) is
    for executing the expert; the demos from `collect_episodes` record the clean action instead.
    """

    # Names the behaviour; change it whenever the actions change, so recorded demos are not reused.
    VERSION = "king-moves"

    def __init__(self, noise_std: float = 0.0, seed: int | None = None, success_radius: float = 0.06) -> None:
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        self.noise_std, self.success_radius = float(noise_std), float(success_radius)
        self._rng = np.random.default_rng(seed)

    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray:
        offset = np.asarray(info["target"]["position"]) - np.asarray(obs["state"][:2], np.float64)
        delta = king_step(offset, self.success_radius)
        if self.noise_std:
            delta = delta + self._rng.normal(0.0, self.noise_std, size=2)
        action = np.array([delta[0], delta[1], 0.0, 0.0, 0.0, 0.0, 1.0])
        return np.clip(action, ACTION_LOW, ACTION_HIGH).astype(np.float32)

    __call__ = act


class RandomPolicy:
    """Uniform samples from the action space (the chance-level baseline)."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)

    def act(self, obs: Mapping[str, Any] | None = None, info: Mapping[str, Any] | None = None) -> np.ndarray:
        return self._rng.uniform(ACTION_LOW, ACTION_HIGH).astype(np.float32)

    __call__ = act


def swap_instruction(info: Mapping[str, Any], rng: np.random.Generator | None = None) -> str:
    """The episode's instruction with the target replaced by a DIFFERENT object in the scene.

    Same phrasing, other object, so the only change is the grounding (the "language-blind" control).
    Without `rng` the next object in scene order is used, which is deterministic per episode.
    """
    others = [obj for obj in info["objects"] if obj["index"] != info["target"]["index"]]
    if not others:
        raise ValueError("swap_instruction needs a scene with at least 2 objects (num_objects >= 2)")
    if rng is None:
        after = [obj for obj in others if obj["index"] > info["target"]["index"]]
        other = (after or others)[0]
    else:
        other = others[int(rng.integers(len(others)))]
    return info["template"].format(other["name"])


class SwappedInstructionEnv(TabletopEnv):
    """The language-blind control: the policy is told to go to another object of the scene
    (`swap_instruction`, drawn from the episode seed), while success still means the TRUE target.

    A policy that follows the instruction scores near 0% here; one that ignores it scores as it does
    on `TabletopEnv`. Needs at least two objects per scene.
    """

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, info = super().reset(seed=seed, options=options)
        self._shown = swap_instruction(info, np.random.default_rng(seed))
        return {**obs, "instruction": self._shown}, info

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        return {**obs, "instruction": self._shown}, reward, terminated, truncated, info


def rollout(
    env: TabletopEnv,
    policy: Policy,
    seed: int,
    *,
    instruction: str | None = None,
    swap_language: bool = False,
    record_frames: bool = False,
) -> dict[str, Any]:
    """Run one closed-loop episode; success is always judged against the scene's TRUE target.

    `instruction` (or `swap_language=True`, which uses `swap_instruction`) replaces the instruction the
    policy sees in `obs` and `info`, e.g. for the language-blind control. Returns success, steps, the
    true and the shown instruction, the seed, and (with `record_frames`) the images uint8 [T+1, H, W, 3].
    """
    if instruction is not None and swap_language:
        raise ValueError("pass either instruction or swap_language=True, not both")
    obs, info = env.reset(seed=seed)
    shown = swap_instruction(info) if swap_language else (instruction or info["instruction"])
    frames = [obs["image"]] if record_frames else []
    done, success = False, False
    while not done:
        action = policy({**obs, "instruction": shown}, {**info, "instruction": shown})
        obs, _, terminated, truncated, info = env.step(action)
        if record_frames:
            frames.append(obs["image"])
        done, success = terminated or truncated, bool(info["success"])
    result: dict[str, Any] = {
        "success": success,
        "steps": int(info["step"]),
        "seed": int(seed),
        "instruction": info["instruction"],
        "shown_instruction": shown,
    }
    if record_frames:
        result["frames"] = np.stack(frames)
    return result


def collect_episodes(
    n: int,
    seed: int = 0,
    image_size: int = 128,
    *,
    num_objects: int = 3,
    max_steps: int = 25,
    success_radius: float = 0.06,
    exploration_noise: float = 0.01,
    keep_failures: bool = False,
    start: str = "random",
    goals: int = 1,
) -> list[dict[str, Any]]:
    """Expert demonstrations for episode seeds seed, seed + 1, ... (keep evaluation seeds disjoint).

    Each episode is a dict of per-step arrays ready for an RLDS writer: "image" uint8 [T, S, S, 3],
    "state" float32 [T, 7], "action" float32 [T, 7], "reward" float32 [T], "is_first"/"is_last"/
    "is_terminal" bool [T], "language_instruction" str [T], plus "targets" (the goals' object names,
    in order), "success" bool and "seed" int. Step t holds the observation before action t. Actions are
    DART-style: the executed action carries Gaussian `exploration_noise` (metres, on x and y) so demos
    visit slightly-off states, but the label recorded is the clean expert action from that state, which
    teaches recovery. Failed episodes are skipped (and further seeds tried) unless `keep_failures`.

    `goals` > 1 chains goals in one episode: once the gripper touches the named object, the instruction
    names another object of the scene (`TabletopEnv.retarget`, order drawn from the seed) and the
    expert carries on from there; reward is 1 on each goal's success step. In a one-goal episode the
    object nearest the gripper is usually the target once the gripper has moved, so most frames can be
    fitted without reading the instruction; a chained segment starts on the object it must leave,
    where only the instruction tells which way to go (docs/tabletop.md, results).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not exploration_noise >= 0:
        raise ValueError(f"exploration_noise must be >= 0 (metres), got {exploration_noise!r}")
    if isinstance(goals, bool) or not isinstance(goals, (int, np.integer)) or not 1 <= goals <= num_objects:
        raise ValueError(f"goals must be an integer in [1, num_objects={num_objects}] (distinct objects), got {goals!r}")
    env = TabletopEnv(image_size, num_objects, max_steps, success_radius, start=start)
    expert = ScriptedExpert(success_radius=success_radius)
    noise_rng = np.random.default_rng(seed)
    episodes: list[dict[str, Any]] = []
    for episode_seed in itertools.count(seed):
        if len(episodes) == n:
            break
        if episode_seed - seed >= 2 * n + 10:
            raise RuntimeError(f"the expert failed on too many seeds ({episode_seed - seed} tried for {n} episodes)")
        obs, info = env.reset(seed=episode_seed)
        first = info["target"]["index"]
        others = [i for i in np.random.default_rng((episode_seed, 1)).permutation(num_objects) if i != first]
        order = [first, *others][:goals]
        images, states, actions, rewards, instructions = [], [], [], [], []
        for k, target in enumerate(order):
            if k:
                obs, info = env.retarget(int(target))
            done = False
            while not done:
                label = expert.act(obs, info)
                executed = label.copy()
                executed[:2] += noise_rng.normal(0.0, exploration_noise, size=2)
                images.append(obs["image"])
                states.append(obs["state"])
                actions.append(label)
                instructions.append(info["instruction"])
                obs, reward, terminated, truncated, info = env.step(executed)
                rewards.append(reward)
                done = terminated or truncated
            if not info["success"]:
                break
        if info["success"] or keep_failures:
            t = len(actions)
            last = np.arange(t) == t - 1
            episodes.append(
                {
                    "image": np.stack(images),
                    "state": np.stack(states).astype(np.float32),
                    "action": np.stack(actions).astype(np.float32),
                    "reward": np.asarray(rewards, np.float32),
                    "is_first": np.arange(t) == 0,
                    "is_last": last,
                    "is_terminal": last & bool(terminated),
                    "language_instruction": np.asarray(instructions),
                    "targets": [env.scene.objects[int(i)].name for i in order],
                    "success": bool(info["success"]),
                    "seed": episode_seed,
                }
            )
    return episodes
