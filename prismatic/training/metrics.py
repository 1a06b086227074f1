"""Training metrics (pure, CPU-testable) and trackers (JSONL always; Weights & Biases optionally)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from prismatic.constants import IGNORE_INDEX
from prismatic.models.action_tokenizer import ActionTokenizer


def label_rows_to_samples(labels: torch.Tensor) -> torch.Tensor:
    """Sample index of each labelled position, in the order `return_label_logits` returns them."""
    return (labels[:, 1:] != IGNORE_INDEX).nonzero()[:, 0]


@torch.no_grad()
def compute_action_metrics(
    label_logits: torch.Tensor,
    label_targets: torch.Tensor,
    action_tokenizer: ActionTokenizer,
    row_samples: torch.Tensor | None = None,
    dataset_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Accuracy of the predicted action tokens and L1 error of the decoded (normalised) actions.

    Only action tokens count (the EOS target is excluded). With `dataset_names` (one per sample) and
    `row_samples`, the same metrics are also given per dataset as `<metric>/<dataset>`.
    """
    preds = label_logits.argmax(dim=-1)
    is_action = action_tokenizer.is_action_token(label_targets)
    out: dict[str, float] = {}

    def add(suffix: str, mask: torch.Tensor) -> None:
        n = int(mask.sum())
        if n == 0:
            return
        p, t = preds[mask], label_targets[mask]
        out[f"action_accuracy{suffix}"] = float((p == t).float().mean())
        l1 = (action_tokenizer.decode(p.cpu()) - action_tokenizer.decode(t.cpu())).abs().mean()
        out[f"action_l1{suffix}"] = float(l1)

    add("", is_action)
    if dataset_names is not None and row_samples is not None:
        names = [dataset_names[i] for i in row_samples.tolist()]
        for name in sorted(set(dataset_names)):
            add(f"/{name}", is_action & torch.tensor([n == name for n in names], device=is_action.device))
    return out


@torch.no_grad()
def compute_l1_metrics(
    predicted: torch.Tensor, actions: torch.Tensor, dataset_names: Sequence[str] | None = None
) -> dict[str, float]:
    """L1 error of predicted normalised chunks [B, T, D] against the ground truth: overall (`action_l1`), of
    the current step (`action_l1_current`) and of the later steps (`action_l1_future`, chunks only; OFT's
    curr/next split), per dimension (`action_l1/dim<i>`) and, with `dataset_names` (one per sample), per
    dataset (`action_l1/<dataset>`)."""
    err = (predicted - actions).abs()  # [B, T, D]
    out = {"action_l1": float(err.mean()), "action_l1_current": float(err[:, 0].mean())}
    if err.shape[1] > 1:
        out["action_l1_future"] = float(err[:, 1:].mean())
    for d, value in enumerate(err.mean(dim=(0, 1)).tolist()):
        out[f"action_l1/dim{d}"] = value
    if dataset_names is not None:
        names = list(dataset_names)
        for name in sorted(set(names)):
            rows = torch.tensor([n == name for n in names], device=err.device)
            out[f"action_l1/{name}"] = float(err[rows].mean())
    return out


class Tracker(Protocol):
    def log(self, step: int, metrics: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JSONLTracker:
    """One JSON object per logged step in <run_dir>/metrics.jsonl (appends across resumes)."""

    def __init__(self, run_dir: Path, resume_step: int = 0) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step and self.path.is_file():  # drop lines past the checkpoint we resume from
            kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif not resume_step:
            self.path.write_text("")
        self._f = self.path.open("a")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self._f.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class WandBTracker:
    def __init__(self, run_dir: Path, run_id: str, config: dict[str, Any], project: str, entity: str | None,
                 mode: str) -> None:  # fmt: skip
        try:
            import wandb
        except ImportError as e:
            raise ImportError("Weights & Biases logging needs the `train` extra: uv sync --extra train") from e
        self._run = wandb.init(project=project, entity=entity, name=run_id, id=run_id.replace("+", "-"),
                               resume="allow", dir=str(run_dir), config=config, mode=mode)  # fmt: skip

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self._run.log(metrics, step=step)

    def close(self) -> None:
        self._run.finish()


class MetricAverager:
    """Averages metrics over the micro-batches of one optimizer step."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self._sums[k] += v
            self._counts[k] += 1

    def pop(self) -> dict[str, float]:
        out = {k: self._sums[k] / self._counts[k] for k in self._sums}
        self._sums.clear()
        self._counts.clear()
        return out
