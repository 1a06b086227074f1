"""The main job end to end at toy scale: demos -> RLDS -> vla-scripts/train.py -> closed-loop evaluation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prismatic.envs import demo

REPO = Path(__file__).resolve().parents[2]


def test_tabletop_demo_rejects_bad_settings_before_any_work(tmp_path):
    cmd = [sys.executable, str(REPO / "vla-scripts" / "tabletop_demo.py"), "--out_dir", str(tmp_path / "demo"),
           "--num_objects", "4", "--start", "corner", "--goals", "0", "--head", "l2-regression",
           "--train_config", str(tmp_path / "recipe.yaml")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "--num_objects must be 1..3" in proc.stderr and "--start must be one of random, home" in proc.stderr
    assert "--goals must be 1..--num_objects (4)" in proc.stderr
    assert "--head must be one of bins, bins-parallel, l1-regression (prismatic.models.heads), got 'l2-regression'" in proc.stderr
    assert f"--train_config {tmp_path / 'recipe.yaml'} does not exist" in proc.stderr  # was: after generating data
    assert not (tmp_path / "demo").exists()  # nothing was generated


def _problems(**settings) -> str:
    with pytest.raises(SystemExit) as e:
        demo.validate(demo.DemoConfig(**settings))
    return str(e.value)


def test_head_settings_are_checked_with_the_choices():
    assert "--compare names unknown heads ['diffusion']; choose from: bins, bins-parallel, l1-regression" in _problems(
        compare="bins,diffusion")
    assert "--compare needs at least two different heads" in _problems(compare="bins,bins")
    assert "--compare runs each head it names with its demo defaults: drop --head" in _problems(
        compare="bins,l1-regression", open_loop_steps=2)
    assert "--open_loop_steps must be 1..4 (the chunk length" in _problems(head="l1-regression", open_loop_steps=5)
    assert "--open_loop_steps must be 1..8" in _problems(head="l1-regression", chunk_len=8, open_loop_steps=9)
    assert "--chunk_len must be >= 1" in _problems(head="l1-regression", chunk_len=0)
    assert "--open_loop_steps must be 1..1" in _problems(open_loop_steps=2)  # the bin head predicts one action
    assert "--init must be one of warm-start, scratch, got 'bins'" in _problems(head="l1-regression", init="bins")
    assert ("--init warm-start: the bins head has no warm-start runs (it trains from random weights); heads with them: "
            "bins-parallel, l1-regression") in _problems(init="warm-start")  # fmt: skip
    assert "--finetune_config /nowhere.yaml does not exist" in _problems(head="l1-regression", finetune_config=Path("/nowhere.yaml"))
    demo.validate(demo.DemoConfig(head="l1-regression", chunk_len=8, open_loop_steps=8))  # valid: no exception
    demo.validate(demo.DemoConfig(head="bins-parallel", init="scratch", finetune_config=Path("/nowhere.yaml")))  # unused


def test_the_bin_head_trains_with_the_recipe_alone_and_chunked_heads_name_their_settings(tmp_path):
    bins = demo.DemoConfig(out_dir=tmp_path)
    (run,) = bins.runs  # from random weights, the recipe as it is
    assert demo.head_flags(run) == [] and (run.recipe, run.steps, run.run_dir) == (bins.train_config, None, tmp_path / "policy")
    assert (bins.chunk, bins.open_loop, bins.head_dir, bins.init_from) == (1, 1, tmp_path, "scratch")
    oft = demo.DemoConfig(out_dir=tmp_path, head="l1-regression")
    defaults = demo.DEMO_HEADS["l1-regression"]
    k = defaults.chunk_len
    assert (oft.chunk, oft.open_loop, oft.head_dir) == (k, defaults.open_loop_steps, tmp_path / "l1-regression")
    # OpenVLA-OFT fine-tunes an OpenVLA policy; here one switch at a time: causal bins -> bins-parallel -> L1
    first, parallel, own = oft.runs
    assert [(r.head, r.chunk, r.steps) for r in oft.runs] == [("bins", 1, 8000), ("bins-parallel", k, 4000),
                                                              ("l1-regression", k, defaults.max_steps)]  # fmt: skip
    assert (first.recipe, parallel.recipe, own.recipe) == (oft.train_config, oft.finetune_config, oft.finetune_config)
    assert (first.run_dir, parallel.run_dir, own.run_dir) == (tmp_path / "l1-regression" / "warm-start-1-bins",
            tmp_path / "l1-regression" / "warm-start-2-bins-parallel", tmp_path / "l1-regression" / "policy")  # fmt: skip
    assert demo.head_flags(first) == [] and demo.head_flags(parallel) == ["--vla.action_head", "bins-parallel",
                                                                          "--vla.chunk_len", str(k), "--vla.action_dim", "7"]  # fmt: skip
    assert demo.head_flags(own) == ["--vla.action_head", "l1-regression", "--vla.chunk_len", str(k), "--vla.action_dim", "7",
                                    "--vla.learning_rate", str(defaults.learning_rate)]  # fmt: skip
    # --max_steps sets every run; --learning_rate the head's own; --init scratch drops the warm start
    short = demo.DemoConfig(out_dir=tmp_path, head="l1-regression", max_steps=3, learning_rate=0.01, chunk_len=4)
    assert [(r.chunk, r.steps, r.learning_rate) for r in short.runs] == [(1, 3, None), (4, 3, None), (4, 3, 0.01)]
    scratch = demo.DemoConfig(out_dir=tmp_path, head="l1-regression", init="scratch")
    assert [(r.head, r.recipe) for r in scratch.runs] == [("l1-regression", scratch.train_config)] and scratch.init_from == "scratch"
    replanning = demo.DemoConfig(head="bins-parallel", chunk_len=4, open_loop_steps=1)
    assert demo.head_flags(replanning.runs[-1])[-4:] == ["--vla.chunk_len", "4", "--vla.action_dim", "7"] and replanning.open_loop == 1


def _fake_run(run_dir: Path, marker: dict, max_steps: int, saved: int) -> Path:
    """A run directory as vla-scripts/train.py leaves it, with its demo marker: config and the last checkpoint."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "demo.json").write_text(json.dumps(marker))
    (run_dir / "config.json").write_text(json.dumps({"vla": {"max_steps": max_steps}}))
    (run_dir / "checkpoints" / f"step-{saved:06d}-epoch-00-loss=1.0000.pt").write_bytes(b"")
    return run_dir


