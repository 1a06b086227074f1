"""Training with the OpenVLA-OFT heads through the same trainer: a tiny OFT-style model (L1 head, chunks,
two cameras, proprio) learns, saves, reloads and predicts chunks, resumes bit-exactly; LoRA fine-tunes a
new head on a base VLM and merges; the data contract is checked before any data is read; OFT's recipe."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from prismatic.training.config import (
    CheckpointConfig,
    ConfigError,
    LoggingConfig,
    ParallelConfig,
    TrainConfig,
    VLAConfig,
)
from prismatic.training.distributed import DistInfo
from prismatic.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
TINY_CKPT = REPO / "tests" / "assets" / "openvla-tiny" / "checkpoint"
OFT_HEAD = dict(action_head="l1-regression", chunk_len=4, cameras=("primary", "wrist"), proprio_dim=8, action_dim=7)


@pytest.fixture(scope="module")
def libero_root(tmp_path_factory) -> Path:
    """A small synthetic dataset with LIBERO's schema: third-person + wrist images, 8-D proprio."""
    from prismatic.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("libero")
    write_synthetic(root, "libero_spatial_no_noops", num_episodes=6, episode_len=12, image_size=(64, 64), seed=3)
    return root


def oft_cfg(data_root: Path, run_root: Path, **vla) -> TrainConfig:
    v = VLAConfig.get_choice_class("tiny+mx-synthetic")(data_mix="libero_spatial_no_noops", image_size=112,
                                                        shuffle_buffer_size=64, learning_rate=2e-3, **OFT_HEAD)  # fmt: skip
    return TrainConfig(
        vla=replace(v, **vla), data_root=data_root, run_root=run_root, seed=11,
        parallel=ParallelConfig(activation_checkpointing=False),
        checkpoint=CheckpointConfig(save_interval=4, keep_last=2), logging=LoggingConfig(progress=False),
    )  # fmt: skip


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_l1_head_learns_saves_reloads_and_resumes_exactly(libero_root, tmp_path):
    full = oft_cfg(libero_root, tmp_path / "a", max_steps=8)
    Trainer(full).train()
    curve = metrics(full.run_dir)
    losses = [m["loss"] for m in curve]
    assert len(losses) == 8 and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])  # L1 falls
    last = curve[-1]
    assert last["action_l1"] == pytest.approx(last["loss"])  # the head's metrics: overall, per step, per dimension, per dataset
    assert {"action_l1_current", "action_l1_future", "action_l1/dim6", "action_l1/libero_spatial_no_noops"} <= set(last)
    assert "action_accuracy" not in last

    cut = oft_cfg(libero_root, tmp_path / "b", max_steps=8)
    trainer = Trainer(cut)
    real_save = trainer.save

    def save_then_crash() -> None:
        real_save()
        if trainer.state.step == 4:
            raise KeyboardInterrupt

    trainer.save = save_then_crash
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    resumed = Trainer(cut)
    assert resumed.state.step == 4
    resumed.train()
    assert [m["loss"] for m in metrics(cut.run_dir)] == losses  # bit-exact

    from prismatic.models.load import load_vla

    vla = load_vla(full.run_dir)  # native layout: the head and proprio projector are in the checkpoint
    assert (vla.model.config.action_head, vla.chunk_len, vla.cameras, vla.proprio_dim) == ("l1-regression", 4, ("primary", "wrist"), 8)
    config = json.loads((full.run_dir / "config.json").read_text())["model"]
    assert {k: config[k] for k in OFT_HEAD} == {**OFT_HEAD, "cameras": ["primary", "wrist"]}
    rng = np.random.default_rng(0)
    cams = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    state = np.asarray(vla.norm_stats["libero_spatial_no_noops"]["proprio"]["mean"])[None]
    chunk = vla.predict_chunks([cams], ["put the bowl on the plate"], proprio=state)
    assert chunk.shape == (1, 4, 7) and np.isfinite(chunk).all()


@pytest.mark.slow
def test_lora_trains_a_new_head_on_a_base_vlm_and_merges(libero_root, tmp_path):
    cfg = oft_cfg(libero_root, tmp_path, max_steps=2, base_vlm=TINY_CKPT, size="full", image_size=None, chunk_len=2,
                  global_batch_size=2, per_device_batch_size=2)  # fmt: skip
    cfg.lora.enabled, cfg.lora.rank, cfg.lora.alpha = True, 4, 8
    trainer = Trainer(cfg)
    trainer.train()
    from safetensors.torch import load_file

    adapter = load_file(cfg.run_dir / "adapter" / "adapter_model.safetensors")
    assert any(".lora_A." in k for k in adapter)
    head_keys = [k for k in adapter if "action_head" in k]  # the head trains in full, saved with the adapter
    assert head_keys and not any(".lora_" in k for k in head_keys) and any("proprio_projector" in k for k in adapter)
    out = tmp_path / "merged"
    subprocess.run([sys.executable, str(REPO / "vla-scripts" / "merge_lora.py"), "--base_dir", str(TINY_CKPT),
                    "--run_dir", str(cfg.run_dir), "--out_dir", str(out)], check=True, cwd=REPO, capture_output=True)  # fmt: skip
    from prismatic.models.load import load_vla

    merged = load_vla(out)  # config.json records the head; its weights are in the safetensors
    assert (merged.model.config.action_head, merged.chunk_len, merged.proprio_dim) == ("l1-regression", 2, 8)
    for name in ("action_head", "proprio_projector"):  # the trained copies, not the initial ones
        for k, v in getattr(merged.model, name).state_dict().items():
            assert torch.equal(v, adapter[f"base_model.model.{name}.{k}"]), k
    rng = np.random.default_rng(0)
    cams = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(2)]
    chunk = merged.predict_chunks([cams], ["pick up the bowl"], proprio=np.zeros((1, 8)))
    assert chunk.shape == (1, 2, 7) and np.isfinite(chunk).all()


