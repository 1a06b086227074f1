"""Atomic file writes: write to a temporary file in the same directory, fsync, then rename.

A write that fails (a full disk) removes its temporary and leaves the previous file intact; a killed process
can leave a temporary (`.<name>.<random>.tmp`, `.<name>.partial/`) behind, which `remove_stale_temporaries`
clears at the next start.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

TEMP_SUFFIXES = (".tmp", ".partial", ".old")  # with a leading dot in the name: ours


def _free_bytes(path: Path) -> str:
    for p in (path, *path.parents):
        if p.exists():
            free = shutil.disk_usage(p).free
            return f"{free / 2**20:.1f} MiB free"
    return "free space unknown"


def disk_full_error(e: BaseException, path: str | Path, what: str) -> str | None:
    """If `e` (or an exception it wraps) is a full disk or quota, a message for it; else None."""
    seen, todo = set(), [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"no space left on the device of {path} while {what} ({_free_bytes(Path(path))})"
        todo += [x.__cause__, x.__context__]
        failures = getattr(x, "failures", None)  # torch.distributed.checkpoint's CheckpointException
        if isinstance(failures, dict):
            todo += [f[0] if isinstance(f, tuple) else f for f in failures.values()]
    return None


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(f)` on a temp file next to `path`, then atomically move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        full = disk_full_error(e, path, f"writing {path.name}")
        if full is not None:
            raise OSError(e.errno if isinstance(e, OSError) else errno.ENOSPC,
                          f"{full}; nothing was written (a previous {path.name} is intact): free space and retry") from e  # fmt: skip
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    data = (json.dumps(obj, indent=indent) + "\n").encode()
    return atomic_write(path, lambda f: f.write(data))


def atomic_savefig(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """A matplotlib figure as PNG at `path`, written atomically (a reader never sees half a chart)."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Fill a directory under a temporary name (`.<name>.partial`) and move it into place when the block ends
    without error (replacing an existing one); on error, the temporary is removed and `path` is untouched."""
    path = Path(path)
    tmp, old = path.with_name(f".{path.name}.partial"), path.with_name(f".{path.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full_error(e, path, f"writing {path.name}/")
        if full is not None:
            raise OSError(errno.ENOSPC, f"{full}; {path} was not changed: free space and retry") from e
        raise


def remove_stale_temporaries(root: str | Path) -> list[Path]:
    """Remove the temporaries this module's writers leave when a process is killed mid-write, under `root`."""
    removed = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for p in sorted(root.rglob(".*")):
        if not (p.name.endswith(TEMP_SUFFIXES) and p.exists()):
            continue
        original = p.with_name(p.name[1:].removesuffix(".old"))
        if p.name.endswith(".old") and not original.exists():  # killed between atomic_dir's two renames
            p.rename(original)
            continue
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed
