"""prismatic.data.libero.convert: regenerated-layout HDF5 -> RLDS, read back by the real pipeline."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import prismatic  # noqa: F401  (before anything that imports TensorFlow)
from prismatic.data.errors import DataError
from prismatic.data.libero import convert as conv
from prismatic.data.synthetic import smooth_image

HW = 32
NAME = "libero_spatial_no_noops"
# file name -> (language the file name encodes, {demo: length}); demo_1 of the first task is missing,
# as when its replay failed. All lengths differ, so read-back trajectories can be matched by length.
TASKS = {
    "pick_up_the_black_bowl_on_the_plate_demo.hdf5": (
        "pick up the black bowl on the plate",
        {"demo_0": 5, "demo_2": 4},
    ),
    "KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5": ("turn on the stove", {"demo_0": 3, "demo_1": 6}),
}


def frame(rng: np.random.Generator) -> np.ndarray:
    """A dark smooth image with a white block in the top-left corner: orientation survives JPEG clearly."""
    img = (smooth_image(rng, HW, HW) * 0.3).astype(np.uint8)
    img[: HW // 2, : HW // 4] = 255
    return img


def make_demo(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    actions = rng.uniform(-0.9, 0.9, (n, 7)).astype(np.float64)
    actions[:, 6] = rng.choice([-1.0, 1.0], n)
    ee = rng.normal(0, 0.3, (n, 6))
    return {
        "actions": actions,
        "states": rng.normal(size=(n, 9)),
        "robot_states": rng.normal(size=(n, 9)),
        "rewards": np.eye(1, n, n - 1, dtype=np.uint8)[0],
        "dones": np.eye(1, n, n - 1, dtype=np.uint8)[0],
        "obs/agentview_rgb": np.stack([frame(rng) for _ in range(n)]),
        "obs/eye_in_hand_rgb": np.stack([frame(rng) for _ in range(n)]),
        "obs/gripper_states": rng.uniform(-0.04, 0.04, (n, 2)),
        "obs/joint_states": rng.normal(0, 0.5, (n, 7)),
        "obs/ee_states": ee,
        "obs/ee_pos": ee[:, :3],
        "obs/ee_ori": ee[:, 3:],
    }


def write_hdf5_dir(folder: Path, seed: int = 0, drop: str | None = None) -> dict:
    """The layout `prismatic.data.libero.regenerate.write_demo` writes; returns {(file, demo): arrays}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    demos = {}
    for fname, (_, lengths) in TASKS.items():
        with h5py.File(folder / fname, "w") as f:
            for demo, n in lengths.items():
                arrays = make_demo(rng, n)
                for key, value in arrays.items():
                    if key != drop:
                        f.create_dataset(f"data/{demo}/{key}", data=value)
                demos[(fname, demo)] = arrays
    return demos


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("libero_convert")
    demos = write_hdf5_dir(tmp / "hdf5")
    out = conv.convert(tmp / "hdf5", tmp / "rlds", NAME, image_size=HW, progress=False)
    assert out.path == tmp / "rlds" / NAME / "1.0.0" and (out.episodes, out.steps, out.tasks) == (4, 18, 2)
    return tmp, demos


def by_length(demos: dict) -> dict[int, tuple[str, dict]]:
    out = {len(a["actions"]): (TASKS[f][0], a) for (f, _), a in demos.items()}
    assert len(out) == len(demos)
    return out


