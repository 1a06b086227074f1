"""Resumable checkpoints: sharded training state, written atomically, found again by content.

Layout under a run directory:

    state/step-000500/            one complete resumable checkpoint (torch.distributed.checkpoint)
        .metadata, __0_0.distcp   model + optimizer (sharded over ranks under FSDP)
        rng-rank0.pt ...          per-rank RNG states
        trainer_state.json        step, epoch, samples seen, scheduler, and the size and SHA-256 of every
                                  file above -- written LAST: its presence marks the checkpoint complete
                                  (LoRA runs: only the trainable adapter parameters are saved; the
                                  frozen base is read again from --vla.base_vlm on resume)
    state/step-000750.partial/    an interrupted save: ignored by resume, removed at the next start
    checkpoints/step-000500-epoch-00-loss=1.2345.pt   consolidated weights, native layout (inference)
    hf/                           optional HF-layout export of the latest weights

The step is read from `trainer_state.json`, never parsed from a file name.

Faults. Resume checks the newest complete checkpoint against the sizes and checksums recorded at save time
(each rank hashes a share of the files) and falls back, with a warning naming the damaged file, to the newest
older one that checks out. A save that fails (a full disk) removes its partial directory and says so; the
last complete checkpoint stays intact.

Trust boundary. torch.distributed.checkpoint stores its `.metadata` as a pickle and small non-tensor values
(optimizer hyper-parameters) as `torch.save` pickles. Resume reads the first with an unpickler that only
builds DCP's own metadata classes, torch sizes, dtypes and paths, and the second with
`torch.load(weights_only=True)`, so a planted file cannot run code: anything else is refused as "not
written by prismatic". Tensors are read with `weights_only=True` as well.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import pickle
import random
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import StorageMeta
from torch.distributed.checkpoint.state_dict import (  # noqa: I001
    StateDictOptions,
    _init_optim_state,  # private but pinned (uv.lock); what set_state_dict itself relies on
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

from prismatic.models.load import CheckpointError
from prismatic.training.distributed import DistInfo, parameter_name
from prismatic.util.io import atomic_torch_save, atomic_write_json, disk_full_error, remove_stale_temporaries
from prismatic.util.mapping import mapping_diff

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
METADATA_FILE = ".metadata"  # torch.distributed.checkpoint's index of the shards


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


def _gather_json(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's JSON-able `obj`, on every rank (as UTF-8 bytes in a tensor: no pickle between ranks)."""
    if not info.distributed:
        return [obj]
    data = torch.tensor(list(json.dumps(obj).encode()), dtype=torch.uint8, device=info.device)
    sizes = [torch.zeros(1, dtype=torch.long, device=info.device) for _ in range(info.world_size)]
    dist.all_gather(sizes, torch.tensor([data.numel()], device=info.device))
    longest = max(int(n) for n in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=info.device)
    padded[: data.numel()] = data
    chunks = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(chunks, padded)
    return [json.loads(bytes(c[: int(n)].tolist())) for c, n in zip(chunks, sizes)]


