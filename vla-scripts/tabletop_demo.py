"""The main job: the whole VLA chain on a laptop CPU, on the embedded tabletop benchmark.

    .venv/bin/python vla-scripts/tabletop_demo.py                # ~10.5 minutes on 2 CPU cores

1. generate scripted-expert demonstrations in `prismatic.envs.TabletopEnv`, each chaining every object of
   its scene as successive goals, and record them as an RLDS dataset (TFDS format, per-step
   instructions), registered by one YAML entry (configs/datasets/tabletop_reach.yaml);
2. train the registry's `tiny` VLA (SigLIP-style ViT, MLP projector, Llama decoder; random init; the
   benchmark's word tokenizer) with the project's own training entry point (vla-scripts/train.py,
   configs/vla/tabletop_demo.yaml);
3. evaluate it in closed loop on held-out seeds with the evaluation harness: the policy, the same
   policy with each instruction swapped to another object's (language-blind control), and a random
   policy; print the success table; write results JSON, the training curves PNG and rollout videos.

Every step is skipped when its output already exists for the same settings (re-running resumes): the data
when its generation settings match, the policy when its seed, resolution, recipe and data match (else it is
trained afresh; --max_steps extends it), each evaluation when it belongs to the same weights and seeds (else it
is run again). `--fresh true` starts over.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import draccus

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the demo


@dataclass
class DemoConfig:
    out_dir: Path = Path("runs/tabletop-demo")  # everything goes here
    num_demos: int = 1600  # expert episodes recorded for training (~25,000 frames; ~1 min to generate and record)
    image_size: int = 84  # rendered and model resolution
    num_objects: int = 3  # objects per scene (1-3); 1 drops the language-swapped control
    start: str = "random"  # gripper start: "random" (anywhere on the table) or "home" (fixed, like a robot's home pose)
    goals: int | None = None  # goals chained per demo episode (1..num_objects; None: every object of the scene)
    train_config: Path = REPO / "configs" / "vla" / "tabletop_demo.yaml"  # the training recipe
    max_steps: int | None = None  # override the recipe's optimizer steps
    seed: int = 7  # training seed (initial weights, data order); the demos always use seeds 0, 1, ...
    eval_episodes: int = 50  # closed-loop episodes per condition (held-out seeds)
    eval_seed: int = 100_000  # first evaluation seed (training demos use seeds from 0)
    video_episodes: int = 3  # rollouts saved as video per condition
    fresh: bool = False  # delete out_dir first


def goals(cfg: DemoConfig) -> int:
    """Goals chained per demo episode: every object of the scene unless --goals says otherwise."""
    return cfg.num_objects if cfg.goals is None else cfg.goals


def step_banner(n: int, text: str) -> None:
    print(f"\n[{n}/3] {text}", flush=True)


def generate_data(cfg: DemoConfig) -> Path:
    from prismatic.envs.expert import ScriptedExpert, collect_episodes
    from prismatic.envs.record import DATASET_NAME, record_rlds

    data_root = cfg.out_dir / "data"
    marker = data_root / "demos.json"
    wanted = {"num_demos": cfg.num_demos, "image_size": cfg.image_size, "start": cfg.start, "seed": 0, "goals": goals(cfg),
              "num_objects": cfg.num_objects, "expert": ScriptedExpert.VERSION}  # fmt: skip
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        print(f"  reusing {data_root / DATASET_NAME}")
        return data_root
    shutil.rmtree(data_root, ignore_errors=True)
    t = time.perf_counter()
    episodes = collect_episodes(cfg.num_demos, seed=0, image_size=cfg.image_size, start=cfg.start,
                                num_objects=cfg.num_objects, goals=goals(cfg))  # fmt: skip
    path = record_rlds(episodes, data_root)
    marker.write_text(json.dumps(wanted))
    steps = sum(len(e["action"]) for e in episodes)
    print(f"  {len(episodes)} episodes / {steps} steps recorded as RLDS at {path} ({time.perf_counter() - t:.0f}s)")
    return data_root


def _sha256(paths) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).name.encode())
        h.update(Path(path).read_bytes())
    return h.hexdigest()


def train(cfg: DemoConfig, data_root: Path) -> Path:
    run_dir = cfg.out_dir / "policy"
    marker = run_dir / "demo.json"  # what the policy was trained with (--max_steps only extends a run)
    wanted = {"seed": cfg.seed, "image_size": cfg.image_size, "train_config": _sha256([cfg.train_config]),
              "data": json.loads((data_root / "demos.json").read_text())}  # fmt: skip
    if run_dir.exists() and (not marker.is_file() or json.loads(marker.read_text()) != wanted):
        print(f"  retraining: {run_dir} holds a policy trained with other settings (seed, resolution, recipe or data)")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(wanted))
    cmd = [sys.executable, str(REPO / "vla-scripts" / "train.py"), "--config_path", str(cfg.train_config),
           "--data_root", str(data_root), "--run_root", str(cfg.out_dir), "--run_id", "policy",
           "--vla.image_size", str(cfg.image_size), "--seed", str(cfg.seed)]  # fmt: skip
    if cfg.max_steps is not None:
        cmd += ["--vla.max_steps", str(cfg.max_steps)]
    print("  $ " + " ".join(Path(c).name if i == 0 else str(c) for i, c in enumerate(cmd)), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, env=os.environ)  # resumes (or returns at once) if the run exists
    print(f"  trained in {time.perf_counter() - t:.0f}s -> {run_dir}")
    from prismatic.training.plot import plot_run

    print(f"  training curves: {plot_run(run_dir)}")
    return run_dir


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
    # Results are reused only for these weights and seeds: a re-trained or extended policy is evaluated again.
    identity = {"weights_sha256": _sha256(sorted((run_dir / "checkpoints").glob("*.pt"))), "seed": cfg.seed,
                "eval_seed": cfg.eval_seed, "image_size": cfg.image_size, "num_objects": cfg.num_objects,
                "start": cfg.start}  # fmt: skip
    task = EvalTask("reach", "", max_steps=TabletopEnv().max_steps, inits=seeds)

    low, high = TabletopEnv().action_space.low, TabletopEnv().action_space.high
    conditions = {
        "policy": (TabletopEnv, VLAPolicy(vla, unnorm_key=DATASET_NAME)),
        "language-swapped": (SwappedInstructionEnv, VLAPolicy(vla, unnorm_key=DATASET_NAME)),
        "random": (TabletopEnv, RandomPolicy(7, low=low, high=high, seed=0)),
    }
    if cfg.num_objects == 1:
        del conditions["language-swapped"]  # nothing else in the scene to name
    rows = {}
    for name, (env_cls, policy) in conditions.items():
        factory = GymEnvFactory(f"tabletop-{name}", [task],
                                lambda _t, c=env_cls: c(image_size=cfg.image_size, start=cfg.start,
                                                        num_objects=cfg.num_objects))  # fmt: skip
        kwargs = dict(video_episodes=range(cfg.video_episodes), video_fps=4, identity=identity,
                      config={"checkpoint": str(run_dir), "condition": name})  # fmt: skip
        try:
            results = run_evaluation(factory, policy, cfg.out_dir / "eval" / name, **kwargs)
        except ResumeError as e:
            print(f"  re-evaluating {name}: {e}")
            results = run_evaluation(factory, policy, cfg.out_dir / "eval" / name, resume=False, **kwargs)
        _, overall = results.summary()
        rows[name] = SuccessStats(name, overall.episodes, overall.successes)
    print("\nClosed-loop success on held-out seeds (95% Wilson intervals):")
    print(format_table((list(rows.values()), rows["policy"]), "plain").rsplit("\n", 2)[0])
    chart = plot_success_bars((list(rows.values()), rows["policy"]), cfg.out_dir / "success.png",
                              title="tabletop reach: policy vs controls")  # fmt: skip
    videos = sorted(str(p.relative_to(cfg.out_dir)) for p in (cfg.out_dir / "eval").glob("*/videos/*"))
    summary = {name: s.to_dict() for name, s in rows.items()}
    return {"summary": summary, "success_chart": str(chart), "videos": videos}


def validate(cfg: DemoConfig) -> None:
    """Fail before any work, naming the flag, on settings the environment would reject later."""
    from prismatic.envs.tabletop import MAX_OBJECTS, START_MODES

    problems = []
    if isinstance(cfg.num_objects, bool) or not 1 <= cfg.num_objects <= MAX_OBJECTS:
        problems.append(f"--num_objects must be 1..{MAX_OBJECTS} (objects per scene), got {cfg.num_objects}")
    if cfg.start not in START_MODES:
        problems.append(f"--start must be one of {', '.join(START_MODES)}, got {cfg.start!r}")
    if cfg.goals is not None and (isinstance(cfg.goals, bool) or not 1 <= cfg.goals <= max(1, min(cfg.num_objects, MAX_OBJECTS))):
        problems.append(
            f"--goals must be 1..--num_objects ({cfg.num_objects}): each chained goal is another object, got {cfg.goals}"
        )
    problems += _train_config_problems(cfg.train_config)
    if problems:
        raise SystemExit("tabletop_demo.py: invalid settings:\n  " + "\n  ".join(problems))


def _train_config_problems(path: Path) -> list[str]:
    """The recipe is read by vla-scripts/train.py after the data is generated: parse it now instead."""
    if not Path(path).is_file():
        return [f"--train_config {path} does not exist (the training recipe, e.g. {REPO / 'configs/vla/tabletop_demo.yaml'})"]
    from prismatic.training.config import TrainConfig

    try:
        draccus.parse(config_class=TrainConfig, config_path=str(path), args=[])
    except (Exception, SystemExit) as e:  # draccus reports a bad file by exiting
        return [f"--train_config {path} is not a valid training recipe ({type(e).__name__}: {e})"]
    return []


@draccus.wrap()
def main(cfg: DemoConfig) -> None:
    validate(cfg)
    t0 = time.perf_counter()
    if cfg.fresh:
        shutil.rmtree(cfg.out_dir, ignore_errors=True)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    step_banner(1, f"expert demonstrations -> RLDS ({cfg.num_demos} episodes, {cfg.image_size}px)")
    data_root = generate_data(cfg)
    step_banner(2, "training a tiny VLA with vla-scripts/train.py")
    run_dir = train(cfg, data_root)
    step_banner(3, f"closed-loop evaluation, {cfg.eval_episodes} held-out seeds per condition")
    report = evaluate(cfg, run_dir)
    report.update(config={k: str(v) for k, v in asdict(cfg).items()}, total_seconds=round(time.perf_counter() - t0, 1),
                  training_curves=str(run_dir / "curves.png"))  # fmt: skip
    from prismatic.util.io import atomic_write_json

    atomic_write_json(cfg.out_dir / "results.json", report)
    s = report["summary"]
    ok, target = s["policy"]["success_rate"] >= 0.8, "policy >= 80%"
    if "language-swapped" in s:
        ok = ok and s["language-swapped"]["success_rate"] <= 0.5
        target += " and language-swapped <= 50%"
    else:  # one object per scene: nothing to ground, only the visuomotor chain is tested
        target += " (one object: no language control)"
    print(f"\nresults: {cfg.out_dir / 'results.json'}; curves: {run_dir / 'curves.png'}; chart: {report['success_chart']}")
    print(f"videos: {', '.join(report['videos'][:3])} ...")
    print(f"{'PASS' if ok else 'BELOW TARGET'}: {target} ({report['total_seconds'] / 60:.1f} min total)")


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
