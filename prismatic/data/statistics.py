"""Normalisation statistics of a dataset: computed once, cached atomically, keyed by data + spec.

Format (the original's `dataset_statistics.json`, one entry per dataset):
    {name: {"action": {"mean","std","max","min","q01","q99", "mask"}, "proprio": {...},
            "num_transitions": int, "num_trajectories": int}}
The cache file additionally records `num_nonfinite_frames` (frames dropped for NaN/inf actions).

CLI: `python -m prismatic.data.statistics --data-root DIR --dataset NAME [--dataset-config spec.yaml]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prismatic.data.errors import DataError
from prismatic.data.spec import STANDARDIZE_OPS, DatasetSpec, get_dataset_spec
from prismatic.util.io import atomic_write_json
from prismatic.util.progress import progress

log = logging.getLogger(__name__)

# Bump when the way statistics are computed changes (invalidates every cache entry).
# 2: num_trajectories counts every episode read, also one left empty by its standardisation (as the original).
STATS_FORMAT_VERSION = "2"


# -- files ---------------------------------------------------------------------------------------------
# (atomic writes: prismatic.util.io.atomic_write_json)

def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def save_dataset_statistics(statistics: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Write `{dataset: stats}` as the original's `dataset_statistics.json` (atomically)."""
    keep = ("action", "proprio", "num_transitions", "num_trajectories")
    out = {name: {k: _jsonable(v) for k, v in s.items() if k in keep} for name, s in statistics.items()}
    return atomic_write_json(path, out)


# -- computing -----------------------------------------------------------------------------------------
def summarize(values: np.ndarray) -> dict[str, list[float]]:
    return {
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "max": values.max(0).tolist(),
        "min": values.min(0).tolist(),
        "q01": np.quantile(values, 0.01, axis=0).tolist(),
        "q99": np.quantile(values, 0.99, axis=0).tolist(),
    }


def _spec_text(spec: DatasetSpec) -> str:
    """Everything about the spec that can change the standardised actions/proprio."""
    # Where a spec came from does not matter, what it says does.
    fields = {
        f.name: getattr(spec, f.name)
        for f in dataclasses.fields(spec)
        if f.repr and f.name not in ("source", "description")
    }
    parts = [repr(sorted(fields.items(), key=lambda kv: kv[0]))]
    # The code behind the ops can change too (a fixed standardisation must invalidate old statistics).
    for call in spec.ops:
        try:
            parts.append(inspect.getsource(STANDARDIZE_OPS.get(call.name)))
        except (KeyError, TypeError, OSError):
            pass
    try:
        parts.append(inspect.getsource(type(spec).standardize))
    except (TypeError, OSError):
        pass
    return "\n".join(parts)


