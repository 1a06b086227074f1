"""LIBERO end to end on CPU: one task of each suite built, reset from its first initial state, and stepped a few
times through the harness (the tiny VLA on libero_spatial, random actions on the others); then OpenVLA-OFT's
protocol with the tiny OFT release: third-person + wrist images, 8-D proprio, chunks of 8 run open loop.

Needs the optional extra; without it the test is reported as skipped with the command that installs it.
The simulation runs in a fresh interpreter: other tests import TensorFlow at collection, and TF loaded
before Mesa's renderer segfaults it (see prismatic/eval/libero.py), which a fresh process avoids.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
MAX_STEPS = 3
OFT_STEPS = 10  # two chunks of 8: predicted at steps 0 and 8
OFT_RELEASE = Path(__file__).resolve().parents[1] / "assets" / "openvla-oft-tiny" / "checkpoint"


def _oft_worker(out_dir: Path) -> dict:
    """OpenVLA-OFT's LIBERO protocol, as eval_libero.py --settings oft-libero runs it."""
    import numpy as np

    from prismatic import load_vla
    from prismatic.eval import VLAPolicy, run_evaluation
    from prismatic.eval.libero import LiberoEnvFactory, make_image_preprocessor
    from prismatic.models.oft import OFT_LIBERO

    factory = LiberoEnvFactory("libero_spatial", task_ids=[0], max_steps=OFT_STEPS)
    vla = load_vla(OFT_RELEASE, **OFT_LIBERO)
    calls: list[dict] = []
    predict = vla.predict_chunks

    def spy(images, instructions, unnorm_key=None, proprio=None, **kw):
        calls.append({"cameras": len(images[0]), "shape": list(np.asarray(images[0][1]).shape),
                      "proprio": np.asarray(proprio).tolist(), "key": unnorm_key})  # fmt: skip
        return predict(images, instructions, unnorm_key, proprio, **kw)

    vla.predict_chunks = spy
    policy = VLAPolicy(vla, unnorm_key="libero_spatial", preprocess=make_image_preprocessor(224, crop=True))
    results = run_evaluation(factory, policy, out_dir / "oft", trials_per_task=1, progress=False)
    (record,) = results.episodes
    return {"record": vars(record), "calls": calls}


def _worker(out_dir: Path, checkpoint: Path) -> None:
    """Runs in the subprocess; writes smoke.json with what the test checks."""
    import numpy as np

    from prismatic.eval import RandomPolicy, VLAPolicy, format_table, run_evaluation
    from prismatic.eval.libero import LiberoEnvFactory, make_image_preprocessor

    factories = {s: LiberoEnvFactory(s, task_ids=[0], max_steps=MAX_STEPS) for s in SUITES}  # renderer first
    report = {}
    for suite, factory in factories.items():
        if (
            suite == "libero_spatial"
        ):  # the whole local-model path: upright frame -> JPEG, resize, crop -> VLA
            from prismatic import load_vla

            policy = VLAPolicy(
                load_vla(checkpoint),
                unnorm_key="bridge_orig",
                preprocess=make_image_preprocessor(224, crop=True),
            )
        else:
            policy = RandomPolicy(seed=0, low=[-0.5] * 6 + [0.0], high=[0.5] * 6 + [1.0])
        seen: list[dict] = []
        act = policy.act
        policy.act = lambda obs, act=act, seen=seen: (seen.append(obs), act(obs))[1]  # type: ignore[method-assign]
        (task,) = factory.tasks()
        results = run_evaluation(
            factory,
            policy,
            out_dir / suite,
            trials_per_task=1,
            video_episodes=[0],
            progress=False,
            config={"suite": suite},
        )
        (record,) = results.episodes
        image = np.asarray(seen[0]["image"])
        report[suite] = {
            "instruction": task.instruction,
            "inits": len(task.inits),
            "record": vars(record),
            "calls": len(seen),
            "image_shape": list(image.shape),
            "image_dtype": str(image.dtype),
            "image_std": float(image.std()),
            "state_shape": list(np.shape(seen[0]["state"])),
            "video_bytes": (out_dir / suite / record.video).stat().st_size if record.video else 0,
        }
        print(f"{suite}: {task.instruction!r}\n{format_table(results.summary())}", flush=True)
    report["oft"] = _oft_worker(out_dir)
    (out_dir / "smoke.json").write_text(json.dumps(report, indent=2))


@pytest.mark.slow
def test_libero_one_task_per_suite_steps_through_harness(tmp_path, tiny_checkpoint):
    pytest.importorskip(
        "libero",  # the top-level package is empty: importing it does not hit libero's config prompt
        reason="LIBERO extra not installed: `uv sync --extra libero && bash scripts/libero/setup_libero.sh`",
    )
    pytest.importorskip("tensorflow", reason="LIBERO preprocessing needs the `data` extra (tensorflow)")
    proc = subprocess.run(
        [sys.executable, __file__, str(tmp_path), str(tiny_checkpoint)],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=Path(__file__).resolve().parents[2],
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    oft = report.pop("oft")
    assert sorted(report) == sorted(SUITES)
    assert oft["record"]["error"] is None and oft["record"]["steps"] == OFT_STEPS
    assert len(oft["calls"]) == 2  # one chunk of 8 open loop, then the next
    for call in oft["calls"]:
        assert call["cameras"] == 2 and call["shape"] == [224, 224, 3] and call["key"] == "libero_spatial_no_noops"
        assert len(call["proprio"]) == 1 and len(call["proprio"][0]) == 8
    assert oft["calls"][0]["proprio"] != oft["calls"][1]["proprio"]  # the robot moved
    for suite, r in report.items():
        assert r["record"]["error"] is None, (suite, r["record"]["error"])
        assert r["record"]["steps"] == MAX_STEPS and not r["record"]["success"]  # 3 steps solve nothing
        assert r["calls"] == MAX_STEPS and r["inits"] == 50 and r["instruction"]
        assert r["image_shape"] == [256, 256, 3] and r["image_dtype"] == "uint8" and r["image_std"] > 5
        assert r["state_shape"] == [8] and r["video_bytes"] > 0


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
