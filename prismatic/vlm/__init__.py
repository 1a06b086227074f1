"""Prismatic VLMs: the training stages (align, finetune, full-finetune, lora-finetune) on LLaVA-style
conversation data, generation, and VLM runs as bases of VLA training (docs/vlm.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prismatic.vlm.inference import VLM, load_vlm  # noqa: F401


def __getattr__(name: str) -> Any:  # keep `import prismatic.vlm` light: load on first use
    if name in ("VLM", "load_vlm"):
        from prismatic.vlm import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'prismatic.vlm' has no attribute {name!r}")
