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
    # The action formulation (prismatic.models.heads). No official file records these: openvla-7b is the
    # defaults, the OpenVLA-OFT LIBERO releases are l1-regression, cameras [primary, wrist], proprio 8,
    # chunk 8, action_dim 7 (docs/heads.md).
    action_head: str = "bins"  # key of prismatic.models.heads.ACTION_HEADS
    chunk_len: int = 1  # actions predicted per query (K)
    cameras: list[str] | None = None  # image views, in input order (None: ["primary"])
    proprio_dim: int = 0  # proprioceptive state size fed as one token after the patches (0: none)
    action_dim: int | None = None  # D; parallel heads need it (None: from the statistics, bins only)

    def __post_init__(self, **kwargs: Any) -> None:
        if self.cameras is None:
            self.cameras = ["primary"]
        super().__post_init__(**kwargs)
        from prismatic.models.heads import ACTION_HEADS  # the heads import this module

        head = ACTION_HEADS.get(self.action_head)  # raises with the valid choices
        problems = []
        if not isinstance(self.chunk_len, int) or self.chunk_len < 1:
            problems.append(f"chunk_len must be an integer >= 1, got {self.chunk_len!r}")
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            problems.append(f"cameras must be a non-empty list of distinct names, got {self.cameras!r}")
        if not isinstance(self.proprio_dim, int) or self.proprio_dim < 0:
            problems.append(f"proprio_dim must be an integer >= 0, got {self.proprio_dim!r}")
        if self.action_dim is not None and (not isinstance(self.action_dim, int) or self.action_dim < 1):
            problems.append(f"action_dim must be an integer >= 1 (or None), got {self.action_dim!r}")
        if head.parallel and self.action_dim is None:
            problems.append(f"action_head {self.action_head!r} predicts chunk_len x action_dim slots at once: set action_dim")
        if problems:
            raise ValueError("invalid OpenVLAConfig: " + "; ".join(problems))

    # The data-to-model contract: always written to config.json (not only when they differ from the defaults).
    CONTRACT_FIELDS = ("action_head", "chunk_len", "cameras", "proprio_dim", "action_dim")

    def to_diff_dict(self) -> dict[str, Any]:
        out = super().to_diff_dict()
        out.update({k: getattr(self, k) for k in self.CONTRACT_FIELDS})
        return out

    @property
    def base_vocab_size(self) -> int:
        if self.action_vocab_size is not None:
            return self.action_vocab_size
        return self.text_config.vocab_size - self.pad_to_multiple_of

    @property
    def empty_token_id(self) -> int | None:
        """The LLM backbone's lone "▁" id that precedes the action tokens (None: no such token).

        The one source for training and inference: Llama-2 29871, Mistral 28705."""
        if not self.empty_token_before_actions or self.llm_backbone_id not in LLM_BACKBONES:
            return None
        return LLM_BACKBONES.get(self.llm_backbone_id).empty_token_id

    @property
    def num_images(self) -> int:
        return len(self.cameras)

    @property
    def stop_token_id(self) -> int:
        """The token that ends an action sequence (the LLM's EOS: 2 for Llama-2)."""
        eos = self.text_config.eos_token_id
        return int(eos[0] if isinstance(eos, (list, tuple)) else eos)
