"""The toy VLM job (vla-scripts/toy_vlm.py): does a VLM stage help the tabletop VLA ground its instruction?

    1. data       captions and questions about rendered tabletop scenes, LLaVA-v1.5 JSON (`prismatic.envs.captions`)
    2. align      the demo's tiny model (SigLIP-style ViT, MLP projector, 2-layer Llama, word tokenizer) as a
                  VLM: projector only, on the captions (vla-scripts/pretrain_vlm.py --stage align)
    3. finetune   every question, from the align run (--stage full-finetune by default: the tiny ViT starts
                  random, so it must learn too)
    4. score      greedy answers to the held-out scenes' questions: exact-match accuracy per question type,
                  next to image-blind baselines (`prismatic.envs.qa_metrics`)
    5. demos      the tabletop demo's expert demonstrations as RLDS (as vla-scripts/tabletop_demo.py records them)
    6. VLA        the demo's recipe (configs/vla/tabletop_demo.yaml) twice with the same seed and data: from
                  scratch, and from the finetuned VLM (--vla.base_vlm); each checkpoint every --eval_every steps
                  is evaluated in closed loop (policy and language-swapped control, held-out seeds), and the
                  first one that meets the demo's bar (policy >= 80%, language-swapped <= 50%) is the run's
                  steps-to-bar.

Layout of `out_dir`; a stage is skipped when its output exists for the same inputs (each run directory holds
`toy_vlm.json`, what it was made from; a run with other inputs is made afresh, an unfinished one resumes):

    data/                   images/, align.json, finetune.json, heldout.json, captions.json
    vlm-align/  vlm-finetune/            VLM runs
    vlm_scores.json  vlm_predictions.jsonl
    demos/                  the RLDS demonstrations
    vla-scratch/  vla-vlm/  VLA runs (a checkpoint kept per evaluated step)
    eval/<start>/step-NNNNNN/<condition>/   harness results (resumable)
    results.json  results.md  results.png
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
STARTS = ("scratch", "vlm")  # the two VLA initialisations compared
CONDITIONS = ("policy", "language-swapped")
BAR = "policy >= 80% and language-swapped <= 50%"  # the tabletop demo's success bar
# Tokens generated per answer: a caption is at most 12 words and 2 commas; every other answer is 1-2 words, and a
# few more tokens show (and score as wrong) an answer that does not stop.
MAX_ANSWER_TOKENS = {"caption": 20}


@dataclass
class ToyVLMConfig:
    # fmt: off
    out_dir: Path = Path("runs/toy-vlm")   # everything goes here
    # 1. data
    num_train: int = 4000                  # training scenes (each: a caption and ~14 questions)
    num_heldout: int = 300                 # held-out scenes, every question scored
    turns: int = 3                         # questions per finetune conversation
    # 2-3. the VLM
    align_steps: int = 500                 # align stage optimizer steps (projector only)
    finetune_steps: int = 10000            # finetune stage optimizer steps
    finetune_stage: str = "full-finetune"  # full-finetune (ViT too) | finetune (projector + LLM) | lora-finetune
    batch_size: int = 16                   # both VLM stages (the VLA recipe's batch)
    learning_rate: float = 1e-3            # both VLM stages, constant (the VLA recipe's peak)
    seed: int = 7                          # every training run's seed (VLM and both VLAs)
    # 5-6. the VLA comparison
    compare: bool = True                   # train the VLA from scratch and from the VLM and compare (false: stop after scoring)
    num_demos: int = 1600                  # expert episodes (the demo's default)
    vla_config: Path = REPO / "configs" / "vla" / "tabletop_demo.yaml"  # the VLA recipe (the demo's)
    vla_steps: int | None = None           # override the recipe's optimizer steps (the demo: 12,000)
    eval_every: int = 2000                 # evaluate a checkpoint every this many VLA steps (and the last)
    eval_episodes: int = 50                # closed-loop episodes per condition and checkpoint
    eval_seed: int = 100_000               # first evaluation seed (the demo's)
    cpu_threads: int = 1                   # torch threads of every training run (the demo's: tf.data uses the other core)
    fresh: bool = False                    # delete out_dir first
    # fmt: on

    @property
    def image_size(self) -> int:
        return 84  # the tabletop demo's resolution: the VLM must match the VLA it becomes the base of


def step_banner(n: int, text: str) -> None:
    print(f"\n[{n}/6] {text}", flush=True)


# -- validation ----------------------------------------------------------------------------------------------
def validate(cfg: ToyVLMConfig) -> int:
    """Check every flag before any work; returns the VLA's optimizer steps. Raises SystemExit naming each problem."""
    from prismatic.vlm.stages import VLM_STAGES

    problems = []
    for name, low in (("num_train", 1), ("num_heldout", 1), ("turns", 1), ("align_steps", 1), ("finetune_steps", 1),
                      ("batch_size", 1), ("num_demos", 1), ("eval_every", 1), ("eval_episodes", 1), ("eval_seed", 0),
                      ("cpu_threads", 1)):  # fmt: skip
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            problems.append(f"--{name} must be an integer >= {low}, got {value!r}")
    if not cfg.learning_rate > 0:
        problems.append(f"--learning_rate must be > 0, got {cfg.learning_rate}")
    stages = [s for s in VLM_STAGES.names() if s != "align"]
    if cfg.finetune_stage not in stages:
        problems.append(f"--finetune_stage must be one of {', '.join(stages)}, got {cfg.finetune_stage!r}")
    vla_steps = cfg.vla_steps
    if cfg.compare:
        recipe, why = _vla_recipe(cfg.vla_config)
        if recipe is None:
            problems.append(why)
        elif vla_steps is None:
            vla_steps = recipe.vla.max_steps
        if vla_steps is not None and (isinstance(vla_steps, bool) or vla_steps < 1):
            problems.append(f"--vla_steps must be >= 1, got {vla_steps}")
        elif vla_steps is None and recipe is not None:
            problems.append(f"{cfg.vla_config} sets no vla.max_steps: pass --vla_steps")
    if problems:
        raise SystemExit("toy_vlm.py: invalid settings:\n  " + "\n  ".join(problems))
    return int(vla_steps or 0)


