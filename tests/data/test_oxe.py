"""The OXE registry: shipped YAML validates, mixtures match the original's weights and resolve, and
representative datasets produce the original's canonical action on hand-built raw trajectories.

Expected values are written out from the original's documented semantics (gripper: 1 = open,
0 = closed), not computed with the code under test."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest

# `prismatic` (torch, transformers) before TensorFlow: the reverse import order crashes in this venv.
from prismatic.data import spec as S
from prismatic.data.oxe.mixtures import MIXTURES
from prismatic.data.spec import (
    DatasetSpec,
    SpecError,
    UnknownNameError,
    get_dataset_spec,
    get_mixture,
    load_dataset_specs,
    resolve_mixture,
)

tf = pytest.importorskip("tensorflow")

RNG = np.random.default_rng(1)
REPO = Path(__file__).resolve().parents[2]


def f32(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def standardize_both(spec: DatasetSpec, traj: dict) -> list[dict]:
    """Standardised trajectory as numpy, eagerly and through tf.data.Dataset.map."""
    traj = tf.nest.map_structure(tf.convert_to_tensor, traj)
    eager = spec.standardize(traj)
    graph = next(iter(tf.data.Dataset.from_tensors(traj).map(spec.standardize)))
    return [tf.nest.map_structure(lambda x: x.numpy(), out) for out in (eager, graph)]


def strings(n, text=b"do it"):
    return np.array([text] * n)


# -- the shipped files --------------------------------------------------------------------------------


def test_every_shipped_yaml_file_validates():
    files = [S.BUILTIN_SPECS_FILE, *sorted((REPO / "configs" / "datasets").glob("*.yaml"))]
    assert len(files) >= 2
    for f in files:
        specs = load_dataset_specs(f)
        assert specs, f
        for name, spec in specs.items():
            assert spec.name == name and len(spec.action_mask) == spec.action_dim


def test_builtin_registry_covers_the_original():
    specs = S.shipped_specs()
    builtin = {n for n, s in specs.items() if s.source == "builtin:oxe"}
    assert len(builtin) == 70  # every entry of the original's OXE_DATASET_CONFIGS
    # A few facts carried over from the original configs.
    b = specs["bridge_orig"]
    assert b.image_obs_keys == {"primary": "image_0", "secondary": "image_1", "wrist": None}
    assert b.proprio_obs_keys == ("EEF_state", None, "gripper_state") and b.state_encoding == "pos_euler"
    rt1 = specs["fractal20220817_data"]
    assert (
        rt1.proprio_obs_keys == ("base_pose_tool_reached", "gripper_closed")
        and rt1.state_encoding == "pos_quat"
    )
    assert specs["taco_play"].depth_obs_keys == {
        "primary": "depth_static",
        "secondary": None,
        "wrist": "depth_gripper",
    }
    assert specs["droid"].image_obs_keys["wrist"] == "wrist_image_left"
    assert specs["language_table"].proprio_obs_keys == ("effector_translation",) + (None,) * 6
    joint = sorted(n for n in builtin if not specs[n].trainable)
    assert joint == [
        "berkeley_mvp_converted_externally_to_rlds",
        "berkeley_rpt_converted_externally_to_rlds",
        "roboset",
    ]
    for name in (
        "libero_spatial_no_noops",
        "libero_object_no_noops",
        "libero_goal_no_noops",
        "libero_10_no_noops",
    ):
        assert specs[name].ops == specs["libero_spatial_no_noops"].ops
        assert specs[name].action_mask == (True,) * 6 + (False,)


# -- mixtures -----------------------------------------------------------------------------------------

MAGIC_SOUP_PLUS = {
    "fractal20220817_data": 0.54087122203,
    "kuka": 0.8341046294,
    "bridge_orig": 1.0,
    "taco_play": 2.0,
    "jaco_play": 1.0,
    "berkeley_cable_routing": 1.0,
    "roboturk": 2.0,
    "viola": 2.0,
    "berkeley_autolab_ur5": 2.0,
    "toto": 1.0,
    "language_table": 0.1,
    "stanford_hydra_dataset_converted_externally_to_rlds": 2.0,
    "austin_buds_dataset_converted_externally_to_rlds": 1.0,
    "nyu_franka_play_dataset_converted_externally_to_rlds": 3.0,
    "furniture_bench_dataset_converted_externally_to_rlds": 0.1,
    "ucsd_kitchen_dataset_converted_externally_to_rlds": 2.0,
    "austin_sailor_dataset_converted_externally_to_rlds": 1.0,
    "austin_sirius_dataset_converted_externally_to_rlds": 1.0,
    "dlr_edan_shared_control_converted_externally_to_rlds": 1.0,
    "iamlab_cmu_pickup_insert_converted_externally_to_rlds": 1.0,
    "utaustin_mutex": 1.0,
    "berkeley_fanuc_manipulation": 2.0,
    "cmu_stretch": 1.0,
    "bc_z": 0.2,
    "fmb_dataset": 1.0,
    "dobbe": 0.2,
    "droid": 0.06,
}


def test_mixture_weights_match_the_original():
    assert dict(get_mixture("oxe_magic_soup_plus")) == MAGIC_SOUP_PLUS
    soup = {k: v for k, v in MAGIC_SOUP_PLUS.items() if k not in ("bc_z", "fmb_dataset", "dobbe", "droid")}
    assert dict(get_mixture("oxe_magic_soup")) == soup
    minus = {k: v for k, v in MAGIC_SOUP_PLUS.items() if k not in ("language_table", "droid")}
    assert dict(get_mixture("oxe_magic_soup_plus_minus")) == minus | {"fractal20220817_data": 1.0}
    rtx = {
        "fractal20220817_data": 0.54087122203, "kuka": 0.8341046294, "bridge_orig": 1.0, "taco_play": 2.0,
        "jaco_play": 2.0, "berkeley_cable_routing": 3.0, "roboturk": 1.0, "viola": 2.0,
        "berkeley_autolab_ur5": 1.0, "toto": 1.0,
    }  # fmt: skip
    assert dict(get_mixture("rtx")) == rtx
    franka = dict(get_mixture("rtx_franka"))
    assert (
        len(franka) == 23 and {k: franka[k] for k in rtx} == rtx
    )  # first occurrence wins, as in the original
    assert franka["cmu_franka_exploration_dataset_converted_externally_to_rlds"] == 5.0
    assert franka["maniskill_dataset_converted_externally_to_rlds"] == 0.1
    assert get_mixture("bridge") == [("bridge_orig", 1.0)]
    assert dict(get_mixture("bridge_rt_1")) == {"bridge_orig": 1.0, "fractal20220817_data": 1.0}
    for name in ("libero_spatial_no_noops", "libero_10_no_noops", "droid_wipe", "tdroid_carrot_in_bowl"):
        assert get_mixture(name) == [(name, 1.0)]
    assert len(MIXTURES) == 18


@pytest.mark.parametrize("name", sorted(MIXTURES))
def test_every_mixture_resolves(name):
    resolved = resolve_mixture(name)
    assert [(s.name, w) for s, w in resolved] == get_mixture(name)
    assert all(s.trainable for s, _ in resolved)


def test_single_dataset_resolves_with_weight_one():
    [(spec, w)] = resolve_mixture("cmu_stretch")
    assert spec.name == "cmu_stretch" and w == 1.0


def test_unknown_names_suggest_close_matches():
    with pytest.raises(UnknownNameError, match=r"did you mean 'bridge_orig'") as e:
        get_dataset_spec("bridge_orgi")
    assert isinstance(e.value, KeyError) and "example_custom.yaml" in str(e.value)
    with pytest.raises(UnknownNameError, match=r"did you mean 'oxe_magic_soup'.*known mixtures: bridge, "):
        get_mixture("oxe_magic_soop")
    with pytest.raises(UnknownNameError, match="neither a mixture nor a dataset"):
        resolve_mixture("no_such_thing_at_all")


def test_mixture_with_missing_datasets_lists_all_of_them(monkeypatch):
    monkeypatch.setitem(
        MIXTURES, "broken", [("bridge_orig", 1.0), ("my_robot", 1.0), ("fractal_data", 0.5), ("roboset", 1.0)]
    )
    with pytest.raises(SpecError) as e:
        resolve_mixture("broken")
    msg = str(e.value)
    assert len(e.value.problems) == 3
    assert "'my_robot' is not a known dataset" in msg
    assert "'fractal_data' is not a known dataset (did you mean 'fractal20220817_data'" in msg
    assert "'roboset' has action_encoding 'joint_pos'" in msg


def test_mixture_duplicates_and_bad_weights_are_errors(monkeypatch):
    monkeypatch.setitem(MIXTURES, "dup", [("bridge_orig", 1.0), ("bridge_orig", 2.0), ("kuka", 0.0)])
    with pytest.raises(SpecError, match="(?s)'bridge_orig' appears more than once.*weight of 'kuka'"):
        resolve_mixture("dup")


def test_user_file_adds_and_overrides_datasets(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(
        "my_robot:\n  image_obs_keys: {primary: cam}\n  proprio_obs_keys: null\n"
        "  state_encoding: none\n  action_encoding: eef_pos\n"
        "bridge_orig:\n  image_obs_keys: {primary: image_0}\n  proprio_obs_keys: null\n"
        "  state_encoding: none\n  action_encoding: eef_pos\n  version: '1.0.0'\n"
    )
    mine = get_dataset_spec("my_robot", extra_files=[f])
    assert mine.source == str(f) and mine.image_obs_keys["primary"] == "cam"
    assert get_dataset_spec("bridge_orig", extra_files=[f]).tfds_name == "bridge_orig:1.0.0"
    assert get_dataset_spec("bridge_orig").version is None  # builtins untouched
    assert [s.name for s, _ in resolve_mixture("my_robot", extra_files=[f])] == ["my_robot"]


# -- YAML validation ----------------------------------------------------------------------------------


def test_bad_yaml_entries_are_all_reported_with_file_key_and_choices(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(
        """
