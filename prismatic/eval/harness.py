"""One closed-loop evaluation harness for every environment (LIBERO, the toy tabletop, future ones).

    factory = make_env_factory("libero", suite="libero_spatial")       # or any object with .name/.tasks()/.make()
    results = run_evaluation(factory, policy, out_dir="runs/eval/x", trials_per_task=50, video_episodes=[0])
    print(format_table(results.summary()))

An `EnvFactory` lists `EvalTask`s and builds one `EvalEnv` per task; the harness runs each task's episodes
(one per initial state / seed) with a `Policy`, writes `results.json` after every episode (atomically), and
on a re-run with the same `out_dir` skips the episodes already recorded there.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np

from prismatic.eval.env import ENV_FACTORIES, EnvFactory, EvalEnv, EvalTask
from prismatic.eval.policy import Policy, PolicyUnavailable
from prismatic.eval.stats import SuccessStats
from prismatic.eval.video import save_video, slugify
from prismatic.util.errors import UserError
from prismatic.util.io import atomic_write_json
from prismatic.util.mapping import mapping_diff
from prismatic.util.progress import progress as progress_bar

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
RESULTS_VERSION = 1


# -- environments (types: prismatic.eval.env) -------------------------------------------------------
def _libero_factory(**kwargs: Any) -> EnvFactory:
    from prismatic.eval.libero import LiberoEnvFactory  # optional extra: import only when asked for

    return LiberoEnvFactory(**kwargs)


ENV_FACTORIES.register("libero", _libero_factory)


def make_env_factory(name: str, **kwargs: Any) -> EnvFactory:
    """Build a registered environment factory by name (unknown names list the registered ones)."""
    return ENV_FACTORIES.get(name)(**kwargs)


# -- results -----------------------------------------------------------------------------------------
@dataclass
class EpisodeRecord:
    task: str
    episode: int  # index into the task's inits
    success: bool
    steps: int
    seconds: float
    instruction: str = ""
    video: str | None = None  # path relative to the results directory
    error: str | None = None  # an exception ended the episode (counted as a failure, as the original does)
    failure_reason: str | None = None  # the operator's label for a failed real-robot episode (eval/robot.py)
    extra: dict[str, Any] = field(default_factory=dict)  # what an env's episode_summary() adds (JSON-able)


@dataclass
class EvalResults:
    env: str
    config: dict[str, Any]
    tasks: list[dict[str, Any]]  # name, instruction, max_steps of every task in the run, in order
    episodes: list[EpisodeRecord] = field(default_factory=list)

    def done(self) -> set[tuple[str, int]]:
        return {(e.task, e.episode) for e in self.episodes}

    def summary(self) -> tuple[list[SuccessStats], SuccessStats]:
        """Per-task stats in task order (tasks without episodes left out) and the pooled total."""
        per_task: list[SuccessStats] = []
        for t in self.tasks:
            eps = [e for e in self.episodes if e.task == t["name"]]
            if eps:
                per_task.append(
                    SuccessStats(t["name"], len(eps), sum(e.success for e in eps), t["instruction"])
                )
        total = SuccessStats("overall", len(self.episodes), sum(e.success for e in self.episodes))
        return per_task, total

    def to_json(self) -> dict[str, Any]:
        per_task, total = self.summary()
        return {
            "version": RESULTS_VERSION,
            "env": self.env,
            "config": self.config,
            "tasks": self.tasks,
            "summary": {"tasks": [s.to_dict() for s in per_task], "overall": total.to_dict()},
            "episodes": [asdict(e) for e in sorted(self.episodes, key=lambda e: (e.task, e.episode))],
        }

    def save(self, out_dir: str | Path) -> Path:
        return atomic_write_json(Path(out_dir) / RESULTS_FILE, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> EvalResults:
        path = Path(path)
        if path.is_dir():
            path = path / RESULTS_FILE
        data = json.loads(path.read_text())
        if data.get("version") != RESULTS_VERSION:
            raise ValueError(
                f"{path}: results version {data.get('version')!r}, this code reads {RESULTS_VERSION}"
            )
        return cls(data["env"], data["config"], data["tasks"], [EpisodeRecord(**e) for e in data["episodes"]])


class ResumeError(UserError, RuntimeError):
    """results.json in the output directory belongs to another evaluation."""


# -- the loop ----------------------------------------------------------------------------------------
def run_episode(
    env: EvalEnv, policy: Policy, task: EvalTask, episode: int, frames: list[np.ndarray] | None = None
) -> EpisodeRecord:
    """Reset to `task.inits[episode]`, then act until success, the env ends the episode, or max_steps.

    Exceptions from the env or policy end the episode as a failure with the error recorded, so one bad
    episode does not lose a long run (as in the original LIBERO evaluation); except `PolicyUnavailable`
    (a policy server that cannot be reached), which is no fault of the episode: it propagates, unrecorded.
    """
    start, steps, success, error = time.perf_counter(), 0, False, None
    instruction = task.instruction
    try:
        obs = env.reset(task.inits[episode])
        instruction = str(obs.get("instruction", instruction))
        policy.reset()
        for _ in range(task.max_steps):
            if frames is not None:
                frames.append(np.asarray(obs["image"]))
            result = env.step(np.asarray(policy.act(obs)))
            obs, steps = result.obs, steps + 1
            if result.success:
                success = True
            if result.success or result.done:
                break
        if frames is not None:
            frames.append(np.asarray(obs["image"]))
    except PolicyUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - recorded and counted as a failure (see docstring)
        error = f"{type(e).__name__}: {e}"
        log.warning(
            "task %s episode %d failed with %s\n%s", task.name, episode, error, traceback.format_exc()
        )
    extra: dict[str, Any] = {}
    summarize = getattr(env, "episode_summary", None)
    if callable(summarize):
        extra = dict(summarize(success=success, steps=steps, error=error))
    return EpisodeRecord(
        task.name, episode, bool(extra.pop("success", success)), steps, round(time.perf_counter() - start, 3),
        instruction, error=error, failure_reason=extra.pop("failure_reason", None), extra=extra,
    )  # fmt: skip


def _episodes_for(task: EvalTask, trials_per_task: int | None) -> range:
    n = len(task.inits) if trials_per_task is None else trials_per_task
    if n > len(task.inits):
        raise ValueError(
            f"trials_per_task={n} but task {task.name!r} has only {len(task.inits)} initial states / seeds"
        )
    return range(n)


def _wants_video(video_episodes: Collection[int] | Literal["all"], episode: int) -> bool:
    return video_episodes == "all" or episode in video_episodes


def run_evaluation(
    factory: EnvFactory,
    policy: Policy,
    out_dir: str | Path,
    *,
    trials_per_task: int | None = None,
    task_names: Iterable[str] | None = None,
    video_episodes: Collection[int] | Literal["all"] = (),
    video_fps: int = 30,
    config: Mapping[str, Any] | None = None,
    identity: Mapping[str, Any] | None = None,
    resume: bool = True,
    progress: bool | TextIO = True,
    on_episode: Callable[[EpisodeRecord], None] | None = None,
) -> EvalResults:
    """Evaluate `policy` on every task of `factory` (or those named in `task_names`).

    trials_per_task: episodes per task, from the first inits of each task (default: all of them).
    video_episodes:  episode indices (within each task) to save as videos under out_dir/videos, or "all".
    config:          JSON-able run settings stored in results.json (checkpoint, seed, ...).
    identity:        JSON-able settings the episodes' outcomes depend on (the weights, seeds, ...): resuming
                     results recorded with another identity raises ResumeError naming what differs.
    resume:          reuse out_dir/results.json and skip its episodes; False starts afresh (overwrites).
    progress:        a progress bar with ETA on stderr (True), on the given stream, or none (False);
                     a few plain lines when the stream is not a terminal (prismatic.util.progress).

    A policy that cannot be reached (`PolicyUnavailable`) stops the run; the episodes recorded so far stay in
    results.json and a re-run resumes after them.
    """
    out_dir = Path(out_dir)
    all_tasks = list(factory.tasks())
    if task_names is not None:
        wanted, known = list(task_names), {t.name for t in all_tasks}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise ValueError(
                f"unknown task(s) {unknown} for {factory.name}; choose from: {', '.join(sorted(known))}"
            )
        all_tasks = [t for t in all_tasks if t.name in set(wanted)]
    plan = [(t, _episodes_for(t, trials_per_task)) for t in all_tasks]

    task_rows = [{"name": t.name, "instruction": t.instruction, "max_steps": t.max_steps} for t in all_tasks]
    run_config = {"trials_per_task": trials_per_task, **dict(config or {})}
    if identity is not None:
        run_config["identity"] = json.loads(json.dumps(dict(identity)))
    results = EvalResults(factory.name, run_config, task_rows)
    path = out_dir / RESULTS_FILE
    if resume and path.exists():
        previous = EvalResults.load(path)
        if previous.env != factory.name:
            raise ResumeError(
                f"{path} holds results for env {previous.env!r}, not {factory.name!r}; "
                "use another out_dir or resume=False"
            )
        if identity is not None and previous.config.get("identity") != run_config["identity"]:
            diff = mapping_diff(previous.config.get("identity") or {}, run_config["identity"])
            raise ResumeError(
                f"{path} holds episodes of another evaluation ({'; '.join(diff)}): they cannot be mixed with this "
                "run's; use another out_dir, or resume=False to overwrite them"
            )
        names = {t.name for t in all_tasks}
        results.episodes = [e for e in previous.episodes if e.task in names]
        # Keep tasks recorded earlier that this run does not list, so their episodes are not dropped.
        for row in previous.tasks:
            if row["name"] not in names:
                results.tasks.append(row)
                results.episodes += [e for e in previous.episodes if e.task == row["name"]]

    done = results.done()
    total = sum(len(eps) for _, eps in plan)
    already = sum((t.name, i) in done for t, eps in plan for i in eps)
    bar = None
    if progress:
        stream = sys.stderr if progress is True else progress
        bar = progress_bar(
            total=total,
            initial=already,
            desc=f"eval {factory.name}",
            unit="ep",
            file=stream,
            dynamic_ncols=True,
        )
    results.save(out_dir)
    try:
        for task, episodes in plan:
            todo = [i for i in episodes if (task.name, i) not in done]
            if not todo:
                continue
            env = factory.make(task)
            try:
                for i in todo:
                    frames: list[np.ndarray] | None = [] if _wants_video(video_episodes, i) else None
                    try:
                        record = run_episode(env, policy, task, i, frames)
                    except PolicyUnavailable as e:
                        raise PolicyUnavailable(
                            f"{e}. The evaluation stopped at task {task.name!r} episode {i}: {len(results.episodes)} "
                            f"episode(s) are recorded in {path}; run the same command again to resume"
                        ) from e
                    if frames:
                        outcome = "success" if record.success else "failure"
                        video = save_video(
                            frames,
                            out_dir / "videos" / f"{slugify(task.name)}--ep{i:03d}--{outcome}",
                            fps=video_fps,
                        )
                        record.video = str(video.relative_to(out_dir))
                    results.episodes.append(record)
                    results.save(out_dir)  # after every episode, so an interrupted run resumes here
                    if on_episode is not None:
                        on_episode(record)
                    if bar is not None:
                        _, overall = results.summary()
                        bar.set_postfix_str(
                            f"success {overall.successes}/{overall.episodes} ({overall.rate:.1%})"
                        )
                        bar.update(1)
            finally:
                env.close()
    finally:
        if bar is not None:
            bar.close()
    return results
