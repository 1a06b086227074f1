"""Trajectory paths: `/`-separated names of entries in a nested trajectory dict.

"observation/state" names `traj["observation"]["state"]`. Some RLDS datasets have keys that contain "/"
themselves (kuka's "clip_function_input/base_pose_tool_reached", bc_z's "future/xyz_residual"); a path is
matched greedily against the keys that exist, so those work as is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Traj = dict[str, Any]
TrajFn = Callable[[Traj], Traj]


def _locate(traj: Mapping[str, Any], path: str) -> tuple[Mapping[str, Any], str]:
    """(parent dict, key) that `path` names; matches the longest existing key at each level so that
    keys containing "/" work. A path that does not exist yet names a new key under the deepest dict."""
    parts = path.split("/")
    node, i = traj, 0
    while True:
        for j in range(len(parts), i, -1):
            key = "/".join(parts[i:j])
            if key not in node:
                continue
            if j == len(parts):
                return node, key
            if isinstance(node[key], Mapping):
                node, i = node[key], j
                break
        else:
            return node, "/".join(parts[i:])


def get_path(traj: Mapping[str, Any], path: str) -> Any:
    parent, key = _locate(traj, path)
    if key not in parent:
        raise KeyError(
            f"no entry {path!r} in the trajectory (at that level there are: {', '.join(sorted(parent))}); "
            "check the key names in the dataset spec against the dataset's features"
        )
    return parent[key]


def set_path(traj: Traj, path: str, value: Any) -> None:
    parent, key = _locate(traj, path)
    parent[key] = value  # type: ignore[index]


def pop_path(traj: Traj, path: str) -> Any:
    get_path(traj, path)  # for the error message
    parent, key = _locate(traj, path)
    return parent.pop(key)  # type: ignore[attr-defined]


def copy_dicts(tree: Any) -> Any:
    """Copy the nested dicts (not the tensors) so ops never mutate the caller's trajectory."""
    return {k: copy_dicts(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree


def map_steps(traj: Traj, fn: Callable[[Any], Any]) -> Traj:
    """Apply `fn` to every tensor of the trajectory. All leaves share the time axis (the reader
    broadcasts episode metadata to every step under "traj_metadata"), so dropping steps must cut
    them all alike; scalars are left alone."""

    def rec(x: Any) -> Any:
        if isinstance(x, Mapping):
            return {k: rec(v) for k, v in x.items()}
        return x if getattr(x, "shape", None) is not None and x.shape.rank == 0 else fn(x)

    return rec(traj)

