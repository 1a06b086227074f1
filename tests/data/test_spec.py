"""Standardisation ops and DatasetSpec behaviour, against numpy references computed here.

Every op is run twice: eagerly and inside `tf.data.Dataset.map` (graph mode), because the two can
differ (static vs dynamic shapes, Python control flow)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

# `prismatic` (torch, transformers) before TensorFlow: the reverse import order crashes in this venv.
from prismatic.data.spec import (
    CHUNK_FILTERS,
    STANDARDIZE_OPS,
    DatasetSpec,
    MissingKeyError,
    OpCall,
    SpecError,
)
from prismatic.normalization import NormalizationType

tf = pytest.importorskip("tensorflow")

RNG = np.random.default_rng(0)


def both_modes(fn, traj):
    """(eager result, tf.data.map result) as numpy trees."""
    traj = tf.nest.map_structure(tf.convert_to_tensor, traj)
    eager = tf.nest.map_structure(lambda x: x.numpy(), fn(traj))
    ds = tf.data.Dataset.from_tensors(traj).map(fn)
    graph = tf.nest.map_structure(lambda x: x.numpy(), next(iter(ds)))
    return eager, graph


def check(fn, traj, key_path, expected, atol=1e-6):
    for out in both_modes(fn, traj):
        got = out
        for k in key_path.split("/"):
            got = got[k]
        np.testing.assert_allclose(got, expected, atol=atol)


def op(name, **args):
    return STANDARDIZE_OPS.get(name)(**args)


# -- numpy references (written from the documented semantics, not from the TF code) -------------------


def np_binarize(g, hi=0.95, lo=0.05):
    out = np.empty_like(g)
    for i in range(len(g)):
        nxt = next((j for j in range(i, len(g)) if g[j] > hi or g[j] < lo), None)
        out[i] = g[-1] if nxt is None else float(g[nxt] > hi)
    return out


def np_rel2abs(g, thr=0.1):
    commands = [(-1 if v > thr else 1) if abs(v) > thr else 0 for v in g]  # +1 open, -1 close
    first = next((c for c in commands if c != 0), None)
    state = 1 if first is None else -first
    out = []
    for c in commands:
        state = c if c != 0 else state
        out.append(state)
    return (np.array(out, np.float32) + 1) / 2


def np_euler_to_matrix(e):
    r, p, y = e
    rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


def np_quat_mul(a, b):  # Hamilton product, (x, y, z, w)
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def np_euler_to_quat(e):
    r, p, y = e
    qx = np.array([np.sin(r / 2), 0, 0, np.cos(r / 2)])
    qy = np.array([0, np.sin(p / 2), 0, np.cos(p / 2)])
    qz = np.array([0, 0, np.sin(y / 2), np.cos(y / 2)])
    return np_quat_mul(qz, np_quat_mul(qy, qx))


# -- ops ------------------------------------------------------------------------------------------------


def test_concat_parts_fill_and_rank1_features():
    t = 4
    wv, rot = RNG.normal(size=(t, 3)).astype(np.float32), RNG.normal(size=(t, 3)).astype(np.float32)
    flag = np.array([True, False, True, True])  # a [T] bool feature counts as one column
    traj = {"action": {"world_vector": wv, "rotation_delta": rot, "open": flag}, "observation": {}}
    fn = op(
        "concat",
        parts=[
            {"key": "action/world_vector", "stop": 2},
            {"key": "action/rotation_delta", "fill": 0},
            {"key": "action/open"},
            {"fill": 1, "width": 2},
        ],
    )
    expected = np.concatenate(
        [wv[:, :2], np.zeros((t, 3)), flag[:, None].astype(np.float32), np.ones((t, 2))], -1
    )
    check(fn, traj, "action", expected)


def test_slice_take_copy_rename_cast():
    state = RNG.normal(size=(5, 8)).astype(np.float32)
    depth = RNG.integers(0, 255, size=(5, 2, 2, 1)).astype(np.uint8)
    traj = {"observation": {"state": state, "depth": depth, "txt": np.array([b"a"] * 5)}, "action": state}
    check(
        op("slice", src="observation/state", dest="observation/eef", start=1, stop=-2),
        traj,
        "observation/eef",
        state[:, 1:-2],
    )
    check(op("slice", src="observation/state", start=-2), traj, "observation/state", state[:, -2:])
    check(
        op("take", src="observation/depth", index=0, dtype="float32"),
        traj,
        "observation/depth",
        depth[..., 0].astype(np.float32),
    )
    check(op("copy", src="observation/state", dest="observation/proprio"), traj, "observation/proprio", state)
    check(
        op("cast", key="observation/depth", dtype="float32"),
        traj,
        "observation/depth",
        depth.astype(np.float32),
    )
    for out in both_modes(op("rename", src="observation/txt", dest="language_instruction"), traj):
        assert "txt" not in out["observation"] and list(out["language_instruction"]) == [b"a"] * 5


def test_paths_match_keys_containing_slashes():
    v = RNG.normal(size=(3, 7)).astype(np.float32)
    traj = {"observation": {"clip_function_input/base_pose_tool_reached": v}, "action": v}
    fn = op(
        "slice", src="observation/clip_function_input/base_pose_tool_reached", dest="observation/eef", stop=3
    )
    check(fn, traj, "observation/eef", v[:, :3])


def test_column_ops_clip_scale_invert_pad():
    a = RNG.uniform(-2, 2, size=(6, 7)).astype(np.float32)
    traj = {"action": a, "observation": {}}
    exp = a.copy()
    exp[:, -1] = np.clip(a[:, -1], 0, 1)
    check(op("clip", min=0.0, max=1.0), traj, "action", exp)
    exp = a.copy()
    exp[:, -1] = 1 - a[:, -1]
    check(op("invert_gripper"), traj, "action", exp)
    exp = a.copy()
    exp[:, 1:3] = a[:, 1:3] * 2.5 - 1
    check(op("scale", start=1, stop=3, factor=2.5, offset=-1.0), traj, "action", exp)
    check(
        op("pad", before=1, after=2, value=3.0),
        traj,
        "action",
        np.pad(a, [(0, 0), (1, 2)], constant_values=3.0),
    )


@pytest.mark.parametrize(
    "g",
    [
        [1.0, 0.99, 0.5, 0.3, 0.01, 0.0, 0.4, 0.97, 1.0],  # open -> close -> open through intermediates
        [0.0, 0.2, 0.6, 0.7],  # ends in intermediate values: they keep the raw last value
        [0.5, 0.5, 1.0],
    ],
)
def test_binarize_gripper(g):
    a = np.zeros((len(g), 7), np.float32)
    a[:, -1] = g
    exp = a.copy()
    exp[:, -1] = np_binarize(np.array(g, np.float32))
    check(op("binarize_gripper"), {"action": a, "observation": {}}, "action", exp)


@pytest.mark.parametrize(
    "g",
    [
        [0.0, 0.0, 1.0, 0.0, 0.0, -1.0, 0.0],  # starts open, closes, opens
        [0.0, -1.0, 0.0, 1.0],  # first command opens -> starts closed
        [0.0, 0.05, -0.05, 0.0],  # no command above threshold -> open throughout
        [1.0, 1.0, 0.0],
    ],
)
def test_rel2abs_gripper(g):
    a = np.zeros((len(g), 7), np.float32)
    a[:, -1] = g
    exp = a.copy()
    exp[:, -1] = np_rel2abs(g)
    check(op("rel2abs_gripper"), {"action": a, "observation": {}}, "action", exp)


def test_quat_to_euler_matches_composed_rotations():
    n = 32
    euler = np.stack(
        [RNG.uniform(-3.1, 3.1, n), RNG.uniform(-1.5, 1.5, n), RNG.uniform(-3.1, 3.1, n)], axis=-1
    )
    quat = np.stack([np_euler_to_quat(e) for e in euler])
    quat[::2] *= -1  # q and -q are the same rotation
    xyz, grip = RNG.normal(size=(n, 3)), RNG.uniform(size=(n, 1))
    traj = {"action": np.concatenate([xyz, quat, grip], -1).astype(np.float32), "observation": {}}
    check(op("quat_to_euler", start=3), traj, "action", np.concatenate([xyz, euler, grip], -1), atol=2e-4)


def test_quat_to_euler_gimbal_lock_gives_the_same_rotation():
    euler = np.array([[0.3, np.pi / 2, -0.4], [0.2, -np.pi / 2, 0.5]])
    quat = np.stack([np_euler_to_quat(e) for e in euler]).astype(np.float32)
    for out in both_modes(op("quat_to_euler", start=0), {"action": quat, "observation": {}}):
        for e_got, e_true in zip(out["action"], euler):
            np.testing.assert_allclose(np_euler_to_matrix(e_got), np_euler_to_matrix(e_true), atol=2e-3)


def test_euler_to_r6():
    e = RNG.uniform(-1, 1, size=(5, 3))
    a = np.concatenate([np.ones((5, 3)), e, np.zeros((5, 1))], -1).astype(np.float32)
    r6 = np.stack([np_euler_to_matrix(x)[:2].reshape(-1) for x in e])
    check(
        op("euler_to_r6", start=3),
        {"action": a, "observation": {}},
        "action",
        np.concatenate([a[:, :3], r6, a[:, -1:]], -1),
        atol=1e-5,
    )


def test_drop_steps_and_relabel_bridge_actions_cut_every_leaf():
    t = 6
    state = RNG.normal(size=(t, 7)).astype(np.float32)
    action = RNG.normal(size=(t, 7)).astype(np.float32)
    traj = {
        "observation": {"state": state, "image": np.arange(t)},
        "action": action,
        "language_instruction": np.array([b"x"] * t),
        "traj_metadata": {"episode_id": np.full(t, 7)},  # broadcast to every step by the reader
    }
    for out in both_modes(op("drop_steps", first=1, last=2), traj):
        np.testing.assert_array_equal(out["observation"]["image"], np.arange(t)[1:-2])
        np.testing.assert_array_equal(out["traj_metadata"]["episode_id"], [7, 7, 7])
    exp = np.concatenate([state[1:, :6] - state[:-1, :6], action[:-1, -1:]], -1)
    for out in both_modes(op("relabel_bridge_actions"), traj):
        np.testing.assert_allclose(out["action"], exp, atol=1e-6)
        np.testing.assert_array_equal(out["observation"]["image"], np.arange(t - 1))
        assert len(out["language_instruction"]) == len(out["traj_metadata"]["episode_id"]) == t - 1


def test_decode_compressed_and_codepoints():
    vals = RNG.normal(size=(3, 7)).astype(np.float32)
    blobs = np.array([zlib.compress(v.tobytes()) for v in vals], dtype=object)
    texts = ["pick up the cup", "push", ""]
    codes = np.zeros((3, 20), np.int32)
    for i, s in enumerate(texts):
        codes[i, : len(s)] = [ord(c) for c in s]
    traj = {"observation": {"pose": tf.constant(blobs, tf.string), "instruction": codes}, "action": vals}
    check(op("decode_compressed", key="observation/pose", width=7), traj, "observation/pose", vals)
    for out in both_modes(op("decode_codepoints", src="observation/instruction"), traj):
        assert [s.decode() for s in out["language_instruction"]] == texts


def test_random_swap_extremes():
    traj = {
        "observation": {"a": np.zeros((2, 3), np.uint8), "b": np.ones((2, 3), np.uint8)},
        "action": np.zeros((2, 7)),
    }
    for p, a_val in ((1.0, 1), (0.0, 0)):
        for out in both_modes(op("random_swap", a="observation/a", b="observation/b", probability=p), traj):
            assert (out["observation"]["a"] == a_val).all() and (out["observation"]["b"] == 1 - a_val).all()


def test_nonzero_normalized_action_filter():
    q01, q99 = [-1.0, -0.5], [1.0, 1.5]
    keep = CHUNK_FILTERS.get("nonzero_normalized_action")(q01=q01, q99=q99)
    zero = 2 * (0 - np.array(q01)) / (np.array(q99) - np.array(q01) + 1e-8) - 1  # normalised raw 0
    idle = np.tile(np.concatenate([zero, [0.3]]), (2, 1)).astype(np.float32)  # only the gripper differs
    moving = idle.copy()
    moving[1, 0] += 0.1
    assert not bool(keep({"action": tf.constant(idle)}))
    assert bool(keep({"action": tf.constant(moving)}))
    ds = (
        tf.data.Dataset.from_tensor_slices(np.stack([idle, moving])).map(lambda a: {"action": a}).filter(keep)
    )
    assert len(list(ds)) == 1


# -- DatasetSpec ----------------------------------------------------------------------------------------


def make_spec(**kw):
    base = dict(
        name="toy",
        image_obs_keys={"primary": "image"},
        depth_obs_keys={},
        proprio_obs_keys=("state",),
        state_encoding="pos_euler",
        action_encoding="eef_pos",
        source="test",
    )
    return DatasetSpec(**(base | kw))


def toy_traj(t=4):
    return {
        "observation": {
            "image": np.zeros((t, 2, 2, 3), np.uint8),
            "state": RNG.normal(size=(t, 7)).astype(np.float32),
        },
        "action": RNG.normal(size=(t, 7)).astype(np.float64),
        "language_instruction": np.array([b"go"] * t),
    }


def test_spec_defaults_and_derived_facts():
    spec = make_spec()
    assert spec.image_obs_keys == {"primary": "image", "secondary": None, "wrist": None}
    assert spec.depth_obs_keys == {"primary": None, "secondary": None, "wrist": None}
    assert spec.action_mask == (True,) * 6 + (False,)
    assert spec.absolute_action_mask == (False,) * 6 + (True,)
    assert spec.normalization_type is NormalizationType.BOUNDS_Q99
    assert spec.language_key == "language_instruction" and spec.tfds_name == "toy"
    assert make_spec(version="1.0.0").tfds_name == "toy:1.0.0"
    assert make_spec(action_encoding="eef_r6").action_mask == (True,) * 9 + (False,)


def test_standardize_casts_and_does_not_mutate_input():
    spec = make_spec(ops=(OpCall("invert_gripper"),))
    traj = toy_traj()
    raw_action = traj["action"].copy()
    original_obs = traj["observation"]
    out = spec.standardize(traj)
    assert out["action"].dtype == tf.float32
    np.testing.assert_allclose(out["action"].numpy()[:, -1], 1 - raw_action[:, -1], atol=1e-6)
    assert traj["observation"] is original_obs and traj["action"] is not out["action"]
    np.testing.assert_array_equal(traj["action"], raw_action)


def test_standardize_errors_name_dataset_op_and_key():
    with pytest.raises(MissingKeyError, match=r"'toy'.*slice.*'observation/nope'.*image, state"):
        make_spec(ops=(OpCall("slice", {"src": "observation/nope", "stop": 2}),)).standardize(toy_traj())
    with pytest.raises(SpecError, match="width 6.*needs 7"):
        make_spec(ops=(OpCall("slice", {"src": "action", "stop": 6}),)).standardize(toy_traj())
    traj = toy_traj()
    traj["action"] = {"a": traj["action"]}
    with pytest.raises(SpecError, match="still a dict.*concat"):
        make_spec().standardize(traj)
    with pytest.raises(MissingKeyError, match="no 'instruction'.*language_key"):
        make_spec(language_key="instruction").standardize(toy_traj())


def test_spec_constructor_lists_every_problem():
    with pytest.raises(SpecError) as e:
        make_spec(
            image_obs_keys={"front": "img"},
            state_encoding="euler",
            action_mask=(True, False),
            ops=(OpCall("binarise_gripper"), OpCall("clip", {"min": 2.0, "max": 1.0})),
        )
    msg = str(e.value)
    assert len(e.value.problems) == 5
    assert "unknown camera 'front'" in msg and "primary, secondary, wrist" in msg
    assert "unknown value 'euler'" in msg and "pos_euler" in msg
    assert "needs 7 booleans" in msg
    assert "did you mean 'binarize_gripper'" in msg
    assert "`min` (2.0) must not exceed `max` (1.0)" in msg


def test_loading_specs_does_not_need_tensorflow(monkeypatch):
    """Reading specs and mixtures (e.g. at inference, for masks) must not import TensorFlow: the only
    route to it in the spec package is the lazy proxy in ops.py, so make that route fail and load
    everything."""
    import importlib

    import prismatic.data.spec as spec_package

    real_import = importlib.import_module

    def no_tf(name, *args):
        if name.startswith("tensorflow"):
            raise AssertionError("TensorFlow imported while loading specs")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_tf)
    spec_package.shipped_specs.cache_clear()
    try:
        assert len(spec_package.resolve_mixture("oxe_magic_soup_plus")) == 27
    finally:
        spec_package.shipped_specs.cache_clear()
