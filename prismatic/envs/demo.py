"""The tabletop demo job (vla-scripts/tabletop_demo.py): expert demonstrations -> RLDS -> training with
vla-scripts/train.py -> closed-loop evaluation, with any action head, and the comparison of several heads
trained on the same recorded data.

Layout of `out_dir` (every stage is skipped when its output exists for the same settings):

    data/                                         the RLDS demonstrations, shared by every head
    policy/  eval/  results.json  success.png     the bin head (OpenVLA; the demo's layout before heads existed)
    <head>/policy/  <head>/eval/  ...             any other head (e.g. l1-regression/)
    <head>/warm-start-<i>-<head>/                 the runs a head is warm-started with, in order
    compare.json  compare.png                     --compare: the heads side by side

A head runs with its demo defaults (`DEMO_HEADS`: chunk length, actions executed per prediction, warm-start runs,
steps, learning rate) unless --chunk_len / --open_loop_steps / --init / --learning_rate say otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BINS = "bins"  # OpenVLA's head: the demo's layout and defaults before heads existed


INITS = ("warm-start", "scratch")  # a head's own training starts from its warm-start runs' policy, or random weights


@dataclass(frozen=True)
class WarmStart:
    """A training run before a head's own: `head` trained for `steps` optimizer steps, from random weights (the first)
    or fine-tuned from the run before (with configs/vla/tabletop_demo_finetune.yaml)."""

    head: str
    steps: int


@dataclass(frozen=True)
class HeadDefaults:
    """How the demo trains and runs a head unless --chunk_len / --open_loop_steps / --init / --learning_rate say otherwise."""

    chunk_len: int  # actions per prediction
    open_loop_steps: int  # actions of each chunk executed before predicting again (1: re-plan every step)
    warm_start: tuple[WarmStart, ...] = ()  # runs before the head's own, each fine-tuned from the one before
    max_steps: int | None = None  # the head's own optimizer steps (None: its recipe's)
    learning_rate: float | None = None  # the head's own peak learning rate (None: its recipe's)


# OpenVLA-OFT fine-tunes an OpenVLA (bin) policy into its parallel heads. At the demo's scale that one switch (causal ->
# bidirectional attention, zeroed action embeddings, a new head) failed on one of two bin policies; switching one
# thing at a time works: causal bins -> bins-parallel (new attention, same tokens and loss) -> l1-regression (new head
# on the same rows). From random weights the parallel heads ground late (bins-parallel) or never (L1: the median,
# "stay"). Chunks of 4 rather than 8: the slots dominate a parallel step's sequence, and they did as well. Fewer
# steps in the chain failed. docs/heads.md, "The tabletop demo", has every run behind these numbers.
_BINS_WARM_START = (WarmStart(BINS, 8000),)
DEMO_HEADS: dict[str, HeadDefaults] = {
    "bins": HeadDefaults(chunk_len=1, open_loop_steps=1),
    "bins-parallel": HeadDefaults(chunk_len=4, open_loop_steps=4, warm_start=_BINS_WARM_START),
    "l1-regression": HeadDefaults(chunk_len=4, open_loop_steps=4, warm_start=(*_BINS_WARM_START, WarmStart("bins-parallel", 4000)),
                                  max_steps=1000, learning_rate=5e-4),  # fmt: skip
}
OTHER_HEAD = HeadDefaults(chunk_len=1, open_loop_steps=1)  # a head registered later, without demo defaults


@dataclass(frozen=True)
class TrainRun:
    """One vla-scripts/train.py run of a head's training (`DemoConfig.runs`)."""

    head: str
    chunk: int
    steps: int | None  # None: the recipe's
    learning_rate: float | None  # None: the recipe's
    recipe: Path
    run_dir: Path


