"""LoRA through peft: the only place that wraps a model with adapters, saves them and merges them."""

from __future__ import annotations

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
    """Freeze the model and add rank-`cfg.rank` adapters to its linear layers (all of them by default)."""
    peft = _require_peft()
    if cfg.quantization is not None:
        raise NotImplementedError(
            f"--lora.quantization {cfg.quantization} needs a quantised base model loaded with bitsandbytes on CUDA; "
            "load the checkpoint with BitsAndBytesConfig and pass it in (not available on CPU)"
        )
    targets = cfg.target_modules if cfg.target_modules == "all-linear" else [t.strip() for t in cfg.target_modules.split(",")]
    config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                             init_lora_weights="gaussian")  # fmt: skip
    return peft.get_peft_model(model, config)


def save_adapter(model: nn.Module, full_state: dict[str, torch.Tensor], out_dir: Path) -> None:
    """Adapters only (a few MB), taken from the gathered full state dict (rank 0)."""
    peft = _require_peft()
    adapter = peft.get_peft_model_state_dict(model, state_dict=full_state)
    model.save_pretrained(out_dir, state_dict=adapter)


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
