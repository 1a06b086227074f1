"""The no-op rule of the LIBERO demo regeneration (the replay itself needs LIBERO and the raw data)."""

from __future__ import annotations

import numpy as np
import pytest

from prismatic.data.libero import regenerate as regen


def test_is_noop():
    still_open = np.array([0, 0, 0, 0, 0, 0, -1.0])
    assert regen.is_noop(still_open)  # first step: motion alone decides
    assert regen.is_noop(still_open, prev_action=still_open)
    assert not regen.is_noop(
        np.array([0, 0, 0, 0, 0, 0, 1.0]), prev_action=still_open
    )  # gripper closes: kept
    assert not regen.is_noop(np.array([2e-4, 0, 0, 0, 0, 0, -1.0]), prev_action=still_open)  # moves: kept
    assert regen.is_noop(np.array([5e-5, 5e-5, 0, 0, 0, 5e-5, -1.0]), prev_action=still_open)  # norm < 1e-4


def test_a_filled_target_is_refused_before_the_simulator_starts(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old_demo.hdf5").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not empty; pass --overwrite"):
        regen.regenerate_suite("libero_spatial", tmp_path / "raw", target)  # no simulator needed to refuse
    assert (target / "old_demo.hdf5").read_text() == "x"
