"""Chat with a VLM: `load_vlm(path).generate(image, prompt) -> str`.

    from prismatic.vlm import load_vlm
    vlm = load_vlm("runs/my-vlm+stage-finetune+x7", device="cuda", dtype=torch.bfloat16)
    vlm.generate(image, "What is on the table?")                       # one answer (greedy by default)
    vlm.generate(image, "And left of it?", history=[("What is on the table?", "a red cube")])
    vlm.generate(image, None)                                          # a caption, as the align stage trains
    vlm.generate_batch([img1, img2], ["q1", "q2"])                     # left-padded, one forward per step

The prompt goes through the `ConversationEncoder` training used (the LLM's prompt format, turn by turn), so
generation sees what training taught. `path`: a VLM run directory or one of its `checkpoints/*.pt`, or a
prismatic-vlms release directory (its ViTs from timm's weights: `vision_weights`); an align run holds no LLM,
which then comes from `llm_weights` (its Hugging Face weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from prismatic.models.modeling import PrismaticForConditionalGeneration
from prismatic.vlm.build import image_transform_of, vlm_from_checkpoint
from prismatic.vlm.checkpoints import read_vlm_checkpoint
from prismatic.vlm.conversation import ConversationEncoder


class VLM:
    """A Prismatic VLM with its tokenizer, image transform and conversation encoder."""

    def __init__(self, model: PrismaticForConditionalGeneration, tokenizer: Any, stage: str | None = None) -> None:
        self.model, self.tokenizer, self.stage = model, tokenizer, stage
        c = model.config
        self.encoder = ConversationEncoder(tokenizer, c.prompt_builder, c.llm_max_length)
        self.image_transform = image_transform_of(c)

    def prompt_text(self, message: str, history: Sequence[tuple[str, str]] = ()) -> str:
        """The formatted prompt (for display; `generate` tokenises it turn by turn, as training did)."""
        return self.encoder.prompt_text(message, history)

    @torch.inference_mode()
    def generate(
        self,
        image: Any,
        prompt: str | None,
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 1.0,
        history: Sequence[tuple[str, str]] = (),
    ) -> str:
        """The model's answer to `prompt` about `image` (a PIL image or an HxWx3 array), or a caption when
        `prompt` is None. Greedy unless `do_sample` (then seed torch for repeatable samples)."""
        return self.generate_batch([image], [prompt], max_new_tokens, do_sample, temperature, [history])[0]

    @torch.inference_mode()
    def generate_batch(
        self,
        images: Sequence[Any],
        prompts: Sequence[str | None],
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 1.0,
        histories: Sequence[Sequence[tuple[str, str]]] | None = None,
    ) -> list[str]:
        """One answer per (image, prompt), decoded together (left padding; each greedy row is its own answer)."""
        if isinstance(prompts, str) or len(images) != len(prompts):
            raise ValueError(f"pass one prompt per image: got {len(images)} image(s) and "
                             f"{'a single str' if isinstance(prompts, str) else len(prompts)} prompt(s)")  # fmt: skip
        if not prompts:
            raise ValueError("the batch is empty: pass at least one (image, prompt) pair")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        histories = histories or [()] * len(prompts)
        rows = [self.encoder.prompt_ids(p, h) for p, h in zip(prompts, histories)]
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.model.device)
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.model.device)
        pixel_values = torch.stack([self.image_transform(image) for image in images])
        sampling = {"do_sample": True, "temperature": temperature} if do_sample else {"do_sample": False}
        out = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask,
            pixel_values=pixel_values.to(device=self.model.device, dtype=self.model.dtype),
            max_new_tokens=max_new_tokens, eos_token_id=self.tokenizer.eos_token_id, pad_token_id=pad, **sampling,
        )  # fmt: skip
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def load_vlm(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    tokenizer: str | Path | None = None,
    vision_weights: str | Path | None = None,
    llm_weights: str | None = None,
) -> VLM:
    """A VLM from a run directory / `checkpoints/*.pt` (see the module docstring), in eval mode on `device`."""
    ckpt = read_vlm_checkpoint(path)
    built = vlm_from_checkpoint(ckpt, Path(tokenizer) if tokenizer else None,
                                Path(vision_weights) if vision_weights else None, llm_weights)  # fmt: skip
    model = built.model if dtype is None else built.model.to(dtype)
    return VLM(model.to(device).eval(), built.tokenizer, stage=ckpt.stage)
