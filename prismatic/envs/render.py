"""Pure-numpy rendering for the tabletop env: a pinhole camera, anti-aliased convex polygons, shaded prisms.

Everything is drawn as convex polygons whose coverage comes from a signed-distance estimate (max over
edge half-planes), which gives ~1 px anti-aliasing for free and keeps the output a deterministic
function of the scene. Canvases are float32 [H, W, 3] in 0..255; only the polygon's bounding box is
touched, so a frame costs a few hundred microseconds at 128 px.
"""

from __future__ import annotations

import math

import numpy as np

# Direction *towards* the light (front-left, above): top faces brightest, the right side darkest.
LIGHT_DIR = np.array([-0.35, -0.55, 1.0]) / np.linalg.norm([-0.35, -0.55, 1.0])
_AMBIENT, _DIFFUSE = 0.45, 0.55


def shade(color: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Lambert shading normalised so an upward face keeps exactly `color` (what tests and models key on)."""
    lit = _AMBIENT + _DIFFUSE * max(0.0, float(normal @ LIGHT_DIR))
    return np.asarray(color, np.float32) * (lit / (_AMBIENT + _DIFFUSE * LIGHT_DIR[2]))


class Camera:
    """A pinhole camera in front of and above the table, looking at its centre.

    World frame: x to the right, y away from the camera, z up, metres. The focal length is chosen so
    that the square [-fit_half, fit_half]^2 on the table spans `fill` of the image width, which keeps
    the layout identical at every resolution.
    """

    def __init__(
        self,
        image_size: int,
        *,
        elevation_deg: float = 62.0,
        distance: float = 1.0,
        fit_half: float = 0.30,
        fill: float = 0.92,
    ) -> None:
        el = math.radians(elevation_deg)
        look_at = np.array([0.0, 0.0, 0.0])
        self.position = look_at + distance * np.array([0.0, -math.cos(el), math.sin(el)])
        forward = (look_at - self.position) / np.linalg.norm(look_at - self.position)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        self._rot = np.stack([right, down, forward])  # rows: camera axes in world coordinates
        self.image_size = image_size
        self.focal, self.offset = 1.0, np.zeros(2)
        corners = np.array([[sx * fit_half, sy * fit_half, 0.0] for sx in (-1, 1) for sy in (-1, 1)])
        uv = self.project(corners)
        self.focal = fill * image_size / float((uv.max(0) - uv.min(0)).max())
        # Centre the table, nudged down a little: the hovering gripper sticks out above the far edge.
        uv = self.project(corners)
        self.offset = image_size / 2 - (uv.max(0) + uv.min(0)) / 2 + np.array([0.0, 0.03 * image_size])

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points [..., 3] -> pixel coordinates [..., 2] as (column, row), pixel centres at +0.5."""
        cam = (np.asarray(points, np.float64) - self.position) @ self._rot.T
        return cam[..., :2] / cam[..., 2:3] * self.focal + self.offset


def fill_convex(canvas: np.ndarray, pts: np.ndarray, color, opacity: float = 1.0) -> None:
    """Alpha-blend the convex polygon `pts` [N, 2] (pixel coords, either winding) into `canvas` in place."""
    h, w = canvas.shape[:2]
    lo, hi = pts.min(0), pts.max(0)
    x0, y0 = max(int(lo[0]) - 1, 0), max(int(lo[1]) - 1, 0)
    x1, y1 = min(int(hi[0]) + 2, w), min(int(hi[1]) + 2, h)
    if x0 >= x1 or y0 >= y1:
        return
    nxt = np.concatenate([pts[1:], pts[:1]])
    edges = nxt - pts
    area = float(np.sum(pts[:, 0] * nxt[:, 1] - nxt[:, 0] * pts[:, 1]))
    if abs(area) < 1e-9:
        return
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > 1e-9
    # Outward unit normals: (ey, -ex) for a positive winding, flipped otherwise.
    normals = np.stack([edges[keep, 1], -edges[keep, 0]], axis=1) * (np.sign(area) / lengths[keep, None])
    offsets = np.sum(normals * pts[keep], axis=1)
    xs = np.arange(x0, x1) + 0.5
    ys = np.arange(y0, y1) + 0.5
    sdf = (ys[:, None, None] * normals[:, 1] + xs[None, :, None] * normals[:, 0] - offsets).max(axis=2)
    alpha = np.clip(0.5 - sdf, 0.0, 1.0) * opacity
    region = canvas[y0:y1, x0:x1]
    region += alpha[..., None].astype(np.float32) * (np.asarray(color, np.float32) - region)


def convex_hull(pts: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain; `pts` [N, 2] -> hull vertices in order."""
    p = sorted(map(tuple, pts.tolist()))

    def half(seq: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for q in seq:
            while len(out) >= 2:
                (ax, ay), (bx, by) = out[-2], out[-1]
                if (bx - ax) * (q[1] - ay) - (by - ay) * (q[0] - ax) > 1e-12:
                    break
                out.pop()
            out.append(q)
        return out

    lower, upper = half(p), half(p[::-1])
    return np.array(lower[:-1] + upper[:-1])


def draw_prism(
    canvas: np.ndarray,
    camera: Camera,
    footprint: np.ndarray,
    z0: float,
    z1: float,
    color,
    *,
    detail: str = "full",
) -> None:
    """Draw a vertical prism over the convex `footprint` [N, 2] (world xy, counter-clockwise) from z0 to z1.

    The projected silhouette is filled first in a side colour so that anti-aliased seams between faces
    never show the table through; then, by `detail`: "full" adds the camera-facing side faces and the
    top, "top" only the top, "flat" nothing (fewer polygons for small per-frame parts like the gripper).
    """
    if detail not in ("full", "top", "flat"):
        raise ValueError(f"detail must be 'full', 'top' or 'flat', got {detail!r}")
    color = np.asarray(color, np.float32)
    n = len(footprint)
    bottom = np.column_stack([footprint, np.full(n, z0)])
    top = np.column_stack([footprint, np.full(n, z1)])
    pb, pt = camera.project(bottom), camera.project(top)
    fill_convex(canvas, convex_hull(np.concatenate([pb, pt])), shade(color, np.array([1.0, 0.0, 0.0])))
    if detail == "full":
        edges = np.roll(footprint, -1, axis=0) - footprint
        normals = np.column_stack([edges[:, 1], -edges[:, 0], np.zeros(n)])
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        for i in range(n):
            if normals[i] @ (camera.position - bottom[i]) <= 0:  # back face
                continue
            j = (i + 1) % n
            fill_convex(canvas, np.array([pb[i], pb[j], pt[j], pt[i]]), shade(color, normals[i]))
    if detail != "flat":
        fill_convex(canvas, pt, color)


def regular_polygon(center: np.ndarray, radius: float, sides: int, yaw: float = 0.0) -> np.ndarray:
    """Vertices [sides, 2] of a regular polygon, counter-clockwise, first vertex at angle `yaw`."""
    ang = yaw + 2 * np.pi * np.arange(sides) / sides
    return np.asarray(center, np.float64) + radius * np.column_stack([np.cos(ang), np.sin(ang)])
