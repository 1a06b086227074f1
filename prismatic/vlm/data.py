"""Conversation data for the VLM stages: the JSON read and checked up front, the training stream, the collator.

The format is LLaVA-v1.5's (docs/vlm.md): a JSON list of `{"id", "image" (relative to the image dir; absent
for text-only entries), "conversations": [{"from": "human" | "gpt", "value": str}, ...]}`.

`load_conversations` reads and checks every entry (structure, turn order, an assistant turn, the image file)
and raises one error listing the problems, before a model is built. `ConversationDataset` is an endless
stream for the training loop: pass after pass over the entries in a fresh seeded order each pass, rank r of
W taking every W-th sample; sample k of a rank is computed directly, so resuming after `skip` samples costs
nothing and gives the same stream (exact resume). Text-only entries get placeholder pixels and are marked
in the batch's `image_mask`; the model masks their patches out (`PrismaticForConditionalGeneration.forward`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset

from prismatic.data.torch_dataset import PaddedCollator
from prismatic.vlm.conversation import ConversationDataError, ConversationEncoder, conversation_problems

MAX_LISTED = 10  # problems shown in an error (the total is given)


def load_conversations(json_path: str | Path, image_dir: str | Path, sample_format: str) -> list[dict[str, Any]]:
    """The entries of a conversation JSON, each checked for `sample_format` and its image present."""
    json_path, image_dir = Path(json_path), Path(image_dir)
    try:
        entries = json.loads(json_path.read_text())
    except UnicodeDecodeError as e:
        raise ConversationDataError(f"{json_path} is not a UTF-8 text file ({e}): pass the conversation JSON") from e
    except json.JSONDecodeError as e:
        raise ConversationDataError(
            f"{json_path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno} (expected a list of "
            '{"id", "image", "conversations": [...]} entries, as LLaVA-v1.5\'s llava_v1_5_mix665k.json)'
        ) from e
    if not isinstance(entries, list) or not entries:
        raise ConversationDataError(
            f"{json_path} holds {'an empty list' if entries == [] else 'a ' + type(entries).__name__}; expected a "
            'non-empty list of {"id", "image", "conversations": [...]} entries'
        )
    problems = []
    for i, entry in enumerate(entries):
        where = f"entry {i}" + (f" (id {entry.get('id')!r})" if isinstance(entry, dict) and "id" in entry else "")
        found = conversation_problems(entry, sample_format)
        if not found and "image" in entry and not (image_dir / entry["image"]).is_file():
            found = [f"image {entry['image']!r} is not a file under --data.image_dir={str(image_dir)!r}"]
        problems += [f"{where}: {p}" for p in found]
    if problems:
        shown = "\n  - ".join(problems[:MAX_LISTED])
        more = f"\n  (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise ConversationDataError(f"{json_path}: {len(problems)} problem(s) in its entries:\n  - {shown}{more}")
    return entries


class ConversationDataset(IterableDataset):
    """This rank's endless stream of encoded samples (see the module docstring); `len` is one pass's size."""

    def __init__(
        self,
        entries: Sequence[dict[str, Any]],
        image_dir: str | Path,
        encoder: ConversationEncoder,
        image_transform: Any,
        sample_format: str,
        seed: int = 7,
        rank: int = 0,
        world_size: int = 1,
        skip: int = 0,
    ) -> None:
        self.entries, self.image_dir = entries, Path(image_dir)
        self.encoder, self.image_transform, self.sample_format = encoder, image_transform, sample_format
        self.seed, self.rank, self.world_size, self.skip = seed, rank, world_size, skip
        self._order: tuple[int, np.ndarray] | None = None
        self.collator = VLMCollator(encoder.tokenizer.pad_token_id, encoder.max_length)

    def __len__(self) -> int:
        return len(self.entries)

    def index(self, k: int) -> int:
        """Entry index of this rank's k-th sample: global position k * W + rank, in pass `pos // N`'s order."""
        n = len(self.entries)
        epoch, pos = divmod(k * self.world_size + self.rank, n)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(n))
        return int(self._order[1][pos])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        k = self.skip
        while True:
            yield self.sample(self.index(k))
            k += 1

    def sample(self, i: int) -> dict[str, Any]:
        entry = self.entries[i]
        has_image = "image" in entry
        ids, labels = self.encoder.encode(entry["conversations"], self.sample_format, has_image)
        if has_image:
            with Image.open(self.image_dir / entry["image"]) as image:
                pixel_values = self.image_transform(image.convert("RGB"))
        else:  # placeholder pixels, never attended to (image_mask)
            pixel_values = torch.zeros(self.placeholder_shape)
        return {"pixel_values": pixel_values, "input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "has_image": has_image}  # fmt: skip

    @property
    def placeholder_shape(self) -> tuple[int, ...]:
        height, width = self.image_transform.image_size
        return (3 * len(self.image_transform.featurizers), height, width)


class VLMCollator:
    """Right-pads a batch (`PaddedCollator`); adds `image_mask` [B] when some rows are text-only."""

    def __init__(self, pad_token_id: int, model_max_length: int) -> None:
        self.padded = PaddedCollator(pad_token_id=pad_token_id, model_max_length=model_max_length)

    def __call__(self, instances: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = self.padded(instances)
        has_image = [bool(x.get("has_image", True)) for x in instances]
        if not all(has_image):
            batch["image_mask"] = torch.tensor(has_image)
        return batch
