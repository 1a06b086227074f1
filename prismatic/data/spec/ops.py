"""Standardisation ops: the named steps that turn a raw RLDS trajectory into the canonical one.

Canonical form: `traj["action"]` a float32 `[T, 7]` (EEF xyz delta, rpy delta, gripper with 1 = open,
0 = closed) plus any derived observation keys (`EEF_state`, `gripper_state`). A dataset spec lists ops
by name with arguments (`- clip: {min: 0, max: 1}`); each name is a factory registered in
`STANDARDIZE_OPS` that validates its arguments eagerly (raising ValueError, so a bad YAML entry fails
at load time) and returns a `traj -> traj` function built from TensorFlow ops, which runs both eagerly
and inside `tf.data.Dataset.map`. The ops here cover all 70 OXE datasets; a dataset that truly needs
custom code registers one more with `@STANDARDIZE_OPS.register("name")` and names it from YAML
(docs/datasets.md). `CHUNK_FILTERS` holds the per-frame filters applied after normalisation.

TensorFlow is imported on first use only: reading specs (names, masks, encodings) must not need it.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prismatic.data.spec.paths import Traj, TrajFn, copy_dicts, get_path, map_steps, pop_path, set_path
from prismatic.util.registry import Registry


class _LazyTensorFlow:
    """Imports TensorFlow on first use: reading specs (names, masks, encodings) must not need TF,
    e.g. at inference time, where only the action mask and normalisation type matter."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module("tensorflow"), name)


tf: Any = _LazyTensorFlow()


def no_autograph(fn: Callable) -> Callable:
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
        return fn(copy_dicts(traj))

    return no_autograph(wrapper)



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
        return map_steps(traj, lambda x: x[first : (-last if last else None)])

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
        traj = map_steps(traj, lambda x: x[:-1])
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

    @no_autograph
    def keep(traj: Traj) -> Any:
        low, high = tf.constant(q01, tf.float32), tf.constant(q99, tf.float32)
        zero = 2.0 * (0.0 - low) / (high - low + 1e-8) - 1.0
        action = _as_float(traj["action"])[..., : len(q01)]
        return tf.reduce_any(tf.abs(action - zero) > tol)

    return keep


@dataclass(frozen=True)
class OpCall:
    """One named op with its arguments, as written in YAML (`- clip: {min: 0, max: 1}`)."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def build(self, registry: Registry = STANDARDIZE_OPS) -> Callable:
        return registry.get(self.name)(**self.args)

    def __str__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.args.items())})"

