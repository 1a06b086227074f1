"""The harness on a trivial fake environment with a scripted policy."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prismatic.eval import (
    EvalResults,
    EvalTask,
    GymEnvFactory,
    ResumeError,
    Step,
    format_table,
    make_env_factory,
    plot_success_bars,
    run_evaluation,
)
from prismatic.eval.stats import wilson_interval


class CounterEnv:
    """Succeeds once the policy has pushed a counter to the episode's target (init = target, or -1 = never).

    The image encodes the counter so videos differ frame to frame; `log` records every reset.
    """

    def __init__(self, task: EvalTask, log: list[tuple[str, int]]) -> None:
        self.task, self.log, self.count, self.target = task, log, 0, -1
        self.closed = False

    def reset(self, init: Any) -> dict[str, Any]:
        self.log.append((self.task.name, int(init)))
        self.count, self.target = 0, int(init)
        return self._obs()

    def _obs(self) -> dict[str, Any]:
        return {
            "image": np.full((16, 16, 3), 10 * self.count, np.uint8),
            "instruction": self.task.instruction,
        }

    def step(self, action: np.ndarray) -> Step:
        self.count += int(action[0])
        success = self.count == self.target
        return Step(self._obs(), success, success, {})

    def close(self) -> None:
        self.closed = True


class FakeFactory:
    name = "fake"

    def __init__(self) -> None:
        # task a: targets 1, 2, -1, 3 (3 successes of 4 with max_steps 5); task b: 1 success of 3.
        self._tasks = [
            EvalTask("a", "count up", 5, [1, 2, -1, 3]),
            EvalTask("b", "count more", 2, [2, 5, -1]),
        ]
        self.resets: list[tuple[str, int]] = []
        self.envs: list[CounterEnv] = []

    def tasks(self):
        return self._tasks

    def make(self, task: EvalTask) -> CounterEnv:
        self.envs.append(CounterEnv(task, self.resets))
        return self.envs[-1]


class StepPolicy:
    """Always action [1, 0, ...]; counts resets and calls."""

    def __init__(self, fail_on_call: int | None = None, exc: type[BaseException] = RuntimeError) -> None:
        self.resets = self.calls = 0
        self.fail_on_call, self.exc = fail_on_call, exc

    def reset(self) -> None:
        self.resets += 1

    def act(self, obs) -> np.ndarray:
        self.calls += 1
        assert obs["image"].dtype == np.uint8 and obs["instruction"]
        if self.calls == self.fail_on_call:
            raise self.exc("scripted failure")
        return np.array([1, 0, 0, 0, 0, 0, 0], np.float64)


def test_success_counting_and_results_json(tmp_path: Path):
    factory, policy = FakeFactory(), StepPolicy()
    results = run_evaluation(factory, policy, tmp_path, progress=False, config={"seed": 7})
    per_task, overall = results.summary()
    assert [(s.name, s.successes, s.episodes) for s in per_task] == [("a", 3, 4), ("b", 1, 3)]
    assert (overall.successes, overall.episodes) == (4, 7)
    # steps: a -> 1, 2, 5 (never), 3; b -> 2, 2 (cut at max_steps), 2
    assert [e.steps for e in results.episodes] == [1, 2, 5, 3, 2, 2, 2]
    assert policy.resets == 7 and all(env.closed for env in factory.envs)

    data = json.loads((tmp_path / "results.json").read_text())
    assert data["env"] == "fake" and data["config"]["seed"] == 7
    assert len(data["episodes"]) == 7 and data["episodes"][0]["instruction"] == "count up"
    rows = {r["name"]: r for r in data["summary"]["tasks"]}
    assert rows["a"]["success_rate"] == 0.75
    assert (rows["a"]["ci95_low"], rows["a"]["ci95_high"]) == pytest.approx(wilson_interval(3, 4))
    assert data["summary"]["overall"]["successes"] == 4
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_trials_per_task_and_task_filter(tmp_path: Path):
    factory = FakeFactory()
    results = run_evaluation(
        factory, StepPolicy(), tmp_path, trials_per_task=2, task_names=["b"], progress=False
    )
    assert factory.resets == [("b", 2), ("b", 5)]
    assert [e.success for e in results.episodes] == [True, False]
    with pytest.raises(ValueError, match="only 3 initial states"):
        run_evaluation(FakeFactory(), StepPolicy(), tmp_path / "x", trials_per_task=4, progress=False)
    with pytest.raises(ValueError, match="choose from: a, b"):
        run_evaluation(FakeFactory(), StepPolicy(), tmp_path / "y", task_names=["zz"], progress=False)


def test_resume_skips_recorded_episodes(tmp_path: Path):
    # An interrupt (not an ordinary error) on the 4th act() call stops the run inside task a's episode 2.
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(
            FakeFactory(), StepPolicy(fail_on_call=4, exc=KeyboardInterrupt), tmp_path, progress=False
        )
    saved = EvalResults.load(tmp_path)
    assert [(e.task, e.episode) for e in saved.episodes] == [("a", 0), ("a", 1)]

    factory, policy = FakeFactory(), StepPolicy()
    results = run_evaluation(factory, policy, tmp_path, progress=False)
    assert factory.resets == [("a", -1), ("a", 3), ("b", 2), ("b", 5), ("b", -1)]  # (task, init) pairs
    assert len(results.episodes) == 7 and results.summary()[1].successes == 4

    again = FakeFactory()
    run_evaluation(again, StepPolicy(), tmp_path, progress=False)
    assert again.resets == [] and again.envs == []  # nothing left: no env is even built

    fresh = FakeFactory()
    run_evaluation(fresh, StepPolicy(), tmp_path, progress=False, resume=False)
    assert len(fresh.resets) == 7


def test_resume_refuses_other_env(tmp_path: Path):
    run_evaluation(FakeFactory(), StepPolicy(), tmp_path, trials_per_task=1, progress=False)
    other = FakeFactory()
    other.name = "other"
    with pytest.raises(ResumeError, match="'fake', not 'other'"):
        run_evaluation(other, StepPolicy(), tmp_path, progress=False)


def test_results_write_is_atomic(tmp_path: Path, monkeypatch):
    run_evaluation(FakeFactory(), StepPolicy(), tmp_path, trials_per_task=1, progress=False)
    before = (tmp_path / "results.json").read_bytes()

    import prismatic.util.io as io_mod

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(io_mod.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        run_evaluation(FakeFactory(), StepPolicy(), tmp_path, trials_per_task=2, progress=False)
    assert (tmp_path / "results.json").read_bytes() == before  # the old file is intact, never half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_policy_errors_are_recorded_as_failures(tmp_path: Path):
    results = run_evaluation(
        FakeFactory(), StepPolicy(fail_on_call=1), tmp_path, trials_per_task=1, progress=False
    )
    first = results.episodes[0]
    assert not first.success and first.error == "RuntimeError: scripted failure"
    assert results.episodes[1].success  # the run went on


def test_videos_for_chosen_episodes(tmp_path: Path):
    results = run_evaluation(FakeFactory(), StepPolicy(), tmp_path, video_episodes=[0, 2], progress=False)
    with_video = {(e.task, e.episode): e.video for e in results.episodes if e.video}
    assert set(with_video) == {("a", 0), ("a", 2), ("b", 0), ("b", 2)}
    assert with_video[("a", 0)].startswith("videos/a--ep000--success.")
    assert "--failure." in with_video[("a", 2)]
    for rel in with_video.values():
        path = tmp_path / rel
        assert path.suffix in (".mp4", ".gif") and path.stat().st_size > 0
    gif = tmp_path / with_video[("a", 2)]
    if gif.suffix == ".gif":  # 5 steps -> 6 frames (every observation the policy saw, plus the last)
        from PIL import Image

        assert Image.open(gif).n_frames == 6


def test_progress_bar_reports_counts(tmp_path: Path):
    stream = io.StringIO()
    run_evaluation(FakeFactory(), StepPolicy(), tmp_path, progress=stream)
    text = stream.getvalue()
    assert "7/7" in text and "success 4/7" in text and "eval fake" in text


def test_table_and_bar_chart(tmp_path: Path):
    results = run_evaluation(FakeFactory(), StepPolicy(), tmp_path, progress=False)
    md = format_table(results.summary())
    lines = md.splitlines()
    assert lines[0].startswith("| task") and set(lines[1]) <= set("|-:")
    assert "| a " in lines[2] and "3/4" in lines[2] and "75.0" in lines[2]
    lo, hi = wilson_interval(4, 7)
    assert lines[-1].startswith("| overall") and f"[{100 * lo:.1f}, {100 * hi:.1f}]" in lines[-1]
    plain = format_table(results.summary(), fmt="plain")
    assert "|" not in plain and plain.splitlines()[-1].startswith("overall")
    with pytest.raises(ValueError, match="markdown, plain"):
        format_table(results.summary(), fmt="html")  # type: ignore[arg-type]

    png = plot_success_bars(results.summary(), tmp_path / "bars.png", title="fake")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class FakeGymEnv:
    """A Gymnasium-style env: terminates (success) when action[0] > 0, after `seed` % 3 + 1 such steps."""

    def reset(self, *, seed=None, options=None):
        self.left = seed % 3 + 1
        return {"image": np.zeros((8, 8, 3), np.uint8), "instruction": f"seed {seed}"}, {}

    def step(self, action):
        self.left -= action[0] > 0
        done = self.left == 0
        return {"image": np.zeros((8, 8, 3), np.uint8)}, float(done), bool(done), False, {}

    def close(self):
        pass


def test_gym_adapter(tmp_path: Path):
    factory = GymEnvFactory("gymfake", [EvalTask("t", "reach", 2, [0, 1, 2])], lambda task: FakeGymEnv())
    results = run_evaluation(factory, StepPolicy(), tmp_path, progress=False)
    assert [e.success for e in results.episodes] == [True, True, False]  # needs 1, 2, 3 steps; limit 2
    assert results.episodes[0].instruction == "seed 0"


def test_unknown_env_lists_choices():
    with pytest.raises(KeyError, match="choose one of: libero"):
        make_env_factory("nope")


def test_an_unreachable_policy_server_stops_the_run_unrecorded_and_resume_retries(tmp_path: Path):
    """Used to: every episode recorded as a failure, exit 0 with 0.0%, and resume never retried them."""
    import socket

    from prismatic.eval import RemotePolicy
    from prismatic.eval.policy import PolicyUnavailable

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/act"
    factory = FakeFactory()
    first = run_evaluation(factory, StepPolicy(), tmp_path, trials_per_task=1, task_names=["a"], progress=False)
    assert len(first.episodes) == 1
    remote = RemotePolicy(url, timeout_s=2, retries=2, backoff_s=0.01)
    with pytest.raises(PolicyUnavailable, match=rf"policy server at {url} cannot be reached .*3 tries.*stopped at "
                                                r"task 'b' episode 0: 1 episode\(s\) are recorded"):  # fmt: skip
        run_evaluation(factory, remote, tmp_path, trials_per_task=1, progress=False)
    assert [(e.task, e.episode) for e in EvalResults.load(tmp_path).episodes] == [("a", 0)]
    again = run_evaluation(factory, StepPolicy(), tmp_path, trials_per_task=1, progress=False)
    assert [(e.task, e.episode, e.error) for e in again.episodes] == [("a", 0, None), ("b", 0, None)]


def test_results_of_another_evaluation_are_not_resumed_into(tmp_path: Path):
    identity = {"weights_sha256": "abc", "seed": 7}
    run_evaluation(FakeFactory(), StepPolicy(), tmp_path, progress=False, identity=identity, trials_per_task=1)
    with pytest.raises(ResumeError, match=r"another evaluation \(seed: 7 -> 8; weights_sha256: 'abc' -> 'def'\)"):
        run_evaluation(FakeFactory(), StepPolicy(), tmp_path, progress=False, identity={"weights_sha256": "def", "seed": 8})
    more = run_evaluation(FakeFactory(), StepPolicy(), tmp_path, progress=False, identity=identity, trials_per_task=2)
    assert len(more.episodes) == 4  # same identity: resumed and extended


def test_progress_into_a_log_is_a_few_lines_not_one_per_episode(tmp_path):
    class ManyEpisodes(FakeFactory):
        def __init__(self) -> None:
            super().__init__()
            self._tasks = [EvalTask("a", "count up", 2, [1] * 60)]

    from prismatic.util.progress import LOG_INTERVAL_S

    log = io.StringIO()  # not a terminal, like the demo's log file
    start = time.monotonic()
    run_evaluation(ManyEpisodes(), StepPolicy(), tmp_path, progress=log)
    due = (time.monotonic() - start) / LOG_INTERVAL_S  # lines the interval allows between first and last
    lines = log.getvalue().splitlines()  # splits at "\r" too: every in-place redraw would count
    assert 2 <= len(lines) <= 2 + due, lines
    assert "60/60" in lines[-1] and "success 60/60 (100.0%)" in lines[-1]
