"""Build the training / evaluation stream: read -> standardise -> clean -> normalise -> relabel/chunk ->
flatten -> mix by weight -> shuffle (encoded frames) -> decode/resize -> augment.

Order matters for memory: the shuffle buffer holds frames whose images are still JPEG/PNG bytes, and
decoding + resizing happen after it, so host RAM scales with the *encoded* size of the buffer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from prismatic.data import rlds, traj_transforms
from prismatic.data.augment import AugmentConfig
from prismatic.data.errors import DataError
from prismatic.data.locate import check_datasets_present
from prismatic.data.obs_transforms import augment, decode_and_resize, over_window
from prismatic.data.spec import DatasetSpec, Mixture, get_dataset_spec, resolve_mixture
from prismatic.data.statistics import get_dataset_statistics
from prismatic.normalization import NormalizationType

log = logging.getLogger(__name__)

Size = tuple[int, int]


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that shapes the stream. Defaults reproduce OpenVLA's training configuration."""

    resize_size: Size | Mapping[str, Size] = (224, 224)
    depth_resize_size: Size | Mapping[str, Size] = (224, 224)
    camera_views: tuple[str, ...] = ("primary",)
    load_proprio: bool = False
    load_depth: bool = False
    # trajectory transforms
    window_size: int = 1
    future_action_window_size: int = 0
    drop_incomplete_chunks: bool = False  # drop the last `future` frames (OpenVLA-OFT) instead of padding the chunk
    skip_unlabeled: bool = True
    goal_relabeling: str | None = "uniform"
    subsample_length: int | None = None
    max_action: float | None = None
    max_proprio: float | None = None
    noop_filter: str = "none"
    fail_on_nonfinite: bool = False
    normalization_type: NormalizationType | str | None = None  # None: each spec's own
    # frame transforms
    image_augment: AugmentConfig | None = None
    # mixing / feeding
    shuffle_buffer_size: int = 256_000
    balance_weights: bool = True
    traj_transform_threads: int | None = None  # total over datasets; None = autotune per dataset
    traj_read_threads: int | None = None
    frame_threads: int | None = None  # decode/resize/augment; None = autotune
    batch_size: int | None = None  # None: the torch collator batches
    ram_budget_gb: float | None = 1.0
    seed: int = 0
    deterministic: bool = True
    statistics_cache_dir: str | None = None
    spec_files: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise DataError(f"window_size must be >= 1, got {self.window_size}")
        if self.future_action_window_size < 0:
            raise DataError(f"future_action_window_size must be >= 0, got {self.future_action_window_size}")
        if self.goal_relabeling is not None and self.goal_relabeling not in traj_transforms.GOAL_RELABELING:
            raise DataError(
                f"Unknown goal_relabeling {self.goal_relabeling!r}; choose one of: "
                f"{', '.join(traj_transforms.GOAL_RELABELING)} or None"
            )
        if self.noop_filter not in traj_transforms.NOOP_FILTERS:
            raise DataError(
                f"Unknown noop_filter {self.noop_filter!r}; choose one of: {', '.join(traj_transforms.NOOP_FILTERS)}"
            )
        if self.shuffle_buffer_size < 1:
            raise DataError(f"shuffle_buffer_size must be >= 1, got {self.shuffle_buffer_size}")
        if self.normalization_type is not None:
            NormalizationType.parse(self.normalization_type, "normalization_type")


@dataclass
class RLDSStream:
    dataset: tf.data.Dataset  # frames (or trajectories in episodic mode)
    length: int  # frames until every primary dataset was seen about once (the original's `dataset_len`)
    statistics: dict[str, dict[str, Any]]  # {dataset_name: stats}, the dataset_statistics.json content
    weights: dict[str, float]  # normalised sampling weights


# -- helpers ------------------------------------------------------------------------------------------------
def allocate_threads(n: int | None, weights: Sequence[float]) -> list[int]:
    """Split `n` threads over datasets by weight: every dataset with weight > 0 gets at least one, the
    rest goes by largest remainder; the total is exactly `n`. `None` means autotune for every dataset."""
    w = np.asarray(weights, dtype=np.float64)
    if n is None:
        return [tf.data.AUTOTUNE] * len(w)
    if np.any(w < 0) or w.sum() <= 0:
        raise DataError(f"Sampling weights must be non-negative with a positive sum; got {list(weights)}")
    if n < len(w):
        raise DataError(
            f"Need at least one thread per dataset: {n} threads for {len(w)} datasets; raise the thread count"
        )
    alloc = np.zeros(len(w), dtype=int)
    share = w / w.sum()
    left = n
    while True:  # datasets that would round below one thread get exactly one, then re-split the rest
        small = (share * left < 1) & (share > 0)
        if not small.any():
            break
        alloc[small] += 1
        left -= int(small.sum())
        share[small] = 0
        share = share / share.sum() if share.sum() > 0 else share
    exact = share * left
    whole = np.floor(exact).astype(int)
    alloc += whole
    for i in np.argsort(-(exact - whole), kind="stable")[: left - int(whole.sum())]:
        alloc[i] += 1
    return alloc.tolist()


