"""Dataset specs: one declarative description per RLDS dataset, loaded from YAML and validated.

A spec says which observation keys hold the cameras, depth maps and proprioception, which state /
action encoding the dataset uses, and how to *standardise* a raw trajectory into the canonical form
the rest of the pipeline expects: `traj["action"]` a float32 `[T, 7]` (EEF xyz delta, rpy delta,
gripper with 1 = open, 0 = closed) plus any derived observation keys (`EEF_state`, `gripper_state`).

Standardisation is a short list of *named ops* with arguments, each a factory registered in
`STANDARDIZE_OPS` that returns a `traj -> traj` function built from TensorFlow ops (so it runs both
eagerly and inside `tf.data.Dataset.map`). The ops here cover all 70 OXE datasets; a dataset that
truly needs custom code registers one more op with `@STANDARDIZE_OPS.register("name")` and names it
from YAML, instead of writing a whole per-dataset standardisation function (docs/datasets.md).

Trajectory paths are `/`-separated ("observation/state", "action/world_vector"). Some RLDS datasets
have keys that contain "/" themselves (kuka's "clip_function_input/base_pose_tool_reached", bc_z's
"future/xyz_residual"); a path is matched greedily against the keys that exist, so those work as is.

YAML format (one file = a mapping from dataset name to entry; see `configs/datasets/example_custom.yaml`):

    my_dataset:
      image_obs_keys: {primary: image, wrist: wrist_image}
      proprio_obs_keys: [EEF_state, null, gripper_state]
      state_encoding: pos_euler
      action_encoding: eef_pos
      standardize:
        - invert_gripper: {}
        - slice: {src: observation/state, dest: observation/EEF_state, stop: 6}
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import logging
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union

import yaml

from prismatic.data.errors import DataError
from prismatic.normalization import NormalizationType
from prismatic.util.registry import Registry

log = logging.getLogger(__name__)

Traj = dict[str, Any]
TrajFn = Callable[[Traj], Traj]


class _LazyTensorFlow:
    """Imports TensorFlow on first use: reading specs (names, masks, encodings) must not need TF,
    e.g. at inference time, where only the action mask and normalisation type matter."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module("tensorflow"), name)


tf: Any = _LazyTensorFlow()


def _no_autograph(fn: Callable) -> Callable:
    """Mark `fn` so tf.data / tf.function call it as plain Python instead of AutoGraph-converting it.

    The ops only rearrange Python dicts of tensors (no data-dependent Python control flow), so
    conversion buys nothing and breaks on constructs AutoGraph lacks (for/else). This is the marker
    `tf.autograph.experimental.do_not_convert` sets; setting it directly keeps building an op from
    importing TensorFlow.
    """
    fn.autograph_info__ = None  # type: ignore[attr-defined]
    return fn


def _traj_op(fn: TrajFn) -> TrajFn:
    """Decorator for the `traj -> traj` functions that ops return: they get a copy of the nested dicts
    (never mutating the caller's trajectory) and are not AutoGraph-converted."""

    @functools.wraps(fn)
    def wrapper(traj: Traj) -> Traj:
        return fn(_copy_dicts(traj))

    return _no_autograph(wrapper)


# ----------------------------------------------------------------------------------------------------
# Encodings (the original's StateEncoding / ActionEncoding, as lower-case names)
# ----------------------------------------------------------------------------------------------------

STATE_ENCODINGS = ("none", "pos_euler", "pos_quat", "joint", "joint_bimanual")
ACTION_ENCODINGS = ("eef_pos", "joint_pos", "joint_pos_bimanual", "eef_r6")

# Action width after standardisation, and which dimensions are absolute (the gripper) rather than
# deltas. Absolute dimensions are left unnormalised by default and repeated (not zeroed) when padding
# beyond the end of a trajectory.
ACTION_DIMS = {"eef_pos": 7, "eef_r6": 10, "joint_pos": 8, "joint_pos_bimanual": 14}
_ABSOLUTE_DIMS = {
    "eef_pos": (6,),
    "eef_r6": (9,),
    "joint_pos": (7,),
    "joint_pos_bimanual": (6, 13),
}
# The original trains only on end-effector actions (it skips other datasets with a warning); we refuse
# them in mixtures loudly instead.
TRAINABLE_ACTION_ENCODINGS = ("eef_pos", "eef_r6")

CAMERAS = ("primary", "secondary", "wrist")


class SpecError(DataError):
    """A dataset spec, mixture or YAML file is invalid; `problems` lists every problem found."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems) or [message]
        super().__init__(message)


class UnknownNameError(SpecError, KeyError):
    """An unknown dataset or mixture name (a KeyError too, for `except KeyError` callers)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return self.args[0]


class MissingKeyError(SpecError, KeyError):
    """A standardize op named a trajectory entry the dataset does not have."""

    def __str__(self) -> str:
        return self.args[0]


def _suggest(name: str, choices: Sequence[str], n: int = 5) -> str:
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    return f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""


# ----------------------------------------------------------------------------------------------------
# Trajectory paths
# ----------------------------------------------------------------------------------------------------


def _locate(traj: Mapping[str, Any], path: str) -> tuple[Mapping[str, Any], str]:
    """(parent dict, key) that `path` names; matches the longest existing key at each level so that
    keys containing "/" work. A path that does not exist yet names a new key under the deepest dict."""
    parts = path.split("/")
    node, i = traj, 0
    while True:
        for j in range(len(parts), i, -1):
            key = "/".join(parts[i:j])
            if key not in node:
                continue
            if j == len(parts):
                return node, key
            if isinstance(node[key], Mapping):
                node, i = node[key], j
                break
        else:
            return node, "/".join(parts[i:])


def get_path(traj: Mapping[str, Any], path: str) -> Any:
    parent, key = _locate(traj, path)
    if key not in parent:
        raise KeyError(
            f"no entry {path!r} in the trajectory (at that level there are: {', '.join(sorted(parent))}); "
            "check the key names in the dataset spec against the dataset's features"
        )
    return parent[key]


def set_path(traj: Traj, path: str, value: Any) -> None:
    parent, key = _locate(traj, path)
    parent[key] = value  # type: ignore[index]


