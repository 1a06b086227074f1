"""The VLM stages on the shared training loop: `VLMTask` is what a VLM sample is and what a VLM run keeps.

    train_vlm(cfg)   # = prismatic.training.trainer.run(cfg, task=VLMTask(cfg))

Same loop as VLA training (gradient accumulation, FSDP, exact resume, trackers, atomic checkpoints). Per stage
(`prismatic.vlm.stages`): which groups train, the recipe (`cfg.optim`), the sample format, and what the
checkpoint holds: the groups the stage trained plus any it did not get from a pretrained source
(`prismatic.vlm.build`). A `lora-finetune` checkpoint holds the merged weights (base + scale * B @ A), so
every VLM run loads the same way and can be the base of a VLA.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from prismatic.models.layouts import hf_to_native, native_arch_section
from prismatic.training.checkpoint import CheckpointManager, TrainerState
from prismatic.training.config import LoRAConfig
from prismatic.training.distributed import DistInfo
from prismatic.training.task import TrainingTask
from prismatic.training.trainer import run
from prismatic.util.logging import get_logger
from prismatic.vlm.build import build_vlm, image_transform_of
from prismatic.vlm.checkpoints import TASK
from prismatic.vlm.config import VLMTrainConfig
from prismatic.vlm.conversation import ConversationEncoder
from prismatic.vlm.data import ConversationDataset, load_conversations
from prismatic.vlm.stages import GROUPS, VLMStage

log = get_logger(__name__)


def group_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The native checkpoint's weight groups as the model's modules."""
    return {"vision_backbone": model.vision_backbone, "projector": model.projector, "llm_backbone": model.language_model}


class VLMTask(TrainingTask):
    def __init__(self, cfg: VLMTrainConfig) -> None:
        self.cfg = cfg
        self.model = self.tokenizer = self.entries = None
        self.sources: dict[str, str] = {}

    @property
    def stage(self) -> VLMStage:
        return self.cfg.stage_spec  # (an unknown --stage is reported by cfg.validate, with the choices)

    @property
    def lora(self) -> LoRAConfig | None:
        return self.cfg.lora if self.stage.lora_on else None

    @property
    def saved_groups(self) -> tuple[str, ...]:
        """What the checkpoint holds: what this stage trains, and whatever has no pretrained source."""
        trained = set(self.stage.trains) | set(self.stage.lora_on)
        return tuple(g for g in GROUPS if g in trained or self.sources.get(g) != "pretrained")

    def build_model(self, device: torch.device) -> nn.Module:
        json_path, image_dir = self.cfg.data_paths
        log.info(f"reading {json_path}")
        self.entries = load_conversations(json_path, image_dir, self.stage.sample_format)  # before the model
        built = build_vlm(self.cfg)
        self.model, self.tokenizer, self.sources = built.model, built.tokenizer, built.sources
        return self.model

    def config_record(self, record: dict[str, Any]) -> dict[str, Any]:
        record["model_config"] = {"type": self.cfg.model.model_id, **record.pop("model")}  # the registry entry + recipes
        record["model"] = native_arch_section(self.model.config)  # what load_vlm / --vla.base_vlm rebuild it from
        record["task"] = TASK
        record["weights"] = {"sources": self.sources, "in_checkpoint": list(self.saved_groups)}
        return record

    def build_dataset(self, info: DistInfo, skip: int = 0) -> ConversationDataset:
        c = self.model.config
        encoder = ConversationEncoder(self.tokenizer, c.prompt_builder, c.llm_max_length)
        return ConversationDataset(self.entries, self.cfg.data_paths[1], encoder, image_transform_of(c),
                                   self.stage.sample_format, seed=self.cfg.seed, rank=info.rank,
                                   world_size=info.world_size, skip=skip)  # fmt: skip

    def write_run_files(self, run_dir: Path) -> None:
        self.tokenizer.save_pretrained(run_dir / "tokenizer")

    def prepare_parameters(self, model: nn.Module, info: DistInfo) -> tuple[nn.Module, int, str]:
        for name, module in group_modules(model).items():
            module.requires_grad_(name in self.stage.trains)
        for module in model.vision_backbone.unused_modules():  # never in the forward: no gradient, no optimizer state
            module.requires_grad_(False)
        if self.lora is not None:
            from prismatic.training.lora import wrap_with_lora

            torch.manual_seed(self.cfg.seed)  # the same adapters on every rank
            model = wrap_with_lora(model, self.lora, full_modules=("projector",), frozen_modules=("vision_backbone",))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        what = " + ".join([*self.stage.trains, *(f"LoRA({g})" for g in self.stage.lora_on)])
        return model, trainable, f"stage {self.stage.name}: {what}"

    def metrics(self, out: Any, dataset_names: Sequence[str] | None) -> dict[str, float]:
        """Next-token accuracy on the labelled (answer) tokens."""
        head = out.head_output
        if head.targets is None or head.targets.numel() == 0:
            return {}
        return {"token_accuracy": float((head.logits.detach().argmax(-1) == head.targets).float().mean())}

    def save_weights(self, model: nn.Module, ckpt: CheckpointManager, state: TrainerState) -> None:
        if not self.cfg.checkpoint.save_native:
            return
        full = ckpt.full_model_state(model)  # collective: every rank gathers
        if full is None:
            return
        if self.lora is not None:
            full = merged_lora_state(full, self.lora)
        c = self.model.config
        native = hf_to_native(full, c.vision_backbone_id, c.projector_type)
        ckpt.save_native_weights({g: native[g] for g in self.saved_groups}, state)


_PEFT_PREFIX = "base_model.model."


def merged_lora_state(state: dict[str, torch.Tensor], lora: LoRAConfig) -> dict[str, torch.Tensor]:
    """A peft-wrapped model's state dict -> the plain model's, adapters merged: W + (alpha / r) * B @ A (peft's
    LoRA scaling; no rsLoRA/DoRA here), `modules_to_save` copies in place of their originals."""
    scale = lora.alpha / lora.rank
    out: dict[str, torch.Tensor] = {}
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        name = key.removeprefix(_PEFT_PREFIX)
        if m := re.fullmatch(r"(.+)\.lora_([AB])\.default\.weight", name):
            adapters.setdefault(m.group(1), {})[m.group(2)] = tensor
        elif ".original_module." in name:
            continue  # the frozen copy peft keeps of a module trained in full
        else:
            out[name.replace(".modules_to_save.default.", ".").replace(".base_layer.", ".")] = tensor
    for layer, ab in adapters.items():
        weight = out[f"{layer}.weight"]
        delta = (ab["B"].to(torch.float32) @ ab["A"].to(torch.float32)) * scale
        out[f"{layer}.weight"] = (weight.to(torch.float32) + delta).to(weight.dtype)
    return out


def train_vlm(cfg: VLMTrainConfig) -> TrainerState:
    """Run one VLM stage (vla-scripts/pretrain_vlm.py); resumes the run if it has checkpoints."""
    return run(cfg, task=VLMTask(cfg))
