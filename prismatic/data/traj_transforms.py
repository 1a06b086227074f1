"""Trajectory-level transforms (need the whole trajectory; cheap: they move data, never decode images).

Every random choice is *stateless*, seeded by (pipeline seed, trajectory counter), so a pipeline
rebuilt with the same seed yields the same stream and different ranks get different streams.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tensorflow.experimental.numpy as tnp

from prismatic.data.errors import DataError
from prismatic.data.libero.regenerate import NOOP_THRESHOLD
from prismatic.data.rlds import Trajectory, describe_keys, traj_length
from prismatic.data.spec import DatasetSpec
from prismatic.normalization import NormalizationType, normalize

log = logging.getLogger(__name__)

NOOP_FILTERS = ("none", "zero", "libero")


# -- restructuring ---------------------------------------------------------------------------------
def standardize_and_check(spec: DatasetSpec, element_spec: Mapping[str, Any]):
    """Trace `spec.standardize` once on the dataset's element spec, turning missing keys into DataError.

    Runs at pipeline construction (cheap: no data is read) so a wrong key fails before any real work.
    Returns the output element spec of the standardised trajectory.
    """
    try:
        concrete = tf.function(spec.standardize).get_concrete_function(
            tf.nest.map_structure(lambda s: tf.TensorSpec(s.shape, s.dtype), dict(element_spec))
        )
    except KeyError as e:
        raise DataError(
            f"Standardising dataset {spec.name!r} (spec from {spec.source}) failed: key {e} is missing. "
            f"The dataset's step keys are: {', '.join(describe_keys(dict(element_spec)))}. "
            "Fix the spec's keys or its standardisation op."
        ) from e
    out = concrete.structured_outputs
    if not isinstance(out, dict) or "action" not in out or "observation" not in out:
        raise DataError(
            f"The standardisation of {spec.name!r} must return a dict with 'observation' and 'action'; "
            f"got keys {sorted(out) if isinstance(out, dict) else type(out).__name__}."
        )
    return out


def check_restructure_keys(
    spec: DatasetSpec, std_spec: Mapping[str, Any], camera_views: Sequence[str], load_proprio: bool, load_depth: bool
) -> None:
    """Validate, before reading data, every key the restructure step will look up."""
    obs_keys = sorted(std_spec["observation"])
    where = f"dataset {spec.name!r} (spec from {spec.source})"
    for view in camera_views:
        if view not in spec.image_obs_keys:
            raise DataError(
                f"Camera view {view!r} is not defined for {where}; its views are "
                f"{', '.join(spec.image_obs_keys)}. Fix `camera_views`."
            )
    wanted = [spec.image_obs_keys[v] for v in camera_views]
    if load_depth:
        wanted += [spec.depth_obs_keys.get(v) for v in camera_views]
    if load_proprio and spec.proprio_obs_keys:
        wanted += list(spec.proprio_obs_keys)
    for key in wanted:
        if key is not None and key not in std_spec["observation"]:
            raise DataError(
                f"Observation key {key!r} named by the spec of {where} is missing; the (standardised) "
                f"observation has keys: {', '.join(obs_keys)}."
            )
    lang = spec.language_key
    if lang not in std_spec:
        raise DataError(
            f"Language key {lang!r} of {where} is missing; the (standardised) steps have keys: "
            f"{', '.join(sorted(k for k in std_spec if k != 'observation'))}. Fix the spec's `language_key`."
        )
    if std_spec[lang].dtype != tf.string:
        raise DataError(
            f"Language key {lang!r} of {where} has dtype {std_spec[lang].dtype.name}, not string."
        )
    action = std_spec["action"]
    if action.shape.rank != 2 or not action.dtype.is_floating:
        raise DataError(
            f"After standardisation, 'action' of {where} must be float [T, D]; got {action.dtype.name} "
            f"{action.shape}. The spec's standardisation op must build the canonical action."
        )


def restructure(
    traj: Trajectory,
    *,
    spec: DatasetSpec,
    camera_views: Sequence[str],
    load_proprio: bool,
    load_depth: bool,
) -> Trajectory:
    """Standardise with the spec, then keep only what the model needs, under canonical names."""
    traj = spec.standardize(traj)
    length = traj_length(traj)
    old_obs = traj["observation"]
    obs: dict[str, tf.Tensor] = {}
    for view in camera_views:
        key = spec.image_obs_keys[view]
        # An absent camera becomes an empty string: a padding image after decoding.
        obs[f"image_{view}"] = tf.repeat("", length) if key is None else old_obs[key]
        if load_depth:
            dkey = spec.depth_obs_keys.get(view)
            obs[f"depth_{view}"] = tf.repeat("", length) if dkey is None else old_obs[dkey]
    if load_proprio and spec.proprio_obs_keys:
        parts = [
            tf.zeros((length, 1), tf.float32)
            if k is None
            else tf.reshape(tf.cast(old_obs[k], tf.float32), (length, -1))
            for k in spec.proprio_obs_keys
        ]
        obs["proprio"] = tf.concat(parts, axis=1)
    obs["timestep"] = tf.range(length)
    out = {
        "observation": obs,
        "task": {"language_instruction": traj[spec.language_key]},
        "action": tf.cast(traj["action"], tf.float32),
        "dataset_name": tf.repeat(spec.name, length),
    }
    # Absolute dimensions (the gripper) repeat past the goal instead of becoming a zero (no-motion) delta.
    absolute = tf.constant(spec.absolute_action_mask, tf.bool)
    out["absolute_action_mask"] = tf.tile(absolute[None], [length, 1])
    return out


# -- frame filters within a trajectory ------------------------------------------------------------
def _keep_frames(traj: Trajectory, keep: tf.Tensor) -> Trajectory:
    return tf.nest.map_structure(lambda x: tf.boolean_mask(x, keep), traj)


def finite_action_mask(action: tf.Tensor) -> tf.Tensor:
    return tf.reduce_all(tf.math.is_finite(action), axis=-1)


def noop_mask(action: tf.Tensor, mode: str) -> tf.Tensor:
    """True for frames that are no-ops under `mode` (applied to standardised, unnormalised actions).

    - "zero": the generic filter: every action dimension is exactly 0.
    - "libero": the rule used to build the LIBERO `*_no_noops` datasets: the movement part (all but the
      gripper) has L2 norm < 1e-4 AND the gripper command equals the previous step's (the first step
      only needs the first condition). Needed only for raw LIBERO data; `*_no_noops` already had it.
    """
    if mode == "zero":
        return tf.reduce_all(tf.equal(action, 0.0), axis=-1)
    if mode == "libero":
        still = tf.norm(action[:, :-1], axis=-1) < NOOP_THRESHOLD
        gripper = action[:, -1]
        same_gripper = tf.concat([tf.ones([1], tf.bool), tf.equal(gripper[1:], gripper[:-1])], axis=0)
        return tf.logical_and(still, same_gripper)
    raise DataError(f"Unknown noop_filter {mode!r}; choose one of: {', '.join(NOOP_FILTERS)}")


def clean_frames(traj: Trajectory, *, noop_filter: str, fail_on_nonfinite: bool) -> Trajectory:
    """Drop frames with NaN/inf actions (or fail) and, optionally, no-op frames."""
    finite = finite_action_mask(traj["action"])
    if fail_on_nonfinite:
        tf.debugging.assert_equal(
            tf.reduce_all(finite), True, message="non-finite action (fail_on_nonfinite=True)"
        )
    # Sanitise before the no-op test so NaNs cannot leak into its comparisons.
    safe = tf.where(finite[:, None], traj["action"], tf.zeros_like(traj["action"]))
    keep = finite
    if noop_filter != "none":
        keep = tf.logical_and(keep, tf.logical_not(noop_mask(safe, noop_filter)))
    return _keep_frames(traj, keep)


# -- normalisation -----------------------------------------------------------------------------------
def normalize_action_and_proprio(
    traj: Trajectory, *, statistics: Mapping[str, Any], kind: NormalizationType
) -> Trajectory:
    """Normalise in-graph with the formulas of `prismatic.normalization` (the single owner)."""
    traj["action"] = tf.cast(normalize(traj["action"], statistics["action"], kind, xp=tnp), tf.float32)
    if "proprio" in traj["observation"] and "proprio" in statistics:
        traj["observation"]["proprio"] = tf.cast(
            normalize(traj["observation"]["proprio"], statistics["proprio"], kind, xp=tnp), tf.float32
        )
    return traj


# -- relabelling and chunking -------------------------------------------------------------------------
def add_pad_mask_dict(traj: Trajectory) -> Trajectory:
    """Mark, per observation/task entry, which frames hold real data (empty strings are padding)."""
    length = traj_length(traj)
    for group in ("observation", "task"):
        traj[group]["pad_mask_dict"] = {
            k: (tf.strings.length(v) != 0) if v.dtype == tf.string else tf.ones([length], tf.bool)
            for k, v in traj[group].items()
        }
    return traj


def goal_relabel_uniform(traj: Trajectory, seed: tf.Tensor) -> Trajectory:
    """Goal for step i: the observation at a uniformly drawn future step in [i+1, T) (the last at i=T-1)."""
    length = traj_length(traj)
    u = tf.random.stateless_uniform([length], seed=seed)
    low = tf.cast(tf.range(length) + 1, tf.float32)
    goal = tf.cast(u * (tf.cast(length, tf.float32) - low) + low, tf.int32)
    goal = tf.minimum(goal, length - 1)  # float rounding can hit T
    goal_obs = tf.nest.map_structure(lambda x: tf.gather(x, goal), traj["observation"])
    task = dict(traj["task"])
    pad = dict(task.pop("pad_mask_dict", {}))
    pad.update(goal_obs.pop("pad_mask_dict", {}))
    task.update(goal_obs)
    task["pad_mask_dict"] = pad
    traj["task"] = task
    return traj


GOAL_RELABELING = {"uniform": goal_relabel_uniform}


def chunk_act_obs(traj: Trajectory, window_size: int, future_action_window_size: int = 0) -> Trajectory:
    """Windows: `window_size` observations (past + current) and `window_size + future` actions.

    Observation indices before the start are clamped to 0 and flagged in `observation/pad_mask`. Action
    indices are clamped to [0, goal step] (goal = relabelled goal or the last step); actions past the
    goal become neutral: 0 for relative dimensions, the repeated last action for absolute ones.
    """
    length = traj_length(traj)
    action_dim = traj["action"].shape[-1]
    steps = tf.range(length)[:, None]
    obs_idx = steps + tf.range(-window_size + 1, 1)[None]
    act_idx = steps + tf.range(-window_size + 1, 1 + future_action_window_size)[None]
    goal_step = traj["task"].get("timestep", tf.fill([length], length - 1))
    traj["observation"] = tf.nest.map_structure(
        lambda x: tf.gather(x, tf.maximum(obs_idx, 0)), traj["observation"]
    )
    actions = tf.gather(traj["action"], tf.minimum(tf.maximum(act_idx, 0), goal_step[:, None]))
    traj["observation"]["pad_mask"] = obs_idx >= 0
    absolute = traj.get("absolute_action_mask", tf.zeros([length, action_dim], tf.bool))
    neutral = tf.where(absolute[:, None, :], actions, tf.zeros_like(actions))
    past_goal = act_idx > goal_step[:, None]
    traj["action"] = tf.where(past_goal[:, :, None], neutral, actions)
    return traj


def subsample(traj: Trajectory, length: int, seed: tf.Tensor) -> Trajectory:
    """Keep a random subset of `length` frames of longer trajectories (in random order, as the original)."""
    n = traj_length(traj)

    def pick() -> Trajectory:
        order = tf.argsort(tf.random.stateless_uniform([n], seed=seed))[:length]
        return tf.nest.map_structure(lambda x: tf.gather(x, order), traj)

    return tf.cond(n > length, pick, lambda: traj)