def pop_path(traj: Traj, path: str) -> Any:
    get_path(traj, path)  # for the error message
    parent, key = _locate(traj, path)
    return parent.pop(key)  # type: ignore[attr-defined]


def _copy_dicts(tree: Any) -> Any:
    """Copy the nested dicts (not the tensors) so ops never mutate the caller's trajectory."""
    return {k: _copy_dicts(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree


def _map_steps(traj: Traj, fn: Callable[[Any], Any]) -> Traj:
    """Apply `fn` to every tensor of the trajectory. All leaves share the time axis (the reader
    broadcasts episode metadata to every step under "traj_metadata"), so dropping steps must cut
    them all alike; scalars are left alone."""

    def rec(x: Any) -> Any:
        if isinstance(x, Mapping):
            return {k: rec(v) for k, v in x.items()}
        return x if getattr(x, "shape", None) is not None and x.shape.rank == 0 else fn(x)

    return rec(traj)


def _last_dim(x: Any, what: str) -> int:
    if x.shape.rank is None or x.shape.rank < 2:
        raise ValueError(
            f"{what} must have shape [T, D] with D known, got shape {x.shape}; "
            "select a [T, D] feature (or build one with `concat`) first"
        )
    width = x.shape[-1]
    if width is None:
        raise ValueError(f"{what} has an unknown last dimension (shape {x.shape}); its width must be static")
    return int(width)


def _span(width: int, start: int | None, stop: int | None, what: str) -> tuple[int, int]:
    a, b, _ = slice(start, stop).indices(width)
    if b <= a:
        raise ValueError(f"{what}: columns [{start}:{stop}] of a width-{width} tensor are empty")
    return a, b


def _on_columns(x: Any, start: int | None, stop: int | None, fn: Callable[[Any], Any], what: str) -> Any:
    """Replace columns [start:stop] of `x` by `fn(those columns)` (which may change their count)."""
    a, b = _span(_last_dim(x, what), start, stop, what)
    return tf.concat([x[..., :a], fn(x[..., a:b]), x[..., b:]], axis=-1)


def _as_float(x: Any) -> Any:
    return tf.cast(x, tf.float32)


_DTYPES = ("float32", "float64", "int32", "int64", "bool", "string", "uint8")


def _dtype(name: str) -> str:
    """Validate a dtype name now (at spec load time); `getattr(tf, name)` converts it when the op runs."""
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of: {', '.join(_DTYPES)}")
    return name


# ----------------------------------------------------------------------------------------------------
# Standardisation ops: name -> factory(**args) -> (traj -> traj). Factories validate their arguments
# eagerly (raising ValueError) so that a bad YAML entry fails at load time, not inside tf.data.
# ----------------------------------------------------------------------------------------------------

STANDARDIZE_OPS: Registry[Callable[..., TrajFn]] = Registry("standardisation op", "standardize")
CHUNK_FILTERS: Registry[Callable[..., Callable[[Traj], Any]]] = Registry("chunk filter", "chunk_filter")

_PART_KEYS = ("key", "start", "stop", "fill", "width")


def _check_part(i: int, part: Any) -> None:
    where = f"part {i}"
    if not isinstance(part, Mapping):
        raise ValueError(f"{where} must be a mapping like {{key: action/world_vector}}, got {part!r}")
    unknown = sorted(set(part) - set(_PART_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown fields {unknown}; valid fields: {', '.join(_PART_KEYS)}")
    if "key" not in part and not ("fill" in part and "width" in part):
        raise ValueError(f"{where} needs `key` (a trajectory path) or both `fill` and `width` (a constant)")
    if "key" in part and "width" in part:
        raise ValueError(f"{where}: `width` is only for constant parts without `key`")
    for name in ("start", "stop", "width"):
        v = part.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise ValueError(f"{where}: `{name}` must be an integer, got {v!r}")
    if part.get("width") is not None and part["width"] < 1:
        raise ValueError(f"{where}: `width` must be >= 1")
    fill = part.get("fill")
    if fill is not None and (not isinstance(fill, (int, float)) or isinstance(fill, bool)):
        raise ValueError(f"{where}: `fill` must be a number, got {fill!r}")


@STANDARDIZE_OPS.register("concat")
def concat(parts: list[dict[str, Any]], dest: str = "action") -> TrajFn:
    """Build `dest` by concatenating parts along the last axis, each cast to float32.

    A part is `{key: path, start: i, stop: j}` (columns [i:j] of a feature; a [T] feature counts as
    one column), `{key: path, fill: v}` (same shape as that selection, every value v: the original's
    `zeros_like`), or `{fill: v, width: n}` (n constant columns).
    """
    if not isinstance(parts, list) or not parts:
        raise ValueError("`parts` must be a non-empty list")
    for i, part in enumerate(parts):
        _check_part(i, part)

    @_traj_op
    def fn(traj: Traj) -> Traj:
        pieces, length = [], None
        for part in parts:
            if "key" in part:
                x = _as_float(get_path(traj, part["key"]))
                if x.shape.rank == 1:
                    x = x[:, None]
                x = x[..., part.get("start") : part.get("stop")]
                if part.get("fill") is not None:
                    x = tf.fill(tf.shape(x), tf.constant(float(part["fill"]), tf.float32))
                length = tf.shape(x)[0]
                pieces.append(x)
            else:
                pieces.append(part)  # constant: needs the trajectory length, filled in below
        if length is None:
            raise ValueError(f"concat into {dest!r}: at least one part must name a `key`")
        out = [
            p
            if not isinstance(p, Mapping)
            else tf.fill([length, p["width"]], tf.constant(float(p["fill"]), tf.float32))
            for p in pieces
        ]
        set_path(traj, dest, tf.concat(out, axis=-1))
        return traj

    return fn


@STANDARDIZE_OPS.register("slice")
def slice_(src: str, dest: str | None = None, start: int | None = None, stop: int | None = None) -> TrajFn:
    """`dest = src[..., start:stop]` (in place without `dest`): e.g. EEF_state = state[:, :6]."""

    @_traj_op
    def fn(traj: Traj) -> Traj:
        set_path(traj, dest or src, get_path(traj, src)[..., start:stop])
        return traj

    return fn


@STANDARDIZE_OPS.register("take")
def take(src: str, index: int, dest: str | None = None, dtype: str | None = None) -> TrajFn:
    """`dest = src[..., index]`, dropping the last axis, optionally cast (e.g. depth [T,H,W,1] -> [T,H,W])."""
    cast_to = _dtype(dtype) if dtype is not None else None

    @_traj_op
    def fn(traj: Traj) -> Traj:
        x = get_path(traj, src)[..., index]
        set_path(traj, dest or src, tf.cast(x, getattr(tf, cast_to)) if cast_to is not None else x)
        return traj

    return fn


@STANDARDIZE_OPS.register("copy")
def copy(src: str, dest: str) -> TrajFn:
    """`dest = src` (e.g. the instruction: language_instruction = observation/natural_language_instruction)."""

    @_traj_op
    def fn(traj: Traj) -> Traj:
        set_path(traj, dest, get_path(traj, src))
        return traj

    return fn


@STANDARDIZE_OPS.register("rename")
def rename(src: str, dest: str) -> TrajFn:
    """Move `src` to `dest` (the old key disappears)."""

    @_traj_op
    def fn(traj: Traj) -> Traj:
        set_path(traj, dest, pop_path(traj, src))
        return traj

    return fn


@STANDARDIZE_OPS.register("cast")
def cast(key: str, dtype: str) -> TrajFn:
    target = _dtype(dtype)

    @_traj_op
    def fn(traj: Traj) -> Traj:
        set_path(traj, key, tf.cast(get_path(traj, key), getattr(tf, target)))
        return traj

    return fn


@STANDARDIZE_OPS.register("pad")
def pad(key: str = "action", before: int = 0, after: int = 0, value: float = 0.0) -> TrajFn:
    """Add `before` / `after` constant columns on the last axis."""
    if before < 0 or after < 0:
        raise ValueError("`before` and `after` must be >= 0")

    @_traj_op
    def fn(traj: Traj) -> Traj:
        x = _as_float(get_path(traj, key))
        _last_dim(x, key)
        paddings = [[0, 0]] * (x.shape.rank - 1) + [[before, after]]
        set_path(traj, key, tf.pad(x, paddings, constant_values=float(value)))
        return traj

    return fn


@STANDARDIZE_OPS.register("clip")
def clip(
    key: str = "action", start: int | None = -1, stop: int | None = None, min: float = 0.0, max: float = 1.0
) -> TrajFn:
    """Clip columns [start:stop] (default: the gripper, last column) to [min, max]."""
    if min > max:
        raise ValueError(f"`min` ({min}) must not exceed `max` ({max})")

    @_traj_op
    def fn(traj: Traj) -> Traj:
        x = _as_float(get_path(traj, key))
        set_path(traj, key, _on_columns(x, start, stop, lambda c: tf.clip_by_value(c, min, max), key))
        return traj

    return fn


@STANDARDIZE_OPS.register("scale")
def scale(
    key: str = "action",
    start: int | None = None,
    stop: int | None = None,
    factor: float = 1.0,
    offset: float = 0.0,
) -> TrajFn:
    """`x * factor + offset` on columns [start:stop] (default: all), e.g. unit changes."""

    @_traj_op
    def fn(traj: Traj) -> Traj:
        x = _as_float(get_path(traj, key))
        set_path(traj, key, _on_columns(x, start, stop, lambda c: c * factor + offset, key))
        return traj

    return fn


@STANDARDIZE_OPS.register("invert_gripper")
def invert_gripper(key: str = "action", start: int | None = -1, stop: int | None = None) -> TrajFn:
    """`1 - x` on the gripper column: turns 1 = closed into 1 = open (the canonical convention)."""

    @_traj_op
    def fn(traj: Traj) -> Traj:
        x = _as_float(get_path(traj, key))
        set_path(traj, key, _on_columns(x, start, stop, lambda c: 1.0 - c, key))
        return traj

    return fn


def binarize_gripper_values(g: Any, open_above: float = 0.95, closed_below: float = 0.05) -> Any:
    """Continuous gripper commands [T] -> 0/1.

    Values clearly open (> open_above) or closed (< closed_below) become 1 / 0; values in between take
    the value of the next clear step (a transition is labelled by where it ends). Trailing in-between
    values, which have no next clear step, keep the trajectory's raw last value (as the original does).
    """
    g = _as_float(g)
    is_open, is_closed = g > open_above, g < closed_below
    clear = tf.logical_or(is_open, is_closed)
    # Walk backwards: each step reads the latest clear value seen so far, found by counting clear steps.
    rev_clear, rev_open = tf.reverse(clear, [0]), tf.reverse(tf.cast(is_open, tf.float32), [0])
    seen = tf.cumsum(tf.cast(rev_clear, tf.int32))
    table = tf.concat([g[-1:], tf.boolean_mask(rev_open, rev_clear)], axis=0)
    return tf.reverse(tf.gather(table, seen), [0])


def rel2abs_gripper_values(g: Any, threshold: float = 0.1) -> Any:
    """Relative gripper commands [T] (+1 close, -1 open, ~0 keep) -> absolute state (1 open, 0 closed).

    Each step holds the last command given so far. Before the first command the gripper is assumed in
    the opposite state of that command (its first command is taken as a real change); with no command
    at all it is open throughout.
    """
    g = _as_float(g)
    # +1 = open, -1 = closed, 0 = no command (note the sign flip w.r.t. the raw command)
    cmd = tf.where(g < -threshold, 1, tf.where(g > threshold, -1, 0))
    given = tf.not_equal(cmd, 0)
    commands = tf.boolean_mask(cmd, given)
    first = tf.concat([commands, [-1]], axis=0)[0]  # -1 when no command -> start open (+1)
    table = tf.concat([[-first], commands], axis=0)
    state = tf.gather(table, tf.cumsum(tf.cast(given, tf.int32)))
    return tf.cast(state, tf.float32) / 2.0 + 0.5


@STANDARDIZE_OPS.register("binarize_gripper")
def binarize_gripper(
    key: str = "action", index: int = -1, open_above: float = 0.95, closed_below: float = 0.05
) -> TrajFn:
    """Continuous gripper column -> 0/1 (see `binarize_gripper_values`)."""
    if not closed_below < open_above:
        raise ValueError("`closed_below` must be smaller than `open_above`")

    @_traj_op
    def fn(traj: Traj) -> Traj:
        x = _as_float(get_path(traj, key))
        stop = index + 1 or None
        col = lambda c: binarize_gripper_values(c[:, 0], open_above, closed_below)[:, None]  # noqa: E731
        set_path(traj, key, _on_columns(x, index, stop, col, key))
        return traj

    return fn


@STANDARDIZE_OPS.register("rel2abs_gripper")
def rel2abs_gripper(key: str = "action", index: int = -1, threshold: float = 0.1) -> TrajFn:
    """Relative gripper column (+1 close / -1 open) -> absolute (1 open / 0 closed); see `rel2abs_gripper_values`."""
    if threshold < 0:
        raise ValueError("`threshold` must be >= 0")

    @_traj_op
    def fn(traj: Traj) -> Traj:
        x = _as_float(get_path(traj, key))
        stop = index + 1 or None
        col = lambda c: rel2abs_gripper_values(c[:, 0], threshold)[:, None]  # noqa: E731
        set_path(traj, key, _on_columns(x, index, stop, col, key))
        return traj

    return fn


def quat_to_euler_values(q: Any) -> Any:
    """Quaternions [..., 4] in (x, y, z, w) order -> Euler angles [..., 3] (roll, pitch, yaw) for
    R = Rz(yaw) Ry(pitch) Rx(roll), the convention of tensorflow_graphics' `euler.from_quaternion`
    that the original uses. Assumes unit quaternions (not renormalised, like the original)."""
    q = _as_float(q)
    x, y, z, w = tf.unstack(q, axis=-1)
    unit = lambda v: tf.clip_by_value(v, -1.0, 1.0)  # noqa: E731
    r00 = unit(1.0 - 2.0 * (y * y + z * z))
    r10 = unit(2.0 * (x * y + w * z))
    r20 = unit(2.0 * (x * z - w * y))
    r21 = unit(2.0 * (y * z + w * x))
    r22 = unit(1.0 - 2.0 * (x * x + y * y))
    r01 = unit(2.0 * (x * y - w * z))
    r02 = unit(2.0 * (x * z + w * y))
    pitch = -tf.asin(r20)
    # cos(pitch) >= 0 on asin's range, so the general case needs no sign correction.
    general = tf.stack([tf.atan2(r21, r22), pitch, tf.atan2(r10, r00)], axis=-1)
    # Gimbal lock (pitch = +-90 deg): only roll - yaw is defined; put it all in roll, yaw = 0.
    s = tf.where(pitch >= 0.0, 1.0, -1.0)
    locked = tf.stack([tf.atan2(s * r01, s * r02), pitch, tf.zeros_like(pitch)], axis=-1)
    is_locked = tf.abs(r20) >= 1.0 - 1e-7
    return tf.where(is_locked[..., None], locked, general)


def euler_to_matrix_values(e: Any) -> Any:
    """Euler angles [..., 3] (roll, pitch, yaw) -> rotation matrices Rz(yaw) Ry(pitch) Rx(roll) [..., 3, 3]."""
    e = _as_float(e)
    cr, cp, cy = tf.unstack(tf.cos(e), axis=-1)
    sr, sp, sy = tf.unstack(tf.sin(e), axis=-1)
    rows = [
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]
    return tf.stack([tf.stack(r, axis=-1) for r in rows], axis=-2)


@STANDARDIZE_OPS.register("quat_to_euler")
def quat_to_euler(key: str = "action", start: int = 3) -> TrajFn:
    """Replace the quaternion in columns [start:start+4] (x, y, z, w) by roll, pitch, yaw (3 columns)."""

    @_traj_op
    def fn(traj: Traj) -> Traj:
        x = _as_float(get_path(traj, key))
        stop = start + 4 or None
        a, b = _span(_last_dim(x, key), start, stop, key)
        if b - a != 4:
            raise ValueError(f"quat_to_euler: {key!r} has no 4 columns at start={start} (shape {x.shape})")
        set_path(traj, key, _on_columns(x, start, stop, quat_to_euler_values, key))
        return traj

    return fn


@STANDARDIZE_OPS.register("euler_to_r6")
def euler_to_r6(key: str = "action", start: int = 3) -> TrajFn:
    """Replace roll, pitch, yaw in columns [start:start+3] by the R6 rotation (first two rows of the
    rotation matrix, row-major: 6 columns), the rotation of the `eef_r6` action encoding."""

    @_traj_op
    def fn(traj: Traj) -> Traj:
        x = _as_float(get_path(traj, key))

        def to_r6(e: Any) -> Any:
            m = euler_to_matrix_values(e)
            return tf.concat([m[..., 0, :], m[..., 1, :]], axis=-1)

        set_path(traj, key, _on_columns(x, start, start + 3 or None, to_r6, key))
        return traj

    return fn


@STANDARDIZE_OPS.register("drop_steps")
def drop_steps(first: int = 0, last: int = 0) -> TrajFn:
    """Drop the first `first` and last `last` steps of every per-step entry (Bridge's first step has an
    all-zero action)."""
    if first < 0 or last < 0:
        raise ValueError("`first` and `last` must be >= 0")

    @_traj_op
    def fn(traj: Traj) -> Traj:
        return _map_steps(traj, lambda x: x[first : (-last if last else None)])

    return fn


@STANDARDIZE_OPS.register("relabel_bridge_actions")
def relabel_bridge_actions(state_key: str = "observation/state", dims: int = 6) -> TrajFn:
    """Replace the first `dims` action columns by the movement actually reached, state[t+1] - state[t],
    keeping the last (gripper) column; the last step, which has no next state, is dropped."""
    if dims < 1:
        raise ValueError("`dims` must be >= 1")

    @_traj_op
    def fn(traj: Traj) -> Traj:
        state = _as_float(get_path(traj, state_key))[:, :dims]
        moved = state[1:] - state[:-1]
        gripper = _as_float(traj["action"])[:-1, -1:]
        traj = _map_steps(traj, lambda x: x[:-1])
        traj["action"] = tf.concat([moved, gripper], axis=-1)
        return traj

    return fn


@STANDARDIZE_OPS.register("decode_compressed")
def decode_compressed(key: str, width: int, dtype: str = "float32", compression: str = "ZLIB") -> TrajFn:
    """Decode a per-step compressed byte string holding `width` raw values into [T, width] (kuka)."""
    target = _dtype(dtype)
    if compression not in ("ZLIB", "GZIP", ""):
        raise ValueError(f"unknown compression {compression!r}; choose one of: ZLIB, GZIP, '' (none)")
    if width < 1:
        raise ValueError("`width` must be >= 1")

    @_traj_op
    def fn(traj: Traj) -> Traj:
        raw = tf.io.decode_compressed(get_path(traj, key), compression_type=compression)
        set_path(traj, key, tf.reshape(tf.io.decode_raw(raw, getattr(tf, target)), (-1, width)))
        return traj

    return fn


@STANDARDIZE_OPS.register("decode_codepoints")
def decode_codepoints(src: str, dest: str = "language_instruction") -> TrajFn:
    """Instruction stored as zero-padded Unicode code points [T, N] (language_table) -> UTF-8 strings [T]."""

    @_traj_op
    def fn(traj: Traj) -> Traj:
        text = tf.strings.unicode_encode(tf.cast(get_path(traj, src), tf.int32), output_encoding="UTF-8")
        # Keep what precedes the first NUL padding character.
        set_path(traj, dest, tf.strings.split(text, "\x00")[:, :1].to_tensor(default_value="")[:, 0])
        return traj

    return fn


@STANDARDIZE_OPS.register("random_swap")
def random_swap(a: str, b: str, probability: float = 0.5) -> TrajFn:
    """Swap two entries for the whole trajectory with the given probability (DROID swaps its two
    exterior cameras so a single-camera policy sees both)."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError("`probability` must be in [0, 1]")

    @_traj_op
    def fn(traj: Traj) -> Traj:
        x, y = get_path(traj, a), get_path(traj, b)
        swap = tf.random.uniform(()) < probability
        set_path(traj, a, tf.where(swap, y, x))
        set_path(traj, b, tf.where(swap, x, y))
        return traj

    return fn


# Chunk filters: name -> factory(**args) -> predicate(frame chunk) -> scalar tf.bool (keep). The
# pipeline applies them to chunked frames *after* action normalisation, as the original does.


@CHUNK_FILTERS.register("nonzero_normalized_action")
def nonzero_normalized_action(q01: list[float], q99: list[float], tol: float = 1e-5) -> Callable[[Traj], Any]:
    """Keep a chunk unless all its first len(q01) normalised action dims equal the normalised 0, i.e. the
    raw (relative) action was all-zero: DROID's idle frames. q01/q99 are the bounds used to normalise."""
    if len(q01) != len(q99) or not q01:
        raise ValueError(
            f"`q01` and `q99` must be non-empty and of equal length, got {len(q01)} and {len(q99)}"
        )

    @_no_autograph
    def keep(traj: Traj) -> Any:
        low, high = tf.constant(q01, tf.float32), tf.constant(q99, tf.float32)
        zero = 2.0 * (0.0 - low) / (high - low + 1e-8) - 1.0
        action = _as_float(traj["action"])[..., : len(q01)]
        return tf.reduce_any(tf.abs(action - zero) > tol)

    return keep


# ----------------------------------------------------------------------------------------------------
# Op calls and argument checking
# ----------------------------------------------------------------------------------------------------


def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, Sequence, tuple):
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item) for v in value)
    if origin in (dict, Mapping):
        args = typing.get_args(annotation) or (Any, Any)
        return isinstance(value, Mapping) and all(_type_ok(v, args[1]) for v in value.values())
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "") if not isinstance(annotation, type) else annotation.__name__


