"""A tiny tabletop reaching environment that a small VLA can learn on CPU in minutes.

Scene: a square table seen from the front and above; `num_objects` (<= 3) objects with unique colours
AND unique shapes at random, well-separated positions; a grey two-finger gripper hovering at a fixed
height. The instruction names one object ("touch the blue cylinder"); the episode succeeds, and
terminates, when the gripper's xy is within `success_radius` of that object's centre.

Design choices that make the task learnable from a few hundred demos:
  * high-contrast flat colours on a light table; the gripper is dark grey and casts a shadow directly
    below itself, so both positions that determine the action are obvious in the image;
  * the expert makes "king moves": on each of x and y it steps +-MAX_DELTA or stays (see
    `king_step`), so every action dimension takes one of at most three values. A policy then only has
    to tell left / level / right and near / level / far: the demo's tiny VLA learns that for a single
    object in ~2000 steps, where 256 bins of a continuous direction took far longer (docs/tabletop.md);
    z, roll, pitch, yaw are always 0 and the gripper always open;
  * scenes are rejection-sampled so that the expert's path (`expert_path`: diagonal, then straight)
    from the gripper to ANY object passes no other object: a policy that follows the wrong instruction
    never brushes the true target on the way, which makes the language-swapped control meaningful;
  * short episodes (over 1000 seeds the expert needs at most 9 steps, 5.7 on average from a random
    start and 6.0 from home; `max_steps` defaults to 25),
    and the gripper starts >= START_CLEARANCE from every object, so random actions almost never succeed.

Units are metres; the world frame has x to the right, y away from the camera, z up.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from prismatic.envs.render import LIGHT_DIR, Camera, convex_hull, draw_prism, fill_convex, regular_polygon

# --- Scene vocabulary -----------------------------------------------------------------------------
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 45, 40),
    "green": (40, 165, 70),
    "blue": (45, 95, 220),
    "yellow": (240, 200, 30),
}
SHAPES: tuple[str, ...] = ("block", "cylinder", "triangle")
# Phrasings all mean "move the gripper onto the object"; the object phrase is always "<colour> <shape>".
TEMPLATES: tuple[str, ...] = (
    "touch the {}",
    "reach for the {}",
    "move the gripper to the {}",
    "go to the {}",
    "tap the {}",
    "put the gripper on the {}",
)
MAX_OBJECTS = min(len(COLORS), len(SHAPES))


def all_instructions() -> list[str]:
    """Every instruction the environment can give (phrasing x colour x shape)."""
    return [t.format(f"{c} {s}") for t in TEMPLATES for c in COLORS for s in SHAPES]

# --- Geometry (metres) ----------------------------------------------------------------------------
TABLE_HALF = 0.30  # the table top is [-0.3, 0.3]^2
TABLE_THICKNESS = 0.03
OBJECT_RANGE = 0.22  # object centres are sampled in [-0.22, 0.22]^2
START_RANGE = 0.25  # the gripper's start xy is sampled in [-0.25, 0.25]^2 (start="random")
HOME = (0.0, -0.26)  # the gripper's fixed start with start="home": front centre, the robot's side
START_MODES = ("random", "home")
EEF_LIMIT = 0.28  # the gripper's xy is clipped to [-0.28, 0.28]^2 (stays above the table)
OBJECT_HALF = 0.04  # block half-side / cylinder radius (triangle circumradius is 1.5x this)
OBJECT_HEIGHT = 0.045
HOVER_Z = 0.06  # the gripper's fingertips, just above the objects' tops
MIN_SEPARATION = 0.16  # between object centres
START_CLEARANCE = 0.24  # between the gripper's start and any object centre
PATH_MARGIN = 0.04  # extra clearance (beyond success_radius) of every start->object path from the others

# --- Actions (Bridge layout: xyz delta, rpy delta, gripper 0=closed .. 1=open) --------------------
MAX_DELTA = 0.05  # metres per step along each of x, y, z
MAX_ROTATION = 0.25  # radians per step; accepted and ignored (the gripper keeps a fixed pose)
ACTION_LOW = np.array([-MAX_DELTA] * 3 + [-MAX_ROTATION] * 3 + [0.0], np.float32)
ACTION_HIGH = np.array([MAX_DELTA] * 3 + [MAX_ROTATION] * 3 + [1.0], np.float32)
STATE_DIM = 7  # x, y, z, roll, pitch, yaw, gripper (z and the rotations are constant)
STATE_LOW = np.array([-TABLE_HALF, -TABLE_HALF, 0.0, -np.pi, -np.pi, -np.pi, 0.0], np.float32)
STATE_HIGH = np.array([TABLE_HALF, TABLE_HALF, 0.3, np.pi, np.pi, np.pi, 1.0], np.float32)

_TABLE_COLOR = (208, 192, 165)
_FLOOR_TOP, _FLOOR_BOTTOM = np.array([62, 66, 76], np.float32), np.array([36, 39, 46], np.float32)
_SHADOW = (20, 20, 25)
_GRIPPER_BODY, _GRIPPER_FINGER, _GRIPPER_WRIST = (135, 140, 150), (60, 62, 70), (95, 99, 108)


@dataclass(frozen=True)
class TableObject:
    """One object on the table; `position` is its centre's xy in metres."""

    color: str
    shape: str
    position: tuple[float, float]
    yaw: float

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def footprint(self) -> np.ndarray:
        """Counter-clockwise xy outline [N, 2]; a 20-gon stands in for the cylinder's circle."""
        if self.shape == "block":
            return regular_polygon(self.position, OBJECT_HALF * np.sqrt(2), 4, self.yaw + np.pi / 4)
        if self.shape == "cylinder":
            return regular_polygon(self.position, OBJECT_HALF, 20)
        return regular_polygon(self.position, OBJECT_HALF * 1.5, 3, self.yaw)

    def describe(self, index: int) -> dict[str, Any]:
        """Plain-Python description (JSON-friendly) for `info`."""
        return {
            "index": index,
            "name": self.name,
            "color": self.color,
            "shape": self.shape,
            "rgb": COLORS[self.color],
            "position": [float(self.position[0]), float(self.position[1])],
        }


