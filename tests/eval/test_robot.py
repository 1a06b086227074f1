"""Real-robot evaluation: the Bridge loop end to end on the simulated tabletop robot (local and remote
policy, safety layer, operator labels from a file, results/videos/data, resume and redo), 5 Hz pacing,
the operator prompts, and the WidowX adapter against a stand-in for the `widowx_envs` client."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from prismatic.eval import RemotePolicy, VLAPolicy
from prismatic.eval.robot import (
    FAILURE_REASONS,
    ConsoleOperator,
    EpisodeReport,
    Label,
    Pacer,
    ScriptedOperator,
    TabletopRobot,
    WidowXConfig,
    WidowXRobot,
    bridge_image_preprocessor,
    run_robot_evaluation,
)
from prismatic.eval.safety import SafetyConfig, StopSignal

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO / "tests" / "assets" / "openvla-tiny" / "checkpoint"
TASKS = ["touch the red block", "touch the blue cylinder"]
# Tight enough that the tiny model's random actions (~2 cm per step) are limited: the layer must act.
TIGHT = {"max_translation": 0.01, "workspace_low": [-0.28, -0.28, 0.0], "workspace_high": [0.28, 0.28, 0.2]}


def _load_script():
    spec = importlib.util.spec_from_file_location("eval_robot_script", REPO / "vla-scripts" / "eval_robot.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the script's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _labels(path: Path, labels: list[dict]) -> str:
    path.write_text(json.dumps(labels))
    return str(path)


@pytest.mark.slow
def test_bridge_loop_on_the_simulated_robot_end_to_end(tmp_path, monkeypatch):
    script = _load_script()
    labels = [{"success": True}, {"success": False, "failure_reason": "wrong_object", "note": "went for blue"},
              {"success": False, "failure_reason": "bad_grasp"}, {"success": True}]  # fmt: skip
    cfg = script.EvalRobotConfig(
        robot="tabletop", tasks=TASKS, episodes_per_task=2, max_steps=3, control_hz=0, checkpoint=str(CHECKPOINT),
        out_dir=str(tmp_path / "run"), labels=_labels(tmp_path / "labels.json", labels), safety=SafetyConfig(**TIGHT),
    )  # fmt: skip
    policy = script.make_policy(cfg)  # the script's own policy, loaded once for the three runs below
    monkeypatch.setattr(script, "make_policy", lambda _: policy)
    results = script.run(cfg)
    run = json.loads((tmp_path / "run" / "results.json").read_text())
    assert run["env"] == "robot:tabletop" and run["summary"]["overall"]["episodes"] == 4
    assert run["config"]["safety"]["max_translation"] == 0.01 and run["config"]["unnorm_key"] == "bridge_orig"
    episodes = {(e["task"], e["episode"]): e for e in run["episodes"]}
    order = [("touch_the_red_block", 0), ("touch_the_red_block", 1), ("touch_the_blue_cylinder", 0),
             ("touch_the_blue_cylinder", 1)]  # fmt: skip
    for key, label in zip(order, labels):
        e = episodes[key]
        assert e["success"] == label["success"] and e["failure_reason"] == label.get("failure_reason")
        assert e["steps"] == 3 and e["error"] is None and e["extra"]["stop"] is None
        assert e["extra"]["safety_interventions"] == 3  # every step's translation was limited
        assert (tmp_path / "run" / e["video"]).is_file()
        data = np.load(tmp_path / "run" / e["extra"]["data"])
        assert data["states"].shape == (4, 7) and data["actions"].shape == (3, 7)
        applied = data["applied_actions"]
        assert np.all(np.linalg.norm(applied[:, :3], axis=1) <= 0.01 + 1e-12)
        assert set(np.unique(applied[:, 6])) <= {0.0, 1.0}  # gripper thresholded
        assert np.any(data["actions"][:, :3] != applied[:, :3])
    assert episodes[order[1]]["extra"]["note"] == "went for blue"
    assert results.summary()[1].successes == 2

    # a rerun resumes (no episode runs again: the label file has nothing left and is not asked)
    cfg.labels = _labels(tmp_path / "none.json", [])
    script.run(cfg)
    # --redo repeats exactly the named episode
    cfg.labels, cfg.redo = _labels(tmp_path / "redo.json", [{"success": True}]), ["touch_the_red_block:1"]
    script.run(cfg)
    redone = {
        (e["task"], e["episode"]): e
        for e in json.loads((tmp_path / "run" / "results.json").read_text())["episodes"]
    }
    assert (
        len(redone) == 4
        and redone[order[1]]["success"] is True
        and redone[order[1]]["failure_reason"] is None
    )
    with pytest.raises(ValueError, match="not in"):
        cfg.redo = ["touch_the_red_block:7"]
        script.run(cfg)


@pytest.mark.slow
def test_remote_policy_drives_the_robot_like_the_local_one(tmp_path, tiny_vla):
    from prismatic.serve import ServeConfig, ServedModel
    from prismatic.serve.app import create_app
    from prismatic.serve.server import BackgroundServer

    preprocess = bridge_image_preprocessor()

    def episode(policy, out: Path) -> np.ndarray:
        run_robot_evaluation(TabletopRobot(), policy, out, TASKS[:1], episodes_per_task=1, max_steps=3, control_hz=0,
                             operator=ScriptedOperator([{"success": True}]), robot_name="tabletop",
                             safety=SafetyConfig(**TIGHT), progress=False)  # fmt: skip
        return np.load(out / "episodes" / "touch_the_red_block--ep000.npz")["actions"]

    local = episode(VLAPolicy(tiny_vla, "bridge_orig", preprocess=preprocess), tmp_path / "local")
    config = ServeConfig(checkpoint="(in memory)", port=0)
    with BackgroundServer(create_app(ServedModel(tiny_vla, "tiny"), config), config) as server:
        remote = episode(RemotePolicy(f"{server.url}/act", "bridge_orig", preprocess=preprocess, timeout_s=120),
                         tmp_path / "remote")  # fmt: skip
    np.testing.assert_array_equal(remote, local)


def test_stop_key_ends_the_episode_and_suggests_the_reason(tmp_path):
    class Constant:
        def reset(self) -> None:
            pass

        def act(self, obs) -> np.ndarray:
            return np.array([0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])

    class StopAtSecondPoll(StopSignal):
        polls = 0

        def poll(self):
            StopAtSecondPoll.polls += 1
            if StopAtSecondPoll.polls == 2:
                self.trigger("stop key 'q'")
            return super().poll()

    operator = ScriptedOperator([{"success": False, "failure_reason": "collision_or_safety_stop"}])
    results = run_robot_evaluation(
        TabletopRobot(64), Constant(), tmp_path, TASKS[:1], episodes_per_task=1, max_steps=10, control_hz=0,
        operator=operator, robot_name="tabletop", stop_signal=lambda: StopAtSecondPoll("q", None), progress=False,
    )  # fmt: skip
    (record,) = results.episodes
    assert record.extra["stop"] == "stop key 'q'" and record.failure_reason == "collision_or_safety_stop"
    data = np.load(tmp_path / record.extra["data"])
    assert len(data["applied_actions"]) == 1  # the second action was never sent
    assert operator.reports[0].stop == "stop key 'q'"
    assert operator.reports[0].suggested_reason == "collision_or_safety_stop"


def test_pacing_at_5_hz():
    now = [100.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(round(s, 9))
        now[0] += s

    pacer = Pacer(5.0, clock=lambda: now[0], sleep=sleep)
    pacer.start()
    for work in (0.05, 0.15, 0.35, 0.0):  # inference times; the third step is late
        now[0] += work
        pacer.wait()
    assert sleeps == [0.15, 0.05, 0.2]  # no sleep after the late step, and no catch-up burst after it
    assert [round(t - 100, 9) for t in pacer.ticks] == [0.0, 0.2, 0.4, 0.75, 0.95]
    assert pacer.measured_hz() == pytest.approx(4 / 0.95)
    with pytest.raises(ValueError, match="control_hz"):
        Pacer(-1)


def test_console_operator_asks_until_the_answer_is_valid():
    answers = iter(["", "maybe", "n", "9", "", "slipped"])
    said: list[str] = []
    label = ConsoleOperator(ask=lambda _: next(answers), say=said.append).label(
        EpisodeReport("carrot", 0, 12, "stop key 'q'", 2, None)
    )
    assert label == Label(False, "collision_or_safety_stop", "slipped")  # Enter took the suggested reason
    assert any("stopped: stop key 'q'" in s for s in said) and "answer y or n" in said
    assert sum(name in " ".join(said) for name in FAILURE_REASONS) == len(FAILURE_REASONS)
    with pytest.raises(ValueError, match="not one of"):
        Label(False, "bad luck")
    with pytest.raises(ValueError, match="no failure reason"):
        Label(True, "bad_grasp")


def test_widowx_adapter(monkeypatch):
    monkeypatch.setitem(sys.modules, "widowx_envs", None)
    with pytest.raises(ImportError, match="bridge_data_robot"):
        WidowXRobot()

    calls: list[tuple] = []

    class FakeClient:
        def __init__(self, host, port):
            calls.append(("connect", host, port))
            self.pending = [None, {"full_image": np.zeros((480, 640, 3), np.uint8), "state": np.arange(7.0)}]

        def init(self, params):
            calls.append(("init", params))

        def reset(self):
            calls.append(("reset",))

        def move(self, pose, duration, blocking):
            calls.append(("move", pose, duration, blocking))

        def get_observation(self):
            return (
                self.pending.pop(0)
                if self.pending
                else {"full_image": np.ones((480, 640, 3), np.uint8), "state": np.zeros(7)}
            )

        def step_action(self, action, blocking):
            calls.append(("step", action, blocking))

    service = types.ModuleType("widowx_envs.widowx_env_service")
    service.WidowXClient = FakeClient
    service.WidowXConfigs = types.SimpleNamespace(
        DefaultEnvParams={"fps": 10, "override_workspace_boundaries": None}
    )
    package = types.ModuleType("widowx_envs")
    package.widowx_env_service = service
    monkeypatch.setitem(sys.modules, "widowx_envs", package)
    monkeypatch.setitem(sys.modules, "widowx_envs.widowx_env_service", service)

    robot = WidowXRobot(WidowXConfig(host="robot", port=5556))
    robot.reset()
    obs = robot.observe()  # the first poll gets nothing: it waits for a frame
    robot.apply(np.array([0.01, 0, 0, 0, 0, 0, 1.0]), blocking=False)
    assert calls[0] == ("connect", "robot", 5556)
    params = calls[1][1]
    assert params["fps"] == 10 and params["return_full_image"] is True
    assert params["override_workspace_boundaries"] == [
        [0.1, -0.2, -0.01, -1.57, 0.0],
        [0.45, 0.25, 0.3, 1.57, 0.0],
    ]
    assert params["camera_topics"] == [{"name": "/blue/image_raw"}]
    assert params["start_state"] == [0.3, -0.09, 0.26, 0.0, -0.259, 0.0, -0.966]
    assert calls[2] == ("reset",)
    _, pose, duration, blocking = calls[3]
    np.testing.assert_array_equal(pose[:3, 3], [0.3, -0.09, 0.26])
    np.testing.assert_array_equal(pose[:3, :3], WidowXRobot.START_ROTATION)
    assert (duration, blocking) == (0.8, True)
    assert obs["image"].shape == (480, 640, 3) and obs["state"].tolist() == list(range(7))
    assert calls[4][0] == "step" and calls[4][2] is False


def test_robot_factory_validates_tasks(tmp_path):
    with pytest.raises(ValueError, match="at least one task"):
        run_robot_evaluation(TabletopRobot(64), None, tmp_path, [], operator=ScriptedOperator([]))
    with pytest.raises(ValueError, match="must differ"):
        run_robot_evaluation(TabletopRobot(64), None, tmp_path, ["Go!", "go"], operator=ScriptedOperator([]))
