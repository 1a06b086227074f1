"""End to end over synthetic OXE-schema datasets: standardise (real specs) -> normalise -> frames -> images."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from rlds_expected import all_actions, normalize_q99, stats

from prismatic.data.augment import AugmentConfig
from prismatic.data.pipeline import PipelineConfig, allocate_threads, make_dataset, make_episodic_dataset

SMALL = dict(resize_size=(24, 24), shuffle_buffer_size=64, frame_threads=2)


def take(stream, n):
    return list(itertools.islice(stream.dataset.as_numpy_iterator(), n))


@pytest.mark.parametrize("name", ["bridge_orig", "fractal20220817_data", "libero_spatial_no_noops"])
def test_statistics_and_normalised_actions_match_numpy(synthetic_root, name):
    root, episodes = synthetic_root
    stream = make_dataset(root, [(name, 1.0)], PipelineConfig(**SMALL))
    raw = all_actions(name, episodes[name])
    expected_stats = stats(raw)
    got = stream.statistics[name]
    for k, v in expected_stats.items():
        np.testing.assert_allclose(got["action"][k], v, rtol=1e-5, atol=1e-6, err_msg=k)
    assert got["num_transitions"] == len(raw)
    assert got["num_trajectories"] == len(episodes[name])
    assert got["action"]["mask"] == [True] * 6 + [False]

    expected = normalize_q99(raw, expected_stats)
    frames = take(stream, 40)
    for f in frames:
        assert f["dataset_name"] == name.encode()
        assert f["action"].shape == (1, 7) and f["action"].dtype == np.float32
        assert f["observation"]["image_primary"].shape == (1, 24, 24, 3)
        assert f["observation"]["image_primary"].dtype == np.uint8
        dist = np.abs(expected - f["action"][0]).max(axis=1).min()
        assert dist < 1e-5, f"streamed action {f['action'][0]} is not a normalised raw action"
        assert set(np.unique(f["action"][0, 6])) <= {0.0, 1.0}  # gripper left unnormalised, absolute
        assert f["task"]["language_instruction"] in {b"Pick up the red block", b"put the spoon in the pot"}
    # Normalised values really are in [-1, 1] and not all identical.
    acts = np.stack([f["action"][0] for f in frames])
    assert np.all(np.abs(acts) <= 1) and acts[:, :6].std() > 0.1


def test_mixture_proportions_follow_balanced_weights(synthetic_root):
    root, episodes = synthetic_root
    weights = {"bridge_orig": 1.0, "libero_spatial_no_noops": 3.0}
    cfg = PipelineConfig(**{**SMALL, "resize_size": (8, 8)}, traj_transform_threads=2, traj_read_threads=2)
    stream = make_dataset(root, list(weights.items()), cfg)
    sizes = {n: len(all_actions(n, episodes[n])) for n in weights}
    balanced = {n: weights[n] * sizes[n] for n in weights}
    total = sum(balanced.values())
    for n in weights:
        assert stream.weights[n] == pytest.approx(balanced[n] / total)
    # Primary datasets (weight 1.0): frames until each was seen once in expectation.
    assert stream.length == int(sizes["bridge_orig"] / stream.weights["bridge_orig"])
    names = [f["dataset_name"].decode() for f in take(stream, 600)]
    frac = names.count("libero_spatial_no_noops") / len(names)
    assert frac == pytest.approx(stream.weights["libero_spatial_no_noops"], abs=0.06)


def test_same_seed_same_stream_and_ranks_differ(synthetic_root):
    root, _ = synthetic_root
    mix = [("bridge_orig", 1.0), ("fractal20220817_data", 1.0)]
    cfg = PipelineConfig(**SMALL, image_augment=AugmentConfig(), seed=7)

    def sig(frames):
        return [
            (f["dataset_name"], f["action"].tobytes(), f["observation"]["image_primary"].tobytes())
            for f in frames
        ]

    a = sig(take(make_dataset(root, mix, cfg), 25))
    b = sig(take(make_dataset(root, mix, cfg), 25))
    c = sig(take(make_dataset(root, mix, cfg, rank=1, world_size=2), 25))
    assert a == b
    assert a != c


def test_episodic_mode_yields_whole_trajectories_in_order(synthetic_root):
    root, episodes = synthetic_root
    cfg = PipelineConfig(**SMALL, goal_relabeling=None)
    stream = make_episodic_dataset(root, "libero_spatial_no_noops", cfg, train=True)
    trajs = list(stream.dataset.as_numpy_iterator())
    raw = [len(ep["steps"]) for ep in episodes["libero_spatial_no_noops"]]
    assert 1 <= len(trajs) <= len(raw)
    for t in trajs:
        n = len(t["action"])
        assert n in raw
        np.testing.assert_array_equal(t["observation"]["timestep"][:, 0], np.arange(n))
        assert t["observation"]["image_primary"].shape == (n, 1, 24, 24, 3)
        assert (
            t["observation"]["image_wrist"].shape == (n, 1, 24, 24, 3)
            if "image_wrist" in t["observation"]
            else True
        )


@pytest.mark.parametrize("drop", [False, True])
def test_chunk_windows_pad_or_drop_the_incomplete_chunks(synthetic_root, drop):
    """Chunks of 4 (future window 3): every step gets the next 4 actions; the last 3 steps either get a
    padded chunk (ours) or are dropped (OpenVLA-OFT's `chunk_act_obs`)."""
    root, episodes = synthetic_root
    cfg = PipelineConfig(**SMALL, goal_relabeling=None, future_action_window_size=3, drop_incomplete_chunks=drop)
    stream = make_episodic_dataset(root, "libero_spatial_no_noops", cfg, train=True)
    lengths = sorted(len(ep["steps"]) for ep in episodes["libero_spatial_no_noops"])
    trajs = list(stream.dataset.as_numpy_iterator())
    assert sorted(len(t["action"]) for t in trajs) == sorted(n - 3 if drop else n for n in lengths)
    for t in trajs:
        a = t["action"]  # [frames, 4, 7]: chunk k of step i is step i + k's action
        assert a.shape[1:] == (4, 7)
        np.testing.assert_array_equal(a[:-1, 1], a[1:, 0])
        np.testing.assert_array_equal(a[:-3, 3], a[3:, 0])


def test_wrist_camera_and_proprio_are_loaded_when_asked(synthetic_root):
    root, episodes = synthetic_root
    cfg = PipelineConfig(
        **{**SMALL, "resize_size": {"primary": (24, 24), "wrist": (16, 16)}},
        camera_views=("primary", "wrist"),
        load_proprio=True,
    )
    f = take(make_dataset(root, [("libero_spatial_no_noops", 1.0)], cfg), 1)[0]
    assert f["observation"]["image_wrist"].shape == (1, 16, 16, 3)
    # EEF_state (6) + 2D gripper state (2): OpenVLA-OFT's 8-D LIBERO proprio
    assert f["observation"]["proprio"].shape == (1, 8)
    # bridge has no wrist camera: a black padding image, marked as padding
    g = take(make_dataset(root, [("bridge_orig", 1.0)], cfg), 1)[0]
    assert not g["observation"]["image_wrist"].any()
    assert not g["observation"]["pad_mask_dict"]["image_wrist"].any()


def test_allocate_threads():
    assert allocate_threads(None, [1, 2]) == [-1, -1]  # AUTOTUNE
    assert allocate_threads(10, [1, 1]) == [5, 5]
    out = allocate_threads(8, [0.01, 0.495, 0.495])
    assert sum(out) == 8 and out[0] == 1 and min(out) >= 1
    assert allocate_threads(3, [0.2, 0.3, 0.5]) == [1, 1, 1]
    out = allocate_threads(16, [1, 2, 5])
    assert sum(out) == 16 and out == sorted(out)
