"""The action-chunk contract of `VLA` (what serving and evaluation code against) for the 256-bin head:
chunks of length 1 equal to `predict_actions`, one camera, no proprio, and clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CASES = Path(__file__).resolve().parents[1] / "assets" / "openvla-tiny" / "cases"


def test_predict_chunks_is_predict_actions_reshaped(tiny_vla, reference):
    images = [Image.open(CASES.parent / c["image"]) for c in reference["cases"][:2]]
    instructions = [c["instruction"] for c in reference["cases"][:2]]
    chunks = tiny_vla.predict_chunks(images, instructions, unnorm_key="bridge_orig")
    actions = tiny_vla.predict_actions(images, instructions, unnorm_key="bridge_orig")
    assert chunks.shape == (2, 1, 7) and chunks.dtype == actions.dtype
    np.testing.assert_array_equal(chunks.reshape(2, 7), actions)
    # one image per camera, as a sequence: the same call for a one-camera model
    np.testing.assert_array_equal(
        tiny_vla.predict_chunks([[im] for im in images], instructions, unnorm_key="bridge_orig"), chunks
    )
    assert tiny_vla.chunk_len == 1 and tiny_vla.cameras == ("primary",) and tiny_vla.proprio_dim == 0
    assert tiny_vla.action_dim("bridge_orig") == 7 and tiny_vla.action_dim("toy_pick_place") == 7


def test_predict_chunks_errors(tiny_vla):
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"images\[0\] has 2 camera image\(s\) but the model reads 1: \['primary'\]"):
        tiny_vla.predict_chunks([[image, image]], ["go"], unnorm_key="bridge_orig")
    with pytest.raises(ValueError, match="reads no proprioceptive state"):
        tiny_vla.predict_chunks([image], ["go"], unnorm_key="bridge_orig", proprio=np.zeros((1, 8)))
    with pytest.raises(KeyError, match="bridge_orig, toy_pick_place"):
        tiny_vla.action_dim("nope")
