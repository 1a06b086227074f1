"""The toy VLM job: its bookkeeping (evaluated steps, the bar, the verdict, stage reuse), its flag checks, and the
whole job end to end at a tiny budget (every stage runs, files written, numbers in range, a re-run reuses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prismatic.envs import toy_vlm
from prismatic.envs.toy_vlm import eval_steps, prepare_run, steps_to_bar, verdict

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "vla-scripts" / "toy_vlm.py"


def _point(step: int, policy: float, swapped: float) -> dict:
    return {"step": step, "policy": {"success_rate": policy}, "language-swapped": {"success_rate": swapped}}


def test_evaluated_steps_include_the_last():
    assert eval_steps(12000, 2000) == [2000, 4000, 6000, 8000, 10000, 12000]
    assert eval_steps(5, 2) == [2, 4, 5] and eval_steps(3, 10) == [3]


def test_steps_to_bar_needs_both_the_policy_and_the_language_control():
    curve = [_point(2, 0.9, 0.9), _point(4, 0.78, 0.1), _point(6, 0.8, 0.5), _point(8, 1.0, 0.0)]
    assert steps_to_bar(curve) == 6  # step 2 ignores the instruction; step 4 is below 80%
    assert steps_to_bar(curve[:2]) is None


def test_verdict_names_the_winner_whichever_it_is():
    def run(*points):
        curve = list(points)
        return {"curve": curve, "steps_to_bar": steps_to_bar(curve)}

    early, late, never = (
        run(_point(2, 0.9, 0.0)),
        run(_point(2, 0.5, 0.0), _point(4, 0.9, 0.0)),
        run(_point(2, 0.3, 0.0)),
    )
    assert (
        verdict({"scratch": late, "vlm": early})
        == "the vlm start reached the bar first, at step 2 (scratch: at step 4)"
    )
    assert (
        verdict({"scratch": early, "vlm": never})
        == "the scratch start reached the bar first, at step 2 (vlm: never)"
    )
    assert verdict({"scratch": early, "vlm": early}).startswith(
        "both starts reached the bar at the same evaluated step"
    )
    assert verdict({"scratch": never, "vlm": never}).endswith("final policy success: scratch 30%, vlm 30%")


def test_a_run_is_reused_only_for_the_same_inputs(tmp_path):
    run_dir = tmp_path / "run"
    assert prepare_run(run_dir, {"steps": 3}) is False
    (run_dir / "weights.pt").write_text("trained")
    assert (
        prepare_run(run_dir, {"steps": 3}) is True and (run_dir / "weights.pt").is_file()
    )  # resumed, not wiped
    assert prepare_run(run_dir, {"steps": 4}) is False and not (run_dir / "weights.pt").exists()
    assert json.loads((run_dir / toy_vlm.MARKER).read_text()) == {"steps": 4}


def test_bad_settings_are_refused_before_any_work(tmp_path):
    out = tmp_path / "job"
    cmd = [sys.executable, str(SCRIPT), "--out_dir", str(out), "--num_train", "0", "--finetune_stage", "align",
           "--learning_rate", "-1", "--vla_config", str(tmp_path / "missing.yaml")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "--num_train must be an integer >= 1, got 0" in proc.stderr
    assert (
        "--finetune_stage must be one of finetune, full-finetune, lora-finetune, got 'align'" in proc.stderr
    )
    assert "--learning_rate must be > 0, got -1.0" in proc.stderr
    assert f"--vla_config {tmp_path / 'missing.yaml'} does not exist" in proc.stderr
    assert not out.exists()


# The VLM's learning rate is large so that its weights move far from their initial values (Adam moves each weight by
# about the learning rate per step), which both VLAs share with it (same seed, same architecture).
TINY = ["--num_train", "6", "--num_heldout", "3", "--align_steps", "2", "--finetune_steps", "2", "--batch_size", "2",
        "--learning_rate", "0.05", "--num_demos", "4", "--vla_steps", "3", "--eval_every", "2", "--eval_episodes", "2"]  # fmt: skip


def _vit(weights: Path) -> torch.Tensor:
    return torch.load(weights, weights_only=True)["model"]["vision_backbone"][
        "featurizer.patch_embed.proj.weight"
    ]


@pytest.mark.slow
def test_the_whole_job_at_a_tiny_budget(tmp_path):
    out = tmp_path / "job"
    cmd = [sys.executable, str(SCRIPT), "--out_dir", str(out), *TINY]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for n in range(1, 7):
        assert f"[{n}/6]" in proc.stdout
    report = json.loads((out / "results.json").read_text())

    # the VLM: every held-out question answered and scored, baselines on the same questions
    heldout = json.loads((out / "data" / "heldout.json").read_text())
    predictions = (out / "vlm_predictions.jsonl").read_text().splitlines()
    vlm = report["vlm"]
    assert len(predictions) == len(heldout) == vlm["heldout"]["questions"]
    for result in (vlm["heldout"], vlm["baselines"]["majority"], vlm["baselines"]["question_prior"]):
        assert 0.0 <= result["accuracy"] <= 1.0
        assert sum(r["questions"] for r in result["per_type"].values()) == len(heldout)
    assert "question prior" in (out / "results.md").read_text()

    # the VLA: both starts trained and evaluated at steps 2 and 3, two episodes per condition
    vla = report["vla"]
    assert vla["eval_steps"] == [2, 3] and list(vla["starts"]) == ["scratch", "vlm"]
    for start in vla["starts"].values():
        assert [p["step"] for p in start["curve"]] == [2, 3]
        for point in start["curve"]:
            assert all(
                point[c]["episodes"] == 2 and 0 <= point[c]["success_rate"] <= 1 for c in toy_vlm.CONDITIONS
            )
        assert start["steps_to_bar"] in (None, 2, 3)
    assert vla["verdict"] and (out / "results.png").is_file()
    assert set(report["stage_seconds"]) >= {"data", "align", "finetune", "score", "demos", "vla_vlm_train"}
    assert len(report["load_average"]["start"]) == 3

    # the VLM start really starts from the finetuned VLM: after 2 steps at the recipe's 1e-3 its ViT is still the VLM's
    # (4 VLM steps at 0.05 moved it ~50x further from the initial weights the scratch start begins with)
    vlm_vit = _vit(toy_vlm.weights_at(out / "vlm-finetune"))
    scratch, from_vlm = (_vit(toy_vlm.weights_at(out / f"vla-{s}", 2)) for s in toy_vlm.STARTS)
    assert (from_vlm - vlm_vit).norm() < 0.1 * (scratch - vlm_vit).norm()
    assert f"base VLM: siglip-vit-so400m + llama2-7b-pure from {out / 'vlm-finetune'}" in proc.stderr
    assert json.loads((out / "vla-vlm" / "config.json").read_text())["vla"]["base_vlm"] == str(
        out / "vlm-finetune"
    )

    # re-running reuses every stage; another finetune budget redoes the finetune stage and what depends on it only
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        again.stdout.count("reusing") == 7 and "$ " not in again.stdout
    )  # data, 2 VLM runs, scores, demos, 2 VLAs
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["vla"] == vla
    # a reused stage keeps the seconds it cost when it ran (the rerun adds only its checks)
    for stage, seconds in report["stage_seconds"].items():
        assert seconds <= rerun["stage_seconds"][stage] < seconds + 60
    assert rerun["total_minutes"] >= report["total_minutes"]
    changed = subprocess.run([*cmd, "--finetune_steps", "3", "--compare", "false"], cwd=REPO, capture_output=True,
                             text=True, timeout=600)  # fmt: skip
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "starting over: " + str(out / "vlm-finetune") in changed.stdout
    assert changed.stdout.count("reusing") == 2 and "[5/6]" not in changed.stdout  # data and align
    assert "vla" not in json.loads((out / "results.json").read_text())
