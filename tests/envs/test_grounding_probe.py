"""prismatic.envs.grounding_probe (scripts/probe_tabletop_grounding.py): its metrics, its control data and a
short run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prismatic.envs import grounding_probe as probe
from prismatic.envs import tabletop


def test_grounding_metrics_count_only_distractors_whose_step_differs():
    # frame 0: 3 objects, target 0; the prediction is object 2's step -> 1 distractor hit of 2 candidates
    # frame 1: target 1 hit; object 0 has the same step as the target, so only object 2 is a candidate
    objects = np.array([[[1, 1], [2, 2], [3, 3]],
                        [[5, 5], [5, 5], [6, 6]]])  # fmt: skip
    predicted = np.array([[3, 3], [5, 5]])
    m = probe.grounding_metrics(predicted, objects, np.array([0, 1]))
    assert m["target_acc"] == pytest.approx(0.5)
    assert (
        m["target_acc_distinct"] == 0.0
    )  # only frame 0 has no object sharing the target's step, and it missed
    assert m["distractor_rate"] == pytest.approx(1 / 3)  # 1 hit over 3 candidate (frame, object) pairs


def test_target_colour_control_names_that_colour_and_labels_the_expert_step():
    frames = probe.render_frames(12, seed=5, num_objects=3, target_colour="red")
    assert len(frames["image"]) == 12
    assert all(" red " in text for text in frames["instruction"])
    for action, steps, target in zip(frames["action"], frames["steps"], frames["target"]):
        np.testing.assert_allclose(
            action[:2], steps[target], atol=1e-6
        )  # the expert steps to the named object
        assert set(np.round(np.abs(np.asarray(steps)).ravel(), 6)) <= {0.0, round(tabletop.MAX_DELTA, 6)}


def test_short_probe_run_learns_and_writes_its_curve(tmp_path):
    out = tmp_path / "probe.json"
    result = probe.main(["--steps", "60", "--eval-every", "30", "--train-frames", "96", "--val-frames", "24",
                         "--out", str(out)])  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["curve"] == result["curve"] and [p["step"] for p in saved["curve"]] == [0, 30, 60]
    assert saved["curve"][-1]["loss"] < saved["curve"][1]["loss"]  # training moved
    assert saved["versions"]["torch"] and saved["command"].startswith(
        "scripts/probe_tabletop_grounding.py --steps 60"
    )


def test_bad_flags_stop_before_any_work(capsys):
    with pytest.raises(SystemExit):
        probe.parse_args(["--steps", "0"])
    assert "--steps must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        probe.parse_args(["--target-colour", "purple"])
    assert "blue, green, red, yellow" in capsys.readouterr().err.replace("'", "")


def test_episode_mode_trains_on_the_demos_frames(capsys):
    frames = probe.episode_frames(3, num_objects=3)
    n = len(frames["image"])
    assert n == len(frames["instruction"]) == len(frames["action"]) > 3  # several frames per episode
    assert len(set(frames["instruction"])) <= 3
    chained = probe.episode_frames(2, num_objects=3, start="random", goals=3)
    assert len(chained["image"]) > n  # three goals per episode
    assert len(set(chained["instruction"])) == 6  # each frame carries its own goal's instruction
    result = probe.main(["--steps", "4", "--eval-every", "4", "--train-episodes", "3", "--val-frames", "12",
                         "--goals", "2"])  # fmt: skip
    assert [p["step"] for p in result["curve"]] == [0, 4]
    with pytest.raises(SystemExit):
        probe.parse_args(["--train-episodes", "3", "--target-colour", "red"])
    assert "cannot be combined" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        probe.parse_args(["--train-episodes", "3", "--goals", "4"])
    assert "--goals must be 1..--num-objects (3)" in capsys.readouterr().err


def _tiny_vlm(root) -> object:
    """A toy VLM run (vla-scripts/toy_vlm.py's stages at one step each): the base a probe can start from."""
    from prismatic.envs.captions import CaptionDataConfig, write_dataset
    from prismatic.envs.vocabulary import TOKENIZER_DIR
    from prismatic.training.config import CheckpointConfig, LoggingConfig, ParallelConfig
    from prismatic.vlm.config import VLMDataConfig, VLMModelConfig, VLMTrainConfig
    from prismatic.vlm.training import train_vlm

    data = write_dataset(root / "data", CaptionDataConfig(num_train=4, num_heldout=1), progress_bar=False)
    pretrained = None
    for stage, file in (("align", "align.json"), ("full-finetune", "finetune.json")):
        model = VLMModelConfig.get_choice_class("tiny")(image_size=probe.IMAGE_SIZE)
        for recipe in (model.align, model.finetune):
            recipe.max_steps, recipe.global_batch_size, recipe.per_device_batch_size = 1, 2, 2
        train_vlm(VLMTrainConfig(model=model, stage=stage, data=VLMDataConfig(json=data / file, image_dir=data / "images"),
                                 tokenizer=TOKENIZER_DIR, run_root=root, run_id=stage, pretrained_checkpoint=pretrained,
                                 logging=LoggingConfig(progress=False), checkpoint=CheckpointConfig(save_interval=1),
                                 parallel=ParallelConfig(activation_checkpointing=False, prefetch_batches=0)))  # fmt: skip
        pretrained = root / stage
    return pretrained


def test_the_probe_can_start_from_a_vlm_run(tmp_path, capsys):
    import torch

    run = _tiny_vlm(tmp_path)
    vla, *_ = probe.build_model(0, None, run)
    saved = torch.load(next((run / "checkpoints").glob("*.pt")), weights_only=True)["model"]
    name = "featurizer.patch_embed.proj.weight"
    assert torch.equal(vla.model.vision_backbone.featurizer.patch_embed.proj.weight, saved["vision_backbone"][name])
    embed = saved["llm_backbone"]["llm.model.embed_tokens.weight"]
    assert torch.equal(vla.model.get_input_embeddings().weight, embed)
    random_vla, *_ = probe.build_model(0, None)
    assert not torch.equal(random_vla.model.vision_backbone.featurizer.patch_embed.proj.weight,
                           saved["vision_backbone"][name])  # fmt: skip
    with pytest.raises(SystemExit):
        probe.parse_args(["--base-vlm", str(run), "--tokenizer", str(tmp_path)])
    assert "--base-vlm brings its own tokenizer: drop --tokenizer" in capsys.readouterr().err
