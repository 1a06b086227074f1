"""Dataset specs: one declarative description per RLDS dataset, loaded from YAML and validated.

The package, one module per concern (import the public names from here):

- `paths`: `/`-separated trajectory paths ("observation/state") and the helpers ops use to read them;
- `ops`: the named standardisation ops and chunk filters with their registries (`STANDARDIZE_OPS`,
  `CHUNK_FILTERS`) and `OpCall`, one op with its arguments as written in YAML;
- `checking`: the exceptions and `check_call`, which checks an op's arguments against its signature;
- `schema`: `DatasetSpec` (keys, encodings, normalisation, ops) and the encodings it knows;
- `loading`: YAML files -> specs, the shipped registry, and dataset / mixture lookup (`resolve_mixture`).

A new standardisation op is one function registered with `@STANDARDIZE_OPS.register("name")` in
`ops.py` (or in the user's own module) and named from YAML; docs/datasets.md has the reference.
"""

from prismatic.data.spec.checking import MissingKeyError, SpecError, UnknownNameError, check_call
from prismatic.data.spec.loading import (
    BUILTIN_SPECS_FILE,
    ENTRY_KEYS,
    REPO_CONFIGS_DIR,
    REQUIRED_KEYS,
    Mixture,
    all_dataset_specs,
    get_dataset_spec,
    get_mixture,
    load_dataset_specs,
    resolve_mixture,
    shipped_specs,
)
from prismatic.data.spec.ops import (
    CHUNK_FILTERS,
    STANDARDIZE_OPS,
    OpCall,
    binarize_gripper_values,
    euler_to_matrix_values,
    quat_to_euler_values,
    rel2abs_gripper_values,
)
from prismatic.data.spec.paths import Traj, TrajFn, get_path, pop_path, set_path
from prismatic.data.spec.schema import (
    ACTION_DIMS,
    ACTION_ENCODINGS,
    CAMERAS,
    STATE_ENCODINGS,
    TRAINABLE_ACTION_ENCODINGS,
    DatasetSpec,
    default_action_mask,
)

__all__ = [
    "ACTION_DIMS",
    "ACTION_ENCODINGS",
    "BUILTIN_SPECS_FILE",
    "CAMERAS",
    "CHUNK_FILTERS",
    "ENTRY_KEYS",
    "REPO_CONFIGS_DIR",
    "REQUIRED_KEYS",
    "STANDARDIZE_OPS",
    "STATE_ENCODINGS",
    "TRAINABLE_ACTION_ENCODINGS",
    "DatasetSpec",
    "MissingKeyError",
    "Mixture",
    "OpCall",
    "SpecError",
    "Traj",
    "TrajFn",
    "UnknownNameError",
    "all_dataset_specs",
    "binarize_gripper_values",
    "check_call",
    "default_action_mask",
    "euler_to_matrix_values",
    "get_dataset_spec",
    "get_mixture",
    "get_path",
    "load_dataset_specs",
    "pop_path",
    "quat_to_euler_values",
    "rel2abs_gripper_values",
    "resolve_mixture",
    "set_path",
    "shipped_specs",
]
