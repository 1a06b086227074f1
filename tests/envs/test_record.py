"""Tabletop demonstrations recorded as RLDS come back through the data pipeline unchanged."""

from __future__ import annotations

import numpy as np

from prismatic.envs.expert import collect_episodes
from prismatic.envs.record import DATASET_NAME, record_rlds


def test_recorded_demos_round_trip_through_the_pipeline(tmp_path):
    from prismatic.data.pipeline import PipelineConfig, make_episodic_dataset
    from prismatic.data.spec import get_dataset_spec

    episodes = collect_episodes(3, seed=5, image_size=48, goals=2)  # per-step instructions: two per episode
    path = record_rlds(episodes, tmp_path)
    assert path == tmp_path / DATASET_NAME / "1.0.0" and (path / "dataset_info.json").is_file()
    spec = get_dataset_spec(DATASET_NAME)  # registered by configs/datasets/tabletop_reach.yaml
    assert spec.image_obs_keys["primary"] == "image" and spec.action_mask[-1] is False

    config = PipelineConfig(resize_size=(48, 48), goal_relabeling=None)
    stream = make_episodic_dataset(tmp_path, DATASET_NAME, config, train=True)
    stats = stream.statistics[DATASET_NAME]
    actions = np.concatenate([e["action"] for e in episodes])
    assert stats["num_trajectories"] == 3 and stats["num_transitions"] == len(actions)
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(actions, 0.99, axis=0), rtol=1e-4, atol=1e-6)

    trajs = list(stream.dataset.as_numpy_iterator())
    assert len(trajs) == 3
    for traj in trajs:  # tfds shuffles episode order on write: match by the first frame
        image = traj["observation"]["image_primary"][:, -1]  # window of 1
        (ep,) = [e for e in episodes if len(e["image"]) == len(image) and np.array_equal(e["image"][0], image[0])]
        np.testing.assert_array_equal(image, ep["image"])  # PNG: lossless, identity resize
        assert [t.decode() for t in traj["task"]["language_instruction"]] == ep["language_instruction"].tolist()
        assert len(set(ep["language_instruction"])) == 2
        # normalised actions: the entry's bounds on x/y; dimensions that never vary (z, rpy, and here the
        # always-open gripper) map to 0, exactly as the original's normalisation does
        raw = ep["action"]
        np.testing.assert_array_equal(traj["action"][:, -1, 2:], 0.0)
        bounds = ("q01", "q99") if spec.normalization_type.value == "bounds_q99" else ("min", "max")
        low, high = (np.asarray(stats["action"][k]) for k in bounds)
        expected = np.clip(2 * (raw[:, :2] - low[:2]) / (high[:2] - low[:2] + 1e-8) - 1, -1, 1)
        np.testing.assert_allclose(traj["action"][:, -1, :2], expected, atol=1e-5)
