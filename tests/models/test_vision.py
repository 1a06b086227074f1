from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from prismatic.models.vision.backbones import VISION_BACKBONES, VisionBackbone, featurizer_preprocess
from prismatic.models.vision.transforms import (
    RESIZE_STRATEGIES,
    FeaturizerPreprocess,
    ImageTransform,
    letterbox,
)


@pytest.mark.parametrize("backbone_id", VISION_BACKBONES.names())
def test_every_backbone_builds_tiny_and_returns_patch_tokens(backbone_id):
    spec = VISION_BACKBONES.get(backbone_id)
    n = len(spec.featurizers)
    vb = VisionBackbone(spec.timm_model_ids, [spec.image_size] * n, spec.act_layers, spec.tiny_kwargs())
    patch = vb.featurizer.patch_embed.patch_size[0]
    grid = spec.image_size // patch
    with torch.no_grad():
        out = vb(torch.randn(2, 3 * n, spec.image_size, spec.image_size))
    assert out.shape == (2, grid * grid, vb.embed_dim) == (2, vb.num_patches, sum(k["embed_dim"] for k in spec.tiny_kwargs()))


def test_features_are_second_to_last_block_without_norm():
    spec = VISION_BACKBONES.get("dinov2-vit-l")
    vb = VisionBackbone(spec.timm_model_ids, [224], spec.act_layers, spec.tiny_kwargs()).eval()
    vit = vb.featurizer
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        h = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        for block in vit.blocks[:-1]:  # all but the last block
            h = block(h)
        expected = h[:, vit.num_prefix_tokens :]  # drop CLS + 4 registers
        assert torch.equal(vb(x), expected)  # the same operations on the same shapes: bit-identical


def test_layerscale_is_stored_as_scale_factor():
    spec = VISION_BACKBONES.get("dinov2-vit-l")
    vb = VisionBackbone(spec.timm_model_ids, [224], spec.act_layers, spec.tiny_kwargs())
    keys = list(vb.state_dict())
    assert "featurizer.blocks.0.ls1.scale_factor" in keys and not any(k.endswith(".gamma") for k in keys)


def test_wrong_pixel_values_shape_names_expected():
    spec = VISION_BACKBONES.get("dinosiglip-vit-so-224px")
    vb = VisionBackbone(spec.timm_model_ids, [224, 224], spec.act_layers, spec.tiny_kwargs())
    with pytest.raises(ValueError, match=r"\[batch, 6, 224, 224\].*got \[1, 3, 224, 224\]"):
        vb(torch.randn(1, 3, 224, 224))


def test_unknown_backbone_lists_choices():
    with pytest.raises(KeyError, match="dinosiglip-vit-so-224px"):
        VISION_BACKBONES.get("dinosiglip-vit-huge")


@pytest.mark.parametrize("strategy", RESIZE_STRATEGIES)
def test_strategies_produce_square_normalised_tensors(strategy):
    spec = VISION_BACKBONES.get("dinosiglip-vit-so-224px")
    transform = ImageTransform(featurizer_preprocess(spec, strategy))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 300, 3), dtype=np.uint8))
    out = transform(img)
    assert out.shape == (6, 224, 224) and out.dtype == torch.float32


def test_resize_naive_equals_direct_bicubic_resize():
    p = FeaturizerPreprocess.for_strategy("resize-naive", 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8))
    expected = (np.asarray(img.resize((224, 224), Image.BICUBIC), np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(ImageTransform([p])(img).permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_letterbox_pads_with_mean_colour():
    img = Image.new("RGB", (100, 50), (255, 0, 0))
    boxed = letterbox(img, (124, 116, 104))
    assert boxed.size == (100, 100)
    assert boxed.getpixel((50, 5)) == (124, 116, 104) and boxed.getpixel((50, 50)) == (255, 0, 0)
    p = FeaturizerPreprocess.for_strategy("letterbox", 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert p.letterbox_fill == (123, 116, 103)


def test_grayscale_rgba_and_arrays_are_accepted():
    p = FeaturizerPreprocess.for_strategy("resize-naive", 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    t = ImageTransform([p])
    rgb = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    ref = t(Image.fromarray(rgb))
    torch.testing.assert_close(t(rgb), ref)
    torch.testing.assert_close(t(Image.fromarray(rgb).convert("RGBA")), ref)
    torch.testing.assert_close(t(rgb.astype(np.float32) / 255.0), ref)
    torch.testing.assert_close(t(torch.from_numpy(rgb).permute(2, 0, 1)), ref)
    gray = t(Image.fromarray(rgb[..., 0]))
    assert gray.shape == (3, 32, 32) and torch.equal(gray[0], gray[1])
    with pytest.raises(ValueError, match="HxW"):
        t(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(TypeError, match="PIL image"):
        t("image.png")


@pytest.mark.parametrize("backbone_id", ["siglip-vit-so400m", "dinov2-vit-l"])
def test_sincos_position_table_is_centred_with_unit_std(backbone_id):
    """From-scratch init: no constant shared by all patches (it would dominate every token's norm)."""
    spec = VISION_BACKBONES.get(backbone_id)
    vb = VisionBackbone(spec.timm_model_ids, [84], spec.act_layers, spec.tiny_kwargs())
    vb.init_sincos_pos_embed()
    vit = vb.featurizer
    h, w = vit.patch_embed.grid_size
    table = vit.pos_embed.detach()[0, -h * w :]
    assert torch.all(vit.pos_embed.detach()[0, : -h * w] == 0)  # class / register rows carry no position
    np.testing.assert_allclose(table.mean(dim=0).numpy(), 0.0, atol=1e-5)
    assert table.std().item() == pytest.approx(1.0, abs=1e-4)
    # every patch has its own row, and neighbours are closer than far-apart patches
    assert torch.cdist(table, table).add(torch.eye(h * w) * 1e3).min() > 0.1
    assert torch.dist(table[0], table[1]) < torch.dist(table[0], table[h * w - 1])
