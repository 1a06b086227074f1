"""OpenVLA-OFT's parallel decoding: all K x D action slots are predicted in one forward pass.

The slots hold zeroed embeddings (action tokens in training, placeholders at inference) followed by the
stop token; attention is bidirectional over the whole sequence (only padded keys masked), and the
hidden state one row before each slot is read, as a causal LM reads its next token.

Two heads share this layout:
  * `l1-regression` (OFT's default): an MLP-ResNet maps the (K, D x H) rows to a continuous (K, D) chunk,
    trained with the L1 loss against the normalised ground truth;
  * `bins-parallel` (OFT's "discrete" variant): the LM head's argmax at each row is a 256-bin token,
    trained with the LM's cross-entropy on the slots and the stop token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from prismatic.models.heads.base import ACTION_HEADS, ActionHead, HeadOutput, slot_rows
from prismatic.models.heads.bins import token_metrics, token_training_output


class ParallelHead(ActionHead):
    parallel = True
    bidirectional = True
    zero_action_embeddings = True

    def slot_hidden(self, model: nn.Module, inputs: dict[str, Any], action_dim: int) -> torch.Tensor:
        """Last-layer hidden states one row before each slot: [B, K x D, H]."""
        hidden, action_mask = model.last_hidden_state(**inputs)
        return slot_rows(hidden, action_mask, self.num_slots(action_dim))


class ResidualMLPBlock(nn.Module):
    """x + ReLU(Linear(LayerNorm(x))) (pre-norm; `ffn.0` / `ffn.1` as in OFT's checkpoints)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LayerNorm -> Linear -> ReLU -> blocks -> LayerNorm -> Linear (names as in OFT's `action_head--*.pt`)."""

    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(ResidualMLPBlock(hidden_dim) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


def l1_metrics(predicted: torch.Tensor, actions: torch.Tensor, dataset_names: Sequence[str] | None) -> dict[str, float]:
    """L1 of normalised chunks [B, T, D]: overall, current step, later steps, per dimension and per dataset."""
    from prismatic.training.metrics import compute_l1_metrics

    return compute_l1_metrics(predicted.detach().float(), actions.float(), dataset_names)


@ACTION_HEADS.register("l1-regression")
class L1RegressionHead(ParallelHead):
    """Continuous chunks from an MLP-ResNet on the slot rows, trained with L1 (OpenVLA-OFT)."""

    uses_lm_head = False

    def __init__(self, config) -> None:
        super().__init__(config)
        h, d = self.hidden_size, int(config.action_dim)
        # One MLP per chunk step, on the D rows of that step side by side: input D x H, width H (OFT's sizes).
        self.model = MLPResNet(num_blocks=2, input_dim=d * h, hidden_dim=h, output_dim=d)

    def chunk(self, rows: torch.Tensor) -> torch.Tensor:
        """Slot rows [B, K x D, H] -> normalised chunk [B, K, D]."""
        b = rows.shape[0]
        return self.model(rows.reshape(b, self.chunk_len, -1))

    def training_output(self, model, hidden, labels, action_mask=None, actions=None) -> HeadOutput:
        if action_mask is None or actions is None:
            raise ValueError("the l1-regression head trains on `action_mask` and `actions` (the collator provides them)")
        predicted = self.chunk(slot_rows(hidden, action_mask, self.num_slots()))
        actions = actions.to(predicted.dtype)
        if tuple(actions.shape) != tuple(predicted.shape):
            raise ValueError(f"ground-truth actions have shape {tuple(actions.shape)}, the head predicts {tuple(predicted.shape)}")
        loss = nn.functional.l1_loss(predicted.float(), actions.float())
        return HeadOutput(loss=loss, predicted=predicted, actions=actions)

    def metrics(self, out: HeadOutput, dataset_names: Sequence[str] | None = None) -> dict[str, float]:
        return l1_metrics(out.predicted, out.actions, dataset_names)

    def predict(self, model: nn.Module, inputs: dict[str, Any], action_dim: int, **kwargs: Any) -> torch.Tensor:
        return self.chunk(self.slot_hidden(model, inputs, action_dim)).float()


@ACTION_HEADS.register("bins-parallel")
class ParallelBinHead(ParallelHead):
    """256-bin tokens for all slots in one pass: the LM head's argmax at each slot row (OpenVLA-OFT, discrete)."""

    def training_output(self, model, hidden, labels, action_mask=None, actions=None) -> HeadOutput:
        return token_training_output(model, hidden, labels)

    def metrics(self, out: HeadOutput, dataset_names: Sequence[str] | None = None) -> dict[str, float]:
        return token_metrics(self, out, dataset_names)

    def predict(self, model: nn.Module, inputs: dict[str, Any], action_dim: int, **kwargs: Any) -> torch.Tensor:
        rows = self.slot_hidden(model, inputs, action_dim)
        ids = model.get_output_embeddings()(rows).argmax(dim=-1)
        return torch.as_tensor(self.action_tokenizer.decode(ids.cpu().numpy())).view(rows.shape[0], self.chunk_len, action_dim)
