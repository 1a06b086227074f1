"""Shared fixtures. Assets under tests/assets/ were produced by running the original OpenVLA code
(see tests/assets/README.md); tests never download anything."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import prismatic  # noqa: F401  (first: loads torch/triton before any test module imports tensorflow)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ASSETS = Path(__file__).parent / "assets"
TINY = ASSETS / "openvla-tiny"


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    return TINY / "checkpoint"


@pytest.fixture(scope="session")
def reference() -> dict:
    return json.loads((TINY / "expected.json").read_text())


@pytest.fixture(scope="session")
def tiny_vla(tiny_checkpoint):
    """The tiny reference checkpoint loaded once (treat as read-only)."""
    from prismatic.models.load import load_vla

    return load_vla(tiny_checkpoint)
