"""Evaluate a VLA on a LIBERO suite with the original OpenVLA protocol, through `prismatic.eval`.

    python vla-scripts/eval_libero.py --checkpoint runs/openvla-7b+libero_spatial --suite libero_spatial \
        --center_crop true --out_dir runs/eval/libero_spatial
    # an official OpenVLA-OFT release (no file records its settings: --settings oft-libero gives them)
    python vla-scripts/eval_libero.py --checkpoint /ckpts/openvla-7b-oft-finetuned-libero-spatial \
        --settings oft-libero --suite libero_spatial --center_crop true

The protocol follows the model: every camera it reads (LIBERO's third-person and wrist images, both through
the same JPEG / resize / centre-crop chain), the 8-D proprio state (end-effector position, axis-angle,
gripper joints) if it reads one, and chunks executed open loop (--open_loop_steps; OFT runs all 8).

Re-running with the same --out_dir resumes (episodes already in results.json are skipped). Writes
results.json, results.md (per-task table), success.png (bar chart) and videos/ under --out_dir.
--policy remote sends each frame to a policy server instead (wire format: prismatic/eval/policy.py).
--load_in_8bit / --load_in_4bit load the weights quantised with bitsandbytes (the original's flags);
--decode eager turns off the fast decoding path (static KV cache + CUDA graphs, the default on CUDA).
"""

import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import draccus
import numpy as np

POLICIES = ("vla", "remote", "random")
SETTINGS = ("recorded", "oft-libero")


@dataclass
class EvalLiberoConfig:
    # fmt: off
    checkpoint: str = ""                    # VLA checkpoint dir (HF layout or native run dir); policy=vla
    suite: str = "libero_spatial"           # libero_spatial | libero_object | libero_goal | libero_10 | libero_90
    num_trials_per_task: int = 50           # episodes per task (from the suite's fixed initial states, max 50)
    task_ids: list[int] = field(default_factory=list)   # subset of tasks (default: all)
    seed: int = 7                           # python / numpy / torch seed (the env itself is always seeded 0)
    out_dir: str = ""                       # default: runs/eval/libero/<suite>--<checkpoint name>
    center_crop: bool = True                # 0.9-area centre crop; True for models trained with crop augmentation
    unnorm_key: str = ""                    # default: the suite name (or <suite>_no_noops if that is what exists)
    video_episodes: list[int] = field(default_factory=lambda: [0])  # episode indices per task to save as video
    policy: str = "vla"                     # vla | remote | random
    remote_url: str = "http://127.0.0.1:8000/act"       # policy=remote: the server's /act endpoint
    device: str = "cuda"                    # policy=vla: torch device (falls back to cpu without CUDA)
    dtype: str = "bfloat16"                 # policy=vla: bfloat16 | float16 | float32
    load_in_8bit: bool = False              # policy=vla: bitsandbytes 8-bit weights (LLM.int8), as the original's flag
    load_in_4bit: bool = False              # policy=vla: bitsandbytes 4-bit weights (NF4)
    decode: str = "auto"                    # policy=vla: auto | eager | static | graphs (prismatic/models/decoding.py)
    num_steps_wait: int = 10                # do-nothing steps after reset while objects settle
    max_steps: int = 0                      # override the suite's step limit (0: 220/280/300/520/400)
    resume: bool = True                     # skip episodes already recorded in out_dir/results.json
    settings: str = "recorded"              # recorded | oft-libero: the action head, cameras, proprio, chunk of the
                                            #   OpenVLA-OFT LIBERO releases, which no file of theirs records
    open_loop_steps: int = 0                # actions of each chunk run before re-planning (0: all; 1: every step)
    # fmt: on


