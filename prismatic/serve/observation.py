"""Which observation keys carry the images, the instruction and the proprio state, per protocol.

Every protocol delivers a dict; `ObservationKeys` says where each field the model needs is found, and
`build_request` turns the dict into a validated `PolicyRequest` (or a `RequestError` that lists every
problem at once, with the key it looked for and the flag that changes it).

Default keys (a camera name `c` other than primary/wrist defaults to `c + "_image"`, `observation/c_image`
and `images.c`):

    field        rest (POST /act)                 openpi (websocket)          vla-eval (websocket)
    primary      image | full_image               observation/image           images[0]
    wrist        wrist_image                      observation/wrist_image     images[1]
    instruction  instruction                      prompt                      task_description
    proprio      state | proprio                  observation/state           states | state
    unnorm_key   unnorm_key                       unnorm_key                  unnorm_key

A key spec is one or more alternatives separated by "|" (the first present wins). Each alternative is a
literal key, or, when no such key exists, a dotted path into nested dicts where "name[i]" takes the i-th
entry of a dict or list: "images.agentview", "images[0]". Override with
`--obs_keys '[openpi.primary=observation/exterior_image_1_left, vla-eval.wrist=images.wrist]'`.
Keys the model does not need are ignored (an openpi client's state goes unread by a model without
proprio), as are keys nobody asked for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prismatic.serve.codec import describe
from prismatic.serve.errors import RequestError

MAX_IMAGE_SIDE = 4096
MAX_INSTRUCTION_CHARS = 2000
FIELDS = ("instruction", "proprio", "unnorm_key")  # plus one field per camera

DEFAULT_KEYS: dict[str, dict[str, str]] = {
    "rest": {"primary": "image|full_image", "wrist": "wrist_image", "instruction": "instruction",
             "proprio": "state|proprio", "unnorm_key": "unnorm_key"},
    "openpi": {"primary": "observation/image", "wrist": "observation/wrist_image", "instruction": "prompt",
               "proprio": "observation/state", "unnorm_key": "unnorm_key"},
    "vla-eval": {"primary": "images[0]", "wrist": "images[1]", "instruction": "task_description",
                 "proprio": "states|state", "unnorm_key": "unnorm_key"},
}  # fmt: skip
_CAMERA_FALLBACK = {"rest": "{}_image", "openpi": "observation/{}_image", "vla-eval": "images.{}"}
_SEGMENT = re.compile(r"^([^\[\]]*)((?:\[\d+\])*)$")


# -- key specs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeySpec:
    """A parsed key spec: alternatives, each a literal key and a path of (name, indices) segments."""

    text: str
    alternatives: tuple[tuple[str, tuple[tuple[str, tuple[int, ...]], ...]], ...]

    @classmethod
    def parse(cls, text: str) -> KeySpec:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"an observation key spec must be a non-empty string, got {text!r}")
        alternatives = []
        for alt in text.split("|"):
            alt = alt.strip()
            if not alt:
                raise ValueError(f"observation key spec {text!r} has an empty alternative (check the '|')")
            path = []
            for segment in alt.split("."):
                m = _SEGMENT.match(segment)
                if m is None or (not m.group(1) and not m.group(2)):
                    raise ValueError(
                        f"observation key spec {text!r}: segment {segment!r} is not 'name', 'name[i]' or '[i]'"
                    )
                path.append((m.group(1), tuple(int(i) for i in re.findall(r"\d+", m.group(2)))))
            alternatives.append((alt, tuple(path)))
        return cls(text, tuple(alternatives))

    def find(self, obs: Mapping[str, Any]) -> tuple[bool, Any]:
        for literal, path in self.alternatives:
            if literal in obs:
                return True, obs[literal]
            found, value = _walk(obs, path)
            if found:
                return True, value
        return False, None


def _walk(obj: Any, path: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[bool, Any]:
    for name, indices in path:
        if name:
            if not isinstance(obj, Mapping) or name not in obj:
                return False, None
            obj = obj[name]
        for i in indices:
            items = list(obj.values()) if isinstance(obj, Mapping) else obj
            if not isinstance(items, (list, tuple)) or i >= len(items):
                return False, None
            obj = items[i]
    return True, obj


def parse_overrides(entries: Sequence[str], protocols: Sequence[str]) -> dict[str, dict[str, str]]:
    """["openpi.primary=observation/exterior_image_1_left", ...] -> {protocol: {field: spec}} (validated)."""
    out: dict[str, dict[str, str]] = {}
    for entry in entries:
        lhs, sep, spec = entry.partition("=")
        protocol, dot, field = lhs.strip().partition(".")
        if not sep or not dot or not field:
            raise ValueError(
                f"--obs_keys entry {entry!r} is not PROTOCOL.FIELD=KEY (e.g. openpi.primary=observation/image)"
            )
        if protocol not in protocols:
            raise ValueError(
                f"--obs_keys entry {entry!r}: unknown protocol {protocol!r}; choose one of: {', '.join(protocols)}"
            )
        KeySpec.parse(spec.strip())
        out.setdefault(protocol, {})[field.strip()] = spec.strip()
    return out


class ObservationKeys:
    """Where `protocol` finds each field of a model with `cameras` (defaults + validated overrides)."""

    def __init__(
        self, protocol: str, cameras: Sequence[str], overrides: Mapping[str, str] | None = None
    ) -> None:
        if protocol not in DEFAULT_KEYS:
            raise ValueError(f"unknown protocol {protocol!r}; choose one of: {', '.join(DEFAULT_KEYS)}")
        self.protocol, self.cameras = protocol, tuple(cameras)
        fields = (*self.cameras, *FIELDS)
        unknown = sorted(set(overrides or {}) - set(fields))
        if unknown:
            raise ValueError(
                f"--obs_keys names field(s) {unknown} for {protocol}; this model's fields are: {', '.join(fields)}"
            )
        defaults = DEFAULT_KEYS[protocol]
        texts = {f: defaults.get(f) or _CAMERA_FALLBACK[protocol].format(f) for f in fields}
        texts.update(overrides or {})
        self.specs = {f: KeySpec.parse(t) for f, t in texts.items()}

    def describe(self) -> dict[str, str]:
        return {f: s.text for f, s in self.specs.items()}

    def find(self, obs: Mapping[str, Any], field: str) -> tuple[bool, Any]:
        return self.specs[field].find(obs)

    def missing(self, obs: Mapping[str, Any], field: str) -> str:
        keys = ", ".join(sorted(map(str, obs))[:20]) or "none"
        return (
            f"missing {field}: looked for key {self.specs[field].text!r} (change it with "
            f"--obs_keys '[{self.protocol}.{field}=KEY]'); the observation has keys: {keys}"
        )


# -- validation --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyRequest:
    """One validated observation, in the model's terms."""

    images: tuple[np.ndarray, ...]  # one HxWx3 uint8 image per camera, in the model's camera order
    instruction: str
    unnorm_key: str
    proprio: np.ndarray | None = None  # [proprio_dim] float64, or None for models that read none


