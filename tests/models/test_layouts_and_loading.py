from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from prismatic.models.load import CheckpointError, load_vla

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "assets" / "openvla-tiny"


def _hf_tensors(d: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _run(script: str, *args: str) -> None:
    subprocess.run([sys.executable, str(REPO / "vla-scripts" / "extern" / script), *args], check=True, cwd=REPO,
                   capture_output=True, text=True)  # fmt: skip


def test_round_trip_hf_native_hf_is_bit_identical(tiny_checkpoint, tmp_path):
    _run("convert_hf_to_native.py", "--hf_dir", str(tiny_checkpoint), "--out_dir", str(tmp_path / "native"))
    native = tmp_path / "native"
    assert (native / "checkpoints" / "latest-checkpoint.pt").is_file()
    assert json.loads((native / "dataset_statistics.json").read_text()).keys() == {"bridge_orig", "toy_pick_place"}
    state = torch.load(native / "checkpoints" / "latest-checkpoint.pt", weights_only=True)["model"]
    assert "dino_featurizer.blocks.0.ls1.gamma" in state["vision_backbone"] and "projector.0.weight" in state["projector"]

    _run("convert_native_to_hf.py", "--run_dir", str(native), "--out_dir", str(tmp_path / "hf"), "--max_shard_size", "8MB")
    original, back = _hf_tensors(tiny_checkpoint), _hf_tensors(tmp_path / "hf")
    assert original.keys() == back.keys()
    for k in original:
        assert original[k].dtype == back[k].dtype and torch.equal(original[k], back[k]), k
    assert len(list((tmp_path / "hf").glob("model-*-of-*.safetensors"))) > 1  # sharded like the official repo
    cfg_a = json.loads((tiny_checkpoint / "config.json").read_text())
    cfg_b = json.loads((tmp_path / "hf" / "config.json").read_text())
    for key in ("norm_stats", "text_config", "timm_model_ids", "timm_model_kwargs", "vision_backbone_id",
                "llm_backbone_id", "arch_specifier", "image_resize_strategy", "n_action_bins", "pad_to_multiple_of"):
        a, b = cfg_a[key], cfg_b[key]
        if key == "text_config":
            a = {k: v for k, v in a.items() if k in ("hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size")}
            b = {k: v for k, v in b.items() if k in a}
        assert a == b, key
    assert "auto_map" not in cfg_b  # we ship no remote code, so we point at none
    pre_a = json.loads((tiny_checkpoint / "preprocessor_config.json").read_text())
    pre_b = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    for key in ("tvf_resize_params", "tvf_crop_params", "input_sizes", "image_resize_strategy"):
        assert pre_a[key] == pre_b[key], key
    for key in ("means", "stds"):  # same values in float32 (the original wrote float32 reprs)
        np.testing.assert_array_equal(np.float32(pre_a[key]), np.float32(pre_b[key]))
    for a, b in zip(pre_a["tvf_normalize_params"], pre_b["tvf_normalize_params"]):
        np.testing.assert_array_equal(np.float32(a["mean"]), np.float32(b["mean"]))
        np.testing.assert_array_equal(np.float32(a["std"]), np.float32(b["std"]))


def test_native_run_dir_predicts_like_hf(tiny_vla, reference, tmp_path):
    tiny_vla.save_native(tmp_path / "run")
    native = load_vla(tmp_path / "run")
    case = reference["cases"][1]
    img = Image.open(TINY / case["image"])
    np.testing.assert_allclose(native.predict_action(img, case["instruction"], unnorm_key=case["unnorm_key"]), case["action"],
                               atol=1e-6)  # fmt: skip
    # a .pt path inside checkpoints/ works too
    assert load_vla(tmp_path / "run" / "checkpoints" / "latest-checkpoint.pt").config.vision_backbone_id == "dinosiglip-vit-so-224px"


def test_unnorm_key_errors_list_available(tiny_vla, reference):
    img = Image.open(TINY / reference["cases"][0]["image"])
    with pytest.raises(KeyError, match="'bridge' is not in .* available: bridge_orig, toy_pick_place"):
        tiny_vla.predict_action(img, "x", unnorm_key="bridge")
    with pytest.raises(KeyError, match="trained on 2 datasets; pass unnorm_key.*bridge_orig, toy_pick_place"):
        tiny_vla.predict_action(img, "x")


@pytest.mark.parametrize(
    "remove, message",
    [
        ("model-00003-of-00004.safetensors", "missing: model-00003-of-00004.safetensors"),
        ("preprocessor_config.json", "missing: preprocessor_config.json"),
        ("tokenizer.json", "missing: tokenizer.json or tokenizer.model"),
        ("config.json", "neither a Hugging Face-layout directory"),
    ],
)
def test_incomplete_hf_dir_names_missing_file(tiny_checkpoint, tmp_path, remove, message):
    d = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, d)
    (d / remove).unlink()
    with pytest.raises(CheckpointError, match=message):
        load_vla(d)