def q99_normalize(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    lo, hi = np.quantile(x, 0.01, axis=0), np.quantile(x, 0.99, axis=0)
    y = np.where(mask, np.clip(2 * (x - lo) / (hi - lo + 1e-8) - 1, -1, 1), x)
    return np.where(x.min(0) == x.max(0), 0.0, y)


def test_language_from_filename():
    assert conv.language_from_filename("a/put_the_bowl_on_the_plate_demo.hdf5") == "put the bowl on the plate"
    assert (
        conv.language_from_filename(
            "LIVING_ROOM_SCENE2_put_both_the_soup_and_the_sauce_in_the_basket_demo.hdf5"
        )
        == "put both the soup and the sauce in the basket"
    )
    assert (
        conv.language_from_filename("KITCHEN_SCENE10_close_the_top_drawer_demo.hdf5")
        == "close the top drawer"
    )


def test_stored_episodes_match_hdf5(converted):
    """The tfds records themselves: exact state/joint/action values, flags, rotated images, metadata."""
    import tensorflow_datasets as tfds

    tmp, demos = converted
    expected = by_length(demos)
    builder = tfds.builder_from_directory(str(tmp / "rlds" / NAME / "1.0.0"))
    assert builder.info.splits["train"].num_examples == 4
    episodes = list(tfds.as_numpy(builder.as_dataset(split="train")))
    assert len(episodes) == 4
    files = set()
    for ep in episodes:
        steps = list(ep["steps"])
        n = len(steps)
        language, raw = expected[n]
        files.add(Path(ep["episode_metadata"]["file_path"].decode()).name)
        state = np.stack([s["observation"]["state"] for s in steps])
        want_state = np.concatenate([raw["obs/ee_pos"], raw["obs/ee_ori"], raw["obs/gripper_states"]], axis=1)
        np.testing.assert_allclose(state, want_state.astype(np.float32), rtol=0, atol=0)
        np.testing.assert_array_equal(state[:, :6], raw["obs/ee_states"].astype(np.float32))
        joints = np.stack([s["observation"]["joint_state"] for s in steps])
        np.testing.assert_array_equal(joints, raw["obs/joint_states"].astype(np.float32))
        np.testing.assert_array_equal(
            np.stack([s["action"] for s in steps]), raw["actions"].astype(np.float32)
        )
        assert [s["language_instruction"].decode() for s in steps] == [language] * n
        assert [bool(s["is_first"]) for s in steps] == [t == 0 for t in range(n)]
        assert [bool(s["is_last"]) for s in steps] == [t == n - 1 for t in range(n)]
        assert [bool(s["is_terminal"]) for s in steps] == [t == n - 1 for t in range(n)]
        assert [float(s["reward"]) for s in steps] == [float(t == n - 1) for t in range(n)]
        assert all(float(s["discount"]) == 1.0 for s in steps)
        for key, src in (("image", "obs/agentview_rgb"), ("wrist_image", "obs/eye_in_hand_rgb")):
            got = np.stack([s["observation"][key] for s in steps]).astype(np.float32)
            rotated = raw[src][:, ::-1, ::-1].astype(np.float32)
            assert np.abs(got - rotated).mean() < 6, key  # JPEG is lossy
            assert np.abs(got - raw[src]).mean() > 40, key  # and not stored as rendered
            # the white block moved from the top-left to the bottom-right corner
            assert got[:, HW // 2 :, -(HW // 4) :].mean() > 200 and got[:, : HW // 2, : HW // 4].mean() < 80
    assert files == set(TASKS)


def test_pipeline_reads_the_converted_dataset(converted, tmp_path):
    from prismatic.data.pipeline import PipelineConfig, make_episodic_dataset

    tmp, demos = converted
    expected = by_length(demos)
    cfg = PipelineConfig(
        resize_size=(HW, HW),
        camera_views=("primary", "wrist"),
        load_proprio=True,
        goal_relabeling=None,
        frame_threads=1,
        traj_transform_threads=1,
        traj_read_threads=1,
        statistics_cache_dir=str(tmp_path),
    )
    stream = make_episodic_dataset(tmp / "rlds", NAME, cfg, train=True)
    stats = stream.statistics[NAME]
    assert stats["num_trajectories"] == 4
    assert stats["num_transitions"] == sum(len(a["actions"]) for a in demos.values()) == 18
    trajs = list(stream.dataset.as_numpy_iterator())
    assert sorted(len(t["action"]) for t in trajs) == sorted(expected)

    # Independent numpy: the spec's standardisation (gripper -1 open/+1 close -> 1 open/0 close), then
    # bounds_q99 over all transitions with the gripper left as it is.
    order = sorted(expected)
    raw_all = np.concatenate([expected[n][1]["actions"] for n in order]).astype(np.float32)
    std_all = np.concatenate([raw_all[:, :6], 1 - np.clip(raw_all[:, 6:], 0, 1)], axis=1)
    np.testing.assert_allclose(
        stats["action"]["q01"], np.quantile(std_all, 0.01, axis=0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        stats["action"]["q99"], np.quantile(std_all, 0.99, axis=0), rtol=1e-5, atol=1e-6
    )
    norm_all = q99_normalize(std_all, np.array([True] * 6 + [False]))
    # proprio: EEF state (6) + the two finger joints (2) (OpenVLA-OFT's 8-D), every dimension normalised
    prop_all = np.concatenate(
        [
            np.concatenate(
                [d["obs/ee_pos"], d["obs/ee_ori"], d["obs/gripper_states"]],
                1,
            )
            for d in (expected[n][1] for n in order)
        ]
    ).astype(np.float32)
    prop_norm = q99_normalize(prop_all, np.asarray(stats["proprio"].get("mask", [True] * 8)))
    offsets = dict(zip(order, np.cumsum([0] + order[:-1])))

    for t in trajs:
        n = len(t["action"])
        language, raw = expected[n]
        sl = slice(offsets[n], offsets[n] + n)
        assert t["action"].shape == (n, 1, 7)
        np.testing.assert_allclose(t["action"][:, 0], norm_all[sl], atol=1e-5)
        np.testing.assert_allclose(t["observation"]["proprio"][:, 0], prop_norm[sl], atol=1e-5)
        assert set(t["task"]["language_instruction"].tolist()) == {language.encode()}
        for view, src in (("image_primary", "obs/agentview_rgb"), ("image_wrist", "obs/eye_in_hand_rgb")):
            img = t["observation"][view][:, 0].astype(np.float32)
            assert img.shape == (n, HW, HW, 3)
            assert np.abs(img - raw[src][:, ::-1, ::-1]).mean() < 8, view
            assert img[:, HW // 2 :, -(HW // 4) :].mean() > 200  # block bottom-right after the 180° rotation


def test_refuses_to_overwrite_unless_asked(converted):
    tmp, _ = converted
    with pytest.raises(DataError, match="already exists; pass --overwrite"):
        conv.convert(tmp / "hdf5", tmp / "rlds", NAME, image_size=HW, progress=False)


def test_cli_overwrite_replaces_output(tmp_path, capsys):
    """The command line (in-process: a subprocess would pay TensorFlow's import again)."""
    write_hdf5_dir(tmp_path / "hdf5", seed=1)
    out = tmp_path / "rlds" / NAME / "1.0.0"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("old")
    argv = ["--hdf5_dir", str(tmp_path / "hdf5"), "--data_root", str(tmp_path / "rlds"), "--name", NAME]
    argv += ["--image_size", str(HW), "--no_progress"]
    assert conv.main(argv) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (out / "stale.txt").exists()
    assert conv.main(argv + ["--overwrite"]) == 0
    assert "4 episodes, 18 steps, 2 tasks" in capsys.readouterr().out
    assert not (out / "stale.txt").exists() and (out / "dataset_info.json").exists()
    assert [p.name for p in (tmp_path / "rlds").iterdir()] == [NAME]  # no staging folder left behind


def test_missing_dir_and_no_hdf5_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        conv.convert(tmp_path / "nope", tmp_path / "rlds", NAME, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \*\.hdf5 files"):
        conv.convert(tmp_path / "empty", tmp_path / "rlds", NAME, progress=False)
    assert not (tmp_path / "rlds" / NAME).exists()


def test_missing_key_names_it_and_the_keys_present(tmp_path):
    write_hdf5_dir(tmp_path / "hdf5", drop="obs/eye_in_hand_rgb")
    with pytest.raises(DataError) as e:
        conv.convert(tmp_path / "hdf5", tmp_path / "rlds", NAME, image_size=HW, progress=False)
    msg = str(e.value)
    assert "has no 'obs/eye_in_hand_rgb'" in msg and "'obs/agentview_rgb'" in msg and "'actions'" in msg
    assert not (tmp_path / "rlds" / NAME).exists()


def test_wrong_image_size_is_explained(tmp_path):
    write_hdf5_dir(tmp_path / "hdf5")
    with pytest.raises(DataError, match=r"expected \(T, 256, 256, 3\).*--image_size 32"):
        conv.convert(tmp_path / "hdf5", tmp_path / "rlds", NAME, progress=False)
