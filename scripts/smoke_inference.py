"""Smoke inference: load the tiny reference OpenVLA checkpoint (random weights, real architecture and
layout) from tests/assets with `prismatic.load_vla`, predict actions for three images, and check
them against the original implementation's outputs.

    .venv/bin/python scripts/smoke_inference.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

import prismatic

ASSETS = Path(__file__).resolve().parents[1] / "tests" / "assets" / "openvla-tiny"


def main() -> None:
    t0 = time.perf_counter()
    vla = prismatic.load_vla(ASSETS / "checkpoint")
    print(f"loaded {vla} in {time.perf_counter() - t0:.2f}s")
    reference = json.loads((ASSETS / "expected.json").read_text())
    worst = 0.0
    print(f"{'image':<14}{'instruction':<38}{'action (x y z roll pitch yaw grip)':<70}{'|err| vs original'}")
    for case in reference["cases"]:
        image = Image.open(ASSETS / case["image"])
        t = time.perf_counter()
        action = vla.predict_action(image, case["instruction"], unnorm_key=case["unnorm_key"])
        ms = (time.perf_counter() - t) * 1e3
        err = float(np.abs(action - np.asarray(case["action"])).max())
        worst = max(worst, err)
        shown = " ".join(f"{a:+.4f}" for a in action)
        print(f"{Path(case['image']).name:<14}{case['instruction'][:36]:<38}{shown:<70}{err:.1e}  ({ms:.0f} ms)")
    ok = worst <= reference["tolerances"]["action_abs"]
    print(f"{'OK' if ok else 'MISMATCH'}: max |error| {worst:.2e} (tolerance {reference['tolerances']['action_abs']})")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
