"""The one place that lays out a VLA's input: prompt, camera images, proprio and action slots.

Training (`SampleEncoder.training_sample`, used by the RLDS transform) and inference
(`SampleEncoder.inference_inputs`, used by `VLA.predict_*`; `complete_inference_ids` for processor
output, used by the model's own `predict_*`) build the same token sequence up to the actions:

    BOS + prompt ("In: What action should the robot take to {instruction}?\\nOut:") + the LLM's lone "▁"
    then, in training:    the K x D action tokens + stop        (labels: those ids, IGNORE before)
         at inference:    nothing (autoregressive heads generate) or K x D placeholders + stop (parallel heads)

The "▁" id comes from the model config (`OpenVLAConfig.empty_token_id`: 29871 for Llama-2, 28705 for
Mistral, none for tokenizers without that piece), so a backbone is trained and queried with the same
ids. `pixel_values` stacks the cameras on the channel axis in `cameras` order (each image gives
3 x featurizers channels), the layout the vision backbone splits again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from prismatic.constants import IGNORE_INDEX
from prismatic.models.action_tokenizer import ActionTokenizer
from prismatic.models.llm.prompting import VLA_QUESTION, get_prompt_builder, vla_instruction

PLACEHOLDER_ID = 1  # parallel heads' inference slots (OpenVLA-OFT's id; their embeddings are zeroed)
PROMPT_CACHE_SIZE = 65_536  # instructions whose prompt ids an encoder keeps (every frame of an episode shares one)


class EncodingError(ValueError):
    """A sample does not fit the model's input contract (cameras, proprio, chunk length, action size)."""