@dataclass
class DemoConfig:
    # fmt: off
    out_dir: Path = Path("runs/tabletop-demo")  # everything goes here
    num_demos: int = 1600                 # expert episodes recorded for training (~25,000 frames; ~1 min to generate and record)
    image_size: int = 84                  # rendered and model resolution
    num_objects: int = 3                  # objects per scene (1-3); 1 drops the language-swapped control
    start: str = "random"                 # gripper start: "random" (anywhere on the table) or "home" (fixed, like a robot's home pose)
    goals: int | None = None              # goals chained per demo episode (1..num_objects; None: every object of the scene)
    train_config: Path = REPO / "configs" / "vla" / "tabletop_demo.yaml"  # the training recipe (from random weights)
    finetune_config: Path = REPO / "configs" / "vla" / "tabletop_demo_finetune.yaml"  # the recipe of every run fine-tuned from the run before (warm starts)
    max_steps: int | None = None          # override the optimizer steps of every run (a head's warm-start runs too)
    learning_rate: float | None = None    # override the head's peak learning rate (its own run; None: the head's default)
    seed: int = 7                         # training seed (initial weights, data order); the demos always use seeds 0, 1, ...
    head: str = BINS                      # action head: bins (OpenVLA) | l1-regression | bins-parallel (OpenVLA-OFT)
    chunk_len: int | None = None          # actions per prediction (None: the head's demo default, DEMO_HEADS)
    open_loop_steps: int | None = None    # actions of each chunk executed before predicting again (1: re-plan every step; None: the head's default)
    init: str | None = None               # warm-start (the head's warm-start runs first, DEMO_HEADS) | scratch (random weights); None: the head's default
    compare: str | None = None            # comma-separated heads (e.g. bins,l1-regression): each trained and evaluated on the same data, side by side
    eval_episodes: int = 50               # closed-loop episodes per condition (held-out seeds)
    eval_seed: int = 100_000              # first evaluation seed (training demos use seeds from 0)
    video_episodes: int = 3               # rollouts saved as video per condition
    fresh: bool = False                   # delete out_dir first
    # fmt: on

    @property
    def goals_per_demo(self) -> int:
        """Goals chained per demo episode: every object of the scene unless --goals says otherwise."""
        return self.num_objects if self.goals is None else self.goals

    @property
    def head_defaults(self) -> HeadDefaults:
        return DEMO_HEADS.get(self.head, OTHER_HEAD)

    @property
    def chunk(self) -> int:
        """Actions per prediction of this run's head."""
        return self.head_defaults.chunk_len if self.chunk_len is None else self.chunk_len

    @property
    def open_loop(self) -> int:
        """Actions of each predicted chunk executed before the next prediction."""
        if self.open_loop_steps is not None:
            return self.open_loop_steps
        return min(self.head_defaults.open_loop_steps, self.chunk)

    @property
    def warm_start(self) -> tuple[WarmStart, ...]:
        """The runs trained before this head's own (none with --init scratch)."""
        return () if self.init == "scratch" else self.head_defaults.warm_start

    @property
    def init_from(self) -> str:
        """Where this head's own training starts: "scratch", or "warm-start" (the last warm-start run's policy)."""
        return "warm-start" if self.warm_start else "scratch"

    @property
    def runs(self) -> list[TrainRun]:
        """Every training run of this head, in order: its warm-start runs (in <head_dir>/warm-start-<i>-<head>/) and
        its own (<head_dir>/policy/). --max_steps sets them all."""
        from prismatic.models.heads import ACTION_HEADS

        runs = []
        for i, ws in enumerate(self.warm_start, start=1):
            parallel = ws.head in ACTION_HEADS and ACTION_HEADS.get(ws.head).parallel  # (its slots match the head's)
            chunk = self.chunk if parallel else DEMO_HEADS.get(ws.head, OTHER_HEAD).chunk_len
            runs.append(TrainRun(ws.head, chunk, ws.steps if self.max_steps is None else self.max_steps, None,
                                 self.finetune_config if runs else self.train_config,
                                 self.head_dir / f"warm-start-{i}-{ws.head}"))  # fmt: skip
        lr = self.learning_rate if self.learning_rate is not None else self.head_defaults.learning_rate
        steps = self.max_steps if self.max_steps is not None else self.head_defaults.max_steps
        runs.append(TrainRun(self.head, self.chunk, steps, lr, self.finetune_config if runs else self.train_config,
                             self.head_dir / "policy"))  # fmt: skip
        return runs

    @property
    def head_dir(self) -> Path:
        """Where this head's policy, evaluations and results go (the bin head keeps the demo's original layout)."""
        return self.out_dir if self.head == BINS else self.out_dir / self.head

    @property
    def compare_heads(self) -> list[str]:
        return [h.strip() for h in (self.compare or "").split(",") if h.strip()]