a:
  image_obs_keys: {primary: image, top: img}
  proprio_obs_keys: [state]
  state_encoding: pos_eular
  action_encoding: eef_pos
  normalisation_type: bounds
  action_mask: [true, false]
  standardize:
    - invert_griper: {}
    - clip: {min: "0", maximum: 1}
    - slice: {dest: observation/x}
    - concat: {parts: [{key: action, width: 3}]}
  chunk_filter: {nonzero_normalized_action: {q01: [0.0]}}
b:
  image_obs_keys: {primary: image}
  state_encoding: none
  action_encoding: eef_joint
  normalization_type: minmax
  version: 1.0
  standardize:
    - [not, an, op]
c: just a string
ok:
  image_obs_keys: {primary: image}
  proprio_obs_keys: null
  state_encoding: none
  action_encoding: eef_pos
"""
    )
    with pytest.raises(SpecError) as e:
        load_dataset_specs(f)
    problems = e.value.problems
    assert all(str(f) in p for p in problems)
    text = "\n".join(problems)
    expected = [
        "dataset 'a': key 'normalisation_type': unknown key; did you mean 'normalization_type'? valid keys: image_obs_keys",
        "dataset 'a': key 'image_obs_keys': unknown camera 'top'; choose from: primary, secondary, wrist",
        "dataset 'a': key 'state_encoding': unknown value 'pos_eular'; choose one of: none, pos_euler, pos_quat",
        "dataset 'a': key 'action_mask': needs 7 booleans for action_encoding 'eef_pos'",
        "dataset 'a': key 'standardize[0]': unknown standardisation op 'invert_griper'; did you mean 'invert_gripper'",
        "dataset 'a': key 'standardize[1]': clip: unknown argument 'maximum'; did you mean 'max'",
        "dataset 'a': key 'standardize[1]': clip: argument 'min' must be float, got '0'",
        "dataset 'a': key 'standardize[2]': slice: missing required argument 'src'",
        "dataset 'a': key 'standardize[3]': concat: part 0: `width` is only for constant parts",
        "dataset 'a': key 'chunk_filter': nonzero_normalized_action: missing required argument 'q99'",
        "dataset 'b': key 'proprio_obs_keys': missing",
        "dataset 'b': key 'action_encoding': unknown value 'eef_joint'; choose one of: eef_pos, joint_pos",
        "dataset 'b': key 'normalization_type': Unknown normalization_type 'minmax'; choose one of: normal, bounds, bounds_q99",
        "dataset 'b': key 'version': must be a quoted version string",
        "dataset 'b': key 'standardize[0]': must be `op_name` or `op_name: {arg: value, ...}`",
        "dataset 'c': entry must be a mapping",
    ]
    for snippet in expected:
        assert snippet in text, f"missing: {snippet}\n{text}"
    assert len(problems) == len(expected)


def test_yaml_file_level_errors(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("a: {image_obs_keys: {}}\na: {}\n")
    with pytest.raises(SpecError, match="duplicate key 'a'"):
        load_dataset_specs(f)
    f.write_text("a: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_dataset_specs(f)
    f.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="must be a mapping from dataset name to entry"):
        load_dataset_specs(f)
    with pytest.raises(SpecError, match="Cannot read"):
        load_dataset_specs(tmp_path / "absent.yaml")


# -- canonical actions of representative datasets ------------------------------------------------------


def test_bridge_orig():
    t = 6
    action, state = f32(t, 7), f32(t, 7)
    action[0] = 0.0  # Bridge's first step carries no action
    action[:, -1] = [0.0, 1.0, 0.6, 0.02, 0.0, 0.98]
    traj = {
        "observation": {"image_0": np.arange(t), "image_1": np.arange(t), "state": state},
        "action": action,
        "language_instruction": np.array([b"s%d" % i for i in range(t)]),
        "is_first": np.arange(t) == 0,
    }
    # Drop step 0; gripper of steps 1..5 = [1.0, 0.6, 0.02, 0.0, 0.98] -> 0.6 is mid-closing -> [1, 0, 0, 0, 1];
    # relabel with reached state deltas and drop the last step -> 4 steps 1..4.
    motion = state[2:6, :6] - state[1:5, :6]
    expected = np.concatenate([motion, np.array([[1], [0], [0], [0]], np.float32)], -1)
    for out in standardize_both(get_dataset_spec("bridge_orig"), traj):
        np.testing.assert_allclose(out["action"], expected, atol=1e-6)
        np.testing.assert_array_equal(out["observation"]["image_0"], [1, 2, 3, 4])
        np.testing.assert_allclose(out["observation"]["EEF_state"], state[1:5, :6])
        np.testing.assert_allclose(out["observation"]["gripper_state"], state[1:5, 6:])
        assert list(out["language_instruction"]) == [b"s1", b"s2", b"s3", b"s4"]
        assert not out["is_first"].any()  # the original drops the first step, flag included


def test_fractal_rt1_relative_gripper():
    t = 6
    wv, rot = f32(t, 3), f32(t, 3)
    closedness = np.array([[0.0], [0.0], [1.0], [0.0], [-1.0], [0.0]], np.float32)  # close at 2, open at 4
    traj = {
        "observation": {
            "image": np.zeros((t, 2, 2, 3), np.uint8),
            "natural_language_instruction": strings(t, b"pick coke can"),
            "base_pose_tool_reached": f32(t, 7),
            "gripper_closed": f32(t, 1),
        },
        "action": {
            "world_vector": wv,
            "rotation_delta": rot,
            "gripper_closedness_action": closedness,
            "terminate_episode": np.zeros((t, 3), np.int32),
        },
    }
    gripper = np.array([1, 1, 0, 0, 1, 1], np.float32)[:, None]  # open until the close command
    for out in standardize_both(get_dataset_spec("fractal20220817_data"), traj):
        np.testing.assert_allclose(out["action"], np.concatenate([wv, rot, gripper], -1), atol=1e-6)
        assert out["action"].dtype == np.float32
        assert set(out["language_instruction"]) == {b"pick coke can"}


@pytest.mark.parametrize(
    "name",
    ["libero_spatial_no_noops", "libero_object_no_noops", "libero_goal_no_noops", "libero_10_no_noops"],
)
def test_libero(name):
    t = 5
    action, state = f32(t, 7), f32(t, 8)
    action[:, -1] = [-1.0, -1.0, 1.0, 1.0, -1.0]  # LIBERO: -1 open, +1 close
    traj = {
        "observation": {
            "image": np.zeros((t, 2, 2, 3), np.uint8),
            "wrist_image": np.zeros((t, 2, 2, 3), np.uint8),
            "state": state,
        },
        "action": action,
        "language_instruction": strings(t),
    }
    expected = action.copy()
    expected[:, -1] = [1, 1, 0, 0, 1]
    for out in standardize_both(get_dataset_spec(name), traj):
        np.testing.assert_allclose(out["action"], expected, atol=1e-6)
        np.testing.assert_allclose(out["observation"]["EEF_state"], state[:, :6])
        np.testing.assert_allclose(out["observation"]["gripper_state"], state[:, 6:8])


def test_jaco_play_relative_gripper_and_no_rotation():
    t = 4
    wv, pos = f32(t, 3), f32(t, 8)
    closedness = np.array([[0.0], [-1.0], [0.0], [1.0]], np.float32)  # first command opens: starts closed
    traj = {
        "observation": {
            "image": np.zeros((t, 1)),
            "end_effector_cartesian_pos": pos,
            "natural_language_instruction": strings(t),
        },
        "action": {"world_vector": wv, "gripper_closedness_action": closedness},
    }
    expected = np.concatenate([wv, np.zeros((t, 3)), [[0], [1], [1], [0]]], -1)
    for out in standardize_both(get_dataset_spec("jaco_play"), traj):
        np.testing.assert_allclose(out["action"], expected, atol=1e-6)
        np.testing.assert_allclose(out["observation"]["state_eef"], pos[:, :6])
        np.testing.assert_allclose(out["observation"]["state_gripper"], pos[:, -1:])


def test_furniture_bench_quaternion_action():
    t = 3
    a, b = 0.7, -1.2
    quat = np.array(
        [[0, 0, math.sin(a / 2), math.cos(a / 2)], [math.sin(b / 2), 0, 0, math.cos(b / 2)], [0, 0, 0, 1]]
    )
    euler = np.array([[0, 0, a], [b, 0, 0], [0, 0, 0]])  # rotation about z by a, about x by b, identity
    xyz, state = f32(t, 3), f32(t, 35)
    grip = np.array([[-1.0], [0.5], [1.0]])  # 1 = close
    traj = {
        "observation": {"image": np.zeros((t, 1)), "state": state},
        "action": np.concatenate([xyz, quat, grip], -1).astype(np.float32),
        "language_instruction": strings(t),
    }
    expected = np.concatenate([xyz, euler, [[1.0], [0.5], [0.0]]], -1)
    for out in standardize_both(
        get_dataset_spec("furniture_bench_dataset_converted_externally_to_rlds"), traj
    ):
        np.testing.assert_allclose(out["action"], expected, atol=1e-5)
        np.testing.assert_allclose(
            out["observation"]["state"], np.concatenate([state[:, :7], state[:, -1:]], -1)
        )


def test_kuka_compressed_state():
    t = 3
    pose, closed = f32(t, 7), f32(t, 1)
    traj = {
        "observation": {
            "image": np.zeros((t, 1)),
            "clip_function_input/base_pose_tool_reached": tf.constant(
                [zlib.compress(p.tobytes()) for p in pose]
            ),
            "gripper_closed": tf.constant([zlib.compress(c.tobytes()) for c in closed]),
            "natural_language_instruction": strings(t),
        },
        "action": {
            "world_vector": f32(t, 3),
            "rotation_delta": f32(t, 3),
            "gripper_closedness_action": np.zeros((t, 1), np.float32),
        },
    }
    for out in standardize_both(get_dataset_spec("kuka"), traj):
        np.testing.assert_allclose(out["observation"]["clip_function_input/base_pose_tool_reached"], pose)
        np.testing.assert_allclose(out["observation"]["gripper_closed"], closed)
        np.testing.assert_allclose(out["action"][:, -1], 1.0)  # no command: open throughout


def test_droid_base_frame_action_proprio_and_idle_filter():
    t = 4
    vel, cart = f32(t, 6), f32(t, 6)
    grip = np.array([[0.0], [0.2], [1.0], [1.0]], np.float32)  # DROID: 1 = closed
    ext1, ext2 = np.zeros((t, 2), np.uint8), np.ones((t, 2), np.uint8)
    traj = {
        "observation": {
            "exterior_image_1_left": ext1, "exterior_image_2_left": ext2, "wrist_image_left": ext1,
            "cartesian_position": cart, "gripper_position": grip,
        },
        "action_dict": {"cartesian_velocity": vel, "gripper_position": grip},
        "action": f32(t, 7),
        "language_instruction": strings(t),
    }  # fmt: skip
    spec = get_dataset_spec("droid")
    for out in standardize_both(spec, traj):
        np.testing.assert_allclose(out["action"], np.concatenate([vel, 1 - grip], -1), atol=1e-6)
        np.testing.assert_allclose(out["observation"]["proprio"], np.concatenate([cart, grip], -1))
        pair = {
            out["observation"]["exterior_image_1_left"][0, 0],
            out["observation"]["exterior_image_2_left"][0, 0],
        }
        assert pair == {0, 1}  # possibly swapped, never mixed
    # Idle chunks (all-zero raw motion) are dropped after q01/q99 normalisation; others are kept.
    keep = spec.build_chunk_filter()
    q01, q99 = np.array(spec.chunk_filter.args["q01"]), np.array(spec.chunk_filter.args["q99"])
    normalised_zero = 2 * (0 - q01) / (q99 - q01) - 1
    idle = np.tile(np.append(normalised_zero, 1.0), (2, 1)).astype(np.float32)
    assert not bool(keep({"action": tf.constant(idle)}))
    idle[0, 2] = 0.5
    assert bool(keep({"action": tf.constant(idle)}))


def test_language_table_planar_action_and_decoded_instruction():
    t = 2
    xy = f32(t, 2)
    text = "push the red star to the left"
    codes = np.zeros((t, 64), np.int32)
    codes[:, : len(text)] = [ord(c) for c in text]
    traj = {
        "observation": {"rgb": np.zeros((t, 1)), "effector_translation": f32(t, 2), "instruction": codes},
        "action": xy,
    }
    for out in standardize_both(get_dataset_spec("language_table"), traj):
        np.testing.assert_allclose(out["action"], np.concatenate([xy, np.zeros((t, 4)), np.ones((t, 1))], -1))
        assert [s.decode() for s in out["language_instruction"]] == [text] * t


def test_berkeley_autolab_ur5_state_depth_and_gripper():
    t = 4
    robot_state = f32(t, 15)
    traj = {
        "observation": {
            "image": np.zeros((t, 1)), "hand_image": np.zeros((t, 1)), "image_with_depth": np.full((t, 2), 7.0),
            "robot_state": robot_state, "natural_language_instruction": strings(t),
        },
        "action": {"world_vector": f32(t, 3), "rotation_delta": f32(t, 3), "gripper_closedness_action": np.array([1.0, 0.0, 0.0, -1.0], np.float32)},
    }  # fmt: skip
    for out in standardize_both(get_dataset_spec("berkeley_autolab_ur5"), traj):
        np.testing.assert_allclose(out["observation"]["state"], robot_state[:, 6:14])
        assert "image_with_depth" not in out["observation"] and (out["observation"]["depth"] == 7.0).all()
        np.testing.assert_allclose(out["action"][:, -1], [0, 0, 0, 1])


def test_berkeley_fanuc_gripper_from_state():
    t = 3
    action, state = f32(t, 6), f32(t, 13)
    state[:, 6] = [1.0, 0.0, 1.0]  # gripper state, 1 = closed
    traj = {
        "observation": {"image": np.zeros((t, 1)), "state": state},
        "action": action,
        "language_instruction": strings(t),
    }
    for out in standardize_both(get_dataset_spec("berkeley_fanuc_manipulation"), traj):
        np.testing.assert_allclose(out["action"], np.concatenate([action, [[0], [1], [0]]], -1))
        np.testing.assert_allclose(out["observation"]["joint_state"], state[:, :6])


def test_example_custom_template_standardizes():
    t = 3
    action, state = f32(t, 7), f32(t, 7)
    action[:, -1] = [1.0, 0.0, 2.0]  # 1 = close (clipped to [0, 1] first)
    traj = {
        "observation": {"image": np.zeros((t, 1)), "wrist_image": np.zeros((t, 1)), "state": state},
        "action": action,
        "language_instruction": strings(t),
    }
    expected = action.copy()
    expected[:, -1] = [0.0, 1.0, 0.0]
    for out in standardize_both(get_dataset_spec("example_custom_dataset"), traj):
        np.testing.assert_allclose(out["action"], expected, atol=1e-6)
        np.testing.assert_allclose(out["observation"]["EEF_state"], state[:, :6])