def check_call(registry: Registry, name: str, args: Mapping[str, Any]) -> list[str]:
    """Every problem with calling `registry[name](**args)`: unknown op, unknown / missing / mistyped
    arguments, or a ValueError from the factory itself."""
    if name not in registry:
        return [
            f"unknown {registry.what} {name!r}; {_suggest(name, registry.names())}choose one of: {', '.join(registry.names())}"
        ]
    factory = registry.get(name)
    params = inspect.signature(factory).parameters
    hints = typing.get_type_hints(factory)
    usage = ", ".join(
        f"{p}: {_type_name(hints.get(p, Any))}"
        + ("" if q.default is inspect.Parameter.empty else f" = {q.default!r}")
        for p, q in params.items()
    )
    problems = []
    for arg in sorted(set(args) - set(params)):
        problems.append(
            f"{name}: unknown argument {arg!r}; {_suggest(arg, list(params))}arguments are ({usage})"
        )
    for p, q in params.items():
        if q.default is inspect.Parameter.empty and p not in args:
            problems.append(f"{name}: missing required argument {p!r}; arguments are ({usage})")
        elif p in args and not _type_ok(args[p], hints.get(p, Any)):
            problems.append(
                f"{name}: argument {p!r} must be {_type_name(hints.get(p, Any))}, got {args[p]!r}"
            )
    if not problems:
        try:
            factory(**args)
        except (ValueError, TypeError) as e:
            problems.append(f"{name}: {e}")
    return problems


