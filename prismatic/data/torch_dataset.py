"""Torch side of the data pipeline: an IterableDataset over the tf.data stream, the per-frame transform
into model inputs (through the model's `SampleEncoder`), and the padding collator.

Action tokens are appended as ids directly (never detokenised and re-tokenised): the prompt up to
"Out:" is tokenised, then (for Llama-2 tokenizers) the lone "▁" piece, then the action ids, then EOS.
That is exactly the sequence the original obtained by tokenising "...Out: " + decoded action chars + "</s>"
(tests prove it), without relying on the tokenizer to round-trip rare characters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import IterableDataset

from prismatic.constants import IGNORE_INDEX, LLAMA2_EMPTY_TOKEN_ID
from prismatic.data.errors import DataError
from prismatic.models.sample_encoder import SampleEncoder

ImageTransform = Callable[[Image.Image], Any]  # -> torch.Tensor or dict[str, torch.Tensor]


def has_empty_piece(tokenizer: Any, token_id: int | None = LLAMA2_EMPTY_TOKEN_ID) -> bool:
    """Whether `token_id` is the tokenizer's lone '▁' piece, which Llama-2 style tokenizers put between
    "Out:" and the first action token (Llama-2: 29871; small vocabularies have no such id)."""
    if token_id is None or token_id >= len(tokenizer):
        return False
    try:
        return tokenizer.convert_ids_to_tokens(token_id) == "▁"
    except Exception:
        return False


@dataclass
class RLDSBatchTransform:
    """One RLDS frame (numpy) -> model inputs, laid out by the model's `SampleEncoder` (the one inference
    uses): {pixel_values, input_ids, labels, action_mask, actions, [proprio], dataset_name}.

    Reads the encoder's cameras (`image_<camera>`), the proprio state, and `chunk_len` actions starting at
    the current step (the pipeline's `future_action_window_size` must give at least chunk_len - 1 more)."""

    encoder: SampleEncoder

    def __call__(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        obs = frame["observation"]
        actions = np.asarray(frame["action"])  # [window + future, D]
        # The current step is the last of the observation window (the original's [0] for window_size=1).
        window = np.asarray(obs["pad_mask"]).shape[0] if "pad_mask" in obs else 1
        chunk_len = self.encoder.chunk_len
        if actions.shape[0] < window - 1 + chunk_len:
            raise DataError(
                f"the frame holds {actions.shape[0]} action(s) for a window of {window}; the model predicts chunks of "
                f"{chunk_len}: set the pipeline's future_action_window_size to {chunk_len - 1}"
            )
        chunk = actions[window - 1 : window - 1 + chunk_len]
        images = []
        for camera in self.encoder.cameras:
            key = f"image_{camera}"
            if key not in obs:
                raise DataError(f"Frame has no {key!r}; it has {sorted(obs)}. Load that camera view.")
            images.append(Image.fromarray(np.asarray(obs[key])[-1]))
        proprio = None
        if self.encoder.proprio_dim:
            if "proprio" not in obs:
                raise DataError(f"Frame has no 'proprio'; it has {sorted(obs)}. Load the proprioceptive state.")
            proprio = np.asarray(obs["proprio"])[-1]
        instruction = frame["task"]["language_instruction"]
        instruction = instruction.decode() if isinstance(instruction, bytes) else str(instruction)
        out = self.encoder.training_sample(instruction, chunk, images, proprio)
        name = frame["dataset_name"]
        out["dataset_name"] = name.decode() if isinstance(name, bytes) else str(name)
        return out


@dataclass
class PaddedCollator:
    """Right-pad input_ids (pad id) and labels (IGNORE_INDEX), build attention_mask, stack pixel_values."""

    pad_token_id: int
    model_max_length: int
    padding_side: str = "right"

    def __post_init__(self) -> None:
        if self.padding_side != "right":
            raise DataError(f"padding_side must be 'right' for training, got {self.padding_side!r}")

    def __call__(self, instances: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not instances:
            raise DataError("Cannot collate an empty batch")
        input_ids = pad_sequence(
            [x["input_ids"] for x in instances], batch_first=True, padding_value=self.pad_token_id
        )
        labels = pad_sequence([x["labels"] for x in instances], batch_first=True, padding_value=IGNORE_INDEX)
        input_ids, labels = input_ids[:, : self.model_max_length], labels[:, : self.model_max_length]
        lengths = torch.tensor([min(len(x["input_ids"]), self.model_max_length) for x in instances])
        attention_mask = torch.arange(input_ids.shape[1])[None] < lengths[:, None]
        pv = [x["pixel_values"] for x in instances]
        if isinstance(pv[0], torch.Tensor):
            pixel_values: Any = torch.stack(pv)
        elif isinstance(pv[0], Mapping):
            pixel_values = {k: torch.stack([p[k] for p in pv]) for k in pv[0]}
        else:
            raise DataError(f"pixel_values must be a tensor or a dict of tensors, got {type(pv[0]).__name__}")
        out = {
            "pixel_values": pixel_values,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
        }
        if "action_mask" in instances[0]:  # the slots: False on padding
            slots = pad_sequence([x["action_mask"] for x in instances], batch_first=True, padding_value=False)
            out["action_mask"] = slots[:, : self.model_max_length]
        for key in ("actions", "proprio"):  # fixed shapes per model: stacked
            if key in instances[0]:
                out[key] = torch.stack([torch.as_tensor(x[key]) for x in instances])
        if "dataset_name" in instances[0]:
            out["dataset_names"] = [x["dataset_name"] for x in instances]
        return out


class RLDSDataset(IterableDataset):
    """Frames from `prismatic.data.pipeline.make_dataset`, transformed for the model.

    TensorFlow does the parallel work, so use it with `DataLoader(num_workers=0)`; each distributed
    rank passes its `rank` / `world_size` and gets a different stream.
    """

    def __init__(
        self,
        data_root: str | Path,
        mixture: Any,
        batch_transform: Callable[[Mapping[str, Any]], dict[str, Any]],
        config: Any = None,
        *,
        train: bool = True,
        rank: int = 0,
        world_size: int = 1,
        skip: int = 0,
    ) -> None:
        from prismatic.data.pipeline import PipelineConfig, make_dataset

        self.batch_transform = batch_transform
        self.stream = make_dataset(
            data_root, mixture, config or PipelineConfig(), train=train, rank=rank, world_size=world_size, skip=skip
        )
        self.dataset_statistics = self.stream.statistics

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for frame in iter_frames(self.stream.dataset):
            yield self.batch_transform(frame)

    def __len__(self) -> int:
        return self.stream.length


FETCH_CHUNK = 32  # frames per call into TensorFlow


def iter_frames(ds: Any, chunk: int = FETCH_CHUNK) -> Iterator[dict[str, Any]]:
    """The frames of a tf.data stream as numpy trees, in order.

    Each call into a TensorFlow iterator costs ~0.5 ms of Python work (structure flattening, numpy
    conversion) whatever the element's size: for small frames that is a third of the input side.
    When every frame has a fully known shape (one dataset, or a mixture whose datasets agree), frames
    are fetched `chunk` at a time and split here, which gives the same sequence; otherwise one by one.
    """
    import tensorflow as tf

    specs = tf.nest.flatten(ds.element_spec)
    if chunk <= 1 or not all(s.shape.is_fully_defined() for s in specs):
        yield from ds.as_numpy_iterator()
        return
    for block in ds.batch(chunk).as_numpy_iterator():
        n = len(tf.nest.flatten(block)[0])
        for i in range(n):
            yield _index_tree(block, i)


def _index_tree(tree: Any, i: int) -> Any:
    if isinstance(tree, Mapping):
        return {k: _index_tree(v, i) for k, v in tree.items()}
    return tree[i]
