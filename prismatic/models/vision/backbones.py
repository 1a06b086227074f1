"""Vision backbones: timm ViTs that return the patch tokens of their second-to-last block.

A backbone is one or two timm featurizers (two = "fused": DINOv2 + SigLIP or DINOv2 + CLIP). Each
featurizer sees its own 3 channels of `pixel_values` ([B, 3 * n_featurizers, H, W], stacked in
featurizer order) and the per-patch features are concatenated along the feature axis.

We never patch timm: `VisionBackbone.forward` calls the public `forward_intermediates` API and stops
after the block it needs. The only surgery is renaming LayerScale's parameter from timm's `gamma`
to `scale_factor` (a child-module swap, same maths), because the official Hugging Face layout of
OpenVLA stores it under that name.

Pretrained weights go through timm's own loader (`pretrained=True` with the state dict handed over), so
timm adapts them exactly as it did for the original (position table resampled to the requested grid,
OpenCLIP / OpenAI key names converted, classifier heads dropped); where the files are found is
`prismatic.models.vision.pretrained`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import timm
import torch
import torch.nn as nn
from timm.layers import LayerScale as TimmLayerScale

from prismatic.util.registry import Registry


@dataclass(frozen=True)
class FeaturizerSpec:
    timm_id: str
    act_layer: str | None = None  # timm `act_layer` override (OpenAI CLIP was trained with quick_gelu)
    force_crop_pct: float | None = None  # override timm's eval crop_pct (SigLIP's would crop 224 px inputs)
    tiny: dict[str, Any] = field(default_factory=lambda: {"depth": 3, "embed_dim": 64, "num_heads": 4})
    # The pretrained weights the original used, as a timm name with its tag, when `timm_id` has none: timm's
    # default tag can change between versions (timm 1.0 made SigLIP 2 the default for SigLIP ids).
    pretrained_tag: str | None = None
    # Older Hub repositories with the same weights (what the original's timm 0.9 downloaded, OpenCLIP format).
    legacy_repos: tuple[str, ...] = ()

    @property
    def weights_name(self) -> str:
        """timm name (with tag) of the pretrained weights, e.g. `vit_so400m_patch14_siglip_224.webli`."""
        return f"{self.timm_id}.{self.pretrained_tag}" if self.pretrained_tag else self.timm_id


class FeaturizerWeights(NamedTuple):
    """A featurizer's pretrained weights: their timm name (with tag) and the file that holds them."""

    name: str
    path: Path


@dataclass(frozen=True)
class VisionBackboneSpec:
    """A registered vision backbone: its featurizers and native image resolution."""

    id: str
    featurizers: tuple[FeaturizerSpec, ...]
    image_size: int
    default_resize_strategy: str = "resize-naive"

    @property
    def timm_model_ids(self) -> list[str]:
        return [f.timm_id for f in self.featurizers]

    @property
    def act_layers(self) -> list[str | None]:
        return [f.act_layer for f in self.featurizers]

    def tiny_kwargs(self) -> list[dict[str, Any]]:
        """Per-featurizer timm overrides for a test-sized model with the same structure."""
        return [dict(f.tiny) for f in self.featurizers]


VISION_BACKBONES: Registry[VisionBackboneSpec] = Registry("vision backbone", flag="vision_backbone_id")

_DINO = FeaturizerSpec("vit_large_patch14_reg4_dinov2.lvd142m")
_SIGLIP_224 = FeaturizerSpec(
    "vit_so400m_patch14_siglip_224", force_crop_pct=1.0, tiny={"depth": 3, "embed_dim": 72, "num_heads": 4},
    pretrained_tag="webli", legacy_repos=("timm/ViT-SO400M-14-SigLIP",),
)  # fmt: skip
_SIGLIP_384 = FeaturizerSpec(
    "vit_so400m_patch14_siglip_384", force_crop_pct=1.0, tiny={"depth": 3, "embed_dim": 72, "num_heads": 4},
    pretrained_tag="webli", legacy_repos=("timm/ViT-SO400M-14-SigLIP-384",),
)  # fmt: skip
_CLIP_224 = FeaturizerSpec("vit_large_patch14_clip_224.openai", act_layer="quick_gelu")
_CLIP_336 = FeaturizerSpec("vit_large_patch14_clip_336.openai", act_layer="quick_gelu")

for _spec in (
    VisionBackboneSpec("dinov2-vit-l", (_DINO,), 224),
    VisionBackboneSpec("siglip-vit-so400m", (_SIGLIP_224,), 224),
    VisionBackboneSpec("siglip-vit-so400m-384px", (_SIGLIP_384,), 384),
    VisionBackboneSpec("clip-vit-l", (_CLIP_224,), 224),
    VisionBackboneSpec("clip-vit-l-336px", (_CLIP_336,), 336),
    VisionBackboneSpec("in1k-vit-l", (FeaturizerSpec("vit_large_patch16_224.augreg_in21k_ft_in1k"),), 224),
    VisionBackboneSpec("dinosiglip-vit-so-224px", (_DINO, _SIGLIP_224), 224),
    VisionBackboneSpec("dinosiglip-vit-so-384px", (_DINO, _SIGLIP_384), 384),
    VisionBackboneSpec("dinoclip-vit-l-336px", (_DINO, _CLIP_336), 336),
):
    VISION_BACKBONES.register(_spec.id, _spec)


