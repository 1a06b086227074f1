"""Name what differs between two nested mappings (saved settings vs the ones given now)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def mapping_diff(saved: Any, new: Any, prefix: str = "") -> list[str]:
    """`name: saved -> new` for every leaf that differs between two nested mappings."""
    if not (isinstance(saved, Mapping) and isinstance(new, Mapping)):
        return [] if saved == new else [f"{prefix or 'value'}: {saved!r} -> {new!r}"]
    out = []
    for key in sorted(set(saved) | set(new), key=str):
        name = f"{prefix}.{key}" if prefix else str(key)
        if key not in saved or key not in new:
            out.append(f"{name}: {saved.get(key, '(absent)')!r} -> {new.get(key, '(absent)')!r}")
        else:
            out += mapping_diff(saved[key], new[key], name)
    return out