def _seed(*parts: int) -> int:
    """A 31-bit seed derived from (config seed, rank, dataset index, purpose)."""
    return int(np.random.SeedSequence([int(p) % (2**32) for p in parts]).generate_state(1)[0] >> 1)


def _sizes(size: Size | Mapping[str, Size], views: Sequence[str], flag: str) -> dict[str, Size]:
    if isinstance(size, Mapping):
        missing = [v for v in views if v not in size]
        if missing:
            raise DataError(f"`{flag}` has no size for camera view(s) {missing}; it has {list(size)}")
        return {v: tuple(size[v]) for v in views}  # type: ignore[misc]
    if len(size) != 2:
        raise DataError(f"`{flag}` must be (height, width), got {size!r}")
    return {v: (int(size[0]), int(size[1])) for v in views}


# -- per-dataset trajectory pipeline ---------------------------------------------------------------------------------
@dataclass
class _Source:
    spec: DatasetSpec
    builder: Any
    statistics: dict[str, Any]
    element_spec: Any


def _open_sources(data_root: str | Path, specs: Sequence[DatasetSpec], config: PipelineConfig) -> list[_Source]:
    """Validate every dataset (paths, keys) first, then compute/load statistics (the expensive part)."""
    check_datasets_present(data_root, [(spec.name, spec.version) for spec in specs])  # all absent ones at once
    opened = []
    for spec in specs:
        builder = rlds.open_builder(data_root, spec.name, spec.version)
        probe = rlds.read_trajectories(builder, "all", shuffle=False, num_parallel_reads=1)
        std_spec = traj_transforms.standardize_and_check(spec, probe.element_spec)
        traj_transforms.check_restructure_keys(
            spec, std_spec, config.camera_views, config.load_proprio, config.load_depth
        )
        opened.append((spec, builder, probe.element_spec))
    sources = []
    for spec, builder, element_spec in opened:
        stats = get_dataset_statistics(
            builder,
            spec,
            load_proprio=config.load_proprio,
            noop_filter=config.noop_filter,
            fail_on_nonfinite=config.fail_on_nonfinite,
            cache_dir=config.statistics_cache_dir,
        )
        sources.append(_Source(spec, builder, stats, element_spec))
    return sources


def _base_trajectories(
    src: _Source, config: PipelineConfig, *, train: bool, shuffle: bool, seed: int, threads: int, reads: int
) -> tf.data.Dataset:
    """Standardised, cleaned, normalised and filtered trajectories of one dataset (not repeated)."""
    spec = src.spec
    kind = NormalizationType.parse(config.normalization_type or spec.normalization_type, "normalization_type")
    ds = rlds.read_trajectories(
        src.builder, rlds.split_for(src.builder, train), shuffle=shuffle, seed=seed, num_parallel_reads=reads
    )
    restructure = partial(
        traj_transforms.restructure,
        spec=spec,
        camera_views=config.camera_views,
        load_proprio=config.load_proprio,
        load_depth=config.load_depth,
    )
    ds = ds.map(restructure, num_parallel_calls=threads)
    ds = ds.map(
        partial(
            traj_transforms.clean_frames,
            noop_filter=config.noop_filter,
            fail_on_nonfinite=config.fail_on_nonfinite,
        ),
        num_parallel_calls=threads,
    )
    ds = ds.filter(lambda t: rlds.traj_length(t) > 0)
    ds = ds.map(
        partial(traj_transforms.normalize_action_and_proprio, statistics=src.statistics, kind=kind),
        num_parallel_calls=threads,
    )
    if config.skip_unlabeled:
        ds = ds.filter(lambda t: tf.reduce_any(t["task"]["language_instruction"] != ""))
    if config.max_action is not None:
        ds = ds.filter(lambda t: tf.reduce_all(tf.abs(t["action"]) <= config.max_action))
    if config.max_proprio is not None and config.load_proprio:
        ds = ds.filter(lambda t: tf.reduce_all(tf.abs(t["observation"]["proprio"]) <= config.max_proprio))
    return ds


