"""LoRA through peft: the only place that wraps a model with adapters, saves them and merges them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn as nn

from prismatic.training.config import LoRAConfig


def _require_peft():
    try:
        import peft
    except ImportError as e:
        raise ImportError("LoRA needs peft, from the `train` extra: uv sync --extra train") from e
    return peft


def wrap_with_lora(model: nn.Module, cfg: LoRAConfig) -> nn.Module:
    """Freeze the model and add rank-`cfg.rank` adapters to its linear layers (all of them by default, but
    not the LM head (peft's all-linear) nor layers outside the forward)."""
    peft = _require_peft()
    if cfg.quantization is not None:
        raise NotImplementedError(
            f"--lora.quantization {cfg.quantization} needs a quantised base model loaded with bitsandbytes on CUDA; "
            "load the checkpoint with BitsAndBytesConfig and pass it in (not available on CPU)"
        )
    targets = cfg.target_modules if cfg.target_modules == "all-linear" else [t.strip() for t in cfg.target_modules.split(",")]
    config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                             exclude_modules=_modules_outside_the_forward(model) or None,
                             init_lora_weights="gaussian")  # fmt: skip
    return peft.get_peft_model(model, config)


def _modules_outside_the_forward(model: nn.Module) -> list[str]:
    """Names of the modules the forward never runs (each ViT's blocks after the one features are read from,
    its final norm and head) and of everything inside them: adapters there would get no gradient (and
    make DDP wait for one)."""
    vision = getattr(model, "vision_backbone", None)
    unused = {id(m) for m in vision.unused_modules()} if vision is not None else set()
    roots = tuple(name for name, m in model.named_modules() if id(m) in unused)
    inside = tuple(r + "." for r in roots)
    return [name for name, _ in model.named_modules() if name in roots or name.startswith(inside)]


def save_adapter(model: nn.Module, trainable_state: dict[str, torch.Tensor], out_dir: Path) -> None:
    """Adapters only (a few MB), in peft's layout, from the gathered trainable parameters (rank 0;
    `CheckpointManager.trainable_state`, named without wrappers).

    peft picks the adapter entries by the model's own module names, which include activation
    checkpointing's `_checkpoint_wrapped_module`; so it is given those names, and the saved keys are
    then stripped of them, to load onto an unwrapped base. (`PeftModel.save_pretrained` would select
    again by wrapped names and drop every adapter inside a checkpointed layer.)"""
    peft = _require_peft()
    from safetensors.torch import save_file

    from prismatic.training.distributed import parameter_name

    names = {n: parameter_name(n) for n, _ in model.named_parameters()}
    as_named = {n: trainable_state[clean] for n, clean in names.items() if clean in trainable_state}
    adapter = peft.get_peft_model_state_dict(model, state_dict=as_named)
    adapter = {parameter_name(k): v.contiguous() for k, v in adapter.items()}
    config = copy.copy(model.peft_config["default"])
    config.inference_mode = True  # what peft writes for a saved adapter
    out_dir = Path(out_dir)
    config.save_pretrained(out_dir)
    save_file(adapter, out_dir / "adapter_model.safetensors", metadata={"format": "pt"})


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path, dataset_statistics: Path | None = None):
    """Base HF-layout checkpoint + adapter -> a merged HF-layout checkpoint (loads with the Auto classes)."""
    peft = _require_peft()
    from prismatic.models.load import load_vla

    vla = load_vla(base_dir)
    merged = peft.PeftModel.from_pretrained(vla.model, str(adapter_dir)).merge_and_unload()
    vla.model = merged
    if dataset_statistics is not None:
        vla.model.config.norm_stats = json.loads(Path(dataset_statistics).read_text())
    with torch.no_grad():
        vla.save_pretrained(out_dir)
    return vla
