"""Base VLMs as the starting point of VLA training: the released prismatic-vlms layout (ViTs from timm's
pretrained weights, projector and LLM from the .pt), our own runs, and how `--vla.base_vlm` is resolved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants

from prismatic.models.base_vlm import (
    MODEL_ROOT_ENV,
    BaseVLMError,
    _config,
    base_vlm_problems,
    load_base_vlm,
    plan_base_vlm,
    resolve_base_vlm,
)
from prismatic.models.configuration import OpenVLAConfig
from prismatic.models.layouts import hf_to_native, native_arch_section
from prismatic.models.llm.loading import load_tokenizer
from prismatic.models.modeling import OpenVLAForActionPrediction
from prismatic.models.vision.pretrained import pretrained_vision_state

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def loaded(released_base_vlm):
    return load_base_vlm(released_base_vlm["dir"], vision_weights=released_base_vlm["vision_weights"])


def test_released_layout_loads_llm_and_projector_from_the_pt_and_vits_from_timm(released_base_vlm, loaded):
    model, native = loaded.model, released_base_vlm["native"]
    assert set(native) == {"projector", "llm_backbone"}  # exactly what the release holds
    got = hf_to_native(model.state_dict(), model.config.vision_backbone_id, model.config.projector_type)
    for group in ("projector", "llm_backbone"):
        assert got[group].keys() == native[group].keys()
        for key, tensor in native[group].items():
            assert torch.equal(got[group][key], tensor), key
    timm_state = pretrained_vision_state(model.config, released_base_vlm["vision_weights"])
    ours = model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in timm_state.items()) and len(timm_state) == len(
        [k for k in ours if k.startswith("vision_backbone.")])  # fmt: skip
    # the release has no tokenizer: Llama-2's own, with <PAD> added and the vocabulary padded as the original
    tok = loaded.processor.tokenizer
    assert (len(tok), tok.pad_token_id, model.config.pad_token_id) == (32001, 32000, 32000)
    assert model.get_input_embeddings().weight.shape[0] == 32064 and model.config.base_vocab_size == 32000
    assert model.dtype == torch.float32 and model.config.norm_stats == {}


def test_released_arch_without_overrides_is_openvla_7bs_llm_and_projector():
    """Without tiny overrides, the release's `model` section gives exactly openvla-7b's LLM and projector
    (the released base VLM they were trained from); built on the meta device."""
    arch = {"model_id": "prism-dinosiglip-224px+7b", "vision_backbone_id": "dinosiglip-vit-so-224px",
            "llm_backbone_id": "llama2-7b-pure", "arch_specifier": "no-align+fused-gelu-mlp",
            "image_resize_strategy": "resize-naive", "llm_max_length": 2048, "finetune_epochs": 2}  # fmt: skip
    config = _config(arch, load_tokenizer("llama2-7b-pure"), embedding_rows=32064)
    with torch.device("meta"):
        model = OpenVLAForActionPrediction(config)
    native = hf_to_native(model.state_dict(), config.vision_backbone_id, config.projector_type)
    expected = json.loads((ASSETS / "openvla-7b-shapes" / "openvla-7b-prismatic.json").read_text())
    for group in ("projector", "llm_backbone", "vision_backbone"):
        assert {k: list(v.shape) for k, v in native[group].items()} == expected[group], group


def test_base_vlm_is_a_directory_a_pt_file_or_an_id_under_the_model_root(released_base_vlm, monkeypatch):
    root, model_dir = released_base_vlm["root"], released_base_vlm["dir"]
    pt = model_dir / "checkpoints" / "latest-checkpoint.pt"
    assert resolve_base_vlm(model_dir) == model_dir and resolve_base_vlm(pt) == pt
    assert resolve_base_vlm("prism-dinosiglip-224px+7b", root) == model_dir
    monkeypatch.setenv(MODEL_ROOT_ENV, str(root))
    assert resolve_base_vlm("prism-dinosiglip-224px+7b") == model_dir
    with pytest.raises(BaseVLMError, match=r"'siglip-224px\+7b' is not under the model root .*it holds: prism-dinosiglip-224px\+7b"):
        resolve_base_vlm("siglip-224px+7b")
    monkeypatch.delenv(MODEL_ROOT_ENV)
    with pytest.raises(BaseVLMError, match=r"--model_root DIR \(or set PRISMATIC_MODEL_ROOT\)"):
        resolve_base_vlm("siglip-224px+7b")
    with pytest.raises(BaseVLMError, match="does not exist"):
        resolve_base_vlm(root / "missing" / "dir")
    for spec in (pt, "prism-dinosiglip-224px+7b"):  # every form plans the same parts
        plan = plan_base_vlm(spec, root, vision_weights=released_base_vlm["vision_weights"])
        assert plan.checkpoint == pt and plan.needs_vision_weights and plan.groups == ("projector", "llm_backbone")


def test_every_problem_is_reported_before_anything_is_built(released_base_vlm, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(released_base_vlm["dir"], broken)
    release = json.loads((broken / "config.json").read_text())
    release["model"]["llm_backbone_id"] = "llama3-8b"
    (broken / "config.json").write_text(json.dumps(release))
    (problem,) = base_vlm_problems(broken, vision_weights=released_base_vlm["vision_weights"])
    assert "model.llm_backbone_id='llama3-8b' is not one of" in problem and "llama2-7b-pure" in problem
    release["model"]["llm_backbone_id"] = "llama2-7b-pure"
    (broken / "config.json").write_text(json.dumps(release))
    state = torch.load(broken / "checkpoints" / "latest-checkpoint.pt", weights_only=True)
    del state["model"]["llm_backbone"]
    torch.save(state, broken / "checkpoints" / "latest-checkpoint.pt")
    empty = tmp_path / "no-vits"
    empty.mkdir()
    problems = base_vlm_problems(broken, vision_weights=empty, tokenizer=tmp_path / "no-tokenizer")
    assert len(problems) == 4, problems  # the LLM weights, both ViTs' files, the tokenizer
    assert "has no llm_backbone weights (it holds: projector)" in problems[0]
    assert "vit_large_patch14_reg4_dinov2.lvd142m" in problems[1] and "vit_so400m_patch14_siglip_224.webli" in problems[2]
    assert "no-tokenizer" in problems[3]
    (broken / "checkpoints" / "latest-checkpoint.pt").write_bytes(b"truncated")
    (problem,) = base_vlm_problems(broken, vision_weights=empty)
    assert "cannot read" in problem and "latest-checkpoint.pt" in problem


def test_a_tokenizer_that_does_not_fit_the_checkpoint_is_refused(released_base_vlm, tmp_path):
    from prismatic.models.llm.word_tokenizer import save_word_tokenizer

    words = save_word_tokenizer(["pick", "up"], tmp_path / "words")
    with pytest.raises(BaseVLMError, match=r"has \d+ tokens .*pads to \d+ embedding rows, but .* has 32064: pass the tokenizer"):
        load_base_vlm(released_base_vlm["dir"], tokenizer=words, vision_weights=released_base_vlm["vision_weights"])


def test_our_own_vlm_run_loads_through_the_same_path(loaded, tmp_path):
    """A run our trainer writes (all three weight groups, `tokenizer/`, the full `model` section) needs no
    timm weights and gives back the same model: the path a VLM training run will take."""
    run = tmp_path / "vlm-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": native_arch_section(loaded.model.config)}))
    c = loaded.model.config
    torch.save({"model": hf_to_native(loaded.model.state_dict(), c.vision_backbone_id, c.projector_type)},
               run / "checkpoints" / "step-000010-epoch-00-loss=1.0000.pt")  # fmt: skip
    loaded.processor.tokenizer.save_pretrained(run / "tokenizer")
    plan = plan_base_vlm(run, vision_weights=tmp_path / "nowhere")  # not consulted: the ViTs are in the .pt
    assert not plan.needs_vision_weights and plan.tokenizer == run / "tokenizer"
    again = load_base_vlm(run)
    a, b = loaded.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(again.model.config, OpenVLAConfig) and again.model.config.text_config.hidden_size == 64
