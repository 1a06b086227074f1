"""Our small tf.data layer over RLDS datasets (what the original borrowed from dlimp).

A *trajectory* element is a nested dict of tensors that all share a leading time axis T (the RLDS
`steps`, batched, plus the episode metadata broadcast to T under `traj_metadata`). Images stay
encoded (JPEG/PNG bytes) until after the shuffle buffer so host RAM holds compressed frames.

Datasets are read with `tfds.builder_from_directory`, so neither the dataset's builder code nor a
registered name is needed, and directories written by older tfds releases (OXE was published with
~4.9.2-4.9.3, where the name inside `dataset_info.json` may differ from the folder name) load too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf
import tensorflow_datasets as tfds

from prismatic.data.errors import DataError
from prismatic.data.locate import LAYOUT, find_dataset_dir

log = logging.getLogger(__name__)

Trajectory = dict[str, Any]
AUTOTUNE = tf.data.AUTOTUNE

# TF must never grab a GPU the torch side uses.
try:
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # already initialised by someone else: nothing left to hide
    pass


# -- locating datasets: prismatic.data.locate (no TensorFlow there) -----------------------------
def open_builder(data_root: str | Path, name: str, version: str | None = None) -> tfds.core.DatasetBuilder:
    """A tfds builder for an RLDS dataset directory (no builder code or registration needed)."""
    path = find_dataset_dir(data_root, name, version)
    try:
        return tfds.builder_from_directory(str(path))
    except Exception as e:  # tfds raises a zoo of types for corrupt metadata
        raise DataError(
            f"Cannot open dataset {name!r} at {path}: {type(e).__name__}: {e}. "
            f"It must be a tfds-prepared directory ({LAYOUT} plus features.json and the tfrecord shards)."
        ) from e


def dataset_fingerprint(builder: tfds.core.DatasetBuilder) -> str:
    """Text that changes when the data on disk changes: metadata plus each shard's name, size, mtime."""
    root = Path(builder.data_dir)
    parts = []
    for meta in ("dataset_info.json", "features.json"):
        if (root / meta).is_file():
            parts.append((root / meta).read_text())
    for f in sorted(root.iterdir()):
        skip = f.name.startswith((".", "dataset_statistics")) or f.name in (
            "dataset_info.json",
            "features.json",
        )
        if f.is_file() and not skip:
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return "\n".join(parts)


def split_for(builder: tfds.core.DatasetBuilder, train: bool) -> str:
    """The original's convention: a `val` split if there is one, else the last 5% of `train`."""
    if "val" in builder.info.splits:
        return "train" if train else "val"
    return "train[:95%]" if train else "train[95%:]"


# -- reading --------------------------------------------------------------------------------------
def _steps_to_top_level(episode: dict[str, Any]) -> Trajectory:
    episode = dict(episode)
    steps = dict(episode.pop("steps"))
    length = tf.shape(tf.nest.flatten(steps)[0])[0]
    # Episode-level metadata becomes per-frame so every leaf shares the time axis.
    meta = tf.nest.map_structure(lambda x: tf.repeat(x[None], length, axis=0), episode)
    if "traj_metadata" in steps:
        raise DataError("RLDS steps already contain a 'traj_metadata' key, which this pipeline reserves.")
    steps["traj_metadata"] = meta
    return steps


def read_trajectories(
    builder: tfds.core.DatasetBuilder,
    split: str,
    *,
    shuffle: bool,
    seed: int | None = None,
    num_parallel_reads: int = AUTOTUNE,
) -> tf.data.Dataset:
    """Trajectories of one split; images left encoded; file order shuffled (seeded) when `shuffle`."""
    read_config = tfds.ReadConfig(
        shuffle_seed=seed,
        skip_prefetch=True,
        num_parallel_calls_for_interleave_files=num_parallel_reads,
        interleave_cycle_length=num_parallel_reads,
    )
    try:
        ds = builder.as_dataset(
            split=split,
            shuffle_files=shuffle,
            decoders={"steps": tfds.decode.SkipDecoding()},
            read_config=read_config,
        )
    except Exception as e:
        hint = (
            " The validation split is the last 5% of `train` (the dataset has no `val` split): it has too few"
            " trajectories for one; use train=True or a dataset with a `val` split."
            if split.startswith("train[95%")
            else ""
        )
        raise DataError(
            f"Cannot read split {split!r} of {builder.name!r} at {builder.data_dir}: {e}. "
            f"Splits present: {', '.join(builder.info.splits.keys())}.{hint}"
        ) from e
    if "steps" not in ds.element_spec:
        raise DataError(
            f"{builder.data_dir} is not an RLDS dataset: episodes have keys "
            f"{sorted(ds.element_spec)}, but no 'steps'."
        )
    return ds.map(_steps_to_top_level, num_parallel_calls=num_parallel_reads, deterministic=True)


def traj_length(traj: Trajectory) -> tf.Tensor:
    return tf.shape(traj["action"])[0]


def flatten(ds: tf.data.Dataset, num_parallel_calls: int = AUTOTUNE) -> tf.data.Dataset:
    """Trajectories -> frames (the order within and across trajectories is kept deterministic)."""
    return ds.interleave(
        tf.data.Dataset.from_tensor_slices,
        cycle_length=num_parallel_calls,
        num_parallel_calls=num_parallel_calls,
        deterministic=True,
    )


def map_frames_per_traj(
    ds: tf.data.Dataset, fn: Callable[[Trajectory], Trajectory], num_parallel_calls: int = AUTOTUNE
) -> tf.data.Dataset:
    """Apply a per-frame function inside each trajectory, keeping whole trajectories (episodic mode)."""
    # One batch of exactly the trajectory's length (a huge constant would be preallocated by `batch`).
    return ds.flat_map(
        lambda traj: (
            tf.data.Dataset.from_tensor_slices(traj)
            .map(fn, num_parallel_calls=num_parallel_calls, deterministic=True)
            .batch(tf.cast(traj_length(traj), tf.int64))
        )
    )


def with_options(ds: tf.data.Dataset, *, ram_budget_gb: float | None, deterministic: bool) -> tf.data.Dataset:
    """Autotune with a RAM budget (tf.data then trades parallelism/prefetch for memory) and determinism."""
    options = tf.data.Options()
    options.autotune.enabled = True
    options.deterministic = deterministic
    options.experimental_optimization.map_and_filter_fusion = True
    options.experimental_warm_start = True
    if ram_budget_gb is not None:
        options.autotune.ram_budget = int(ram_budget_gb * 1024**3)
    return ds.with_options(options)


def describe_keys(spec: Any, prefix: str = "") -> list[str]:
    """Flat 'a/b/c' names of a (nested) element_spec, for error messages."""
    if isinstance(spec, dict):
        out: list[str] = []
        for k, v in spec.items():
            out.extend(describe_keys(v, f"{prefix}{k}/"))
        return out
    return [prefix.rstrip("/")]
