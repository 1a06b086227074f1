"""Does the demo's tiny VLA learn to follow the tabletop instruction? A single-frame probe, no closed loop.

The command is scripts/probe_tabletop_grounding.py (its `main` is the one here).

The closed-loop demo (vla-scripts/tabletop_demo.py) answers with one success rate per ~10-minute run;
this probe isolates grounding, the hard part, and measures it as training goes:

  * training frames are rendered fresh (one frame per scene, random gripper start, random named
    object; 24,000 scenes by default), so memorising "this scene, that object" does not pay;
  * the model is the demo's (registry `tiny`, SigLIP-style ViT, 84 px), built the same way;
  * every --eval-every steps, on held-out frames:
      - target_acc: the predicted x AND y action tokens equal the expert's step towards the named object;
      - target_acc_distinct: the same, on the frames where no other object asks for the same step;
      - distractor_rate: the predicted (x, y) equals the step towards ANOTHER object, counted over the
        objects whose step differs from the target's. A policy that ignores the instruction picks the
        objects alike, so its distractor_rate is about its target_acc_distinct; one that follows the
        instruction drives distractor_rate towards 0.
  * --target-colour red keeps only scenes whose named object is red: the object to reach is then
    given by its colour alone, no language needed. The gap between this control and the default run
    is the cost of reading the instruction.

    .venv/bin/python scripts/probe_tabletop_grounding.py --steps 10000 --eval-every 500 --out runs/probe/grounding.json
    .venv/bin/python scripts/probe_tabletop_grounding.py --steps 2000 --target-colour red --out runs/probe/red.json

`--train-episodes N` trains instead on every frame of N episodes recorded as the demo records them
(`--episode-start`, `--goals` chained goals), and scores held-out first frames; `--tokenizer` picks the
model's tokenizer (the demo uses prismatic/assets/tokenizers/tabletop); `--base-vlm RUN` starts from a VLM run
instead of random weights (the toy VLM job's, vla-scripts/toy_vlm.py).

Each writes a JSON report (machine, versions, command, the curve); measured curves are in
docs/tabletop.md (results): the named object takes 3000-10,000 steps, the fixed colour under 1000;
one-goal demo episodes barely ground in 8000 steps, chained ones do by 6000.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import prismatic
from prismatic.envs import tabletop
from prismatic.envs.expert import ScriptedExpert, collect_episodes
from prismatic.normalization import normalize
from prismatic.training.config import TrainConfig, VLAConfig
from prismatic.training.model_setup import build_model_and_processor, sample_transform
from prismatic.util.io import atomic_write_json
from prismatic.util.progress import progress

IMAGE_SIZE = 84  # the demo's resolution (configs/vla/tabletop_demo.yaml)
# The expert's actions span exactly the action bounds, so bounds normalisation maps -5 / 0 / +5 cm to -1 / 0 / 1.
_LOW, _HIGH = tabletop.ACTION_LOW.tolist(), tabletop.ACTION_HIGH.tolist()
ACTION_STATS = {"min": _LOW, "max": _HIGH, "q01": _LOW, "q99": _HIGH, "mask": [True] * 6 + [False]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="probe_tabletop_grounding.py", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps")
    p.add_argument("--batch", type=int, default=16, help="frames per step (the demo's batch)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate, constant (the demo's)")
    p.add_argument("--train-frames", type=int, default=24000, help="distinct training scenes, one frame each")
    p.add_argument("--train-episodes", type=int, default=None,
                   help="train instead on every frame of this many demo episodes, recorded as the demo "
                        "records them (exploration noise, --episode-start); held-out frames then share that start")  # fmt: skip
    p.add_argument("--episode-start", choices=tabletop.START_MODES, default="random",
                   help="gripper start of the --train-episodes episodes (the demo's --start)")  # fmt: skip
    p.add_argument("--goals", type=int, default=None,
                   help="goals chained per --train-episodes episode (the demo's --goals; default: --num-objects)")  # fmt: skip
    p.add_argument("--val-frames", type=int, default=600, help="held-out scenes")
    p.add_argument("--num-objects", type=int, default=3, choices=range(1, tabletop.MAX_OBJECTS + 1))
    p.add_argument("--target-colour", choices=sorted(tabletop.COLORS), default=None,
                   help="control: only scenes whose named object has this colour")  # fmt: skip
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="tokenizer dir (default: the bundled Llama-2; the demo uses prismatic/assets/tokenizers/tabletop)")  # fmt: skip
    p.add_argument("--base-vlm", type=Path, default=None,
                   help="start from this VLM run (e.g. the toy VLM job's vlm-finetune/: its weights, architecture and "
                        "tokenizer) instead of random weights, as --vla.base_vlm does")  # fmt: skip
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="results JSON (default: print only)")
    a = p.parse_args(argv)
    for flag in ("steps", "batch", "train_frames", "val_frames", "eval_every", "threads", "train_episodes"):
        if getattr(a, flag) is not None and getattr(a, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(a, flag)}")
    if a.goals is not None and a.train_episodes is None:
        p.error("--goals chains goals within demo episodes: use it with --train-episodes")
    a.goals = a.num_objects if a.goals is None else a.goals
    if not 1 <= a.goals <= a.num_objects:
        p.error(f"--goals must be 1..--num-objects ({a.num_objects}): each goal is another object, got {a.goals}")
    if a.train_episodes is not None and a.target_colour is not None:
        p.error("--train-episodes and --target-colour cannot be combined: demo episodes name any colour")
    if a.base_vlm is not None and a.tokenizer is not None:
        p.error("--base-vlm brings its own tokenizer: drop --tokenizer")
    return a


def render_frames(
    n: int, seed: int, num_objects: int, target_colour: str | None, start: str = "random"
) -> dict[str, list]:
    """`n` scenes, one frame each: image, instruction, the expert's action, and the (x, y) step towards
    every object of the scene (row = object, the named one included)."""
    env = tabletop.TabletopEnv(image_size=IMAGE_SIZE, start=start, num_objects=num_objects)
    expert = ScriptedExpert(noise_std=0.0)
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"image": [], "instruction": [], "action": [], "steps": [], "target": []}
    s = seed
    with progress(total=n, desc=f"render (seed {seed})", leave=False) as bar:
        while len(out["image"]) < n:
            s += 1
            target = int(rng.integers(num_objects))
            if target_colour is not None:  # the scene's object of that colour, if it has one
                _, info = env.reset(seed=s)
                match = [o["index"] for o in info["objects"] if o["color"] == target_colour]
                if not match:
                    continue
                target = match[0]
            obs, info = env.reset(seed=s, options={"target": target})
            gripper = np.asarray(obs["state"][:2], np.float64)
            out["image"].append(obs["image"])
            out["instruction"].append(info["instruction"])
            out["action"].append(expert.act(obs, info))
            out["steps"].append(
                [tabletop.king_step(np.asarray(o["position"]) - gripper) for o in info["objects"]]
            )
            out["target"].append(target)
            bar.update()
    return out


def episode_frames(n: int, num_objects: int, start: str = "home", goals: int = 1) -> dict[str, list]:
    """Every frame of `n` expert episodes from seeds 0, 1, ..., as vla-scripts/tabletop_demo.py records them."""
    episodes = collect_episodes(n, seed=0, image_size=IMAGE_SIZE, start=start, num_objects=num_objects, goals=goals)
    return {
        "image": [im for e in episodes for im in e["image"]],
        "instruction": [str(text) for e in episodes for text in e["language_instruction"]],
        "action": [act for e in episodes for act in e["action"]],
    }


def build_model(seed: int, tokenizer: Path | None = None, base_vlm: Path | None = None):
    """The demo's tiny VLA, random (`seed`) or from `base_vlm` (its architecture, weights and tokenizer)."""
    vla_cfg = VLAConfig(size="tiny", vision_backbone_id="siglip-vit-so400m", arch_specifier="no-align+gelu-mlp",
                        image_size=IMAGE_SIZE if base_vlm is None else None, base_vlm=base_vlm)  # fmt: skip
    vla = build_model_and_processor(TrainConfig(vla=vla_cfg, data_root=Path("."), seed=seed, tokenizer=tokenizer))
    if (size := vla.model.config.image_sizes[0]) != IMAGE_SIZE:
        raise ValueError(f"--base-vlm {base_vlm} takes {size} px images; the probe renders {IMAGE_SIZE} px frames")
    transform, collator = sample_transform(vla)  # the ones training uses
    return vla, transform.encoder.image_transform, transform, collator


