"""scripts/bench_heads.py: the actions/s comparison of the heads on one backbone (tiny, CPU), and the computed cost
of a call that its GPU report and docs/benchmarks.md use."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import bench_heads  # noqa: E402


def _config(head: str, chunk_len: int = 8, cameras=("primary",), proprio_dim: int = 0):
    from prismatic.models.configuration import OpenVLAConfig

    tiny = json.loads((bench_heads.TINY / "config.json").read_text())
    args = argparse.Namespace(chunk_len=chunk_len, cameras=list(cameras), proprio_dim=proprio_dim)
    return OpenVLAConfig(norm_stats=bench_heads.statistics_7b(proprio_dim), text_config=tiny["text_config"],
                         timm_model_kwargs=tiny["timm_model_kwargs"], **bench_heads.head_settings(head, args))  # fmt: skip


def test_a_call_costs_seven_passes_for_bins_and_one_for_parallel_heads():
    prompt = 20
    bins = bench_heads.call_cost(_config("bins", cameras=("primary", "wrist"), proprio_dim=8), 1, prompt)
    l1 = bench_heads.call_cost(_config("l1-regression", cameras=("primary", "wrist"), proprio_dim=8), 1, prompt)
    patches = 2 * 256  # two cameras at 224 px, 14 px patches
    assert bins["sequence"] == 1 + patches + 1 + prompt + 1  # BOS, patches, proprio, prompt, "▁"
    assert l1["sequence"] == bins["sequence"] + 8 * 7 + 1  # + the K x D slots and the stop token
    assert (bins["passes"], bins["actions_per_call"], l1["passes"], l1["actions_per_call"]) == (7, 1, 1, 8)
    # every pass reads the LLM's weights; the vision backbone's once per call
    llm = bins["per_pass"][1][1]  # a cached step reads the LLM alone
    vision = bins["per_pass"][0][1] - llm  # the first pass reads the vision backbone and projector too
    assert vision > 0 and bins["bytes_read_bf16"] == 7 * llm + vision and l1["bytes_read_bf16"] == llm + vision
    # the parallel pass does the prefill's work plus its 57 extra positions; the bins steps add one position each
    assert l1["per_pass"][0][0] > bins["per_pass"][0][0] > bins["per_pass"][1][0] * 100
    bound = bench_heads.bounds(l1, tflops=1.0, tb_s=1e9)  # compute-bound: seconds = FLOPs / 1e12
    assert bound["seconds_per_call"] == pytest.approx(l1["flops"] / 1e12, rel=1e-3)


def test_tiny_run_reports_every_head_and_the_ratio(tmp_path):
    out = tmp_path / "heads.json"
    argv = ["--model", "tiny", "--device", "cpu", "--iters", "1", "--warmup", "0", "--out", str(out)]
    report = bench_heads.main(argv)
    written = json.loads(out.read_text())
    assert written["results"] == report["results"] and written["args"] == argv and written["command"]
    assert report["machine"]["torch"] and report["machine"]["transformers"]
    assert len(report["load_average_before"]) == 3
    b1 = report["results"]["b1"]
    assert [b1[h]["chunk_shape"] for h in bench_heads.HEADS] == [[1, 1, 7], [1, 8, 7], [1, 8, 7]]
    assert all(b1[h]["finite"] for h in bench_heads.HEADS)
    for head in ("l1-regression", "bins-parallel"):  # actions/s counts all K actions of a chunk
        assert b1[head]["actions_per_s"] == pytest.approx(8 / (b1[head]["median_ms"] / 1e3), rel=1e-2)
        assert b1["ratio_vs_bins"][head] == pytest.approx(b1[head]["actions_per_s"] / b1["bins"]["actions_per_s"], abs=0.01)


def test_bad_flags_are_refused_before_any_model_is_built(capsys):
    with pytest.raises(SystemExit):
        bench_heads.parse_args(["--model", "tiny", "--proprio-dim", "8"])
    assert "need --model 7b" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_heads.parse_args(["--cameras", "primary,primary"])
    assert "--cameras must name distinct camera views" in capsys.readouterr().err
