"""The action-head seam: one object owns an action formulation end to end.

A head decides, for the model it sits in,
  * the attention pattern (`bidirectional`: causal LM, or full attention with only padded keys masked),
  * what the action slots of a training sample hold (`target_ids`) and whether their input embeddings
    are zeroed (`zero_action_embeddings`), and what inference puts there (`parallel`: K x D placeholders
    and the stop token, predicted in one forward pass; else nothing, tokens are generated one by one),
  * the training loss and its outputs (`training_output`) and the metrics read from them (`metrics`),
  * prediction: a normalised chunk [B, T, D] (`predict`).

The sequence layout around it is shared by every head (`prismatic.models.sample_encoder`):

    [BOS] [patches of camera 1 .. camera N] [proprio] prompt ... "Out:" [empty "▁"] [action slots] [stop]

The rows a parallel head reads are the last-layer hidden states one position before each action slot
(`slot_rows`), as OpenVLA-OFT does: row i predicts slot i + 1, like a causal LM's next token.
Registered heads: `ACTION_HEADS` (a new head is a new file with `@ACTION_HEADS.register("name")`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from prismatic.constants import IGNORE_INDEX
from prismatic.models.action_tokenizer import ActionTokenizer
from prismatic.util.registry import Registry

ACTION_HEADS: Registry[type[ActionHead]] = Registry("action head", flag="action_head")


@dataclass
class HeadOutput:
    """What a head's training forward returns (tensors keep their graph; `loss` is what backward uses)."""

    loss: torch.Tensor
    # Token heads: logits [N, vocab] and targets [N] of the labelled positions, with each row's sample [N].
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    row_samples: torch.Tensor | None = None
    # Continuous heads: predicted and ground-truth normalised chunks [B, T, D].
    predicted: torch.Tensor | None = None
    actions: torch.Tensor | None = None


def slot_rows(hidden: torch.Tensor, action_mask: torch.Tensor, n_slots: int) -> torch.Tensor:
    """Hidden states one row before each action slot: [B, S, H] + slot mask [B, S] -> [B, n_slots, H].

    Every sample has exactly `n_slots` slots (the encoder guarantees it), in sequence order."""
    before = action_mask[:, 1:]  # row t is read for the slot at t + 1
    rows = hidden[:, :-1][before]
    if rows.shape[0] != hidden.shape[0] * n_slots:
        counts = before.sum(dim=1).tolist()
        raise ValueError(f"expected {n_slots} action slots per sample, found {counts}")
    return rows.view(hidden.shape[0], n_slots, hidden.shape[-1])


def bidirectional_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, S] padding mask (1 = real token) -> additive [B, 1, S, S] mask: every query attends to every real key.

    Passed to the decoder as a 4D mask, transformers uses it as given (no causal part is added: its SDPA
    path sets `is_causal` only when no mask is passed, its eager path adds the mask to the scores). This
    is the whole of OpenVLA-OFT's transformers fork, done through the public mask argument."""
    keep = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, S]
    mask = torch.zeros(keep.shape, dtype=dtype, device=attention_mask.device).masked_fill(~keep, torch.finfo(dtype).min)
    return mask.expand(-1, 1, attention_mask.shape[1], -1)


class ActionHead(nn.Module, ABC):
    """Base class of the registered heads. Subclasses set the class flags and implement the three methods."""

    # fmt: off
    parallel: ClassVar[bool] = False                # all K x D slots in one forward pass (placeholders at inference)
    bidirectional: ClassVar[bool] = False           # full attention over the sequence (else causal)
    zero_action_embeddings: ClassVar[bool] = False  # the slots' input embeddings are zeros (OFT)
    uses_lm_head: ClassVar[bool] = True             # reads the LLM's logits (else the LM head gets no gradient)
    # fmt: on

    def __init__(self, config: Any) -> None:  # an OpenVLAConfig (which imports this module)
        super().__init__()
        self.chunk_len = int(config.chunk_len)
        self.action_dim = config.action_dim  # None for the autoregressive bins head (from the statistics)
        self.hidden_size = int(config.text_config.hidden_size)
        self.action_tokenizer = ActionTokenizer(vocab_size=config.base_vocab_size, n_bins=config.n_action_bins)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.parallel and not cls.bidirectional:
            raise TypeError(f"{cls.__name__}: a parallel head must attend bidirectionally (slots see each other)")

    # -- sequence layout --------------------------------------------------------------------------
    def target_ids(self, actions: np.ndarray) -> list[int]:
        """Ids in the action slots of a training sample: the 256-bin tokens of every action of the chunk,
        in time-major order (OpenVLA and OpenVLA-OFT both train on these ids)."""
        return self.action_tokenizer.encode(np.asarray(actions).reshape(-1)).tolist()

    def num_slots(self, action_dim: int | None = None) -> int:
        dim = self.action_dim if self.action_dim is not None else action_dim
        if dim is None:
            raise ValueError("the action dimension is unknown: set config.action_dim or pass the statistics' key")
        return self.chunk_len * int(dim)

    # -- training -----------------------------------------------------------------------------------
    @abstractmethod
    def training_output(
        self,
        model: nn.Module,
        hidden: torch.Tensor,
        labels: torch.Tensor,
        action_mask: torch.Tensor | None,
        actions: torch.Tensor | None,
    ) -> HeadOutput:
        """Loss from the last-layer hidden states [B, S, H] of the multimodal sequence.

        `labels` / `action_mask` are in multimodal space (patches already spliced in: IGNORE / False)."""

    @abstractmethod
    def metrics(self, out: HeadOutput, dataset_names: Sequence[str] | None = None) -> dict[str, float]:
        """Scalars to log for one micro-batch (per dataset as `<metric>/<dataset>` when names are given)."""

    # -- inference ----------------------------------------------------------------------------------
    @abstractmethod
    def predict(self, model: nn.Module, inputs: dict[str, Any], action_dim: int, **kwargs: Any) -> torch.Tensor:
        """Normalised actions [B, chunk_len, action_dim] (a float tensor; bin centres in float64) for complete inference inputs
        (`SampleEncoder.inference_inputs` or `complete_inference_ids`)."""


def label_rows(labels: torch.Tensor) -> torch.Tensor:
    """Mask [B, S - 1] of the rows whose next token is labelled (the rows a next-token loss reads)."""
    return labels[:, 1:] != IGNORE_INDEX
