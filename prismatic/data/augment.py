"""Training-time image augmentation, with OpenVLA's parameters and order.

Semantics kept from the original (dlimp's `augment_image`): the image is converted to float in [0, 1]
once; each op is a *stateless* TF op and every op receives the same seed; the result is clipped to
[0, 1] after each op and converted back to uint8 with saturation at the end.
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


def random_resized_crop(
    image: tf.Tensor, scale: Sequence[float], ratio: Sequence[float], seed: tf.Tensor
) -> tf.Tensor:
    """Crop a random box of relative area ~`scale` and aspect ~`ratio`, resized back to the input size.

    As in the original, one seed drives all four draws (area, aspect, y and x offset), so they share the
    same underlying uniform sample; with OpenVLA's fixed scale/ratio the box moves along the diagonal.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    area = tf.random.stateless_uniform([], seed, scale[0], scale[1])
    aspect = tf.exp(tf.random.stateless_uniform([], seed, tf.math.log(ratio[0]), tf.math.log(ratio[1])))
    box_h = tf.clip_by_value(tf.sqrt(area / aspect), 0.0, 1.0)
    box_w = tf.clip_by_value(tf.sqrt(area * aspect), 0.0, 1.0)
    top = tf.random.stateless_uniform([], seed, 0.0, 1.0 - box_h)
    left = tf.random.stateless_uniform([], seed, 0.0, 1.0 - box_w)
    boxes = tf.stack([top, left, top + box_h, left + box_w])[None]
    out = tf.image.crop_and_resize(image[None], boxes, tf.zeros([1], tf.int32), tf.stack([height, width]))
    return out[0]


def augment_image(image: tf.Tensor, seed: tf.Tensor, config: AugmentConfig) -> tf.Tensor:
    """Augment one uint8 [H, W, 3] image; deterministic given `seed` (int32 [2])."""
    dtype = image.dtype
    x = tf.image.convert_image_dtype(image, tf.float32)
    for op in config.order:
        if op == "random_resized_crop":
            x = random_resized_crop(x, config.crop_scale, config.crop_ratio, seed)
        elif op == "random_brightness":
            x = tf.image.stateless_random_brightness(x, config.brightness, seed)
        elif op == "random_contrast":
            x = tf.image.stateless_random_contrast(x, *config.contrast, seed)
        elif op == "random_saturation":
            x = tf.image.stateless_random_saturation(x, *config.saturation, seed)
        elif op == "random_hue":
            x = tf.image.stateless_random_hue(x, config.hue, seed)
        x = tf.clip_by_value(x, 0.0, 1.0)
    return tf.image.convert_image_dtype(x, dtype, saturate=True)
