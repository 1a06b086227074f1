"""Golden test: the tiny reference checkpoint (made by the original implementation) loaded through
the transformers Auto classes, without trust_remote_code, must reproduce the original's numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import prismatic  # noqa: F401  (registers the Auto classes)

TINY = Path(__file__).resolve().parents[1] / "assets" / "openvla-tiny"


@pytest.fixture(scope="module")
def auto_loaded(tiny_checkpoint):
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    config = AutoConfig.from_pretrained(tiny_checkpoint)
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint, dtype=torch.float32).eval()
    return config, processor, model


@pytest.fixture(scope="module")
def logits_ref():
    return np.load(TINY / "expected_logits.npz")


def _case_inputs(processor, case):
    return processor(case["prompt"], Image.open(TINY / case["image"]))


def test_auto_classes_pick_our_implementation(auto_loaded):
    config, processor, model = auto_loaded
    assert type(config).__name__ == "OpenVLAConfig"
    assert type(processor).__name__ == "PrismaticProcessor"
    assert type(model).__name__ == "OpenVLAForActionPrediction"
    assert model.config.norm_stats.keys() == {"bridge_orig", "toy_pick_place"}


@pytest.mark.parametrize("i", range(3))
def test_token_ids_and_pixel_values(auto_loaded, reference, i):
    case, tol = reference["cases"][i], reference["tolerances"]
    inputs = _case_inputs(auto_loaded[1], case)
    assert inputs["input_ids"][0].tolist() == case["input_ids"]
    pv = inputs["pixel_values"][0]
    assert tuple(pv.shape) == (6, 224, 224)
    np.testing.assert_allclose(pv.mean(dim=(1, 2)).numpy(), case["pixel_values_channel_means"], atol=tol["pixel_values_abs"])
    assert float(pv.abs().sum()) == pytest.approx(case["pixel_values_sum_abs"], rel=1e-6)


@pytest.mark.parametrize("i", range(3))
def test_last_position_logits(auto_loaded, reference, logits_ref, i):
    case, tol = reference["cases"][i], reference["tolerances"]
    inputs = _case_inputs(auto_loaded[1], case)
    ids = torch.cat([inputs["input_ids"], torch.tensor([[29871]])], dim=1)  # as predict_action feeds it
    with torch.no_grad():
        logits = auto_loaded[2](input_ids=ids, pixel_values=inputs["pixel_values"]).logits[0, -1].numpy()
    expected = logits_ref[case["image"].split("/")[-1].removesuffix(".png")]
    assert logits.shape == (32064,)
    np.testing.assert_allclose(logits, expected, atol=tol["logits_abs"])
    assert int(logits.argmax()) == case["last_logits_argmax"]


@pytest.mark.parametrize("i", range(3))
def test_predict_action_matches_original(auto_loaded, reference, i):
    case, tol = reference["cases"][i], reference["tolerances"]
    _, processor, model = auto_loaded
    inputs = _case_inputs(processor, case)
    tokens = model.generate_action_tokens(inputs["input_ids"], inputs["pixel_values"], n_tokens=7)
    assert tokens[0].tolist() == case["generated_action_token_ids"]
    # Token ids are compared exactly: at every step the chosen logit leads the runner-up by far more than the
    # logits may differ (tolerance above), so no summation order (threads, CPU, batching) can flip them.
    forced = torch.cat([inputs["input_ids"], torch.tensor([[29871] + case["generated_action_token_ids"]])], dim=1)
    with torch.no_grad():
        step_logits = model(input_ids=forced, pixel_values=inputs["pixel_values"]).logits[0, -8:-1]
    top2 = step_logits.topk(2, dim=-1).values
    assert step_logits.argmax(-1).tolist() == case["generated_action_token_ids"]
    assert (top2[:, 0] - top2[:, 1]).min().item() > 10 * tol["logits_abs"]
    action = model.predict_action(**inputs, unnorm_key=case["unnorm_key"], do_sample=False)
    assert action.shape == (7,)
    np.testing.assert_allclose(action, case["action"], atol=tol["action_abs"])


def test_hf_generate_agrees_with_fast_path(auto_loaded, reference):
    case = reference["cases"][0]
    _, processor, model = auto_loaded
    inputs = _case_inputs(processor, case)
    ids = torch.cat([inputs["input_ids"], torch.tensor([[29871]])], dim=1)
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=inputs["pixel_values"],
        max_new_tokens=7, do_sample=False,
    )  # fmt: skip
    assert out[0, -7:].tolist() == case["generated_action_token_ids"]


def test_different_images_give_different_actions(tiny_vla, reference):
    """The original on transformers >= 4.50 ignored the image: same action for every input."""
    instruction = "put the carrot on the plate"
    actions = [tiny_vla.predict_action(Image.open(TINY / c["image"]), instruction, unnorm_key="bridge_orig")
               for c in reference["cases"]]  # fmt: skip
    assert not np.allclose(actions[0], actions[2])
    # and the image really flows through: a perturbed image changes the logits
    inputs = tiny_vla.processor(tiny_vla.prompt(instruction), Image.open(TINY / reference["cases"][0]["image"]))
    with torch.no_grad():
        a = tiny_vla.model(**inputs).logits[0, -1]
        b = tiny_vla.model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"] + 0.5).logits[0, -1]
    assert (a - b).abs().max() > 1e-3


def test_batched_prediction_equals_one_by_one(tiny_vla, reference):
    images = [Image.open(TINY / c["image"]) for c in reference["cases"]]
    instructions = [c["instruction"] for c in reference["cases"]]  # different lengths -> left padding
    batched = tiny_vla.predict_actions(images, instructions, unnorm_key="bridge_orig")
    assert batched.shape == (3, 7)
    for img, instr, row in zip(images, instructions, batched):  # the same tokens (see the margin check above)
        np.testing.assert_array_equal(row, tiny_vla.predict_action(img, instr, unnorm_key="bridge_orig"))
