"""Evaluate a VLA on a real WidowX with the original Bridge protocol and a safety layer (docs/serving.md).

    # the model on this machine
    python vla-scripts/eval_robot.py --checkpoint /ckpts/openvla-7b --out_dir runs/robot/openvla-7b \
        --tasks '[put the carrot on the plate, put the eggplant in the pot]' --episodes_per_task 10
    # the model behind a policy server (vla-scripts/serve.py) on a GPU machine
    python vla-scripts/eval_robot.py --policy remote --remote_url http://gpu-box:8000/act --token "$TOKEN" ...
    # rehearse the whole loop on the simulated tabletop robot, labels from a file
    python vla-scripts/eval_robot.py --robot tabletop --checkpoint runs/tabletop-demo/policy --labels labels.json ...

5 Hz, 60 steps, non-blocking control (--blocking true waits for each motion), images JPEG round-tripped
and resized to 224 as in training, actions un-normalised with bridge_orig, then bounded by the safety
layer (--safety.* flags, prismatic/eval/safety.py). Press the stop key (--safety.stop_key, default q) or
Ctrl-C to end an episode. After each episode, label it (success, or a failure reason). Re-running with
the same --out_dir resumes; --redo '[TASK:EPISODE]' repeats recorded episodes.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import draccus

from prismatic.eval.robot import WidowXConfig
from prismatic.eval.safety import SafetyConfig

ROBOTS = ("widowx", "tabletop")
POLICIES = ("vla", "remote")


@dataclass
class EvalRobotConfig:
    # fmt: off
    robot: str = "widowx"                   # widowx | tabletop (the simulated robot, for rehearsals)
    tasks: list[str] = field(default_factory=list)     # task instructions, one task each
    episodes_per_task: int = 10
    max_steps: int = 60                     # the Bridge protocol's limit
    control_hz: float = 5.0                 # the Bridge protocol's rate (0: no pacing, simulation only)
    blocking: bool = False                  # wait for each motion to finish before the next observation
    policy: str = "vla"                     # vla (load --checkpoint here) | remote (a policy server)
    checkpoint: str = ""                    # policy=vla: anything load_vla reads
    device: str = "auto"                    # policy=vla: auto | cpu | cuda | cuda:N
    dtype: str = "auto"                     # policy=vla: auto | float32 | bfloat16 | float16
    remote_url: str = "http://127.0.0.1:8000/act"      # policy=remote: the server's /act endpoint
    token: str = ""                         # policy=remote: bearer token (or PRISMATIC_SERVE_TOKEN)
    unnorm_key: str = "bridge_orig"         # dataset statistics that un-normalise the actions
    image_size: int = 224                   # the model's input size (images are prepared to it as in training)
    out_dir: str = ""                       # default: runs/robot/<robot>--<checkpoint or server>
    labels: str = ""                        # JSON list of operator labels (non-interactive runs); default: ask
    redo: list[str] = field(default_factory=list)      # TASK:EPISODE entries to run again
    resume: bool = True                     # skip episodes already in out_dir/results.json
    save_frames: bool = False               # also store raw camera frames in each episode's .npz
    seed: int = 7                           # torch / numpy seed
    widowx: WidowXConfig = field(default_factory=WidowXConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    # fmt: on


def check(cfg: EvalRobotConfig) -> None:
    problems = []
    if cfg.robot not in ROBOTS:
        problems.append(f"--robot {cfg.robot!r} is not one of: {', '.join(ROBOTS)}")
    if cfg.policy not in POLICIES:
        problems.append(f"--policy {cfg.policy!r} is not one of: {', '.join(POLICIES)}")
    if cfg.policy == "vla" and not cfg.checkpoint:
        problems.append("--checkpoint is required with --policy vla")
    if not cfg.tasks:
        problems.append(
            "--tasks is required: a list of instructions, e.g. --tasks '[put the carrot on the plate]'"
        )
    if cfg.episodes_per_task < 1 or cfg.max_steps < 1:
        problems.append("--episodes_per_task and --max_steps must be >= 1")
    if cfg.robot == "widowx" and cfg.control_hz <= 0:
        problems.append("--control_hz must be > 0 on a real robot (the Bridge protocol runs at 5)")
    if cfg.labels and not Path(cfg.labels).is_file():
        problems.append(f"--labels {cfg.labels} is not a file")
    if problems:
        raise ValueError("invalid settings:\n  - " + "\n  - ".join(problems))


def make_policy(cfg: EvalRobotConfig):
    import os

    from prismatic.eval import RemotePolicy, VLAPolicy
    from prismatic.eval.robot import bridge_image_preprocessor

    preprocess = bridge_image_preprocessor(cfg.image_size)
    if cfg.policy == "remote":
        token = cfg.token or os.environ.get("PRISMATIC_SERVE_TOKEN") or None
        return RemotePolicy(cfg.remote_url, unnorm_key=cfg.unnorm_key, preprocess=preprocess, token=token)
    import torch

    from prismatic import load_vla

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    vla = load_vla(cfg.checkpoint, device=device, dtype=getattr(torch, dtype))
    return VLAPolicy(vla, unnorm_key=cfg.unnorm_key, preprocess=preprocess)


def make_robot(cfg: EvalRobotConfig):
    from prismatic.eval.robot import TabletopRobot, WidowXRobot

    return WidowXRobot(cfg.widowx) if cfg.robot == "widowx" else TabletopRobot()


def run(cfg: EvalRobotConfig):
    import random

    import numpy as np
    import torch

    from prismatic.eval import format_table
    from prismatic.eval.robot import ConsoleOperator, ScriptedOperator, drop_episodes, run_robot_evaluation

    check(cfg)
    name = Path(cfg.checkpoint).name if cfg.policy == "vla" else "remote"
    out_dir = Path(cfg.out_dir or f"runs/robot/{cfg.robot}--{name}")
    redone = drop_episodes(out_dir, cfg.redo)
    if redone:
        print(f"running again: {', '.join(redone)}", file=sys.stderr)
    operator = ScriptedOperator.from_file(cfg.labels) if cfg.labels else ConsoleOperator()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    policy = make_policy(cfg)
    robot = make_robot(cfg)
    try:
        results = run_robot_evaluation(
            robot, policy, out_dir, cfg.tasks, episodes_per_task=cfg.episodes_per_task, max_steps=cfg.max_steps,
            control_hz=cfg.control_hz, blocking=cfg.blocking, safety=cfg.safety, operator=operator,
            robot_name=cfg.robot, config={k: v for k, v in asdict(cfg).items() if k != "token"}, resume=cfg.resume,
            save_frames=cfg.save_frames,
        )  # fmt: skip
    finally:
        robot.close()
    table = format_table(results.summary())
    (out_dir / "results.md").write_text(f"# {cfg.robot}: {name}\n\n{table}\n")
    print(f"\n{table}\n\nresults: {out_dir / 'results.json'}", file=sys.stderr)
    return results


@draccus.wrap()
def main(cfg: EvalRobotConfig) -> None:
    try:
        run(cfg)
    except (ValueError, ImportError) as e:
        print(f"eval_robot: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
