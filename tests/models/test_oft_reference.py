"""Golden test: the tiny OpenVLA-OFT checkpoint in its official release layout (made by running OFT's own code
on its transformers fork; tests/assets/README.md) loads on stock transformers and reproduces OFT's numbers:
token layout, proprio, pixels, hidden states, action chunks, the fine-tuning batch and its L1 loss, and the
fixture's `checks` (what breaks when the attention is causal, the rows are off by one or the slots keep
their embeddings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import prismatic  # noqa: F401  (registers the Auto classes)
from prismatic.models.heads.base import slot_rows
from prismatic.models.oft import OFT_LIBERO

OFT = Path(__file__).resolve().parents[1] / "assets" / "openvla-oft-tiny"
CKPT = OFT / "checkpoint"
EXPECTED = json.loads((OFT / "expected.json").read_text())
TOL = EXPECTED["tolerances"]
CASES = EXPECTED["cases"]
VIEWS = ("third_person", "wrist")  # the model's cameras (primary, wrist), in input order
N_SLOTS = 8 * 7


@pytest.fixture(scope="module")
def oft_vla():
    from prismatic.models.load import load_vla

    return load_vla(CKPT, dtype=torch.float32, **OFT_LIBERO)


@pytest.fixture(scope="module")
def hidden_ref():
    return np.load(OFT / "expected_hidden.npz")


def case_inputs(vla, case):
    images = [Image.open(OFT / case["images"][v]["model_input"]) for v in VIEWS]
    state = vla.model.normalize_proprio(np.array(case["proprio"])[None], case["unnorm_key"])
    return vla.encoder.inference_inputs([case["instruction"]], [images], state)


def test_release_layout_loads_with_its_component_files(oft_vla):
    m = oft_vla.model
    assert (m.config.action_head, oft_vla.chunk_len, oft_vla.cameras, oft_vla.proprio_dim) == (
        "l1-regression", 8, ("primary", "wrist"), 8)  # fmt: skip
    assert oft_vla.action_dim() == 7 and m.num_patches == 2 * 256 + 1
    # dataset_statistics.json replaced config.json's norm_stats (two other datasets), as the original does
    assert set(oft_vla.norm_stats) == {"libero_spatial_no_noops"}
    head = torch.load(CKPT / "action_head--150000_checkpoint.pt", weights_only=True)
    proprio = torch.load(CKPT / "proprio_projector--150000_checkpoint.pt", weights_only=True)
    for state, module in ((head, m.action_head), (proprio, m.proprio_projector)):
        own = module.state_dict()
        assert {k.removeprefix("module.") for k in state} == set(own)
        for k, v in state.items():  # bf16 values are exact in fp32
            assert torch.equal(own[k.removeprefix("module.")], v.float()), k


def test_auto_classes_load_the_model_directory_with_the_settings():
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(CKPT, dtype=torch.float32, **OFT_LIBERO)
    assert type(model).__name__ == "OpenVLAForActionPrediction" and model.config.action_head == "l1-regression"
    head = torch.load(CKPT / "action_head--150000_checkpoint.pt", weights_only=True)
    assert torch.equal(model.action_head.model.fc2.weight, head["module.model.fc2.weight"].float())
    assert set(model.norm_stats) == {"libero_spatial_no_noops"}


def test_loading_a_release_without_its_settings_says_which_to_pass():
    from prismatic.models.load import CheckpointError, load_vla

    with pytest.raises(CheckpointError, match="OpenVLA-OFT release.*action_head='l1-regression'.*proprio_dim=8"):
        load_vla(CKPT)


@pytest.mark.parametrize("i", range(len(CASES)))
def test_inputs_match_the_original(oft_vla, i):
    case = CASES[i]
    inputs = case_inputs(oft_vla, case)
    assert inputs["input_ids"][0].tolist() == case["llm_input_ids"]  # prompt, 29871, 56 placeholders, stop
    assert oft_vla.processor.tokenizer(case["prompt"]).input_ids == case["input_ids"]
    np.testing.assert_allclose(inputs["proprio"][0].numpy(), case["proprio_normalized"], atol=TOL["proprio_abs"])
    pv = inputs["pixel_values"][0]
    assert tuple(pv.shape) == tuple(case["pixel_values_shape"][1:])
    np.testing.assert_allclose(pv.mean(dim=(1, 2)).numpy(), case["pixel_values_channel_means"], atol=TOL["pixel_values_abs"])
    assert float(pv.abs().sum()) == pytest.approx(case["pixel_values_sum_abs"], rel=1e-6)


@pytest.mark.parametrize("i", range(len(CASES)))
def test_hidden_states_and_chunks_match_the_original(oft_vla, hidden_ref, i):
    case, seq = CASES[i], CASES[i]["sequence"]
    inputs = case_inputs(oft_vla, case)
    with torch.no_grad():
        hidden, slots = oft_vla.model.last_hidden_state(**inputs)
    assert hidden.shape[1] == seq["length"]
    rows = torch.nonzero(slots[0, 1:]).flatten()  # the head reads the row before each slot
    assert rows.tolist() == list(range(*seq["action_head_rows"]))
    assert torch.nonzero(slots[0]).flatten().tolist() == list(range(*seq["placeholders"]))
    np.testing.assert_allclose(hidden[0].numpy(), hidden_ref[f"{case['name']}__last_hidden_states"], atol=TOL["hidden_states_abs"])
    np.testing.assert_allclose(slot_rows(hidden, slots, N_SLOTS)[0].numpy(), hidden_ref[f"{case['name']}__action_hidden_states"],
                               atol=TOL["hidden_states_abs"])  # fmt: skip
    chunk = oft_vla.model.predict_normalized_chunk(**inputs, action_dim=7)[0].numpy()
    np.testing.assert_allclose(chunk, case["normalized_actions"], atol=TOL["normalized_actions_abs"])
    images = [Image.open(OFT / case["images"][v]["model_input"]) for v in VIEWS]
    actions = oft_vla.predict_chunks([images], [case["instruction"]], case["unnorm_key"], np.array([case["proprio"]]))
    assert actions.shape == (1, 8, 7)
    np.testing.assert_allclose(actions[0], case["actions"], atol=TOL["actions_abs"])
    # the single-step API gives the chunk's first action
    first = oft_vla.predict_action(images, case["instruction"], case["unnorm_key"], proprio=case["proprio"])
    np.testing.assert_allclose(first, actions[0, 0], atol=1e-12)


def test_a_padded_batch_gives_each_case_its_own_chunk(oft_vla):
    """Left padding (prompts of different lengths) changes nothing: only padded keys are masked."""
    images = [[Image.open(OFT / c["images"][v]["model_input"]) for v in VIEWS] for c in CASES]
    proprio = np.array([c["proprio"] for c in CASES])
    batched = oft_vla.predict_chunks(images, [c["instruction"] for c in CASES], "libero_spatial_no_noops", proprio)
    for row, case in zip(batched, CASES):
        np.testing.assert_allclose(row, case["actions"], atol=TOL["actions_abs"])


@pytest.mark.parametrize("i", range(len(CASES)))
def test_the_checks_move_the_actions_as_in_the_original(oft_vla, i, monkeypatch):
    """Each departure from OFT's recipe moves the actions by exactly what it moved them in the original;
    the eager attention path gives the same actions as SDPA (the 4-D mask means the same to both)."""
    case, checks = CASES[i], CASES[i]["checks"]
    model, inputs = oft_vla.model, case_inputs(oft_vla, case)
    ref = np.asarray(case["normalized_actions"])
    tol = TOL["normalized_actions_abs"]

    def moved(chunk) -> float:
        return float(np.abs(np.asarray(chunk) - ref).max())

    with torch.no_grad():
        hidden, slots = model.last_hidden_state(**inputs)
        at_slots = model.action_head.chunk(hidden[slots].view(1, N_SLOTS, -1))[0]
        unzeroed, _ = model.last_hidden_state(**{**inputs, "action_mask": None})
        unzeroed = model.action_head.chunk(slot_rows(unzeroed, slots, N_SLOTS))[0]
    assert moved(at_slots) == pytest.approx(checks["placeholder_rows_instead_of_shifted_rows_max_abs_diff"], abs=tol)
    assert moved(unzeroed) == pytest.approx(checks["placeholders_not_zeroed_max_abs_diff"], abs=tol)
    assert min(checks["placeholder_rows_instead_of_shifted_rows_max_abs_diff"], checks["placeholders_not_zeroed_max_abs_diff"]) > 100 * tol

    sdpa = model.predict_normalized_chunk(**inputs, action_dim=7)[0]
    all_ones = model.predict_normalized_chunk(**{**inputs, "attention_mask": None}, action_dim=7)[0]
    assert torch.equal(sdpa, all_ones)  # no padding: the same 4-D mask either way
    try:
        model.set_attn_implementation("eager")
        assert model.config.text_config._attn_implementation == "eager"
        eager = model.predict_normalized_chunk(**inputs, action_dim=7)[0]
        with monkeypatch.context() as m:  # the LLM's own causal mask instead of the bidirectional one
            m.setattr(model, "_attention_mask", lambda mask, embeds, cached: mask)
            causal = model.predict_normalized_chunk(**inputs, action_dim=7)[0]
    finally:
        model.set_attn_implementation("sdpa")
    assert moved(eager) < tol and moved(sdpa) < tol
    assert moved(causal) == pytest.approx(checks["causal_attention_max_abs_diff"], abs=tol)
    assert checks["causal_attention_max_abs_diff"] > 100 * tol


def test_training_batch_and_loss_match_the_original(oft_vla, hidden_ref):
    """One fine-tuning batch built by our encoder and collator is OFT's batch, and gives its L1 loss."""
    from prismatic.data.torch_dataset import PaddedCollator
    from prismatic.models.load import load_vla

    t = EXPECTED["training"]
    items = []
    for s in t["samples"]:
        images = [Image.open(OFT / s["images"][v]) for v in VIEWS]
        items.append(oft_vla.encoder.training_sample(s["instruction"], np.array(s["actions_normalized"]), images,
                                                     np.array(s["proprio_normalized"])))  # fmt: skip
    batch = PaddedCollator(oft_vla.processor.tokenizer.pad_token_id, 2048)(items)
    assert batch["input_ids"].tolist() == t["input_ids"] and batch["labels"].tolist() == t["labels"]
    assert batch["attention_mask"].long().tolist() == t["attention_mask"]
    assert [torch.nonzero(r).flatten().tolist() for r in batch["action_mask"]] == t["zeroed_embedding_positions"]
    np.testing.assert_allclose(batch["pixel_values"].mean(dim=(2, 3)).numpy(), t["pixel_values_channel_means"],
                               atol=TOL["pixel_values_abs"])  # fmt: skip
    np.testing.assert_allclose(batch["proprio"].numpy(), t["proprio"], atol=TOL["proprio_abs"])

    model = oft_vla.model
    with torch.no_grad():
        out = model(**batch, return_label_logits=True)
        hidden, slots = model.last_hidden_state(batch["input_ids"], batch["pixel_values"], batch["attention_mask"],
                                                batch["proprio"], batch["action_mask"])  # fmt: skip
    assert [torch.nonzero(r[1:]).flatten().tolist() for r in slots] == t["action_head_rows"]
    np.testing.assert_allclose(slot_rows(hidden, slots, N_SLOTS).numpy(), hidden_ref["training__action_hidden_states"],
                               atol=TOL["hidden_states_abs"])  # fmt: skip
    np.testing.assert_allclose(out.head_output.predicted.numpy(), t["predicted_actions"], atol=TOL["normalized_actions_abs"])
    assert float(out.loss) == pytest.approx(t["l1_loss"], abs=TOL["l1_loss_abs"])
    metrics = model.action_head.metrics(out.head_output, ["libero_spatial_no_noops"] * 2)
    assert metrics["action_l1_current"] == pytest.approx(t["curr_action_l1_loss"], abs=TOL["l1_loss_abs"])
    assert metrics["action_l1_future"] == pytest.approx(t["next_actions_l1_loss"], abs=TOL["l1_loss_abs"])
    assert metrics["action_l1/libero_spatial_no_noops"] == pytest.approx(t["l1_loss"], abs=TOL["l1_loss_abs"])
    # The discrete variant on the same batch: its loss is the LM cross-entropy the original recorded (fp32 sums
    # of 57 log-softmaxes over 32064 logits: agreement to ~1e-6 relative).
    discrete = load_vla(CKPT, dtype=torch.float32, **{**OFT_LIBERO, "action_head": "bins-parallel"}).model
    with torch.no_grad():
        ce = discrete(**batch, return_label_logits=True).loss
    assert float(ce) == pytest.approx(t["lm_cross_entropy_loss"], rel=1e-5)


@pytest.mark.parametrize("i", range(len(CASES)))
def test_libero_preprocessing_reproduces_the_tensorflow_images(i):
    """OFT's LIBERO image chain (JPEG q95 round trip, lanczos3 resize, 0.9-area centre crop) within 1 grey level."""
    from prismatic.eval.libero import center_crop, jpeg_roundtrip, resize_lanczos

    for view in VIEWS:
        paths = CASES[i]["images"][view]
        raw = np.asarray(Image.open(OFT / paths["raw"]).convert("RGB"))
        resized = resize_lanczos(jpeg_roundtrip(raw), 224)
        want = np.asarray(Image.open(OFT / paths["resized"]).convert("RGB"))
        assert np.abs(resized.astype(int) - want.astype(int)).max() <= EXPECTED["image_preprocessing"]["uint8_max_abs_for_float_reimplementation"]
        cropped = center_crop(resized)
        want = np.asarray(Image.open(OFT / paths["model_input"]).convert("RGB"))
        assert np.abs(cropped.astype(int) - want.astype(int)).max() <= 1
