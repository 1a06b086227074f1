"""Run by test_checkpoint_faults.py under torchrun with 2 CPU processes: both ranks hash their share of a sharded
checkpoint, agree that a truncated shard of rank 1 damages the newest one, and fall back together."""

import sys
from pathlib import Path

import torch
from torch.distributed.fsdp import fully_shard

from prismatic.training.checkpoint import CheckpointManager, TrainerState
from prismatic.training.distributed import init_distributed

run = Path(sys.argv[1])
info = init_distributed("cpu", "gloo")
torch.manual_seed(0)
model = fully_shard(torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 8)))
optimizer = torch.optim.AdamW(model.parameters())
mgr = CheckpointManager(run, info)
for step in (1, 2):
    model(torch.randn(4, 64)).sum().backward()
    optimizer.step()
    mgr.save(model, optimizer, TrainerState(step=step))
assert mgr.resume_point()[0].name == "step-000002"
torch.distributed.barrier()
if info.rank == 1:  # rank 1's own shard: only rank 1 hashes it (the files are split between ranks)
    shard = run / "state" / "step-000002" / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-16])
torch.distributed.barrier()
ckpt_dir, state = mgr.resume_point()
assert ckpt_dir.name == "step-000001" and state.step == 1, ckpt_dir
mgr.load(model, optimizer, ckpt_dir)
print(f"rank {info.rank}: fell back to {ckpt_dir.name}", flush=True)
torch.distributed.destroy_process_group()
