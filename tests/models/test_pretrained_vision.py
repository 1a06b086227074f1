"""Pretrained timm weights: files in timm's own format (the test writes them, tiny) load through our path
and give exactly the features of the same file loaded by timm directly, as the original loaded it
(`create_model(..., pretrained=True)` + `get_intermediate_layers(n={depth - 2})`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import constants as hf_constants
from safetensors.torch import load_file

from prismatic.models.configuration import PrismaticConfig
from prismatic.models.vision.backbones import VISION_BACKBONES, VisionBackbone
from prismatic.models.vision.pretrained import (
    MissingVisionWeightsError,
    find_vision_weights,
    pretrained_vision_state,
    vision_weights_problems,
)

# backbone, native resolution of the written file, resolution the model asks for (patch 14: grids differ,
# so timm's position-table resampling is part of what must match)
FAMILIES = {
    "dinov2-vit-l": (98, 56),  # DINOv2 ViT-L/14 reg4: register tokens, LayerScale
    "siglip-vit-so400m": (56, 42),  # SigLIP So400m/14: attention-pool head, no class token
    "clip-vit-l": (56, 42),  # OpenAI CLIP ViT-L/14: pre-norm, quick_gelu, a projection head to drop
}


def _timm_features(name: str, file: Path, size: int, act_layer, tiny: dict, x: torch.Tensor) -> torch.Tensor:
    """The original's way: timm loads the file, features are the second-to-last block's patch tokens."""
    kwargs = {"act_layer": act_layer} if act_layer else {}
    vit = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, num_classes=0,
                            img_size=size, **kwargs, **tiny).eval()  # fmt: skip
    with torch.no_grad():
        return vit.get_intermediate_layers(x, n={len(vit.blocks) - 2})[0]


def _our_backbone(backbone_id: str, size: int, location: Path | None, cache_dir: Path | None = None) -> VisionBackbone:
    """Through the base-VLM path: the config's pretrained vision state loaded into a freshly built backbone."""
    spec = VISION_BACKBONES.get(backbone_id)
    config = PrismaticConfig(vision_backbone_id=backbone_id, image_sizes=[size] * len(spec.featurizers),
                             timm_model_kwargs=spec.tiny_kwargs())  # fmt: skip
    state = pretrained_vision_state(config, location, cache_dir)
    backbone = VisionBackbone(config.timm_model_ids, config.image_sizes, config.timm_override_act_layers,
                              config.timm_model_kwargs)  # fmt: skip
    backbone.load_state_dict({k.removeprefix("vision_backbone."): v for k, v in state.items()}, strict=True)
    return backbone.eval()


def _cache_entry(cache: Path, repo: str, filename: str) -> Path:
    """Where huggingface_hub keeps a downloaded file: models--org--name/snapshots/<revision>/<file>."""
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    return base / "snapshots" / "0123456789abcdef0123456789abcdef01234567" / filename


