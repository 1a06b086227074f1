"""Fixtures shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A small synthetic RLDS dataset (`bridge_orig` schema), written once per test session."""
    from prismatic.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("rlds")
    write_synthetic(root, "bridge_orig", num_episodes=6, episode_len=10, image_size=(64, 64), seed=3)
    return root
