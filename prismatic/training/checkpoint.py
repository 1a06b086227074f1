"""Resumable checkpoints: sharded training state, written atomically, found again by content.

Layout under a run directory:

    state/step-000500/            one complete resumable checkpoint (torch.distributed.checkpoint)
        .metadata, __0_0.distcp   model + optimizer (sharded over ranks under FSDP)
        rng-rank0.pt ...          per-rank RNG states
        trainer_state.json        step, epoch, samples seen, scheduler -- written LAST: its presence
                                  marks the checkpoint complete
                                  (LoRA runs: only the trainable adapter parameters are saved; the
                                  frozen base is read again from --vla.base_vlm on resume)
    state/step-000750.partial/    an interrupted save: ignored by resume, removed by the next save
    checkpoints/step-000500-epoch-00-loss=1.2345.pt   consolidated weights, native layout (inference)
    hf/                           optional HF-layout export of the latest weights

The step is read from `trainer_state.json`, never parsed from a file name.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (  # noqa: I001
    StateDictOptions,
    _init_optim_state,  # private but pinned (uv.lock); what set_state_dict itself relies on
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

from prismatic.training.distributed import DistInfo, parameter_name
from prismatic.util.io import atomic_torch_save, atomic_write_json

STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    samples_seen: int = 0  # per rank: frames consumed from this rank's stream (the data position)
    scheduler: dict[str, Any] | None = None
    last_loss: float | None = None


def _barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain values, so they load with `weights_only=True`."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": dict(zip(("version", "state", "gauss"), random.getstate())),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """Saves and finds resumable checkpoints. `trainable_only` (LoRA): the model part of the state is the
    trainable parameters only; the frozen base is not saved, since it is read again from its checkpoint.
    That keeps LoRA checkpoints small and never asks a bitsandbytes-quantised base for its state dict
    (whose quantisation statistics, e.g. `SCB`, DCP cannot map back to module attributes)."""

    def __init__(self, run_dir: Path, info: DistInfo, keep_last: int = 3, trainable_only: bool = False):
        self.run_dir, self.info, self.keep_last = Path(run_dir), info, keep_last
        self.trainable_only = trainable_only
        self.state_root = self.run_dir / "state"

    # -- discovery ------------------------------------------------------------------------------
    def complete_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, dir) of every complete checkpoint, oldest first (partial saves are skipped)."""
        found = []
        for d in self.state_root.glob("step-*"):
            state_file = d / STATE_FILE
            if d.is_dir() and not d.name.endswith(".partial") and state_file.is_file():
                try:
                    found.append((int(json.loads(state_file.read_text())["step"]), d))
                except (ValueError, KeyError, json.JSONDecodeError):
                    continue  # unreadable marker: treat as incomplete
        return sorted(found)

    def latest(self) -> Path | None:
        ckpts = self.complete_checkpoints()
        return ckpts[-1][1] if ckpts else None

    # -- save / load ----------------------------------------------------------------------------
    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainerState) -> Path:
        final = self.state_root / f"step-{state.step:06d}"
        partial = final.with_name(final.name + ".partial")
        if self.info.is_main:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True, exist_ok=True)
        _barrier(self.info)
        dcp.save(self._state(model, optimizer), checkpoint_id=str(partial))
        atomic_torch_save(rng_state(), partial / f"rng-rank{self.info.rank}.pt")
        _barrier(self.info)
        if self.info.is_main:
            atomic_write_json(partial / STATE_FILE, state.__dict__)  # the completion marker, last
            if final.exists():
                shutil.rmtree(final)
            partial.rename(final)
            self._prune()
        _barrier(self.info)
        return final

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer, ckpt_dir: Path) -> TrainerState:
        # A fresh AdamW has no state tensors to load into yet; torch creates them with a zero-lr step.
        _init_optim_state(optimizer)
        payload = self._state(model, optimizer)
        saved = dcp.FileSystemReader(str(ckpt_dir)).read_metadata().state_dict_metadata
        missing = [k for k in payload["model"] if f"model.{k}" not in saved]
        if missing:
            raise RuntimeError(
                f"{ckpt_dir} lacks {len(missing)} model entries (e.g. {missing[:3]}): it was written by a different "
                "model, stage or LoRA configuration; resume with the same flags, or start over with --checkpoint.resume false"
            )
        dcp.load(payload, checkpoint_id=str(ckpt_dir))
        if not self.trainable_only:  # (trainable-only: DCP loaded into the parameters themselves)
            set_model_state_dict(model, payload["model"])
        set_optimizer_state_dict(model, optimizer, payload["optimizer"])
        rng_file = ckpt_dir / f"rng-rank{self.info.rank}.pt"
        if rng_file.is_file():
            set_rng_state(torch.load(rng_file, weights_only=True))
        return TrainerState(**json.loads((ckpt_dir / STATE_FILE).read_text()))

    def _state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        if self.trainable_only:  # the parameters themselves (detached views): DCP loads into them in place
            model_sd = {parameter_name(n): p.detach() for n, p in model.named_parameters() if p.requires_grad}
        else:
            model_sd = get_model_state_dict(model)
        return {"model": model_sd, "optimizer": get_optimizer_state_dict(model, optimizer)}

    def _prune(self) -> None:
        for d in self.state_root.glob("step-*.partial"):
            shutil.rmtree(d, ignore_errors=True)
        for _, d in self.complete_checkpoints()[: -self.keep_last]:
            shutil.rmtree(d, ignore_errors=True)
        weights = sorted((self.run_dir / "checkpoints").glob("step-*.pt"))
        for f in weights[: -self.keep_last]:
            f.unlink(missing_ok=True)

    # -- consolidated weights ---------------------------------------------------------------------
    def full_model_state(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The whole (unsharded) HF-layout state dict on rank 0's CPU; None on other ranks.

        Collective under FSDP: every rank must call it. Activation-checkpoint wrappers are not part of
        the model's names, so their prefix is removed."""
        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.info.is_main:
            return None
        return {parameter_name(k): v for k, v in sd.items()}

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The trainable parameters (e.g. LoRA adapters), unsharded, on rank 0's CPU; None on other ranks.

        Collective under FSDP: every rank must call it (parameters come in the same order on every rank)."""
        state = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                full = p.full_tensor() if isinstance(p, DTensor) else p
                state[parameter_name(name)] = full.detach().cpu()
        return state if self.info.is_main else None

    def save_native_weights(self, native_state: dict[str, dict[str, torch.Tensor]], state: TrainerState) -> Path:
        loss = f"{state.last_loss:.4f}" if state.last_loss is not None else "nan"
        path = self.run_dir / "checkpoints" / f"step-{state.step:06d}-epoch-{state.epoch:02d}-loss={loss}.pt"
        atomic_torch_save({"model": native_state}, path)
        return path
