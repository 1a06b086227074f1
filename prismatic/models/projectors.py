"""Projectors: map per-patch vision features into the LLM's embedding space.

Submodule names (`fc1`, `fc2`, `fc3`) follow the OpenVLA Hugging Face layout; the native training
layout numbers them as an `nn.Sequential` (see `prismatic.models.layouts`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from prismatic.util.registry import Registry

PROJECTORS: Registry[type[nn.Module]] = Registry("projector", flag="arch_specifier")


@PROJECTORS.register("linear")
class LinearProjector(nn.Module):
    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, llm_dim, bias=True)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc1(patches)


@PROJECTORS.register("gelu-mlp")
class GeluMLPProjector(nn.Module):
    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, llm_dim, bias=True)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim, bias=True)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(patches)))


@PROJECTORS.register("fused-gelu-mlp")
class FusedGeluMLPProjector(nn.Module):
    """For fused backbones: widen 4x before projecting (the fused features are richer)."""

    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        hidden = 4 * vision_dim
        self.fc1 = nn.Linear(vision_dim, hidden, bias=True)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(hidden, llm_dim, bias=True)
        self.act_fn2 = nn.GELU()
        self.fc3 = nn.Linear(llm_dim, llm_dim, bias=True)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act_fn2(self.fc2(self.act_fn1(self.fc1(patches)))))


class ProprioProjector(nn.Module):
    """Proprioceptive state [B, P] -> one LLM token [B, H]: Linear -> GELU -> Linear (OpenVLA-OFT's)."""

    def __init__(self, proprio_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim, bias=True)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim, bias=True)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))


def projector_type(arch_specifier: str) -> str:
    """`no-align+fused-gelu-mlp` -> `fused-gelu-mlp` (the prefix names a training stage, not a module)."""
    name = arch_specifier.split("+")[-1]
    PROJECTORS.get(name)  # raises with the valid choices
    return name
