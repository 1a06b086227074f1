"""The no-op rule of the LIBERO demo regeneration script (the script itself needs LIBERO and raw data)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "libero" / "regenerate_libero_dataset.py"
spec = importlib.util.spec_from_file_location("regenerate_libero_dataset", SCRIPT)
regen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(regen)


def test_is_noop():
    still_open = np.array([0, 0, 0, 0, 0, 0, -1.0])
    assert regen.is_noop(still_open)  # first step: motion alone decides
    assert regen.is_noop(still_open, prev_action=still_open)
    assert not regen.is_noop(
        np.array([0, 0, 0, 0, 0, 0, 1.0]), prev_action=still_open
    )  # gripper closes: kept
    assert not regen.is_noop(np.array([2e-4, 0, 0, 0, 0, 0, -1.0]), prev_action=still_open)  # moves: kept
    assert regen.is_noop(np.array([5e-5, 5e-5, 0, 0, 0, 5e-5, -1.0]), prev_action=still_open)  # norm < 1e-4
