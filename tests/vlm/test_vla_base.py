"""A VLM run is a VLA base as it is (`--vla.base_vlm RUN_DIR`, no conversion): VLA training starts from
exactly its projector, LLM and ViT weights, with its tokenizer, and learns; an align run is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prismatic.models.base_vlm import BaseVLMError, load_base_vlm
from prismatic.models.layouts import hf_to_native
from prismatic.training.config import (
    CheckpointConfig,
    ConfigError,
    LoggingConfig,
    ParallelConfig,
    TrainConfig,
    VLAConfig,
)
from prismatic.training.trainer import Trainer
from prismatic.vlm.checkpoints import read_vlm_checkpoint
from prismatic.vlm.stages import GROUPS


@pytest.fixture(scope="module")
def rlds_root(tmp_path_factory):
    from prismatic.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("rlds")
    write_synthetic(root, "bridge_orig", num_episodes=4, episode_len=10, image_size=(32, 32), seed=3)
    return root


def vla_config(base, data_root, run_root, steps=8) -> TrainConfig:
    vla = VLAConfig.get_choice_class("tiny+mx-synthetic")(base_vlm=base, max_steps=steps, shuffle_buffer_size=64,
                                                          learning_rate=2e-3)  # fmt: skip
    return TrainConfig(vla=vla, data_root=data_root, run_root=run_root, run_id="vla", logging=LoggingConfig(progress=False),
                       parallel=ParallelConfig(activation_checkpointing=False), checkpoint=CheckpointConfig(save_interval=steps))  # fmt: skip


@pytest.mark.slow
def test_vla_training_starts_from_the_vlm_weights_and_learns(finetune_run, rlds_root, tmp_path):
    trainer = Trainer(vla_config(finetune_run, rlds_root, tmp_path))
    c = trainer.model.config
    start = hf_to_native(trainer.model.state_dict(), c.vision_backbone_id, c.projector_type)
    vlm = read_vlm_checkpoint(finetune_run).groups
    for group in GROUPS:  # every weight of the VLM, bit for bit
        assert start[group].keys() == vlm[group].keys(), group
        assert all(torch.equal(start[group][k], vlm[group][k]) for k in vlm[group]), group
    vlm_model = json.loads((finetune_run / "config.json").read_text())["model"]
    assert (c.image_sizes, c.text_config.vocab_size) == (vlm_model["image_sizes"], vlm_model["text_config"]["vocab_size"])
    assert trainer.task.vla.processor.tokenizer.get_vocab() == load_base_vlm(finetune_run).processor.tokenizer.get_vocab()
    # the action bins are the last 256 ids of the VLM tokenizer's base vocabulary (the word tokenizer's reserved ones)
    assert c.base_vocab_size == trainer.task.vla.processor.tokenizer.vocab_size
    trainer.train()
    curve = [json.loads(line)["loss"] for line in (tmp_path / "vla" / "metrics.jsonl").read_text().splitlines()]
    assert len(curve) == 8 and np.mean(curve[-3:]) < np.mean(curve[:3]) - 0.3, curve


def test_an_align_run_is_not_a_vla_base(align_run, rlds_root, tmp_path):
    with pytest.raises(BaseVLMError, match=r"is an align-stage VLM run: only its projector was trained.*--stage finetune"):
        load_base_vlm(align_run)
    with pytest.raises(ConfigError, match=r"--vla.base_vlm: .* is an align-stage VLM run"):
        Trainer(vla_config(align_run, rlds_root, tmp_path))
    assert not (tmp_path / "vla").exists()
