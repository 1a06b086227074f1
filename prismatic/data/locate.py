"""Where RLDS datasets live on disk: `<data_root>/<name>/<version>/dataset_info.json`.

No TensorFlow here, so a training configuration can check that every dataset of its mixture is
present before anything expensive (a model, a tf.data pipeline) is built.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from prismatic.data.errors import DataError

LAYOUT = "<data_root>/<name>/<version>/dataset_info.json"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def versions(dataset_dir: Path) -> list[str]:
    """The versions present in `<data_root>/<name>/`, oldest first."""
    if not dataset_dir.is_dir():
        return []
    found = [d.name for d in dataset_dir.iterdir() if (d / "dataset_info.json").is_file()]
    return sorted(found, key=_version_key)


def list_datasets(data_root: str | Path) -> list[str]:
    """Names of the datasets under `data_root` (folders holding `<version>/dataset_info.json`)."""
    root = Path(data_root)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and versions(d))


def _check_root(data_root: str | Path) -> Path:
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"Data root {str(root)!r} does not exist (set `data_root` / `--data-root`). "
            f"Datasets are expected as {LAYOUT}."
        )
    return root


def _absent(root: Path, name: str, version: str | None) -> str | None:
    """Why `name` (at `version`, or any version) is not under `root`, or None when it is."""
    found = versions(root / name)
    if not found:
        return f"{name!r} not found: no {root / name}/<version>/dataset_info.json"
    if version is not None and version not in found:
        return f"{name!r} has no version {version!r} under {root / name}; versions present: {', '.join(found)}"
    return None


def _present(root: Path) -> str:
    present = list_datasets(root)
    return ", ".join(present) if present else "(none)"


def find_dataset_dir(data_root: str | Path, name: str, version: str | None = None) -> Path:
    """`<data_root>/<name>/<version>` (newest version present when `version` is None), validated."""
    root = _check_root(data_root)
    found = versions(root / name)
    if not found:
        raise DataError(
            f"Dataset {name!r} not found under data root {str(root)!r}: expected {LAYOUT} "
            f"(i.e. {root / name}/<version>/dataset_info.json). Datasets present: "
            f"{_present(root)}. Download or convert it there, or fix the name."
        )
    if version is None:
        return root / name / found[-1]
    if version not in found:
        raise DataError(
            f"Dataset {name!r} has no version {version!r} under {root / name}; versions present: "
            f"{', '.join(found)}. Fix the spec's `version` or leave it unset for the newest."
        )
    return root / name / version


def absent_datasets(data_root: str | Path, datasets: Sequence[tuple[str, str | None]]) -> list[str]:
    """One line per (name, version) that is not under `data_root` (an existing folder), saying why."""
    root = Path(data_root).expanduser()
    return [p for name, version in datasets if (p := _absent(root, name, version)) is not None]


def present_datasets(data_root: str | Path) -> str:
    """The datasets under `data_root`, for messages ("(none)" when there are none)."""
    return _present(Path(data_root).expanduser())


def check_datasets_present(data_root: str | Path, datasets: Sequence[tuple[str, str | None]]) -> None:
    """Raise one DataError naming every (name, version) that is not under `data_root` (not just the first)."""
    root = _check_root(data_root)
    absent = [(name, version) for name, version in datasets if _absent(root, name, version) is not None]
    if len(absent) == 1:
        find_dataset_dir(root, *absent[0])  # raises the one-dataset message
    if absent:
        raise DataError(
            f"{len(absent)} of {len(datasets)} datasets are not under data root {str(root)!r} (expected "
            f"{LAYOUT}):\n  - " + "\n  - ".join(absent_datasets(root, absent))
            + f"\nDatasets present: {_present(root)}. Download or convert the missing ones there, or fix the names."
        )
