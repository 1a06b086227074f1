"""scripts/gpu_check.sh in its CPU form (--smoke): the device run is prepared in one session and run in another,
so CI keeps its parts working. Two parts here: inference (bench_inference.py, all CPU decoding modes) and
full-shard FSDP training (bench_train.py), then the summary."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_run_writes_every_report_and_the_summary(tmp_path):
    env = {**os.environ, "RESULTS_DIR": str(tmp_path), "ONLY": "inference_7b_bf16,train_1b_fsdp"}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--smoke"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=540)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    status = [json.loads(line) for line in (tmp_path / "status.jsonl").read_text().splitlines()]
    assert {s["part"]: s["status"] for s in status} == {"inference_7b_bf16": "ok", "train_1b_fsdp": "ok"}
    inference = json.loads((tmp_path / "inference_7b_bf16.json").read_text())
    assert "scripts/bench_inference.py --model tiny" in inference["command"] and inference["machine"]["torch"]
    for batch in ("b1", "b2"):
        result = inference["results"][batch]
        assert set(result["identical_tokens"]) == {"generate", "eager", "static"}
        assert all(result["identical_tokens"].values())
        assert all(result[m]["actions_per_s"] > 0 for m in ("generate", "eager", "static"))
    train = json.loads((tmp_path / "train_1b_fsdp.json").read_text())
    assert train["fsdp"] is True and train["results"]["ours"]["model_flops_per_step"] > 0
    summary = (tmp_path / "summary.txt").read_text()
    assert "b2: generate" in summary and "full training, fsdp=True" in summary
