"""The VLM registry holds the original's models with their fields (prismatic-vlms / openvla
`prismatic/conf/models.py`, openvla-mini for the Qwen2.5 one), every entry resolves, and the base VLMs the
VLA experiments name agree with it; a released base VLM loads for chat."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import constants as hf_constants
from PIL import Image

from prismatic.models.layouts import hf_to_native
from prismatic.models.llm.backbones import LLM_BACKBONES
from prismatic.models.load import _ORIGINAL_BASE_VLMS
from prismatic.models.projectors import PROJECTORS
from prismatic.models.vision.backbones import VISION_BACKBONES
from prismatic.models.vision.pretrained import pretrained_vision_state
from prismatic.models.vision.transforms import RESIZE_STRATEGIES
from prismatic.training.config import VLAConfig
from prismatic.vlm.config import VLMModelConfig, VLMTrainConfig, recipe_problems

ARCH = ("vision_backbone_id", "llm_backbone_id", "arch_specifier", "image_resize_strategy", "llm_max_length")

# id -> (vision, LLM, arch_specifier, resize, llm_max_length, finetune epochs), from the original's registries
ORIGINAL = {
    "reproduction-llava-v15+7b": ("clip-vit-l-336px", "vicuna-v15-7b", "gelu-mlp", "letterbox", 2048, 1),
    "reproduction-llava-v15+13b": ("clip-vit-l-336px", "vicuna-v15-13b", "gelu-mlp", "letterbox", 2048, 1),
    "clip-224px+7b": ("clip-vit-l", "vicuna-v15-7b", "no-align+gelu-mlp", "letterbox", 2048, 1),
    "siglip-224px+7b": ("siglip-vit-so400m", "vicuna-v15-7b", "no-align+gelu-mlp", "letterbox", 2048, 1),
    "prism-dinosiglip-224px+7b": ("dinosiglip-vit-so-224px", "llama2-7b-pure", "no-align+fused-gelu-mlp", "resize-naive",
                                  2048, 2),
    "prism-dinosiglip+7b": ("dinosiglip-vit-so-384px", "llama2-7b-pure", "no-align+fused-gelu-mlp", "resize-naive", 2048, 2),
    "prism-dinosiglip+13b": ("dinosiglip-vit-so-384px", "llama2-13b-pure", "no-align+fused-gelu-mlp", "resize-naive", 2048, 2),
    "prism-qwen25-dinosiglip-224px+0_5b": ("dinosiglip-vit-so-224px", "qwen2.5-0.5b-pure", "no-align+fused-gelu-mlp",
                                           "resize-naive", 32768, 2),
}  # fmt: skip


@pytest.mark.parametrize("model_id", list(ORIGINAL))
def test_the_originals_models_have_their_fields_and_recipes(model_id):
    m = VLMModelConfig.get_choice_class(model_id)()
    assert m.model_id == model_id
    assert (*(getattr(m, k) for k in ARCH), m.finetune.epochs) == ORIGINAL[model_id]
    # LLaVA-1.5's recipes, shared by every full-size entry
    a, f = m.align, m.finetune
    assert (a.epochs, a.global_batch_size, a.per_device_batch_size, a.learning_rate, a.weight_decay) == (1, 256, 16, 1e-3, 0.0)
    assert (f.global_batch_size, f.per_device_batch_size, f.learning_rate, f.weight_decay) == (128, 16, 2e-5, 0.1)
    assert a.lr_schedule == f.lr_schedule == "warmup-cosine" and a.warmup_ratio == f.warmup_ratio == 0.03
    assert a.max_grad_norm == f.max_grad_norm == 1.0 and a.max_steps is f.max_steps is None


@pytest.mark.parametrize("model_id", VLMModelConfig.get_known_choices())
def test_every_registered_model_resolves(model_id):
    m = VLMModelConfig.get_choice_class(model_id)()
    assert m.vision_backbone_id in VISION_BACKBONES and m.llm_backbone_id in LLM_BACKBONES
    assert m.arch_specifier.split("+")[-1] in PROJECTORS and m.image_resize_strategy in RESIZE_STRATEGIES
    gpus = 8 if m.size == "full" else 1  # full size: valid on one 8-GPU node; tiny / small: one CPU process
    for stage, recipe in (("align", m.align), ("finetune", m.finetune)):
        assert recipe_problems(recipe, gpus, f"model.{stage}") == []
    assert VLMTrainConfig(model=m).resolved_run_id == f"{model_id}+stage-finetune+x7"  # the original's run id


def test_the_vla_experiments_base_vlms_are_these_models():
    """The base VLMs `--vla.type` experiments name (and the original's run configs refer to) are registered here
    with the same architecture: one fact, two owners that must agree."""
    named = {str(VLAConfig.get_choice_class(t)().base_vlm) for t in VLAConfig.get_known_choices()} - {"None"}
    assert named and named <= set(VLMModelConfig.get_known_choices())
    for model_id, arch in _ORIGINAL_BASE_VLMS.items():
        m = VLMModelConfig.get_choice_class(model_id)()
        assert {k: getattr(m, k) for k in arch} == arch, model_id


def test_a_released_base_vlm_loads_for_chat(released_base_vlm, monkeypatch):
    from prismatic.vlm import load_vlm

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    vlm = load_vlm(released_base_vlm["dir"], vision_weights=released_base_vlm["vision_weights"])
    c = vlm.model.config
    got = hf_to_native(vlm.model.state_dict(), c.vision_backbone_id, c.projector_type)
    for group in ("projector", "llm_backbone"):  # the .pt's groups, bit for bit
        assert all(torch.equal(got[group][k], v) for k, v in released_base_vlm["native"][group].items())
    timm = pretrained_vision_state(c, released_base_vlm["vision_weights"])  # the ViTs: timm's files
    assert all(torch.equal(vlm.model.state_dict()[k], v) for k, v in timm.items())
    assert vlm.stage is None and vlm.prompt_text("What is this?") == "In: What is this?\nOut:"
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    assert vlm.generate(image, "What is this?", max_new_tokens=3) == vlm.generate(image, "What is this?", max_new_tokens=3)
