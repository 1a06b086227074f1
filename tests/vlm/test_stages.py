"""The VLM stages on the shared trainer (tiny model, synthetic data): the loss falls, exactly the stage's
parameters change (every tensor compared before / after), checkpoints hold what the stage owns, LoRA runs save
the merged weights peft would merge, resume is bit-exact, and bad input stops the run before any model is built."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from vlm_helpers import vlm_config

from prismatic.models.layouts import hf_to_native
from prismatic.training.config import ConfigError
from prismatic.training.trainer import Trainer
from prismatic.vlm import training as vlm_training
from prismatic.vlm.build import build_vlm
from prismatic.vlm.checkpoints import read_vlm_checkpoint
from prismatic.vlm.conversation import ConversationDataError
from prismatic.vlm.stages import GROUPS
from prismatic.vlm.training import VLMTask, merged_lora_state, train_vlm


def native(model) -> dict[str, dict[str, torch.Tensor]]:
    c = model.config
    return hf_to_native({k: v.detach().clone() for k, v in model.state_dict().items()}, c.vision_backbone_id,
                        c.projector_type)  # fmt: skip


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, bool]:
    assert before.keys() == after.keys()
    return {k: not torch.equal(before[k], after[k]) for k in before}


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def unused_vision_keys(model) -> set[str]:
    """Native keys of the ViT modules outside the forward (blocks after the feature layer, final norm)."""
    ids = {id(p) for m in model.vision_backbone.unused_modules() for p in m.parameters()}
    names = {f"vision_backbone.{n}" for n, p in model.vision_backbone.named_parameters() if id(p) in ids}
    c = model.config
    return set(hf_to_native({n: torch.zeros(0) for n in names}, c.vision_backbone_id, c.projector_type)["vision_backbone"])


def test_align_trains_only_the_projector(align_run, vlm_data, word_tokenizer):
    cfg = vlm_config("align", vlm_data, align_run.parent, word_tokenizer, run_id="align", steps=8)
    start = native(build_vlm(cfg).model)  # the same seed: what the run started from
    ckpt = read_vlm_checkpoint(align_run)
    # a tiny model's ViT and LLM exist nowhere else: the align checkpoint keeps them (a full-size one would not)
    assert set(ckpt.groups) == set(GROUPS)
    record = json.loads((align_run / "config.json").read_text())
    assert record["task"] == "vlm" and record["stage"] == "align" and record["weights"]["in_checkpoint"] == list(GROUPS)
    assert record["model"]["vision_backbone_id"] == "siglip-vit-so400m" and record["model_config"]["type"] == "tiny"
    for group in ("vision_backbone", "llm_backbone"):
        assert not any(changed(start[group], ckpt.groups[group]).values()), group
    assert all(changed(start["projector"], ckpt.groups["projector"]).values())
    first, *_, last = losses(align_run)
    assert last < first - 0.5, losses(align_run)  # (7.45 -> 6.01 here: the projector alone learns the captions' words)


def test_finetune_trains_projector_and_llm_from_the_align_run(align_run, finetune_run):
    start, ckpt = read_vlm_checkpoint(align_run).groups, read_vlm_checkpoint(finetune_run)
    assert set(ckpt.groups) == set(GROUPS)  # the ViT came from the align run's checkpoint, not a pretrained source
    assert not any(changed(start["vision_backbone"], ckpt.groups["vision_backbone"]).values())
    assert all(changed(start["projector"], ckpt.groups["projector"]).values())
    assert all(changed(start["llm_backbone"], ckpt.groups["llm_backbone"]).values())
    first, *_, last = losses(finetune_run)
    assert last < 0.8 * first, losses(finetune_run)
    record = json.loads((finetune_run / "config.json").read_text())
    assert record["weights"]["sources"] == dict.fromkeys(GROUPS, "checkpoint")
    assert (finetune_run / "tokenizer" / "tokenizer.json").read_text() == (align_run / "tokenizer" / "tokenizer.json").read_text()


def test_full_finetune_also_trains_the_vit(tmp_path, vlm_data, align_run):
    cfg = vlm_config("full-finetune", vlm_data, tmp_path, None, run_id="full", steps=2, pretrained_checkpoint=align_run)
    trainer = Trainer(cfg, task=VLMTask(cfg))
    start = native(trainer.model)
    trainer.train()
    end = read_vlm_checkpoint(tmp_path / "full").groups
    unused = unused_vision_keys(trainer.model)
    for group in GROUPS:
        diff = changed(start[group], end[group])
        trained = {k: v for k, v in diff.items() if k not in unused}
        assert all(trained.values()), (group, [k for k, v in trained.items() if not v])
    assert unused and not any(changed(start["vision_backbone"], end["vision_backbone"])[k] for k in unused)


def test_lora_finetune_trains_adapters_and_projector_and_saves_the_merged_weights(tmp_path, vlm_data, align_run):
    cfg = vlm_config("lora-finetune", vlm_data, tmp_path, None, run_id="lora", steps=3, pretrained_checkpoint=align_run)
    cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout = 4, 8, 0.0
    trainer = Trainer(cfg, task=VLMTask(cfg))
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or ".projector.modules_to_save." in n for n in trainable)
    assert not any("vision_backbone" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    diff = {n: not torch.equal(before[n], after[n]) for n in before}
    assert {n for n, d in diff.items() if d} <= trainable  # nothing frozen moved
    assert all(diff[n] for n in trainable if ".lora_B." in n or "modules_to_save" in n)
    # the checkpoint holds base + scale * B @ A, exactly what peft's own merge gives
    merged = copy.deepcopy(trainer.model).merge_and_unload()
    want = native(merged)
    got = read_vlm_checkpoint(tmp_path / "lora").groups
    for group in GROUPS:
        assert got[group].keys() == want[group].keys()
        for k in want[group]:
            assert torch.equal(got[group][k], want[group][k]), (group, k)
    start = read_vlm_checkpoint(align_run).groups
    assert not any(changed(start["vision_backbone"], got["vision_backbone"]).values())
    llm = changed(start["llm_backbone"], got["llm_backbone"])
    assert llm["llm.model.layers.0.self_attn.q_proj.weight"] and not llm["llm.model.embed_tokens.weight"]


def test_merged_lora_state_renames_and_merges():
    a, b, w = torch.randn(2, 5), torch.randn(3, 2), torch.randn(3, 5)
    state = {"base_model.model.lm.q.base_layer.weight": w, "base_model.model.lm.q.base_layer.bias": torch.ones(3),
             "base_model.model.lm.q.lora_A.default.weight": a, "base_model.model.lm.q.lora_B.default.weight": b,
             "base_model.model.projector.original_module.fc1.weight": torch.zeros(1),
             "base_model.model.projector.modules_to_save.default.fc1.weight": torch.ones(1)}  # fmt: skip
    out = merged_lora_state(state, type("L", (), {"alpha": 8, "rank": 2})())
    assert out.keys() == {"lm.q.weight", "lm.q.bias", "projector.fc1.weight"}
    assert torch.equal(out["lm.q.weight"], w + (b @ a) * 4.0) and torch.equal(out["projector.fc1.weight"], torch.ones(1))


@pytest.mark.slow
def test_resume_is_exact(tmp_path, vlm_data, align_run):
    """4 steps straight vs 2 steps, stop, resume to 4: the same losses and bit-identical weights."""
    kw = dict(steps=4, pretrained_checkpoint=align_run)
    straight = vlm_config("finetune", vlm_data, tmp_path / "a", None, run_id="r", **kw)
    straight.checkpoint.save_interval = 2
    train_vlm(straight)
    cut = vlm_config("finetune", vlm_data, tmp_path / "b", None, run_id="r", **kw)
    cut.checkpoint.save_interval = 2
    trainer = Trainer(cut, task=VLMTask(cut))
    trainer.total_steps = 2  # stop after the first checkpoint, as a killed run would
    trainer.train()
    assert trainer.state.step == 2
    resumed = Trainer(cut, task=VLMTask(cut))
    assert resumed.state.step == 2 and resumed.state.samples_seen == 8  # 2 steps x 2 micro-batches x 2 samples
    resumed.train()
    assert losses(tmp_path / "a" / "r") == losses(tmp_path / "b" / "r")
    want, got = read_vlm_checkpoint(tmp_path / "a" / "r").groups, read_vlm_checkpoint(tmp_path / "b" / "r").groups
    assert all(torch.equal(want[g][k], got[g][k]) for g in GROUPS for k in want[g])


def test_saved_groups_follow_the_stage_and_the_sources():
    """A full-size run keeps what it trained; a group from a pretrained source is read from there again."""
    task = VLMTask(vlm_config("align", {"captions": Path("c"), "qa": Path("q"), "root": Path(".")}, Path("r"), None))
    task.sources = {"vision_backbone": "pretrained", "projector": "random", "llm_backbone": "pretrained"}
    assert task.saved_groups == ("projector",)  # the original's align checkpoint
    for stage, want in (("finetune", ("projector", "llm_backbone")), ("lora-finetune", ("projector", "llm_backbone")),
                        ("full-finetune", GROUPS)):  # fmt: skip
        task.cfg.stage = stage
        assert task.saved_groups == want, stage


def _no_model(*args, **kwargs):
    raise AssertionError("the model was built before the input was checked")


def test_bad_input_stops_before_the_model_is_built(tmp_path, vlm_data, monkeypatch, align_run):
    monkeypatch.setattr(vlm_training, "build_vlm", _no_model)
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    cfg = vlm_config("finetune", vlm_data, tmp_path, None, pretrained_checkpoint=align_run)
    cfg.data.json = bad
    with pytest.raises(ConversationDataError, match="bad.json is not valid JSON"):
        train_vlm(cfg)
    cfg.data.json = tmp_path / "absent.json"
    with pytest.raises(ConfigError, match=r"--data.json=.*absent.json' is not a file"):
        train_vlm(cfg)
    cfg = vlm_config("aling", vlm_data, tmp_path, None)
    with pytest.raises(ConfigError, match="--stage='aling' is not one of: align, finetune, full-finetune, lora-finetune"):
        train_vlm(cfg)
    assert not any(tmp_path.glob("*/config.json"))  # nothing written


def test_stage_and_checkpoint_combinations_are_checked(tmp_path, vlm_data, align_run, finetune_run, monkeypatch):
    monkeypatch.setattr(vlm_training, "build_vlm", _no_model)
    cfg = vlm_config("finetune", vlm_data, tmp_path, None)  # gelu-mlp: an align architecture, no align run
    with pytest.raises(ConfigError, match=r"starts from an aligned projector: pass --pretrained_checkpoint ALIGN_RUN_DIR"):
        train_vlm(cfg)
    cfg = vlm_config("align", vlm_data, tmp_path, None, pretrained_checkpoint=align_run)
    with pytest.raises(ConfigError, match="the align stage trains a fresh projector"):
        train_vlm(cfg)
    cfg = vlm_config("finetune", vlm_data, tmp_path, None, pretrained_checkpoint=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="nowhere' does not exist"):
        train_vlm(cfg)
    cfg = vlm_config("align", vlm_data, tmp_path, None)
    cfg.model.align.global_batch_size = 5
    with pytest.raises(ConfigError, match="--model.align.global_batch_size=5 is not a multiple of per_device_batch_size"):
        train_vlm(cfg)


def test_a_pretrained_run_of_another_model_is_refused(tmp_path, vlm_data, align_run):
    cfg = vlm_config("finetune", vlm_data, tmp_path, None, pretrained_checkpoint=align_run)
    cfg.model.vision_backbone_id = "dinov2-vit-l"
    with pytest.raises(ConfigError, match=r"is another model \(vision_backbone_id: 'siglip-vit-so400m' there, 'dinov2-vit-l' here"):
        train_vlm(cfg)
