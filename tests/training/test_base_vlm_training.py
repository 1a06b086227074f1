"""The README's pretraining command, started from a base VLM in the prismatic-vlms release layout (tiny;
ViTs from timm files), runs and the loss falls; the registered experiments all resolve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prismatic.data.spec import resolve_mixture
from prismatic.models.llm.backbones import LLM_BACKBONES
from prismatic.models.projectors import PROJECTORS
from prismatic.models.vision.backbones import VISION_BACKBONES
from prismatic.training.config import ConfigError, Stage, TrainConfig, VLAConfig
from prismatic.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_readme_pretraining_command_runs_from_a_released_base_vlm(released_base_vlm, data_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # README: torchrun ... vla-scripts/train.py --vla.type prism-dinosiglip-224px+mx-oxe-magic-soup-plus
    #         --vla.base_vlm /ckpts/prism-dinosiglip-224px-7b --data_root /data/oxe
    # (+ where the ViT weights are, and sizes / data / steps a CPU can run)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(REPO / "vla-scripts" / "train.py"), "--vla.type", "prism-dinosiglip-224px+mx-oxe-magic-soup-plus",
           "--vla.base_vlm", str(released_base_vlm["dir"]), "--data_root", str(data_root),
           "--vla.vision_weights", str(released_base_vlm["vision_weights"]),
           "--vla.data_mix", "bridge_orig", "--vla.global_batch_size", "4", "--vla.per_device_batch_size", "2",
           "--vla.shuffle_buffer_size", "64", "--vla.max_steps", "10", "--vla.learning_rate", "0.002",
           "--parallel.activation_checkpointing", "false", "--checkpoint.save_interval", "10",
           "--logging.progress", "false", "--run_root", str(tmp_path), "--run_id", "from-release"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "from-release"
    curve = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(curve) == 10 and np.mean(curve[-3:]) < np.mean(curve[:3]) - 0.3, curve
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["vision_backbone_id"] == "dinosiglip-vit-so-224px"
    assert config["model"]["timm_model_kwargs"] == json.loads((released_base_vlm["dir"] / "config.json").read_text())[
        "model"]["timm_model_kwargs"]  # fmt: skip
    from prismatic.models.load import load_vla  # the VLA run is self-contained: it loads for inference

    vla = load_vla(run)
    assert vla.norm_stats.keys() == {"bridge_orig"} and vla.processor.tokenizer.pad_token_id == 32000


def test_trainer_refuses_a_base_vlm_without_its_vit_weights_before_building(released_base_vlm, data_root, tmp_path):
    v = VLAConfig.get_choice_class("prism-dinosiglip-224px+mx-bridge")(vision_weights=tmp_path)
    cfg = TrainConfig(vla=v, data_root=data_root, run_root=tmp_path / "runs", model_root=released_base_vlm["root"])
    assert str(v.base_vlm) == "prism-dinosiglip-224px+7b"  # the original's base VLM id, under --model_root
    with pytest.raises(ConfigError, match=r"vit_large_patch14_reg4_dinov2.lvd142m[\s\S]*vit_so400m_patch14_siglip_224"):
        Trainer(cfg)
    assert not (tmp_path / "runs").exists()  # nothing written, nothing built


# (vision backbone, LLM, stage, mixture) of the original's VLA experiments (prismatic/conf/vla.py)
ORIGINAL = {
    "siglip-224px+mx-bridge": ("siglip-vit-so400m", "vicuna-v15-7b", "full", "bridge"),
    "siglip-224px-icy+mx-bridge": ("siglip-vit-so400m", "vicuna-v15-7b", "frozen-vision", "bridge"),
    "siglip-224px+mx-oxe-magic-soup": ("siglip-vit-so400m", "vicuna-v15-7b", "full", "oxe_magic_soup"),
    "siglip-224px+mx-tdroid_carrot_in_bowl": ("siglip-vit-so400m", "vicuna-v15-7b", "full", "tdroid_carrot_in_bowl"),
    "siglip-224px+mx-tdroid_pour_corn_in_pot": ("siglip-vit-so400m", "vicuna-v15-7b", "full", "tdroid_pour_corn_in_pot"),
    "siglip-224px-icy+mx-tdroid_carrot_in_bowl": ("siglip-vit-so400m", "vicuna-v15-7b", "frozen-vision",
                                                  "tdroid_carrot_in_bowl"),
    "siglip-224px-last_layer+mx-tdroid_carrot_in_bowl": ("siglip-vit-so400m", "vicuna-v15-7b", "last-layer",
                                                         "tdroid_carrot_in_bowl"),
    "siglip-224px-sandwich+mx-tdroid_carrot_in_bowl": ("siglip-vit-so400m", "vicuna-v15-7b", "sandwich",
                                                       "tdroid_carrot_in_bowl"),
    "siglip-224px+mx-droid_wipe": ("siglip-vit-so400m", "vicuna-v15-7b", "full", "droid_wipe"),
    "prism-dinosiglip-224px+mx-bridge": ("dinosiglip-vit-so-224px", "llama2-7b-pure", "full", "bridge"),
    "prism-dinosiglip-224px+mx-oxe-magic-soup-plus": ("dinosiglip-vit-so-224px", "llama2-7b-pure", "full",
                                                      "oxe_magic_soup_plus_minus"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VLAConfig.get_known_choices()))
def test_every_registered_experiment_resolves(name):
    v = VLAConfig.get_choice_class(name)()
    assert v.vla_id == name and v.vision_backbone_id in VISION_BACKBONES and v.llm_backbone_id in LLM_BACKBONES
    assert v.arch_specifier.split("+")[-1] in PROJECTORS and Stage(v.stage)
    assert resolve_mixture(v.data_mix)  # a named mixture or a known dataset (the test experiment's too)
    if name in ORIGINAL:
        assert (v.vision_backbone_id, v.llm_backbone_id, v.stage, v.data_mix) == ORIGINAL[name]
        base = "siglip-224px+7b" if name.startswith("siglip") else "prism-dinosiglip-224px+7b"
        assert str(v.base_vlm) == base
    if name.startswith("siglip"):  # the base VLM siglip-224px+7b: letterbox, gelu-mlp, Bridge batch 256 / 32
        assert (v.image_resize_strategy, v.arch_specifier, v.learning_rate) == ("letterbox", "no-align+gelu-mlp", 2e-5)
        assert v.global_batch_size == (2048 if "magic-soup" in name else 256) and v.per_device_batch_size == 32
