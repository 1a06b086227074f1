"""The command line: bad settings and a busy port fail in seconds, before the model loads, naming every
problem; a real start serves requests and shuts down cleanly on SIGTERM (in-flight work finished)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import json_numpy
import numpy as np
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO / "tests" / "assets" / "openvla-tiny" / "checkpoint"
CONSOLE = Path(sys.executable).parent / "prismatic-serve"  # the [project.scripts] entry point


def _main(args: list[str], capsys) -> str:
    """Run the CLI in-process (no torch import per test) and return its stderr; it must exit with 2."""
    from prismatic.serve.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_console_entry_point_is_installed():
    assert CONSOLE.exists(), f"{CONSOLE} missing: run `bash scripts/setup.sh` to install the entry point"
    assert "prismatic.serve.cli" in CONSOLE.read_text()


def test_bad_settings_are_all_reported_before_loading(capsys, caplog):
    err = _main(["--checkpoint", str(CHECKPOINT), "--max_batch", "0", "--dtype", "fp8",
                 "--protocols", "[rest,grpc]", "--obs_keys", "[openpi.primary]", "--load_in_8bit", "true",
                 "--load_in_4bit", "true", "--decode", "fast"], capsys)  # fmt: skip
    for fragment in ("--max_batch must be an integer in 1..256", "--dtype 'fp8' is not one of: auto, float32",
                     "must name some of: rest, openpi, vla-eval", "is not PROTOCOL.FIELD=KEY",
                     "--load_in_8bit and --load_in_4bit are exclusive", "--decode 'fast' is not one of"):  # fmt: skip
        assert fragment in err, err
    assert "loading" not in caplog.text  # nothing was loaded


def test_busy_port_fails_before_loading(capsys, caplog):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        err = _main(["--checkpoint", str(CHECKPOINT), "--port", str(port)], capsys)
    assert f"cannot listen on 127.0.0.1:{port}" in err, err
    assert "loading" not in caplog.text


@pytest.mark.slow
def test_serve_then_sigterm(case_images):
    proc = subprocess.Popen(
        [sys.executable, "vla-scripts/serve.py", "--checkpoint", str(CHECKPOINT), "--port", "0",
         "--unnorm_key", "bridge_orig", "--host", "127.0.0.1"],  # fmt: skip
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines: list[str] = []
    try:
        port = None
        deadline = time.monotonic() + 300
        while port is None and time.monotonic() < deadline:  # bounded: the server prints its port once
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"starting on http://127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port is not None, "".join(lines)
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):  # up to 60 s for uvicorn to start accepting
            try:
                if requests.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        image = case_images[0]
        body = json_numpy.dumps({"image": image, "instruction": "put the carrot on the plate"})
        action = json_numpy.loads(requests.post(f"{url}/act", data=body, timeout=120).text)
        assert isinstance(action, np.ndarray) and action.shape == (7,)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + rest
    assert proc.returncode in (0, -signal.SIGTERM), output  # uvicorn re-raises the signal after its shutdown
    assert "server stopped after 1 requests in 1 model calls" in output, output
    assert "Application shutdown complete" in output and "Traceback" not in output, output


@pytest.mark.slow
def test_serves_every_layout_load_vla_reads(tmp_path, tiny_vla, case_images):
    """HF layout and a native run directory give the same answers; 8-bit and 4-bit loads (bitsandbytes on
    CPU) answer."""
    from prismatic.serve import ServeConfig
    from prismatic.serve.cli import load_model
    from prismatic.serve.observation import PolicyRequest

    tiny_vla.save_native(tmp_path / "native")
    request = PolicyRequest((case_images[0],), "put the carrot on the plate", "bridge_orig")
    answers = {}
    for name, path, flags in (("hf", CHECKPOINT, {}), ("native", tmp_path / "native", {}),
                              ("8bit", CHECKPOINT, {"load_in_8bit": True}), ("4bit", CHECKPOINT, {"load_in_4bit": True})):  # fmt: skip
        model = load_model(ServeConfig(checkpoint=str(path), device="cpu", **flags))
        assert model.name == path.name and model.describe()["device"] == "cpu"
        answers[name] = model.run_batch([request])[0]
    np.testing.assert_array_equal(answers["hf"], answers["native"])
    local = tiny_vla.predict_chunks(
        [case_images[0]], ["put the carrot on the plate"], unnorm_key="bridge_orig"
    )[0]
    np.testing.assert_array_equal(answers["hf"], local)
    for name in ("8bit", "4bit"):
        assert isinstance(answers[name], np.ndarray), answers[name]  # not a ModelFailure
        assert answers[name].shape == (1, 7) and np.all(np.isfinite(answers[name]))


def test_non_loopback_host_warns(tmp_path, capsys, caplog):
    from prismatic.serve.config import ServeConfig, is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.0.1", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.5", "::", "robot-box"))
    assert ServeConfig().host == "127.0.0.1"
    # the warning comes before the model loads; a missing checkpoint then ends the run
    err = _main(["--checkpoint", str(tmp_path / "missing"), "--host", "0.0.0.0", "--port", "0"], capsys)
    assert "does not exist" in err
    assert "every machine that can reach it can drive this policy (no --token set" in caplog.text