def step_banner(n: int, text: str) -> None:
    print(f"\n[{n}/3] {text}", flush=True)


# -- validation ----------------------------------------------------------------------------------------
def validate(cfg: DemoConfig) -> None:
    """Fail before any work, naming the flag, on settings a later stage would reject."""
    from prismatic.envs.tabletop import MAX_OBJECTS, START_MODES
    from prismatic.models.heads import ACTION_HEADS

    problems = []
    if isinstance(cfg.num_objects, bool) or not 1 <= cfg.num_objects <= MAX_OBJECTS:
        problems.append(f"--num_objects must be 1..{MAX_OBJECTS} (objects per scene), got {cfg.num_objects}")
    if cfg.start not in START_MODES:
        problems.append(f"--start must be one of {', '.join(START_MODES)}, got {cfg.start!r}")
    if cfg.goals is not None and (isinstance(cfg.goals, bool) or not 1 <= cfg.goals <= max(1, min(cfg.num_objects, MAX_OBJECTS))):
        problems.append(
            f"--goals must be 1..--num_objects ({cfg.num_objects}): each chained goal is another object, got {cfg.goals}"
        )
    heads = ACTION_HEADS.names()
    if cfg.compare is not None:
        unknown = [h for h in cfg.compare_heads if h not in ACTION_HEADS]
        if unknown:
            problems.append(f"--compare names unknown heads {unknown}; choose from: {', '.join(heads)}")
        elif len(set(cfg.compare_heads)) < 2:
            problems.append(f"--compare needs at least two different heads, comma-separated (e.g. bins,l1-regression), "
                            f"got {cfg.compare!r}")  # fmt: skip
        if cfg.head != BINS or any(v is not None for v in (cfg.chunk_len, cfg.open_loop_steps, cfg.learning_rate, cfg.init)):
            problems.append("--compare runs each head it names with its demo defaults: drop --head, --chunk_len, "
                            "--open_loop_steps, --learning_rate and --init (or run one head with them)")  # fmt: skip
    elif cfg.head not in ACTION_HEADS:
        problems.append(f"--head must be one of {', '.join(heads)} (prismatic.models.heads), got {cfg.head!r}")
    if cfg.chunk_len is not None and (isinstance(cfg.chunk_len, bool) or cfg.chunk_len < 1):
        problems.append(f"--chunk_len must be >= 1 (actions per prediction), got {cfg.chunk_len}")
    elif cfg.open_loop_steps is not None and not 1 <= cfg.open_loop_steps <= cfg.chunk:
        problems.append(f"--open_loop_steps must be 1..{cfg.chunk} (the chunk length: the model predicts {cfg.chunk} "
                        f"actions at a time), got {cfg.open_loop_steps}")  # fmt: skip
    if cfg.init is not None and cfg.init not in INITS:
        problems.append(f"--init must be one of {', '.join(INITS)}, got {cfg.init!r}")
    elif cfg.compare is None and cfg.init == "warm-start" and not cfg.head_defaults.warm_start:
        problems.append(f"--init warm-start: the {cfg.head} head has no warm-start runs (it trains from random weights); "
                        "heads with them: " + ", ".join(h for h, d in DEMO_HEADS.items() if d.warm_start))  # fmt: skip
    if cfg.learning_rate is not None and not cfg.learning_rate > 0:
        problems.append(f"--learning_rate must be > 0, got {cfg.learning_rate}")
    if cfg.eval_episodes < 1:
        problems.append(f"--eval_episodes must be >= 1, got {cfg.eval_episodes}")
    problems += _train_config_problems(cfg.train_config, "--train_config")
    if cfg.compare is not None or cfg.warm_start:
        problems += _train_config_problems(cfg.finetune_config, "--finetune_config")
    if problems:
        raise SystemExit("tabletop_demo.py: invalid settings:\n  " + "\n  ".join(problems))


