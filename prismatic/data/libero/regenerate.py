"""Regenerate LIBERO demonstrations the way OpenVLA's LIBERO fine-tuning data was made.

Each raw LIBERO HDF5 demo is replayed in its environment with images at 256x256 (the raw files hold
128x128); "no-op" steps are dropped (`is_noop`: near-zero translation and rotation AND the same gripper
command as the previous kept step, so pure gripper open/close steps survive); demos whose replay does
not end in success are dropped. Output: one `<task>_demo.hdf5` per task in the target folder with the
raw layout (data/demo_i/{actions, states, robot_states, rewards, dones, obs/{agentview_rgb,
eye_in_hand_rgb, gripper_states, joint_states, ee_states, ee_pos, ee_ori}}), plus <suite>_metainfo.json
recording each demo's success and initial state. Images are stored as rendered (upside down);
`prismatic.data.libero.convert` rotates them by 180 degrees on the way to RLDS (docs/libero.md).

    python scripts/libero/regenerate_libero_dataset.py --libero_task_suite libero_spatial \
        --libero_raw_data_dir data/libero/libero_spatial --libero_target_dir data/libero/libero_spatial_no_noops

The simulator's renderer must load before TensorFlow (prismatic/eval/libero.py explains why): nothing
here imports TensorFlow, and `regenerate_suite` builds the environments first.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prismatic.eval.libero import DUMMY_ACTION, SUITES, LiberoEnvFactory, make_raw_env, quat2axisangle
from prismatic.util.io import atomic_write_json
from prismatic.util.progress import progress as progress_bar

IMAGE_SIZE = 256  # the regenerated (and converted) frames; the raw LIBERO files hold 128x128
NOOP_THRESHOLD = 1e-4  # on the L2 norm of the movement part of an action (also the pipeline's "libero" filter)


def is_noop(
    action: np.ndarray, prev_action: np.ndarray | None = None, threshold: float = NOOP_THRESHOLD
) -> bool:
    """Zero motion (norm of the first six dims below `threshold`) and an unchanged gripper command.

    Without the gripper condition, steps where the arm is still but the gripper opens or closes would be
    lost. The first step has no previous command, so only the motion condition applies to it.
    """
    still = float(np.linalg.norm(np.asarray(action)[:-1])) < threshold
    if prev_action is None:
        return still
    return still and action[-1] == prev_action[-1]


def replay_demo(
    env: Any,
    orig_actions: np.ndarray,
    orig_states: np.ndarray,
    orig_robot_states: np.ndarray,
    num_steps_wait: int,
) -> tuple[dict[str, list], bool, int]:
    """Replay one demo; returns the kept transitions, whether the replay succeeded, and the no-ops dropped."""
    env.reset()
    env.set_init_state(orig_states[0])
    obs = None
    for _ in range(num_steps_wait):  # let objects settle, as during evaluation
        obs, _, _, _ = env.step(list(DUMMY_ACTION))
    keys = (
        "states",
        "actions",
        "ee_states",
        "gripper_states",
        "joint_states",
        "robot_states",
        "agentview_images",
        "eye_in_hand_images",
    )
    out: dict[str, list] = {k: [] for k in keys}
    done, noops = False, 0
    for action in orig_actions:
        prev = out["actions"][-1] if out["actions"] else None
        if is_noop(action, prev):
            noops += 1
            continue
        if not out["states"]:
            # The env was initialised from the demo's first state, so record that state and robot state as is.
            out["states"].append(orig_states[0])
            out["robot_states"].append(orig_robot_states[0])
        else:
            out["states"].append(env.sim.get_state().flatten())
            out["robot_states"].append(
                np.concatenate([obs["robot0_gripper_qpos"], obs["robot0_eef_pos"], obs["robot0_eef_quat"]])
            )
        out["actions"].append(action)
        if "robot0_gripper_qpos" in obs:
            out["gripper_states"].append(obs["robot0_gripper_qpos"])
        out["joint_states"].append(obs["robot0_joint_pos"])
        out["ee_states"].append(np.hstack((obs["robot0_eef_pos"], quat2axisangle(obs["robot0_eef_quat"]))))
        out["agentview_images"].append(obs["agentview_image"])
        out["eye_in_hand_images"].append(obs["robot0_eye_in_hand_image"])
        obs, _, done, _ = env.step(np.asarray(action).tolist())
    return out, bool(done), noops


def write_demo(group: Any, name: str, demo: dict[str, list]) -> None:
    n = len(demo["actions"])
    flags = np.zeros(n, dtype=np.uint8)
    flags[-1] = 1  # the last kept step is the (only) rewarded, terminal one
    ee = np.stack(demo["ee_states"])
    g = group.create_group(name)
    o = g.create_group("obs")
    o.create_dataset("gripper_states", data=np.stack(demo["gripper_states"]))
    o.create_dataset("joint_states", data=np.stack(demo["joint_states"]))
    o.create_dataset("ee_states", data=ee)
    o.create_dataset("ee_pos", data=ee[:, :3])
    o.create_dataset("ee_ori", data=ee[:, 3:])
    o.create_dataset("agentview_rgb", data=np.stack(demo["agentview_images"]))
    o.create_dataset("eye_in_hand_rgb", data=np.stack(demo["eye_in_hand_images"]))
    g.create_dataset("actions", data=np.stack(demo["actions"]))
    g.create_dataset("states", data=np.stack(demo["states"]))
    g.create_dataset("robot_states", data=np.stack(demo["robot_states"]))
    g.create_dataset("rewards", data=flags)
    g.create_dataset("dones", data=flags.copy())


@dataclass(frozen=True)
class Regenerated:
    target: Path
    replays: int
    successes: int
    noops: int

    def __str__(self) -> str:
        return (
            f"done: {self.target} ({self.successes}/{self.replays} replays succeeded, "
            f"{self.noops} no-op steps dropped); metainfo: {self.target}/*_metainfo.json"
        )


def regenerate_suite(
    suite: str,
    raw_dir: str | Path,
    target_dir: str | Path,
    *,
    task_ids: list[int] | None = None,
    num_steps_wait: int = 10,
    keep_failed: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Regenerated:
    """Replay every raw demo of `suite` (or of `task_ids`) from `raw_dir` and write the kept ones to `target_dir`."""
    raw_dir, target = Path(raw_dir), Path(target_dir)
    replace = target.exists() and any(target.iterdir())
    if replace and not overwrite:
        raise FileExistsError(f"{target} exists and is not empty; pass --overwrite to replace it")
    factory = LiberoEnvFactory(suite, task_ids=task_ids)  # the renderer first (before anything imports TF)
    import h5py

    if replace:
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)
    meta_path = target / f"{suite}_metainfo.json"
    meta: dict[str, dict[str, Any]] = {}
    replays = successes = noops = 0

    bar = progress_bar(factory.task_ids, desc=suite, unit="task", disable=not progress)
    for task_id in bar:
        task = factory.benchmark.get_task(task_id)
        raw_path = raw_dir / f"{task.name}_demo.hdf5"
        if not raw_path.exists():
            raise FileNotFoundError(f"no raw demo file {raw_path} for task {task_id} ({task.language!r})")
        env = make_raw_env(task, IMAGE_SIZE)
        out_path = target / f"{task.name}_demo.hdf5"
        with h5py.File(raw_path, "r") as raw, h5py.File(out_path, "w") as new:
            data, group = raw["data"], new.create_group("data")
            for i in range(len(data.keys())):
                demo = data[f"demo_{i}"]
                kept, done, dropped = replay_demo(
                    env, demo["actions"][()], demo["states"][()], demo["robot_states"][()], num_steps_wait
                )
                noops += dropped
                if kept["actions"] and (done or keep_failed):
                    write_demo(group, f"demo_{i}", kept)
                successes += int(done)
                replays += 1
                task_key = task.language.replace(" ", "_")
                meta.setdefault(task_key, {})[f"demo_{i}"] = {
                    "success": done,
                    "initial_state": np.asarray(demo["states"][0]).tolist(),
                }
                atomic_write_json(meta_path, meta)  # after every demo, so a crash keeps what was done
                bar.set_postfix_str(f"replayed {replays}, succeeded {successes}, no-ops dropped {noops}")
        env.close()
        bar.write(f"saved {out_path} ({replays} replays so far, {successes} succeeded)")
    bar.close()
    return Regenerated(target, replays, successes, noops)


def main(argv: list[str] | None = None) -> int:
    """The command line of scripts/libero/regenerate_libero_dataset.py."""
    p = argparse.ArgumentParser(prog="regenerate_libero_dataset.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--libero_task_suite", required=True, choices=list(SUITES))
    p.add_argument(
        "--libero_raw_data_dir", required=True, type=Path, help="folder of raw <task>_demo.hdf5 files"
    )
    p.add_argument("--libero_target_dir", required=True, type=Path, help="output folder (regenerated files)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --libero_target_dir")
    p.add_argument("--task_ids", type=int, nargs="*", default=None, help="only these tasks (default: all)")
    p.add_argument("--num_steps_wait", type=int, default=10)
    p.add_argument("--keep_failed", action="store_true", help="debugging only: also write failed replays")
    args = p.parse_args(argv)
    try:
        done = regenerate_suite(
            args.libero_task_suite, args.libero_raw_data_dir, args.libero_target_dir, task_ids=args.task_ids,
            num_steps_wait=args.num_steps_wait, keep_failed=args.keep_failed, overwrite=args.overwrite,
        )  # fmt: skip
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(done)
    return 0