def test_data_without_the_models_camera_or_proprio_fails_before_reading(data_root, tmp_path):
    """`data_root` holds bridge_orig (no wrist camera): the run stops with one error naming both fixes."""
    cfg = oft_cfg(data_root, tmp_path, data_mix="bridge_orig")
    before = {p: p.stat().st_mtime_ns for p in Path(data_root).rglob("*")}  # (shared with other tests)
    with pytest.raises(ConfigError, match=r"(?s)'bridge_orig' has no image for camera\(s\) \['wrist'\].*--vla.cameras"):
        Trainer(cfg, DistInfo(0, 0, 1, torch.device("cpu")))
    assert {p: p.stat().st_mtime_ns for p in Path(data_root).rglob("*")} == before  # no statistics computed
    assert not cfg.run_dir.exists()  # nothing written
    from prismatic.models.configuration import OpenVLAConfig
    from prismatic.training.model_setup import check_data_contract

    config = OpenVLAConfig(**{**OFT_HEAD, "cameras": ["primary"], "action_dim": 6})
    stats = {"libero_spatial_no_noops": {"action": {"q01": [0.0] * 7}, "proprio": {"q01": [0.0] * 9}}}
    with pytest.raises(ConfigError, match=r"(?s)7-D actions; the model predicts 6-D.*9-D proprio state; the model reads 8-D"):
        check_data_contract(config, "libero_spatial_no_noops", (), stats)


def test_config_validation_names_the_head_flags(tmp_path):
    cfg = oft_cfg(tmp_path, tmp_path, action_head="diffusion", chunk_len=0, lr_schedule="step")
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    msg = str(err.value)
    for expected in ("--vla.action_head='diffusion' is not one of: bins, bins-parallel, l1-regression",
                     "--vla.chunk_len must be >= 1", "--vla.lr_schedule step needs --vla.lr_decay_step"):  # fmt: skip
        assert expected in msg, (expected, msg)
    cfg = oft_cfg(tmp_path, tmp_path, action_head="bins-parallel", action_dim=None)
    with pytest.raises(ConfigError, match="set --vla.action_dim"):
        cfg.validate()


def test_oft_libero_recipe_and_its_step_schedule():
    from prismatic.training.optim import build_scheduler

    v = VLAConfig.get_choice_class("oft+mx-libero-spatial")()
    assert (v.action_head, v.chunk_len, v.cameras, v.proprio_dim, v.action_dim) == ("l1-regression", 8, ("primary", "wrist"), 8, 7)
    assert (v.learning_rate, v.lr_decay_step, v.max_steps, v.global_batch_size, v.image_aug) == (5e-4, 100_000, 150_005, 64, True)
    assert v.drop_incomplete_chunks  # OFT drops the frames whose chunk runs past the end
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=v.learning_rate)
    sched = build_scheduler(opt, v, v.max_steps)
    factors = [sched.lr_lambdas[0](s) for s in (0, 99_999, 100_000, 150_004)]
    assert factors == [1.0, 1.0, 0.1, 0.1]  # torch's MultiStepLR(milestones=[100000], gamma=0.1), as OFT


def test_a_released_base_vlm_gets_a_fresh_head(released_base_vlm):
    """A prismatic-vlms release (no head) as the base of an OFT-style VLA: its LLM and projector are loaded,
    the l1 head and proprio projector start from their initial weights."""
    from prismatic.models.base_vlm import load_base_vlm

    settings = {**OFT_HEAD, "cameras": ["primary", "wrist"]}
    vla = load_base_vlm(released_base_vlm["dir"], vision_weights=released_base_vlm["vision_weights"], head_settings=settings)
    assert (vla.model.config.action_head, vla.chunk_len, vla.cameras, vla.proprio_dim) == ("l1-regression", 4, ("primary", "wrist"), 8)
    native = released_base_vlm["native"]
    assert torch.equal(vla.model.projector.fc1.weight, native["projector"]["projector.0.weight"])
    assert vla.model.action_head.model.fc2.weight.shape == (7, vla.model.config.text_config.hidden_size)
    assert vla.model.proprio_projector.fc1.weight.abs().sum() > 0  # initialised, not left empty
