"""The Prismatic VLM and the OpenVLA VLA as Hugging Face `PreTrainedModel`s.

One implementation serves training, inference and the Hugging Face layout: the module names
(`vision_backbone.featurizer`, `projector.fc1`, `language_model.model.layers.0...`) are those of the
official openvla-7b checkpoint, so `from_pretrained` reads it as is and `save_pretrained` writes it.

Image patches are inserted right after the first real token (BOS) of each row:
`[BOS, patch_1 .. patch_N, rest of the prompt]` (with several cameras, every camera's patches in order, then
the proprio token if the model reads one). How actions are represented, attended to, trained and decoded is
the action head's business (`prismatic.models.heads`, `config.action_head`). Left padding is supported (generation with
batches), and positions are always derived from the multimodal attention mask, so the cache, the
positions and the mask stay consistent whatever `generate` passes in. That bookkeeping is exactly
what broke the original on transformers >= 4.50, where the same action came out for every image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
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
from prismatic.models.heads import ACTION_HEADS, ActionHead, HeadOutput, bidirectional_mask
from prismatic.models.projectors import PROJECTORS, ProprioProjector
from prismatic.models.sample_encoder import complete_inference_ids
from prismatic.models.vision.backbones import VisionBackbone
from prismatic.normalization import NormalizationType, normalize, resolve_unnorm_key, unnormalize

logger = logging.getLogger(__name__)


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
    # With `return_label_logits=True`: everything the action head computed (its `metrics` read it).
    head_output: HeadOutput | None = None


@dataclass
class _Multimodal:
    """The LLM's inputs after the image patches (and proprio token) are spliced in after BOS."""

    embeds: torch.Tensor  # [B, S, H]
    attention_mask: torch.Tensor | None  # [B, S] padding mask (None: no padding)
    position_ids: torch.Tensor  # [B, q_len]
    labels: torch.Tensor | None  # [B, S]
    action_mask: torch.Tensor | None  # [B, S] action slots
    projected: torch.Tensor | None  # [B, N, H] the inserted prefix tokens (first forward only)


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
            num_images=getattr(config, "num_images", 1),
        )
        self.projector = PROJECTORS.get(config.projector_type)(
            self.vision_backbone.embed_dim, config.text_config.hidden_size
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self._build_action_modules(config)
        self.post_init()

    def _build_action_modules(self, config: PrismaticConfig) -> None:
        """Modules a VLA adds (the proprio projector, the action head); a plain VLM has none."""

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
        """Tokens inserted after BOS: the patches of every camera image (and the proprio token, if any)."""
        return self.vision_backbone.num_patches * self.vision_backbone.num_images + self._num_extra_prefix_tokens

    _num_extra_prefix_tokens = 0

    def _prefix(self, pixel_values: torch.Tensor, proprio: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """Projected patches of every camera, [B, num_images x patches, H] (VLAs append the proprio token)."""
        if proprio is not None:
            raise ValueError("this model takes no proprioceptive state (config.proprio_dim = 0); drop `proprio`")
        return self.projector(self.vision_backbone(pixel_values.to(dtype)))

    def _attention_mask(self, attention_mask: torch.Tensor | None, embeds: torch.Tensor, cached: bool):
        """What the decoder gets as `attention_mask`: the 2-D padding mask (the LLM applies its causal mask)."""
        return attention_mask

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
        proprio: torch.FloatTensor | None = None,
        action_mask: torch.BoolTensor | None = None,
        actions: torch.FloatTensor | None = None,
        output_projector_features: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
        return_label_logits: bool = False,
        image_mask: torch.BoolTensor | None = None,
        **kwargs: Any,
    ) -> PrismaticCausalLMOutputWithPast:
        """Multimodal forward. With `labels` and `return_label_logits=True` (training), the action head
        computes the loss from the last hidden states: token heads run the LM head only on the labelled
        positions (8 per OpenVLA sample instead of ~280), which saves most of its compute and memory;
        `logits` then holds those rows, `label_targets` their targets, `head_output` all of it.

        `proprio` [B, P] (normalised), `action_mask` [B, L] (text positions of the action slots) and
        `actions` [B, T, D] (normalised ground truth) are what the VLA heads read; see `prismatic.models.heads`.
        `image_mask` [B] (VLM training on mixed batches): rows without an image get placeholder pixels whose
        patches are masked out, so they attend and are positioned as if no patches were there."""
        mm = self._multimodal(input_ids, inputs_embeds, attention_mask, pixel_values, labels, past_key_values,
                              position_ids, proprio, action_mask, image_mask)  # fmt: skip
        cached = past_key_values is not None and past_key_values.get_seq_length() > 0
        mask = self._attention_mask(mm.attention_mask, mm.embeds, cached)
        keep_projected = mm.projected if output_projector_features else None
        if labels is not None and return_label_logits:
            hidden = self.get_decoder()(
                inputs_embeds=mm.embeds, attention_mask=mask, position_ids=mm.position_ids, use_cache=False, **kwargs
            ).last_hidden_state
            out = self._head_output(hidden, mm, actions)
            return PrismaticCausalLMOutputWithPast(loss=out.loss, logits=out.logits, label_targets=out.targets,
                                                   head_output=out, projector_features=keep_projected)  # fmt: skip
        out = self.language_model(
            inputs_embeds=mm.embeds,
            attention_mask=mask,
            position_ids=mm.position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            labels=mm.labels,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        return PrismaticCausalLMOutputWithPast(
            loss=out.loss,
            logits=out.logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            projector_features=keep_projected,
        )

    def last_hidden_state(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor,
        attention_mask: torch.Tensor | None = None,
        proprio: torch.FloatTensor | None = None,
        action_mask: torch.BoolTensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The decoder's last-layer (normed) hidden states [B, S, H] of the multimodal sequence, and the
        action-slot mask in the same positions [B, S] (what parallel heads read)."""
        mm = self._multimodal(input_ids, None, attention_mask, pixel_values, None, None, None, proprio, action_mask)
        mask = self._attention_mask(mm.attention_mask, mm.embeds, cached=False)
        hidden = self.get_decoder()(
            inputs_embeds=mm.embeds, attention_mask=mask, position_ids=mm.position_ids, use_cache=False, **kwargs
        ).last_hidden_state
        return hidden, mm.action_mask

    def _head_output(self, hidden: torch.Tensor, mm: _Multimodal, actions: torch.Tensor | None) -> HeadOutput:
        from prismatic.models.heads.bins import token_training_output

        return token_training_output(self, hidden, mm.labels)

    def _multimodal(self, input_ids, inputs_embeds, attention_mask, pixel_values, labels, past_key_values,
                    position_ids, proprio, action_mask, image_mask=None) -> _Multimodal:  # fmt: skip
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        batch, q_len = inputs_embeds.shape[:2]
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        n_prefix = self.num_patches
        if action_mask is not None and self._zero_action_embeddings:
            # The slots carry no information of their own (placeholders at inference, the answer in training).
            inputs_embeds = inputs_embeds.masked_fill(action_mask.bool().unsqueeze(-1), 0.0)

        projected = None
        if pixel_values is not None and past_len == 0:
            if pixel_values.shape[0] != batch:
                raise ValueError(
                    f"pixel_values has {pixel_values.shape[0]} images but the text batch has {batch} rows; "
                    "pass one image per prompt"
                )
            projected = self._prefix(pixel_values, proprio, inputs_embeds.dtype)
            at = _insert_positions(attention_mask, batch, inputs_embeds.device)
            inputs_embeds = _splice(inputs_embeds, projected, at)
            if image_mask is not None:  # text-only rows: their (placeholder) patches are never attended to
                if attention_mask is None:
                    attention_mask = torch.ones(batch, q_len, dtype=torch.long, device=inputs_embeds.device)
                prefix = image_mask.to(attention_mask.device, attention_mask.dtype)[:, None].expand(-1, n_prefix)
                attention_mask = _splice(attention_mask, prefix, at)
            elif attention_mask is not None:
                attention_mask = _splice(attention_mask, attention_mask.new_ones(batch, n_prefix), at)
            if labels is not None:
                labels = _splice(labels, labels.new_full((batch, n_prefix), IGNORE_INDEX), at)
            if action_mask is not None:
                action_mask = _splice(action_mask.bool(), action_mask.new_zeros(batch, n_prefix, dtype=torch.bool), at)
            position_ids = None  # text-space positions no longer apply
        elif attention_mask is not None and attention_mask.shape[1] == past_len + q_len - n_prefix:
            # A later generation step: the caller's mask counts text tokens only, the cache also
            # holds the image patches. Re-insert them so mask, positions and cache agree.
            at = _insert_positions(attention_mask, batch, attention_mask.device)
            attention_mask = _splice(attention_mask, attention_mask.new_ones(batch, n_prefix), at)
            position_ids = None

        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -inputs_embeds.shape[1] :]
            else:
                position_ids = torch.arange(past_len, past_len + inputs_embeds.shape[1], device=inputs_embeds.device)
                position_ids = position_ids.unsqueeze(0).expand(batch, -1)
        return _Multimodal(inputs_embeds, attention_mask, position_ids, labels, action_mask, projected)

    _zero_action_embeddings = False

    def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        inputs.pop("position_ids", None)  # text-space positions; forward derives the real ones
        return inputs


class OpenVLAForActionPrediction(PrismaticForConditionalGeneration):
    """A Prismatic VLM whose answers are actions, in the formulation of its action head
    (`config.action_head`: `bins` = OpenVLA, `l1-regression` / `bins-parallel` = OpenVLA-OFT)."""

    config_class = OpenVLAConfig
    # Their weights may come from OpenVLA-OFT's separate files (`from_pretrained` below), not the safetensors.
    _keys_to_ignore_on_load_missing = [r"^action_head\.", r"^proprio_projector\."]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any):
        """`PreTrainedModel.from_pretrained`, plus OpenVLA-OFT's release files in a local directory: the
        action head and proprio projector from `*--<step>_checkpoint.pt`, statistics from
        dataset_statistics.json (`prismatic.models.oft`). Pass the settings no file records as config
        overrides, e.g. `from_pretrained(path, **prismatic.models.oft.OFT_LIBERO)`."""
        from prismatic.models import oft

        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        path = Path(str(pretrained_model_name_or_path))
        if path.is_dir():
            missing = oft.attach_release_components(model, path)
            if missing:
                logger.warning("%s has no weights for %s: they are freshly initialised", path, ", ".join(missing))
            if model.config.action_head == "bins" and oft.has_release_components(path):
                logger.warning(oft.settings_hint(path))
        return loaded

    def _build_action_modules(self, config: OpenVLAConfig) -> None:
        hidden = config.text_config.hidden_size
        # One token after the patches (OpenVLA-OFT); `proprio_projector.fc{1,2}` as in its checkpoints.
        self.proprio_projector = ProprioProjector(config.proprio_dim, hidden) if config.proprio_dim else None
        self.action_head: ActionHead = ACTION_HEADS.get(config.action_head)(config)

    def _init_weights(self, module: nn.Module) -> None:
        # The head and proprio projector start from PyTorch's default init, as OpenVLA-OFT's do.
        own = [m for root in (self.action_head, self.proprio_projector) if root is not None for m in root.modules()]
        if any(module is m for m in own):
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            return
        super()._init_weights(module)

    @property
    def action_tokenizer(self) -> ActionTokenizer:
        return self.action_head.action_tokenizer

    @property
    def _num_extra_prefix_tokens(self) -> int:
        return 1 if self.proprio_projector is not None else 0

    @property
    def _zero_action_embeddings(self) -> bool:
        return self.action_head.zero_action_embeddings

    def _prefix(self, pixel_values: torch.Tensor, proprio: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        projected = self.projector(self.vision_backbone(pixel_values.to(dtype)))
        if self.proprio_projector is None:
            if proprio is not None:
                raise ValueError("this model takes no proprioceptive state (config.proprio_dim = 0); drop `proprio`")
            return projected
        if proprio is None:
            raise ValueError(f"this model reads a {self.config.proprio_dim}-D proprioceptive state: pass `proprio`")
        proprio = proprio.to(device=projected.device, dtype=dtype).reshape(projected.shape[0], -1)
        if proprio.shape[1] != self.config.proprio_dim:
            raise ValueError(f"proprio has {proprio.shape[1]} values per sample, the model reads {self.config.proprio_dim}")
        return torch.cat([projected, self.proprio_projector(proprio).unsqueeze(1)], dim=1)

    def _attention_mask(self, attention_mask: torch.Tensor | None, embeds: torch.Tensor, cached: bool):
        if not self.action_head.bidirectional:
            return attention_mask
        if cached:
            raise ValueError(f"the {self.config.action_head!r} head attends bidirectionally: it decodes in one pass, without a cache")
        if self.config.text_config._attn_implementation not in ("sdpa", "eager"):
            raise ValueError(
                f"the {self.config.action_head!r} head needs a 4-D attention mask, which the "
                f"{self.config.text_config._attn_implementation!r} attention does not take; load with attn_implementation='sdpa'"
            )
        if attention_mask is None:
            attention_mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return bidirectional_mask(attention_mask, embeds.dtype)

    def _head_output(self, hidden: torch.Tensor, mm, actions: torch.Tensor | None) -> HeadOutput:
        return self.action_head.training_output(self, hidden, mm.labels, mm.action_mask, actions)

    @property
    def norm_stats(self) -> dict[str, Any]:
        return self.config.norm_stats or {}

    # -- statistics ----------------------------------------------------------------------------
    def resolve_unnorm_key(self, unnorm_key: str | None) -> str:
        return resolve_unnorm_key(self.norm_stats, unnorm_key)

    def get_action_stats(self, unnorm_key: str | None = None) -> dict[str, Any]:
        return self.norm_stats[self.resolve_unnorm_key(unnorm_key)]["action"]

    def get_action_dim(self, unnorm_key: str | None = None) -> int:
        if self.config.action_dim is not None:
            return int(self.config.action_dim)
        return len(self.get_action_stats(unnorm_key)["q01"])

    def _normalization_type(self, key: str) -> NormalizationType:
        return NormalizationType.parse(self.norm_stats[key].get("normalization_type", NormalizationType.BOUNDS_Q99))

    def normalize_proprio(self, proprio: Any, unnorm_key: str | None = None) -> torch.Tensor:
        """Raw proprioceptive state [B, P] -> what the model reads, with the dataset's `proprio` statistics
        (the training pipeline's formula: BOUNDS_Q99 maps [q01, q99] to [-1, 1] and clips)."""
        key = self.resolve_unnorm_key(unnorm_key)
        stats = self.norm_stats[key].get("proprio")
        if stats is None:
            raise KeyError(f"the statistics of {key!r} have no 'proprio' entry; the model needs them to normalise proprio")
        raw = np.asarray(proprio.detach().cpu() if isinstance(proprio, torch.Tensor) else proprio, dtype=np.float64)
        raw = raw.reshape(-1, raw.shape[-1]) if raw.ndim else raw.reshape(1, 1)
        if raw.shape[-1] != self.config.proprio_dim:
            raise ValueError(f"proprio has {raw.shape[-1]} values per sample, the model reads {self.config.proprio_dim}")
        if not np.all(np.isfinite(raw)):
            raise ValueError(f"proprio must be finite, got {raw.tolist()}")
        return torch.as_tensor(normalize(raw, stats, self._normalization_type(key)), dtype=torch.float32)

    # -- inference -----------------------------------------------------------------------------
    def _append_empty_token(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training saw `... Out:` + "▁" + action tokens; add the "▁" if the prompt lacks it."""
        ids, mask, _ = complete_inference_ids(input_ids, attention_mask, self.config.empty_token_id, 0, 0)
        return ids, mask

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
        proprio: torch.FloatTensor | None = None,
    ) -> torch.LongTensor:
        """A lean decoding loop: one prefill, then `n_tokens - 1` single-token steps on the KV cache.

        Equivalent to `generate(..., max_new_tokens=n_tokens)` (greedy by default) without its
        per-step machinery, which dominates latency for 7 tokens. Causal heads only. `decode` picks the steps'
        path ("auto", "eager", "static", "graphs"; see `prismatic.models.decoding`); all give the same tokens.
        """
        if self.action_head.bidirectional:
            raise ValueError(f"the {self.config.action_head!r} head predicts all slots in one pass; use predict_chunk")
        mode = resolve_decode_mode(decode, self)
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: let attention take its causal fast path
        input_ids, attention_mask = self._append_empty_token(input_ids, attention_mask)
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        if mode != "eager":  # static KV cache (+ CUDA graphs)
            return decode_action_tokens(self, input_ids, pixel_values, attention_mask, n_tokens, mode, do_sample,
                                        temperature, generator, proprio=proprio)  # fmt: skip
        out = self(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, use_cache=True,
            logits_to_keep=1, proprio=proprio,
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

    def complete_inference_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Processor output (prompt up to "Out:") -> the ids the model reads: + the empty "▁" token (unless
        already last) + for parallel heads K x D placeholders and the stop token; and the slot mask."""
        slots = self.action_head.num_slots() if self.action_head.parallel else 0
        return complete_inference_ids(input_ids, attention_mask, self.config.empty_token_id, slots, self.config.stop_token_id)

    @torch.inference_mode()
    def predict_normalized_chunk(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor,
        attention_mask: torch.Tensor | None = None,
        proprio: torch.Tensor | None = None,
        action_mask: torch.Tensor | None = None,
        action_dim: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Normalised actions [B, chunk_len, D] from complete inputs (ids with their action slots, `proprio`
        already normalised): the action head's prediction, nothing else."""
        if self.action_head.parallel and action_mask is None:
            raise ValueError("parallel heads read complete inputs: build them with complete_inference_ids / SampleEncoder")
        if not torch.isfinite(pixel_values).all():
            raise ValueError("pixel_values holds NaN or infinite values: check the image and its preprocessing")
        inputs = {
            "input_ids": input_ids.to(self.device),
            "pixel_values": pixel_values.to(device=self.device, dtype=self.dtype),
            "attention_mask": attention_mask.to(self.device) if attention_mask is not None else None,
            "proprio": proprio.to(self.device) if proprio is not None else None,
            "action_mask": action_mask.to(self.device) if action_mask is not None else None,
        }
        return self.action_head.predict(self, inputs, action_dim or self.get_action_dim(), **kwargs)

    def predict_chunk(
        self,
        input_ids: torch.LongTensor | None = None,
        unnorm_key: str | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        proprio: Any = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        decode: str = "auto",
        **kwargs: Any,
    ) -> np.ndarray:
        """Un-normalised action chunks [B, chunk_len, action_dim] (float64) for a processed batch.

        `vla.predict_chunk(**processor(prompt, image), unnorm_key=..., proprio=raw_state)`; `pixel_values`
        holds the cameras side by side on channels (config.cameras order), `proprio` is the raw state."""
        if input_ids is None or pixel_values is None:
            raise ValueError("predict_chunk needs input_ids and pixel_values: pass **processor(prompt, image)")
        unknown = set(kwargs) - {"max_new_tokens", "use_cache", "token_type_ids"}
        if unknown:
            raise TypeError(f"predict_chunk got unexpected arguments: {sorted(unknown)}")
        key = self.resolve_unnorm_key(unnorm_key)
        ids, mask, slots = self.complete_inference_ids(input_ids, attention_mask)
        state = self.normalize_proprio(proprio, key) if proprio is not None else None
        extra = {} if self.action_head.parallel else {"do_sample": do_sample, "temperature": temperature, "decode": decode}
        chunk = self.predict_normalized_chunk(ids, pixel_values, mask, state, slots, self.get_action_dim(key), **extra)
        return self.unnormalize_actions(chunk.cpu().numpy(), key)

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
        """The next action: shape [action_dim] for one prompt, [batch, action_dim] for several (a chunk
        head's first step; `predict_chunk` returns all of them).

        `vla.predict_action(**processor(prompt, image), unnorm_key="bridge_orig", do_sample=False)`.
        `decode="eager"` turns the fast decoding path off (`prismatic.models.decoding`).
        """
        if input_ids is None or pixel_values is None:
            raise ValueError("predict_action needs input_ids and pixel_values: pass **processor(prompt, image)")
        actions = self.predict_chunk(input_ids, unnorm_key, pixel_values, attention_mask, do_sample=do_sample,
                                     temperature=temperature, decode=decode, **kwargs)[:, 0]  # fmt: skip
        return actions[0] if actions.shape[0] == 1 else actions

    def unnormalize_actions(self, normalized: np.ndarray, unnorm_key: str | None = None) -> np.ndarray:
        """Normalised actions [..., action_dim] -> the dataset's units (float64)."""
        key = self.resolve_unnorm_key(unnorm_key)
        return unnormalize(np.asarray(normalized, dtype=np.float64), self.norm_stats[key]["action"], self._normalization_type(key))

    def decode_actions(self, token_ids: np.ndarray, unnorm_key: str | None = None) -> np.ndarray:
        """Action token ids [..., action_dim] -> un-normalised actions (float64)."""
        return self.unnormalize_actions(self.action_tokenizer.decode(token_ids), unnorm_key)