def test_native_dir_errors(tiny_vla, tmp_path):
    run = tiny_vla.save_native(tmp_path / "run")
    (run / "dataset_statistics.json").unlink()
    with pytest.raises(CheckpointError, match="no dataset_statistics.json"):
        load_vla(run)
    run = tiny_vla.save_native(tmp_path / "run2")
    shutil.rmtree(run / "tokenizer")
    with pytest.raises(CheckpointError, match=r"no tokenizer for .*\(pass tokenizer="):
        load_vla(run)
    state = torch.load(run / "checkpoints" / "latest-checkpoint.pt", weights_only=True)
    del state["model"]["projector"]["projector.4.weight"]
    torch.save(state, run / "checkpoints" / "latest-checkpoint.pt")
    with pytest.raises(CheckpointError, match="missing projector.fc3.weight"):
        load_vla(run, tokenizer=TINY / "checkpoint")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vla(tmp_path / "nope")


def test_random_build_on_device_matches_the_architecture(tiny_checkpoint):
    from prismatic.models.configuration import OpenVLAConfig
    from prismatic.models.load import build_random_on_device

    config = OpenVLAConfig.from_pretrained(tiny_checkpoint)
    model = build_random_on_device(config, "cpu", torch.float32)
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    rotary = next(m for m in model.modules() if hasattr(m, "inv_freq"))
    assert torch.isfinite(rotary.inv_freq).all() and rotary.inv_freq[0] == 1.0
    ids = torch.tensor([[1, 512, 29901, 3744, 29901]])
    out = model(input_ids=ids, pixel_values=torch.zeros(1, 6, 224, 224))
    assert out.logits.shape == (1, 5 + model.num_patches, 32064) and torch.isfinite(out.logits).all()


@pytest.mark.parametrize("projector", ["fused-gelu-mlp", "gelu-mlp", "linear"])
def test_native_projector_keys_are_the_originals_and_older_ones_still_read(projector):
    """The original saves `vlm.projector.state_dict()`: its nn.Sequential / nn.Linear sits under the module's
    `projector` attribute (`projector.0.weight`, `projector.weight`). Keys without it (what this project
    wrote before) map to the same tensors."""
    from prismatic.models.layouts import hf_to_native, native_to_hf

    fcs = {"linear": ["fc1"], "gelu-mlp": ["fc1", "fc2"], "fused-gelu-mlp": ["fc1", "fc2", "fc3"]}[projector]
    hf = {f"projector.{fc}.{p}": torch.randn(3) for fc in fcs for p in ("weight", "bias")}
    native = hf_to_native(hf, "siglip-vit-so400m", projector)
    expected = {"linear": {"projector.weight", "projector.bias"}}.get(
        projector, {f"projector.{i}.{p}" for i in ("0", "2", "4")[: len(fcs)] for p in ("weight", "bias")})  # fmt: skip
    assert set(native["projector"]) == expected
    older = {k.removeprefix("projector."): v for k, v in native["projector"].items()}
    for state in (native["projector"], older):
        back = native_to_hf({"vision_backbone": {}, "projector": state, "llm_backbone": {}}, "siglip-vit-so400m", projector)
        assert back.keys() == hf.keys() and all(back[k] is hf[k] for k in hf)


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        # was: a bare SafetensorError naming no file
        (lambda d: d.joinpath("model-00002-of-00004.safetensors").write_bytes(
            d.joinpath("model-00002-of-00004.safetensors").read_bytes()[:-1000]),
         r"model-00002-of-00004.safetensors is incomplete: \d+ bytes where its header describes \d+"),
        (lambda d: d.joinpath("model-00004-of-00004.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"),
         r"model-00004-of-00004.safetensors is incomplete or not a safetensors file"),
        # was: transformers' "do you wish to run the custom code? [y/N]" prompt
        (lambda d: _edit_json(d / "config.json", lambda c: c.pop("model_type")),
         r"config.json has no 'model_type'; prismatic loads model_type one of: openvla, prismatic"),
        (lambda d: _edit_json(d / "config.json", lambda c: c.update(model_type="llava")),
         r"config.json has model_type 'llava'"),
        # was: a string loaded as six one-letter datasets
        (lambda d: _edit_json(d / "config.json", lambda c: c.update(norm_stats="bridge")),
         r"config.json norm_stats is a str, not a mapping of dataset name -> statistics"),
        (lambda d: _edit_json(d / "config.json", lambda c: c.update(norm_stats={"bridge_orig": [0.1, 0.2]})),
         r"norm_stats\['bridge_orig'\] has no action statistics"),
        (lambda d: d.joinpath("config.json").write_text('{"model_type": "openvla",'), r"config.json is not valid JSON"),
    ],
)  # fmt: skip
def test_damaged_hf_checkpoint_is_refused_by_name(damage, message, tiny_checkpoint, tmp_path):
    d = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, d)
    damage(d)
    with pytest.raises(CheckpointError, match=message):
        load_vla(d)


def test_native_statistics_must_be_a_mapping(tiny_vla, tmp_path):
    run = tiny_vla.save_native(tmp_path / "run")
    (run / "dataset_statistics.json").write_text('"bridge_orig"')
    with pytest.raises(CheckpointError, match=r"dataset_statistics.json is a str, not a mapping"):
        load_vla(run)