class LayerScale(nn.Module):
    """timm's LayerScale with its parameter named `scale_factor` (the OpenVLA HF layout's name)."""

    def __init__(self, dim: int, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace
        self.scale_factor = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(self.scale_factor) if self.inplace else x * self.scale_factor


def _rename_layerscale(model: nn.Module) -> None:
    for name, module in list(model.named_modules()):
        if isinstance(module, TimmLayerScale):
            new = LayerScale(module.gamma.shape[0], inplace=module.inplace).to(module.gamma.device)
            with torch.no_grad():
                if module.gamma.device.type != "meta":
                    new.scale_factor.copy_(module.gamma)
            model.set_submodule(name, new)


class WeightsFileError(ValueError):
    """A pretrained weights file that cannot be read as a state dict."""


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, or a torch file read with `weights_only=True` (no pickle)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors and torch raise several types for truncated or foreign files
        raise WeightsFileError(f"cannot read pretrained weights {path}: {e}; download the file again") from e
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(f"{path} does not hold a state dict (name -> tensor)")
    return state


def create_featurizer(
    timm_id: str,
    image_size: int,
    act_layer: str | None = None,
    overrides: dict[str, Any] | None = None,
    weights: FeaturizerWeights | None = None,
) -> nn.Module:
    """Build one timm ViT: random (weights then come from our checkpoints) or from pretrained `weights`.

    Pretrained weights are handed to timm's own loader under their tagged name, as `create_model(name,
    pretrained=True)` would load them after a download, so they are adapted to `image_size` and the
    overrides exactly as in the original."""
    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0, "img_size": image_size}
    if act_layer is not None:
        kwargs["act_layer"] = act_layer
    kwargs.update(overrides or {})
    name = timm_id
    if weights is not None:
        if weights.name.split(".")[0] != timm_id.split(".")[0]:
            raise ValueError(f"weights {weights.name!r} are for another architecture than {timm_id!r}")
        name = weights.name
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"state_dict": read_weights_file(weights.path)})
    try:
        model = timm.create_model(name, **kwargs)
    except RuntimeError as e:  # timm raises RuntimeError for unknown model names and mismatched weights
        where = f" from {weights.path}" if weights is not None else ""
        raise ValueError(f"timm cannot build {name!r}{where}: {e}") from e
    if weights is not None:  # timm keeps its pretrained cfg (dict) on the model: free the source tensors
        model.pretrained_cfg.pop("state_dict", None)
    _rename_layerscale(model)
    return model


