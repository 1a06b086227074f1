"""Training-time image augmentation, with OpenVLA's parameters and order.

Semantics kept from the original (dlimp's `augment_image`, in the version OpenVLA pins): the image is
converted to float in [0, 1] once; before each op a fresh seed is derived from the previous one
(`op_seeds`), so the five ops draw independently of each other (crop position, brightness, contrast,
saturation and hue are uncorrelated across frames); each op is TF's stateless op with that seed (its draw is
`op_params`); the result is clipped to [0, 1] after each op and converted back to uint8 with saturation at
the end. Deterministic given the frame's seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf

from prismatic.data.errors import DataError

AUGMENT_OPS = (
    "random_resized_crop",
    "random_brightness",
    "random_contrast",
    "random_saturation",
    "random_hue",
)


@dataclass(frozen=True)
class AugmentConfig:
    """Which ops to run (in `order`) and their parameters; the defaults are OpenVLA's `image_aug=True`."""

    crop_scale: tuple[float, float] = (0.9, 0.9)
    crop_ratio: tuple[float, float] = (1.0, 1.0)
    brightness: float = 0.2
    contrast: tuple[float, float] = (0.8, 1.2)
    saturation: tuple[float, float] = (0.8, 1.2)
    hue: float = 0.05
    order: tuple[str, ...] = AUGMENT_OPS

    def __post_init__(self) -> None:
        unknown = [op for op in self.order if op not in AUGMENT_OPS]
        if unknown:
            raise DataError(
                f"Unknown augmentation op(s) {unknown} in `order`; choose from: {', '.join(AUGMENT_OPS)}"
            )


def op_seeds(seed: tf.Tensor, n: int) -> list[tf.Tensor]:
    """One seed per op: each is two int32 draws seeded by the previous one (the first by `seed`), as the
    original chains them; ops that shared one seed would all move with the same underlying uniform draw."""
    seeds = []
    for _ in range(n):
        seed = tf.random.stateless_uniform([2], seed, maxval=tf.int32.max, dtype=tf.int32)
        seeds.append(seed)
    return seeds


def op_params(op: str, seed: tf.Tensor, config: AugmentConfig) -> tf.Tensor:
    """The random parameter `op` draws from `seed`, exactly as TF's stateless op draws it: the crop box
    [top, left, bottom, right] (relative), the brightness or hue delta, the contrast or saturation factor."""
    if op == "random_resized_crop":
        return crop_box(config.crop_scale, config.crop_ratio, seed)
    low, high = {
        "random_brightness": (-config.brightness, config.brightness),
        "random_contrast": config.contrast,
        "random_saturation": config.saturation,
        "random_hue": (-config.hue, config.hue),
    }[op]
    return tf.random.stateless_uniform([], seed, low, high)


def crop_box(scale: Sequence[float], ratio: Sequence[float], seed: tf.Tensor) -> tf.Tensor:
    """A random box of relative area ~`scale` and aspect ~`ratio`: [top, left, bottom, right] in [0, 1].

    As in the original, one seed drives all four draws (area, aspect, y and x offset), so they share the
    same underlying uniform sample; with OpenVLA's fixed scale/ratio the box moves along the diagonal.
    """
    area = tf.random.stateless_uniform([], seed, scale[0], scale[1])
    aspect = tf.exp(tf.random.stateless_uniform([], seed, tf.math.log(ratio[0]), tf.math.log(ratio[1])))
    box_h = tf.clip_by_value(tf.sqrt(area / aspect), 0.0, 1.0)
    box_w = tf.clip_by_value(tf.sqrt(area * aspect), 0.0, 1.0)
    top = tf.random.stateless_uniform([], seed, 0.0, 1.0 - box_h)
    left = tf.random.stateless_uniform([], seed, 0.0, 1.0 - box_w)
    return tf.stack([top, left, top + box_h, left + box_w])


def random_resized_crop(
    image: tf.Tensor, scale: Sequence[float], ratio: Sequence[float], seed: tf.Tensor
) -> tf.Tensor:
    """Crop a random box (`crop_box`), resized back to the input size."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    boxes = crop_box(scale, ratio, seed)[None]
    out = tf.image.crop_and_resize(image[None], boxes, tf.zeros([1], tf.int32), tf.stack([height, width]))
    return out[0]


_ADJUST = {
    "random_brightness": tf.image.adjust_brightness,
    "random_contrast": tf.image.adjust_contrast,
    "random_saturation": tf.image.adjust_saturation,
    "random_hue": tf.image.adjust_hue,
}


def augment_image(image: tf.Tensor, seed: tf.Tensor, config: AugmentConfig) -> tf.Tensor:
    """Augment one uint8 [H, W, 3] image; deterministic given `seed` (int32 or int64 [2])."""
    dtype = image.dtype
    x = tf.image.convert_image_dtype(image, tf.float32)
    for op, op_seed in zip(config.order, op_seeds(seed, len(config.order))):
        if op == "random_resized_crop":
            x = random_resized_crop(x, config.crop_scale, config.crop_ratio, op_seed)
        else:  # TF's stateless_random_<op> is adjust_<op> with this draw
            x = _ADJUST[op](x, op_params(op, op_seed, config))
        x = tf.clip_by_value(x, 0.0, 1.0)
    return tf.image.convert_image_dtype(x, dtype, saturate=True)
