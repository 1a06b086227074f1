"""Training on CPU: FSDP with 2 processes, exact resume, gradient accumulation, LoRA + merge, config errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tolerances import rounding_rtol
from torch.utils.data import DataLoader

from prismatic.training.checkpoint import CheckpointManager
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


def tiny_cfg(data_root: Path, run_root: Path, **vla) -> TrainConfig:
    v = VLAConfig.get_choice_class("tiny+mx-synthetic")(data_mix="bridge_orig", image_size=112, shuffle_buffer_size=64)
    v = replace(v, **vla)
    return TrainConfig(
        vla=v, data_root=data_root, run_root=run_root, seed=11,
        parallel=ParallelConfig(activation_checkpointing=False),
        checkpoint=CheckpointConfig(save_interval=3, keep_last=2),
        logging=LoggingConfig(progress=False),
    )  # fmt: skip


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_interrupted_run_resumes_bit_exactly(data_root, tmp_path):
    full = tiny_cfg(data_root, tmp_path / "a", max_steps=6)
    Trainer(full).train()
    reference = losses(full.run_dir)
    assert len(reference) == 6

    cut = tiny_cfg(data_root, tmp_path / "b", max_steps=6)
    trainer = Trainer(cut)
    real_save = trainer.save

    def save_then_crash() -> None:
        real_save()
        if trainer.state.step == 3:
            raise KeyboardInterrupt  # the job dies right after its step-3 checkpoint

    trainer.save = save_then_crash
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    # a half-written later checkpoint must be ignored by resume
    (cut.run_dir / "state" / "step-000005.partial").mkdir()
    (cut.run_dir / "state" / "step-000005.partial" / "__0_0.distcp").write_bytes(b"garbage")
    resumed = Trainer(cut)
    assert resumed.state.step == 3 and resumed.state.samples_seen == 12
    resumed.train()
    assert losses(cut.run_dir) == reference  # bit-exact, not approximately equal
    a = torch.load(sorted((full.run_dir / "checkpoints").glob("*.pt"))[-1], weights_only=True)["model"]
    b = torch.load(sorted((cut.run_dir / "checkpoints").glob("*.pt"))[-1], weights_only=True)["model"]
    for group in a:
        for k in a[group]:
            assert torch.equal(a[group][k], b[group][k]), k
    # keep_last=2 pruned the oldest; the partial directory is gone
    assert sorted(p.name for p in (cut.run_dir / "state").iterdir()) == ["step-000003", "step-000006"]


def test_background_prefetch_feeds_the_same_batches(data_root, tmp_path):
    threaded = tiny_cfg(data_root, tmp_path / "threaded", max_steps=3)
    inline = tiny_cfg(data_root, tmp_path / "inline", max_steps=3)
    inline.parallel.prefetch_batches = 0
    assert threaded.parallel.prefetch_batches > 0
    Trainer(threaded).train()
    Trainer(inline).train()
    assert losses(threaded.run_dir) == losses(inline.run_dir)


def _first_step_gradients(trainer: Trainer) -> tuple[dict[str, torch.Tensor], float, int]:
    """Run one optimizer step; return the gradients as the optimizer sees them (after accumulation and
    clipping, before the update), the step's loss and the number of token positions per micro-batch."""
    grads, positions = {}, []

    def capture(optimizer, args, kwargs):
        grads.update({n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None})

    def recorded(loader):
        for batch in loader:
            positions.append(batch["input_ids"].numel() + batch["input_ids"].shape[0] * trainer.model.num_patches)
            yield batch

    trainer.optimizer.register_step_pre_hook(capture)
    loader = DataLoader(trainer.dataset, batch_size=trainer.cfg.vla.per_device_batch_size,
                        collate_fn=trainer.dataset.collator)  # fmt: skip
    metrics = trainer.train_step(recorded(iter(loader)))
    return grads, metrics["loss"], sum(positions)