def _train_config_problems(path: Path, flag: str) -> list[str]:
    """A recipe is read by vla-scripts/train.py after the data is generated: parse it now instead."""
    if not Path(path).is_file():
        return [f"{flag} {path} does not exist (the training recipe, e.g. {REPO / 'configs/vla/tabletop_demo.yaml'})"]
    import draccus

    from prismatic.training.config import TrainConfig

    try:
        draccus.parse(config_class=TrainConfig, config_path=str(path), args=[])
    except (Exception, SystemExit) as e:  # draccus reports a bad file by exiting
        return [f"{flag} {path} is not a valid training recipe ({type(e).__name__}: {e})"]
    return []


# -- stage 1: data -------------------------------------------------------------------------------------
def generate_data(cfg: DemoConfig) -> Path:
    from prismatic.envs.expert import ScriptedExpert, collect_episodes
    from prismatic.envs.record import DATASET_NAME, record_rlds

    data_root = cfg.out_dir / "data"
    marker = data_root / "demos.json"
    wanted = {"num_demos": cfg.num_demos, "image_size": cfg.image_size, "start": cfg.start, "seed": 0,
              "goals": cfg.goals_per_demo, "num_objects": cfg.num_objects, "expert": ScriptedExpert.VERSION}  # fmt: skip
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        print(f"  reusing {data_root / DATASET_NAME}")
        return data_root
    shutil.rmtree(data_root, ignore_errors=True)
    t = time.perf_counter()
    episodes = collect_episodes(cfg.num_demos, seed=0, image_size=cfg.image_size, start=cfg.start,
                                num_objects=cfg.num_objects, goals=cfg.goals_per_demo)  # fmt: skip
    path = record_rlds(episodes, data_root)
    marker.write_text(json.dumps(wanted))
    _record_seconds(data_root, time.perf_counter() - t)
    steps = sum(len(e["action"]) for e in episodes)
    print(f"  {len(episodes)} episodes / {steps} steps recorded as RLDS at {path} ({time.perf_counter() - t:.0f}s)")
    return data_root


MARKER = "demo.json"  # in a run directory: what its policy was trained with (--max_steps only extends a run)
TIMING = "demo_seconds.json"  # the seconds spent producing a directory's contents (kept when it is reused)


def recorded_seconds(directory: Path) -> float:
    path = directory / TIMING
    return float(json.loads(path.read_text())["seconds"]) if path.is_file() else 0.0


def _record_seconds(directory: Path, seconds: float) -> None:
    """Add `seconds` of work to what `directory` records (a resumed run adds its new part)."""
    from prismatic.util.io import atomic_write_json

    atomic_write_json(directory / TIMING, {"seconds": round(recorded_seconds(directory) + seconds, 1)})


def _sha256(paths) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).name.encode())
        h.update(Path(path).read_bytes())
    return h.hexdigest()


# -- stage 2: training ---------------------------------------------------------------------------------
def head_flags(run: TrainRun) -> list[str]:
    """vla-scripts/train.py flags selecting a run's head and its learning rate (none for the bin head with single
    actions: the recipe as it is)."""
    from prismatic.envs.tabletop import ACTION_LOW
    from prismatic.models.heads import ACTION_HEADS

    flags = []
    if run.head != BINS:
        flags += ["--vla.action_head", run.head]
    if run.chunk != 1:
        flags += ["--vla.chunk_len", str(run.chunk)]
    if ACTION_HEADS.get(run.head).parallel:  # all chunk_len x action_dim slots are laid out before training
        flags += ["--vla.action_dim", str(len(ACTION_LOW))]
    if run.learning_rate is not None:
        flags += ["--vla.learning_rate", str(run.learning_rate)]
    return flags


def _checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))


def train(cfg: DemoConfig, data_root: Path) -> list[Path]:
    """The head's policy: its warm-start runs, each fine-tuned from the one before, then its own run (`cfg.runs`).
    Each is reused when it exists for the same settings, a warm-start run also when another head's run under out_dir
    is the same run (`_same_finished_run`). Returns the directories of every run; the last holds the policy."""
    dirs: list[Path] = []
    for i, run in enumerate(cfg.runs):
        dirs.append(_train_run(cfg, run, data_root, dirs[-1] if dirs else None, warm_start=i < len(cfg.runs) - 1))
    return dirs


