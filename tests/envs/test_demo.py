"""The main job end to end at toy scale: demos -> RLDS -> vla-scripts/train.py -> closed-loop evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tabletop_demo_runs_every_stage_and_writes_its_outputs(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, str(REPO / "vla-scripts" / "tabletop_demo.py"), "--out_dir", str(out),
           "--num_demos", "12", "--max_steps", "4", "--eval_episodes", "3", "--video_episodes", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Closed-loop success on held-out seeds" in proc.stdout
    for name in ("policy", "language-swapped", "random"):
        assert name in proc.stdout
    report = json.loads((out / "results.json").read_text())
    assert set(report["summary"]) == {"policy", "language-swapped", "random"}
    assert all(s["episodes"] == 3 for s in report["summary"].values())
    assert (out / "policy" / "curves.png").is_file() and (out / "success.png").is_file()
    assert len(report["videos"]) == 3 and all((out / v).is_file() for v in report["videos"])
    # the dataset went through the one-YAML-entry path and the run directory is a loadable checkpoint
    assert (out / "data" / "tabletop_reach" / "1.0.0" / "dataset_info.json").is_file()
    stats = json.loads((out / "policy" / "dataset_statistics.json").read_text())
    assert stats["tabletop_reach"]["num_trajectories"] == 12
    # re-running resumes: every stage is found done, nothing is retrained or re-evaluated
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "reusing" in again.stdout
    assert "retraining" not in again.stdout and "re-evaluating" not in again.stdout
    # another training seed: the old table is not reprinted; the policy is trained and evaluated again
    reseeded = subprocess.run([*cmd, "--seed", "8", "--eval_episodes", "1"], cwd=REPO, capture_output=True, text=True,
                              timeout=900)  # fmt: skip
    assert reseeded.returncode == 0, reseeded.stderr[-3000:]
    assert "retraining" in reseeded.stdout and "re-evaluating policy: " in reseeded.stdout
    config = json.loads((out / "eval" / "policy" / "results.json").read_text())["config"]
    assert config["identity"]["seed"] == 8 and json.loads((out / "policy" / "config.json").read_text())["seed"] == 8


def test_tabletop_demo_rejects_bad_settings_before_any_work(tmp_path):
    cmd = [sys.executable, str(REPO / "vla-scripts" / "tabletop_demo.py"), "--out_dir", str(tmp_path / "demo"),
           "--num_objects", "4", "--start", "corner", "--goals", "0",
           "--train_config", str(tmp_path / "recipe.yaml")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "--num_objects must be 1..3" in proc.stderr and "--start must be one of random, home" in proc.stderr
    assert "--goals must be 1..--num_objects (4)" in proc.stderr
    assert f"--train_config {tmp_path / 'recipe.yaml'} does not exist" in proc.stderr  # was: after generating data
    assert not (tmp_path / "demo").exists()  # nothing was generated