@pytest.mark.parametrize("backbone_id", list(FAMILIES))
@pytest.mark.parametrize("layout", ["model-dir", "flat-file", "hub-cache"])
def test_timm_format_weights_give_timms_features(backbone_id, layout, tmp_path, write_timm_weights):
    native, size = FAMILIES[backbone_id]
    (featurizer,) = VISION_BACKBONES.get(backbone_id).featurizers
    name, tiny = featurizer.weights_name, dict(featurizer.tiny)
    path = {
        "model-dir": tmp_path / name / "model.safetensors",  # huggingface-cli download timm/NAME --local-dir DIR/NAME
        "flat-file": tmp_path / f"{name}.safetensors",
        "hub-cache": _cache_entry(tmp_path, f"timm/{name}", "model.safetensors"),
    }[layout]
    write_timm_weights(path, name, tiny, native, seed=1)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    ours = _our_backbone(backbone_id, size, tmp_path)
    with torch.no_grad():
        got = ours(x)
    expected = _timm_features(name, path, size, featurizer.act_layer, tiny, x)
    assert got.shape == (2, (size // 14) ** 2, tiny["embed_dim"])
    assert torch.equal(got, expected)  # same weights, same maths: bit-identical
    written = load_file(str(path))
    for key, tensor in written.items():  # every tensor the model keeps came from the file
        ours_key = key.replace(".gamma", ".scale_factor")
        if key in ("pos_embed", "head.weight", "head.bias"):
            continue  # resampled to the new grid / classifier head dropped, by timm
        assert torch.equal(ours.featurizer.state_dict()[ours_key], tensor), key
    if "dinov2" in name:
        assert torch.equal(ours.featurizer.blocks[0].ls1.scale_factor, written["blocks.0.ls1.gamma"])


def test_fused_backbone_reads_both_featurizers_from_the_hf_cache(tmp_path, monkeypatch, write_timm_weights):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    spec = VISION_BACKBONES.get("dinosiglip-vit-so-224px")
    files = []
    for i, featurizer in enumerate(spec.featurizers):
        path = _cache_entry(tmp_path, f"timm/{featurizer.weights_name}", "model.safetensors")
        files.append(write_timm_weights(path, featurizer.weights_name, dict(featurizer.tiny), 56, seed=i))
    x = torch.randn(1, 6, 42, 42, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = _our_backbone("dinosiglip-vit-so-224px", 42, None, cache_dir=tmp_path)(x)
    parts = [_timm_features(f.weights_name, p, 42, f.act_layer, dict(f.tiny), c)
             for f, p, c in zip(spec.featurizers, files, x.split(3, dim=1))]  # fmt: skip
    assert torch.equal(got, torch.cat(parts, dim=-1))


def test_siglip_loads_the_originals_weights_from_an_openclip_file(tmp_path, monkeypatch, write_timm_weights):
    """What timm 0.9 (the original's) downloaded and cached: timm/ViT-SO400M-14-SigLIP, OpenCLIP keys."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    (featurizer,) = VISION_BACKBONES.get("siglip-vit-so400m").featurizers
    timm_file = write_timm_weights(tmp_path / "timm.safetensors", featurizer.weights_name, dict(featurizer.tiny), 56, 3)
    openclip = {f"visual.trunk.{k}": v for k, v in load_file(str(timm_file)).items()}
    openclip["text.token_embedding.weight"] = torch.zeros(8, 4)  # the text tower is ignored
    cache = tmp_path / "cache"
    path = _cache_entry(cache, "timm/ViT-SO400M-14-SigLIP", "open_clip_pytorch_model.bin")
    path.parent.mkdir(parents=True)
    torch.save(openclip, path)
    x = torch.randn(1, 3, 42, 42, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = _our_backbone("siglip-vit-so400m", 42, None, cache_dir=cache)(x)
    assert torch.equal(got, _timm_features(featurizer.weights_name, timm_file, 42, None, dict(featurizer.tiny), x))


def test_pretrained_weights_are_the_originals_not_timms_current_defaults():
    """timm 1.0 made SigLIP 2 the default tag of `vit_so400m_patch14_siglip_224`; the original (timm 0.9.10)
    had only the WebLI SigLIP weights, so the tag is pinned."""
    names = {f.timm_id: f.weights_name for s in VISION_BACKBONES.names() for f in VISION_BACKBONES.get(s).featurizers}
    assert names == {
        "vit_large_patch14_reg4_dinov2.lvd142m": "vit_large_patch14_reg4_dinov2.lvd142m",
        "vit_so400m_patch14_siglip_224": "vit_so400m_patch14_siglip_224.webli",
        "vit_so400m_patch14_siglip_384": "vit_so400m_patch14_siglip_384.webli",
        "vit_large_patch14_clip_224.openai": "vit_large_patch14_clip_224.openai",
        "vit_large_patch14_clip_336.openai": "vit_large_patch14_clip_336.openai",
        "vit_large_patch16_224.augreg_in21k_ft_in1k": "vit_large_patch16_224.augreg_in21k_ft_in1k",
    }


def test_missing_weights_name_the_file_its_url_and_where_to_put_it(tmp_path, monkeypatch, write_timm_weights):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    empty = tmp_path / "weights"
    empty.mkdir()
    problems = vision_weights_problems("dinosiglip-vit-so-224px", empty)
    assert len(problems) == 2  # both featurizers, each with its own instructions
    dino, siglip = problems
    assert "https://huggingface.co/timm/vit_large_patch14_reg4_dinov2.lvd142m" in dino
    assert f"{empty}/vit_large_patch14_reg4_dinov2.lvd142m" in dino and "model.safetensors" in dino
    assert "https://huggingface.co/timm/vit_so400m_patch14_siglip_224.webli" in siglip
    with pytest.raises(MissingVisionWeightsError, match=r"huggingface-cli download timm/vit_large_patch14_reg4"):
        find_vision_weights("dinosiglip-vit-so-224px", empty)
    # nothing named, nothing cached, offline: the cache is named and the flag offered
    (problem,) = vision_weights_problems("dinov2-vit-l", cache_dir=tmp_path / "empty-cache")
    assert "empty-cache" in problem and "--vla.vision_weights DIR" in problem
    # one file cannot feed two featurizers
    lone = write_timm_weights(tmp_path / "one.safetensors", "vit_large_patch14_reg4_dinov2.lvd142m",
                              {"depth": 3, "embed_dim": 64, "num_heads": 4}, 56, 0)  # fmt: skip
    (problem,) = vision_weights_problems("dinosiglip-vit-so-224px", lone)
    assert "one file but dinosiglip-vit-so-224px has 2 featurizers" in problem
    assert vision_weights_problems("dinov2-vit-l", lone) == []


def test_unreadable_or_mismatched_weights_fail_with_the_file_named(tmp_path, write_timm_weights):
    (featurizer,) = VISION_BACKBONES.get("dinov2-vit-l").featurizers
    bad = tmp_path / f"{featurizer.weights_name}.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=f"cannot read pretrained weights {bad}"):
        _our_backbone("dinov2-vit-l", 56, tmp_path)
    # weights of another size: timm's strict load fails, and the file is named
    write_timm_weights(bad, featurizer.weights_name, {"depth": 3, "embed_dim": 32, "num_heads": 4}, 56, 0)
    with pytest.raises(ValueError, match=f"from {bad}"):
        _our_backbone("dinov2-vit-l", 56, tmp_path)


def test_online_weights_are_downloaded_once_and_a_dead_network_fails_fast(tmp_path, monkeypatch, write_timm_weights):
    """Online and not cached: the Hub is asked for timm's file names in order (the Hub itself is replaced by
    a stub here); without a connection the first failure ends the search with the error in the message."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    from prismatic.models.vision import pretrained

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    (featurizer,) = VISION_BACKBONES.get("siglip-vit-so400m").featurizers
    served = write_timm_weights(tmp_path / "served.safetensors", featurizer.weights_name, dict(featurizer.tiny), 56, 0)
    asked = []

    def hub(repo, filename, cache_dir=None):
        asked.append((repo, filename))
        if (repo, filename) != ("timm/ViT-SO400M-14-SigLIP", "open_clip_model.safetensors"):
            raise EntryNotFoundError(f"{filename} is not in {repo}")
        return str(served)

    monkeypatch.setattr(pretrained, "hf_hub_download", hub)
    assert vision_weights_problems("siglip-vit-so400m", cache_dir=tmp_path / "cache") == []  # will download
    (weights,) = find_vision_weights("siglip-vit-so400m", cache_dir=tmp_path / "cache")
    assert weights.path == served and len(asked) == 7  # 4 names in timm's repository, then the legacy one
    asked.clear()

    def offline_hub(repo, filename, cache_dir=None):
        asked.append(filename)
        raise LocalEntryNotFoundError("cannot reach the Hub")

    monkeypatch.setattr(pretrained, "hf_hub_download", offline_hub)
    with pytest.raises(MissingVisionWeightsError, match=r"failed: LocalEntryNotFoundError: cannot reach the Hub\): download"):
        find_vision_weights("siglip-vit-so400m", cache_dir=tmp_path / "cache")
    assert asked == ["model.safetensors"]
