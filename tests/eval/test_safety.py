"""The safety layer between policy and robot (limits, workspace, gripper, unsafe actions) and the stop
signal (a real pseudo-terminal, a non-terminal stdin, Ctrl-C)."""

from __future__ import annotations

import io
import os
import signal
import termios

import numpy as np
import pytest

from prismatic.eval.safety import SafetyConfig, SafetyLayer, StopSignal

STATE = np.array([0.3, 0.0, 0.1, 0.0, 0.0, 0.0, 1.0])


def test_benign_action_passes_with_the_gripper_binarised():
    layer = SafetyLayer(SafetyConfig())
    out = layer.filter([0.01, -0.01, 0.005, 0.02, 0.0, -0.01, 0.7], STATE)
    assert out.stop is None and out.events == ()
    np.testing.assert_array_equal(out.action, [0.01, -0.01, 0.005, 0.02, 0.0, -0.01, 1.0])
    assert layer.filter([0, 0, 0, 0, 0, 0, 0.49], STATE).action[6] == 0.0
    raw = SafetyLayer(SafetyConfig(gripper_threshold=None)).filter([0, 0, 0, 0, 0, 0, 0.49], STATE)
    assert raw.action[6] == 0.49


def test_translation_and_rotation_are_scaled_to_their_limits():
    layer = SafetyLayer(SafetyConfig(max_translation=0.02, max_rotation=0.1))
    out = layer.filter([0.03, 0.04, 0.0, 0.0, 0.3, 0.4, 1.0], STATE)
    np.testing.assert_allclose(out.action[:3], [0.012, 0.016, 0.0], rtol=1e-12)  # direction kept, norm 0.02
    np.testing.assert_allclose(out.action[3:6], [0.0, 0.06, 0.08], rtol=1e-12)
    assert (
        out.events == ("translation 0.0500 limited to 0.02", "rotation 0.5000 limited to 0.1")
        and out.stop is None
    )


def test_workspace_clip_or_stop():
    config = SafetyConfig(
        workspace_low=[0.1, -0.2, 0.0], workspace_high=[0.45, 0.25, 0.3], max_translation=1.0
    )
    near_edge = np.array([0.44, 0.0, 0.01, 0, 0, 0, 1.0])
    out = SafetyLayer(config).filter([0.03, 0.0, -0.05, 0, 0, 0, 1.0], near_edge)
    np.testing.assert_allclose(near_edge[:3] + out.action[:3], [0.45, 0.0, 0.0], atol=1e-15)  # onto the box
    assert "clipped to the workspace" in out.events[0]
    config.on_violation = "stop"
    stopped = SafetyLayer(config).filter([0.03, 0.0, 0.0, 0, 0, 0, 1.0], near_edge)
    assert stopped.action is None and "outside the workspace" in stopped.stop


@pytest.mark.parametrize("action", [[np.nan] * 7, [0.0] * 6 + [np.inf], [0.1, 0.2]])
def test_unsafe_actions_stop(action):
    out = SafetyLayer(SafetyConfig()).filter(action, STATE)
    assert out.action is None and "needs 7 finite values" in out.stop


def test_config_validation_lists_problems():
    with pytest.raises(ValueError) as info:
        SafetyConfig(workspace_low=[0.5, 0, 0], workspace_high=[0.4, 1, 1], max_rotation=0, on_violation="warn",
                     stop_key="esc", gripper_threshold=2.0)  # fmt: skip
    for fragment in (
        "must be below",
        "must be > 0",
        "gripper_threshold",
        "'warn' is not one of: clip, stop",
        "stop_key",
    ):
        assert fragment in str(info.value)


def test_stop_key_on_a_terminal_restores_it():
    master, slave = os.openpty()
    stream = os.fdopen(slave, "r")
    try:
        before = termios.tcgetattr(slave)
        with StopSignal("q", stream) as stop:
            assert termios.tcgetattr(slave) != before  # cbreak mode: keys arrive without Enter
            os.write(master, b"xy")
            assert stop.poll() is None  # other keys do nothing
            os.write(master, b"q")
            assert stop.poll() == "stop key 'q'"
        assert termios.tcgetattr(slave) == before
    finally:
        stream.close()
        os.close(master)


def test_without_a_terminal_and_with_ctrl_c():
    previous = signal.getsignal(signal.SIGINT)
    with StopSignal("q", io.StringIO()) as stop:  # not a terminal: no key, no error
        assert stop.poll() is None
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C stops the episode instead of raising
        assert stop.poll() == "Ctrl-C"
    assert signal.getsignal(signal.SIGINT) is previous
    with StopSignal("q", io.StringIO()) as stop:
        stop.trigger("operator pressed the red button")
        stop.trigger("second reason is ignored")
        assert stop.poll() == "operator pressed the red button"
