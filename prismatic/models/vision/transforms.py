"""Image preprocessing: PIL image -> `pixel_values` [3 * n_featurizers, S, S] (featurizer order).

Each featurizer gets: optional letterbox padding -> resize -> centre crop -> [0, 1] -> normalise.
The three resize strategies of the original:
- `resize-naive`: resize straight to S x S (aspect ratio not kept; OpenVLA's choice),
- `resize-crop`: resize the shorter side (to S / crop_pct) and centre-crop S x S (timm's eval transform),
- `letterbox`: pad to a square with the normalisation mean, then as `resize-crop`.

The parameters are plain data (`FeaturizerPreprocess`) so the Hugging Face `preprocessor_config.json`
(`tvf_resize_params`, `tvf_crop_params`, `tvf_normalize_params`, ...) maps onto them one to one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

RESIZE_STRATEGIES = ("resize-naive", "resize-crop", "letterbox")

# PIL's resampling codes (what `interpolation` holds in preprocessor_config.json).
_INTERPOLATIONS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def interpolation_code(name_or_code: str | int) -> int:
    if isinstance(name_or_code, int):
        return name_or_code
    try:
        return _INTERPOLATIONS[name_or_code.lower()]
    except KeyError:
        raise ValueError(f"unknown interpolation {name_or_code!r}; choose one of {sorted(_INTERPOLATIONS)}") from None


@dataclass(frozen=True)
class FeaturizerPreprocess:
    """How one featurizer's 3 channels are made from the image."""

    resize: tuple[int, int] | int  # (h, w) exact size, or an int: the shorter side's length
    crop: tuple[int, int]  # centre crop (h, w)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: int = 3  # PIL code; 3 = bicubic (with PIL's built-in antialiasing)
    letterbox_fill: tuple[int, int, int] | None = None  # pad to square with this RGB colour first

    @classmethod
    def for_strategy(
        cls,
        strategy: str,
        image_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        interpolation: str | int = "bicubic",
        crop_pct: float = 1.0,
    ) -> FeaturizerPreprocess:
        if strategy not in RESIZE_STRATEGIES:
            raise ValueError(
                f"unknown image_resize_strategy {strategy!r}; choose one of: {', '.join(RESIZE_STRATEGIES)}"
            )
        interp = interpolation_code(interpolation)
        crop = (image_size, image_size)
        if strategy == "resize-naive":
            return cls((image_size, image_size), crop, tuple(mean), tuple(std), interp)
        shorter = math.floor(image_size / crop_pct)
        fill = tuple(int(m * 255) for m in mean) if strategy == "letterbox" else None
        return cls(shorter, crop, tuple(mean), tuple(std), interp, fill)


def letterbox(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad to (nearly) square, centred, as the original's LetterboxPad (odd remainders are cropped later)."""
    w, h = image.size
    side = max(w, h)
    pad_w, pad_h = (side - w) // 2, (side - h) // 2
    if pad_w == 0 and pad_h == 0:
        return image
    canvas = Image.new("RGB", (w + 2 * pad_w, h + 2 * pad_h), fill)
    canvas.paste(image, (pad_w, pad_h))
    return canvas


def _resize(image: Image.Image, size: tuple[int, int] | int, interpolation: int) -> Image.Image:
    w, h = image.size
    if isinstance(size, int):  # shorter side -> size, keep aspect ratio (torchvision's rule)
        if w <= h:
            new_w, new_h = size, int(size * h / w)
        else:
            new_w, new_h = int(size * w / h), size
    else:
        new_h, new_w = size
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), resample=interpolation)


def _center_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    ch, cw = size
    w, h = image.size
    if (w, h) == (cw, ch):
        return image
    if cw > w or ch > h:  # pad (black) like torchvision's center_crop, then crop
        canvas = Image.new("RGB", (max(w, cw), max(h, ch)))
        canvas.paste(image, ((max(w, cw) - w) // 2, (max(h, ch) - h) // 2))
        image, (w, h) = canvas, canvas.size
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return image.crop((left, top, left + cw, top + ch))


def to_pil_rgb(image) -> Image.Image:
    """Accept PIL images of any mode, HxW / HxWxC uint8 or float arrays, and CHW torch tensors."""
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"the image is empty ({image.width}x{image.height} pixels)")
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
            image = np.moveaxis(image, 0, -1)
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise ValueError(
                f"an image array must be HxW (grayscale), HxWx3 (RGB) or HxWx4 (RGBA); got shape {array.shape}"
            )
        if array.size == 0:
            raise ValueError(f"the image is empty (shape {array.shape})")
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            bad = int(array.size - np.isfinite(array).sum())
            raise ValueError(
                f"the image has {bad} NaN or infinite value(s) (shape {array.shape}); fix the camera frame or its "
                "conversion (they would silently become 0)"
            )
        if array.dtype != np.uint8:
            if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0 + 1e-6:
                array = array * 255.0  # floats in [0, 1]
            array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    raise TypeError(f"expected a PIL image, numpy array or torch tensor, got {type(image).__name__}")


class ImageTransform:
    """PIL image (or array) -> float32 tensor [3 * len(featurizers), H, W]."""

    def __init__(self, featurizers: list[FeaturizerPreprocess]) -> None:
        if not featurizers:
            raise ValueError("an ImageTransform needs at least one featurizer")
        self.featurizers = list(featurizers)

    def _one(self, image: Image.Image, p: FeaturizerPreprocess) -> torch.Tensor:
        if p.letterbox_fill is not None:
            image = letterbox(image, p.letterbox_fill)
        image = _center_crop(_resize(image, p.resize, p.interpolation), p.crop)
        array = np.asarray(image, dtype=np.float32) / 255.0
        mean, std = np.asarray(p.mean, np.float32), np.asarray(p.std, np.float32)
        return torch.from_numpy(((array - mean) / std).transpose(2, 0, 1).copy())

    def __call__(self, image) -> torch.Tensor:
        image = to_pil_rgb(image)
        return torch.cat([self._one(image, p) for p in self.featurizers], dim=0)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.featurizers[0].crop
