"""Which parameters train in each stage (set with requires_grad; the optimizer sees only those)."""

from __future__ import annotations

import torch.nn as nn

from prismatic.training.config import Stage


def last_layer_modules(model: nn.Module) -> list[nn.Module]:
    """The LLM's input embeddings, last decoder layer and output head (the original's choice)."""
    decoder = model.get_decoder()
    return [model.get_input_embeddings(), decoder.layers[-1], model.get_output_embeddings()]


def apply_stage(model: nn.Module, stage: Stage | str) -> dict[str, int]:
    """Freeze / unfreeze for `stage`; returns trainable and total parameter counts."""
    stage = Stage(stage)
    vision, projector, llm = model.vision_backbone, model.projector, model.language_model
    vision.requires_grad_(stage in (Stage.FULL, Stage.SANDWICH))
    projector.requires_grad_(stage is not Stage.LAST_LAYER)
    llm.requires_grad_(stage in (Stage.FULL, Stage.FROZEN_VISION))
    if stage in (Stage.SANDWICH, Stage.LAST_LAYER):
        for module in last_layer_modules(model):
            module.requires_grad_(True)
    for module in vision.unused_modules():  # never in the forward: no gradient, no optimizer state
        module.requires_grad_(False)
    for name in ("action_head", "proprio_projector"):  # a VLA's own modules always train (new in fine-tuning)
        if isinstance(extra := getattr(model, name, None), nn.Module):
            extra.requires_grad_(True)
    head = getattr(model, "action_head", None)
    if head is not None and not head.uses_lm_head:  # outside the forward: no gradient, no optimizer state
        lm_head = model.get_output_embeddings()
        if lm_head.weight is not model.get_input_embeddings().weight:  # (tied: it still trains as the input)
            lm_head.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": sum(p.numel() for p in model.parameters())}
