"""Statistics caching/CLI and every bad-input path (each a DataError that says what, why and how)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from rlds_expected import bridge_actions, libero_actions, stats

from prismatic.data import statistics as st
from prismatic.data.errors import DataError
from prismatic.data.pipeline import PipelineConfig, make_dataset
from prismatic.data.rlds import open_builder
from prismatic.data.spec import get_dataset_spec
from prismatic.data.synthetic import make_episodes, write_synthetic

CFG = PipelineConfig(resize_size=(16, 16), shuffle_buffer_size=16, frame_threads=1)

CUSTOM_YAML = """
my_robot:
  image_obs_keys: {primary: image}
  proprio_obs_keys: null
  state_encoding: none
  action_encoding: eef_pos
  standardize:
    - clip: {min: 0, max: 1}
    - invert_gripper: {}
"""


def write_libero(root, name="libero_spatial_no_noops", **kw):
    kw.setdefault("num_episodes", 3)
    kw.setdefault("episode_len", 4)
    return write_synthetic(root, "libero_spatial_no_noops", name=name, image_size=(16, 16), **kw)


def test_statistics_cache_hit_and_key_changes_with_data(tmp_path, monkeypatch):
    write_libero(tmp_path)
    spec = get_dataset_spec("libero_spatial_no_noops")
    b = open_builder(tmp_path, spec.name)
    first = st.get_dataset_statistics(b, spec)
    cached = list((tmp_path / spec.name / "1.0.0").glob("dataset_statistics_*.json"))
    assert len(cached) == 1

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(st, "compute_statistics", boom)
    assert st.get_dataset_statistics(b, spec) == first  # cache hit
    monkeypatch.undo()

    key1 = st.cache_key(b, spec, load_proprio=False, noop_filter="none")
    assert key1 != st.cache_key(b, spec, load_proprio=True, noop_filter="none")
    # Other data at the same place -> another key -> recomputed statistics
    import shutil

    shutil.rmtree(tmp_path / spec.name)
    eps = write_libero(tmp_path, seed=99, num_episodes=2)
    b2 = open_builder(tmp_path, spec.name)
    assert st.cache_key(b2, spec, load_proprio=False, noop_filter="none") != key1
    second = st.get_dataset_statistics(b2, spec)
    np.testing.assert_allclose(
        second["action"]["q99"], stats(np.concatenate([libero_actions(e) for e in eps]))["q99"], rtol=1e-5
    )


def test_cli_writes_original_format_for_a_yaml_dataset(tmp_path):
    eps = write_libero(tmp_path / "data", name="my_robot")
    yaml_file = tmp_path / "my.yaml"
    yaml_file.write_text(CUSTOM_YAML)
    out = tmp_path / "dataset_statistics.json"
    rc = st.main(
        [
            "--data-root",
            str(tmp_path / "data"),
            "--dataset",
            "my_robot",
            "--dataset-config",
            str(yaml_file),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data) == {"my_robot"}
    entry = data["my_robot"]
    assert set(entry) == {"action", "proprio", "num_transitions", "num_trajectories"}
    assert set(entry["action"]) == {"mean", "std", "max", "min", "q01", "q99", "mask"}
    assert entry["action"]["mask"] == [True] * 6 + [False]
    expected = stats(np.concatenate([libero_actions(e) for e in eps]))
    np.testing.assert_allclose(entry["action"]["q01"], expected["q01"], rtol=1e-5, atol=1e-7)
    assert entry["num_transitions"] == 12 and entry["num_trajectories"] == 3


def test_episodes_emptied_by_standardisation_still_count_as_trajectories(tmp_path):
    """As the original (`get_dataset_statistics` adds 1 per standardised trajectory, whatever its length): Bridge
    drops each episode's first step and, relabelling actions from reached states, its last, so the three 2-step
    episodes below become empty; they count in num_trajectories, not in num_transitions."""
    lengths = [6, 2, 7, 5, 2, 6, 9, 3, 2, 4, 5, 8]
    eps = write_synthetic(tmp_path, "bridge_orig", num_episodes=12, episode_len=lengths, image_size=(8, 8), seed=4)
    spec = get_dataset_spec("bridge_orig")
    got = st.get_dataset_statistics(open_builder(tmp_path, spec.name), spec)
    assert got["num_trajectories"] == 12
    assert got["num_transitions"] == sum(n - 2 for n in lengths) == sum(len(bridge_actions(e)) for e in eps) == 35
    np.testing.assert_array_equal(got["action"]["max"], np.concatenate([bridge_actions(e) for e in eps]).max(0))


def test_missing_data_root_and_dataset_show_layout_and_what_is_present(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*<data_root>/<name>/<version>/dataset_info.json"):
        make_dataset(tmp_path / "nope", [("libero_spatial_no_noops", 1.0)], CFG)
    write_libero(tmp_path)
    with pytest.raises(
        DataError, match=r"'bridge_orig' not found.*dataset_info.json.*present: libero_spatial_no_noops"
    ):
        make_dataset(tmp_path, [("bridge_orig", 1.0)], CFG)
    with pytest.raises(DataError, match=r"no version '9.9.9'.*1.0.0"):
        open_builder(tmp_path, "libero_spatial_no_noops", "9.9.9")


def test_missing_key_names_the_keys_the_dataset_has(tmp_path):
    write_libero(tmp_path, name="my_robot")
    bad = tmp_path / "bad.yaml"
    bad.write_text(CUSTOM_YAML.replace("primary: image", "primary: rgb_left"))
    cfg = PipelineConfig(resize_size=(16, 16), shuffle_buffer_size=16, spec_files=(str(bad),))
    with pytest.raises(DataError, match=r"'rgb_left'.*image, joint_state, state, wrist_image") as e:
        make_dataset(tmp_path, [("my_robot", 1.0)], cfg)
    assert list((tmp_path / "my_robot" / "1.0.0").glob("dataset_statistics_*")) == []  # failed before work
    bad.write_text(
        CUSTOM_YAML.replace(
            "invert_gripper: {}",
            "invert_gripper: {}\n    - copy: {src: observation/instr, dest: language_instruction}",
        )
    )
    with pytest.raises(DataError, match=r"instr"):
        make_dataset(tmp_path, [("my_robot", 1.0)], cfg)
    assert "my_robot" in str(e.value)


def test_nonfinite_actions_are_dropped_with_a_count_or_fail(tmp_path, caplog):
    eps = make_episodes("libero_spatial_no_noops", num_episodes=3, episode_len=4, image_size=(16, 16))
    eps[0]["steps"][1]["action"][2] = np.nan
    eps[2]["steps"][3]["action"][0] = np.inf
    write_synthetic(tmp_path, "libero_spatial_no_noops", episodes=eps, image_size=(16, 16))
    with caplog.at_level(logging.WARNING):
        stream = make_dataset(tmp_path, [("libero_spatial_no_noops", 1.0)], CFG)
    assert "dropping 2 frame(s) with NaN/inf actions" in caplog.text
    assert stream.statistics["libero_spatial_no_noops"]["num_transitions"] == 10
    frames = [f for _, f in zip(range(30), stream.dataset.as_numpy_iterator())]
    assert all(np.isfinite(f["action"]).all() for f in frames)
    with pytest.raises(DataError, match=r"2 frame\(s\) with NaN/inf actions and fail_on_nonfinite=True"):
        make_dataset(
            tmp_path,
            [("libero_spatial_no_noops", 1.0)],
            PipelineConfig(resize_size=(16, 16), fail_on_nonfinite=True),
        )


def test_empty_after_filtering_is_an_error(tmp_path):
    write_libero(tmp_path, instructions=("",))
    with pytest.raises(DataError, match=r"empty after filtering: skip_unlabeled=True"):
        make_dataset(tmp_path, [("libero_spatial_no_noops", 1.0)], CFG)


def test_invalid_options_list_valid_choices():
    with pytest.raises(DataError, match="choose one of: none, zero, libero"):
        PipelineConfig(noop_filter="all")
    with pytest.raises(DataError, match="choose one of: uniform"):
        PipelineConfig(goal_relabeling="last")
    with pytest.raises(ValueError, match="choose one of: normal, bounds, bounds_q99"):
        PipelineConfig(normalization_type="minmax")


def test_unknown_camera_view_lists_views(tmp_path):
    write_libero(tmp_path)
    with pytest.raises(DataError, match=r"Camera view 'left'.*primary, secondary, wrist"):
        make_dataset(
            tmp_path,
            [("libero_spatial_no_noops", 1.0)],
            PipelineConfig(camera_views=("left",), resize_size=(16, 16)),
        )


def test_older_tfds_layouts_are_read(synthetic_root):
    root, _ = synthetic_root
    info = json.loads((root / "libero_spatial_no_noops" / "1.0.0" / "dataset_info.json").read_text())
    assert "filepathTemplate" not in json.dumps(info)  # legacy metadata, as older tfds wrote
    shards = [p.name for p in (root / "bridge_orig" / "1.0.0").iterdir() if "tfrecord" in p.name]
    assert shards and all(s.startswith("bridge_dataset-train") for s in shards)  # folder != tfds name
    for name in ("libero_spatial_no_noops", "bridge_orig"):
        b = open_builder(root, name)
        assert b.info.splits["train"].num_examples == 4


def test_unnormalised_yaml_option_is_respected(tmp_path):
    eps = write_libero(tmp_path, name="my_robot")
    y = tmp_path / "n.yaml"
    y.write_text(CUSTOM_YAML + "  normalization_type: normal\n")
    stream = make_dataset(
        tmp_path,
        [("my_robot", 1.0)],
        PipelineConfig(resize_size=(16, 16), shuffle_buffer_size=8, spec_files=(str(y),)),
    )
    raw = np.concatenate([libero_actions(e) for e in eps])
    s = stats(raw)
    want = np.where(np.arange(7) < 6, (raw - s["mean"]) / (s["std"] + 1e-8), raw)
    f = next(stream.dataset.as_numpy_iterator())
    assert np.abs(want - f["action"][0]).max(axis=1).min() < 1e-4


def test_validation_split_too_small_says_why(tmp_path):
    write_libero(tmp_path)  # 3 trajectories: the last 5% of `train` holds none
    with pytest.raises(DataError, match=r"validation split is the last 5% of `train`"):
        make_dataset(tmp_path, [("libero_spatial_no_noops", 1.0)], CFG, train=False)


def test_validation_stream_is_a_fixed_cached_buffer(tmp_path):
    write_libero(tmp_path, num_episodes=40, episode_len=3)
    stream = make_dataset(tmp_path, [("libero_spatial_no_noops", 1.0)], CFG, train=False)
    frames = [f for _, f in zip(range(20), stream.dataset.as_numpy_iterator())]
    assert len(frames) == 16  # the shuffle_buffer_size frames, once per pass
    again = [f["action"].tobytes() for f in stream.dataset.as_numpy_iterator()]
    assert sorted(again) == sorted(f["action"].tobytes() for f in frames)  # same frames, reshuffled