def encode(frames: dict[str, list], image_transform, transform) -> tuple[list, torch.Tensor]:
    actions = normalize(np.stack(frames["action"]), ACTION_STATS, "bounds")
    encoded = (transform.encoder.tokens(text, act) for text, act in zip(frames["instruction"], actions))
    seqs = [(t["input_ids"], t["labels"]) for t in encoded]
    pixels = torch.stack([image_transform(Image.fromarray(im)) for im in frames["image"]])
    return seqs, pixels


def step_tokens(action_tokenizer, steps: np.ndarray) -> np.ndarray:
    """The x and y action token ids of metre-valued (x, y) steps [..., 2]."""
    xy = normalize(np.asarray(steps, np.float64), {k: v[:2] for k, v in ACTION_STATS.items()}, "bounds")
    return np.asarray(action_tokenizer.encode(xy))


def collate(collator, seqs, pixels, rows) -> dict[str, torch.Tensor]:
    """The model inputs (with labels) of the frames `rows`."""
    batch = collator([{"input_ids": seqs[i][0], "labels": seqs[i][1], "pixel_values": pixels[i],
                       "dataset_name": "probe"} for i in rows])  # fmt: skip
    return {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "labels")}


def evaluate(
    model, seqs, pixels, collator, object_tokens: np.ndarray, targets: np.ndarray
) -> dict[str, float]:
    """target_acc and distractor_rate (see the module docstring) on the held-out frames."""
    model.eval()
    predicted = np.zeros((len(seqs), 2), np.int64)
    with torch.no_grad():
        for start in range(0, len(seqs), 100):
            rows = range(start, min(start + 100, len(seqs)))
            # the LM head on the labelled positions only: per frame, its 7 action tokens + EOS in order
            logits = model(**collate(collator, seqs, pixels, rows), return_label_logits=True).logits
            predicted[start : start + len(rows)] = (
                logits.view(len(rows), -1, logits.shape[-1])[:, :2].argmax(-1).numpy()
            )
    model.train()
    return grounding_metrics(predicted, object_tokens, targets)