class VisionBackbone(nn.Module):
    """One or two ViT featurizers -> per-patch features [B, num_images x num_patches, embed_dim].

    With several images (cameras), `pixel_values` holds them side by side on the channel axis, each
    3 x featurizers channels; every image goes through every featurizer (as OpenVLA-OFT), and the patch
    sequences follow in image order. Attribute names (`featurizer`, `fused_featurizer`) match the
    official HF layout of OpenVLA.
    """

    def __init__(
        self,
        timm_model_ids: list[str],
        image_sizes: list[int],
        act_layers: list[str | None] | None = None,
        timm_kwargs: list[dict[str, Any]] | None = None,
        feature_block: int = -2,
        weights: list[FeaturizerWeights] | None = None,
        num_images: int = 1,
    ) -> None:
        super().__init__()
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        self.num_images = num_images
        n = len(timm_model_ids)
        if n not in (1, 2):
            raise ValueError(f"a vision backbone has 1 or 2 featurizers, got {n}: {timm_model_ids}")
        act_layers = act_layers or [None] * n
        timm_kwargs = timm_kwargs or [{}] * n
        weights = weights or [None] * n
        for name, value in (("image_sizes", image_sizes), ("act_layers", act_layers), ("timm_kwargs", timm_kwargs),
                            ("weights", weights)):  # fmt: skip
            if len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries but there are {n} featurizers")
        featurizers = [create_featurizer(timm_model_ids[i], image_sizes[i], act_layers[i], timm_kwargs[i], weights[i])
                       for i in range(n)]  # fmt: skip
        self.featurizer = featurizers[0]
        self.fused_featurizer = featurizers[1] if n == 2 else None
        self.feature_block = feature_block
        self.image_size = image_sizes[0]
        grids = {tuple(f.patch_embed.grid_size) for f in self.featurizers}
        if len(grids) != 1:
            raise ValueError(f"fused featurizers must produce the same patch grid, got {sorted(grids)}")

    @property
    def featurizers(self) -> list[nn.Module]:
        return [self.featurizer] + ([self.fused_featurizer] if self.fused_featurizer is not None else [])

    @property
    def embed_dim(self) -> int:
        return sum(f.embed_dim for f in self.featurizers)

    @property
    def num_patches(self) -> int:
        return self.featurizer.patch_embed.num_patches

    @property
    def in_channels(self) -> int:
        """Channels of `pixel_values`: 3 per featurizer, per image."""
        return 3 * len(self.featurizers) * self.num_images

    @torch.no_grad()
    def init_sincos_pos_embed(self) -> None:
        """2-D sine-cosine position embeddings, centred across patches and scaled to unit std, for
        training a backbone from scratch (pretrained backbones do not need this).

        timm initialises `pos_embed` with std 0.02, ~50x weaker than the patch content, so a randomly
        initialised ViT carries almost no "where" in its patch tokens. The raw sine-cosine table has the
        opposite problem: its low-frequency cosines are ~1 on every patch of a small grid, and that
        shared constant dominates each token's norm (LayerNorm, RMSNorm), hiding the content; centring
        removes it (docs/tabletop.md has the measurements)."""
        for vit in self.featurizers:
            h, w = vit.patch_embed.grid_size
            dim = vit.pos_embed.shape[-1]
            quarter = dim // 4
            omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / max(1, quarter)))
            ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
            out = [torch.sin(ys.reshape(-1, 1) * omega), torch.cos(ys.reshape(-1, 1) * omega),
                   torch.sin(xs.reshape(-1, 1) * omega), torch.cos(xs.reshape(-1, 1) * omega)]  # fmt: skip
            table = torch.cat(out, dim=1)
            table = table - table.mean(dim=0)
            table = table / table.std()
            table = torch.nn.functional.pad(table, (0, dim - table.shape[1]))  # [h * w, dim]
            extra = vit.pos_embed.shape[1] - h * w  # class/register tokens that carry a position row
            vit.pos_embed.zero_()
            vit.pos_embed[0, extra:] = table.to(vit.pos_embed.dtype)

    def _feature_index(self, vit: nn.Module) -> int:
        return len(vit.blocks) + self.feature_block if self.feature_block < 0 else self.feature_block

    def unused_modules(self) -> list[nn.Module]:
        """Modules the forward never runs (blocks after the feature block, final norm, pooling head).

        They stay in the state dict (checkpoint compatibility) but get no gradient, so training freezes them.
        """
        out = []
        for vit in self.featurizers:
            out += list(vit.blocks[self._feature_index(vit) + 1 :])
            out += [m for name in ("norm", "fc_norm", "attn_pool", "head") if isinstance(m := getattr(vit, name, None), nn.Module)]
        return out

    def _features(self, vit: nn.Module, images: torch.Tensor) -> torch.Tensor:
        (patches,) = vit.forward_intermediates(
            images, indices=[self._feature_index(vit)], norm=False, stop_early=True, output_fmt="NLC", intermediates_only=True
        )
        return patches  # [B, num_patches, dim] (prefix tokens dropped)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        expected = (self.in_channels, self.image_size, self.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape [batch, {expected[0]}, {expected[1]}, {expected[2]}] "
                f"({self.num_images} image(s) x {len(self.featurizers)} featurizer(s) x 3 channels at {self.image_size} px), "
                f"got {list(pixel_values.shape)}; build it with the model's image processor / SampleEncoder"
            )
        b, size = pixel_values.shape[0], self.image_size
        per_image = 3 * len(self.featurizers)
        # [B, images x C, H, W] -> [B x images, C, H, W]: all images through each ViT in one batch.
        images = pixel_values.reshape(b * self.num_images, per_image, size, size)
        chunks = images.split(3, dim=1)
        feats = torch.cat([self._features(vit, x) for vit, x in zip(self.featurizers, chunks)], dim=-1)
        return feats.reshape(b, self.num_images * feats.shape[1], feats.shape[2])


def featurizer_preprocess(spec: VisionBackboneSpec, strategy: str, image_size: int | None = None):
    """The per-featurizer preprocessing of a registered backbone (timm's mean/std/interpolation)."""
    from prismatic.models.vision.transforms import FeaturizerPreprocess

    size = image_size or spec.image_size
    out = []
    for f in spec.featurizers:
        cfg = timm.models.get_pretrained_cfg(f.weights_name)
        if cfg is None:
            raise ValueError(f"timm has no pretrained config for {f.weights_name!r}")
        crop_pct = f.force_crop_pct if f.force_crop_pct is not None else (cfg.crop_pct or 1.0)
        out.append(
            FeaturizerPreprocess.for_strategy(strategy, size, cfg.mean, cfg.std, cfg.interpolation, crop_pct)
        )
    return out