def cache_key(builder: Any, spec: DatasetSpec, *, load_proprio: bool, noop_filter: str) -> str:
    from prismatic.data.rlds import dataset_fingerprint

    text = "\n".join(
        [
            STATS_FORMAT_VERSION,
            dataset_fingerprint(builder),
            _spec_text(spec),
            f"{load_proprio=} {noop_filter=}",
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def compute_statistics(
    builder: Any,
    spec: DatasetSpec,
    *,
    load_proprio: bool,
    noop_filter: str,
    num_parallel_reads: int | None = None,
) -> dict[str, Any]:
    """One pass over all splits: standardise, drop NaN/inf (counted) and no-op frames, summarise."""
    import tensorflow as tf

    from prismatic.data import rlds, traj_transforms

    reads = tf.data.AUTOTUNE if num_parallel_reads is None else num_parallel_reads
    ds = rlds.read_trajectories(builder, "all", shuffle=False, num_parallel_reads=reads)
    std_spec = traj_transforms.standardize_and_check(spec, ds.element_spec)
    traj_transforms.check_restructure_keys(spec, std_spec, (), load_proprio, False)

    def reduce_traj(traj):
        traj = traj_transforms.restructure(
            traj, spec=spec, camera_views=(), load_proprio=load_proprio, load_depth=False
        )
        bad = tf.reduce_sum(
            tf.cast(tf.logical_not(traj_transforms.finite_action_mask(traj["action"])), tf.int64)
        )
        traj = traj_transforms.clean_frames(traj, noop_filter=noop_filter, fail_on_nonfinite=False)
        proprio = traj["observation"].get("proprio", tf.zeros_like(traj["action"]))
        return {"action": traj["action"], "proprio": proprio, "nonfinite": bad}

    ds = ds.map(reduce_traj, num_parallel_calls=reads, deterministic=True).prefetch(4)
    total = builder.info.splits.total_num_examples or None
    actions, proprios, nonfinite, n_traj = [], [], 0, 0
    log.info("Computing statistics of %s (once; cached afterwards)", spec.name)
    for item in progress(ds.as_numpy_iterator(), total=total, desc=f"statistics {spec.name}", unit="traj"):
        nonfinite += int(item["nonfinite"])
        # Every episode counts, also one its standardisation emptied (a Bridge episode of <= 2 steps loses its
        # first and last): the original adds 1 per trajectory of the standardised dataset, whatever its length.
        n_traj += 1
        if len(item["action"]):
            actions.append(item["action"])
            proprios.append(item["proprio"])
    if not actions:
        raise DataError(
            f"Dataset {spec.name!r} at {builder.data_dir} has no usable frames after dropping "
            f"{nonfinite} non-finite and (noop_filter={noop_filter!r}) no-op frames: it is empty. "
            "Check the data, or relax `noop_filter`."
        )
    action, proprio = np.concatenate(actions), np.concatenate(proprios)
    return {
        "action": summarize(action),
        "proprio": summarize(proprio),
        "num_transitions": int(action.shape[0]),
        "num_trajectories": n_traj,
        "num_nonfinite_frames": nonfinite,
    }


def _default_cache_dir() -> Path:
    return (
        Path(os.environ.get("PRISMATIC_CACHE", Path.home() / ".cache" / "prismatic")) / "dataset_statistics"
    )


def get_dataset_statistics(
    builder: Any,
    spec: DatasetSpec,
    *,
    load_proprio: bool = False,
    noop_filter: str = "none",
    fail_on_nonfinite: bool = False,
    cache_dir: str | Path | None = None,
    num_parallel_reads: int | None = None,
) -> dict[str, Any]:
    """Load the cached statistics for (data, spec) or compute and cache them.

    The cache lives next to the data (`dataset_statistics_<key>.json`) or, when that folder is not
    writable, under `cache_dir` (default `~/.cache/prismatic/dataset_statistics`). The spec's
    `action_mask` is attached as `action["mask"]` (applied at load time, so it is not part of the key).
    """
    key = cache_key(builder, spec, load_proprio=load_proprio, noop_filter=noop_filter)
    fname = f"dataset_statistics_{key}.json"
    candidates = [Path(cache_dir) / f"{spec.name}_{fname}"] if cache_dir else []
    candidates += [Path(builder.data_dir) / fname, _default_cache_dir() / f"{spec.name}_{fname}"]
    stats = None
    for path in candidates:
        if path.is_file():
            log.info("Loading statistics of %s from %s", spec.name, path)
            stats = json.loads(path.read_text())
            break
    if stats is None:
        stats = compute_statistics(
            builder,
            spec,
            load_proprio=load_proprio,
            noop_filter=noop_filter,
            num_parallel_reads=num_parallel_reads,
        )
        for path in candidates:
            try:
                atomic_write_json(path, stats)
                log.info("Cached statistics of %s at %s", spec.name, path)
                break
            except OSError as e:
                log.warning("Cannot write statistics cache %s (%s); trying the next location", path, e)
    nonfinite = int(stats.get("num_nonfinite_frames", 0))
    if nonfinite:
        if fail_on_nonfinite:
            raise DataError(
                f"Dataset {spec.name!r} has {nonfinite} frame(s) with NaN/inf actions and fail_on_nonfinite=True. "
                "Fix the data, or set fail_on_nonfinite=False to drop those frames."
            )
        log.warning("Dataset %s: dropping %d frame(s) with NaN/inf actions", spec.name, nonfinite)
    stats = json.loads(json.dumps(stats))  # private copy
    action_dim = len(stats["action"]["mean"])
    if spec.action_mask is not None:
        if len(spec.action_mask) != action_dim:
            raise DataError(
                f"The action_mask of {spec.name!r} has {len(spec.action_mask)} entries but actions have "
                f"{action_dim} dimensions. Fix the spec's `action_mask`."
            )
        stats["action"]["mask"] = [bool(m) for m in spec.action_mask]
    return stats


# -- CLI -------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m prismatic.data.statistics",
        description="Compute (or load from cache) the normalisation statistics of RLDS datasets.",
    )
    p.add_argument("--data-root", required=True, help="folder holding <name>/<version>/dataset_info.json")
    p.add_argument("--dataset", action="append", required=True, help="dataset name (repeatable)")
    p.add_argument(
        "--dataset-config", action="append", default=[], help="YAML file(s) describing extra datasets"
    )
    p.add_argument("--out", default="dataset_statistics.json", help="where to write dataset_statistics.json")
    p.add_argument(
        "--load-proprio", action="store_true", help="also summarise proprio (OpenVLA does not load it)"
    )
    p.add_argument("--noop-filter", default="none", choices=["none", "zero", "libero"])
    p.add_argument(
        "--cache-dir", default=None, help="fallback cache folder when the data folder is read-only"
    )
    p.add_argument("--fail-on-nonfinite", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from prismatic.data.rlds import open_builder

    out = {}
    for name in args.dataset:
        spec = get_dataset_spec(name, extra_files=args.dataset_config)
        builder = open_builder(args.data_root, spec.name, spec.version)
        out[spec.name] = get_dataset_statistics(
            builder,
            spec,
            load_proprio=args.load_proprio,
            noop_filter=args.noop_filter,
            fail_on_nonfinite=args.fail_on_nonfinite,
            cache_dir=args.cache_dir,
        )
    path = save_dataset_statistics(out, args.out)
    print(f"Wrote statistics of {', '.join(out)} to {path}")
    return 0


if __name__ == "__main__":
    from prismatic.util.cli import run_cli

    run_cli(main)
