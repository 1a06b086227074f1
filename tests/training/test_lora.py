"""QLoRA (`--lora.quantization 4bit|8bit`) on CPU with the tiny reference checkpoint.

The base's Linear layers really become bitsandbytes layers, only the adapters train, the loss falls, the
adapter merges into the full-precision base and reloads through the Auto classes, quantised logits stay
close to full-precision ones, an interrupted run resumes from adapter-only checkpoints, and every
misconfiguration fails before a model is built, naming the flag to change.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from prismatic.constants import IGNORE_INDEX
from prismatic.models.load import load_vla
from prismatic.training.checkpoint import CheckpointManager
from prismatic.training.config import (
    CheckpointConfig,
    ConfigError,
    LoggingConfig,
    LoRAConfig,
    ParallelConfig,
    TrainConfig,
    VLAConfig,
)
from prismatic.training.distributed import DistInfo
from prismatic.training.lora import (
    SKIP_MODULES,
    check_quantized_training,
    merge_adapter,
    quantization_config,
    save_adapter,
    wrap_with_lora,
)
from prismatic.training.model_setup import build_model_and_processor

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "assets" / "openvla-tiny"
TINY_CKPT = TINY / "checkpoint"
CPU = DistInfo(0, 0, 1, torch.device("cpu"))
BNB_LAYER = {"4bit": "Linear4bit", "8bit": "Linear8bitLt"}
PACKED_DTYPE = {"4bit": torch.uint8, "8bit": torch.int8}  # two 4-bit codes per byte; int8 weights
# Relative (Frobenius) error of the action-position logits, quantised vs full-precision base, on the fixed
# batch below. Measured with bitsandbytes 0.50.2 on CPU: 4bit (NF4, double quant) 0.273, 8bit (LLM.int8)
# 0.0167; one 64x64 layer alone: 0.089 and 0.0062. The tiny model's errors compound over its few layers.
LOGITS_REL_TOL = {"4bit": 0.35, "8bit": 0.03}


def qlora_cfg(root: Path, quantization: str, **vla) -> TrainConfig:
    v = VLAConfig.get_choice_class("tiny+mx-synthetic")(base_vlm=TINY_CKPT, size="full", data_mix="bridge_orig",
                                                        shuffle_buffer_size=64, learning_rate=5e-3)  # fmt: skip
    return TrainConfig(
        vla=replace(v, **vla), data_root=root, run_root=root, seed=11,
        parallel=ParallelConfig(activation_checkpointing=False),
        checkpoint=CheckpointConfig(save_interval=2, keep_last=2),
        logging=LoggingConfig(progress=False),
        lora=LoRAConfig(enabled=True, rank=4, alpha=8, quantization=quantization),
    )  # fmt: skip


def with_dataset_folder(root: Path) -> Path:
    """Config validation checks that --vla.data_mix's datasets are under --data_root (the folder layout
    only); the tests that stop at validation need no real data, just `<root>/bridge_orig/<version>/`."""
    (root / "bridge_orig" / "1.0.0").mkdir(parents=True, exist_ok=True)
    (root / "bridge_orig" / "1.0.0" / "dataset_info.json").write_text("{}")
    return root


def fixed_batch(processor) -> dict[str, torch.Tensor]:
    """The three reference images under one instruction, each with its own 7 target action tokens."""
    from PIL import Image

    images = [Image.open(TINY / "cases" / name) for name in ("blocks.png", "gradient.png", "noise.png")]
    prompt = "In: What action should the robot take to pick up the block?\nOut:"
    inputs = processor([prompt] * 3, images)
    targets = torch.randint(31744, 32000, (3, 7), generator=torch.Generator().manual_seed(0))  # action tokens
    ids = torch.cat([inputs["input_ids"], targets], dim=1)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -7:] = targets
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
            "pixel_values": inputs["pixel_values"]}  # fmt: skip


def full_precision_linears(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if type(m) is nn.Linear}


def adapted_linears(model: nn.Module) -> set[str]:
    """The Linear layers LoRA adapts: all but the LM head and those outside the forward."""
    unused = {id(m) for u in model.vision_backbone.unused_modules() for m in u.modules()}
    head = model.get_output_embeddings()
    return {
        n for n, m in model.named_modules() if type(m) is nn.Linear and m is not head and id(m) not in unused
    }


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_qlora_trains_adapters_on_a_quantized_base_and_merges_into_full_precision(quantization, tmp_path):
    cfg = qlora_cfg(tmp_path, quantization)
    vla = build_model_and_processor(cfg, "cpu")
    model = wrap_with_lora(vla.model, cfg.lora)
    base = load_vla(TINY_CKPT)
    linears = full_precision_linears(base.model)
    head = "language_model.lm_head"
    assert base.model.get_submodule(head) is base.model.get_output_embeddings()
    assert set(SKIP_MODULES) == {"projector", "lm_head", "action_head"}
    quantized = {n for n in linears if not n.startswith("projector.") and n != head}
    assert any(n.startswith("vision_backbone.") for n in quantized)  # vision backbone and LLM
    assert any(n.startswith("language_model.") for n in quantized)
    adapted = adapted_linears(base.model)
    assert quantized - adapted  # the last ViT block is outside the forward: quantised, but no adapter
    inner = model.base_model.model
    for name in linears - {head}:
        layer = inner.get_submodule(name)
        if name in adapted:  # every Linear in the forward but the head carries an adapter ...
            layer = layer.base_layer
        if name in quantized:  # ... over a bitsandbytes layer with packed integer weights
            kind = type(layer)
            assert kind.__name__ == BNB_LAYER[quantization] and kind.__module__.startswith("bitsandbytes")
            assert layer.weight.dtype == PACKED_DTYPE[quantization] and not layer.weight.requires_grad
        else:  # ... or over the full-precision projector
            assert type(layer) is nn.Linear and layer.weight.dtype == torch.float32
    assert type(inner.get_submodule(head)) is nn.Linear  # the LM head: full precision, no adapter
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * len(adapted)

    batch = fixed_batch(vla.processor)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    losses = []
    for _ in range(5):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.5, losses

    # The adapter is named by module path only: the same keys as an adapter on the full-precision base.
    adapter = CheckpointManager(tmp_path, CPU).trainable_state(model)
    save_adapter(model, adapter, tmp_path / "adapter")
    on_full_precision = wrap_with_lora(load_vla(TINY_CKPT).model, LoRAConfig(enabled=True, rank=4, alpha=8))
    fp_keys = set(on_full_precision.state_dict())
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    from safetensors.torch import load_file

    saved_keys = set(load_file(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert saved_keys == {k.replace(".default.", ".") for k in fp_keys if ".lora_" in k}
    assert "quant" not in json.dumps(saved).lower()

    merged = merge_adapter(TINY_CKPT, tmp_path / "adapter", tmp_path / "merged")
    assert all("lora" not in k and "base_layer" not in k for k in merged.model.state_dict())
    from transformers import AutoModelForImageTextToText

    import prismatic  # noqa: F401  (registers the Auto classes)

    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged")
    assert full_precision_linears(reloaded) == linears
    assert {p.dtype for p in reloaded.parameters()} == {p.dtype for p in base.model.parameters()}
    with torch.no_grad():  # what was learnt on the quantised base carries over to the full-precision one
        assert reloaded(**batch).loss.item() < base.model(**batch).loss.item() - 0.5
    from PIL import Image

    action = reloaded.predict_action(**vla.processor("In: What action should the robot take to pick up the block?\nOut:",
                                                     Image.open(TINY / "cases" / "blocks.png")), unnorm_key="bridge_orig")  # fmt: skip
    assert action.shape == (7,) and np.isfinite(action).all()


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_logits_are_close_to_full_precision(quantization):
    full = load_vla(TINY_CKPT)
    quant = load_vla(TINY_CKPT, quantization_config=quantization_config(quantization, "cpu"))
    batch = fixed_batch(full.processor)
    # Compared in train mode (the model has no dropout): in eval mode bitsandbytes' CPU inference path
    # repacks 4-bit weights for AVX512-BF16 and needs out_features % 32 == 0, which the tiny model lacks.
    # Training never takes that path.
    full.model.train(), quant.model.train()
    with torch.no_grad():
        ref = full.model(**batch, return_label_logits=True).logits
        out = quant.model(**batch, return_label_logits=True).logits
        assert torch.equal(ref, full.model.eval()(**batch, return_label_logits=True).logits)  # no dropout
    rel = ((out - ref).norm() / ref.norm()).item()
    assert 1e-3 < rel < LOGITS_REL_TOL[quantization], rel  # quantised (not a no-op), and close
    if quantization == "8bit":  # LLM.int8 predicts the same tokens
        assert torch.equal(out.argmax(-1), ref.argmax(-1))


@pytest.mark.slow
def test_qlora_run_resumes_from_adapter_only_checkpoints(data_root, tmp_path):
    cfg = qlora_cfg(data_root, "4bit", max_steps=2)
    cfg.run_root, cfg.parallel.activation_checkpointing = tmp_path, True  # the k-bit + checkpointing path
    from prismatic.training.trainer import Trainer

    first = Trainer(cfg)
    first.train()
    state = tmp_path / cfg.resolved_run_id / "state" / "step-000002"
    from torch.distributed.checkpoint import FileSystemReader

    saved = FileSystemReader(str(state)).read_metadata().state_dict_metadata
    model_keys = {k.removeprefix("model.") for k in saved if k.startswith("model.")}
    assert model_keys and all(".lora_A." in k or ".lora_B." in k for k in model_keys)  # adapters only
    adapter_dir = tmp_path / cfg.resolved_run_id / "adapter"
    from safetensors.torch import load_file

    at_step_2 = load_file(adapter_dir / "adapter_model.safetensors")

    cfg.vla.max_steps = 3
    resumed = Trainer(cfg)  # the base is read again from --vla.base_vlm; adapters and optimizer from state/
    assert resumed.state.step == 2
    restored = {
        k.replace(".default.", "."): v for k, v in resumed.ckpt.trainable_state(resumed.model).items()
    }
    assert restored.keys() == at_step_2.keys()
    for k, v in at_step_2.items():
        assert torch.equal(restored[k], v), k
    saved_moments = [s["exp_avg"] for s in first.optimizer.state.values()]
    restored_moments = [s["exp_avg"] for s in resumed.optimizer.state.values()]
    assert len(restored_moments) == len(saved_moments) == len(at_step_2)  # every adapter, in the same order
    for a, b in zip(saved_moments, restored_moments):
        assert torch.equal(a, b)  # optimizer moments restored too
    resumed.train()
    curve = [
        json.loads(line)["loss"]
        for line in (tmp_path / cfg.resolved_run_id / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(curve) == 3 and all(np.isfinite(curve))


@pytest.mark.slow
def test_qlora_two_processes_replicate_the_quantized_base(data_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(REPO / "vla-scripts" / "finetune.py"), "--vla.type", "tiny+mx-synthetic", "--vla.size", "full",
           "--vla.base_vlm", str(TINY_CKPT), "--vla.data_mix", "bridge_orig", "--vla.shuffle_buffer_size", "64",
           "--vla.max_steps", "3", "--vla.learning_rate", "0.005", "--data_root", str(data_root),
           "--run_root", str(tmp_path), "--run_id", "ddp", "--lora.rank", "4", "--lora.alpha", "8",
           "--lora.quantization", "4bit", "--parallel.sharding", "no_shard", "--checkpoint.save_interval", "3",
           "--logging.progress", "false"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp"
    curve = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(curve) == 3 and all(np.isfinite(curve))
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    rng_files = {p.name for p in (run / "state" / "step-000003").glob("rng-rank*.pt")}
    assert rng_files == {"rng-rank0.pt", "rng-rank1.pt"}  # both ranks saved


def test_quantization_misconfigurations_name_the_flag(tmp_path):
    with_dataset_folder(tmp_path)
    cfg = qlora_cfg(tmp_path, "4bit")
    cfg.lora.enabled = False
    with pytest.raises(ConfigError, match="set --lora.enabled true"):
        cfg.validate()
    cfg = qlora_cfg(tmp_path, "4bit")
    with pytest.raises(ConfigError) as err:
        cfg.validate(world_size=2)  # default --parallel.sharding full_shard
    msg = str(err.value)
    assert "FSDP cannot shard bitsandbytes-quantised weights (--parallel.sharding='full_shard')" in msg
    assert "set --parallel.sharding no_shard" in msg
    cfg.parallel.sharding = "no_shard"
    cfg.validate(world_size=2)  # DDP-style replication works
    cfg.validate(world_size=1)
    native = tmp_path / "native-run"
    (native / "checkpoints").mkdir(parents=True)
    cfg = qlora_cfg(tmp_path, "3bit", base_vlm=native)
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert "--lora.quantization='3bit' is not one of: 4bit, 8bit" in str(err.value)
    assert "convert_native_to_hf.py" in str(err.value)


def test_missing_bitsandbytes_or_unsupported_device_fails_before_the_model_is_built(tmp_path, monkeypatch):
    from prismatic.training.trainer import Trainer

    cfg = qlora_cfg(with_dataset_folder(tmp_path), "8bit")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
        with pytest.raises(
            ImportError, match=r"--lora.quantization 8bit needs bitsandbytes >= 0.48.*uv sync --extra train"
        ):
            Trainer(cfg, CPU)
    assert not cfg.run_dir.exists()
    with pytest.raises(RuntimeError, match=r"cannot train 4bit layers on device 'meta'.*--device"):
        check_quantized_training("4bit", "meta")
    for quantization in ("4bit", "8bit"):
        check_quantized_training(quantization, "cpu")  # what CI's CPU runs


def test_merge_refuses_an_adapter_trained_on_another_base(tiny_vla, tmp_path):
    """A base with other weights used to merge silently. The trainer records the base's fingerprint in the
    adapter file; the HF and native layouts of the same weights share it."""
    from safetensors.torch import load_file, save_file

    from prismatic.training.lora import base_fingerprint
    from prismatic.util.errors import UserError

    fingerprint = base_fingerprint(TINY_CKPT)
    assert base_fingerprint(tiny_vla.save_native(tmp_path / "native")) == fingerprint
    model = wrap_with_lora(load_vla(TINY_CKPT).model, LoRAConfig(enabled=True, rank=2, alpha=4))
    save_adapter(model, CheckpointManager(tmp_path, CPU).trainable_state(model), tmp_path / "adapter",
                 base=(str(TINY_CKPT), fingerprint))  # fmt: skip

    other = tmp_path / "other-base"  # the same architecture, one matrix changed (as merging an adapter does)
    shutil.copytree(TINY_CKPT, other)
    shard = other / "model-00002-of-00004.safetensors"
    tensors = load_file(shard)
    name = next(k for k, v in tensors.items() if v.ndim == 2)
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, shard, metadata={"format": "pt"})
    assert base_fingerprint(other) != fingerprint
    with pytest.raises(UserError, match=rf"the adapter in .*adapter was trained on another base \({TINY_CKPT}\)"):
        merge_adapter(other, tmp_path / "adapter", tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    merge_adapter(TINY_CKPT, tmp_path / "adapter", tmp_path / "merged")  # the right base merges
    assert (tmp_path / "merged" / "config.json").is_file()
