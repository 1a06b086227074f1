"""Build what training needs from a `TrainConfig`: the VLA (pretrained or randomly initialised) with
its processor, and the RLDS training stream with its batch transform and collator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from prismatic.data.torch_dataset import has_empty_piece
from prismatic.models.base_vlm import load_base_vlm, resolve_base_vlm
from prismatic.models.configuration import OpenVLAConfig
from prismatic.models.llm.backbones import LLM_BACKBONES, padded_vocab_size
from prismatic.models.load import build_processor, load_vla
from prismatic.models.modeling import OpenVLAForActionPrediction
from prismatic.models.vision.backbones import VISION_BACKBONES, featurizer_preprocess
from prismatic.models.vision.transforms import ImageTransform
from prismatic.models.vla import VLA
from prismatic.training.config import TrainConfig
from prismatic.training.distributed import DistInfo

BUNDLED_TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tokenizers" / "llama2"


def build_model_and_processor(cfg: TrainConfig, device: torch.device | str = "cpu") -> VLA:
    """The VLA on the CPU, except a quantised base (--lora.quantization), which is loaded onto `device`."""
    v = cfg.vla
    if v.base_vlm is not None:
        if cfg.lora.enabled and cfg.lora.quantization is not None:
            from prismatic.training.lora import quantization_config

            quantization = quantization_config(cfg.lora.quantization, device, cfg.parallel.mixed_precision)
            base = resolve_base_vlm(v.base_vlm, cfg.model_root)
            vla = load_vla(base, device, tokenizer=cfg.tokenizer, quantization_config=quantization,
                           new_action_modules=True, **v.head_settings())  # fmt: skip
        else:  # HF layout, our runs, or a released prismatic-vlms base (ViT weights from timm)
            vla = load_base_vlm(v.base_vlm, cfg.model_root, cfg.tokenizer, v.vision_weights, head_settings=v.head_settings())
        vla.model.train()
        return vla
    # Random initialisation (tiny models): architecture from the registries, test-sized if asked.
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer or BUNDLED_TOKENIZER)
    llm = LLM_BACKBONES.get(v.llm_backbone_id)
    vision = VISION_BACKBONES.get(v.vision_backbone_id)
    size = v.image_size or vision.image_size
    llm_kwargs, timm_kwargs = _reduced_sizes(v.size, llm.tiny, vision.tiny_kwargs())
    text = llm.text_config(
        vocab_size=padded_vocab_size(len(tokenizer)), pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=max(v.llm_max_length, 512), **llm_kwargs,
    )  # fmt: skip
    config = OpenVLAConfig(
        vision_backbone_id=v.vision_backbone_id, llm_backbone_id=v.llm_backbone_id, arch_specifier=v.arch_specifier,
        image_resize_strategy=v.image_resize_strategy, llm_max_length=v.llm_max_length, text_config=text.to_dict(),
        image_sizes=[size] * len(vision.featurizers), timm_model_kwargs=timm_kwargs,
        pad_token_id=tokenizer.pad_token_id, action_vocab_size=tokenizer.vocab_size, norm_stats={},
        empty_token_before_actions=has_empty_piece(tokenizer, llm.empty_token_id), **v.head_settings(),
    )  # fmt: skip
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model = OpenVLAForActionPrediction(config)
    model.vision_backbone.init_sincos_pos_embed()  # from scratch: patches must say where they are
    return VLA(model, build_processor(config, tokenizer))


def _reduced_sizes(size: str, llm_tiny: dict[str, Any], vision_tiny: list[dict[str, Any]]):
    """LLM config overrides and per-featurizer timm overrides for `tiny` / `small` (None, None: full size).

    `small` doubles the width and depth of `tiny`: still CPU-trainable. Both initialise the LLM (and the
    projector, which uses the text config's range) with std 1/sqrt(width): Llama's 0.02 is sized for
    width 4096 and leaves a narrow decoder too weak to route image patches to the action tokens.
    """
    if size == "full":
        return {}, None
    if size == "tiny":
        llm, vision = dict(llm_tiny), vision_tiny
    else:
        llm = {**llm_tiny, "hidden_size": 2 * llm_tiny["hidden_size"], "intermediate_size": 2 * llm_tiny["intermediate_size"],
               "num_hidden_layers": 2 * llm_tiny["num_hidden_layers"]}  # fmt: skip
        vision = [{**k, "embed_dim": 2 * k["embed_dim"], "depth": k["depth"] + 1} for k in vision_tiny]
    llm["initializer_range"] = llm["hidden_size"] ** -0.5
    return llm, vision


class TrainDataset(torch.utils.data.IterableDataset):
    """The RLDS stream as model inputs, with the collator and statistics training needs."""

    def __init__(self, inner: Any, collator: Any) -> None:
        self.inner, self.collator = inner, collator
        self.dataset_statistics = inner.dataset_statistics

    def __iter__(self):
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def build_train_dataset(cfg: TrainConfig, vla: VLA, info: DistInfo, skip: int = 0) -> TrainDataset:
    """The mixture's frame stream for this rank; `skip` frames already consumed (exact resume)."""
    from prismatic.data.augment import AugmentConfig
    from prismatic.data.pipeline import PipelineConfig
    from prismatic.data.torch_dataset import RLDSDataset

    model_cfg = vla.model.config
    image_size = model_cfg.image_sizes[0]
    transform, collator = sample_transform(vla)
    pipeline = PipelineConfig(
        resize_size=(image_size, image_size),
        shuffle_buffer_size=cfg.vla.shuffle_buffer_size,
        image_augment=AugmentConfig() if cfg.vla.image_aug else None,
        seed=cfg.seed,
        spec_files=tuple(str(p) for p in cfg.dataset_configs),
        # The model's data contract: its cameras, its proprio, chunks of chunk_len actions from each step.
        camera_views=tuple(model_cfg.cameras),
        load_proprio=model_cfg.proprio_dim > 0,
        future_action_window_size=model_cfg.chunk_len - 1,
        drop_incomplete_chunks=cfg.vla.drop_incomplete_chunks,
    )
    check_data_contract(model_cfg, cfg.vla.data_mix, pipeline.spec_files)  # before any data is read
    inner = RLDSDataset(cfg.data_root, cfg.vla.data_mix, transform, pipeline, train=True, rank=info.rank,
                        world_size=info.world_size, skip=skip)  # fmt: skip
    check_data_contract(model_cfg, cfg.vla.data_mix, pipeline.spec_files, inner.dataset_statistics)
    _record_normalization_types(inner.dataset_statistics, pipeline)
    return TrainDataset(inner, collator)


def check_data_contract(config: OpenVLAConfig, data_mix: str, spec_files=(), statistics: dict | None = None) -> None:
    """Every dataset of the mixture gives what the model reads: each camera, the proprio state, and (once
    `statistics` are known) actions and proprio of the model's sizes. One ConfigError lists every problem."""
    from prismatic.data.spec import resolve_mixture
    from prismatic.training.config import ConfigError

    problems = []
    for spec, _ in resolve_mixture(data_mix, spec_files):
        cams = [c for c in config.cameras if spec.image_obs_keys.get(c) is None]
        if cams:
            have = [k for k, v in spec.image_obs_keys.items() if v is not None]
            problems.append(f"dataset {spec.name!r} has no image for camera(s) {cams} (it has {have}); the model reads "
                            f"{list(config.cameras)}: set --vla.cameras or use a base VLM with these cameras")  # fmt: skip
        if config.proprio_dim and not any(k is not None for k in spec.proprio_obs_keys or ()):
            problems.append(f"dataset {spec.name!r} has no proprio_obs_keys; the model reads a {config.proprio_dim}-D "
                            "proprioceptive state: add them to its dataset entry or set --vla.proprio_dim 0")  # fmt: skip
        stats = (statistics or {}).get(spec.name)
        if stats is None:
            continue
        dim = len(stats["action"]["q01"])
        if config.action_dim is not None and dim != config.action_dim:
            problems.append(f"dataset {spec.name!r} has {dim}-D actions; the model predicts {config.action_dim}-D "
                            "(--vla.action_dim)")  # fmt: skip
        if config.proprio_dim and "proprio" in stats and len(stats["proprio"]["q01"]) != config.proprio_dim:
            problems.append(f"dataset {spec.name!r} has a {len(stats['proprio']['q01'])}-D proprio state; the model reads "
                            f"{config.proprio_dim}-D (--vla.proprio_dim)")  # fmt: skip
    if problems:
        raise ConfigError("the data does not fit the model:\n  - " + "\n  - ".join(problems))


def sample_transform(vla: VLA):
    """The frame -> model-input transform and the batch collator that training uses for this model: the
    model's `SampleEncoder` (the one `VLA.predict_*` uses) with the training image transform."""
    from prismatic.data.torch_dataset import PaddedCollator, RLDSBatchTransform
    from prismatic.models.sample_encoder import SampleEncoder

    c = vla.model.config
    spec = VISION_BACKBONES.get(c.vision_backbone_id)
    image_transform = ImageTransform(featurizer_preprocess(spec, c.image_resize_strategy, c.image_sizes[0]))
    tokenizer = vla.processor.tokenizer
    transform = RLDSBatchTransform(SampleEncoder.for_model(c, tokenizer, image_transform))
    collator = PaddedCollator(pad_token_id=tokenizer.pad_token_id, model_max_length=c.llm_max_length)
    return transform, collator


def _record_normalization_types(statistics: dict[str, Any], pipeline: Any) -> None:
    """Store each dataset's normalisation type with its statistics, so inference un-normalises the way
    training normalised (absent = BOUNDS_Q99, the original's only choice)."""
    from prismatic.data.spec import get_dataset_spec
    from prismatic.normalization import NormalizationType

    for name, stats in statistics.items():
        kind = pipeline.normalization_type or get_dataset_spec(name, pipeline.spec_files).normalization_type
        stats["normalization_type"] = NormalizationType.parse(kind).value
