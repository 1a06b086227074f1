"""Rollout videos: MP4 when imageio's ffmpeg plugin is installed, otherwise an animated GIF (Pillow only)."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def mp4_available() -> bool:
    """imageio writes MP4 only through the `imageio-ffmpeg` package (which ships its own ffmpeg binary)."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def slugify(text: str, max_len: int = 50) -> str:
    """A file-name-safe, lower-case version of `text` (task names and instructions)."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:max_len] or "episode"


def save_video(frames: Sequence[np.ndarray], path_stem: str | Path, fps: int = 30) -> Path:
    """Write `frames` (uint8 HxWx3) to `path_stem`.mp4 (or .gif without ffmpeg); returns the path.

    Written to a temporary name and renamed, so a crash never leaves a truncated video under the final name.
    """
    if len(frames) == 0:
        raise ValueError("save_video needs at least one frame")
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    arrays = [np.ascontiguousarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    if mp4_available():
        import imageio.v2 as imageio

        path = stem.with_name(stem.name + ".mp4")
        tmp = path.with_name(f".{path.name}.tmp.mp4")  # keep the suffix: imageio picks the format from it
        # macro_block_size=1 keeps odd frame sizes as they are instead of resizing with a warning.
        with imageio.get_writer(tmp, fps=fps, macro_block_size=1) as writer:
            for frame in arrays:
                writer.append_data(frame)
    else:
        from PIL import Image

        path = stem.with_name(stem.name + ".gif")
        tmp = path.with_name(f".{path.name}.tmp.gif")
        images = [Image.fromarray(f) for f in arrays]
        images[0].save(
            tmp, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0
        )
    os.replace(tmp, path)
    return path