def check_image(value: Any, name: str) -> np.ndarray:
    """An HxWx3 uint8 array, or a RequestError saying what it got."""
    if not isinstance(value, np.ndarray):
        raise RequestError(f"{name} must be an HxWx3 uint8 array, got {describe(value)}")
    if value.ndim != 3 or value.shape[-1] != 3 or value.dtype != np.uint8:
        raise RequestError(
            f"{name} must be an HxWx3 uint8 array, got shape {list(value.shape)} dtype {value.dtype}"
        )
    h, w = value.shape[:2]
    if not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
        raise RequestError(f"{name} is {h}x{w}; each side must be between 1 and {MAX_IMAGE_SIDE} pixels")
    return value


def check_instruction(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("instruction must be UTF-8 text") from None
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind == "U":
        value = str(value)
    if not isinstance(value, str):
        raise RequestError(f"instruction must be a string, got {describe(value)}")
    if not value.strip():
        raise RequestError("instruction is empty; send the task in words, e.g. 'put the carrot on the plate'")
    if len(value) > MAX_INSTRUCTION_CHARS:
        raise RequestError(
            f"instruction has {len(value)} characters; at most {MAX_INSTRUCTION_CHARS} are accepted"
        )
    return value


def check_proprio(value: Any, dim: int) -> np.ndarray:
    if isinstance(value, (list, tuple)) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in value
    ):
        value = np.asarray(value, dtype=np.float64)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise RequestError(f"proprio must be a numeric array of length {dim}, got {describe(value)}")
    if value.shape != (dim,):
        raise RequestError(f"proprio must have shape [{dim}], got {list(value.shape)}")
    value = value.astype(np.float64)
    if not np.all(np.isfinite(value)):
        raise RequestError(f"proprio contains NaN or infinite values: {value.tolist()}")
    return value


def build_request(
    obs: Any,
    keys: ObservationKeys,
    proprio_dim: int,
    resolve_unnorm_key: Any,
) -> PolicyRequest:
    """Validate `obs` against the model's needs; one RequestError lists every problem found.

    resolve_unnorm_key: (key or None) -> the dataset key to use, raising RequestError for unknown keys.
    """
    if not isinstance(obs, Mapping):
        raise RequestError(f"the observation must be a map of keys to values, got {describe(obs)}")
    problems: list[str] = []
    images: list[np.ndarray] = []
    for camera in keys.cameras:
        found, value = keys.find(obs, camera)
        if not found:
            problems.append(keys.missing(obs, camera))
            continue
        try:
            images.append(check_image(value, f"{camera} image ({keys.specs[camera].text})"))
        except RequestError as e:
            problems.append(e.message)
    instruction = ""
    found, value = keys.find(obs, "instruction")
    if not found:
        problems.append(keys.missing(obs, "instruction"))
    else:
        try:
            instruction = check_instruction(value)
        except RequestError as e:
            problems.append(e.message)
    proprio = None
    if proprio_dim > 0:
        found, value = keys.find(obs, "proprio")
        if not found:
            problems.append(keys.missing(obs, "proprio"))
        else:
            try:
                proprio = check_proprio(value, proprio_dim)
            except RequestError as e:
                problems.append(e.message)
    unnorm_key = ""
    found, value = keys.find(obs, "unnorm_key")
    if found and value is not None and not isinstance(value, str):
        problems.append(f"unnorm_key must be a string or null, got {describe(value)}")
    else:
        try:
            unnorm_key = resolve_unnorm_key(value if found else None)
        except RequestError as e:
            problems.append(e.message)
    if problems:
        raise RequestError("; ".join(problems))
    return PolicyRequest(tuple(images), instruction, unnorm_key, proprio)
