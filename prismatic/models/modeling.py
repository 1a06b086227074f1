"""The Prismatic VLM and the OpenVLA VLA as Hugging Face `PreTrainedModel`s.

One implementation serves training, inference and the Hugging Face layout: the module names
(`vision_backbone.featurizer`, `projector.fc1`, `language_model.model.layers.0...`) are those of the
official openvla-7b checkpoint, so `from_pretrained` reads it as is and `save_pretrained` writes it.

Image patches are inserted right after the first real token (BOS) of each row:
`[BOS, patch_1 .. patch_N, rest of the prompt]`. Left padding is supported (generation with
batches), and positions are always derived from the multimodal attention mask, so the cache, the
positions and the mask stay consistent whatever `generate` passes in. That bookkeeping is exactly
what broke the original on transformers >= 4.50, where the same action came out for every image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import ModelOutput

from prismatic.constants import IGNORE_INDEX
from prismatic.models.action_tokenizer import ActionTokenizer
from prismatic.models.configuration import OpenVLAConfig, PrismaticConfig
from prismatic.models.decoding import decode_action_tokens, resolve_decode_mode
from prismatic.models.llm.backbones import LLM_BACKBONES
from prismatic.models.projectors import PROJECTORS
from prismatic.models.vision.backbones import VisionBackbone
from prismatic.normalization import NormalizationType, resolve_unnorm_key, unnormalize


@dataclass
class PrismaticCausalLMOutputWithPast(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    projector_features: torch.FloatTensor | None = None
    # With `return_label_logits=True`: logits and targets of the labelled positions only, [N, vocab] / [N].
    label_targets: torch.LongTensor | None = None


class PrismaticPreTrainedModel(PreTrainedModel):
    config_class = PrismaticConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["VisionBackbone", "LlamaDecoderLayer", "MistralDecoderLayer", "PhiDecoderLayer",
                         "Qwen2DecoderLayer"]  # fmt: skip
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True


def _insert_positions(attention_mask: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
    """Index after which the patches go, per row: right after the first attended token."""
    if attention_mask is None:
        return torch.ones(batch, dtype=torch.long, device=device)
    left_pad = (attention_mask.long().cumsum(dim=1) == 0).sum(dim=1)
    return left_pad + 1


def _splice(text: torch.Tensor, patches: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """Per row b: text[b, :at[b]] ++ patches[b] ++ text[b, at[b]:] (any trailing feature dims)."""
    b, length = text.shape[:2]
    n = patches.shape[1]
    pos = torch.arange(length + n, device=text.device).unsqueeze(0).expand(b, -1)  # [B, L + N]
    at = at.unsqueeze(1)
    is_patch = (pos >= at) & (pos < at + n)
    text_idx = torch.where(pos < at, pos, pos - n).clamp(0, length - 1)
    patch_idx = (pos - at).clamp(0, n - 1)
    extra = text.shape[2:]
    gather = lambda src, idx: src.gather(1, idx.view(b, -1, *([1] * len(extra))).expand(b, -1, *extra))  # noqa: E731
    mask = is_patch.view(b, -1, *([1] * len(extra)))
    return torch.where(mask, gather(patches, patch_idx), gather(text, text_idx))


class PrismaticForConditionalGeneration(PrismaticPreTrainedModel, GenerationMixin):
    """Vision backbone -> projector -> causal LLM, with patches spliced in after BOS."""

    def __init__(self, config: PrismaticConfig) -> None:
        super().__init__(config)
        self.vision_backbone = VisionBackbone(
            config.timm_model_ids,
            config.image_sizes,
            config.timm_override_act_layers,
            config.timm_model_kwargs,
        )
        self.projector = PROJECTORS.get(config.projector_type)(
            self.vision_backbone.embed_dim, config.text_config.hidden_size
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()

    # -- Hugging Face plumbing -----------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    def _init_weights(self, module: nn.Module) -> None:
        # timm initialises its own modules (and our LayerScale starts at ones); the rest is HF's.
        if any(module is m for m in self.vision_backbone.modules()):
            return
        super()._init_weights(module)

    @property
    def num_patches(self) -> int:
        return self.vision_backbone.num_patches

    # -- forward -------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = None,
        position_ids: torch.LongTensor | None = None,
        output_projector_features: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
        return_label_logits: bool = False,
        **kwargs: Any,
    ) -> PrismaticCausalLMOutputWithPast:
        """Multimodal forward. With `labels` and `return_label_logits=True` (training), the LM head runs
        only on the labelled positions (8 per VLA sample instead of ~280), which saves most of the
        head's compute and memory; `logits` then holds those rows and `label_targets` their targets."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        batch, q_len = inputs_embeds.shape[:2]
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        n_patches = self.num_patches

        projected = None
        if pixel_values is not None and past_len == 0:
            if pixel_values.shape[0] != batch:
                raise ValueError(
                    f"pixel_values has {pixel_values.shape[0]} images but the text batch has {batch} rows; "
                    "pass one image per prompt"
                )
            patches = self.vision_backbone(pixel_values.to(inputs_embeds.dtype))
            projected = self.projector(patches)
            at = _insert_positions(attention_mask, batch, inputs_embeds.device)
            inputs_embeds = _splice(inputs_embeds, projected, at)
            if attention_mask is not None:
                ones = attention_mask.new_ones(batch, n_patches)
                attention_mask = _splice(attention_mask, ones, at)
            if labels is not None:
                ignore = labels.new_full((batch, n_patches), IGNORE_INDEX)
                labels = _splice(labels, ignore, at)
            position_ids = None  # text-space positions no longer apply
        elif attention_mask is not None and attention_mask.shape[1] == past_len + q_len - n_patches:
            # A later generation step: the caller's mask counts text tokens only, the cache also
            # holds the image patches. Re-insert them so mask, positions and cache agree.
            at = _insert_positions(attention_mask, batch, attention_mask.device)
            attention_mask = _splice(attention_mask, attention_mask.new_ones(batch, n_patches), at)
            position_ids = None

        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -inputs_embeds.shape[1] :]
            else:
                position_ids = torch.arange(past_len, past_len + inputs_embeds.shape[1], device=inputs_embeds.device)
                position_ids = position_ids.unsqueeze(0).expand(batch, -1)

        if labels is not None and return_label_logits:
            return self._label_only_forward(inputs_embeds, attention_mask, position_ids, labels, projected,
                                            output_projector_features, **kwargs)  # fmt: skip
        out = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            labels=labels,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        return PrismaticCausalLMOutputWithPast(
            loss=out.loss,
            logits=out.logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            projector_features=projected if output_projector_features else None,
        )

    def _label_only_forward(self, inputs_embeds, attention_mask, position_ids, labels, projected, keep_projected,
                            **kwargs: Any) -> PrismaticCausalLMOutputWithPast:  # fmt: skip
        hidden = self.get_decoder()(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
            **kwargs,
        ).last_hidden_state  # fmt: skip
        targets = labels[:, 1:]  # position t predicts token t + 1
        selected = targets != IGNORE_INDEX
        logits = self.get_output_embeddings()(hidden[:, :-1][selected])
        targets = targets[selected]
        loss = nn.functional.cross_entropy(logits.float(), targets) if targets.numel() else logits.sum() * 0.0
        return PrismaticCausalLMOutputWithPast(
            loss=loss, logits=logits, label_targets=targets, projector_features=projected if keep_projected else None
        )

    def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        inputs.pop("position_ids", None)  # text-space positions; forward derives the real ones
        return inputs


