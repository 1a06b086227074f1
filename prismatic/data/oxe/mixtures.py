"""Named dataset mixtures: (dataset name, sampling weight) pairs, with the original OpenVLA weights.

Two differences from the original's table, both so that what is listed is exactly what is trained:
- The original's `rtx_franka` lists taco_play, berkeley_cable_routing, viola and toto twice; its
  loader keeps the first occurrence, so only those are listed here.
- It also lists `berkeley_rpt_converted_externally_to_rlds`, whose joint-position actions the original
  loader skips with a warning; it is left out here (`resolve_mixture` would refuse it).
Entries the original comments out are left out too (noted inline).
"""

from __future__ import annotations

from collections.abc import Sequence

# Weights shared by the RT-X style mixtures.
_RT1 = ("fractal20220817_data", 0.54087122203)  # Google RT-1 robot data
_KUKA = ("kuka", 0.8341046294)

_RTX = [
    _RT1,
    _KUKA,
    ("bridge_orig", 1.0),  # Bridge V2 from the project website (not `bridge_oxe`)
    ("taco_play", 2.0),
    ("jaco_play", 2.0),
    ("berkeley_cable_routing", 3.0),
    ("roboturk", 1.0),
    # nyu_door_opening_surprising_effectiveness: wrist camera only, left out by the original
    ("viola", 2.0),
    ("berkeley_autolab_ur5", 1.0),
    ("toto", 1.0),
]

_MAGIC_SOUP_CORE = [
    _KUKA,
    ("bridge_orig", 1.0),
    ("taco_play", 2.0),
    ("jaco_play", 1.0),
    ("berkeley_cable_routing", 1.0),
    ("roboturk", 2.0),
    ("viola", 2.0),
    ("berkeley_autolab_ur5", 2.0),
    ("toto", 1.0),
]
_MAGIC_SOUP_TAIL = [
    ("stanford_hydra_dataset_converted_externally_to_rlds", 2.0),
    ("austin_buds_dataset_converted_externally_to_rlds", 1.0),
    ("nyu_franka_play_dataset_converted_externally_to_rlds", 3.0),
    ("furniture_bench_dataset_converted_externally_to_rlds", 0.1),
    ("ucsd_kitchen_dataset_converted_externally_to_rlds", 2.0),
    ("austin_sailor_dataset_converted_externally_to_rlds", 1.0),
    ("austin_sirius_dataset_converted_externally_to_rlds", 1.0),
    # bc_z (0.2) and uiuc_d3field (1.0): raw data broken, left out of the original Magic Soup
    ("dlr_edan_shared_control_converted_externally_to_rlds", 1.0),
    ("iamlab_cmu_pickup_insert_converted_externally_to_rlds", 1.0),
    ("utaustin_mutex", 1.0),
    ("berkeley_fanuc_manipulation", 2.0),
    ("cmu_stretch", 1.0),
]
_PLUS = [
    ("bc_z", 0.2),  # the original notes: use v0.1.0 of the data, later versions are broken
    ("fmb_dataset", 1.0),
    ("dobbe", 0.2),
]

MIXTURES: dict[str, list[tuple[str, float]]] = {
    "bridge": [("bridge_orig", 1.0)],
    "bridge_rt_1": [("bridge_orig", 1.0), ("fractal20220817_data", 1.0)],
    "rtx": list(_RTX),
    "rtx_franka": _RTX
    + [
        ("stanford_hydra_dataset_converted_externally_to_rlds", 1.0),
        ("austin_buds_dataset_converted_externally_to_rlds", 3.0),
        ("nyu_franka_play_dataset_converted_externally_to_rlds", 3.0),
        ("maniskill_dataset_converted_externally_to_rlds", 0.1),
        ("furniture_bench_dataset_converted_externally_to_rlds", 0.1),
        ("cmu_franka_exploration_dataset_converted_externally_to_rlds", 5.0),
        ("austin_sailor_dataset_converted_externally_to_rlds", 1.0),
        ("austin_sirius_dataset_converted_externally_to_rlds", 1.0),
        # berkeley_rpt_converted_externally_to_rlds (1.0): joint actions, skipped by the original loader
        ("kaist_nonprehensile_converted_externally_to_rlds", 3.0),
        ("stanford_robocook_converted_externally_to_rlds", 1.0),
        ("iamlab_cmu_pickup_insert_converted_externally_to_rlds", 1.0),
        ("utaustin_mutex", 1.0),
        ("cmu_play_fusion", 1.0),
    ],
    "oxe_magic_soup": [_RT1, *_MAGIC_SOUP_CORE, ("language_table", 0.1), *_MAGIC_SOUP_TAIL],
    "oxe_magic_soup_plus": [
        _RT1,
        *_MAGIC_SOUP_CORE,
        ("language_table", 0.1),
        *_MAGIC_SOUP_TAIL,
        *_PLUS,
        ("droid", 0.06),
    ],
    # "minus": RT-1 at full weight, without language_table and DROID
    "oxe_magic_soup_plus_minus": [
        ("fractal20220817_data", 1.0),
        *_MAGIC_SOUP_CORE,
        *_MAGIC_SOUP_TAIL,
        *_PLUS,
    ],
}

# Single-dataset fine-tuning mixtures (T-DROID tasks, DROID fine-tuning, LIBERO suites).
_SINGLE = [
    "tdroid_carrot_in_bowl",
    "tdroid_pour_corn_in_pot",
    "tdroid_flip_pot_upright",
    "tdroid_move_object_onto_plate",
    "tdroid_knock_object_over",
    "tdroid_cover_object_with_towel",
    "droid_wipe",
    "libero_spatial_no_noops",
    "libero_object_no_noops",
    "libero_goal_no_noops",
    "libero_10_no_noops",
]
MIXTURES.update({name: [(name, 1.0)] for name in _SINGLE})


def register_mixture(name: str, entries: Sequence[tuple[str, float]], *, replace: bool = False) -> None:
    """Add a mixture of your own (checked when resolved: every dataset must have a spec)."""
    if name in MIXTURES and not replace:
        raise ValueError(f"mixture {name!r} already exists; pass replace=True to redefine it")
    MIXTURES[name] = [(str(n), float(w)) for n, w in entries]