def file_digest(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file (what a checkpoint's manifest records)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


# -- reading DCP checkpoints without unpickling foreign objects ----------------------------------------
_DCP_METADATA_GLOBALS = {
    *(("torch.distributed.checkpoint.metadata", n) for n in (
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"), ("pathlib", "PureWindowsPath"),
    ("collections", "OrderedDict"),
}  # fmt: skip


class _MetadataUnpickler(pickle.Unpickler):
    """Builds only what DCP's `.metadata` holds (its dataclasses, torch sizes, dtypes, layouts and paths)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _DCP_METADATA_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")


def read_dcp_metadata(ckpt_dir: Path):
    """DCP's metadata of a checkpoint directory, read with `_MetadataUnpickler` (see the module docstring)."""
    path = Path(ckpt_dir) / METADATA_FILE
    try:
        return _MetadataUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: not a checkpoint index written by prismatic (unreadable: {e})") from e


class _SafeReader(dcp.FileSystemReader):
    def read_metadata(self, *args: Any, **kwargs: Any):
        metadata = read_dcp_metadata(Path(self.path))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _SafeLoadPlanner(DefaultLoadPlanner):
    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        # DCP unpickles non-tensor values without restriction; check first that they are plain data.
        try:
            torch.load(value, weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{read_item.storage_index.fqn}: not plain data written by prismatic ({e})") from e
        value.seek(0)
        super().load_bytes(read_item, value)


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


def _trainer_state(record: dict[str, Any]) -> TrainerState:
    """TrainerState from a trainer_state.json record (which also holds the file manifest)."""
    known = {f.name for f in fields(TrainerState)}
    return TrainerState(**{k: v for k, v in record.items() if k in known})


def _gather_problems(problems: list[str], info: DistInfo) -> list[str]:
    return sorted({p for rank_problems in _gather_json(problems, info) for p in rank_problems})


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
    def complete_checkpoints(self, warn: bool = False) -> list[tuple[int, Path]]:
        """(step, dir) of every complete checkpoint, oldest first (partial saves are skipped; a checkpoint
        whose trainer_state.json cannot be read is skipped too, with a warning if `warn`)."""
        found = []
        for d in self.state_root.glob("step-*"):
            state_file = d / STATE_FILE
            if d.is_dir() and not d.name.endswith(".partial") and state_file.is_file():
                try:
                    found.append((int(json.loads(state_file.read_text())["step"]), d))
                except (OSError, ValueError, KeyError, TypeError) as e:
                    if warn:
                        log.warning("skipping checkpoint %s: %s is unreadable (%s)", d, STATE_FILE, e)
        return sorted(found)

    def latest(self) -> Path | None:
        ckpts = self.complete_checkpoints()
        return ckpts[-1][1] if ckpts else None

    def has_checkpoints(self) -> bool:
        return any(self.state_root.glob("step-*")) or any((self.run_dir / "checkpoints").glob("*.pt")) or (
            self.run_dir / "adapter"
        ).is_dir()

    def check_architecture(self, model_section: dict[str, Any]) -> None:
        """Refuse to train a model into a run directory whose checkpoints hold another architecture: compares
        the `model` section of its config.json with this run's and names every differing field. Reads only."""
        path = self.run_dir / "config.json"
        if not self.has_checkpoints():
            return
        try:
            saved = json.loads(path.read_text())
        except FileNotFoundError:
            return  # checkpoints copied in by hand: nothing to compare
        except (OSError, ValueError) as e:
            raise CheckpointError(
                f"{path} cannot be read ({type(e).__name__}: {e}), so this run's architecture cannot be checked "
                f"against the checkpoints in {self.run_dir}; restore the file, or use another --run_id"
            ) from e
        if not isinstance(saved, dict) or "model" not in saved:
            return  # a run of the original codebase (its config.json names a base VLM, no architecture)
        diff = mapping_diff(saved["model"], json.loads(json.dumps(model_section)))
        if diff:
            raise CheckpointError(
                f"{self.run_dir} holds checkpoints of another architecture; model fields (saved -> now): "
                f"{'; '.join(diff)}. Run with the flags it was trained with, or use another --run_id "
                "(nothing was written)"
            )

    def remove_stale_temporaries(self) -> list[Path]:
        """Rank 0, at start: remove what a killed save left behind (partial checkpoints, temporary files)."""
        stale = sorted(p for p in self.state_root.glob("step-*.partial") if p.is_dir())
        for p in stale:
            shutil.rmtree(p, ignore_errors=True)
        stale += remove_stale_temporaries(self.run_dir)
        if stale:
            log.warning("removed %d leftover(s) of an interrupted save: %s", len(stale), ", ".join(map(str, stale)))
        return stale

    def verify(self, ckpt_dir: Path) -> list[str]:
        """What is wrong with a complete checkpoint's files (empty if nothing). Collective: every rank calls
        it, hashes a share of the files and gets everyone's findings."""
        try:
            record = json.loads((ckpt_dir / STATE_FILE).read_text())
            int(record["step"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            return _gather_problems([f"{STATE_FILE}: unreadable ({e})"], self.info)
        files = record.get("files")
        if files is None:  # written before checkpoints carried a manifest: check what can be checked cheaply
            return _gather_problems(self._verify_without_manifest(ckpt_dir), self.info)
        problems = []
        for name in sorted(files)[self.info.rank :: self.info.world_size]:
            path, want = ckpt_dir / name, files[name]
            if not path.is_file():
                problems.append(f"{name}: missing")
            elif path.stat().st_size != want["bytes"]:
                problems.append(f"{name}: {path.stat().st_size} of {want['bytes']} bytes (truncated or overwritten)")
            elif file_digest(path)["sha256"] != want["sha256"]:
                problems.append(f"{name}: its content differs from the checksum recorded when it was saved (corrupt)")
        problems = _gather_problems(problems, self.info)
        if not problems:
            try:
                read_dcp_metadata(ckpt_dir)
            except CheckpointError as e:
                problems.append(f"{METADATA_FILE}: {e}")
        return problems

    def _verify_without_manifest(self, ckpt_dir: Path) -> list[str]:
        try:
            metadata = read_dcp_metadata(ckpt_dir)
        except (OSError, CheckpointError) as e:
            return [f"{METADATA_FILE}: {e}"]
        problems, needed = [], {}
        for info in (metadata.storage_data or {}).values():
            needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
        for name, size in sorted(needed.items()):
            path = ckpt_dir / name
            if not path.is_file():
                problems.append(f"{name}: missing")
            elif path.stat().st_size < size:
                problems.append(f"{name}: {path.stat().st_size} of at least {size} bytes (truncated)")
        rng_file = ckpt_dir / f"rng-rank{self.info.rank}.pt"
        if rng_file.is_file():
            try:
                torch.load(rng_file, weights_only=True)
            except Exception as e:  # noqa: BLE001 - any failure to read it is damage
                problems.append(f"{rng_file.name}: unreadable ({type(e).__name__}: {e})")
        return problems

    def resume_point(self) -> tuple[Path, TrainerState] | None:
        """The newest complete checkpoint whose files check out, and its state; a damaged newer one is named
        in a warning and skipped. None when there is none at all; CheckpointError when all are damaged."""
        complete = self.complete_checkpoints(warn=True)
        readable = {d for _, d in complete}
        damaged = [f"{d.name} ({STATE_FILE}: unreadable)" for d in sorted(self.state_root.glob("step-*"))
                   if d not in readable and not d.name.endswith(".partial") and (d / STATE_FILE).is_file()]  # fmt: skip
        unreadable = len(damaged)
        for _, ckpt_dir in reversed(complete):
            problems = self.verify(ckpt_dir)
            if not problems:
                if len(damaged) > unreadable:  # a newer one was skipped
                    log.warning("resuming from %s instead", ckpt_dir)
                return ckpt_dir, _trainer_state(json.loads((ckpt_dir / STATE_FILE).read_text()))
            log.warning("checkpoint %s is damaged and is skipped: %s", ckpt_dir, "; ".join(problems))
            damaged.append(f"{ckpt_dir.name} ({'; '.join(problems)})")
        if damaged:
            raise CheckpointError(
                f"every checkpoint under {self.state_root} is damaged: {', '.join(damaged)}. Restore them from a "
                "copy, or start over with --checkpoint.resume false (or another --run_id)"
            )
        return None

    # -- save / load ----------------------------------------------------------------------------
    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainerState) -> Path:
        final = self.state_root / f"step-{state.step:06d}"
        partial = final.with_name(final.name + ".partial")
        try:
            if self.info.is_main:
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir(parents=True, exist_ok=True)
            _barrier(self.info)
            dcp.save(self._state(model, optimizer), checkpoint_id=str(partial))
            rng_file = atomic_torch_save(rng_state(), partial / f"rng-rank{self.info.rank}.pt")
            mine = [rng_file, *sorted(partial.glob(f"__{self.info.rank}_*.distcp"))]
            manifest = {}
            for digests in _gather_json({p.name: file_digest(p) for p in mine}, self.info):
                manifest.update(digests)
            if self.info.is_main:
                manifest[METADATA_FILE] = file_digest(partial / METADATA_FILE)
                # the completion marker, last
                atomic_write_json(partial / STATE_FILE, {**state.__dict__, "files": dict(sorted(manifest.items()))})
                if final.exists():
                    shutil.rmtree(final)
                partial.rename(final)
                self._prune()
        except BaseException as e:
            if self.info.is_main:
                shutil.rmtree(partial, ignore_errors=True)
            full = disk_full_error(e, partial, f"saving checkpoint step {state.step}")
            if full is not None:
                latest = self.latest()
                raise OSError(errno.ENOSPC, f"{full}; the last complete checkpoint ({latest or 'none yet'}) is intact: "
                                            "free space (or move --run_root), then run the same command to resume") from e
            raise
        _barrier(self.info)
        return final

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer, ckpt_dir: Path) -> TrainerState:
        """Load a checkpoint (checked by `resume_point`) into the model and optimizer; restore the RNG states."""
        # A fresh AdamW has no state tensors to load into yet; torch creates them with a zero-lr step.
        _init_optim_state(optimizer)
        payload = self._state(model, optimizer)
        saved = read_dcp_metadata(ckpt_dir).state_dict_metadata
        missing = [k for k in payload["model"] if f"model.{k}" not in saved]
        if missing:
            raise CheckpointError(
                f"{ckpt_dir} lacks {len(missing)} model entries (e.g. {missing[:3]}): it was written by a different "
                "model, stage or LoRA configuration; resume with the same flags, or start over with --checkpoint.resume false"
            )
        try:
            dcp.load(payload, storage_reader=_SafeReader(str(ckpt_dir)), planner=_SafeLoadPlanner())
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"{ckpt_dir}: the checkpoint could not be read ({type(e).__name__}: {e})") from e
        if not self.trainable_only:  # (trainable-only: DCP loaded into the parameters themselves)
            set_model_state_dict(model, payload["model"])
        set_optimizer_state_dict(model, optimizer, payload["optimizer"])
        rng_file = ckpt_dir / f"rng-rank{self.info.rank}.pt"
        if rng_file.is_file():
            try:
                set_rng_state(torch.load(rng_file, weights_only=True))
            except Exception as e:
                raise CheckpointError(f"{rng_file}: unreadable RNG state ({type(e).__name__}: {e})") from e
        return _trainer_state(json.loads((ckpt_dir / STATE_FILE).read_text()))

    def _state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        if self.trainable_only:  # the parameters themselves (detached views): DCP loads into them in place
            model_sd = {parameter_name(n): p.detach() for n, p in model.named_parameters() if p.requires_grad}
        else:
            model_sd = get_model_state_dict(model)
        return {"model": model_sd, "optimizer": get_optimizer_state_dict(model, optimizer)}

    def _prune(self) -> None:
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
