"""`predict_action` / `predict_actions` refuse inputs that would otherwise act on garbage or fail deep inside."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

IMG = np.full((224, 224, 3), 0.5, np.float32)


@pytest.mark.parametrize(
    "image, error, message",
    [
        (np.where(np.arange(224)[:, None, None] == 3, np.nan, IMG), ValueError,
         r"the image has 672 NaN or infinite value\(s\)"),  # was: NaN silently became 0
        (np.full((224, 224, 3), np.inf, np.float32), ValueError, r"the image has 150528 NaN or infinite"),
        (np.zeros((0, 0, 3), np.uint8), ValueError, r"the image is empty \(shape \(0, 0, 3\)\)"),
        (Image.new("RGB", (0, 0)), ValueError, r"the image is empty \(0x0 pixels\)"),
        (torch.zeros(3, 0, 224), ValueError, r"the image is empty"),
        (None, ValueError, r"needs both a prompt \(text\) and an image"),  # processor and VLA alike
        ("frame.png", TypeError, r"expected a PIL image, numpy array or torch tensor, got str"),
    ],
)  # fmt: skip
def test_bad_images_are_refused(tiny_vla, image, error, message):
    with pytest.raises(error, match=message):
        tiny_vla.predict_action(image, "pick up the cup", unnorm_key="bridge_orig")


@pytest.mark.parametrize(
    "instruction, error, message",
    [
        ("", ValueError, r"instruction is empty"),
        ("   \n", ValueError, r"instruction is empty"),
        (None, TypeError, r"instruction must be a str, got NoneType"),  # was: AttributeError deep inside
        (b"pick up the cup", TypeError, r"got bytes; decode it first"),
        (7, TypeError, r"got int"),
    ],
)
def test_bad_instructions_are_refused(tiny_vla, instruction, error, message):
    with pytest.raises(error, match=message):
        tiny_vla.predict_action(IMG, instruction, unnorm_key="bridge_orig")


def test_bad_batches_are_refused_with_counts(tiny_vla):
    with pytest.raises(ValueError, match="the batch is empty"):  # was: IndexError
        tiny_vla.predict_actions([], [], unnorm_key="bridge_orig")
    with pytest.raises(ValueError, match="got 2 images but 3 instructions"):
        tiny_vla.predict_actions([IMG, IMG], ["a", "b", "c"], unnorm_key="bridge_orig")
    with pytest.raises(TypeError, match="instructions must be a list of str, one per image; got str"):
        tiny_vla.predict_actions([IMG], "pick up the cup", unnorm_key="bridge_orig")
    with pytest.raises(ValueError, match=r"instructions\[1\] is empty"):
        tiny_vla.predict_actions([IMG, IMG], ["pick up the cup", ""], unnorm_key="bridge_orig")
    with pytest.raises(ValueError, match="NaN or infinite"):
        tiny_vla.predict_actions([IMG, IMG * np.nan], ["a", "b"], unnorm_key="bridge_orig")


def test_the_hf_api_refuses_non_finite_pixel_values(tiny_vla):
    inputs = tiny_vla.processor(tiny_vla.prompt("pick up the cup"), IMG)
    inputs["pixel_values"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="pixel_values holds NaN or infinite values"):
        tiny_vla.model.predict_action(**inputs, unnorm_key="bridge_orig")