def test_gradient_accumulation_matches_large_batch(data_root, tmp_path):
    """Two micro-batches of 2 give the gradient of one batch of 4, up to the order of summation.

    Compared before the optimizer step: AdamW divides by sqrt(v), so rounding noise in a gradient becomes
    a relative error of the update wherever v is tiny (a weight comparison after the step fails on some CPUs).

    Tolerance, from summation order: every gradient entry (and the loss) is a sum over the token positions of
    the 4 samples, n of them in all; the two paths add the same terms in other orders (two partial sums vs one,
    other kernel blocking for other shapes), so they are within `rounding_rtol(n)` (tests/tolerances.py) of
    each other, relative to sum|terms|. sum|terms| is not observable per entry
    (a ViT key bias has an exact gradient of 0 and rounding noise in both paths), so each tensor is bounded
    against its largest entry. A real accumulation error (a missing 1/accum, a dropped or repeated micro-batch,
    unequal token weighting) changes gradients by a sizeable fraction of themselves, far above this bound."""
    accum = tiny_cfg(data_root, tmp_path / "accum", max_steps=1, global_batch_size=4, per_device_batch_size=2)
    big = tiny_cfg(data_root, tmp_path / "big", max_steps=1, global_batch_size=4, per_device_batch_size=4)
    accum.vla.max_grad_norm = big.vla.max_grad_norm = float("inf")  # clipping would rescale by a rounded norm
    t1, t2 = Trainer(accum), Trainer(big)
    assert t1.accum == 2 and t2.accum == 1
    g1, loss1, n1 = _first_step_gradients(t1)
    g2, loss2, n2 = _first_step_gradients(t2)
    n = max(n1, n2)
    rtol = rounding_rtol(n)
    assert loss1 == pytest.approx(loss2, rel=rtol, abs=0)  # a mean of positive terms: no cancellation
    assert g1.keys() == g2.keys() and {k.split(".")[0] for k in g1} == {"vision_backbone", "projector", "language_model"}
    for name, g in g2.items():
        bound = rtol * g.abs().max().item()
        err = (g1[name] - g).abs().max().item()
        assert err <= bound, f"{name}: max |diff| {err:.3g} > bound {bound:.3g} (n={n})"


