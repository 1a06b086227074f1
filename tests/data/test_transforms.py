"""Trajectory and image transforms, eagerly and inside tf.data, against hand-computed expectations."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from prismatic.data import traj_transforms as tt
from prismatic.data.augment import AugmentConfig, augment_image, op_params, op_seeds, random_resized_crop
from prismatic.data.obs_transforms import augment, decode_and_resize, resize_image
from prismatic.data.synthetic import encode_image, smooth_image


def toy_traj(n=5, dim=3):
    return {
        "observation": {"x": tf.range(n, dtype=tf.float32)[:, None], "timestep": tf.range(n)},
        "task": {"language_instruction": tf.repeat("go", n)},
        "action": tf.reshape(tf.range(n * dim, dtype=tf.float32) + 1, (n, dim)),
        "absolute_action_mask": tf.tile(tf.constant([[False] * (dim - 1) + [True]]), [n, 1]),
    }


def test_chunking_windows_pad_masks_and_neutral_future_actions():
    t = tt.chunk_act_obs(toy_traj(), window_size=2, future_action_window_size=2)
    obs = t["observation"]["x"].numpy()[..., 0]
    np.testing.assert_array_equal(obs, [[0, 0], [0, 1], [1, 2], [2, 3], [3, 4]])
    np.testing.assert_array_equal(t["observation"]["pad_mask"].numpy()[:, 0], [False, True, True, True, True])
    a = t["action"].numpy()
    assert a.shape == (5, 4, 3)
    raw = np.arange(15, dtype=np.float32).reshape(5, 3) + 1
    # step 3: window actions [a2, a3], future [a4, past-end] -> relative dims 0, absolute (gripper) repeats a4
    np.testing.assert_array_equal(a[3, :3], raw[2:5])
    np.testing.assert_array_equal(a[3, 3], [0, 0, raw[4, 2]])
    np.testing.assert_array_equal(a[0, 0], raw[0])  # clamped to step 0 before the start


def test_goal_relabeling_picks_a_future_step_and_is_seeded():
    t = tt.add_pad_mask_dict(toy_traj(n=8))
    g1 = tt.goal_relabel_uniform(dict(t), tf.constant([1, 2], tf.int64))["task"]["timestep"].numpy()
    g2 = tt.goal_relabel_uniform(dict(t), tf.constant([1, 2], tf.int64))["task"]["timestep"].numpy()
    np.testing.assert_array_equal(g1, g2)
    steps = np.arange(8)
    assert np.all((g1 > steps) | (steps == 7)) and g1[-1] == 7 and g1.max() <= 7


def test_subsample_keeps_a_random_subset():
    t = toy_traj(n=10)
    s = tt.subsample(t, 4, tf.constant([3, 4], tf.int64))
    rows = s["action"].numpy()
    assert rows.shape == (4, 3) and len({tuple(r) for r in rows}) == 4
    assert tt.subsample(toy_traj(n=3), 4, tf.constant([3, 4], tf.int64))["action"].shape[0] == 3


def test_noop_filters_libero_rule_vs_generic_zero_rule():
    a = tf.constant(
        [
            [0, 0, 0, 0, 0, 0, 1.0],  # first step, no motion: no-op (libero) ; not all-zero
            [0, 0, 0, 0, 0, 0, 0.0],  # gripper changed: kept by libero; all-zero: generic no-op
            [0, 0, 0, 0, 0, 0, 0.0],  # same gripper, no motion: no-op for both
            [0.01, 0, 0, 0, 0, 0, 0.0],  # moves
            [5e-5, 0, 0, 0, 0, 0, 0.0],  # below 1e-4: no-op (libero)
        ]
    )
    np.testing.assert_array_equal(tt.noop_mask(a, "libero").numpy(), [True, False, True, False, True])
    np.testing.assert_array_equal(tt.noop_mask(a, "zero").numpy(), [False, True, True, False, False])


def test_clean_frames_drops_nonfinite_and_can_fail():
    t = toy_traj(n=4)
    t["action"] = tf.tensor_scatter_nd_update(t["action"], [[1, 0], [2, 2]], [np.nan, np.inf])
    out = tt.clean_frames(t, noop_filter="none", fail_on_nonfinite=False)
    np.testing.assert_array_equal(out["observation"]["timestep"].numpy(), [0, 3])
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite"):
        tt.clean_frames(toy_traj(n=4) | {"action": t["action"]}, noop_filter="none", fail_on_nonfinite=True)


def _both(fn, *args):
    """Run `fn` eagerly and inside tf.data; the results must agree."""
    eager = fn(*args)
    ds = tf.data.Dataset.from_tensors(args).map(lambda *a: fn(*a))
    graph = next(iter(ds))
    return eager, graph


def test_resize_matches_the_original_formula_eagerly_and_in_tf_data():
    img = smooth_image(np.random.default_rng(0), 40, 48)
    eager, graph = _both(lambda x: resize_image(x, (24, 24)), tf.constant(img))
    np.testing.assert_array_equal(eager.numpy(), graph.numpy())
    ref = tf.image.resize(img, (24, 24), method="lanczos3", antialias=True).numpy()
    np.testing.assert_array_equal(eager.numpy(), np.clip(np.round(ref), 0, 255).astype(np.uint8))
    flat = np.full((40, 48, 3), 77, np.uint8)  # a constant image stays exactly constant
    assert np.all(resize_image(tf.constant(flat), (24, 24)).numpy() == 77)


@pytest.mark.parametrize("hw", [(84, 84), (224, 224), (40, 48)])
def test_resize_to_the_same_size_returns_the_original_formulas_output(hw):
    """The shortcut for an image already at the target size gives what the original's Lanczos pass gives,
    on noise (the worst case for ringing) and smooth images, with a static shape and a decoded (dynamic) one."""
    rng = np.random.default_rng(hw[0])
    for img in (rng.integers(0, 256, (*hw, 3), dtype=np.uint8), smooth_image(rng, *hw)):
        ref = tf.image.resize(img, hw, method="lanczos3", antialias=True).numpy()
        ref = np.clip(np.round(ref), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(resize_image(tf.constant(img), hw).numpy(), ref)
        decoded = {"image_primary": tf.constant(encode_image(img, "png"))}
        ds = tf.data.Dataset.from_tensors(decoded).map(
            lambda o: decode_and_resize(o, resize_size={"primary": hw}, depth_resize_size={})
        )
        np.testing.assert_array_equal(next(iter(ds))["image_primary"].numpy(), ref)


def test_decode_and_resize_handles_jpeg_png_and_padding():
    img = smooth_image(np.random.default_rng(1), 32, 32)
    obs = {
        "image_primary": tf.constant(encode_image(img, "png")),
        "image_wrist": tf.constant(b""),
    }
    out = decode_and_resize(obs, resize_size={"primary": (16, 16), "wrist": (16, 16)}, depth_resize_size={})
    np.testing.assert_array_equal(
        out["image_primary"].numpy(), resize_image(tf.constant(img), (16, 16)).numpy()
    )
    assert out["image_wrist"].shape == (16, 16, 3) and not out["image_wrist"].numpy().any()


def test_augmentation_is_seeded_same_eager_and_in_graph_and_keeps_size():
    img = tf.constant(smooth_image(np.random.default_rng(2), 32, 32))
    seed = tf.constant([5, 9], tf.int64)
    cfg = AugmentConfig()
    eager, graph = _both(lambda x, s: augment_image(x, s, cfg), img, seed)
    np.testing.assert_array_equal(eager.numpy(), graph.numpy())
    assert eager.shape == (32, 32, 3) and eager.dtype == tf.uint8
    assert not np.array_equal(eager.numpy(), img.numpy())
    other = augment_image(img, tf.constant([6, 9], tf.int64), cfg)
    assert not np.array_equal(eager.numpy(), other.numpy())


def test_crop_is_a_crop_then_resize_back_with_one_shared_draw():
    img = tf.constant(np.arange(16 * 16 * 3, dtype=np.float32).reshape(16, 16, 3) / 768.0)
    seed = tf.constant([1, 2], tf.int64)
    out = random_resized_crop(img, (0.9, 0.9), (1.0, 1.0), seed)
    side = np.sqrt(0.9)
    u = tf.random.stateless_uniform([], seed, 0.0, 1.0 - side).numpy()  # same draw for top and left
    box = tf.constant([[u, u, u + side, u + side]], tf.float32)
    ref = tf.image.crop_and_resize(img[None], box, [0], (16, 16))[0]
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-6)


def test_augment_order_only_brightness_matches_tf_op():
    img = tf.constant(smooth_image(np.random.default_rng(3), 16, 16))
    seed = tf.constant([3, 3], tf.int64)
    out = augment_image(img, seed, AugmentConfig(order=("random_brightness",)))
    (op_seed,) = op_seeds(seed, 1)
    x = tf.image.stateless_random_brightness(tf.image.convert_image_dtype(img, tf.float32), 0.2, op_seed)
    ref = tf.image.convert_image_dtype(tf.clip_by_value(x, 0, 1), tf.uint8, saturate=True)
    np.testing.assert_array_equal(out.numpy(), ref.numpy())


def test_augmentation_is_the_original_chain_of_stateless_ops_one_seed_each():
    """The original (dlimp's augment_image as OpenVLA pins it) replaces the seed by two int32 draws from it before
    each op; each op is TF's stateless op with its own seed."""
    img = tf.constant(smooth_image(np.random.default_rng(5), 24, 24))
    seed = tf.constant([11, 42], tf.int64)
    cfg = AugmentConfig()
    x, chained = tf.image.convert_image_dtype(img, tf.float32), seed
    for op in cfg.order:
        chained = tf.random.stateless_uniform([2], chained, maxval=tf.int32.max, dtype=tf.int32)
        if op == "random_resized_crop":
            x = random_resized_crop(x, cfg.crop_scale, cfg.crop_ratio, chained)
        elif op == "random_brightness":
            x = tf.image.stateless_random_brightness(x, cfg.brightness, chained)
        elif op == "random_contrast":
            x = tf.image.stateless_random_contrast(x, *cfg.contrast, chained)
        elif op == "random_saturation":
            x = tf.image.stateless_random_saturation(x, *cfg.saturation, chained)
        else:
            x = tf.image.stateless_random_hue(x, cfg.hue, chained)
        x = tf.clip_by_value(x, 0, 1)
    ref = tf.image.convert_image_dtype(x, tf.uint8, saturate=True)
    out = augment_image(img, seed, cfg)
    np.testing.assert_array_equal(out.numpy(), ref.numpy())
    np.testing.assert_array_equal(augment_image(img, seed, cfg).numpy(), out.numpy())  # deterministic


def test_each_op_draws_independently_across_frames():
    """Per frame (seed [s, frame index], as the pipeline seeds it), the five ops' draws are uncorrelated (the
    original measures about 0.17 at most on real data); one seed shared by all ops made them move together
    (correlation 1.0: a brighter frame was always also more contrasted, more saturated and hue-shifted)."""
    cfg, n = AugmentConfig(), 400

    @tf.function
    def frame_draws(seed):
        values = [op_params(op, s, cfg) for op, s in zip(cfg.order, op_seeds(seed, len(cfg.order)))]
        return tf.stack([v[0] if v.shape.rank else v for v in values])  # the crop: its top offset

    draws = np.stack([frame_draws(tf.constant([7, frame], tf.int64)).numpy() for frame in range(n)])
    corr = np.corrcoef(draws.T)
    off_diagonal = np.abs(corr[~np.eye(len(cfg.order), dtype=bool)])
    # independent draws: each |r| has a standard deviation of 1 / sqrt(n) = 0.05; 0.25 is five of them
    assert off_diagonal.max() < 0.25, corr.round(2)
    lows = [0.0, -cfg.brightness, cfg.contrast[0], cfg.saturation[0], -cfg.hue]
    highs = [1 - np.sqrt(cfg.crop_scale[0]), cfg.brightness, cfg.contrast[1], cfg.saturation[1], cfg.hue]
    span = np.subtract(highs, lows)
    assert np.all(draws.min(0) >= lows) and np.all(draws.max(0) <= highs)
    assert np.all(draws.min(0) < np.add(lows, 0.05 * span)) and np.all(draws.max(0) > np.subtract(highs, 0.05 * span))


def test_padding_images_are_not_augmented():
    obs = {
        "image_primary": tf.constant(smooth_image(np.random.default_rng(4), 16, 16)),
        "image_wrist": tf.zeros((16, 16, 3), tf.uint8),
        "pad_mask_dict": {"image_primary": tf.constant(True), "image_wrist": tf.constant(False)},
    }
    out = augment(obs, seed=tf.constant([1, 1], tf.int64), config=AugmentConfig())
    assert not out["image_wrist"].numpy().any()
    assert not np.array_equal(out["image_primary"].numpy(), obs["image_primary"].numpy())
