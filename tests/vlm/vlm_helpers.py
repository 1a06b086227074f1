"""What the VLM tests share: synthetic images and conversations they write, and tiny-VLM stage configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from prismatic.training.config import CheckpointConfig, LoggingConfig, ParallelConfig
from prismatic.vlm.config import VLMDataConfig, VLMModelConfig, VLMTrainConfig

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "bar")
IMAGE_SIZE = 28  # 2 x 2 patches of 14 px: the smallest ViT input with the real structure


def scene(colour: str, shape: str, seed: int) -> np.ndarray:
    """A 32 x 32 image: a coloured square or bar on a grey background, with a little noise."""
    rng = np.random.default_rng(seed)
    img = np.full((32, 32, 3), 128, np.int16) + rng.integers(-8, 9, (32, 32, 3))
    if shape == "square":
        img[6:26, 6:26] = COLOURS[colour]
    else:
        img[12:20, 2:30] = COLOURS[colour]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_data(root: Path, n: int = 32) -> dict[str, Path]:
    """Images + an align JSON (captions) + a finetune JSON (two-turn QA, plus text-only entries)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    captions, qa = [], []
    for i in range(n):
        colour, shape = list(COLOURS)[i % len(COLOURS)], SHAPES[(i // len(COLOURS)) % len(SHAPES)]
        Image.fromarray(scene(colour, shape, i)).save(root / "images" / f"{i:03d}.png")
        image = f"images/{i:03d}.png"
        captions.append({"id": f"cap-{i}", "image": image, "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image."},
            {"from": "gpt", "value": f"a {colour} {shape}"}]})  # fmt: skip
        qa.append({"id": f"qa-{i}", "image": image, "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the object?"}, {"from": "gpt", "value": colour},
            {"from": "human", "value": "What shape is it?"}, {"from": "gpt", "value": f"a {shape}"}]})  # fmt: skip
    for i in range(4):  # language-only entries (LLaVA-1.5 mixes ShareGPT text into its finetune data)
        qa.append({"id": f"text-{i}", "conversations": [
            {"from": "human", "value": "Say hello."}, {"from": "gpt", "value": "hello"}]})  # fmt: skip
    (root / "captions.json").write_text(json.dumps(captions))
    (root / "qa.json").write_text(json.dumps(qa))
    return {"root": root, "captions": root / "captions.json", "qa": root / "qa.json"}


def vlm_config(stage: str, data: dict[str, Path], run_root: Path, tokenizer: Path | None, steps: int = 6,
               **kw) -> VLMTrainConfig:  # fmt: skip
    """A tiny VLM stage: batch 4 (2 per forward: accumulation 2), constant lr, checkpoints every 3 steps."""
    model = VLMModelConfig.get_choice_class("tiny")(image_size=IMAGE_SIZE, llm_max_length=64)
    for recipe in (model.align, model.finetune):
        recipe.max_steps, recipe.global_batch_size, recipe.per_device_batch_size = steps, 4, 2
    json_path = data["captions"] if stage == "align" else data["qa"]
    return VLMTrainConfig(
        model=model, stage=stage, data=VLMDataConfig(json=json_path, image_dir=data["root"]), tokenizer=tokenizer,
        run_root=run_root, logging=LoggingConfig(progress=False), checkpoint=CheckpointConfig(save_interval=3),
        parallel=ParallelConfig(activation_checkpointing=False, prefetch_batches=0), **kw,
    )  # fmt: skip
