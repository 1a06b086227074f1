"""Frame-level observation transforms: decode, resize, augment (run *after* the shuffle buffer)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import tensorflow as tf

from prismatic.data.augment import AugmentConfig, augment_image
from prismatic.data.errors import DataError

Obs = dict[str, tf.Tensor]
Size = tuple[int, int]


def resize_image(image: tf.Tensor, size: Size) -> tf.Tensor:
    """uint8 -> uint8 resize as the original: Lanczos-3 with antialiasing, rounded and clipped.

    An image already of `size` is returned as it is: at scale 1 the Lanczos weights are 1 on the pixel itself and
    ~1e-16 on its neighbours, so the original's rounded output equals its input, and the resize was half of a
    frame's decoding time for datasets stored at the model's resolution."""
    if image.dtype != tf.uint8:
        raise DataError(f"resize_image expects uint8 images, got {image.dtype.name}")

    def lanczos() -> tf.Tensor:
        out = tf.image.resize(image, size, method="lanczos3", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    static = image.shape[-3:-1]
    if static.is_fully_defined():  # known when traced: no graph branch
        return image if tuple(static) == tuple(size) else lanczos()
    same = tf.reduce_all(tf.equal(tf.shape(image)[-3:-1], tf.constant(size, tf.int32)))
    return tf.cond(same, lambda: tf.identity(image), lanczos)


def resize_depth(depth: tf.Tensor, size: Size) -> tf.Tensor:
    return tf.image.resize(depth[..., None], size, method="bilinear", antialias=True)[..., 0]


def _decode_image(encoded: tf.Tensor, size: Size) -> tf.Tensor:
    """Encoded bytes -> resized uint8 RGB; an empty string (absent camera) -> a black padding image."""
    return tf.cond(
        tf.strings.length(encoded) == 0,
        lambda: tf.zeros((*size, 3), tf.uint8),
        lambda: resize_image(tf.io.decode_image(encoded, channels=3, expand_animations=False), size),
    )


def _decode_depth(encoded: tf.Tensor, size: Size) -> tf.Tensor:
    return tf.cond(
        tf.strings.length(encoded) == 0,
        lambda: tf.zeros(size, tf.float32),
        lambda: resize_depth(
            tf.io.decode_image(encoded, expand_animations=False, dtype=tf.float32)[..., 0], size
        ),
    )


def _names(obs: Mapping[str, tf.Tensor], prefix: str) -> list[str]:
    return sorted(k[len(prefix) :] for k in obs if k.startswith(prefix))


def decode_and_resize(
    obs: Obs, *, resize_size: Mapping[str, Size], depth_resize_size: Mapping[str, Size]
) -> Obs:
    """Decode encoded images (empty strings become black padding images) and resize them.

    Works on one frame's observation (or task) dict; images already stored as uint8 are only resized.
    """
    obs = dict(obs)
    for name in _names(obs, "image_"):
        size = resize_size.get(name)
        if size is None:
            raise DataError(
                f"No resize size for image_{name}; sizes given for: {', '.join(resize_size) or '(none)'}"
            )
        image = obs[f"image_{name}"]
        if image.dtype == tf.string:
            image = _decode_image(image, size)
        elif image.dtype == tf.uint8:
            image = resize_image(image, size)
        else:
            raise DataError(f"image_{name} has dtype {image.dtype.name}; expected encoded bytes or uint8")
        obs[f"image_{name}"] = tf.ensure_shape(image, (*size, 3))
    for name in _names(obs, "depth_"):
        size = depth_resize_size.get(name)
        if size is None:
            raise DataError(
                f"No depth resize size for depth_{name}; given for: {', '.join(depth_resize_size) or '(none)'}"
            )
        depth = obs[f"depth_{name}"]
        if depth.dtype == tf.string:
            depth = _decode_depth(depth, size)
        else:
            depth = resize_depth(tf.cast(depth, tf.float32), size)
        obs[f"depth_{name}"] = tf.ensure_shape(depth, size)
    return obs


def augment(obs: Obs, *, seed: tf.Tensor, config: AugmentConfig) -> Obs:
    """Augment every real (non-padding) image; image i (sorted by name) uses seed + i."""
    obs = dict(obs)
    pad = obs.get("pad_mask_dict", {})
    for i, name in enumerate(_names(obs, "image_")):
        key = f"image_{name}"
        image = obs[key]
        is_real = pad.get(key, tf.constant(True))
        obs[key] = tf.cond(
            is_real,
            lambda image=image, i=i: augment_image(image, seed + i, config),
            lambda image=image: image,
        )
    return obs


def over_window(fn: Callable[[Obs], Obs], obs: Obs) -> Obs:
    """Apply a per-frame obs function to a windowed obs dict (leading axis = window, static)."""
    frames = [fn(tf.nest.map_structure(lambda x, i=i: x[i], obs)) for i in range(_window(obs))]
    return tf.nest.map_structure(lambda *xs: tf.stack(xs), *frames)


def _window(obs: Obs) -> int:
    size = tf.nest.flatten(obs)[0].shape[0]
    if size is None:
        raise DataError("The observation window size must be static after chunking")
    return int(size)
