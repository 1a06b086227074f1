"""Build a Prismatic VLM (`PrismaticForConditionalGeneration`) for a stage, and say where each weight group came from.

- full size, from scratch (the align stage, or a `no-align+` finetune): the ViT from timm's pretrained weights
  (`prismatic.models.vision.pretrained`), the LLM from its Hugging Face weights with the pad token and padded
  vocabulary (`prismatic.models.llm.loading.load_llm`), a fresh projector (PyTorch's default init, as the
  original's plain `nn.Module` projectors had);
- tiny / small: every group random (the VLA's `size: tiny` shapes, `prismatic.training.model_setup`);
- from a VLM run (`--pretrained_checkpoint`, `load_vlm`): the run's architecture and tokenizer, the groups its
  checkpoint holds, and the rest from the sources above.

`sources` maps each group to "checkpoint", "pretrained" or "random": a checkpoint keeps every group it did
not get from a pretrained source, so a run never depends on weights that exist nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from prismatic.models.configuration import PrismaticConfig
from prismatic.models.errors import CheckpointError
from prismatic.models.layouts import native_to_hf
from prismatic.models.llm.backbones import LLM_BACKBONES, padded_vocab_size
from prismatic.models.llm.loading import default_tokenizer_source, load_llm, load_tokenizer
from prismatic.models.load import load_state_dict_strict
from prismatic.models.modeling import PrismaticForConditionalGeneration
from prismatic.models.projectors import PROJECTORS
from prismatic.models.vision.backbones import VISION_BACKBONES, featurizer_preprocess
from prismatic.models.vision.pretrained import pretrained_vision_state
from prismatic.models.vision.transforms import ImageTransform
from prismatic.training.config import ConfigError
from prismatic.training.model_setup import _reduced_sizes
from prismatic.util.logging import get_logger
from prismatic.vlm.checkpoints import VLMCheckpoint, read_vlm_checkpoint, vlm_config
from prismatic.vlm.config import VLMModelConfig, VLMTrainConfig
from prismatic.vlm.stages import GROUPS

log = get_logger(__name__)
# The model fields a stage must share with the run it continues (the architecture comes from that run).
_SHARED_FIELDS = ("vision_backbone_id", "llm_backbone_id", "image_resize_strategy")


@dataclass
class BuiltVLM:
    model: PrismaticForConditionalGeneration
    tokenizer: Any
    sources: dict[str, str]  # group -> "checkpoint" | "pretrained" | "random"


def build_vlm(cfg: VLMTrainConfig) -> BuiltVLM:
    """The model a training stage starts from (fp32, on the CPU)."""
    m, pretrained = cfg.model, cfg.resolved_pretrained_checkpoint()
    if pretrained is not None:
        ckpt = read_vlm_checkpoint(pretrained)
        _check_same_model(m, ckpt)
        log.info(f"starting from {ckpt.checkpoint} (it holds: {', '.join(ckpt.groups)})")
        return vlm_from_checkpoint(ckpt, cfg.tokenizer, cfg.vision_weights, cfg.llm_weights,
                                   {"llm_max_length": m.llm_max_length})  # fmt: skip
    if m.size == "full":
        return pretrained_vlm(m, cfg.tokenizer, cfg.vision_weights, cfg.llm_weights, cfg.seed)
    return random_vlm(m, cfg.tokenizer, cfg.seed)


def image_transform_of(config: PrismaticConfig) -> ImageTransform:
    """Image -> `pixel_values` for a model config (the backbone's resize strategy and per-featurizer mean/std)."""
    spec = VISION_BACKBONES.get(config.vision_backbone_id)
    return ImageTransform(featurizer_preprocess(spec, config.image_resize_strategy, config.image_sizes[0]))


def _architecture(m: VLMModelConfig, text_config: dict, pad_token_id: int, timm_kwargs=None) -> PrismaticConfig:
    vision = VISION_BACKBONES.get(m.vision_backbone_id)
    size = m.image_size or vision.image_size
    return PrismaticConfig(
        vision_backbone_id=m.vision_backbone_id, llm_backbone_id=m.llm_backbone_id, arch_specifier=m.arch_specifier,
        image_resize_strategy=m.image_resize_strategy, llm_max_length=m.llm_max_length, text_config=text_config,
        image_sizes=[size] * len(vision.featurizers), timm_model_kwargs=timm_kwargs, pad_token_id=pad_token_id,
    )  # fmt: skip


def random_vlm(m: VLMModelConfig, tokenizer_dir: Path | None, seed: int) -> BuiltVLM:
    """A tiny / small VLM with random weights (the same shapes and initialisation as a tiny VLA's)."""
    llm, vision = LLM_BACKBONES.get(m.llm_backbone_id), VISION_BACKBONES.get(m.vision_backbone_id)
    tokenizer = load_tokenizer(m.llm_backbone_id, tokenizer_dir or default_tokenizer_source(llm), m.llm_max_length)
    llm_kwargs, timm_kwargs = _reduced_sizes(m.size, llm.tiny, vision.tiny_kwargs())
    text = llm.text_config(vocab_size=padded_vocab_size(len(tokenizer)), pad_token_id=tokenizer.pad_token_id,
                           max_position_embeddings=max(m.llm_max_length, 512), **llm_kwargs)  # fmt: skip
    config = _architecture(m, text.to_dict(), tokenizer.pad_token_id, timm_kwargs)
    torch.manual_seed(seed)
    model = PrismaticForConditionalGeneration(config)
    model.vision_backbone.init_sincos_pos_embed()  # from scratch: patches must say where they are
    return BuiltVLM(model, tokenizer, dict.fromkeys(GROUPS, "random"))


def pretrained_vlm(m: VLMModelConfig, tokenizer_dir: Path | None, vision_weights: Path | None,
                   llm_weights: str | None, seed: int) -> BuiltVLM:  # fmt: skip
    """A full-size VLM from its pretrained ViT(s) and LLM, with a fresh projector."""
    log.info(f"loading the LLM {m.llm_backbone_id} from {llm_weights or LLM_BACKBONES.get(m.llm_backbone_id).hf_hub_id}")
    llm, tokenizer = load_llm(m.llm_backbone_id, llm_weights, m.llm_max_length)
    if tokenizer_dir is not None:
        tokenizer = load_tokenizer(m.llm_backbone_id, tokenizer_dir, m.llm_max_length)
    config = _architecture(m, llm.config.to_dict(), tokenizer.pad_token_id)
    weights = {f"language_model.{k}": v for k, v in llm.state_dict().items()}
    log.info(f"loading the pretrained weights of {m.vision_backbone_id}")
    weights.update(pretrained_vision_state(config, vision_weights))
    weights.update(fresh_projector_state(config, seed))
    model = _materialise(config, weights)
    return BuiltVLM(model, tokenizer, {"vision_backbone": "pretrained", "projector": "random", "llm_backbone": "pretrained"})


def fresh_projector_state(config: PrismaticConfig, seed: int) -> dict[str, torch.Tensor]:
    from prismatic.models.vision.backbones import VisionBackbone

    with torch.device("meta"):
        embed_dim = VisionBackbone(config.timm_model_ids, config.image_sizes, config.timm_override_act_layers,
                                   config.timm_model_kwargs).embed_dim  # fmt: skip
    torch.manual_seed(seed)
    projector = PROJECTORS.get(config.projector_type)(embed_dim, config.text_config.hidden_size)
    return {f"projector.{k}": v for k, v in projector.state_dict().items()}


def vlm_from_checkpoint(
    ckpt: VLMCheckpoint | str | Path,
    tokenizer_dir: Path | None = None,
    vision_weights: Path | None = None,
    llm_weights: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> BuiltVLM:
    """A VLM run (or a prismatic-vlms release): its architecture and groups, the missing ones from their sources."""
    ckpt = read_vlm_checkpoint(ckpt) if not isinstance(ckpt, VLMCheckpoint) else ckpt
    arch = {**ckpt.arch, **(overrides or {})}
    llm_id = arch["llm_backbone_id"]
    source = tokenizer_dir or ckpt.tokenizer_dir or default_tokenizer_source(LLM_BACKBONES.get(llm_id))
    tokenizer = load_tokenizer(llm_id, source, int(arch.get("llm_max_length", 2048)))
    rows = ckpt.embedding_rows()
    config = vlm_config(arch, tokenizer, rows)
    if config.text_config.vocab_size != padded_vocab_size(len(tokenizer), config.pad_to_multiple_of):
        raise CheckpointError(
            f"the tokenizer from {source} has {len(tokenizer)} tokens (pad token included), padded to "
            f"{padded_vocab_size(len(tokenizer), config.pad_to_multiple_of)} embedding rows, but {ckpt.run_dir}'s LLM has "
            f"{config.text_config.vocab_size}: pass the tokenizer it was trained with (--tokenizer DIR)"
        )
    sources, state = {}, {g: ckpt.groups.get(g, {}) for g in GROUPS}
    weights = native_to_hf(state, config.vision_backbone_id, config.projector_type)
    for group in GROUPS:
        sources[group] = "checkpoint" if ckpt.groups.get(group) else "pretrained"
    if sources["projector"] != "checkpoint":
        raise CheckpointError(f"{ckpt.checkpoint} has no projector weights (it holds: {', '.join(ckpt.groups) or 'nothing'})")
    if sources["llm_backbone"] == "pretrained":
        log.info(f"{ckpt.checkpoint} holds no LLM (an align run): loading {llm_id} from its pretrained weights")
        llm, _ = load_llm(llm_id, llm_weights, config.llm_max_length)
        if llm.config.vocab_size != config.text_config.vocab_size:
            raise CheckpointError(f"the LLM from {llm_weights or llm_id} has {llm.config.vocab_size} embedding rows, "
                                  f"{ckpt.run_dir} was trained with {config.text_config.vocab_size}")  # fmt: skip
        weights.update({f"language_model.{k}": v for k, v in llm.state_dict().items()})
    if sources["vision_backbone"] == "pretrained":  # (a release; a full-size align or finetune run)
        weights.update(pretrained_vision_state(config, vision_weights))
    return BuiltVLM(_materialise(config, weights), tokenizer, sources)


def _materialise(config: PrismaticConfig, weights: dict[str, torch.Tensor]) -> PrismaticForConditionalGeneration:
    """The model with exactly `weights` (every tensor named; tied embeddings stay one parameter)."""
    with torch.device("meta"):
        model = PrismaticForConditionalGeneration(config)
    load_state_dict_strict(model, weights)
    _tie(model.language_model)
    return model


def _tie(llm: nn.Module) -> None:
    """`load_state_dict(assign=True)` gives tied input and output embeddings two parameters: make them one again."""
    if getattr(llm.config, "tie_word_embeddings", False):
        llm.get_output_embeddings().weight = llm.get_input_embeddings().weight


def _check_same_model(m: VLMModelConfig, ckpt: VLMCheckpoint) -> None:
    """The stage continues `ckpt`'s model: the ids it names must be the same (its architecture is then used)."""
    wanted = {**{k: getattr(m, k) for k in _SHARED_FIELDS}, "projector": m.arch_specifier.split("+")[-1]}
    have = {**{k: ckpt.arch.get(k) for k in _SHARED_FIELDS}, "projector": str(ckpt.arch.get("arch_specifier")).split("+")[-1]}
    if m.image_size is not None:
        wanted["image_size"], have["image_size"] = m.image_size, (ckpt.arch.get("image_sizes") or [None])[0]
    diff = [f"{k}: {have[k]!r} there, {wanted[k]!r} here" for k in wanted if wanted[k] != have[k]]
    if diff:
        raise ConfigError(
            f"--pretrained_checkpoint {ckpt.run_dir} is another model ({'; '.join(diff)}): pass the --model flags "
            "(or --model.type) it was trained with"
        )
