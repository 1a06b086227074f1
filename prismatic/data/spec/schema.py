"""`DatasetSpec`: everything the pipeline needs to know about one RLDS dataset, validated on creation.

A spec says which observation keys hold the cameras, depth maps and proprioception, which state /
action encoding the dataset uses, how its actions are normalised, and which standardisation ops
(`prismatic.data.spec.ops`) turn a raw trajectory into the canonical one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from prismatic.data.spec.checking import MissingKeyError, SpecError, check_call, suggest
from prismatic.data.spec.ops import CHUNK_FILTERS, STANDARDIZE_OPS, OpCall, no_autograph, tf
from prismatic.data.spec.paths import Traj, TrajFn, copy_dicts
from prismatic.normalization import NormalizationType

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


def default_action_mask(action_encoding: str) -> tuple[bool, ...]:
    """Normalise every action dimension except the absolute ones (the gripper)."""
    absolute = _ABSOLUTE_DIMS[action_encoding]
    return tuple(i not in absolute for i in range(ACTION_DIMS[action_encoding]))


def field_problems(f: Mapping[str, Any]) -> list[str]:
    """Every problem with the spec fields present in `f`, each as "key 'k': what is wrong; choices".
    Shared by DatasetSpec (all fields) and the YAML loader (the fields that parsed), so one pass
    reports everything."""
    out = []
    for attr in ("image_obs_keys", "depth_obs_keys"):
        mapping = f.get(attr) or {}
        for cam in sorted(set(mapping) - set(CAMERAS), key=str):
            out.append(
                f"key '{attr}': unknown camera {cam!r}; {suggest(str(cam), CAMERAS)}choose from: {', '.join(CAMERAS)}"
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
        problems = field_problems({f.name: getattr(self, f.name) for f in fields(self)})
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

    @no_autograph
    def standardize(self, traj: Traj) -> Traj:
        """Raw RLDS trajectory (steps batched on axis 0) -> same dict with the canonical float32 action.

        Works eagerly and inside `tf.data.Dataset.map`; the input dict is not modified.
        """
        traj = copy_dicts(traj)
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