def complete_inference_ids(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    empty_token_id: int | None,
    n_slots: int,
    stop_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Left-padded prompt ids [B, L] -> (ids, attention mask, slot mask or None) as the model reads them.

    Appends `empty_token_id` (unless every row already ends with it, as both originals do), then for
    parallel heads (`n_slots` > 0) the placeholders and the stop token."""
    tail: list[int] = []
    if empty_token_id is not None and not bool(torch.all(input_ids[:, -1] == empty_token_id)):
        tail.append(int(empty_token_id))
    if n_slots:
        tail += [PLACEHOLDER_ID] * n_slots + [int(stop_token_id)]
    slots = None
    if tail:
        b = input_ids.shape[0]
        column = torch.tensor(tail, dtype=input_ids.dtype, device=input_ids.device).expand(b, -1)
        input_ids = torch.cat([input_ids, column], dim=1)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(b, len(tail))], dim=1)
    if n_slots:
        slots = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
        slots[:, -n_slots - 1 : -1] = True
    return input_ids, attention_mask, slots


@dataclass(frozen=True)
class SampleEncoder:
    """Builds model inputs for one model: `SampleEncoder.for_model(vla.model.config, tokenizer, image_transform)`."""

    tokenizer: Any  # a transformers tokenizer
    image_transform: Callable[[Any], torch.Tensor]  # one image -> [3 x featurizers, H, W]
    action_tokenizer: ActionTokenizer
    prompt_builder: str = "pure"
    empty_token_id: int | None = None
    cameras: tuple[str, ...] = ("primary",)
    proprio_dim: int = 0
    chunk_len: int = 1
    action_dim: int | None = None  # None: any (the bins head reads it from the statistics)
    parallel: bool = False  # inference slots are placeholders predicted in one pass
    predict_stop_token: bool = True
    _prompt_cache: dict[str, tuple[int, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        get_prompt_builder(self.prompt_builder)  # fail now on an unknown name (lists the valid ones)
        if self.tokenizer.eos_token_id is None:
            raise EncodingError("the tokenizer has no eos_token_id; the action sequence must end with it")
        if self.parallel and self.action_dim is None:
            raise EncodingError("a parallel head needs a fixed action_dim (config.action_dim)")

    @classmethod
    def for_model(cls, config: Any, tokenizer: Any, image_transform: Callable[[Any], torch.Tensor]) -> SampleEncoder:
        """The encoder of a model config (`OpenVLAConfig`): its prompt format, empty token, head layout."""
        from prismatic.models.heads import ACTION_HEADS

        return cls(
            tokenizer=tokenizer,
            image_transform=image_transform,
            action_tokenizer=ActionTokenizer(vocab_size=config.base_vocab_size, n_bins=config.n_action_bins),
            prompt_builder=config.prompt_builder,
            empty_token_id=config.empty_token_id,
            cameras=tuple(config.cameras),
            proprio_dim=int(config.proprio_dim),
            chunk_len=int(config.chunk_len),
            action_dim=config.action_dim,
            parallel=ACTION_HEADS.get(config.action_head).parallel,
        )

    # -- text ---------------------------------------------------------------------------------------
    def prompt_ids(self, instruction: str) -> list[int]:
        """BOS (as the tokenizer adds it) + the prompt up to "Out:" (what the processor tokenises).

        Cached per instruction: the frames of an episode share it, and tokenising it again cost 50-90 us per frame
        (scripts/bench_input.py); the oldest entry goes once PROMPT_CACHE_SIZE are kept."""
        ids = self._prompt_cache.get(instruction)
        if ids is None:
            ids = tuple(self._tokenize_prompt(instruction))
            if len(self._prompt_cache) >= PROMPT_CACHE_SIZE:
                self._prompt_cache.pop(next(iter(self._prompt_cache)), None)
            self._prompt_cache[instruction] = ids
        return list(ids)

    def _tokenize_prompt(self, instruction: str) -> list[int]:
        """`prompt_ids` without the cache."""
        builder = get_prompt_builder(self.prompt_builder)
        text = builder.get_potential_prompt(VLA_QUESTION.format(instruction=vla_instruction(instruction)))
        return list(self.tokenizer(text, add_special_tokens=True).input_ids)

    def context_ids(self, instruction: str) -> list[int]:
        """Everything before the first action slot: the prompt and the empty token."""
        ids = self.prompt_ids(instruction)
        return ids + ([self.empty_token_id] if self.empty_token_id is not None else [])

    @property
    def stop_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    # -- images and proprio -------------------------------------------------------------------------
    def pixel_values(self, images: Any, where: str = "the sample") -> torch.Tensor:
        """One image per camera (a sequence in `cameras` order; a bare image for one camera) -> [C, H, W]."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) != len(self.cameras):
            raise EncodingError(
                f"{where} has {len(images)} camera image(s) but the model reads {len(self.cameras)}: "
                f"{list(self.cameras)} (in this order)"
            )
        return torch.cat([self.image_transform(img) for img in images], dim=0)

    def _proprio(self, proprio: Any) -> torch.Tensor | None:
        if self.proprio_dim == 0:
            if proprio is not None:
                raise EncodingError("this model takes no proprioceptive state (proprio_dim = 0); drop `proprio`")
            return None
        if proprio is None:
            raise EncodingError(f"this model reads a {self.proprio_dim}-D proprioceptive state: pass `proprio`")
        state = torch.tensor(np.asarray(proprio, dtype=np.float32)).reshape(-1)
        if state.numel() != self.proprio_dim:
            raise EncodingError(f"proprio has {state.numel()} values, the model reads {self.proprio_dim}")
        return state

    # -- training -----------------------------------------------------------------------------------
    def tokens(self, instruction: str, actions: np.ndarray) -> dict[str, torch.Tensor]:
        """The text side of a training sample: input_ids, labels (IGNORE but for the action tokens and the
        stop token) and action_mask (the slots), for the normalised chunk [chunk_len, D] (or [D] for one)."""
        chunk = self._chunk(actions)
        context = self.context_ids(instruction)
        targets = self.action_tokenizer.encode(chunk.reshape(-1)).tolist()
        input_ids = torch.tensor(context + targets + [self.stop_token_id], dtype=torch.long)
        labels = input_ids.clone()
        labels[: len(context)] = IGNORE_INDEX  # loss only on the action tokens (+ stop)
        if not self.predict_stop_token:
            labels[-1] = IGNORE_INDEX
        action_mask = torch.zeros(len(input_ids), dtype=torch.bool)
        action_mask[len(context) : len(context) + len(targets)] = True
        return {"input_ids": input_ids, "labels": labels, "action_mask": action_mask}

    def _chunk(self, actions: np.ndarray) -> np.ndarray:
        chunk = np.array(actions, dtype=np.float32)
        chunk = chunk.reshape(1, -1) if chunk.ndim == 1 else chunk
        if chunk.ndim != 2 or chunk.shape[0] != self.chunk_len:
            raise EncodingError(f"expected a chunk of {self.chunk_len} action(s) [T, D], got shape {tuple(np.shape(actions))}")
        if self.action_dim is not None and chunk.shape[1] != self.action_dim:
            raise EncodingError(f"actions have {chunk.shape[1]} dimensions, the model predicts {self.action_dim}")
        return chunk

    def training_sample(self, instruction: str, actions: np.ndarray, images: Any, proprio: Any = None) -> dict[str, Any]:
        """One training sample: `tokens` plus pixel_values (the cameras), actions [chunk_len, D] (float32,
        what continuous heads regress to) and, for models that read it, proprio [P] (normalised)."""
        out: dict[str, Any] = dict(self.tokens(instruction, actions))
        out["pixel_values"] = self.pixel_values(images)
        out["actions"] = torch.from_numpy(self._chunk(actions))
        state = self._proprio(proprio)
        if state is not None:
            out["proprio"] = state
        return out

    # -- inference ----------------------------------------------------------------------------------
    def inference_inputs(self, instructions: Sequence[str], images: Sequence[Any], proprio: Any = None) -> dict[str, Any]:
        """A left-padded batch as the model reads it (input_ids with their slots, attention_mask,
        action_mask, pixel_values; `proprio` [B, P] is passed through as given)."""
        if len(images) != len(instructions):
            raise EncodingError(f"got {len(images)} images but {len(instructions)} instructions")
        prompts = [self.prompt_ids(i) for i in instructions]
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
        n_slots = self.chunk_len * self.action_dim if self.parallel else 0
        ids, mask, slots = complete_inference_ids(ids, mask, self.empty_token_id, n_slots, self.stop_token_id)
        out = {
            "input_ids": ids,
            "attention_mask": mask,
            "action_mask": slots,
            "pixel_values": torch.stack([self.pixel_values(img, f"images[{b}]") for b, img in enumerate(images)]),
        }
        if proprio is not None:
            out["proprio"] = proprio
        elif self.proprio_dim:
            raise EncodingError(f"this model reads a {self.proprio_dim}-D proprioceptive state: pass `proprio`")
        return out