@dataclass(frozen=True)
class Scene:
    """Everything `reset` samples: objects, which one is the target, the phrasing, the gripper start."""

    objects: tuple[TableObject, ...]
    target: int
    template: str
    start: tuple[float, float]

    @property
    def instruction(self) -> str:
        return self.template.format(self.objects[self.target].name)


def king_step(delta: np.ndarray, success_radius: float = 0.0) -> np.ndarray:
    """The expert's xy step for the offset `delta` (target - gripper): per axis +-MAX_DELTA where the
    offset exceeds half a step, else 0. Within half a step on both axes the gripper is at most
    0.71 * MAX_DELTA away; only when that is still outside `success_radius` does it step exactly `delta`."""
    delta = np.asarray(delta, np.float64)
    step = np.where(np.abs(delta) > MAX_DELTA / 2, np.sign(delta) * MAX_DELTA, 0.0)
    if not step.any() and float(np.linalg.norm(delta)) > success_radius:
        step = delta
    return step


def expert_path(start: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Corner points [3, 2] of the king-move path: diagonal until one axis is level, then straight."""
    start, goal = np.asarray(start, np.float64), np.asarray(goal, np.float64)
    delta = goal - start
    corner = start + np.sign(delta) * np.abs(delta).min()
    return np.stack([start, corner, goal])


def _path_distance(p: np.ndarray, path: np.ndarray) -> float:
    return min(_segment_distance(p, a, b) for a, b in zip(path[:-1], path[1:]))


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance from point p to the segment a-b."""
    ab = b - a
    t = np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * ab)))


def sample_scene(
    rng: np.random.Generator, num_objects: int, success_radius: float, start_mode: str = "random"
) -> Scene:
    """Rejection-sample a scene whose expert paths (start -> each object) keep clear of every other object.

    start_mode "home" starts the gripper at HOME, as a robot starts from its home pose."""
    colors = [list(COLORS)[i] for i in rng.permutation(len(COLORS))[:num_objects]]
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:num_objects]]
    clearance = success_radius + PATH_MARGIN
    for _ in range(10_000):
        pos = rng.uniform(-OBJECT_RANGE, OBJECT_RANGE, size=(num_objects, 2))
        start = rng.uniform(-START_RANGE, START_RANGE, size=2) if start_mode == "random" else np.asarray(HOME)
        gaps = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(num_objects)
        if gaps.min() < MIN_SEPARATION or np.linalg.norm(pos - start, axis=1).min() < START_CLEARANCE:
            continue
        if all(
            _path_distance(pos[j], expert_path(start, pos[i])) >= clearance
            for i in range(num_objects)
            for j in range(num_objects)
            if i != j
        ):
            break
    else:  # pragma: no cover - only reachable with absurd parameters, which __init__ rejects
        raise RuntimeError("could not sample a scene; lower num_objects or success_radius")
    yaws = rng.uniform(0.0, 2 * np.pi, size=num_objects)
    objects = tuple(
        TableObject(colors[i], shapes[i], (float(pos[i, 0]), float(pos[i, 1])), float(yaws[i]))
        for i in range(num_objects)
    )
    return Scene(
        objects=objects,
        target=int(rng.integers(num_objects)),
        template=TEMPLATES[int(rng.integers(len(TEMPLATES)))],
        start=(float(start[0]), float(start[1])),
    )


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