def _finished_steps(run_dir: Path) -> int | None:
    """The steps of a run that finished them all (its final checkpoint saved); None for an unfinished one."""
    config = run_dir / "config.json"
    steps = json.loads(config.read_text())["vla"].get("max_steps") if config.is_file() else None
    if steps is None:
        return None
    return steps if any(c.startswith(f"step-{steps:06d}-") for c in _checkpoints(run_dir)) else None


def _same_finished_run(cfg: DemoConfig, run: TrainRun, wanted: dict) -> Path | None:
    """A finished run under out_dir, other than `run`'s, trained with the same settings, base and steps: e.g. with
    --compare bins-parallel,l1-regression the L1 head's warm start (bins 8000 -> bins-parallel 4000) is the
    bins-parallel head's whole training, so it is trained once."""
    same = {k: v for k, v in wanted.items() if k != "steps"}  # (steps: compared as trained, below)
    for marker in sorted(cfg.out_dir.rglob(MARKER)):
        found = marker.parent
        if found == run.run_dir:
            continue
        recorded = {k: v for k, v in json.loads(marker.read_text()).items() if k != "steps"}
        if recorded == same and run.steps is not None and _finished_steps(found) == run.steps:
            return found
    return None


def _train_run(cfg: DemoConfig, run: TrainRun, data_root: Path, base_dir: Path | None, warm_start: bool) -> Path:
    run_dir = run.run_dir
    marker = run_dir / MARKER
    wanted = {"seed": cfg.seed, "image_size": cfg.image_size, "train_config": _sha256([run.recipe]),
              "head_flags": head_flags(run), "data": json.loads((data_root / "demos.json").read_text()),
              "base_weights": _sha256([base_dir / "checkpoints" / c for c in _checkpoints(base_dir)]) if base_dir else None}  # fmt: skip
    if cfg.max_steps is None and run.steps is not None:  # a head's own steps (absent otherwise: older runs stay reusable)
        wanted["steps"] = run.steps
    reusable = marker.is_file() and json.loads(marker.read_text()) == wanted
    if warm_start and not reusable and (found := _same_finished_run(cfg, run, wanted)) is not None:
        # A head's own run always trains in its directory (its evaluations go next to it); a warm start is only a base.
        print(f"  reusing {found}: the same run as this warm start ({run.head}, {run.steps} steps)")
        return found
    if run_dir.exists() and not reusable:
        print(f"  retraining: {run_dir} holds a policy trained with other settings (seed, resolution, recipe, head, "
              "steps, learning rate, warm start or data)")  # fmt: skip
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(wanted))
    cmd = [sys.executable, str(REPO / "vla-scripts" / "train.py"), "--config_path", str(run.recipe),
           "--data_root", str(data_root), "--run_root", str(run_dir.parent), "--run_id", run_dir.name,
           "--seed", str(cfg.seed), *head_flags(run)]  # fmt: skip
    # a fine-tuned run keeps its base's resolution (and size and tokenizer)
    cmd += ["--vla.base_vlm", str(base_dir)] if base_dir is not None else ["--vla.image_size", str(cfg.image_size)]
    if run.steps is not None:
        cmd += ["--vla.max_steps", str(run.steps)]
    print("  $ " + " ".join(Path(c).name if i == 0 else str(c) for i, c in enumerate(cmd)), flush=True)
    before, t = _checkpoints(run_dir), time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, env=os.environ)  # resumes (or returns at once) if the run exists
    if _checkpoints(run_dir) != before:  # it trained (a finished run returns at once: nothing to add)
        _record_seconds(run_dir, time.perf_counter() - t)
    print(f"  trained in {recorded_seconds(run_dir):.0f}s -> {run_dir}")
    from prismatic.training.plot import plot_run

    print(f"  training curves: {plot_run(run_dir)}")
    return run_dir


# -- stage 3: closed-loop evaluation -------------------------------------------------------------------
class TimedPolicy:
    """A policy that counts the actions it returns and the seconds spent choosing them (image preprocessing,
    prediction, un-normalisation; with chunks executed open loop, one prediction serves several actions)."""

    def __init__(self, policy: Any) -> None:
        self.policy, self.actions, self.seconds = policy, 0, 0.0

    def reset(self) -> None:
        self.policy.reset()

    def act(self, obs):
        t = time.perf_counter()
        action = self.policy.act(obs)
        self.seconds += time.perf_counter() - t
        self.actions += 1
        return action


