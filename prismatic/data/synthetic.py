"""Write small RLDS datasets with tfds, offline: for tests, benchmarks and the toy-env recorder.

`write_rlds(data_root, name, features, episodes)` writes any episodes to `<data_root>/<name>/<version>/`.
`write_synthetic(data_root, schema, ...)` generates random episodes with the feature schema of a real
dataset (`bridge_orig`, `fractal20220817_data`, `libero_spatial_no_noops`) and returns them, so tests
can recompute expected values from the raw numbers.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prismatic.data.errors import DataError
from prismatic.util.progress import is_terminal

Episode = dict[str, Any]  # {"steps": [step dicts], "episode_metadata": {...} (optional)}


def write_rlds(
    data_root: str | Path,
    name: str,
    features: Any,
    episodes: Iterable[Episode],
    *,
    version: str = "1.0.0",
    info_name: str | None = None,
    legacy_metadata: bool = False,
) -> Path:
    """Write `episodes` as a tfds dataset at `<data_root>/<name>/<version>` and return that folder.

    `info_name` is the name recorded inside `dataset_info.json` (and in the shard file names): real
    OXE folders can differ from it (e.g. `bridge_orig/` holds `bridge_dataset-train.tfrecord-*`).
    `legacy_metadata` strips the fields newer tfds releases add to `dataset_info.json`, mimicking
    directories written by older tfds versions.
    """
    import tensorflow_datasets as tfds

    # tfds draws its own nested bars, redrawn every 0.1 s: in a log they would be hundreds of lines, so
    # only on a terminal (as prismatic.util.progress does for ours).
    tfds.display_progress_bar(is_terminal(sys.stderr))
    info_name = info_name or name
    episodes = list(episodes)
    target = Path(data_root) / name / version
    if target.exists():
        raise DataError(f"{target} already exists; remove it or write under another name/version")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, ep in enumerate(episodes):
            yield f"episode_{i:06d}", ep

    cls = type(
        "SyntheticRLDS",
        (tfds.core.GeneratorBasedBuilder,),
        {
            "VERSION": tfds.core.Version(version),
            "name": info_name,
            "_info": _info,
            "_split_generators": _split_generators,
            "_generate_examples": _generate_examples,
        },
        skip_registration=True,
    )
    with tempfile.TemporaryDirectory(prefix="rlds_write_") as tmp:
        builder = cls(data_dir=tmp)
        builder.download_and_prepare(
            download_dir=str(Path(tmp) / "downloads"),
            download_config=tfds.download.DownloadConfig(verify_ssl=False),
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / info_name / version), str(target))
    if legacy_metadata:
        info_path = target / "dataset_info.json"
        info = json.loads(info_path.read_text())
        for split in info.get("splits", []):
            split.pop("filepathTemplate", None)
        info.pop("moduleName", None)
        info_path.write_text(json.dumps(info, indent=2))
    return target


# -- images -----------------------------------------------------------------------------------------------
def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random RGB image (gradients + blobs): compresses like a photo, unlike white noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b, p = rng.uniform(-1, 1, 3)
        img[..., c] = 128 + 60 * np.sin(a * x / 9 + p) + 60 * np.cos(b * y / 11 + p)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode_image(image: np.ndarray, fmt: str = "jpeg") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG" if fmt == "jpeg" else "PNG", quality=95)
    return buf.getvalue()


# -- schemas of real datasets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Schema:
    info_name: str  # the name real copies record in dataset_info.json
    features: Callable[[tuple[int, int]], Any]  # image (H, W) -> tfds FeaturesDict
    step: Callable[
        [np.random.Generator, int, int, str, tuple[int, int]], dict
    ]  # (rng, t, T, instruction, hw)
    image_size: tuple[int, int]  # the real dataset's image size
    metadata: Callable[[int], dict] | None = None


def _flags(t: int, n: int) -> dict:
    return {
        "is_first": t == 0,
        "is_last": t == n - 1,
        "is_terminal": t == n - 1,
        "reward": float(t == n - 1),
        "discount": 1.0,
    }


def rlds_flag_features() -> dict[str, Any]:
    """The per-step bookkeeping every RLDS dataset carries (reward, discount, episode boundaries)."""
    import tensorflow_datasets as tfds

    flag = tfds.features.Scalar(dtype=np.bool_)
    return {
        "discount": tfds.features.Scalar(dtype=np.float32),
        "reward": tfds.features.Scalar(dtype=np.float32),
        "is_first": flag,
        "is_last": flag,
        "is_terminal": flag,
    }


def _bridge_features(hw):
    import tensorflow_datasets as tfds

    f32 = np.float32
    obs = {
        f"image_{i}": tfds.features.Image(shape=(*hw, 3), dtype=np.uint8, encoding_format="jpeg")
        for i in range(4)
    }
    obs["state"] = tfds.features.Tensor(shape=(7,), dtype=f32)
    return tfds.features.FeaturesDict(
        {
            "steps": tfds.features.Dataset(
                {
                    "observation": tfds.features.FeaturesDict(obs),
                    "action": tfds.features.Tensor(shape=(7,), dtype=f32),
                    **rlds_flag_features(),
                    "language_instruction": tfds.features.Text(),
                    "language_embedding": tfds.features.Tensor(shape=(512,), dtype=f32),
                }
            ),
            "episode_metadata": tfds.features.FeaturesDict(
                {
                    "file_path": tfds.features.Text(),
                    "has_image_0": tfds.features.Scalar(dtype=np.bool_),
                    "has_image_1": tfds.features.Scalar(dtype=np.bool_),
                    "has_image_2": tfds.features.Scalar(dtype=np.bool_),
                    "has_image_3": tfds.features.Scalar(dtype=np.bool_),
                    "has_language": tfds.features.Scalar(dtype=np.bool_),
                    "episode_id": tfds.features.Scalar(dtype=np.int32),
                }
            ),
        }
    )


def _bridge_step(rng, t, n, instruction, hw):
    action = rng.uniform(-0.05, 0.05, 7).astype(np.float32)
    action[6] = float(rng.random() < 0.6)  # gripper: 1 open / 0 closed, continuous in real data
    images = {f"image_{i}": smooth_image(rng, *hw) for i in range(4)}
    return {
        "observation": {**images, "state": rng.normal(0, 0.1, 7).astype(np.float32)},
        "action": action,
        "language_instruction": instruction,
        "language_embedding": np.zeros(512, np.float32),
        **_flags(t, n),
    }


def _bridge_meta(i: int) -> dict:
    return {
        "file_path": f"/bridge/traj{i}",
        "has_image_0": True,
        "has_image_1": True,
        "has_image_2": False,
        "has_image_3": False,
        "has_language": True,
        "episode_id": i,
    }


def _fractal_features(hw):
    import tensorflow_datasets as tfds

    f32 = np.float32

    def t(*shape, dtype=f32):
        return tfds.features.Tensor(shape=shape, dtype=dtype)

    obs = {
        "image": tfds.features.Image(shape=(*hw, 3), dtype=np.uint8, encoding_format="jpeg"),
        "base_pose_tool_reached": t(7),
        "gripper_closed": t(1),
        "gripper_closedness_commanded": t(1),
        "height_to_bottom": t(1),
        "natural_language_embedding": t(512),
        "natural_language_instruction": tfds.features.Text(),
        "orientation_box": t(2, 3),
        "orientation_start": t(4),
        "robot_orientation_positions_box": t(3, 3),
        "rotation_delta_to_go": t(3),
        "src_rotation": t(4),
        "vector_to_go": t(3),
        "workspace_bounds": t(3, 3),
    }
    action = {
        "base_displacement_vector": t(2),
        "base_displacement_vertical_rotation": t(1),
        "gripper_closedness_action": t(1),
        "rotation_delta": t(3),
        "terminate_episode": t(3, dtype=np.int32),
        "world_vector": t(3),
    }
    return tfds.features.FeaturesDict(
        {
            "steps": tfds.features.Dataset(
                {
                    "observation": tfds.features.FeaturesDict(obs),
                    "action": tfds.features.FeaturesDict(action),
                    **rlds_flag_features(),
                }
            )
        }
    )


def _fractal_step(rng, t, n, instruction, hw):
    f = lambda *s: rng.normal(0, 0.1, s).astype(np.float32)  # noqa: E731
    gripper = np.float32(rng.choice([-1.0, 0.0, 0.0, 1.0]))  # relative: +1 close, -1 open, 0 keep
    return {
        "observation": {
            "image": smooth_image(rng, *hw),
            "base_pose_tool_reached": f(7),
            "gripper_closed": np.array([float(rng.random() < 0.5)], np.float32),
            "gripper_closedness_commanded": f(1),
            "height_to_bottom": f(1),
            "natural_language_embedding": np.zeros(512, np.float32),
            "natural_language_instruction": instruction,
            "orientation_box": f(2, 3),
            "orientation_start": f(4),
            "robot_orientation_positions_box": f(3, 3),
            "rotation_delta_to_go": f(3),
            "src_rotation": f(4),
            "vector_to_go": f(3),
            "workspace_bounds": f(3, 3),
        },
        "action": {
            "base_displacement_vector": f(2),
            "base_displacement_vertical_rotation": f(1),
            "gripper_closedness_action": np.array([gripper], np.float32),
            "rotation_delta": f(3),
            "terminate_episode": np.array([0, 1, 0] if t < n - 1 else [1, 0, 0], np.int32),
            "world_vector": f(3),
        },
        **_flags(t, n),
    }


def _libero_features(hw):
    import tensorflow_datasets as tfds

    f32 = np.float32
    return tfds.features.FeaturesDict(
        {
            "steps": tfds.features.Dataset(
                {
                    "observation": tfds.features.FeaturesDict(
                        {
                            "image": tfds.features.Image(
                                shape=(*hw, 3), dtype=np.uint8, encoding_format="jpeg"
                            ),
                            "wrist_image": tfds.features.Image(
                                shape=(*hw, 3), dtype=np.uint8, encoding_format="jpeg"
                            ),
                            "state": tfds.features.Tensor(shape=(8,), dtype=f32),
                            "joint_state": tfds.features.Tensor(shape=(7,), dtype=f32),
                        }
                    ),
                    "action": tfds.features.Tensor(shape=(7,), dtype=f32),
                    **rlds_flag_features(),
                    "language_instruction": tfds.features.Text(),
                }
            ),
            "episode_metadata": tfds.features.FeaturesDict({"file_path": tfds.features.Text()}),
        }
    )


def _libero_step(rng, t, n, instruction, hw):
    action = rng.uniform(-0.9, 0.9, 7).astype(np.float32)
    action[6] = rng.choice([-1.0, 1.0])  # -1 open, +1 close in raw LIBERO
    return {
        "observation": {
            "image": smooth_image(rng, *hw),
            "wrist_image": smooth_image(rng, *hw),
            "state": rng.normal(0, 0.2, 8).astype(np.float32),
            "joint_state": rng.normal(0, 0.5, 7).astype(np.float32),
        },
        "action": action,
        "language_instruction": instruction,
        **_flags(t, n),
    }


SCHEMAS: dict[str, Schema] = {
    "bridge_orig": Schema("bridge_dataset", _bridge_features, _bridge_step, (256, 256), _bridge_meta),
    "fractal20220817_data": Schema("fractal20220817_data", _fractal_features, _fractal_step, (256, 320)),
    "libero_spatial_no_noops": Schema(
        "libero_spatial_no_noops",
        _libero_features,
        _libero_step,
        (256, 256),
        lambda i: {"file_path": f"/libero/demo_{i}.hdf5"},
    ),
}


def make_episodes(
    schema: str,
    *,
    num_episodes: int,
    episode_len: int | Sequence[int],
    image_size: tuple[int, int] | None = None,
    instructions: Sequence[str] = ("Pick up the red block", "put the spoon in the pot"),
    seed: int = 0,
) -> list[Episode]:
    if schema not in SCHEMAS:
        raise DataError(f"Unknown synthetic schema {schema!r}; choose one of: {', '.join(SCHEMAS)}")
    s = SCHEMAS[schema]
    hw = image_size or s.image_size
    rng = np.random.default_rng(seed)
    lengths = [episode_len] * num_episodes if isinstance(episode_len, int) else list(episode_len)
    episodes = []
    for i, n in enumerate(lengths):
        instr = instructions[i % len(instructions)]
        ep: Episode = {"steps": [s.step(rng, t, n, instr, hw) for t in range(n)]}
        if s.metadata is not None:
            ep["episode_metadata"] = s.metadata(i)
        episodes.append(ep)
    return episodes


def write_synthetic(
    data_root: str | Path,
    schema: str,
    *,
    name: str | None = None,
    num_episodes: int = 4,
    episode_len: int | Sequence[int] = 8,
    image_size: tuple[int, int] | None = None,
    instructions: Sequence[str] = ("Pick up the red block", "put the spoon in the pot"),
    seed: int = 0,
    episodes: list[Episode] | None = None,
    version: str = "1.0.0",
    legacy_metadata: bool = False,
) -> list[Episode]:
    """Write a dataset with a real dataset's schema (stored as `name`, default the schema name); return its episodes."""
    s = SCHEMAS.get(schema)
    if s is None:
        raise DataError(f"Unknown synthetic schema {schema!r}; choose one of: {', '.join(SCHEMAS)}")
    hw = image_size or s.image_size
    if episodes is None:
        episodes = make_episodes(
            schema,
            num_episodes=num_episodes,
            episode_len=episode_len,
            image_size=hw,
            instructions=instructions,
            seed=seed,
        )
    write_rlds(
        data_root,
        name or schema,
        s.features(hw),
        episodes,
        version=version,
        info_name=s.info_name if name is None else name,
        legacy_metadata=legacy_metadata,
    )
    return episodes
