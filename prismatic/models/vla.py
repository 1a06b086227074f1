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
from prismatic.models.sample_encoder import SampleEncoder
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
    for i, image in enumerate(images):
        if image is None:
            raise ValueError(f"images[{i}] is None: the model needs both a prompt (text) and an image")
    for i, instruction in enumerate(instructions):
        check_instruction(instruction, f"instructions[{i}]")


class VLA:
    """Model + processor. `predict_chunks` / `predict_action(s)` from images and instructions is the whole
    inference API; inputs are built by the same `SampleEncoder` that training uses.

    `decode` is the decoding path used unless a call passes its own: "auto" (static cache + CUDA graphs on
    CUDA, eager elsewhere), "eager", "static" or "graphs" (`prismatic.models.decoding`).
    """

    def __init__(self, model: OpenVLAForActionPrediction, processor: PrismaticProcessor, decode: str = "auto") -> None:
        self.model, self.processor, self.decode = model, processor, decode

    @property
    def encoder(self) -> SampleEncoder:
        """Lays out prompts, camera images, proprio and action slots for this model (training uses it too)."""
        return SampleEncoder.for_model(self.model.config, self.processor.tokenizer, self.processor.image_processor.transform)

    # -- the model's input/output contract ------------------------------------------------------
    @property
    def chunk_len(self) -> int:
        """Actions per prediction (T): 1 for OpenVLA's bins head, 8 for the OpenVLA-OFT LIBERO releases."""
        return int(self.model.config.chunk_len)

    @property
    def cameras(self) -> tuple[str, ...]:
        """Camera views the model reads, in the order `predict_chunks` expects images."""
        return tuple(self.model.config.cameras)

    @property
    def proprio_dim(self) -> int:
        """Size of the proprioceptive state the model reads (0: none)."""
        return int(self.model.config.proprio_dim)

    def action_dim(self, unnorm_key: str | None = None) -> int:
        return self.model.get_action_dim(unnorm_key)

    @property
    def config(self):
        return self.model.config

    @property
    def norm_stats(self) -> dict[str, Any]:
        return self.model.norm_stats

    def prompt(self, instruction: str) -> str:
        return build_vla_prompt(instruction, self.model.config.prompt_builder)

    def predict_chunks(
        self,
        images: Sequence,
        instructions: Sequence[str],
        unnorm_key: str | None = None,
        proprio: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """A batch -> un-normalised action chunks [batch, chunk_len, action_dim] in one pass.

        images[b] is one image, or a sequence of images (one per camera, in `cameras` order); proprio is
        None or the raw state [batch, proprio_dim] (normalised here with the dataset's statistics)."""
        check_batch(images, instructions)
        if proprio is not None and self.proprio_dim == 0:
            raise ValueError("this model reads no proprioceptive state (proprio_dim 0); pass proprio=None")
        key = self.model.resolve_unnorm_key(unnorm_key)
        state = self.model.normalize_proprio(proprio, key) if proprio is not None else None
        if state is not None and state.shape[0] != len(instructions):
            raise ValueError(f"got proprio for {state.shape[0]} samples but {len(instructions)} instructions")
        inputs = self.encoder.inference_inputs(list(instructions), list(images), state)
        kwargs = {"decode": self.decode, **kwargs}  # token heads decode with it; parallel heads ignore it
        chunk = self.model.predict_normalized_chunk(**inputs, action_dim=self.model.get_action_dim(key), **kwargs)
        return self.model.unnormalize_actions(chunk.cpu().numpy(), key)

    def predict_action(
        self, image, instruction: str, unnorm_key: str | None = None, proprio: Any = None, **kwargs: Any
    ) -> np.ndarray:
        """One observation -> the next un-normalised action [action_dim] (a chunk head's first step)."""
        state = None if proprio is None else np.asarray(proprio, dtype=np.float64).reshape(1, -1)
        return self.predict_chunks([image], [check_instruction(instruction)], unnorm_key, state, **kwargs)[0, 0]

    def predict_actions(
        self, images: Sequence, instructions: Sequence[str], unnorm_key: str | None = None, proprio: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:  # fmt: skip
        """A batch of observations -> the next actions [batch, action_dim] in one forward pass."""
        return self.predict_chunks(images, instructions, unnorm_key, proprio, **kwargs)[:, 0]

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


