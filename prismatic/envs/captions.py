"""Captions and question/answer pairs about tabletop scenes, as LLaVA-v1.5 conversation data.

A toy VLM (vla-scripts/toy_vlm.py) learns them before the tabletop VLA does: the VLA's hard part is
finding the object its instruction names (docs/tabletop.md), and these questions name objects and ask
where they are. Everything is read from the renderer's own scene (`TabletopEnv.reset(seed)`), so each
answer is exact, and a scene, its image and its questions depend only on its seed.

Question types (`QUESTION_TYPES`; answers are short, lower-case phrases):

  caption   "What is on the table?"                       -> "a red block, a green cylinder and a blue triangle"
                                                             (objects from left to right)
  colour    "What colour is the block?"                   -> "red"
  shape     "What shape is the red object?"               -> "block"
  where     "Where is the red block?"                     -> one of the table's nine cells: "back left",
                                                             "back", "back right", "left", "centre", ...
  relation  "What colour is the object left of the block?" -> "green"  (also right of, in front of, behind)
  gripper   "Where is the gripper?"                       -> a cell, as for `where`

A question is asked only when its answer is clear from the image: `where` / `gripper` not within
`MARGIN` of a cell border, `relation` only when exactly one object is on that side of the named one
and no object is level with it (within `MARGIN`). Left / right is the camera's (the world's x),
front is the side nearer the camera.

Splits use disjoint seed ranges (`SPLIT_SEEDS`), which are also disjoint from the tabletop demo's
demonstrations (seeds from 0) and its evaluation episodes (seeds from 100,000).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prismatic.envs.tabletop import COLORS, MAX_OBJECTS, SHAPES, TabletopEnv

QUESTION_TYPES: tuple[str, ...] = ("caption", "colour", "shape", "where", "relation", "gripper")
# The questions, per type.
CAPTION_QUESTION = "What is on the table?"
COLOUR_QUESTION = "What colour is the {shape}?"
SHAPE_QUESTION = "What shape is the {colour} object?"
WHERE_QUESTION = "Where is the {name}?"
RELATION_QUESTION = "What colour is the object {relation} the {shape}?"
GRIPPER_QUESTION = "Where is the gripper?"
# The table in thirds along x and y: a cell is "<row> <column>" with the middle row / column left out
# ("back left", "left", "centre", ...). Objects lie in [-0.22, 0.22]^2, the gripper starts in [-0.25, 0.25]^2.
CELL_BORDER = 0.075  # metres from the table's centre line to a cell border
MARGIN = 0.02  # metres: a position this close to a border (or an object this level with another) is not asked about
RELATIONS: dict[
    str, tuple[int, int]
] = {  # phrase -> (axis, sign): the other object's offset along axis has this sign
    "left of": (0, -1),
    "right of": (0, 1),
    "in front of": (1, -1),
    "behind": (1, 1),
}
# First scene seed of each split; a split holds at most SPLIT_SIZE scenes. Far from the demo's seeds.
SPLIT_SEEDS: dict[str, int] = {"train": 1_000_000, "heldout": 2_000_000}
SPLIT_SIZE = 1_000_000
VERSION = 1  # bump whenever the questions or answers change, so written datasets are not reused


@dataclass(frozen=True)
class QA:
    """One question about a scene and its answer; `type` is one of QUESTION_TYPES."""

    type: str
    question: str
    answer: str


def cell(xy: Sequence[float], margin: float = MARGIN) -> str | None:
    """The table cell of point `xy` (metres), or None when it lies within `margin` of a cell border."""
    words = []
    for value, (low, high) in zip((xy[1], xy[0]), (("front", "back"), ("left", "right"))):
        if abs(abs(value) - CELL_BORDER) < margin:
            return None
        if value < -CELL_BORDER:
            words.append(low)
        elif value > CELL_BORDER:
            words.append(high)
    return " ".join(words) or "centre"


def caption(objects: Sequence[Mapping[str, Any]]) -> str:
    """Every object, from left to right: "a red block, a green cylinder and a blue triangle"."""
    names = [f"a {o['name']}" for o in sorted(objects, key=lambda o: o["position"][0])]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _relation_answer(objects: Sequence[Mapping[str, Any]], ref: int, axis: int, sign: int) -> str | None:
    """The colour of the one object on that side of object `ref`, or None when none, several, or one is level with it."""
    others = [o for i, o in enumerate(objects) if i != ref]
    offsets = [o["position"][axis] - objects[ref]["position"][axis] for o in others]
    if any(abs(d) < MARGIN for d in offsets):
        return None
    side = [o for o, d in zip(others, offsets) if d * sign > 0]
    return side[0]["color"] if len(side) == 1 else None


def scene_questions(info: Mapping[str, Any], gripper_xy: Sequence[float]) -> list[QA]:
    """Every question `QUESTION_TYPES` can ask about a scene (`info` from `TabletopEnv.reset`), in a fixed order."""
    objects = info["objects"]
    qas = [QA("caption", CAPTION_QUESTION, caption(objects))]
    for o in objects:
        qas.append(QA("colour", COLOUR_QUESTION.format(shape=o["shape"]), o["color"]))
    for o in objects:
        qas.append(QA("shape", SHAPE_QUESTION.format(colour=o["color"]), o["shape"]))
    for o in objects:
        if (where := cell(o["position"])) is not None:
            qas.append(QA("where", WHERE_QUESTION.format(name=o["name"]), where))
    for i, o in enumerate(objects):
        for relation, (axis, sign) in RELATIONS.items():
            if (colour := _relation_answer(objects, i, axis, sign)) is not None:
                qas.append(
                    QA("relation", RELATION_QUESTION.format(relation=relation, shape=o["shape"]), colour)
                )
    if (where := cell(gripper_xy)) is not None:
        qas.append(QA("gripper", GRIPPER_QUESTION, where))
    return qas


def all_questions() -> dict[str, str]:
    """Every question the generator can ask -> its type."""
    out = {CAPTION_QUESTION: "caption", GRIPPER_QUESTION: "gripper"}
    out.update({COLOUR_QUESTION.format(shape=s): "colour" for s in SHAPES})
    out.update({SHAPE_QUESTION.format(colour=c): "shape" for c in COLORS})
    out.update({WHERE_QUESTION.format(name=f"{c} {s}"): "where" for c in COLORS for s in SHAPES})
    out.update({RELATION_QUESTION.format(relation=r, shape=s): "relation" for r in RELATIONS for s in SHAPES})
    return out


def all_texts() -> list[str]:
    """Every question, and every word of an answer, the generator can produce (the word tokenizer's vocabulary)."""
    cells = ["front", "back", "left", "right", "centre"]
    return [*all_questions(), "a red block, a green cylinder and a blue triangle", " ".join(cells)]


@dataclass(frozen=True)
class SceneSample:
    """One rendered scene: its seed, image (uint8 [S, S, 3]) and every question about it."""

    seed: int
    image: np.ndarray
    questions: list[QA]


def split_seeds(split: str, n: int) -> range:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {', '.join(SPLIT_SEEDS)}, got {split!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= SPLIT_SIZE:
        raise ValueError(f"the number of {split} scenes must be an integer in [0, {SPLIT_SIZE}], got {n!r}")
    return range(SPLIT_SEEDS[split], SPLIT_SEEDS[split] + int(n))


def scenes(split: str, n: int, image_size: int = 84, num_objects: int = MAX_OBJECTS) -> Iterator[SceneSample]:
    """The first `n` scenes of `split`, rendered as the tabletop demo renders them (gripper anywhere on the table)."""
    env = TabletopEnv(image_size=image_size, num_objects=num_objects, start="random")
    for seed in split_seeds(split, n):
        obs, info = env.reset(seed=seed)
        yield SceneSample(seed, obs["image"], scene_questions(info, obs["state"][:2]))


def conversation(entry_id: str, image: str, qas: Sequence[QA]) -> dict[str, Any]:
    """One LLaVA-v1.5 entry: the image marker opens the first human turn; the answers are the "gpt" turns."""
    turns = []
    for k, qa in enumerate(qas):
        turns.append({"from": "human", "value": ("<image>\n" if k == 0 else "") + qa.question})
        turns.append({"from": "gpt", "value": qa.answer})
    return {"id": entry_id, "image": image, "conversations": turns}


@dataclass(frozen=True)
class CaptionDataConfig:
    """What `write_dataset` generates; equal configs write identical files."""

    num_train: int = 4000  # training scenes
    num_heldout: int = 300  # held-out scenes, scored one question at a time
    image_size: int = 84  # the tabletop demo's resolution
    num_objects: int = MAX_OBJECTS
    turns: int = 3  # questions per finetune conversation (a scene's questions are shuffled and grouped)

    def problems(self) -> list[str]:
        out = []
        for name, low, high in (("num_train", 1, SPLIT_SIZE), ("num_heldout", 1, SPLIT_SIZE), ("image_size", 32, 1024),
                                ("num_objects", 1, MAX_OBJECTS), ("turns", 1, 64)):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v <= high:
                out.append(f"{name} must be an integer in [{low}, {high}], got {v!r}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "num_train": self.num_train, "num_heldout": self.num_heldout,
                "image_size": self.image_size, "num_objects": self.num_objects, "turns": self.turns}  # fmt: skip


# Files `write_dataset` writes under its output directory.
ALIGN_JSON, FINETUNE_JSON, HELDOUT_JSON, IMAGE_DIR, MANIFEST = (
    "align.json", "finetune.json", "heldout.json", "images", "captions.json")  # fmt: skip


def write_dataset(
    out_dir: str | Path, cfg: CaptionDataConfig = CaptionDataConfig(), progress_bar: bool = True
) -> Path:
    """Render the scenes and write the three LLaVA-v1.5 files (image paths relative to `out_dir/images`):

      align.json     one caption turn per training scene (the align stage's image-caption pairs);
      finetune.json  every question about each training scene, shuffled and grouped `cfg.turns` to a
                     conversation (several conversations share an image);
      heldout.json   one single-turn entry per question about each held-out scene, with its "type" (scoring).

    The directory is built under a temporary name and renamed when complete; `captions.json` (the config
    and the counts) is its last file. Returns `out_dir`.
    """
    from PIL import Image

    from prismatic.util.io import atomic_write_json
    from prismatic.util.progress import progress

    if problems := cfg.problems():
        raise ValueError("invalid caption data settings: " + "; ".join(problems))
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    entries: dict[str, list] = {"align": [], "finetune": [], "heldout": []}
    counts: dict[str, dict[str, int]] = {"train": {}, "heldout": {}}
    with progress(
        total=cfg.num_train + cfg.num_heldout, desc="render scenes", unit="scene", disable=not progress_bar
    ) as bar:
        for split, n in (("train", cfg.num_train), ("heldout", cfg.num_heldout)):
            (tmp / IMAGE_DIR / split).mkdir(parents=True)
            for s in scenes(split, n, cfg.image_size, cfg.num_objects):
                image = f"{split}/{s.seed}.png"
                Image.fromarray(s.image).save(tmp / IMAGE_DIR / image)
                for qa in s.questions:
                    counts[split][qa.type] = counts[split].get(qa.type, 0) + 1
                if split == "train":
                    entries["align"].append(conversation(f"{s.seed}-caption", image, s.questions[:1]))
                    order = np.random.default_rng((s.seed, 1)).permutation(len(s.questions))
                    for k in range(0, len(order), cfg.turns):
                        group = [s.questions[i] for i in order[k : k + cfg.turns]]
                        entries["finetune"].append(conversation(f"{s.seed}-{k // cfg.turns}", image, group))
                else:
                    for k, qa in enumerate(s.questions):
                        entries["heldout"].append(
                            {**conversation(f"{s.seed}-{k}", image, [qa]), "type": qa.type}
                        )
                bar.update()
    for name, file in (("align", ALIGN_JSON), ("finetune", FINETUNE_JSON), ("heldout", HELDOUT_JSON)):
        atomic_write_json(tmp / file, entries[name], indent=None)
    atomic_write_json(tmp / MANIFEST, {**cfg.to_dict(), "questions": counts})
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The config a complete dataset under `out_dir` was written with, or None when there is none."""
    import json

    path = Path(out_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None