def _check_not_empty(ds: tf.data.Dataset, spec: DatasetSpec, config: PipelineConfig, split: str) -> None:
    """Fail now (not as a silent endless loop inside `repeat`) if filtering removed everything."""
    for _ in ds.take(1):
        return
    raise DataError(
        f"Dataset {spec.name!r} (split {split!r}) is empty after filtering: skip_unlabeled={config.skip_unlabeled}, "
        f"max_action={config.max_action}, max_proprio={config.max_proprio}, noop_filter={config.noop_filter!r}. "
        "Check that its trajectories have language instructions and valid actions, or relax these options."
    )


def _relabel_and_chunk(
    ds: tf.data.Dataset, config: PipelineConfig, *, train: bool, seed: int, threads: int
) -> tf.data.Dataset:
    def fn(counter: tf.Tensor, traj: dict[str, Any]) -> dict[str, Any]:
        traj = traj_transforms.add_pad_mask_dict(traj)
        traj_seed = tf.stack([tf.constant(seed, tf.int64), counter])
        if config.goal_relabeling is not None:
            traj = traj_transforms.GOAL_RELABELING[config.goal_relabeling](traj, traj_seed)
        traj = traj_transforms.chunk_act_obs(traj, config.window_size, config.future_action_window_size)
        if config.drop_incomplete_chunks and config.future_action_window_size:
            keep = tf.maximum(rlds.traj_length(traj) - config.future_action_window_size, 0)
            traj = tf.nest.map_structure(lambda x: x[:keep], traj)
        if train and config.subsample_length is not None:
            traj = traj_transforms.subsample(traj, config.subsample_length, traj_seed + 1)
        return traj

    return ds.enumerate().map(fn, num_parallel_calls=threads)


def _frame_fn(config: PipelineConfig, *, train: bool):
    sizes = _sizes(config.resize_size, config.camera_views, "resize_size")
    depth_sizes = (
        _sizes(config.depth_resize_size, config.camera_views, "depth_resize_size")
        if config.load_depth
        else {}
    )
    decode = partial(decode_and_resize, resize_size=sizes, depth_resize_size=depth_sizes)

    def fn(frame: dict[str, Any], seed: tf.Tensor | None) -> dict[str, Any]:
        frame = dict(frame)
        frame["task"] = decode(frame["task"])
        frame["observation"] = over_window(decode, frame["observation"])
        if train and config.image_augment is not None and seed is not None:
            aug = partial(augment, seed=seed, config=config.image_augment)
            frame["task"] = aug(frame["task"])  # same seed: goal and observation see the same augmentation
            frame["observation"] = over_window(aug, frame["observation"])
        return frame

    return fn


def _mixture_weights(
    sources: Sequence[_Source], weights: Sequence[float], balance: bool
) -> tuple[np.ndarray, int]:
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0) or w.sum() <= 0:
        raise DataError(f"Sampling weights must be non-negative with a positive sum; got {list(weights)}")
    sizes = np.asarray([s.statistics["num_transitions"] for s in sources], dtype=np.float64)
    primary = w == 1.0  # the original counts an "epoch" over datasets given weight exactly 1
    if balance:  # equal weights then mean: one pass over every dataset per epoch, in expectation
        w = w * sizes
    w = w / w.sum()
    with np.errstate(divide="ignore"):
        ratio = np.where(w > 0, sizes / np.where(w > 0, w, 1), 0)
    length = int(ratio[primary].max() if primary.any() else ratio.max())
    return w, length