def grounding_metrics(
    predicted: np.ndarray, object_tokens: np.ndarray, targets: np.ndarray
) -> dict[str, float]:
    """predicted [frames, 2] (x, y) tokens; object_tokens [frames, objects, 2] the step towards each object;
    targets [frames] the named object. Objects whose step equals the target's are not distractors."""
    rows = np.arange(len(predicted))
    hits = (object_tokens == predicted[:, None, :]).all(-1)  # [frames, objects]
    differs = ~(object_tokens == object_tokens[rows, targets][:, None, :]).all(-1)
    distractor = (hits & differs).sum() / max(1, differs.sum())
    distinct = differs.sum(1) == object_tokens.shape[1] - 1  # no other object shares the target's step
    return {"target_acc": float(hits[rows, targets].mean()),
            "target_acc_distinct": float(hits[rows, targets][distinct].mean()) if distinct.any() else float("nan"),
            "distractor_rate": float(distractor)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    vla, image_transform, transform, collator = build_model(a.seed, a.tokenizer, a.base_vlm)
    model = vla.model
    if a.train_episodes is not None:
        train = episode_frames(a.train_episodes, a.num_objects, a.episode_start, a.goals)
    else:
        train = render_frames(a.train_frames, 1_000_000 * (a.seed + 1), a.num_objects, a.target_colour)
    # held-out frames come from the training distribution's start
    val_start = "random" if a.train_episodes is None else a.episode_start
    val = render_frames(
        a.val_frames, 1_000_000 * (a.seed + 1) + 900_000, a.num_objects, a.target_colour, val_start
    )
    seqs, pixels = encode(train, image_transform, transform)
    val_seqs, val_pixels = encode(val, image_transform, transform)
    object_tokens = step_tokens(model.action_tokenizer, np.stack(val["steps"]))
    val_targets = np.asarray(val["target"])
    prep_s = time.time() - t0

    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0, fused=True)
    rng = np.random.default_rng(a.seed)
    curve, losses = [], []
    t1 = time.time()
    bar = progress(range(a.steps + 1), desc="probe")
    for step in bar:
        if step % a.eval_every == 0 or step == a.steps:
            point = {"step": step, "loss": float(np.mean(losses[-100:])) if losses else None,
                     **evaluate(model, val_seqs, val_pixels, collator, object_tokens, val_targets)}  # fmt: skip
            curve.append(point)
            bar.set_postfix(
                target=f"{point['target_acc_distinct']:.3f}", distractor=f"{point['distractor_rate']:.3f}"
            )
        if step == a.steps:
            break
        out = model(
            **collate(collator, seqs, pixels, rng.integers(len(seqs), size=a.batch)), return_label_logits=True
        )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
    result = {
        "command": " ".join(
            ["scripts/probe_tabletop_grounding.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_threads": a.threads,
        },
        "versions": {
            "prismatic": prismatic.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "prep_s": round(prep_s, 1),
        "train_s": round(time.time() - t1, 1),
        "curve": curve,
    }
    final = curve[-1]
    print(
        f"step {final['step']}: target_acc {final['target_acc']:.3f}, target_acc_distinct "
        f"{final['target_acc_distinct']:.3f}, distractor_rate {final['distractor_rate']:.3f}"
    )
    if a.out is not None:
        atomic_write_json(a.out, result)
    return result