def _vla_recipe(path: Path):
    """The VLA recipe parsed now, so that a bad file fails before the VLM is trained: (TrainConfig, "") or (None, why)."""
    if not Path(path).is_file():
        return (
            None,
            f"--vla_config {path} does not exist (the VLA recipe, e.g. {REPO / 'configs/vla/tabletop_demo.yaml'})",
        )
    import draccus

    from prismatic.training.config import TrainConfig

    try:
        return draccus.parse(config_class=TrainConfig, config_path=str(path), args=[]), ""
    except (Exception, SystemExit) as e:  # draccus reports a bad file by exiting
        return None, f"--vla_config {path} is not a valid training recipe ({type(e).__name__}: {e})"


def eval_steps(vla_steps: int, every: int) -> list[int]:
    """The VLA steps whose checkpoints are evaluated: every `every` steps, and the last."""
    return sorted({*range(every, vla_steps + 1, every), vla_steps})


# -- run directories made from known inputs ------------------------------------------------------------------
MARKER = "toy_vlm.json"


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, streamed (the checkpoint manifest's digest)."""
    from prismatic.training.checkpoint import file_digest

    return file_digest(Path(path))["sha256"]


def prepare_run(run_dir: Path, inputs: dict[str, Any]) -> bool:
    """Make `run_dir` hold a run of `inputs`: True when it already does (it may still be unfinished), else the
    directory is emptied (a run of other inputs) and the marker written before training starts."""
    marker = run_dir / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == inputs:
        return True
    if run_dir.exists():
        print(f"  starting over: {run_dir} holds a run of other settings or data")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    from prismatic.util.io import atomic_write_json

    atomic_write_json(marker, inputs)
    return False


def weights_at(run_dir: Path, step: int | None = None) -> Path | None:
    """The consolidated weights a run saved at `step` (None: its newest), or None. The trainer names them
    checkpoints/step-NNNNNN-epoch-EE-loss=L.pt (`prismatic.training.checkpoint`)."""
    found = sorted((run_dir / "checkpoints").glob("step-*.pt"))
    if step is not None:
        found = [p for p in found if p.name.startswith(f"step-{step:06d}-")]
    return found[-1] if found else None


def run_script(script: str, args: list[str]) -> None:
    """What `vla-scripts/<script> <args>` runs, in this process (the interpreter, torch and TensorFlow start once for
    the whole job); the command is printed so that any stage can be re-run by hand."""
    import draccus

    print("  $ " + " ".join([f"vla-scripts/{script}", *args]), flush=True)
    if script == "pretrain_vlm.py":
        from prismatic.vlm.config import VLMTrainConfig
        from prismatic.vlm.training import train_vlm

        train_vlm(draccus.parse(config_class=VLMTrainConfig, args=args))
    elif script == "train.py":
        from prismatic.training.config import TrainConfig
        from prismatic.training.trainer import run as train_vla

        config_path, rest = args[args.index("--config_path") + 1], [a for a in args if a != "--config_path"]
        rest.remove(config_path)
        train_vla(draccus.parse(config_class=TrainConfig, config_path=config_path, args=rest))
    else:
        raise ValueError(f"run_script runs pretrain_vlm.py or train.py, not {script!r}")


# -- 1. data ---------------------------------------------------------------------------------------------------
def make_data(cfg: ToyVLMConfig) -> Path:
    from prismatic.envs.captions import CaptionDataConfig, read_manifest, write_dataset

    data_cfg = CaptionDataConfig(num_train=cfg.num_train, num_heldout=cfg.num_heldout, image_size=cfg.image_size,
                                 turns=cfg.turns)  # fmt: skip
    out = cfg.out_dir / "data"
    manifest = read_manifest(out)
    if manifest is not None and {k: manifest.get(k) for k in data_cfg.to_dict()} == data_cfg.to_dict():
        print(f"  reusing {out}")
        return out
    t = time.perf_counter()
    write_dataset(out, data_cfg)
    counts = read_manifest(out)["questions"]
    print(f"  {cfg.num_train} training scenes ({sum(counts['train'].values())} questions), {cfg.num_heldout} held-out "
          f"({sum(counts['heldout'].values())}) -> {out} ({time.perf_counter() - t:.0f}s)")  # fmt: skip
    return out


def data_identity(data: Path) -> dict[str, Any]:
    from prismatic.envs.captions import read_manifest

    return read_manifest(data)


# -- 2-3. the VLM stages -----------------------------------------------------------------------------------
def train_vlm_stage(cfg: ToyVLMConfig, stage: str, data: Path, pretrained: Path | None = None) -> Path:
    """One VLM stage with vla-scripts/pretrain_vlm.py; every recipe field is passed (none left to defaults)."""
    from prismatic.envs.vocabulary import TOKENIZER_DIR

    align = stage == "align"
    run_dir = cfg.out_dir / ("vlm-align" if align else "vlm-finetune")
    steps = cfg.align_steps if align else cfg.finetune_steps
    inputs = {"stage": stage, "steps": steps, "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate,
              "seed": cfg.seed, "data": data_identity(data), "tokenizer": sha256_file(TOKENIZER_DIR / "tokenizer.json"),
              "from": None if pretrained is None else json.loads((pretrained / MARKER).read_text())}  # fmt: skip
    if prepare_run(run_dir, inputs) and weights_at(run_dir, steps) is not None:
        print(f"  reusing {run_dir}")
        return run_dir
    recipe = "align" if align else "finetune"
    args = ["--model.type", "tiny", "--model.image_size", str(cfg.image_size), "--stage", stage,
            "--tokenizer", str(TOKENIZER_DIR), "--data.json", str(data / ("align.json" if align else "finetune.json")),
            "--data.image_dir", str(data / "images"), "--run_root", str(run_dir.parent), "--run_id", run_dir.name,
            "--seed", str(cfg.seed), "--device", "cpu", "--parallel.cpu_threads", str(cfg.cpu_threads),
            f"--model.{recipe}.max_steps", str(steps), f"--model.{recipe}.global_batch_size", str(cfg.batch_size),
            f"--model.{recipe}.per_device_batch_size", str(cfg.batch_size),
            f"--model.{recipe}.learning_rate", str(cfg.learning_rate), f"--model.{recipe}.weight_decay", "0",
            f"--model.{recipe}.lr_schedule", "constant", f"--model.{recipe}.warmup_ratio", "0",
            "--checkpoint.save_interval", str(steps), "--checkpoint.keep_last", "1", "--logging.log_interval", "50"]  # fmt: skip
    if pretrained is not None:
        args += ["--pretrained_checkpoint", str(pretrained)]
    t = time.perf_counter()
    run_script("pretrain_vlm.py", args)
    print(f"  {stage}: {steps} steps in {time.perf_counter() - t:.0f}s -> {run_dir}")
    return run_dir


# -- 4. scoring ------------------------------------------------------------------------------------------------
def score_vlm(cfg: ToyVLMConfig, run_dir: Path, data: Path, batch: int = 64) -> dict[str, Any]:
    """Greedy answers to every held-out question, scored per type, with the image-blind baselines."""
    from prismatic.envs.captions import all_questions
    from prismatic.envs.qa_metrics import baselines, qa_records, score
    from prismatic.util.io import atomic_write, atomic_write_json
    from prismatic.util.progress import progress

    out = cfg.out_dir / "vlm_scores.json"
    weights = weights_at(run_dir)
    identity = {"weights_sha256": sha256_file(weights), "data": data_identity(data)}
    if out.is_file() and json.loads(out.read_text()).get("identity") == identity:
        print(f"  reusing {out}")
        return json.loads(out.read_text())
    from PIL import Image

    from prismatic.vlm import load_vlm

    heldout = qa_records(json.loads((data / "heldout.json").read_text()))
    train = qa_records(json.loads((data / "finetune.json").read_text()), all_questions())
    vlm = load_vlm(run_dir, device="cpu")
    predictions: list[str] = [""] * len(heldout)
    with progress(total=len(heldout), desc="answer held-out questions", unit="question") as bar:
        for qtype in dict.fromkeys(r["type"] for r in heldout):  # one type at a time: answers of one length
            rows = [i for i, r in enumerate(heldout) if r["type"] == qtype]
            for start in range(0, len(rows), batch):
                chunk = rows[start : start + batch]
                images = [Image.open(data / "images" / heldout[i]["image"]).convert("RGB") for i in chunk]
                answers = vlm.generate_batch(images, [heldout[i]["question"] for i in chunk],
                                             max_new_tokens=MAX_ANSWER_TOKENS.get(qtype, 8))  # fmt: skip
                for i, answer in zip(chunk, answers):
                    predictions[i] = answer
                bar.update(len(chunk))
    records = [{**r, "prediction": p} for r, p in zip(heldout, predictions)]
    lines = "".join(json.dumps(r) + "\n" for r in records).encode()
    atomic_write(cfg.out_dir / "vlm_predictions.jsonl", lambda f: f.write(lines))
    result = {"identity": identity, "checkpoint": str(weights), "heldout": score(records),
              "baselines": baselines(train, heldout)}  # fmt: skip
    atomic_write_json(out, result)
    return result


# -- 5. demonstrations -----------------------------------------------------------------------------------------
def record_demos(cfg: ToyVLMConfig) -> Path:
    """The demo's expert demonstrations (seeds 0.., every object of each scene chained, random start) as RLDS."""
    from prismatic.envs.expert import ScriptedExpert, collect_episodes
    from prismatic.envs.record import DATASET_NAME, record_rlds
    from prismatic.envs.tabletop import MAX_OBJECTS
    from prismatic.util.io import atomic_write_json

    root = cfg.out_dir / "demos"
    inputs = {"num_demos": cfg.num_demos, "image_size": cfg.image_size, "start": "random", "seed": 0,
              "goals": MAX_OBJECTS, "num_objects": MAX_OBJECTS, "expert": ScriptedExpert.VERSION}  # fmt: skip
    marker = root / "demos.json"
    if marker.is_file() and json.loads(marker.read_text()) == inputs:
        print(f"  reusing {root / DATASET_NAME}")
        return root
    shutil.rmtree(root, ignore_errors=True)
    t = time.perf_counter()
    episodes = collect_episodes(cfg.num_demos, seed=0, image_size=cfg.image_size, start="random",
                                num_objects=MAX_OBJECTS, goals=MAX_OBJECTS)  # fmt: skip
    record_rlds(episodes, root)
    atomic_write_json(marker, inputs)
    steps = sum(len(e["action"]) for e in episodes)
    print(
        f"  {len(episodes)} episodes / {steps} steps -> {root / DATASET_NAME} ({time.perf_counter() - t:.0f}s)"
    )
    return root


# -- 6. the VLA from scratch and from the VLM ---------------------------------------------------------------
def train_vla(cfg: ToyVLMConfig, start: str, demos: Path, vla_steps: int, base: Path | None) -> Path:
    """The demo's recipe, keeping the checkpoint of every evaluated step."""
    run_dir = cfg.out_dir / f"vla-{start}"
    steps = eval_steps(vla_steps, cfg.eval_every)
    inputs = {"start": start, "seed": cfg.seed, "recipe": sha256_file(cfg.vla_config), "steps": vla_steps,
              "eval_every": cfg.eval_every, "demos": json.loads((demos / "demos.json").read_text()),
              "base": None if base is None else json.loads((base / MARKER).read_text())}  # fmt: skip
    if prepare_run(run_dir, inputs) and all(weights_at(run_dir, s) is not None for s in steps):
        print(f"  reusing {run_dir}")
        return run_dir
    args = ["--config_path", str(cfg.vla_config), "--data_root", str(demos), "--run_root", str(run_dir.parent),
            "--run_id", run_dir.name, "--seed", str(cfg.seed), "--vla.max_steps", str(vla_steps),
            "--parallel.cpu_threads", str(cfg.cpu_threads), "--checkpoint.save_interval", str(cfg.eval_every),
            "--checkpoint.keep_last", str(len(steps) + 1)]  # fmt: skip
    if base is not None:  # the base fixes the architecture and resolution: the recipe's image_size is dropped
        args += ["--vla.base_vlm", str(base), "--vla.image_size", "null"]
    t = time.perf_counter()
    run_script("train.py", args)
    missing = [s for s in steps if weights_at(run_dir, s) is None]
    if missing:
        raise RuntimeError(f"{run_dir} has no weights for steps {missing} after training; see its log above")
    print(f"  {start}: {vla_steps} steps in {time.perf_counter() - t:.0f}s -> {run_dir}")
    return run_dir


def evaluate_checkpoint(cfg: ToyVLMConfig, start: str, weights: Path, step: int) -> dict[str, dict]:
    """Closed-loop success of one checkpoint: the policy and the language-swapped control (held-out seeds)."""
    import prismatic
    from prismatic.envs import SwappedInstructionEnv, TabletopEnv
    from prismatic.envs.record import DATASET_NAME
    from prismatic.eval import EvalTask, GymEnvFactory, VLAPolicy, run_evaluation
    from prismatic.eval.harness import ResumeError

    vla = prismatic.load_vla(weights)
    task = EvalTask("reach", "", max_steps=TabletopEnv().max_steps,
                    inits=list(range(cfg.eval_seed, cfg.eval_seed + cfg.eval_episodes)))  # fmt: skip
    identity = {
        "weights_sha256": sha256_file(weights),
        "eval_seed": cfg.eval_seed,
        "image_size": cfg.image_size,
    }
    rows = {}
    for name, env_cls in zip(CONDITIONS, (TabletopEnv, SwappedInstructionEnv)):
        factory = GymEnvFactory(
            f"tabletop-{name}", [task], lambda _t, c=env_cls: c(image_size=cfg.image_size)
        )
        out = cfg.out_dir / "eval" / start / f"step-{step:06d}" / name
        kwargs = dict(identity=identity, config={"checkpoint": str(weights), "condition": name, "start": start},
                      progress=False)  # fmt: skip
        try:
            results = run_evaluation(factory, VLAPolicy(vla, unnorm_key=DATASET_NAME), out, **kwargs)
        except ResumeError:
            results = run_evaluation(
                factory, VLAPolicy(vla, unnorm_key=DATASET_NAME), out, resume=False, **kwargs
            )
        _, overall = results.summary()
        rows[name] = {"episodes": overall.episodes, "successes": overall.successes,
                      "success_rate": overall.successes / max(1, overall.episodes)}  # fmt: skip
    return rows


def meets_bar(row: dict[str, dict]) -> bool:
    return row["policy"]["success_rate"] >= 0.8 and row["language-swapped"]["success_rate"] <= 0.5


def steps_to_bar(curve: list[dict[str, Any]]) -> int | None:
    """The first evaluated step whose checkpoint meets the demo's bar, or None."""
    return next((point["step"] for point in curve if meets_bar(point)), None)


def verdict(results: dict[str, dict]) -> str:
    """Which start reached the bar first (or neither), in words."""
    reached = {s: r["steps_to_bar"] for s, r in results.items()}
    if all(v is None for v in reached.values()):
        last = {s: r["curve"][-1]["policy"]["success_rate"] for s, r in results.items()}
        return "neither start reached the bar ({}); final policy success: {}".format(
            BAR, ", ".join(f"{s} {100 * v:.0f}%" for s, v in last.items())
        )
    if len(set(reached.values())) == 1:
        return f"both starts reached the bar at the same evaluated step ({reached['scratch']})"
    order = sorted(reached, key=lambda s: (reached[s] is None, reached[s] or 0))
    first, second = order
    other = "never" if reached[second] is None else f"at step {reached[second]}"
    return f"the {first} start reached the bar first, at step {reached[first]} ({second}: {other})"


# -- reporting ------------------------------------------------------------------------------------------------
def vlm_table(scores: dict[str, Any]) -> str:
    rows = [["question type", "questions", "VLM", "majority", "question prior"]]
    held, base = scores["heldout"], scores["baselines"]
    for qtype, r in [*held["per_type"].items(), ("all", held)]:
        pick = (lambda b: b) if qtype == "all" else (lambda b: b["per_type"][qtype])  # noqa: B023
        rows.append([qtype, str(r["questions"]), f"{100 * r['accuracy']:.1f}%",
                     f"{100 * pick(base['majority'])['accuracy']:.1f}%",
                     f"{100 * pick(base['question_prior'])['accuracy']:.1f}%"])  # fmt: skip
    return markdown_table(rows)


def vla_table(vla: dict[str, Any]) -> str:
    rows = [["step", *(f"{s}: {c}" for s in vla["starts"] for c in CONDITIONS)]]
    for i, step in enumerate(vla["eval_steps"]):
        cells = []
        for s in vla["starts"]:
            point = vla["starts"][s]["curve"][i]
            cells += [f"{100 * point[c]['success_rate']:.0f}%" + (" *" if c == "policy" and meets_bar(point) else "")
                      for c in CONDITIONS]  # fmt: skip
        rows.append([str(step), *cells])
    return markdown_table(rows) + "\n(* meets the bar: " + BAR + ")"


def markdown_table(rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0]),
                      *("| " + " | ".join(r) + " |" for r in rows[1:])])  # fmt: skip


