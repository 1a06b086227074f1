"""Full-size openvla-7b built on the meta device (no memory, no weights) must have exactly the
tensor names and shapes of the official checkpoint, in both layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prismatic.models.configuration import OpenVLAConfig
from prismatic.models.layouts import hf_to_native
from prismatic.models.modeling import OpenVLAForActionPrediction

SHAPES = Path(__file__).resolve().parents[1] / "assets" / "openvla-7b-shapes"


@pytest.fixture(scope="module")
def meta_7b():
    with torch.device("meta"):
        return OpenVLAForActionPrediction(OpenVLAConfig())  # defaults = openvla-7b


def _shapes(state):
    return {k: list(v.shape) for k, v in state.items()}


def test_hf_layout_names_and_shapes(meta_7b):
    expected = json.loads((SHAPES / "openvla-7b-hf.json").read_text())
    got = _shapes(meta_7b.state_dict())
    assert sorted(set(expected) - set(got)) == [] and sorted(set(got) - set(expected)) == []
    assert got == expected
    assert len(got) == 982
    n = sum(v.numel() for v in meta_7b.state_dict().values())
    assert round(n / 1e9, 3) == 7.541


def test_native_layout_names_and_shapes(meta_7b):
    expected = json.loads((SHAPES / "openvla-7b-prismatic.json").read_text())
    native = hf_to_native(meta_7b.state_dict(), "dinosiglip-vit-so-224px", "fused-gelu-mlp")
    assert native.keys() == expected.keys()
    for group in expected:
        assert _shapes(native[group]) == expected[group], group
