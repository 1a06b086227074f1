"""The training loop, shared by VLA pretraining, full and LoRA fine-tuning, and the VLM stages.

`Trainer.__init__` builds the parts in order (tokenizer -> model -> data -> LoRA/stage -> parallelism
-> optimizer -> resume); `train()` loops over optimizer steps; `train_step()` does forward, backward
(with gradient accumulation), clipping and the optimizer step, and nothing else. What a sample is, which
parameters train and what a run saves is its `TrainingTask` (`training/task.py`: VLAs by default).

Data streams repeat forever, so there are no epochs in the loop: the number of steps comes from
`max_steps` or from `epochs` x (samples per pass / global batch) of `cfg.optim` (`--vla.*` for VLAs).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict
from typing import Any

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from prismatic.data.prefetch import BackgroundIterator
from prismatic.training.checkpoint import CheckpointManager, TrainerState
from prismatic.training.config import TrainConfig
from prismatic.training.distributed import DistInfo, init_distributed, is_fsdp, parallelize
from prismatic.training.metrics import JSONLTracker, MetricAverager, Tracker, WandBTracker
from prismatic.training.optim import build_optimizer, build_scheduler
from prismatic.training.task import TrainingTask, VLATask
from prismatic.util.io import atomic_write_json
from prismatic.util.logging import get_logger
from prismatic.util.progress import progress

log = get_logger(__name__)


class Trainer:
    def __init__(self, cfg: TrainConfig, info: DistInfo | None = None, task: TrainingTask | None = None) -> None:
        self.info = info or init_distributed(cfg.device, cfg.parallel.backend)
        cfg.validate(self.info.world_size)  # every config problem, before anything expensive
        self.cfg, self.run_dir = cfg, cfg.run_dir
        self.task = task or VLATask(cfg)  # what a sample is and what the run keeps (VLA frames by default)
        self.optim = cfg.optim  # batch sizes, steps and the optimizer's settings
        torch.manual_seed(cfg.seed + self.info.rank)
        if cfg.parallel.cpu_threads and self.info.device.type == "cpu":
            torch.set_num_threads(cfg.parallel.cpu_threads)

        log.info("building model and processor")
        self.model: nn.Module = self.task.build_model(self.info.device)
        self.task.check_data()  # before writing
        record = self.config_record()
        # LoRA: the base is frozen and rebuilt from its source, so checkpoints hold only the adapters.
        self.ckpt = CheckpointManager(self.run_dir, self.info, cfg.checkpoint.keep_last, self.task.lora is not None)
        self.ckpt.check_architecture(record["model"])  # reads only: a changed model never meets this run's checkpoints
        if self.info.is_main:
            self.ckpt.remove_stale_temporaries()  # what a killed save left (a partial checkpoint can fill a disk)
        resume = self.ckpt.resume_point() if cfg.checkpoint.resume else None  # the newest undamaged checkpoint

        log.info("building data pipeline")
        self.dataset = self.task.build_dataset(self.info, skip=resume[1].samples_seen if resume else 0)
        # Config, data, model and checkpoint are all checked: only now is the run directory written,
        # a self-contained one: config (with architecture), tokenizer, statistics.
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.run_dir / "config.json", record)
            self.task.write_run_files(self.run_dir)

        self.model, trainable, what = self.task.prepare_parameters(self.model, self.info)
        log.info(f"trainable parameters: {trainable / 1e6:.2f}M ({what})")
        self.model = parallelize(self.model.to(self.info.device), cfg.parallel, self.info)
        self.model.train()

        self.accum = cfg.grad_accumulation_steps(self.info.world_size)
        self.total_steps = self.optim.max_steps or max(
            1, self.optim.epochs * len(self.dataset) // self.optim.global_batch_size
        )
        self.optimizer = build_optimizer(self.model, self.optim)
        self.scheduler = build_scheduler(self.optimizer, self.optim, self.total_steps)
        self.state = TrainerState()
        if resume is not None:
            self.state = self.ckpt.load(self.model, self.optimizer, resume[0])
            self.scheduler.load_state_dict(self.state.scheduler)
            log.info(f"resumed from {resume[0]} (step {self.state.step}, {self.state.samples_seen} samples/rank seen)")
        self.trackers = self._trackers()

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> TrainerState:
        loader = DataLoader(self.dataset, batch_size=self.optim.per_device_batch_size, collate_fn=self.dataset.collator,
                            num_workers=0)  # fmt: skip  (tf.data cannot be forked into workers; a thread overlaps it)
        depth = self.cfg.parallel.prefetch_batches
        batches = BackgroundIterator(loader, depth) if depth else iter(loader)
        bar = progress(total=self.total_steps, initial=self.state.step, desc="train", unit="step", dynamic_ncols=True,
                       disable=not (self.info.is_main and self.cfg.logging.progress))  # fmt: skip
        try:
            while self.state.step < self.total_steps:
                t0 = time.perf_counter()
                metrics = self.train_step(batches)
                metrics["step_time_s"] = time.perf_counter() - t0
                metrics["samples_per_s"] = self.optim.global_batch_size / metrics["step_time_s"]
                metrics["tokens_per_s"] = metrics.pop("tokens") / metrics["step_time_s"]  # text tokens, all ranks
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", l1=f"{metrics.get('action_l1', 0):.3f}")
                if self.state.step % self.cfg.logging.log_interval == 0 or self.state.step == self.total_steps:
                    self._log(metrics)
                if self.state.step % self.cfg.checkpoint.save_interval == 0 or self.state.step == self.total_steps:
                    self.save()
        finally:
            if isinstance(batches, BackgroundIterator):
                batches.close()
            bar.close()
            for t in self.trackers:
                t.close()
        return self.state

    def train_step(self, batches) -> dict[str, Any]:
        """One optimizer step: `accum` micro-batches of forward/backward, clip, step."""
        averager, tokens = MetricAverager(), 0
        for micro in range(self.accum):
            batch = next(batches)
            names = batch.pop("dataset_names", None)
            batch = {k: v.to(self.info.device, non_blocking=True) for k, v in batch.items()}
            with self._gradient_sync(last=micro == self.accum - 1):  # the backward too (DDP's no_sync)
                with self._autocast():  # the forward only
                    out = self.model(**batch, return_label_logits=True)
                (out.loss / self.accum).backward()
            tokens += int(batch["attention_mask"].sum())
            averager.add({"loss": float(out.loss.detach()), **self.task.metrics(out, names)})
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.optim.max_grad_norm)
        metrics = self._mean_over_ranks(averager.pop())
        if not math.isfinite(metrics["loss"]) or not torch.isfinite(torch.as_tensor(grad_norm)).item():
            raise FloatingPointError(
                f"non-finite loss ({metrics['loss']}) or gradient norm ({float(grad_norm)}) at step {self.state.step + 1}; "
                f"lower the learning rate or check the data (see {self.run_dir / 'metrics.jsonl'})"
            )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.samples_seen += self.accum * self.optim.per_device_batch_size
        self.state.last_loss = metrics["loss"]
        metrics.update(grad_norm=float(grad_norm), lr=self.scheduler.get_last_lr()[0], tokens=tokens * self.info.world_size)
        return metrics

    def _mean_over_ranks(self, metrics: dict[str, float]) -> dict[str, float]:
        """Average the global metrics over ranks (per-dataset ones stay rank 0's sample)."""
        if not self.info.distributed:
            return metrics
        keys = [k for k in ("loss", "action_accuracy", "action_l1", "action_l1_current", "action_l1_future",
                            "token_accuracy") if k in metrics]  # fmt: skip
        t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.info.device)
        torch.distributed.all_reduce(t)
        metrics.update({k: float(v) / self.info.world_size for k, v in zip(keys, t.tolist())})
        return metrics

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self) -> None:
        self.state.scheduler = self.scheduler.state_dict()
        self.state.epoch = self.state.samples_seen * self.info.world_size // max(1, len(self.dataset))
        path = self.ckpt.save(self.model, self.optimizer, self.state)
        self.task.save_weights(self.model, self.ckpt, self.state)  # collective: every rank gathers
        log.info(f"saved resumable checkpoint {path}")

    # -- helpers --------------------------------------------------------------------------------
    def _autocast(self):
        # FSDP casts by its own mixed-precision policy; a single process or DDP (quantised base) autocasts.
        use = self.cfg.parallel.mixed_precision and self.info.device.type == "cuda" and not is_fsdp(self.model)
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=use)

    def _gradient_sync(self, last: bool):
        """All-reduce gradients only on the last micro-batch of an accumulated step."""
        if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2
            self.model.set_requires_gradient_sync(last)
        elif isinstance(self.model, DistributedDataParallel) and not last:
            return self.model.no_sync()
        return contextlib.nullcontext()

    def _log(self, metrics: dict[str, Any]) -> None:
        if self.info.is_main:
            for t in self.trackers:
                t.log(self.state.step, metrics)

    def _trackers(self) -> list[Tracker]:
        if not self.info.is_main:
            return []
        out: list[Tracker] = []
        if "jsonl" in self.cfg.logging.trackers:
            out.append(JSONLTracker(self.run_dir, resume_step=self.state.step))
        if "wandb" in self.cfg.logging.trackers and self.cfg.logging.wandb_mode != "disabled":
            out.append(WandBTracker(self.run_dir, self.cfg.resolved_run_id, self.config_record(),
                                    self.cfg.logging.wandb_project, self.cfg.logging.wandb_entity,
                                    self.cfg.logging.wandb_mode))  # fmt: skip
        return out

    def config_record(self) -> dict[str, Any]:
        """The whole config (with the experiment name and the architecture), for config.json and the trackers."""
        record = json.loads(json.dumps(asdict(self.cfg), default=str))
        record["world_size"] = self.info.world_size
        return self.task.config_record(record)


def run(cfg: TrainConfig, task: TrainingTask | None = None) -> TrainerState:
    trainer = Trainer(cfg, task=task)
    try:
        return trainer.train()
    finally:
        if trainer.info.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