def _check(cfg: EvalLiberoConfig) -> None:
    from prismatic.eval.libero import check_suite

    check_suite(cfg.suite)
    if cfg.policy not in POLICIES:
        raise ValueError(f"unknown --policy {cfg.policy!r}; choose one of: {', '.join(POLICIES)}")
    if cfg.settings not in SETTINGS:
        raise ValueError(f"unknown --settings {cfg.settings!r}; choose one of: {', '.join(SETTINGS)}")
    if cfg.open_loop_steps < 0:
        raise ValueError(f"--open_loop_steps must be >= 0 (0: the whole chunk), got {cfg.open_loop_steps}")
    if cfg.policy == "vla" and not cfg.checkpoint:
        raise ValueError("--checkpoint is required with --policy vla")
    if "image_aug" in cfg.checkpoint and not cfg.center_crop:
        raise ValueError(
            "checkpoint name says it was trained with image augmentation: use --center_crop true"
        )
    if cfg.load_in_8bit and cfg.load_in_4bit:
        raise ValueError("--load_in_8bit and --load_in_4bit are exclusive: pick one")
    from prismatic.models.decoding import DECODE_MODES

    if cfg.decode not in DECODE_MODES:
        raise ValueError(f"unknown --decode {cfg.decode!r}; choose one of: {', '.join(DECODE_MODES)}")
    if not 1 <= cfg.num_trials_per_task <= 50:
        raise ValueError(
            f"--num_trials_per_task must be in 1..50 (LIBERO has 50 initial states), "
            f"got {cfg.num_trials_per_task}"
        )


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _make_policy(cfg: EvalLiberoConfig, preprocess):
    from prismatic.eval import RandomPolicy, RemotePolicy, VLAPolicy

    unnorm_key = cfg.unnorm_key or cfg.suite
    if cfg.policy == "random":  # chance baseline, in the model convention (gripper in [0, 1])
        return RandomPolicy(seed=cfg.seed, low=[-1.0] * 6 + [0.0], high=[1.0] * 6 + [1.0])
    if cfg.policy == "remote":
        return RemotePolicy(cfg.remote_url, unnorm_key=unnorm_key, preprocess=preprocess)
    import torch

    from prismatic import load_vla

    device = cfg.device if cfg.device != "cuda" or torch.cuda.is_available() else "cpu"
    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if cfg.dtype not in dtypes:
        raise ValueError(f"unknown --dtype {cfg.dtype!r}; choose one of: {', '.join(dtypes)}")
    from prismatic.models.oft import OFT_LIBERO

    settings = OFT_LIBERO if cfg.settings == "oft-libero" else {}
    quantize = "8bit" if cfg.load_in_8bit else "4bit" if cfg.load_in_4bit else None
    vla = load_vla(cfg.checkpoint, device=device, dtype=dtypes[cfg.dtype], quantize=quantize, decode=cfg.decode,
                   **settings)  # fmt: skip
    return VLAPolicy(vla, unnorm_key=unnorm_key, preprocess=preprocess, open_loop_steps=cfg.open_loop_steps or None)


@draccus.wrap()
def main(cfg: EvalLiberoConfig) -> None:
    _check(cfg)
    # Build the LIBERO factory first: it writes libero's config and loads the renderer before TF is imported.
    from prismatic.eval import format_table, plot_success_bars, run_evaluation
    from prismatic.eval.libero import LiberoEnvFactory, make_image_preprocessor

    factory = LiberoEnvFactory(
        cfg.suite,
        task_ids=cfg.task_ids or None,
        num_steps_wait=cfg.num_steps_wait,
        max_steps=cfg.max_steps or None,
    )
    _seed_everything(cfg.seed)
    policy = _make_policy(cfg, make_image_preprocessor(224, crop=cfg.center_crop))
    name = Path(cfg.checkpoint).name if cfg.checkpoint else cfg.policy
    out_dir = Path(cfg.out_dir or f"runs/eval/libero/{cfg.suite}--{name}")
    results = run_evaluation(
        factory,
        policy,
        out_dir,
        trials_per_task=cfg.num_trials_per_task,
        video_episodes=cfg.video_episodes,
        config=asdict(cfg),
        # what the outcomes depend on: results recorded with other values are never mixed in on resume
        identity={k: str(v) for k, v in asdict(cfg).items() if k in (
            "checkpoint", "policy", "remote_url", "suite", "unnorm_key", "center_crop", "seed", "dtype",
            "num_steps_wait", "max_steps")},  # fmt: skip
        resume=cfg.resume,
    )
    summary = results.summary()
    table = format_table(summary)
    (out_dir / "results.md").write_text(f"# {cfg.suite} ({name})\n\n{table}\n")
    plot_success_bars(summary, out_dir / "success.png", title=f"{cfg.suite}: {name}")
    print(f"\n{table}\n\nresults: {out_dir / 'results.json'}", file=sys.stderr)


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