def _throughput(eval_dir: Path, timer: TimedPolicy) -> dict | None:
    """This run's actions/s, or the one recorded when these episodes were evaluated (a resumed or reused run)."""
    from prismatic.util.io import atomic_write_json

    path = eval_dir / "throughput.json"
    if timer.actions:
        atomic_write_json(path, {"actions": timer.actions, "seconds": round(timer.seconds, 3),
                                 "actions_per_second": round(timer.actions / timer.seconds, 2)})  # fmt: skip
    return json.loads(path.read_text()) if path.is_file() else None


def evaluate(cfg: DemoConfig, run_dir: Path) -> dict:
    import prismatic
    from prismatic.envs import SwappedInstructionEnv, TabletopEnv
    from prismatic.envs.record import DATASET_NAME
    from prismatic.eval import EvalTask, GymEnvFactory, RandomPolicy, VLAPolicy, run_evaluation
    from prismatic.eval.harness import ResumeError
    from prismatic.eval.report import format_table, plot_success_bars
    from prismatic.eval.stats import SuccessStats

    vla = prismatic.load_vla(run_dir)
    seeds = list(range(cfg.eval_seed, cfg.eval_seed + cfg.eval_episodes))
    # Results are reused only for these weights, seeds and execution: a re-trained or extended policy, or
    # chunks executed differently, are evaluated again.
    identity = {"weights_sha256": _sha256(sorted((run_dir / "checkpoints").glob("*.pt"))), "seed": cfg.seed,
                "eval_seed": cfg.eval_seed, "image_size": cfg.image_size, "num_objects": cfg.num_objects,
                "start": cfg.start, "head": cfg.head, "chunk_len": cfg.chunk, "open_loop_steps": cfg.open_loop}  # fmt: skip
    task = EvalTask("reach", "", max_steps=TabletopEnv().max_steps, inits=seeds)

    low, high = TabletopEnv().action_space.low, TabletopEnv().action_space.high
    conditions = {
        "policy": (TabletopEnv, VLAPolicy(vla, unnorm_key=DATASET_NAME, open_loop_steps=cfg.open_loop)),
        "language-swapped": (SwappedInstructionEnv, VLAPolicy(vla, unnorm_key=DATASET_NAME, open_loop_steps=cfg.open_loop)),
        "random": (TabletopEnv, RandomPolicy(7, low=low, high=high, seed=0)),
    }
    if cfg.num_objects == 1:
        del conditions["language-swapped"]  # nothing else in the scene to name
    rows, throughput, eval_seconds = {}, {}, 0.0
    for name, (env_cls, policy) in conditions.items():
        factory = GymEnvFactory(f"tabletop-{name}", [task],
                                lambda _t, c=env_cls: c(image_size=cfg.image_size, start=cfg.start,
                                                        num_objects=cfg.num_objects))  # fmt: skip
        eval_dir = cfg.head_dir / "eval" / name
        kwargs = dict(video_episodes=range(cfg.video_episodes), video_fps=4, identity=identity,
                      config={"checkpoint": str(run_dir), "condition": name, "head": cfg.head})  # fmt: skip
        timer = TimedPolicy(policy)
        try:
            results = run_evaluation(factory, timer, eval_dir, **kwargs)
        except ResumeError as e:
            print(f"  re-evaluating {name}: {e}")
            (eval_dir / "throughput.json").unlink(missing_ok=True)
            results = run_evaluation(factory, timer, eval_dir, resume=False, **kwargs)
        _, overall = results.summary()
        rows[name] = SuccessStats(name, overall.episodes, overall.successes)
        throughput[name] = _throughput(eval_dir, timer)
        eval_seconds += sum(e.seconds for e in results.episodes)
    print(f"\nClosed-loop success on held-out seeds, head {cfg.head} (95% Wilson intervals):")
    print(format_table((list(rows.values()), rows["policy"]), "plain").rsplit("\n", 2)[0])
    speed = throughput["policy"]
    if speed is not None:
        print(f"policy: {speed['actions_per_second']:.1f} actions/s in closed loop ({cfg.chunk} per prediction, "
              f"{cfg.open_loop} executed)")  # fmt: skip
    chart = plot_success_bars((list(rows.values()), rows["policy"]), cfg.head_dir / "success.png",
                              title=f"tabletop reach, {cfg.head} head: policy vs controls")  # fmt: skip
    videos = sorted(str(p.relative_to(cfg.head_dir)) for p in (cfg.head_dir / "eval").glob("*/videos/*"))
    summary = {name: s.to_dict() for name, s in rows.items()}
    return {"summary": summary, "throughput": throughput, "success_chart": str(chart), "videos": videos,
            "eval_seconds": eval_seconds}  # fmt: skip


