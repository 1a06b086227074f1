"""Serving fixtures (helpers in serve_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_helpers import FakeChunkVLA

from prismatic.serve import ServedModel

CASES = Path(__file__).resolve().parents[1] / "assets" / "openvla-tiny" / "cases"


@pytest.fixture(scope="session")
def case_images() -> list[np.ndarray]:
    """The reference cases' images (uint8 HxWx3)."""
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(CASES.glob("*.png"))]


@pytest.fixture()
def fake_vla() -> FakeChunkVLA:
    return FakeChunkVLA()


@pytest.fixture(scope="session")
def tiny_model(tiny_vla) -> ServedModel:
    """The tiny reference checkpoint as the server serves it (two datasets: requests name the key)."""
    return ServedModel(tiny_vla, "openvla-tiny")