@dataclass(frozen=True)
class OpCall:
    """One named op with its arguments, as written in YAML (`- clip: {min: 0, max: 1}`)."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def build(self, registry: Registry = STANDARDIZE_OPS) -> Callable:
        return registry.get(self.name)(**self.args)

    def __str__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.args.items())})"


# ----------------------------------------------------------------------------------------------------
# DatasetSpec
# ----------------------------------------------------------------------------------------------------


def default_action_mask(action_encoding: str) -> tuple[bool, ...]:
    """Normalise every action dimension except the absolute ones (the gripper)."""
    absolute = _ABSOLUTE_DIMS[action_encoding]
    return tuple(i not in absolute for i in range(ACTION_DIMS[action_encoding]))


def _field_problems(f: Mapping[str, Any]) -> list[str]:
    """Every problem with the spec fields present in `f`, each as "key 'k': what is wrong; choices".
    Shared by DatasetSpec (all fields) and the YAML loader (the fields that parsed), so one pass
    reports everything."""
    out = []
    for attr in ("image_obs_keys", "depth_obs_keys"):
        mapping = f.get(attr) or {}
        for cam in sorted(set(mapping) - set(CAMERAS), key=str):
            out.append(
                f"key '{attr}': unknown camera {cam!r}; {_suggest(str(cam), CAMERAS)}choose from: {', '.join(CAMERAS)}"
            )
        for cam, key in mapping.items():
            if key is not None and not isinstance(key, str):
                out.append(f"key '{attr}.{cam}': must be an observation key (string) or null, got {key!r}")
    for k in f.get("proprio_obs_keys") or ():
        if k is not None and not isinstance(k, str):
            out.append(
                f"key 'proprio_obs_keys': entries must be observation keys or null (zero pad), got {k!r}"
            )
    if "state_encoding" in f and f["state_encoding"] not in STATE_ENCODINGS:
        out.append(
            f"key 'state_encoding': unknown value {f['state_encoding']!r}; choose one of: {', '.join(STATE_ENCODINGS)}"
        )
    enc = f.get("action_encoding")
    if "action_encoding" in f and enc not in ACTION_ENCODINGS:
        out.append(
            f"key 'action_encoding': unknown value {enc!r}; choose one of: {', '.join(ACTION_ENCODINGS)}"
        )
    elif f.get("action_mask") is not None and enc in ACTION_ENCODINGS:
        mask, dim = f["action_mask"], ACTION_DIMS[enc]
        if len(mask) != dim or not all(isinstance(m, bool) for m in mask):
            out.append(
                f"key 'action_mask': needs {dim} booleans for action_encoding {enc!r} (True = normalise), "
                f"got {list(mask)!r}; e.g. {list(default_action_mask(enc))}"
            )
    if "normalization_type" in f and not isinstance(f["normalization_type"], NormalizationType):
        out.append(
            f"key 'normalization_type': choose one of: {', '.join(t.value for t in NormalizationType)}"
        )
    if "language_key" in f and (not isinstance(f["language_key"], str) or not f["language_key"]):
        out.append(f"key 'language_key': must be a non-empty string, got {f['language_key']!r}")
    if f.get("version") is not None and not isinstance(f["version"], str):
        out.append(
            f"key 'version': must be a version string like '1.0.0' (quote it in YAML), got {f['version']!r}"
        )
    for i, op in enumerate(f.get("ops") or ()):
        out += [f"key 'standardize[{i}]': {p}" for p in check_call(STANDARDIZE_OPS, op.name, op.args)]
    if f.get("chunk_filter") is not None:
        call = f["chunk_filter"]
        out += [f"key 'chunk_filter': {p}" for p in check_call(CHUNK_FILTERS, call.name, call.args)]
    return out


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the pipeline needs to know about one RLDS dataset (see module docstring)."""

    name: str
    image_obs_keys: dict[str, str | None]
    depth_obs_keys: dict[str, str | None]
    proprio_obs_keys: tuple[str | None, ...] | None
    state_encoding: str
    action_encoding: str
    language_key: str = "language_instruction"
    normalization_type: NormalizationType = NormalizationType.BOUNDS_Q99
    action_mask: tuple[bool, ...] | None = None  # None -> default for the action encoding
    version: str | None = None
    source: str = "builtin:oxe"
    ops: tuple[OpCall, ...] = ()
    chunk_filter: OpCall | None = None  # a CHUNK_FILTERS entry, applied after normalisation
    description: str = ""
    _fns: tuple[TrajFn, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_(
            "image_obs_keys",
            {c: dict(self.image_obs_keys).get(c) for c in CAMERAS} | dict(self.image_obs_keys),
        )
        set_(
            "depth_obs_keys",
            {c: dict(self.depth_obs_keys).get(c) for c in CAMERAS} | dict(self.depth_obs_keys),
        )
        if self.proprio_obs_keys is not None:
            set_("proprio_obs_keys", tuple(self.proprio_obs_keys))
        set_("ops", tuple(self.ops))
        problems = _field_problems({f.name: getattr(self, f.name) for f in fields(self)})
        if problems:
            raise SpecError(
                f"Invalid dataset spec {self.name!r} ({self.source}):\n  - " + "\n  - ".join(problems),
                problems,
            )
        if self.action_mask is None:
            set_("action_mask", default_action_mask(self.action_encoding))
        else:
            set_("action_mask", tuple(self.action_mask))
        set_("_fns", tuple(op.build() for op in self.ops))

    # --- derived facts the pipeline needs ---------------------------------------------------------

    @property
    def action_dim(self) -> int:
        return ACTION_DIMS[self.action_encoding]

    @property
    def absolute_action_mask(self) -> tuple[bool, ...]:
        """True for absolute dims (the gripper): padding past the trajectory end repeats them instead of
        using 0 (a "no motion" delta)."""
        return tuple(i in _ABSOLUTE_DIMS[self.action_encoding] for i in range(self.action_dim))

    @property
    def trainable(self) -> bool:
        return self.action_encoding in TRAINABLE_ACTION_ENCODINGS

    @property
    def tfds_name(self) -> str:
        """The `name` or `name:version` string tfds.builder expects."""
        return f"{self.name}:{self.version}" if self.version else self.name

    def build_chunk_filter(self) -> Callable[[Traj], Any] | None:
        return self.chunk_filter.build(CHUNK_FILTERS) if self.chunk_filter is not None else None

    @_no_autograph
    def standardize(self, traj: Traj) -> Traj:
        """Raw RLDS trajectory (steps batched on axis 0) -> same dict with the canonical float32 action.

        Works eagerly and inside `tf.data.Dataset.map`; the input dict is not modified.
        """
        traj = _copy_dicts(traj)
        for op, fn in zip(self.ops, self._fns):
            try:
                traj = fn(traj)
            except (KeyError, ValueError) as e:
                msg = f"dataset {self.name!r} ({self.source}), standardize op {op}: {e.args[0] if e.args else e}"
                raise (MissingKeyError if isinstance(e, KeyError) else SpecError)(msg) from e
        action = traj.get("action")
        if isinstance(action, Mapping):
            raise SpecError(
                f"dataset {self.name!r}: after standardize, 'action' is still a dict (keys {sorted(action)}); "
                "add a `concat` op that assembles the action vector from its parts"
            )
        action = tf.cast(action, tf.float32)
        if (
            action.shape.rank is not None
            and action.shape[-1] is not None
            and action.shape[-1] != self.action_dim
        ):
            raise SpecError(
                f"dataset {self.name!r}: standardize produced actions of width {action.shape[-1]}, but "
                f"action_encoding {self.action_encoding!r} needs {self.action_dim}; fix the `standardize` ops"
            )
        traj["action"] = action
        if self.language_key not in traj:
            raise MissingKeyError(
                f"dataset {self.name!r}: no {self.language_key!r} entry after standardize (top-level keys: "
                f"{', '.join(sorted(traj))}); add a `copy` op or set `language_key`"
            )
        return traj


# ----------------------------------------------------------------------------------------------------
# YAML loading
# ----------------------------------------------------------------------------------------------------

ENTRY_KEYS = {
    "image_obs_keys": "mapping camera -> observation key or null (cameras: primary, secondary, wrist)",
    "depth_obs_keys": "mapping camera -> observation key or null (optional)",
    "proprio_obs_keys": "list of observation keys or null (zero pad), or null for no proprio",
    "state_encoding": f"one of {', '.join(STATE_ENCODINGS)}",
    "action_encoding": f"one of {', '.join(ACTION_ENCODINGS)}",
    "language_key": "string (default language_instruction)",
    "normalization_type": f"one of {', '.join(t.value for t in NormalizationType)} (default bounds_q99)",
    "action_mask": "list of booleans, one per action dimension (default: all but the gripper)",
    "version": "tfds version string, e.g. '1.0.0' (default: newest present)",
    "standardize": "list of ops, each `- op_name: {arg: value}` or a bare `- op_name`",
    "chunk_filter": "one filter, `{filter_name: {arg: value}}`",
    "description": "free text",
}
REQUIRED_KEYS = ("image_obs_keys", "proprio_obs_keys", "state_encoding", "action_encoding")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys: plain PyYAML silently keeps the last one, which would
    hide a copy-pasted dataset entry."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}; each key may appear once", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_call(raw: Any, what: str) -> tuple[OpCall | None, str | None]:
    """`name`, `{name: {args}}` or `{name: null}` -> OpCall, or an error message."""
    if isinstance(raw, str):
        return OpCall(raw, {}), None
    if isinstance(raw, Mapping) and len(raw) == 1:
        ((name, args),) = raw.items()
        if args is None:
            args = {}
        if isinstance(name, str) and isinstance(args, Mapping):
            return OpCall(name, dict(args)), None
    return None, f"must be `{what}` or `{what}: {{arg: value, ...}}` (one name per list item), got {raw!r}"


def _entry_to_spec(name: str, raw: Any, source: str) -> tuple[DatasetSpec | None, list[str]]:
    if not isinstance(raw, Mapping):
        return None, [f"entry must be a mapping of keys ({', '.join(ENTRY_KEYS)}), got {type(raw).__name__}"]
    problems = []
    for key in sorted(set(raw) - set(ENTRY_KEYS), key=str):
        problems.append(
            f"key {key!r}: unknown key; {_suggest(str(key), list(ENTRY_KEYS))}valid keys: {', '.join(ENTRY_KEYS)}"
        )
    for key in REQUIRED_KEYS:
        if key not in raw:
            problems.append(f"key {key!r}: missing (required; {ENTRY_KEYS[key]})")
    kwargs: dict[str, Any] = {"name": name, "source": source}
    kwargs["depth_obs_keys"] = {}
    for key in ("image_obs_keys", "depth_obs_keys"):
        if key in raw:
            value = {} if raw[key] is None else raw[key]
            if not isinstance(value, Mapping):
                problems.append(f"key {key!r}: must be a {ENTRY_KEYS[key]}, got {value!r}")
            else:
                kwargs[key] = dict(value)
    if "proprio_obs_keys" in raw:
        value = raw["proprio_obs_keys"]
        if value is not None and not isinstance(value, list):
            problems.append(
                f"key 'proprio_obs_keys': must be a {ENTRY_KEYS['proprio_obs_keys']}, got {value!r}"
            )
        else:
            kwargs["proprio_obs_keys"] = value
    for key in ("state_encoding", "action_encoding", "language_key", "description"):
        if key in raw:
            if not isinstance(raw[key], str):
                problems.append(f"key {key!r}: must be a string ({ENTRY_KEYS[key]}), got {raw[key]!r}")
            else:
                kwargs[key] = raw[key].lower() if key.endswith("encoding") else raw[key]
    if "version" in raw:
        if raw["version"] is not None and not isinstance(raw["version"], str):
            problems.append(
                f"key 'version': must be a quoted version string like '1.0.0', got {raw['version']!r}"
            )
        else:
            kwargs["version"] = raw["version"]
    if "normalization_type" in raw:
        try:
            kwargs["normalization_type"] = NormalizationType.parse(
                raw["normalization_type"], "normalization_type"
            )
        except ValueError as e:
            problems.append(f"key 'normalization_type': {e}")
    if raw.get("action_mask") is not None:
        if not isinstance(raw["action_mask"], list):
            problems.append(
                f"key 'action_mask': must be a {ENTRY_KEYS['action_mask']}, got {raw['action_mask']!r}"
            )
        else:
            kwargs["action_mask"] = tuple(raw["action_mask"])
    ops = raw.get("standardize") or []
    if not isinstance(ops, list):
        problems.append(f"key 'standardize': must be a {ENTRY_KEYS['standardize']}, got {ops!r}")
        ops = []
    calls = []
    for i, item in enumerate(ops):
        call, err = _parse_call(item, "op_name")
        if err:
            problems.append(f"key 'standardize[{i}]': {err}")
        else:
            calls.append(call)
    kwargs["ops"] = tuple(calls)
    if raw.get("chunk_filter") is not None:
        call, err = _parse_call(raw["chunk_filter"], "filter_name")
        if err:
            problems.append(f"key 'chunk_filter': {err}")
        else:
            kwargs["chunk_filter"] = call
    problems += _field_problems(kwargs)  # the values of the fields that parsed
    if problems:
        return None, problems
    try:
        return DatasetSpec(**kwargs), []
    except SpecError as e:
        return None, e.problems


def load_dataset_specs(path: str | Path, source: str | None = None) -> dict[str, DatasetSpec]:
    """Load and validate one YAML file (mapping dataset name -> entry). Raises `SpecError` listing every
    problem in the file, each naming the file, the dataset, the key and the valid choices."""
    path = Path(path)
    where = source or str(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"Cannot read dataset spec file {path}: {e}") from e
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SpecError(f"{path}: must be a mapping from dataset name to entry, got {type(data).__name__}")
    specs, problems = {}, []
    for name, raw in data.items():
        if not isinstance(name, str) or not name:
            problems.append(f"{path}: dataset name {name!r} must be a non-empty string")
            continue
        spec, errs = _entry_to_spec(name, raw, where)
        problems += [f"{path}: dataset {name!r}: {err}" for err in errs]
        if spec is not None:
            specs[name] = spec
    if problems:
        raise SpecError(
            f"{len(problems)} problem(s) in dataset spec file {path}:\n  - " + "\n  - ".join(problems),
            problems,
        )
    return specs


# ----------------------------------------------------------------------------------------------------
# Lookup: builtins + shipped configs + user files
# ----------------------------------------------------------------------------------------------------

BUILTIN_SPECS_FILE = Path(__file__).parent / "oxe" / "datasets.yaml"
# Example / extra configs shipped in the repository checkout (absent from an installed wheel).
REPO_CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs" / "datasets"


@functools.lru_cache(maxsize=1)
def shipped_specs() -> dict[str, DatasetSpec]:
    """The OXE builtins plus `configs/datasets/*.yaml`; a name defined twice is an error."""
    specs = load_dataset_specs(BUILTIN_SPECS_FILE, source="builtin:oxe")
    files = sorted(REPO_CONFIGS_DIR.glob("*.yaml")) if REPO_CONFIGS_DIR.is_dir() else []
    for f in files:
        for name, spec in load_dataset_specs(f).items():
            if name in specs:
                raise SpecError(
                    f"dataset {name!r} is defined both in {specs[name].source} and in {f}; rename one"
                )
            specs[name] = spec
    return specs


def all_dataset_specs(extra_files: Sequence[str | Path] = ()) -> dict[str, DatasetSpec]:
    """Shipped specs, then user files in order; a user entry replaces a shipped one of the same name
    (logged), which is how one points a builtin at a different version or key layout."""
    specs = dict(shipped_specs())
    for f in extra_files:
        for name, spec in load_dataset_specs(f).items():
            if name in specs:
                log.warning("dataset spec %r from %s replaces the one from %s", name, f, specs[name].source)
            specs[name] = spec
    return specs


def _unknown_dataset(name: str, known: Sequence[str]) -> UnknownNameError:
    return UnknownNameError(
        f"Unknown dataset {name!r}; {_suggest(name, known)}known datasets: {', '.join(sorted(known))}. "
        "To add one, write a YAML entry (see configs/datasets/example_custom.yaml) and pass its file."
    )


def get_dataset_spec(name: str, extra_files: Sequence[str | Path] = ()) -> DatasetSpec:
    specs = all_dataset_specs(extra_files)
    if name not in specs:
        raise _unknown_dataset(name, list(specs))
    return specs[name]


def get_mixture(name: str) -> list[tuple[str, float]]:
    """A named mixture: (dataset name, sampling weight) pairs."""
    from prismatic.data.oxe.mixtures import MIXTURES

    if name not in MIXTURES:
        raise UnknownNameError(
            f"Unknown mixture {name!r}; {_suggest(name, list(MIXTURES))}known mixtures: {', '.join(sorted(MIXTURES))}"
        )
    return list(MIXTURES[name])


def resolve_mixture(
    name_or_dataset: str, extra_files: Sequence[str | Path] = ()
) -> list[tuple[DatasetSpec, float]]:
    """A mixture name, or a single dataset name (weight 1.0) -> (spec, weight) pairs.

    Unlike the original, nothing is dropped silently: every dataset must have a spec, appear once and
    have an end-effector action encoding, else one error lists every offending name.
    """
    from prismatic.data.oxe.mixtures import MIXTURES

    specs = all_dataset_specs(extra_files)
    if name_or_dataset in MIXTURES:
        entries = get_mixture(name_or_dataset)
    elif name_or_dataset in specs:
        entries = [(name_or_dataset, 1.0)]
    else:
        known = sorted(set(MIXTURES) | set(specs))
        raise UnknownNameError(
            f"{name_or_dataset!r} is neither a mixture nor a dataset; {_suggest(name_or_dataset, known)}"
            f"mixtures: {', '.join(sorted(MIXTURES))}; datasets: {', '.join(sorted(specs))}"
        )
    names = [n for n, _ in entries]
    problems = [
        f"{n!r} is not a known dataset ({_suggest(n, list(specs)) or 'no close match'})"
        for n in names
        if n not in specs
    ]
    problems += [f"{n!r} appears more than once" for n in sorted({n for n in names if names.count(n) > 1})]
    problems += [
        f"weight of {n!r} must be a positive number, got {w!r}"
        for n, w in entries
        if not (isinstance(w, (int, float)) and w > 0)
    ]
    problems += [
        f"{n!r} has action_encoding {specs[n].action_encoding!r}; training needs one of {', '.join(TRAINABLE_ACTION_ENCODINGS)}"
        for n in names
        if n in specs and not specs[n].trainable
    ]
    if problems:
        raise SpecError(
            f"Cannot resolve {name_or_dataset!r}:\n  - "
            + "\n  - ".join(problems)
            + "\nAdd spec files for missing datasets (extra_files=...) or fix the mixture.",
            problems,
        )
    return [(specs[n], float(w)) for n, w in entries]
