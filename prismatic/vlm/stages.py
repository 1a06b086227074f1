"""The Prismatic VLM training stages: which parameters train, which recipe and which sample format each uses.

    align          projector only; samples are captions (the human prompt is dropped: `<BOS> [patches] caption</s>`)
    finetune       projector + LLM; samples are conversations in the LLM's prompt format, loss on the answers
    full-finetune  vision backbone + projector + LLM (the original's `full-finetune`)
    lora-finetune  projector in full + LoRA adapters on the LLM's linear layers (ViT frozen)

The first three are the original's (prismatic-vlms `PrismaticVLM.freeze_backbones`); `lora-finetune` is
LLaVA-1.5's LoRA recipe shape on our LoRA path (`prismatic.training.lora`). A new stage is one registration.
"""

from __future__ import annotations

from dataclasses import dataclass

from prismatic.util.registry import Registry

GROUPS = ("vision_backbone", "projector", "llm_backbone")  # the native checkpoint's weight groups


@dataclass(frozen=True)
class VLMStage:
    name: str
    trains: tuple[str, ...]  # weight groups trained in full (GROUPS)
    recipe: str  # which optimisation recipe of the model it uses: "align" | "finetune"
    sample_format: str  # "caption" (align) | "conversation" (the LLM's prompt format)
    lora_on: tuple[str, ...] = ()  # groups that get LoRA adapters (their base weights stay frozen)

    @property
    def trains_llm(self) -> bool:
        return "llm_backbone" in self.trains or "llm_backbone" in self.lora_on


VLM_STAGES: Registry[VLMStage] = Registry("VLM training stage", flag="--stage")

for _stage in (
    VLMStage("align", ("projector",), "align", "caption"),
    VLMStage("finetune", ("projector", "llm_backbone"), "finetune", "conversation"),
    VLMStage("full-finetune", ("vision_backbone", "projector", "llm_backbone"), "finetune", "conversation"),
    VLMStage("lora-finetune", ("projector",), "finetune", "conversation", lora_on=("llm_backbone",)),
):
    VLM_STAGES.register(_stage.name, _stage)