# -- public builders -----------------------------------------------------------------------------------------
def make_dataset(
    data_root: str | Path,
    mixture: Mixture,
    config: PipelineConfig = PipelineConfig(),
    *,
    train: bool = True,
    rank: int = 0,
    world_size: int = 1,
    skip: int = 0,
) -> RLDSStream:
    """The interleaved, shuffled frame stream for a mixture (named, a dataset name, or (dataset, weight) pairs).

    Each distributed rank gets its own stream (all seeds are derived from (config.seed, rank)); the same
    (seed, rank) reproduces the same stream when `config.deterministic`. `skip` drops the first frames
    before they are decoded (resuming a run exactly where it stopped, without decoding what it saw).
    """
    if not 0 <= rank < max(world_size, 1):
        raise DataError(f"rank must be in [0, world_size={world_size}), got {rank}")
    pairs = resolve_mixture(mixture, config.spec_files)
    specs, raw_weights = [p[0] for p in pairs], [p[1] for p in pairs]
    sources = _open_sources(data_root, specs, config)
    weights, length = _mixture_weights(sources, raw_weights, config.balance_weights)
    log.info(
        "Data mixture (normalised sampling weights):\n%s",
        "\n".join(f"  {s.spec.name:<50s} {w:.4f}" for s, w in zip(sources, weights)),
    )
    threads = allocate_threads(config.traj_transform_threads, weights)
    reads = allocate_threads(config.traj_read_threads, weights)

    frames = []
    for i, (src, t, r) in enumerate(zip(sources, threads, reads)):
        read_seed = _seed(config.seed, rank, i, 0)
        ds = _base_trajectories(src, config, train=train, shuffle=train, seed=read_seed, threads=t, reads=r)
        _check_not_empty(ds, src.spec, config, rlds.split_for(src.builder, train))
        ds = _relabel_and_chunk(
            ds.repeat(), config, train=train, seed=_seed(config.seed, rank, i, 1), threads=t
        )
        ds = rlds.flatten(ds, t)
        chunk_filter = src.spec.build_chunk_filter()
        if chunk_filter is not None:  # per-dataset frame filter on normalised chunks (e.g. DROID idle frames)
            ds = ds.filter(chunk_filter)
        frames.append(ds)

    if len(frames) == 1:
        ds = frames[0]
    else:
        ds = tf.data.Dataset.sample_from_datasets(
            frames,
            weights=weights.tolist(),
            seed=_seed(config.seed, rank, 10**6),
            stop_on_empty_dataset=False,
        )
    if not train:
        # Validation: a fixed buffer of frames cached in RAM (bounded memory, same frames every pass).
        ds = ds.take(config.shuffle_buffer_size).cache()
    ds = ds.shuffle(
        config.shuffle_buffer_size, seed=_seed(config.seed, rank, 10**6 + 1), reshuffle_each_iteration=True
    )

    frame_fn = _frame_fn(config, train=train)
    aug_seed = _seed(config.seed, rank, 10**6 + 2)
    ds = ds.enumerate()  # the frame index seeds augmentation, so a skip keeps later frames identical
    if skip:
        ds = ds.skip(skip)
    ds = ds.map(
        lambda n, f: frame_fn(f, tf.stack([tf.constant(aug_seed, tf.int64), n])),
        num_parallel_calls=config.frame_threads or tf.data.AUTOTUNE,
    )
    if config.batch_size is not None:
        ds = ds.batch(config.batch_size)
    ds = rlds.with_options(ds, ram_budget_gb=config.ram_budget_gb, deterministic=config.deterministic)
    stats = {s.spec.name: s.statistics for s in sources}
    return RLDSStream(ds, length, stats, {s.spec.name: float(w) for s, w in zip(sources, weights)})


def make_episodic_dataset(
    data_root: str | Path,
    dataset: DatasetSpec | str,
    config: PipelineConfig = PipelineConfig(),
    *,
    train: bool = False,
) -> RLDSStream:
    """Whole trajectories in file order (no shuffle, no repeat, no augmentation), for evaluation/visualisation."""
    spec = dataset if isinstance(dataset, DatasetSpec) else get_dataset_spec(dataset, config.spec_files)
    (src,) = _open_sources(data_root, [spec], config)
    reads = config.traj_read_threads or tf.data.AUTOTUNE
    threads = config.traj_transform_threads or tf.data.AUTOTUNE
    ds = _base_trajectories(
        src,
        config,
        train=train,
        shuffle=False,
        seed=_seed(config.seed, 0, 0, 0),
        threads=threads,
        reads=reads,
    )
    ds = _relabel_and_chunk(ds, config, train=False, seed=_seed(config.seed, 0, 0, 1), threads=threads)
    frame_fn = _frame_fn(config, train=False)
    ds = rlds.map_frames_per_traj(ds, lambda f: frame_fn(f, None), config.frame_threads or tf.data.AUTOTUNE)
    ds = rlds.with_options(ds, ram_budget_gb=config.ram_budget_gb, deterministic=True)
    n = int(src.statistics["num_transitions"])
    return RLDSStream(ds, n, {spec.name: src.statistics}, {spec.name: 1.0})