def test_a_warm_start_uses_the_same_finished_run_of_another_head(tmp_path):
    cfg = demo.DemoConfig(out_dir=tmp_path, head="l1-regression")
    first = cfg.runs[0]  # bins, 8000 steps, from random weights
    wanted = {"seed": 7, "head_flags": [], "base_weights": None, "steps": 8000}
    bp_first = _fake_run(tmp_path / "bins-parallel" / "warm-start-1-bins", wanted, 8000, 8000)
    assert demo._same_finished_run(cfg, first, wanted) == bp_first
    # the bin head's own run (its marker records no steps: the recipe's) is the same run when it trained 8000 steps
    shutil.rmtree(bp_first)
    own = _fake_run(tmp_path / "policy", {k: v for k, v in wanted.items() if k != "steps"}, 8000, 8000)
    assert demo._same_finished_run(cfg, first, wanted) == own
    shutil.rmtree(own)
    # never: an unfinished run, other steps, other settings, or the run's own directory
    _fake_run(tmp_path / "policy", wanted, 8000, 7000)
    _fake_run(tmp_path / "a", wanted, 12000, 12000)
    _fake_run(tmp_path / "b", {**wanted, "seed": 8}, 8000, 8000)
    _fake_run(first.run_dir, wanted, 8000, 8000)
    assert demo._same_finished_run(cfg, first, wanted) is None


