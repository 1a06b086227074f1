"""Serving test helpers: a server on 127.0.0.1 with an ephemeral port (stopped after each use), and a
fake chunk model (two cameras, proprio, chunks of 4) that implements the VLA action-chunk contract
without weights, so multi-camera, proprio and chunk paths are tested in milliseconds."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np

from prismatic.serve import ServeConfig, ServedModel


@contextlib.contextmanager
def running(model: ServedModel, **settings) -> Iterator:
    """The app for `model` served on a free port of 127.0.0.1 for the duration of the block."""
    from prismatic.serve.app import create_app
    from prismatic.serve.server import BackgroundServer

    config = ServeConfig(checkpoint="(in memory)", port=0, **settings)
    with BackgroundServer(create_app(model, config), config) as server:
        yield server


def _stats(low: float, high: float, dim: int) -> dict:
    return {"action": {"q01": [low] * dim, "q99": [high] * dim, "mask": [True] * dim}}


class FakeChunkVLA:
    """Contract-only VLA: cameras (primary, wrist), proprio_dim 8, chunk_len 4, action_dim 7 (or one camera
    and no proprio with `cameras=("primary",), proprio_dim=0`).

    Each chunk is a deterministic function of the whole request (the images, the instruction, the proprio
    state and the unnorm key), so a test can recompute the exact expected answer; `calls` records the batch
    size of every model call; an instruction containing "explode" makes the call fail.
    """

    chunk_len = 4

    def __init__(self, cameras: tuple[str, ...] = ("primary", "wrist"), proprio_dim: int = 8) -> None:
        self.cameras, self.proprio_dim = cameras, proprio_dim
        self.norm_stats = {"libero_spatial": _stats(-1.0, 1.0, 7), "aloha": _stats(-2.0, 2.0, 7)}
        self.config = SimpleNamespace(
            vision_backbone_id="fake-vit", llm_backbone_id="fake-llm", image_sizes=[224, 224]
        )
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def action_dim(self, unnorm_key: str | None = None) -> int:
        return 7

    @staticmethod
    def expected(images, instruction: str, proprio, unnorm_key: str) -> np.ndarray:
        base = sum((k + 1) * np.asarray(im, dtype=np.float64).mean() / 255 for k, im in enumerate(images))
        base += 0.1 * len(instruction) + (0.0 if proprio is None else float(np.sum(proprio)))
        scale = 1.0 if unnorm_key == "libero_spatial" else 2.0
        t, d = np.meshgrid(np.arange(4), np.arange(7), indexing="ij")
        return scale * (base + 0.01 * t + 0.001 * d)

    def predict_chunks(self, images, instructions, unnorm_key=None, proprio=None, **kwargs) -> np.ndarray:
        with self._lock:
            self.calls.append(len(images))
        if any("explode" in i for i in instructions):
            raise RuntimeError("simulated CUDA out of memory")
        assert all(len(im) == len(self.cameras) for im in images)
        if self.proprio_dim:
            assert proprio is not None and proprio.shape == (len(images), self.proprio_dim)
        else:
            assert proprio is None
        rows = proprio if proprio is not None else [None] * len(images)
        return np.stack(
            [self.expected(im, ins, p, unnorm_key) for im, ins, p in zip(images, instructions, rows)]
        )
