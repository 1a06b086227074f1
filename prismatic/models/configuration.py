"""Hugging Face configs for Prismatic VLMs and OpenVLA VLAs.

Field names are those of the official `config.json` of openvla-7b, so official directories load
unchanged. `timm_model_kwargs` (per-featurizer timm overrides, used for tiny test models) is an
optional extra field; `norm_stats` entries may carry `normalization_type` (absent = BOUNDS_Q99).
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from prismatic.models.llm.backbones import LLM_BACKBONES
from prismatic.models.projectors import projector_type
from prismatic.models.vision.backbones import VISION_BACKBONES
from prismatic.models.vision.transforms import RESIZE_STRATEGIES


class PrismaticConfig(PreTrainedConfig):
    model_type = "prismatic"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama")}

    vision_backbone_id: str = "dinosiglip-vit-so-224px"
    llm_backbone_id: str = "llama2-7b-pure"
    arch_specifier: str = "no-align+fused-gelu-mlp"
    use_fused_vision_backbone: bool | None = None
    image_resize_strategy: str = "resize-naive"
    text_config: dict | PreTrainedConfig | None = None
    hf_llm_id: str | None = None
    llm_max_length: int = 2048
    pad_token_id: int | None = 32000
    pad_to_multiple_of: int = 64
    output_projector_states: bool = False
    timm_model_ids: list[str] | None = None
    timm_override_act_layers: list[str | None] | None = None
    timm_model_kwargs: list[dict] | None = None
    image_sizes: list[int] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        vision = VISION_BACKBONES.get(self.vision_backbone_id)
        llm = LLM_BACKBONES.get(self.llm_backbone_id)
        if self.image_resize_strategy not in RESIZE_STRATEGIES:
            raise ValueError(
                f"image_resize_strategy={self.image_resize_strategy!r} is not one of {', '.join(RESIZE_STRATEGIES)}"
            )
        projector_type(self.arch_specifier)
        # Derived from the registries unless the file spells them out (official files do).
        if self.timm_model_ids is None:
            self.timm_model_ids = vision.timm_model_ids
        if self.timm_override_act_layers is None:
            self.timm_override_act_layers = vision.act_layers
        if self.image_sizes is None:
            self.image_sizes = [vision.image_size] * len(self.timm_model_ids)
        if self.use_fused_vision_backbone is None:
            self.use_fused_vision_backbone = len(self.timm_model_ids) > 1
        if self.hf_llm_id is None:
            self.hf_llm_id = llm.hf_hub_id
        if self.text_config is None:
            # The original adds the pad token, then pads the rows to a multiple (Llama-2: 32064, Phi-2: 50304).
            vocab = llm.embedding_rows(self.pad_to_multiple_of)
            self.text_config = llm.text_config(vocab_size=vocab, pad_token_id=self.pad_token_id).to_dict()
        super().__post_init__(**kwargs)

    @property
    def projector_type(self) -> str:
        return projector_type(self.arch_specifier)

    @property
    def prompt_builder(self) -> str:
        return LLM_BACKBONES.get(self.llm_backbone_id).prompt_builder


class OpenVLAConfig(PrismaticConfig):
    model_type = "openvla"

    norm_stats: dict[str, Any] | None = None
    n_action_bins: int = 256
    # Size of the tokenizer's base vocabulary (action tokens are its last `n_action_bins` ids). None =
    # the original's rule: embedding rows minus `pad_to_multiple_of` (32064 - 64 = 32000 for Llama-2).
    action_vocab_size: int | None = None
    # Whether prompts end with the LLM backbone's lone "▁" piece before the action tokens, as Llama-2's
    # tokenizer produces for "Out: <actions>". False for tokenizers without that piece (the tabletop
    # demo's word tokenizer); official checkpoints leave it at the default.
    empty_token_before_actions: bool = True

    @property
    def base_vocab_size(self) -> int:
        if self.action_vocab_size is not None:
            return self.action_vocab_size
        return self.text_config.vocab_size - self.pad_to_multiple_of