def _report(head: str, chunk: int, executed: int, policy: int, swapped: int, speed: float | None, minutes: float) -> dict:
    from prismatic.eval.stats import SuccessStats

    summary = {name: SuccessStats(name, 50, n).to_dict() for name, n in
               (("policy", policy), ("language-swapped", swapped), ("random", 1))}  # fmt: skip
    throughput = {"policy": None if speed is None else {"actions": 300, "seconds": 300 / speed, "actions_per_second": speed}}
    return {"head": head, "chunk_len": chunk, "open_loop_steps": executed, "summary": summary, "throughput": throughput,
            "total_seconds": 60 * minutes}  # fmt: skip


def test_comparison_table_and_chart(tmp_path):
    reports = {"bins": _report("bins", 1, 1, 49, 0, 30.25, 10.7), "l1-regression": _report("l1-regression", 8, 8, 50, 1, None, 9.04)}
    lines = demo.comparison_table(reports).splitlines()
    assert lines[0].split() == ["head", "chunk", "executed", "policy", "language-swapped", "random", "actions/s", "minutes"]
    assert lines[1].split() == ["bins", "1", "1", "98%", "(49/50)", "0%", "(0/50)", "2%", "(1/50)", "30.2", "10.7"]
    assert lines[2].split() == ["l1-regression", "8", "8", "100%", "(50/50)", "2%", "(1/50)", "2%", "(1/50)", "-", "9.0"]
    chart = demo.plot_comparison(reports, tmp_path / "compare.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*tmp*"))


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three end-to-end runs (~4 CPU-minutes): the suite's 600 s catches hangs, not this
def test_the_demo_runs_every_stage_compares_heads_and_resumes(tmp_path):
    """The main job at toy scale, three invocations: --compare bins,l1-regression (one dataset; the bin policy trained
    and evaluated; the L1 head warm-started (bins, the same run as the bin policy at 3 steps -> bins-parallel -> L1)
    and evaluated; the table, the JSON, the chart, the videos); one head on its own with its chunks executed
    differently (everything reused, only that evaluation redone); another training seed (the policy trained and
    evaluated again)."""
    out = tmp_path / "demo"
    base = [sys.executable, str(REPO / "vla-scripts" / "tabletop_demo.py"), "--out_dir", str(out), "--num_demos", "12",
            "--max_steps", "3", "--eval_episodes", "3", "--video_episodes", "1"]  # fmt: skip
    proc = subprocess.run([*base, "--compare", "bins,l1-regression"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("[1/3] expert demonstrations") == 1  # the data is recorded once, for both heads
    assert "Closed-loop success on held-out seeds" in proc.stdout
    # the dataset went through the one-YAML-entry path and each run directory is a loadable checkpoint
    assert (out / "data" / "tabletop_reach" / "1.0.0" / "dataset_info.json").is_file()
    table = proc.stdout.split("Heads trained on the same 12 demonstrations")[1]
    assert table.splitlines()[1].split()[:2] == ["head", "chunk"]
    k = demo.DEMO_HEADS["l1-regression"].chunk_len
    assert [line.split()[:3] for line in table.splitlines()[2:4]] == [["bins", "1", "1"], ["l1-regression", str(k), str(
        demo.DEMO_HEADS["l1-regression"].open_loop_steps)]]  # fmt: skip
    compared = json.loads((out / "compare.json").read_text())
    assert list(compared["heads"]) == ["bins", "l1-regression"] and (out / "compare.png").is_file()
    bins, l1 = (json.loads(p.read_text()) for p in (out / "results.json", out / "l1-regression" / "results.json"))
    assert (bins["head"], bins["chunk_len"], l1["head"], l1["chunk_len"]) == ("bins", 1, "l1-regression", k)
    # the L1 head was warm-started with its own runs, whose training counts in its minutes
    assert (bins["init"], l1["init"]) == ("scratch", "warm-start")
    assert "warm-started: bins (3 steps) -> bins-parallel (3 steps) -> l1-regression (3 steps)" in proc.stdout
    # at 3 steps its first warm-start run is the bin head's whole training: trained once
    assert f"reusing {out / 'policy'}: the same run as this warm start (bins, 3 steps)" in proc.stdout
    assert not (out / "l1-regression" / "warm-start-1-bins").exists()
    warm = [out / "policy", out / "l1-regression" / "warm-start-2-bins-parallel"]
    assert [r["run_dir"] for r in l1["training_runs"]] == [str(p) for p in (*warm, out / "l1-regression" / "policy")]
    assert l1["stage_seconds"]["train_warm_start"] == pytest.approx(sum(demo.recorded_seconds(p) for p in warm), abs=0.1)
    assert all(demo.recorded_seconds(p) > 0 for p in warm)
    assert json.loads((warm[1] / "config.json").read_text())["vla"]["base_vlm"] == str(warm[0])
    assert json.loads((out / "l1-regression" / "policy" / "config.json").read_text())["vla"]["base_vlm"] == str(warm[1])
    assert l1["total_seconds"] == pytest.approx(sum(l1["stage_seconds"].values()), abs=0.5)
    assert compared["heads"]["l1-regression"]["summary"] == l1["summary"]
    for report, run in ((bins, out / "policy"), (l1, out / "l1-regression" / "policy")):
        assert set(report["summary"]) == {"policy", "language-swapped", "random"}
        assert all(s["episodes"] == 3 for s in report["summary"].values())
        steps = sum(e["steps"] for e in json.loads((run.parent / "eval" / "policy" / "results.json").read_text())["episodes"])
        assert report["throughput"]["policy"]["actions"] == steps and report["throughput"]["policy"]["actions_per_second"] > 0
        assert json.loads((run / "dataset_statistics.json").read_text())["tabletop_reach"]["num_trajectories"] == 12
        assert (run / "curves.png").is_file() and (run.parent / "success.png").is_file()
        assert len(report["videos"]) == 3 and all((run.parent / v).is_file() for v in report["videos"])
    # the L1 run is a checkpoint of its head that predicts whole chunks from an observation
    import prismatic
    from prismatic.envs import TabletopEnv

    vla = prismatic.load_vla(out / "l1-regression" / "policy")
    assert (vla.config.action_head, vla.chunk_len) == ("l1-regression", k)
    obs, _ = TabletopEnv(image_size=84).reset(seed=3)
    chunk = vla.predict_chunks([obs["image"]], [obs["instruction"]], unnorm_key="tabletop_reach")
    assert chunk.shape == (1, k, 7) and np.isfinite(chunk).all()
    # one head on its own reuses the compared runs; executing its chunks differently re-evaluates, never retrains
    replan = subprocess.run([*base, "--head", "l1-regression", "--open_loop_steps", "1"], cwd=REPO, capture_output=True,
                            text=True, timeout=900)  # fmt: skip
    assert replan.returncode == 0, replan.stderr[-3000:]
    assert "reusing" in replan.stdout and "retraining" not in replan.stdout and "re-evaluating policy: " in replan.stdout
    again = json.loads((out / "l1-regression" / "results.json").read_text())
    assert again["open_loop_steps"] == 1 and again["stage_seconds"]["train"] == l1["stage_seconds"]["train"]
    # another training seed: the bin policy is trained and evaluated again
    reseeded = subprocess.run([*base, "--seed", "8", "--eval_episodes", "1"], cwd=REPO, capture_output=True, text=True,
                              timeout=900)  # fmt: skip
    assert reseeded.returncode == 0, reseeded.stderr[-3000:]
    assert "retraining" in reseeded.stdout and "re-evaluating policy: " in reseeded.stdout
    config = json.loads((out / "eval" / "policy" / "results.json").read_text())["config"]
    assert config["identity"]["seed"] == 8 and json.loads((out / "policy" / "config.json").read_text())["seed"] == 8