def plot_results(vla: dict[str, Any], path: Path) -> Path:
    """Closed-loop success against VLA steps, both starts: the policy (solid) and the language-swapped control (dashed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    try:
        for start, colour in zip(vla["starts"], ("#777777", "#1f77b4")):
            curve = vla["starts"][start]["curve"]
            steps = [p["step"] for p in curve]
            ax.plot(steps, [100 * p["policy"]["success_rate"] for p in curve], "o-", color=colour,
                    label=f"from {start}: policy")  # fmt: skip
            ax.plot(steps, [100 * p["language-swapped"]["success_rate"] for p in curve], "x--", color=colour,
                    label=f"from {start}: language-swapped")  # fmt: skip
        ax.axhline(80, color="#2ca02c", linestyle=":", linewidth=1, label="bar: policy 80%")
        ax.set_xlabel("VLA optimizer steps")
        ax.set_ylabel("closed-loop success (%)")
        ax.set_ylim(-3, 103)
        ax.set_title("tabletop VLA: from scratch vs from the toy VLM", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        from prismatic.util.io import atomic_savefig

        atomic_savefig(fig, path)
    finally:
        plt.close(fig)
    return path


def machine() -> dict[str, Any]:
    import torch

    import prismatic

    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "prismatic": prismatic.__version__}  # fmt: skip


@dataclass
class _Clock:
    """Seconds per stage, kept in `path` across invocations: a resumed job adds the time of what it redid, so a stage
    reused from an earlier run keeps the seconds it cost then."""

    path: Path
    seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.path.is_file():
            self.seconds = {k: float(v) for k, v in json.loads(self.path.read_text()).items()}

    def stage(self, name: str, t0: float) -> None:
        from prismatic.util.io import atomic_write_json

        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 1)
        atomic_write_json(self.path, self.seconds)


def run(cfg: ToyVLMConfig, argv: list[str] | None = None) -> dict[str, Any]:
    """The whole job; returns (and writes to out_dir/results.json) its results."""
    from prismatic.util.io import atomic_write, atomic_write_json

    vla_steps = validate(cfg)
    t_all, load_start = time.perf_counter(), os.getloadavg()
    if cfg.fresh:
        shutil.rmtree(cfg.out_dir, ignore_errors=True)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    clock = _Clock(cfg.out_dir / "stage_seconds.json")

    step_banner(1, f"captions and questions about {cfg.num_train} + {cfg.num_heldout} tabletop scenes")
    t = time.perf_counter()
    data = make_data(cfg)
    clock.stage("data", t)
    step_banner(2, f"VLM align stage: projector only, {cfg.align_steps} steps on the captions")
    t = time.perf_counter()
    aligned = train_vlm_stage(cfg, "align", data)
    clock.stage("align", t)
    step_banner(3, f"VLM {cfg.finetune_stage} stage: {cfg.finetune_steps} steps on every question")
    t = time.perf_counter()
    finetuned = train_vlm_stage(cfg, cfg.finetune_stage, data, pretrained=aligned)
    clock.stage("finetune", t)
    step_banner(4, "scoring the VLM on the held-out scenes")
    t = time.perf_counter()
    scores = score_vlm(cfg, finetuned, data)
    clock.stage("score", t)
    table = vlm_table(scores)
    print("\nHeld-out exact-match accuracy (baselines never look at the image):\n" + table)

    report: dict[str, Any] = {
        "command": " ".join(["vla-scripts/toy_vlm.py", *(sys.argv[1:] if argv is None else argv)]),
        "config": {k: str(v) for k, v in asdict(cfg).items()}, "machine": machine(),
        "vlm": {"align_run": str(aligned), "finetune_run": str(finetuned), "heldout": scores["heldout"],
                "baselines": scores["baselines"], "questions": data_identity(data)["questions"]},
    }  # fmt: skip
    markdown = ["## Toy VLM: held-out accuracy", "", table]
    if cfg.compare:
        step_banner(5, f"expert demonstrations -> RLDS ({cfg.num_demos} episodes, the demo's)")
        t = time.perf_counter()
        demos = record_demos(cfg)
        clock.stage("demos", t)
        steps = eval_steps(vla_steps, cfg.eval_every)
        starts: dict[str, dict] = {}
        for start, base in zip(STARTS, (None, finetuned)):
            step_banner(
                6,
                f"VLA from {start}: {vla_steps} steps of {cfg.vla_config.name}, closed loop at steps {steps}",
            )
            t = time.perf_counter()
            run_dir = train_vla(cfg, start, demos, vla_steps, base)
            clock.stage(f"vla_{start}_train", t)
            t = time.perf_counter()
            curve = []
            for step in steps:
                point = {"step": step, **evaluate_checkpoint(cfg, start, weights_at(run_dir, step), step)}
                curve.append(point)
                print(f"  step {step}: policy {100 * point['policy']['success_rate']:.0f}%, language-swapped "
                      f"{100 * point['language-swapped']['success_rate']:.0f}%", flush=True)  # fmt: skip
            clock.stage(f"vla_{start}_eval", t)
            starts[start] = {"run": str(run_dir), "curve": curve, "steps_to_bar": steps_to_bar(curve)}
        vla = {"bar": BAR, "eval_steps": steps, "eval_episodes": cfg.eval_episodes, "starts": starts,
               "verdict": verdict(starts)}  # fmt: skip
        report["vla"] = vla
        report["plot"] = str(plot_results(vla, cfg.out_dir / "results.png"))
        markdown += ["", "## Tabletop VLA: from scratch vs from the VLM (closed-loop success)", "", vla_table(vla), "",
                     vla["verdict"]]  # fmt: skip
        print("\nClosed-loop success per evaluated checkpoint:\n" + vla_table(vla) + "\n" + vla["verdict"])
    report.update(stage_seconds=clock.seconds, total_minutes=round(sum(clock.seconds.values()) / 60, 2),
                  invocation_minutes=round((time.perf_counter() - t_all) / 60, 2),
                  load_average={"start": [round(x, 2) for x in load_start],
                                "end": [round(x, 2) for x in os.getloadavg()]})  # fmt: skip
    atomic_write_json(cfg.out_dir / "results.json", report)
    text = ("\n".join(markdown) + "\n").encode()
    atomic_write(cfg.out_dir / "results.md", lambda f: f.write(text))
    print(f"\nresults: {cfg.out_dir / 'results.json'}, {cfg.out_dir / 'results.md'}"
          + (f", {report['plot']}" if "plot" in report else "") + f" ({report['total_minutes']:.1f} min)")  # fmt: skip
    return report
