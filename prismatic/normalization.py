"""Action / proprio normalisation: the only place that owns the formulas.

Statistics follow the OpenVLA `dataset_statistics.json` / `norm_stats` format: per dataset, for
`action` (and `proprio`) the per-dimension `mean`, `std`, `min`, `max`, `q01`, `q99` and an optional
boolean `mask` (dimensions with mask False, e.g. the gripper, are left as they are). A dataset entry
may also carry `normalization_type` (our addition; absent means BOUNDS_Q99, the original's default).

The functions take an array namespace `xp` (numpy by default) so the tf.data pipeline can run the
very same formulas in-graph with `tensorflow.experimental.numpy`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

import numpy as np

EPS = 1e-8


class NormalizationType(str, Enum):
    NORMAL = "normal"  # (x - mean) / std
    BOUNDS = "bounds"  # [min, max] -> [-1, 1], clipped
    BOUNDS_Q99 = "bounds_q99"  # [q01, q99] -> [-1, 1], clipped (OpenVLA's default)

    @classmethod
    def parse(cls, value: str | NormalizationType, flag: str = "normalization_type") -> NormalizationType:
        if isinstance(value, NormalizationType):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(
                f"Unknown {flag} {value!r}; choose one of: {', '.join(t.value for t in cls)}"
            ) from None


def resolve_unnorm_key(
    norm_stats: Mapping[str, Any], key: str | None = None, *, try_suffixes: Sequence[str] = ()
) -> str:
    """The dataset whose statistics un-normalise a model's actions (the one owner of this choice).

    `key` must name one of `norm_stats`; with `try_suffixes`, `key + suffix` is tried next (the
    evaluation passes "_no_noops": LIBERO fine-tunes were trained on suites regenerated without
    no-op steps, so "libero_goal" finds "libero_goal_no_noops"). Without a key, a model trained on
    one dataset uses it and one trained on several refuses to guess. Errors list the available keys.
    """
    keys = sorted(norm_stats)
    if not keys:
        raise KeyError("this model has no normalisation statistics (config.norm_stats is empty)")
    if key is None:
        if len(keys) > 1:
            raise KeyError(
                f"this model was trained on {len(keys)} datasets; pass unnorm_key=... to choose whose "
                f"statistics un-normalise the actions. Available: {', '.join(keys)}"
            )
        return keys[0]
    candidates = [key, *(key + suffix for suffix in try_suffixes)]
    for candidate in candidates:
        if candidate in norm_stats:
            return candidate
    tried = " (or " + ", ".join(repr(c) for c in candidates[1:]) + ")" if len(candidates) > 1 else ""
    raise KeyError(
        f"unnorm_key {key!r}{tried} is not in this model's dataset statistics; available: {', '.join(keys)}"
    )


def _bounds(stats: Mapping[str, Any], kind: NormalizationType, dtype=np.float32):
    if kind is NormalizationType.BOUNDS_Q99:
        return np.asarray(stats["q01"], dtype), np.asarray(stats["q99"], dtype)
    return np.asarray(stats["min"], dtype), np.asarray(stats["max"], dtype)


def _mask(stats: Mapping[str, Any], dim: int) -> np.ndarray:
    mask = stats.get("mask")
    return np.ones(dim, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)


def normalize(x, stats: Mapping[str, Any], kind: NormalizationType | str = NormalizationType.BOUNDS_Q99, xp=np):
    """Normalise `x` (last axis = dimensions) with one dataset's `action` or `proprio` statistics."""
    kind = NormalizationType.parse(kind)
    dim = len(stats["mean"] if "mean" in stats else stats["q01"])
    mask = _mask(stats, dim)
    if kind is NormalizationType.NORMAL:
        mean, std = np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)
        return xp.where(mask, (x - mean) / (std + EPS), x)
    low, high = _bounds(stats, kind)
    out = xp.where(mask, xp.clip(2 * (x - low) / (high - low + EPS) - 1, -1, 1), x)
    # Dimensions that never vary carry no information: map them to 0 (as the original does).
    constant = np.asarray(stats["min"], np.float32) == np.asarray(stats["max"], np.float32)
    return xp.where(constant, xp.zeros_like(out), out)


def unnormalize(x, stats: Mapping[str, Any], kind: NormalizationType | str = NormalizationType.BOUNDS_Q99, xp=np):
    """Invert `normalize` (up to clipping) for one dataset's statistics."""
    kind = NormalizationType.parse(kind)
    x = xp.asarray(x)
    dim = x.shape[-1]
    mask = _mask(stats, dim)
    if kind is NormalizationType.NORMAL:
        mean, std = np.asarray(stats["mean"], np.float64), np.asarray(stats["std"], np.float64)
        return xp.where(mask, x * (std + EPS) + mean, x)
    low, high = _bounds(stats, kind, np.float64)
    return xp.where(mask, 0.5 * (x + 1) * (high - low) + low, x)
