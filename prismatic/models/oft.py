"""OpenVLA-OFT checkpoints in their official release layout, loaded without its transformers fork.

A release directory (`moojink/openvla-7b-oft-finetuned-libero-*`) is an OpenVLA Hugging Face
directory plus

    action_head--<step>_checkpoint.pt          the L1-regression MLP-ResNet, `module.model.*` (DDP prefix)
    proprio_projector--<step>_checkpoint.pt    Linear -> GELU -> Linear, `module.fc{1,2}.*`
    dataset_statistics.json                    replaces config.json's `norm_stats` (the fine-tuning data's)

Both `.pt` files are plain state dicts, read with `torch.load(weights_only=True)`. Their keys, without
`module.`, are those of our `action_head` / `proprio_projector` modules. No file records the number of
cameras, the proprio size, the head type or the chunk length: pass them (`OFT_LIBERO` holds the LIBERO
releases' values), e.g. `load_vla(path, **OFT_LIBERO)` or
`AutoModelForImageTextToText.from_pretrained(path, **OFT_LIBERO)`. Evaluate with the 0.9-area centre crop
(`eval_libero.py --center_crop true`): the releases were trained with random-crop augmentation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from prismatic.models.errors import CheckpointError

log = logging.getLogger(__name__)

# The settings of the official LIBERO releases (their run_libero_eval.py defaults and finetune.py flags).
OFT_LIBERO: dict[str, Any] = {
    "action_head": "l1-regression",
    "cameras": ["primary", "wrist"],  # third-person, then wrist (each through both ViTs, 256 patches each)
    "proprio_dim": 8,  # eef position (3), axis-angle (3), gripper joint positions (2)
    "chunk_len": 8,
    "action_dim": 7,
}
COMPONENTS = ("action_head", "proprio_projector")  # module name = file prefix
STATISTICS_FILE = "dataset_statistics.json"


def component_file(path: Path, name: str) -> Path | None:
    """`<name>--<step>_checkpoint.pt` in `path` (None if absent; an error if several)."""
    found = sorted(path.glob(f"{name}--*_checkpoint.pt"))
    if len(found) > 1:
        raise CheckpointError(f"{path} holds several {name} checkpoints ({', '.join(f.name for f in found)}); keep one")
    return found[0] if found else None


def load_component_state(file: Path) -> dict[str, torch.Tensor]:
    """A component's state dict, without the `module.` prefix DDP training left on every key."""
    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{file} is not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def checkpoint_tensor_names(path: Path) -> set[str]:
    """Names of the tensors in an HF-layout directory's safetensors (sharded or not)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        return set(f.keys())


def has_release_components(path: Path) -> bool:
    return any(component_file(path, name) is not None for name in COMPONENTS)


def attach_release_components(model: torch.nn.Module, path: Path) -> list[str]:
    """Fill the action head and proprio projector from the release's `.pt` files where the safetensors
    lack them, and take `dataset_statistics.json` as the statistics. Returns the modules still without
    weights (they keep their fresh initialisation)."""
    names = checkpoint_tensor_names(path)
    missing = []
    for name in COMPONENTS:
        module = getattr(model, name, None)
        own = [k for k in module.state_dict()] if module is not None else []
        if not own or all(f"{name}.{k}" in names for k in own):
            continue
        file = component_file(path, name)
        if file is None:
            missing.append(name)
            continue
        state = load_component_state(file)
        result = module.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"{file} does not match the model's {name} ({model.config.action_head!r} head, proprio_dim="
                f"{model.config.proprio_dim}, action_dim={model.config.action_dim}): missing {sorted(result.missing_keys)}, "
                f"unexpected {sorted(result.unexpected_keys)}"
            )
        log.info("loaded %s from %s", name, file.name)
    stats = path / STATISTICS_FILE
    if stats.is_file():  # what both originals do: the fine-tuning data's statistics win
        model.config.norm_stats = json.loads(stats.read_text())
    return missing


def settings_hint(path: Path) -> str:
    keys = ", ".join(f"{k}={v!r}" for k, v in OFT_LIBERO.items())
    return (
        f"{path} is an OpenVLA-OFT release (it holds {', '.join(f.name for n in COMPONENTS if (f := component_file(path, n)))}), "
        f"and no file there records its settings: pass them, e.g. load_vla(path, **prismatic.models.oft.OFT_LIBERO) "
        f"({keys}: the LIBERO releases' values)"
    )
