"""Tests for the embedded tabletop environment, its expert and data helpers (fast: small images)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from prismatic.envs import (
    ACTION_HIGH,
    ACTION_LOW,
    COLORS,
    MAX_DELTA,
    SHAPES,
    RandomPolicy,
    ScriptedExpert,
    SwappedInstructionEnv,
    TabletopEnv,
    collect_episodes,
    rollout,
    swap_instruction,
)
from prismatic.envs.tabletop import EEF_LIMIT, OBJECT_HEIGHT

SEEDS = range(50)


@pytest.fixture(scope="module")
def env() -> TabletopEnv:
    return TabletopEnv(image_size=64)


def _nearest_color(rgb: np.ndarray) -> str:
    return min(COLORS, key=lambda c: float(np.sum((np.asarray(COLORS[c], float) - rgb) ** 2)))


def test_expert_succeeds_on_every_seed(env: TabletopEnv) -> None:
    results = [rollout(env, ScriptedExpert(), seed) for seed in SEEDS]
    assert all(r["success"] for r in results)
    assert max(r["steps"] for r in results) <= env.max_steps // 2  # leaves slack for learned policies


def test_noisy_expert_still_succeeds(env: TabletopEnv) -> None:
    expert = ScriptedExpert(noise_std=0.02, seed=0)
    assert all(rollout(env, expert, seed)["success"] for seed in SEEDS)


def test_random_policy_rarely_succeeds(env: TabletopEnv) -> None:
    policy = RandomPolicy(seed=0)
    rate = np.mean([rollout(env, policy, seed)["success"] for seed in SEEDS])
    assert rate < 0.2


def test_same_seed_reproduces_scene_instruction_and_images() -> None:
    a, b = TabletopEnv(image_size=64), TabletopEnv(image_size=64)
    obs_a, info_a = a.reset(seed=123)
    obs_b, info_b = b.reset(seed=123)
    assert obs_a["instruction"] == obs_b["instruction"] and info_a == info_b
    np.testing.assert_array_equal(obs_a["image"], obs_b["image"])
    action = np.array([0.03, -0.02, 0, 0, 0, 0, 0.5], np.float32)
    step_a, step_b = a.step(action), b.step(action)
    np.testing.assert_array_equal(step_a[0]["image"], step_b[0]["image"])
    np.testing.assert_array_equal(step_a[0]["state"], step_b[0]["state"])


def test_unseeded_reset_is_replayable_from_info_seed(env: TabletopEnv) -> None:
    env.reset(seed=7)
    obs, info = env.reset()  # seed drawn from the env's generator
    replay_obs, replay_info = TabletopEnv(image_size=64).reset(seed=info["seed"])
    assert replay_info == info
    np.testing.assert_array_equal(replay_obs["image"], obs["image"])


def test_different_seeds_differ(env: TabletopEnv) -> None:
    images, instructions, layouts = [], set(), set()
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        images.append(obs["image"])
        instructions.add(info["instruction"])
        layouts.add(tuple(tuple(o["position"]) for o in info["objects"]))
    assert len(layouts) == 20
    assert all(not np.array_equal(images[0], im) for im in images[1:])
    assert len(instructions) >= 10


def test_instruction_names_a_visible_object_of_the_right_colour_and_shape(env: TabletopEnv) -> None:
    verbs = set()
    for seed in SEEDS:
        obs, info = env.reset(seed=seed)
        target, names = info["target"], [o["name"] for o in info["objects"]]
        assert obs["instruction"] == info["instruction"]
        assert info["instruction"].endswith(target["name"]) and target["name"] in names
        assert sum(name in info["instruction"] for name in names) == 1
        assert target["color"] in COLORS and target["shape"] in SHAPES
        # Every object is unique in colour and in shape, so the instruction is unambiguous.
        assert len({o["color"] for o in info["objects"]}) == len({o["shape"] for o in info["objects"]}) == 3
        for obj in info["objects"]:  # each object's top face shows its named colour
            col, row = env.project(np.array([*obj["position"], OBJECT_HEIGHT])).astype(int)
            assert _nearest_color(obs["image"][row, col].astype(float)) == obj["color"]
        verbs.add(info["template"])
    assert len(verbs) >= 3


def test_swapped_instruction_names_another_object_in_the_scene(env: TabletopEnv) -> None:
    rng = np.random.default_rng(0)
    for seed in range(20):
        _, info = env.reset(seed=seed)
        for swapped in (swap_instruction(info), swap_instruction(info, rng)):
            assert swapped != info["instruction"]
            named = [o for o in info["objects"] if swapped.endswith(o["name"])]
            assert len(named) == 1 and named[0]["index"] != info["target"]["index"]
            assert swapped.replace(named[0]["name"], "") == info["instruction"].replace(
                info["target"]["name"], ""
            )


def test_language_swap_sends_a_grounded_policy_to_the_wrong_object(env: TabletopEnv) -> None:
    """A policy that obeys whatever it is told never touches the true target on the way (path clearance)."""
    expert = ScriptedExpert()

    def obedient(obs, info):
        named = next(o for o in info["objects"] if obs["instruction"].endswith(o["name"]))
        return expert(obs, {**info, "target": named})

    results = [rollout(env, obedient, seed, swap_language=True) for seed in range(20)]
    assert not any(r["success"] for r in results)
    assert all(r["shown_instruction"] != r["instruction"] for r in results)
    assert all(rollout(env, obedient, seed)["success"] for seed in range(20))


def test_swapped_instruction_env_shows_another_object_and_judges_the_true_target() -> None:
    """The demo's language-blind control as an environment: every observation carries the swapped
    instruction, `info` keeps the truth, and only reaching the true target counts."""
    swapped = SwappedInstructionEnv(image_size=32)
    expert = ScriptedExpert()

    def obedient(obs, info):
        named = next(o for o in info["objects"] if obs["instruction"].endswith(o["name"]))
        return expert(obs, {**info, "target": named})

    for seed in range(20):
        obs, info = swapped.reset(seed=seed)
        assert obs["instruction"] == swap_instruction(info, np.random.default_rng(seed)) != info["instruction"]
        done, shown = False, obs["instruction"]
        while not done:
            obs, _, terminated, truncated, info = swapped.step(obedient(obs, info))
            assert obs["instruction"] == shown
            done = terminated or truncated
        assert not info["success"]  # it went where it was told, which is not the target
        obs, info = swapped.reset(seed=seed)
        while not (info["success"] or info["step"] >= swapped.max_steps):
            obs, _, _, _, info = swapped.step(expert(obs, info))  # the truth in `info` still succeeds
        assert info["success"]


def test_reset_option_picks_the_target(env: TabletopEnv) -> None:
    _, info = env.reset(seed=3, options={"target": 2})
    assert info["target"]["index"] == 2 and info["instruction"].endswith(info["objects"][2]["name"])
    with pytest.raises(ValueError, match="target"):
        env.reset(seed=3, options={"target": 3})


def test_passes_gymnasium_env_checker() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no checker warnings either
        warnings.filterwarnings("ignore", message=".*alternative render modes.*")  # needs gymnasium.make
        check_env(TabletopEnv(image_size=32))


def test_observation_and_spaces(env: TabletopEnv) -> None:
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].dtype == np.float32 and obs["state"][6] == 1.0
    np.testing.assert_array_equal(env.render(), obs["image"])
    assert env.action_space.shape == (7,)
    np.testing.assert_array_equal(env.action_space.low, ACTION_LOW)
    assert info["success"] is False and info["step"] == 0 and info["distance"] > env.success_radius


def test_actions_are_clipped_and_the_gripper_stays_on_the_table(env: TabletopEnv) -> None:
    obs, _ = env.reset(seed=0)
    start = obs["state"][:2].copy()
    obs, *_ = env.step(np.array([10.0, -10.0, 5.0, 9.0, 9.0, 9.0, 7.0]))
    np.testing.assert_allclose(obs["state"][:2] - start, [MAX_DELTA, -MAX_DELTA], atol=1e-6)
    assert obs["state"][2] == pytest.approx(0.06) and obs["state"][6] == 1.0  # z fixed; gripper clipped
    env.reset(seed=0)
    for _ in range(env.max_steps):
        obs, _, terminated, truncated, info = env.step(ACTION_HIGH)
        if terminated or truncated:
            break
    assert np.all(np.abs(obs["state"][:2]) <= EEF_LIMIT + 1e-6)


def test_invalid_actions_raise(env: TabletopEnv) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0, 0, 0, 0, 0, 1]))


def test_episode_end_semantics() -> None:
    env = TabletopEnv(image_size=32, max_steps=3)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(np.zeros(7))
    env.reset(seed=0)
    zero = np.zeros(7, np.float32)
    outcomes = [env.step(zero)[2:4] for _ in range(3)]
    assert outcomes == [(False, False), (False, False), (False, True)]  # truncated at max_steps
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(zero)
    expert, terminated, reward = ScriptedExpert(), False, 0.0
    env_long = TabletopEnv(image_size=32)
    obs, info = env_long.reset(seed=0)
    while not terminated:
        obs, reward, terminated, truncated, info = env_long.step(expert(obs, info))
        assert not truncated
    assert reward == 1.0 and info["success"] and info["distance"] <= env_long.success_radius
    with pytest.raises(RuntimeError, match="call reset"):
        env_long.step(zero)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"image_size": 16}, "image_size"),
        ({"image_size": 64.0}, "image_size"),
        ({"num_objects": 0}, "num_objects"),
        ({"num_objects": 4}, "num_objects"),
        ({"max_steps": 0}, "max_steps"),
        ({"success_radius": 0.5}, "success_radius"),
        ({"success_radius": "0.05"}, "success_radius"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_invalid_constructor_args_raise(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name} must be (an integer in \[|a number in \[|None or)"):
        TabletopEnv(**kwargs)  # the message names the argument and states the valid values


def test_swap_needs_two_objects() -> None:
    _, info = TabletopEnv(image_size=32, num_objects=1).reset(seed=0)
    with pytest.raises(ValueError, match="num_objects"):
        swap_instruction(info)


def test_collect_episodes_format() -> None:
    episodes = collect_episodes(4, seed=100, image_size=48)
    assert len(episodes) == 4 and [ep["seed"] for ep in episodes] == [100, 101, 102, 103]
    for ep in episodes:
        t = len(ep["action"])
        assert ep["image"].shape == (t, 48, 48, 3) and ep["image"].dtype == np.uint8
        assert ep["state"].shape == (t, 7) and ep["state"].dtype == np.float32
        assert ep["action"].shape == (t, 7) and ep["action"].dtype == np.float32
        assert np.all(ep["action"] >= ACTION_LOW) and np.all(ep["action"] <= ACTION_HIGH)
        np.testing.assert_array_equal(ep["action"][:, 2:6], 0.0)  # constant dims: trivially learnable
        np.testing.assert_array_equal(ep["action"][:, 6], 1.0)
        assert ep["is_first"].tolist() == [True] + [False] * (t - 1)
        assert ep["is_last"].tolist() == ep["is_terminal"].tolist() == [False] * (t - 1) + [True]
        assert ep["reward"].tolist() == [0.0] * (t - 1) + [1.0]
        assert ep["language_instruction"].shape == (t,) and len(ep["targets"]) == 1
        assert ep["success"] and all(text.endswith(ep["targets"][0]) for text in ep["language_instruction"])
    again = collect_episodes(4, seed=100, image_size=48)
    for a, b in zip(episodes, again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["action"], b["action"])


def test_chained_goals_visit_each_object_with_per_step_instructions() -> None:
    episodes = collect_episodes(4, seed=5, image_size=48, goals=3, start="random")
    single = collect_episodes(4, seed=5, image_size=48, start="random")
    assert [ep["seed"] for ep in episodes] == [5, 6, 7, 8]
    for ep, one in zip(episodes, single, strict=True):
        assert len(set(ep["targets"])) == 3 and ep["targets"][0] == one["targets"][0]  # first goal: the seed's
        np.testing.assert_array_equal(ep["image"][0], one["image"][0])
        segments = np.flatnonzero(ep["reward"] == 1.0)  # one success step per goal, the last at the end
        assert len(segments) == 3 and segments[-1] == len(ep["action"]) - 1 and ep["is_terminal"][-1]
        bounds = [0, *(segments[:-1] + 1), len(ep["action"])]
        for goal, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            assert set(ep["language_instruction"][a:b]) == {ep["language_instruction"][a]}
            assert ep["language_instruction"][a].endswith(ep["targets"][goal])
        # each later goal starts where the previous one ended: on the object just touched
        _, info = TabletopEnv(image_size=48).reset(seed=ep["seed"])
        where = {o["name"]: np.asarray(o["position"]) for o in info["objects"]}
        for goal, a in enumerate(bounds[1:-1]):
            assert np.linalg.norm(ep["state"][a, :2] - where[ep["targets"][goal]]) <= 0.06
    with pytest.raises(ValueError, match=r"goals must be an integer in \[1, num_objects=2\]"):
        collect_episodes(1, num_objects=2, goals=3)


def test_retarget_keeps_scene_and_gripper_and_restarts_the_episode(env: TabletopEnv) -> None:
    obs, info = env.reset(seed=3, options={"target": 0})
    expert = ScriptedExpert()
    while not info["success"]:
        obs, _, terminated, truncated, info = env.step(expert.act(obs, info))
    obs2, info2 = env.retarget(1)
    assert info2["target"]["index"] == 1 and info2["step"] == 0 and not info2["success"]
    assert info2["instruction"] != info["instruction"] and info2["objects"] == info["objects"]
    np.testing.assert_array_equal(obs2["state"], obs["state"])  # the gripper did not move
    obs3, *_ = env.step(expert.act(obs2, info2))  # the episode runs again
    with pytest.raises(ValueError, match=r"target must be an integer in \[0, 2\]"):
        env.retarget(3)
    with pytest.raises(RuntimeError, match="before reset"):
        TabletopEnv(image_size=48).retarget(0)


def test_home_start_fixes_the_gripper_and_the_expert_makes_king_moves() -> None:
    from prismatic.envs.expert import ScriptedExpert
    from prismatic.envs.tabletop import HOME

    env = TabletopEnv(image_size=48, start="home")
    expert = ScriptedExpert()
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        np.testing.assert_allclose(obs["state"][:2], HOME, atol=1e-6)
        done = False
        while not done:
            action = expert.act(obs, info)
            # x and y each in {-MAX_DELTA, 0, +MAX_DELTA}; everything else constant
            assert set(np.round(action[:2] / MAX_DELTA, 6)) <= {-1.0, 0.0, 1.0}
            np.testing.assert_array_equal(action[2:], [0, 0, 0, 0, 1])
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        assert info["success"]
    with pytest.raises(ValueError, match="start must be one of random, home"):
        TabletopEnv(start="anywhere")


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        ((0.30, 0.10), (1, 1)),  # far on both axes: diagonal
        ((-0.30, 0.02), (-1, 0)),  # level in y (within half a step): straight along x
        ((0.026, -0.026), (1, -1)),  # just over half a step on each axis
        ((0.024, 0.024), (0, 0)),  # within half a step on both: 3.4 cm away, inside the 6 cm radius
    ],
)
def test_king_step(offset, expected) -> None:
    from prismatic.envs.tabletop import king_step

    np.testing.assert_allclose(king_step(np.array(offset), 0.06), np.array(expected) * MAX_DELTA)


def test_king_step_lands_exactly_when_the_radius_is_tighter_than_half_a_step() -> None:
    from prismatic.envs.tabletop import king_step

    np.testing.assert_allclose(king_step(np.array([0.02, -0.01]), 0.01), [0.02, -0.01])
    env = TabletopEnv(image_size=32, success_radius=0.01)
    assert all(rollout(env, ScriptedExpert(success_radius=0.01), seed)["success"] for seed in range(10))


def test_expert_path_is_diagonal_then_straight() -> None:
    from prismatic.envs.tabletop import expert_path

    path = expert_path(np.array([0.0, -0.26]), np.array([0.1, 0.2]))
    np.testing.assert_allclose(path, [[0.0, -0.26], [0.1, -0.16], [0.1, 0.2]], atol=1e-12)
