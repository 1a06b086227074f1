"""Process-group set-up and the one function that applies parallelism to a model.

Model code is single-device; `parallelize` wraps it from outside, in this order:
activation checkpointing -> FSDP2 `fully_shard` per ViT block and per decoder layer -> the root.
The root group holds everything else (patch embeddings, projector, token embeddings, final norm,
LM head), which is why training always calls the root module's `forward`.

A bitsandbytes-quantised base (QLoRA) cannot be sharded: FSDP would flatten its packed weights and lose
their quantisation state. It is frozen and small, so every rank holds all of it and DDP all-reduces the
adapters' gradients (`--parallel.sharding no_shard`, which `TrainConfig.validate` requires for it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from prismatic.training.config import ParallelConfig, Sharding


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None, backend: str | None = None) -> DistInfo:
    """Read torchrun's environment (or run single-process) and start the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device, local_rank) if device == "cuda" else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"))
    return DistInfo(rank, local_rank, world_size, dev)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    return list(model.get_decoder().layers)


def vit_blocks(model: nn.Module) -> list[nn.Module]:
    return [b for f in model.vision_backbone.featurizers for b in f.blocks]


def parameter_name(name: str) -> str:
    """A parameter's name without the wrappers training adds around modules (DDP's `module.`, activation
    checkpointing's `._checkpoint_wrapped_module`): the same name in every run, however parallelised."""
    return name.removeprefix("module.").replace("._checkpoint_wrapped_module", "")


def apply_activation_checkpointing(model: nn.Module) -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    targets = {id(m) for m in decoder_layers(model) + vit_blocks(model)}
    for name, module in list(model.named_modules()):
        if id(module) in targets:
            model.set_submodule(name, checkpoint_wrapper(module, preserve_rng_state=False))


def has_quantized_weights(model: nn.Module) -> bool:
    """Whether some parameters are bitsandbytes-quantised (Params4bit, Int8Params)."""
    return any(type(p).__module__.startswith("bitsandbytes") for p in model.parameters())


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def unwrap_ddp(model: nn.Module) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def parallelize(model: nn.Module, cfg: ParallelConfig, info: DistInfo) -> nn.Module:
    """Activation checkpointing, then FSDP2 per block/layer and on the root (DDP for a quantised base).
    Returns the model."""
    if cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    if not info.distributed and not dist.is_initialized():  # (a one-rank group shards trivially: benchmarks)
        return model
    if has_quantized_weights(model):
        if Sharding(cfg.sharding) is not Sharding.NO_SHARD:  # (validate reports this with the fix)
            raise ValueError(f"FSDP cannot shard a quantised base (--parallel.sharding={cfg.sharding})")
        from torch.nn.parallel import DistributedDataParallel

        # Every trainable parameter gets a gradient (no adapters outside the forward: lora.wrap_with_lora).
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    sharding = Sharding(cfg.sharding)
    if sharding is Sharding.HYBRID_SHARD:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
        mesh = init_device_mesh(info.device.type, (info.world_size // per_node, per_node), mesh_dim_names=("replicate", "shard"))
    elif sharding is Sharding.NO_SHARD:
        mesh = init_device_mesh(info.device.type, (info.world_size, 1), mesh_dim_names=("replicate", "shard"))
    else:
        mesh = init_device_mesh(info.device.type, (info.world_size,), mesh_dim_names=("shard",))
    mp = None
    if cfg.mixed_precision and info.device.type == "cuda":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16,
                                  reduce_dtype=torch.float32 if cfg.reduce_in_fp32 else torch.bfloat16)  # fmt: skip
    kwargs = {"mesh": mesh, "reshard_after_forward": sharding is not Sharding.GRAD_OP_SHARD}
    if mp is not None:
        kwargs["mp_policy"] = mp
    for block in vit_blocks(model) + decoder_layers(model):  # (the checkpoint wrappers, if any)
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model