class OpenVLAForActionPrediction(PrismaticForConditionalGeneration):
    """A Prismatic VLM whose answers are discretised actions."""

    config_class = OpenVLAConfig

    def __init__(self, config: OpenVLAConfig) -> None:
        super().__init__(config)
        self.action_tokenizer = ActionTokenizer(vocab_size=config.base_vocab_size, n_bins=config.n_action_bins)

    @property
    def norm_stats(self) -> dict[str, Any]:
        return self.config.norm_stats or {}

    # -- statistics ----------------------------------------------------------------------------
    def resolve_unnorm_key(self, unnorm_key: str | None) -> str:
        return resolve_unnorm_key(self.norm_stats, unnorm_key)

    def get_action_stats(self, unnorm_key: str | None = None) -> dict[str, Any]:
        return self.norm_stats[self.resolve_unnorm_key(unnorm_key)]["action"]

    def get_action_dim(self, unnorm_key: str | None = None) -> int:
        return len(self.get_action_stats(unnorm_key)["q01"])

    # -- inference -----------------------------------------------------------------------------
    def _empty_token_id(self) -> int | None:
        if not self.config.empty_token_before_actions:
            return None
        spec = LLM_BACKBONES.get(self.config.llm_backbone_id) if self.config.llm_backbone_id in LLM_BACKBONES else None
        return spec.empty_token_id if spec is not None else None

    def _append_empty_token(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training saw `... Out:` + "▁" + action tokens; add the "▁" if the prompt lacks it."""
        empty = self._empty_token_id()
        if empty is None or bool(torch.all(input_ids[:, -1] == empty)):
            return input_ids, attention_mask
        column = torch.full((input_ids.shape[0], 1), empty, dtype=input_ids.dtype, device=input_ids.device)
        input_ids = torch.cat([input_ids, column], dim=1)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
        return input_ids, attention_mask

    @torch.inference_mode()
    def generate_action_tokens(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor,
        attention_mask: torch.Tensor | None = None,
        n_tokens: int = 7,
        do_sample: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        decode: str = "auto",
    ) -> torch.LongTensor:
        """A lean decoding loop: one prefill, then `n_tokens - 1` single-token steps on the KV cache.

        Equivalent to `generate(..., max_new_tokens=n_tokens)` (greedy by default) without its
        per-step machinery, which dominates latency for 7 tokens. `decode` picks the steps' path
        ("auto", "eager", "static", "graphs"; see `prismatic.models.decoding`); all give the same tokens.
        """
        mode = resolve_decode_mode(decode, self)
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: let attention take its causal fast path
        input_ids, attention_mask = self._append_empty_token(input_ids, attention_mask)
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        if mode != "eager":  # static KV cache (+ CUDA graphs)
            return decode_action_tokens(self, input_ids, pixel_values, attention_mask, n_tokens, mode, do_sample,
                                        temperature, generator)  # fmt: skip
        out = self(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, use_cache=True,
            logits_to_keep=1,
        )  # fmt: skip
        past, tokens = out.past_key_values, []
        if attention_mask is not None:  # extend to multimodal space once; then append a column per step
            at = _insert_positions(attention_mask, input_ids.shape[0], attention_mask.device)
            attention_mask = _splice(attention_mask, attention_mask.new_ones(input_ids.shape[0], self.num_patches), at)
        logits = out.logits[:, -1]
        for step in range(n_tokens):
            if do_sample:
                probs = torch.softmax(logits.float() / max(temperature, 1e-6), dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)
            else:
                nxt = logits.argmax(dim=-1, keepdim=True)
            tokens.append(nxt)
            if step == n_tokens - 1:
                break
            if attention_mask is not None:
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], 1)
            out = self(input_ids=nxt, attention_mask=attention_mask, past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1]
        return torch.cat(tokens, dim=1)

    def predict_action(
        self,
        input_ids: torch.LongTensor | None = None,
        unnorm_key: str | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        decode: str = "auto",
        **kwargs: Any,
    ) -> np.ndarray:
        """Actions for a processed batch: shape [action_dim] for one prompt, [batch, action_dim] for several.

        `vla.predict_action(**processor(prompt, image), unnorm_key="bridge_orig", do_sample=False)`.
        `decode="eager"` turns the fast decoding path off (`prismatic.models.decoding`).
        """
        if input_ids is None or pixel_values is None:
            raise ValueError("predict_action needs input_ids and pixel_values: pass **processor(prompt, image)")
        unknown = set(kwargs) - {"max_new_tokens", "use_cache", "token_type_ids"}
        if unknown:
            raise TypeError(f"predict_action got unexpected arguments: {sorted(unknown)}")
        if not torch.isfinite(pixel_values).all():
            raise ValueError("pixel_values holds NaN or infinite values: check the image and its preprocessing")
        key = self.resolve_unnorm_key(unnorm_key)
        dim = self.get_action_dim(key)
        ids = self.generate_action_tokens(
            input_ids.to(self.device), pixel_values, attention_mask.to(self.device) if attention_mask is not None else None,
            n_tokens=dim, do_sample=do_sample, temperature=temperature, decode=decode,
        )  # fmt: skip
        actions = self.decode_actions(ids.cpu().numpy(), key)
        return actions[0] if actions.shape[0] == 1 else actions

    def decode_actions(self, token_ids: np.ndarray, unnorm_key: str | None = None) -> np.ndarray:
        """Action token ids [..., action_dim] -> un-normalised actions (float64)."""
        key = self.resolve_unnorm_key(unnorm_key)
        stats = self.norm_stats[key]
        kind = NormalizationType.parse(stats.get("normalization_type", NormalizationType.BOUNDS_Q99))
        return unnormalize(self.action_tokenizer.decode(token_ids), stats["action"], kind)
