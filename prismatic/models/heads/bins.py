"""OpenVLA's head: each action dimension is one of 256 bin tokens, generated one after another by the
causal LLM (`generate_action_tokens`: one prefill, then one cached step per token). With chunk_len K
the K x D tokens of a chunk are generated in time-major order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from prismatic.models.heads.base import ACTION_HEADS, ActionHead, HeadOutput, label_rows


def token_training_output(model: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> HeadOutput:
    """Next-token cross-entropy at the labelled positions only (the LM head runs on those rows alone)."""
    selected = label_rows(labels)
    logits = model.get_output_embeddings()(hidden[:, :-1][selected])
    targets = labels[:, 1:][selected]
    loss = nn.functional.cross_entropy(logits.float(), targets) if targets.numel() else logits.sum() * 0.0
    return HeadOutput(loss=loss, logits=logits, targets=targets, row_samples=selected.nonzero()[:, 0])


def token_metrics(head: ActionHead, out: HeadOutput, dataset_names: Sequence[str] | None) -> dict[str, float]:
    from prismatic.training.metrics import compute_action_metrics

    return compute_action_metrics(out.logits.detach(), out.targets, head.action_tokenizer, out.row_samples, dataset_names)


@ACTION_HEADS.register("bins")
class BinTokenHead(ActionHead):
    """256-bin action tokens, decoded autoregressively (OpenVLA)."""

    def training_output(self, model, hidden, labels, action_mask=None, actions=None) -> HeadOutput:
        return token_training_output(model, hidden, labels)

    def metrics(self, out: HeadOutput, dataset_names: Sequence[str] | None = None) -> dict[str, float]:
        return token_metrics(self, out, dataset_names)

    def predict(self, model: nn.Module, inputs: dict[str, Any], action_dim: int, do_sample: bool = False,
                temperature: float = 1.0, **kwargs: Any) -> torch.Tensor:  # fmt: skip
        ids = model.generate_action_tokens(
            inputs["input_ids"], inputs["pixel_values"], inputs.get("attention_mask"), n_tokens=self.chunk_len * action_dim,
            do_sample=do_sample, temperature=temperature, proprio=inputs.get("proprio"), **kwargs,
        )  # fmt: skip
        return torch.as_tensor(self.action_tokenizer.decode(ids.cpu().numpy())).view(ids.shape[0], self.chunk_len, action_dim)
