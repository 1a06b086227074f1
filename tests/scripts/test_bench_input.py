"""scripts/bench_input.py run as a user runs it: both parts measured against their earlier forms, whose outputs
the script checks are the same (it fails otherwise)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_input_benchmark_reports_both_parts_against_their_baselines(tmp_path):
    out = tmp_path / "input.json"
    cmd = [sys.executable, str(REPO / "scripts" / "bench_input.py"), "--frames", "8", "--rounds", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert {"machine", "command", "args"} <= set(saved) and {"torch", "tensorflow", "prismatic"} <= set(saved["machine"])
    medians = {part: r["cpu_us_per_frame_median"] for part, r in saved["results"].items()}
    assert set(medians) == {"decode_resize", "prompt_ids"}
    assert set(medians["decode_resize"]) == {"original", "skip_same_size"}
    assert set(medians["prompt_ids"]) == {"tokenizer_per_frame", "cached"}
    for part, r in saved["results"].items():
        assert all(v > 0 for v in medians[part].values()) and r["speedup"] > 0
        assert f"{part}" in proc.stdout
