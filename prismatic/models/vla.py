"""`VLA`: a loaded model with its processor, for inference from images and instructions."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prismatic.models.layouts import hf_state_to_native, native_arch_section
from prismatic.models.llm.prompting import build_vla_prompt
from prismatic.models.modeling import OpenVLAForActionPrediction
from prismatic.models.processing import PrismaticProcessor
from prismatic.util.io import atomic_torch_save, atomic_write_json

_NOT_A_BATCH = (str, bytes)  # iterable, but never a batch of images or instructions


def check_instruction(instruction: Any, where: str = "instruction") -> str:
    """A language instruction must be a non-empty string (whitespace is kept: see `vla_instruction`)."""
    if not isinstance(instruction, str):
        hint = "; decode it first (bytes.decode())" if isinstance(instruction, bytes) else ""
        raise TypeError(f"{where} must be a str, got {type(instruction).__name__}{hint}")
    if not instruction.strip():
        raise ValueError(f"{where} is empty: say what the robot should do, e.g. 'pick up the cup'")
    return instruction


def check_batch(images: Any, instructions: Any) -> None:
    """A batch is two sequences of the same, non-zero length: one image (or camera tuple) per instruction."""
    if isinstance(instructions, _NOT_A_BATCH) or not isinstance(instructions, Sequence):
        raise TypeError(f"instructions must be a list of str, one per image; got {type(instructions).__name__}")
    if not hasattr(images, "__len__") or isinstance(images, _NOT_A_BATCH):
        raise TypeError(f"images must be a list with one image per instruction; got {type(images).__name__}")
    if len(images) != len(instructions):
        raise ValueError(f"got {len(images)} images but {len(instructions)} instructions; pass one image per instruction")
    if len(instructions) == 0:
        raise ValueError("the batch is empty: pass at least one (image, instruction) pair")
    for i, instruction in enumerate(instructions):
        check_instruction(instruction, f"instructions[{i}]")


class VLA:
    """Model + processor. `predict_action(image, instruction)` is the whole inference API.

    `decode` is the decoding path used unless a call passes its own: "auto" (static cache + CUDA graphs on
    CUDA, eager elsewhere), "eager", "static" or "graphs" (`prismatic.models.decoding`).
    """

    def __init__(self, model: OpenVLAForActionPrediction, processor: PrismaticProcessor, decode: str = "auto") -> None:
        self.model, self.processor, self.decode = model, processor, decode

    @property
    def config(self):
        return self.model.config

    @property
    def norm_stats(self) -> dict[str, Any]:
        return self.model.norm_stats

    def prompt(self, instruction: str) -> str:
        return build_vla_prompt(instruction, self.model.config.prompt_builder)

    def predict_action(self, image, instruction: str, unnorm_key: str | None = None, **kwargs: Any) -> np.ndarray:
        """One image and instruction -> one un-normalised action [action_dim]."""
        inputs = self.processor(self.prompt(check_instruction(instruction)), image)
        return self.model.predict_action(**inputs, unnorm_key=unnorm_key, **{"decode": self.decode, **kwargs})

    def predict_actions(
        self, images: Sequence, instructions: Sequence[str], unnorm_key: str | None = None, **kwargs: Any
    ) -> np.ndarray:
        """A batch of (image, instruction) pairs -> actions [batch, action_dim] in one forward pass."""
        check_batch(images, instructions)
        inputs = self.processor([self.prompt(i) for i in instructions], list(images))
        actions = self.model.predict_action(**inputs, unnorm_key=unnorm_key, **{"decode": self.decode, **kwargs})
        return actions.reshape(len(images), -1)

    # -- saving ---------------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path, max_shard_size: str | int = "5GB") -> Path:
        """The official Hugging Face layout (loads with the Auto classes, no remote code)."""
        out_dir = Path(out_dir)
        config = self.model.config
        auto_map = getattr(config, "auto_map", None)
        if auto_map is not None:  # we ship no remote code: do not point at files that are not there
            del config.auto_map
        try:
            self.model.save_pretrained(out_dir, max_shard_size=max_shard_size)
        finally:
            if auto_map is not None:
                config.auto_map = auto_map
        self.processor.save_pretrained(out_dir)
        return out_dir

    def save_native(self, run_dir: str | Path, checkpoint_name: str = "latest-checkpoint.pt") -> Path:
        """A native run directory: config.json, dataset_statistics.json, checkpoints/*.pt, tokenizer/."""
        run_dir = Path(run_dir)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", {"model": native_arch_section(self.model.config)})
        atomic_write_json(run_dir / "dataset_statistics.json", self.norm_stats)
        atomic_torch_save({"model": hf_state_to_native(self.model)}, run_dir / "checkpoints" / checkpoint_name)
        tok_dir = run_dir / "tokenizer"
        if tok_dir.exists():
            shutil.rmtree(tok_dir)
        self.processor.tokenizer.save_pretrained(tok_dir)
        return run_dir

    def to(self, *args: Any, **kwargs: Any) -> VLA:
        self.model.to(*args, **kwargs)
        return self

    def __repr__(self) -> str:
        c = self.model.config
        n = sum(p.numel() for p in self.model.parameters())
        return (
            f"VLA({c.vision_backbone_id} + {c.llm_backbone_id}, {n / 1e6:.1f}M params, "
            f"datasets={json.dumps(sorted(self.norm_stats))}, device={self.model.device}, dtype={self.model.dtype})"
        )


