"""vla-scripts/pretrain_vlm.py end to end: two processes (gloo, FSDP full_shard) run the finetune stage from
an align run on mixed image / text-only batches (activation checkpointing on), and the run loads for chat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "vla-scripts" / "pretrain_vlm.py")


@pytest.mark.slow
def test_two_process_fsdp_finetune_from_the_command_line(align_run, vlm_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", SCRIPT,
           "--model.type", "tiny", "--model.image_size", "28", "--model.llm_max_length", "64", "--stage", "finetune",
           "--pretrained_checkpoint", str(align_run), "--data.json", str(vlm_data["qa"]),
           "--data.image_dir", str(vlm_data["root"]), "--model.finetune.max_steps", "4",
           "--model.finetune.global_batch_size", "8", "--model.finetune.per_device_batch_size", "2",
           "--parallel.sharding", "full_shard", "--parallel.activation_checkpointing", "true",
           "--checkpoint.save_interval", "4", "--logging.progress", "false", "--run_root", str(tmp_path),
           "--run_id", "fsdp"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "fsdp"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and all(line["loss"] > 0 and 0 <= line["token_accuracy"] <= 1 for line in lines)
    record = json.loads((run / "config.json").read_text())
    assert record["world_size"] == 2 and record["stage"] == "finetune"
    from PIL import Image

    from prismatic.vlm import load_vlm

    vlm = load_vlm(run)
    assert isinstance(vlm.generate(Image.open(vlm_data["root"] / "images" / "000.png"), "What colour is the object?",
                                   max_new_tokens=3), str)  # fmt: skip