class TabletopEnv(gym.Env):
    """Reach-and-touch the object named by a language instruction (Gymnasium API).

    Observation: {"image": uint8 [S, S, 3], "state": float32 [x, y, z, roll, pitch, yaw, gripper],
    "instruction": str}. Action: float32 [dx, dy, dz, droll, dpitch, dyaw, gripper], clipped to
    `action_space`; only dx, dy move the gripper, `gripper` only opens/closes the rendered fingers.
    Reward is 1.0 on the success step, else 0.0. `info` has "instruction", "target" and "objects"
    (see `TableObject.describe`), "seed" (reset(seed=info["seed"]) reproduces the episode),
    "template", "success", "distance" and "step".
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        image_size: int = 224,
        num_objects: int = 3,
        max_steps: int = 25,
        success_radius: float = 0.06,
        render_mode: str | None = "rgb_array",
        start: str = "random",
    ) -> None:
        self.image_size = _check_int("image_size", image_size, 32, 1024)
        if start not in START_MODES:
            raise ValueError(f"start must be one of {', '.join(START_MODES)}, got {start!r}")
        self.start_mode = start
        self.num_objects = _check_int("num_objects", num_objects, 1, MAX_OBJECTS)
        self.max_steps = _check_int("max_steps", max_steps, 1, 10_000)
        if (
            isinstance(success_radius, bool)
            or not isinstance(success_radius, (int, float, np.floating))
            or not (0.01 <= float(success_radius) <= 0.1)
        ):
            raise ValueError(
                f"success_radius must be a number in [0.01, 0.1] (metres), got {success_radius!r}"
            )
        self.success_radius = float(success_radius)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode

        self.action_space = gym.spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)
        self.observation_space = gym.spaces.Dict(
            {
                "image": gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
                "state": gym.spaces.Box(STATE_LOW, STATE_HIGH, dtype=np.float32),
                "instruction": gym.spaces.Text(64, min_length=1, charset=string.ascii_lowercase + " "),
            }
        )
        self.camera = Camera(self.image_size)
        self._background = self._paint_background()
        self._scene: Scene | None = None
        self._static: np.ndarray | None = None
        self._eef = np.zeros(3)
        self._gripper = 1.0
        self._steps = 0
        self._seed = 0
        self._done = True

    # --- Gymnasium API ----------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Sample a new scene. The scene depends only on the episode seed (`seed`, or one drawn from
        the env's generator), so `info["seed"]` replays any episode. `options={"target": i}` makes
        object i the target instead of the sampled one."""
        super().reset(seed=seed)
        self._seed = int(seed) if seed is not None else int(self.np_random.integers(2**31 - 1))
        scene = sample_scene(np.random.default_rng(self._seed), self.num_objects, self.success_radius, self.start_mode)
        if options and "target" in options:
            target = _check_int("options['target']", options["target"], 0, self.num_objects - 1)
            scene = Scene(scene.objects, target, scene.template, scene.start)
        self._scene = scene
        self._eef = np.array([scene.start[0], scene.start[1], HOVER_Z])
        self._gripper, self._steps, self._done = 1.0, 0, False
        self._static = self._paint_static(scene)
        return self._obs(), self._info()

    def retarget(self, target: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Name object `target` of the current scene as the new goal, from wherever the gripper is.

        The scene, the gripper and the seed stay; the instruction changes, and the step count and the
        end-of-episode flags start over, as for a fresh episode. Chained demonstrations use it
        (`collect_episodes(goals=...)`): after touching one object the next instruction sends the
        gripper on to another, so a segment starts with the gripper on the object it must now leave.
        """
        if self._scene is None:
            raise RuntimeError("TabletopEnv.retarget() called before reset()")
        target = _check_int("target", target, 0, self.num_objects - 1)
        self._scene = Scene(self._scene.objects, target, self._scene.template, self._scene.start)
        self._steps, self._done = 0, False
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._scene is None:
            raise RuntimeError("TabletopEnv.step() called before reset()")
        if self._done:
            raise RuntimeError("TabletopEnv.step() called after the episode ended; call reset() first")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (7,):
            raise ValueError(
                f"action must have shape (7,) [dx, dy, dz, droll, dpitch, dyaw, gripper], got {a.shape}"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a}")
        a = np.clip(a, ACTION_LOW, ACTION_HIGH)  # out-of-range commands saturate, like a real controller
        self._eef[:2] = np.clip(self._eef[:2] + a[:2], -EEF_LIMIT, EEF_LIMIT)
        self._gripper = float(a[6])
        self._steps += 1
        success = self._distance() <= self.success_radius
        terminated = bool(success)
        truncated = bool(not success and self._steps >= self.max_steps)
        self._done = terminated or truncated
        return self._obs(), float(success), terminated, truncated, self._info()

    def render(self) -> np.ndarray:
        """The current camera image, uint8 [S, S, 3]."""
        if self._scene is None:
            raise RuntimeError("TabletopEnv.render() called before reset()")
        canvas = self._static.copy()
        self._paint_gripper(canvas)
        return (np.clip(canvas, 0, 255) + 0.5).astype(np.uint8)

    # --- Public helpers ---------------------------------------------------------------------------
    @property
    def scene(self) -> Scene:
        if self._scene is None:
            raise RuntimeError("no scene yet; call reset() first")
        return self._scene

    def project(self, xyz: np.ndarray) -> np.ndarray:
        """World point(s) [..., 3] -> pixel (column, row) in the rendered image."""
        return self.camera.project(xyz)

    # --- Internals --------------------------------------------------------------------------------
    def _distance(self) -> float:
        target = np.asarray(self.scene.objects[self.scene.target].position)
        return float(np.linalg.norm(self._eef[:2] - target))

    def _obs(self) -> dict[str, Any]:
        state = np.array([*self._eef, 0.0, 0.0, 0.0, self._gripper], np.float32)
        return {"image": self.render(), "state": state, "instruction": self.scene.instruction}

    def _info(self) -> dict[str, Any]:
        scene = self.scene
        return {
            "instruction": scene.instruction,
            "template": scene.template,
            "target": scene.objects[scene.target].describe(scene.target),
            "objects": [obj.describe(i) for i, obj in enumerate(scene.objects)],
            "seed": self._seed,
            "success": self._distance() <= self.success_radius,
            "distance": self._distance(),
            "step": self._steps,
        }

    def _paint_background(self) -> np.ndarray:
        """Floor gradient and the table: the same for every episode, so painted once."""
        s = self.image_size
        t = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None, None]
        canvas = np.broadcast_to(_FLOOR_TOP + t * (_FLOOR_BOTTOM - _FLOOR_TOP), (s, s, 3)).copy()
        table = regular_polygon((0.0, 0.0), TABLE_HALF * np.sqrt(2), 4, np.pi / 4)
        draw_prism(canvas, self.camera, table, -TABLE_THICKNESS, 0.0, _TABLE_COLOR)
        return canvas

    def _paint_static(self, scene: Scene) -> np.ndarray:
        """Background + objects (fixed within an episode); the gripper is painted per frame on top."""
        canvas = self._background.copy()
        cast = OBJECT_HEIGHT * -LIGHT_DIR[:2] / LIGHT_DIR[2]  # where the top outline's shadow lands
        for obj in scene.objects:
            fp = obj.footprint()
            hull = convex_hull(np.concatenate([fp, fp + cast]))
            fill_convex(
                canvas, self.camera.project(np.column_stack([hull, np.zeros(len(hull))])), _SHADOW, 0.3
            )
        for obj in sorted(scene.objects, key=lambda o: -o.position[1]):  # far to near: painter's order
            draw_prism(canvas, self.camera, obj.footprint(), 0.0, OBJECT_HEIGHT, COLORS[obj.color])
        return canvas

    def _paint_gripper(self, canvas: np.ndarray) -> None:
        """Shadow, two fingers, palm and wrist: six polygons, so a frame stays around a millisecond."""
        x, y, z = self._eef
        # A soft shadow straight below the fingertips marks the gripper's xy on the table.
        disc = regular_polygon((x, y), 0.03, 16)
        fill_convex(canvas, self.project(np.column_stack([disc, np.zeros(16)])), _SHADOW, 0.45)
        gap = 0.012 + 0.02 * self._gripper  # finger half-gap: gripper 0 = closed, 1 = open
        for side in (-1.0, 1.0):
            cx = x + side * (gap + 0.007)
            finger = np.array(
                [
                    [cx - 0.007, y - 0.02],
                    [cx + 0.007, y - 0.02],
                    [cx + 0.007, y + 0.02],
                    [cx - 0.007, y + 0.02],
                ]
            )
            draw_prism(canvas, self.camera, finger, z, z + 0.04, _GRIPPER_FINGER, detail="flat")
        palm = np.array(
            [[x - 0.05, y - 0.022], [x + 0.05, y - 0.022], [x + 0.05, y + 0.022], [x - 0.05, y + 0.022]]
        )
        draw_prism(canvas, self.camera, palm, z + 0.04, z + 0.06, _GRIPPER_BODY, detail="top")
        wrist = regular_polygon((x, y), 0.018, 10)
        draw_prism(canvas, self.camera, wrist, z + 0.06, z + 0.13, _GRIPPER_WRIST, detail="flat")
