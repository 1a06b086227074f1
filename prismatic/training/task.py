"""What a training run trains: the seam between the shared loop (`trainer.py`) and one kind of model.

The loop (steps, gradient accumulation, clipping, FSDP, resumable checkpoints, trackers) is the same for
every kind of model; a `TrainingTask` says what a sample is and what a run keeps. The trainer calls, in order:

    build_model(device)            the model (the task keeps its tokenizer / processor)
    check_data()                   every data problem, before anything is written
    config_record(record)          the run's config.json (with the `model` section load functions read)
    build_dataset(info, skip)      this rank's sample stream, `skip` samples already consumed (exact resume)
    write_run_files(run_dir)       what inference needs next to the weights (tokenizer, statistics)
    prepare_parameters(model)      which parameters train (a stage's freezing, or LoRA adapters)
    metrics(out, dataset_names)    scalars of one micro-batch (the loss is logged by the loop)
    save_weights(model, ckpt, st)  the consolidated weights (collective: every rank calls it)

`VLATask` is OpenVLA-style action training (RLDS frames, action heads); the Prismatic VLM stages are
`prismatic.vlm.training.VLMTask`. A new kind of training is a new task, not a branch in the loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from prismatic.models.base_vlm import resolve_base_vlm
from prismatic.models.layouts import native_arch_section
from prismatic.models.modeling import OpenVLAForActionPrediction
from prismatic.training.checkpoint import CheckpointManager, TrainerState
from prismatic.training.config import LoRAConfig, TrainConfig
from prismatic.training.distributed import DistInfo, unwrap_ddp
from prismatic.training.model_setup import build_model_and_processor, build_train_dataset, check_data_contract
from prismatic.training.stages import apply_stage
from prismatic.util.io import atomic_dir, atomic_write_json
from prismatic.util.logging import get_logger

log = get_logger(__name__)


class TrainingTask(ABC):
    """One kind of training for the shared loop; see the module docstring for the call order."""

    @property
    @abstractmethod
    def lora(self) -> LoRAConfig | None:
        """The LoRA settings when the run trains adapters on a frozen base (checkpoints then hold only the
        trainable parameters; the base is rebuilt the same way on resume), else None."""

    @abstractmethod
    def build_model(self, device: torch.device) -> nn.Module: ...

    def check_data(self) -> None:  # noqa: B027 - optional: most tasks check their data while building the model
        """Raise if the data cannot feed this model (called before anything is written)."""

    @abstractmethod
    def config_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """The config.json record: `record` (the whole config) with the `model` section and the task's fields."""

    @abstractmethod
    def build_dataset(self, info: DistInfo, skip: int = 0) -> Any:
        """An IterableDataset with `collator` and `__len__` (samples per pass over the data)."""

    @abstractmethod
    def write_run_files(self, run_dir: Path) -> None: ...

    @abstractmethod
    def prepare_parameters(self, model: nn.Module, info: DistInfo) -> tuple[nn.Module, int, str]:
        """(model, trainable parameter count, what trains): freeze for the stage or wrap with LoRA."""

    @abstractmethod
    def metrics(self, out: Any, dataset_names: Sequence[str] | None) -> dict[str, float]: ...

    @abstractmethod
    def save_weights(self, model: nn.Module, ckpt: CheckpointManager, state: TrainerState) -> None:
        """Write the consolidated weights of this step. Collective under FSDP: every rank calls it."""


class VLATask(TrainingTask):
    """A VLA on RLDS frames: the model from `--vla.base_vlm` (or random, tiny), the action head's loss and metrics."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.vla = None  # prismatic.models.vla.VLA, once built
        self.base: tuple[str, str] | None = None  # (path, fingerprint) of a LoRA base

    @property
    def lora(self) -> LoRAConfig | None:
        return self.cfg.lora if self.cfg.lora.enabled else None

    def build_model(self, device: torch.device) -> OpenVLAForActionPrediction:
        self.vla = build_model_and_processor(self.cfg, device)  # a quantised base loads onto the device
        return self.vla.model

    def check_data(self) -> None:
        check_data_contract(self.vla.model.config, self.cfg.vla.data_mix, tuple(map(str, self.cfg.dataset_configs)))

    def config_record(self, record: dict[str, Any]) -> dict[str, Any]:
        record["vla"]["type"] = self.cfg.vla.vla_id
        record["model"] = native_arch_section(self.vla.model.config)  # what load_vla rebuilds the model from
        return record

    def build_dataset(self, info: DistInfo, skip: int = 0):
        dataset = build_train_dataset(self.cfg, self.vla, info, skip=skip)
        self.vla.model.config.norm_stats = dataset.dataset_statistics
        return dataset

    def write_run_files(self, run_dir: Path) -> None:
        self.vla.processor.tokenizer.save_pretrained(run_dir / "tokenizer")
        atomic_write_json(run_dir / "dataset_statistics.json", self.vla.model.config.norm_stats)

    def prepare_parameters(self, model: nn.Module, info: DistInfo) -> tuple[nn.Module, int, str]:
        if self.lora is not None:
            from prismatic.training.lora import base_fingerprint, wrap_with_lora

            self.base = self._base_record(base_fingerprint) if info.is_main else None
            model = wrap_with_lora(model, self.lora)
            return model, sum(p.numel() for p in model.parameters() if p.requires_grad), "LoRA"
        return model, apply_stage(model, self.cfg.vla.stage)["trainable"], self.cfg.vla.stage

    def metrics(self, out: Any, dataset_names: Sequence[str] | None) -> dict[str, float]:
        return self.vla.model.action_head.metrics(out.head_output, dataset_names)

    def save_weights(self, model: nn.Module, ckpt: CheckpointManager, state: TrainerState) -> None:
        from prismatic.models.layouts import hf_to_native

        cfg = self.cfg
        if self.lora is not None:
            from prismatic.training.lora import save_adapter

            adapter = ckpt.trainable_state(model)  # collective: every rank gathers
            if adapter is not None:
                with atomic_dir(ckpt.run_dir / "adapter") as tmp:
                    save_adapter(unwrap_ddp(model), adapter, tmp, base=self.base)
            return
        if not (cfg.checkpoint.save_native or cfg.checkpoint.save_hf):
            return
        full = ckpt.full_model_state(model)  # collective: every rank gathers
        if full is None:
            return
        c = self.vla.model.config
        if cfg.checkpoint.save_native:
            ckpt.save_native_weights(hf_to_native(full, c.vision_backbone_id, c.projector_type), state)
        if cfg.checkpoint.save_hf:
            from prismatic.models.vla import VLA

            export = OpenVLAForActionPrediction(c)
            export.load_state_dict(full)
            with atomic_dir(ckpt.run_dir / "hf") as tmp:
                VLA(export, self.vla.processor).save_pretrained(tmp)

    def _base_record(self, fingerprint) -> tuple[str, str] | None:
        """(path, fingerprint) of the LoRA base, saved with the adapter so that merging into another base is
        refused; None (merge then only warns) for a base whose files cannot be fingerprinted."""
        base = self.cfg.vla.base_vlm
        try:
            return str(base), fingerprint(resolve_base_vlm(base, self.cfg.model_root))
        except Exception as e:  # noqa: BLE001 - never a reason not to train
            log.warning(f"cannot fingerprint the base {base} ({e}); merge_lora.py will not be able to check it")
            return None
