"""Loading dataset specs from YAML and looking up datasets and mixtures by name.

YAML format (one file = a mapping from dataset name to entry; see `configs/datasets/example_custom.yaml`):

    my_dataset:
      image_obs_keys: {primary: image, wrist: wrist_image}
      proprio_obs_keys: [EEF_state, null, gripper_state]
      state_encoding: pos_euler
      action_encoding: eef_pos
      standardize:
        - invert_gripper: {}
        - slice: {src: observation/state, dest: observation/EEF_state, stop: 6}

Lookup order: the OXE builtins (`prismatic/data/oxe/datasets.yaml`), the repository's
`configs/datasets/*.yaml`, then the user's files in order (a user entry replaces a shipped one).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from prismatic.data.oxe.mixtures import MIXTURES
from prismatic.data.spec.checking import SpecError, UnknownNameError, suggest
from prismatic.data.spec.ops import OpCall
from prismatic.data.spec.schema import (
    ACTION_ENCODINGS,
    STATE_ENCODINGS,
    TRAINABLE_ACTION_ENCODINGS,
    DatasetSpec,
    field_problems,
)
from prismatic.normalization import NormalizationType

log = logging.getLogger(__name__)

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
            f"key {key!r}: unknown key; {suggest(str(key), list(ENTRY_KEYS))}valid keys: {', '.join(ENTRY_KEYS)}"
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
    problems += field_problems(kwargs)  # the values of the fields that parsed
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

BUILTIN_SPECS_FILE = Path(__file__).parents[1] / "oxe" / "datasets.yaml"
# Example / extra configs shipped in the repository checkout (absent from an installed wheel).
REPO_CONFIGS_DIR = Path(__file__).resolve().parents[3] / "configs" / "datasets"


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
        f"Unknown dataset {name!r}; {suggest(name, known)}known datasets: {', '.join(sorted(known))}. "
        "To add one, write a YAML entry (see configs/datasets/example_custom.yaml) and pass its file."
    )


def get_dataset_spec(name: str, extra_files: Sequence[str | Path] = ()) -> DatasetSpec:
    specs = all_dataset_specs(extra_files)
    if name not in specs:
        raise _unknown_dataset(name, list(specs))
    return specs[name]


def get_mixture(name: str) -> list[tuple[str, float]]:
    """A named mixture: (dataset name, sampling weight) pairs."""
    if name not in MIXTURES:
        raise UnknownNameError(
            f"Unknown mixture {name!r}; {suggest(name, list(MIXTURES))}known mixtures: {', '.join(sorted(MIXTURES))}"
        )
    return list(MIXTURES[name])


Mixture = str | Sequence[tuple[DatasetSpec | str, float]]


def resolve_mixture(mixture: Mixture, extra_files: Sequence[str | Path] = ()) -> list[tuple[DatasetSpec, float]]:
    """A mixture name, a single dataset name (weight 1.0), or explicit (dataset or spec, weight) pairs
    -> (spec, weight) pairs. The one place a data mixture is resolved.

    Unlike the original, nothing is dropped silently: every dataset must have a spec, appear once, have
    a positive weight and an end-effector action encoding, else one error lists every offending name.
    """
    specs = all_dataset_specs(extra_files)
    if isinstance(mixture, str):
        what = repr(mixture)
        if mixture in MIXTURES:
            entries: list[tuple[DatasetSpec | str, Any]] = list(get_mixture(mixture))
        elif mixture in specs:
            entries = [(mixture, 1.0)]
        else:
            known = sorted(set(MIXTURES) | set(specs))
            raise UnknownNameError(
                f"{mixture!r} is neither a mixture nor a dataset; {suggest(mixture, known)}"
                f"mixtures: {', '.join(sorted(MIXTURES))}; datasets: {', '.join(sorted(specs))}"
            )
    else:
        what, entries = "the data mixture", list(mixture)
        if not entries:
            raise SpecError("The data mixture is empty; give at least one (dataset, weight)")
    # Explicit specs stand for themselves (they need not be registered).
    specs |= {e.name: e for e, _ in entries if isinstance(e, DatasetSpec)}
    names = [e.name if isinstance(e, DatasetSpec) else str(e) for e, _ in entries]
    problems = [
        f"{n!r} is not a known dataset ({suggest(n, list(specs)) or 'no close match'})"
        for n in names
        if n not in specs
    ]
    problems += [f"{n!r} appears more than once" for n in sorted({n for n in names if names.count(n) > 1})]
    problems += [
        f"weight of {n!r} must be a positive number, got {w!r}"
        for n, (_, w) in zip(names, entries)
        if isinstance(w, bool) or not (isinstance(w, (int, float)) and w > 0)
    ]
    problems += [
        f"{n!r} has action_encoding {specs[n].action_encoding!r}; training needs one of {', '.join(TRAINABLE_ACTION_ENCODINGS)}"
        for n in names
        if n in specs and not specs[n].trainable
    ]
    if problems:
        raise SpecError(
            f"Cannot resolve {what}:\n  - "
            + "\n  - ".join(problems)
            + "\nAdd spec files for missing datasets (extra_files=...) or fix the mixture.",
            problems,
        )
    return [(specs[n], float(w)) for n, (_, w) in zip(names, entries)]