def test_fsdp_two_processes_loss_falls(data_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(REPO / "vla-scripts" / "train.py"), "--config_path", str(REPO / "configs" / "vla" / "tiny.yaml"),
           "--data_root", str(data_root), "--run_root", str(tmp_path), "--run_id", "fsdp",
           "--vla.max_steps", "12", "--vla.learning_rate", "0.002", "--checkpoint.save_interval", "12"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "fsdp"
    curve = losses(run)
    assert len(curve) == 12 and np.mean(curve[-3:]) < np.mean(curve[:3]) - 0.3
    state = run / "state" / "step-000012"
    assert {p.name for p in state.glob("rng-rank*.pt")} == {"rng-rank0.pt", "rng-rank1.pt"}
    assert len(list(state.glob("*.distcp"))) == 2  # each rank wrote its shard
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2 and config["vla"]["type"] == "tiny+mx-synthetic"
    from prismatic.models.load import load_vla  # the consolidated weights load for inference

    vla = load_vla(run)  # config.json (architecture), dataset_statistics.json, tokenizer/, checkpoints/*.pt
    assert vla.norm_stats.keys() == {"bridge_orig"}


def test_lora_finetune_merge_and_reload(data_root, tmp_path):
    cfg = tiny_cfg(data_root, tmp_path, max_steps=3, base_vlm=TINY_CKPT, size="full", image_size=None,
                   learning_rate=5e-3)  # fmt: skip
    cfg.lora.enabled, cfg.lora.rank, cfg.lora.alpha = True, 4, 8
    cfg.parallel.activation_checkpointing = True  # adapters inside checkpoint-wrapped layers are saved too
    Trainer(cfg).train()
    run = cfg.run_dir
    assert (run / "adapter" / "adapter_config.json").is_file()
    from safetensors import safe_open
    from safetensors.torch import load_file
    from torch.distributed.checkpoint import FileSystemReader

    from prismatic.models.load import load_vla
    from prismatic.training.lora import base_fingerprint

    with safe_open(run / "adapter" / "adapter_model.safetensors", framework="pt") as f:  # merge checks it
        assert f.metadata()["prismatic_base_fingerprint"] == base_fingerprint(TINY_CKPT)

    base_model = load_vla(TINY_CKPT).model
    skipped = {id(m) for u in base_model.vision_backbone.unused_modules() for m in u.modules()}
    skipped.add(id(base_model.get_output_embeddings()))  # no adapters on the head nor outside the forward
    adapted = [m for m in base_model.modules() if type(m) is torch.nn.Linear and id(m) not in skipped]
    assert len(load_file(run / "adapter" / "adapter_model.safetensors")) == 2 * len(adapted)  # lora_A, lora_B
    saved = FileSystemReader(str(run / "state" / "step-000003")).read_metadata().state_dict_metadata
    assert all(".lora_" in k for k in saved if k.startswith("model."))  # resumable: adapters, not the base
    out = tmp_path / "merged"
    subprocess.run([sys.executable, str(REPO / "vla-scripts" / "merge_lora.py"), "--base_dir", str(TINY_CKPT),
                    "--run_dir", str(run), "--out_dir", str(out)], check=True, cwd=REPO, capture_output=True)  # fmt: skip

    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import prismatic  # noqa: F401

    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert set(model.config.norm_stats) == {"bridge_orig"}  # the fine-tuning data's statistics
    base = AutoModelForImageTextToText.from_pretrained(TINY_CKPT)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed and all("lora" not in k for k in model.state_dict())  # merged, no adapter modules left
    img = Image.open(REPO / "tests" / "assets" / "openvla-tiny" / "cases" / "blocks.png")
    action = model.predict_action(**processor("In: What action should the robot take to pick up the block?\nOut:", img),
                                  unnorm_key="bridge_orig")  # fmt: skip
    assert action.shape == (7,) and np.isfinite(action).all()


def test_config_errors_are_all_reported_with_flags(tmp_path):
    cfg = tiny_cfg(tmp_path / "missing", tmp_path, global_batch_size=5, per_device_batch_size=2, stage="half",
                   lr_schedule="linear")  # fmt: skip
    cfg.parallel.sharding = "full-shard"
    cfg.parallel.prefetch_batches = -1
    with pytest.raises(ConfigError) as err:
        cfg.validate(world_size=2)
    msg = str(err.value)
    for expected in ("--vla.global_batch_size=5", "set --vla.global_batch_size 4", "--vla.stage='half'",
                     "--vla.lr_schedule='linear'", "--parallel.sharding='full-shard' is not one of: full_shard",
                     "--parallel.prefetch_batches must be >= 0", "--data_root="):  # fmt: skip
        assert expected in msg, (expected, msg)


def test_trainer_validates_before_building_anything(tmp_path):
    cfg = tiny_cfg(tmp_path / "no-data-here", tmp_path)
    with pytest.raises(ConfigError, match="--data_root"):
        Trainer(cfg, DistInfo(0, 0, 1, torch.device("cpu")))
    assert not (tmp_path / cfg.resolved_run_id).exists()


def test_resume_ignores_incomplete_checkpoints(tmp_path):
    mgr = CheckpointManager(tmp_path, DistInfo(0, 0, 1, torch.device("cpu")))
    for step, complete in ((2, True), (4, True), (6, False)):
        d = tmp_path / "state" / f"step-{step:06d}"
        d.mkdir(parents=True)
        if complete:
            (d / "trainer_state.json").write_text(json.dumps({"step": step}))
    (tmp_path / "state" / "step-000008.partial").mkdir()
    assert mgr.latest().name == "step-000004"
    shutil.rmtree(tmp_path / "state")
    assert mgr.latest() is None


def test_statistics_record_the_normalisation_type(data_root, tmp_path):
    from prismatic.training.model_setup import build_model_and_processor, build_train_dataset

    cfg = tiny_cfg(data_root, tmp_path)
    vla = build_model_and_processor(cfg)
    ds = build_train_dataset(cfg, vla, DistInfo(0, 0, 1, torch.device("cpu")))
    assert ds.dataset_statistics["bridge_orig"]["normalization_type"] == "bounds_q99"


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_reduced_sizes_initialise_with_a_width_scaled_std(size, tmp_path):
    """Llama's 0.02 is sized for width 4096; a narrow random decoder (and the projector) get 1/sqrt(width)."""
    from prismatic.training.model_setup import build_model_and_processor

    cfg = tiny_cfg(tmp_path, tmp_path, size=size)
    model = build_model_and_processor(cfg).model
    width = model.config.text_config.hidden_size
    assert model.config.text_config.initializer_range == pytest.approx(width**-0.5)
    q = model.language_model.model.layers[0].self_attn.q_proj.weight
    assert q.std().item() == pytest.approx(width**-0.5, rel=0.05)
    first = next(m for m in model.projector.modules() if isinstance(m, torch.nn.Linear))
    assert first.weight.std().item() == pytest.approx(width**-0.5, rel=0.05)


@pytest.mark.parametrize(
    "section, field, value, expected",
    [
        ("logging", "log_interval", 0, "--logging.log_interval must be >= 1"),  # was: ZeroDivisionError after step 1
        ("vla", "max_grad_norm", -1.0, "--vla.max_grad_norm must be > 0"),  # was: silent gradient ascent
        ("vla", "image_size", 0, "--vla.image_size must be a positive multiple of the backbone's patch size 14"),
        ("vla", "image_size", 100, "--vla.image_size must be a positive multiple"),  # was: 224 px, or timm's error
        ("vla", "llm_max_length", 8, "--vla.llm_max_length must be >= 24"),  # was: an unrelated NotImplementedError
        ("lora", "rank", 0, "--lora.rank must be >= 1"),  # was: peft's message
        ("parallel", "cpu_threads", -1, "--parallel.cpu_threads must be >= 1"),  # was: torch's message
        ("vla", "shuffle_buffer_size", 0, "--vla.shuffle_buffer_size must be >= 1"),
        ("lora", "dropout", 1.0, "--lora.dropout must be in [0, 1)"),
        ("vla", "weight_decay", float("nan"), "--vla.weight_decay must be >= 0"),
    ],
)
def test_numeric_flags_are_validated_with_their_names(section, field, value, expected, data_root, tmp_path):
    cfg = tiny_cfg(data_root, tmp_path)
    setattr(cfg if section == "top" else getattr(cfg, section), field, value)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        Trainer(cfg, DistInfo(0, 0, 1, torch.device("cpu")))
    assert not tmp_path.joinpath(cfg.resolved_run_id).exists()


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_rerun_with_a_mixture_typo_or_another_architecture_changes_nothing(data_root, tmp_path):
    """Re-running a finished run with a typo in --vla.data_mix and/or another --vla.image_size used to overwrite its
    config.json before failing (then the run no longer loaded). Now the run directory is written only after
    config, mixture, model and checkpoint are checked, and a changed architecture is refused by name."""
    from prismatic.models.load import CheckpointError

    def rerun(**vla) -> TrainConfig:
        cfg = tiny_cfg(data_root, tmp_path, max_steps=1, **vla)
        cfg.run_id = "my-run"  # (the default run id contains the mixture's name)
        return cfg

    cfg = rerun()
    Trainer(cfg).train()
    before = _snapshot(cfg.run_dir)
    assert "config.json" in before and any(k.startswith("state/step-000001/") for k in before)

    with pytest.raises(Exception, match="bridge_orgi"):
        Trainer(rerun(data_mix="bridge_orgi"))
    assert _snapshot(cfg.run_dir) == before

    with pytest.raises(CheckpointError, match=r"another architecture; model fields \(saved -> now\): "
                                              r"image_sizes: \[112, 112\] -> \[84, 84\]"):  # fmt: skip
        Trainer(rerun(image_size=84))
    assert _snapshot(cfg.run_dir) == before
    # both mistakes at once: the mixture is checked with the configuration, before any model is built
    with pytest.raises(ConfigError, match="bridge_orgi"):
        Trainer(rerun(image_size=84, data_mix="bridge_orgi"))
    assert _snapshot(cfg.run_dir) == before
    from prismatic.models.load import load_vla

    assert load_vla(cfg.run_dir).config.image_sizes == [112, 112]  # still loads