def target(summary: dict) -> tuple[bool, str]:
    """The demo's bar: policy >= 80% and, with several objects, the language-swapped control <= 50%."""
    ok, text = summary["policy"]["success_rate"] >= 0.8, "policy >= 80%"
    if "language-swapped" in summary:
        ok = ok and summary["language-swapped"]["success_rate"] <= 0.5
        text += " and language-swapped <= 50%"
    else:  # one object per scene: nothing to ground, only the visuomotor chain is tested
        text += " (one object: no language control)"
    return ok, text


# -- one head, and the comparison ---------------------------------------------------------------------
def run_head(cfg: DemoConfig, data_root: Path) -> dict:
    """Stages 2 and 3 for cfg.head; writes <head_dir>/results.json and returns it."""
    from prismatic.util.io import atomic_write_json

    runs = cfg.runs
    origin = "from random weights" if len(runs) == 1 else "warm-started: " + " -> ".join(
        f"{r.head} ({r.steps if r.steps is not None else 'recipe'} steps)" for r in runs)
    step_banner(2, f"training a tiny VLA with vla-scripts/train.py: {cfg.head} head, chunks of {cfg.chunk}, {origin}")
    run_dirs = train(cfg, data_root)
    run_dir = run_dirs[-1]
    step_banner(3, f"closed-loop evaluation, {cfg.eval_episodes} held-out seeds per condition "
                   f"({cfg.open_loop} of each chunk of {cfg.chunk} executed)")  # fmt: skip
    report = evaluate(cfg, run_dir)
    ok, text = target(report["summary"])
    # What producing these results cost, also when a stage was reused: the recorded data generation and training
    # (of the warm-start runs too) and the evaluation's episodes.
    seconds = {"data": recorded_seconds(data_root)}
    if len(runs) > 1:
        seconds["train_warm_start"] = sum(recorded_seconds(d) for d in run_dirs[:-1])  # (a shared run counts for each head)
    seconds.update(train=recorded_seconds(run_dir), eval=report.pop("eval_seconds"))
    seconds = {k: round(v, 1) for k, v in seconds.items()}
    report = {"head": cfg.head, "chunk_len": cfg.chunk, "open_loop_steps": cfg.open_loop, "init": cfg.init_from,
              "training_runs": [{"head": r.head, "chunk_len": r.chunk, "steps": r.steps, "run_dir": str(d)} for r, d in zip(runs, run_dirs)],
              **report,
              "target": {"met": ok, "text": text}, "stage_seconds": seconds, "total_seconds": round(sum(seconds.values()), 1),
              "training_curves": str(run_dir / "curves.png"), "config": {k: str(v) for k, v in asdict(cfg).items()}}  # fmt: skip
    atomic_write_json(cfg.head_dir / "results.json", report)
    print(f"\nresults: {cfg.head_dir / 'results.json'}; curves: {run_dir / 'curves.png'}; chart: {report['success_chart']}")
    if report["videos"]:
        print(f"videos: {', '.join(report['videos'][:3])} ...")
    parts = ", ".join(f"{k.replace('_', ' ')} {v / 60:.1f}" for k, v in seconds.items())
    print(f"{'PASS' if ok else 'BELOW TARGET'}: {text} ({report['total_seconds'] / 60:.1f} min: {parts})")
    return report


def _rate(summary: dict, name: str) -> str:
    s = summary.get(name)
    return "-" if s is None else f"{100 * s['success_rate']:.0f}% ({s['successes']}/{s['episodes']})"


def comparison_table(reports: dict[str, dict]) -> str:
    """The heads side by side: success, the language-swapped control, random, closed-loop actions/s, minutes."""
    header = ["head", "chunk", "executed", "policy", "language-swapped", "random", "actions/s", "minutes"]
    rows = [header]
    for head, r in reports.items():
        speed = (r.get("throughput") or {}).get("policy")
        rows.append([head, str(r["chunk_len"]), str(r["open_loop_steps"]), _rate(r["summary"], "policy"),
                     _rate(r["summary"], "language-swapped"), _rate(r["summary"], "random"),
                     "-" if speed is None else f"{speed['actions_per_second']:.1f}", f"{r['total_seconds'] / 60:.1f}"])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def plot_comparison(reports: dict[str, dict], path: Path) -> Path:
    """Success per condition (Wilson 95% whiskers) and closed-loop actions/s, one group per head."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    heads = list(reports)
    conditions = [c for c in ("policy", "language-swapped", "random") if any(c in r["summary"] for r in reports.values())]
    fig, (ax, ax_speed) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [2, 1]})
    try:
        x, width = np.arange(len(heads)), 0.8 / len(conditions)
        for i, cond in enumerate(conditions):
            stats = [reports[h]["summary"].get(cond) for h in heads]
            rates = [100 * s["success_rate"] if s else 0.0 for s in stats]
            err = [[100 * (s["success_rate"] - s["ci95_low"]) if s else 0.0 for s in stats],
                   [100 * (s["ci95_high"] - s["success_rate"]) if s else 0.0 for s in stats]]  # fmt: skip
            ax.bar(x + (i - (len(conditions) - 1) / 2) * width, rates, width, yerr=err, capsize=3, label=cond)
        ax.set_xticks(x, [f"{h}\n(chunk {reports[h]['chunk_len']}, {reports[h]['open_loop_steps']} executed)" for h in heads],
                      fontsize=8)  # fmt: skip
        ax.set_ylim(0, 105)
        ax.set_ylabel("closed-loop success (%)")
        ax.axhline(80, color="#888888", linestyle=":", linewidth=1)
        ax.legend(fontsize=7)
        speeds = [((reports[h].get("throughput") or {}).get("policy") or {}).get("actions_per_second", 0.0) for h in heads]
        ax_speed.bar(x, speeds, color="#55A868")
        ax_speed.set_xticks(x, heads, fontsize=8)
        ax_speed.set_ylabel("actions / s (closed loop)")
        fig.suptitle("tabletop reach: action heads trained on the same demonstrations", fontsize=10)
        fig.tight_layout()
        from prismatic.util.io import atomic_savefig

        atomic_savefig(fig, path)
    finally:
        plt.close(fig)
    return path


def compare(cfg: DemoConfig, data_root: Path) -> dict:
    """Every head of --compare trained and evaluated on the same recorded data; compare.json + compare.png."""
    from prismatic.util.io import atomic_write_json

    reports = {}
    for head in cfg.compare_heads:
        print(f"\n=== head {head} ===", flush=True)
        reports[head] = run_head(replace(cfg, head=head, compare=None), data_root)
    table = comparison_table(reports)
    print(f"\nHeads trained on the same {cfg.num_demos} demonstrations, {cfg.eval_episodes} held-out seeds per condition "
          "(minutes: data + that head's training, warm-start runs included, + evaluation):")  # fmt: skip
    print(table)
    chart = plot_comparison(reports, cfg.out_dir / "compare.png")
    result = {"heads": reports, "table": table, "chart": str(chart)}
    atomic_write_json(cfg.out_dir / "compare.json", result)
    print(f"comparison: {cfg.out_dir / 'compare.json'}; chart: {chart}")
    return result


def run(cfg: DemoConfig) -> dict:
    """The whole job: validate, record the demonstrations once, then each head (one, or --compare's)."""
    validate(cfg)
    if cfg.fresh:
        shutil.rmtree(cfg.out_dir, ignore_errors=True)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    step_banner(1, f"expert demonstrations -> RLDS ({cfg.num_demos} episodes, {cfg.image_size}px)")
    data_root = generate_data(cfg)
    if cfg.compare is not None:
        return compare(cfg, data_root)
    return run_head(cfg, data_root)
