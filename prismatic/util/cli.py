"""One entry-point wrapper for every script: an error the user caused prints one line, not a traceback.

    if __name__ == "__main__":
        run_cli(main)

`--debug` anywhere on the command line (removed before `main` parses the arguments) or `PRISMATIC_DEBUG=1`
shows the full traceback instead. Errors that are bugs (TypeError, AttributeError, RuntimeError, ...) always
show their traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prismatic.util.errors import UserError

# Raised by our checks with a message meant for the user: typed errors, bad values (ValueError), registry and
# dictionary lookups that list the valid choices (KeyError), missing or unreadable files.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
    FloatingPointError,
)  # fmt: skip
# Operating-system errors that describe the machine, not the program: full disk, quota, read-only filesystem.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}


def debug_requested(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("PRISMATIC_DEBUG", "").strip() not in ("", "0")


def is_user_error(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
        return True
    return isinstance(e, USER_ERRORS)


def message(e: BaseException) -> str:
    """The exception's own text (KeyError's str() adds quotes around it)."""
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        return e.args[0]
    return str(e) or type(e).__name__


def run_cli(main: Callable[[], Any], prog: str | None = None) -> None:
    """Run `main()` (which parses sys.argv itself) and exit with its return code; user errors: one line, exit 1."""
    debug = debug_requested()
    sys.argv[1:] = [a for a in sys.argv[1:] if a != "--debug"]
    try:
        code = main()
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a user error
        if debug or not is_user_error(e):
            raise
        name = prog or Path(sys.argv[0]).name
        print(f"{name}: error: {message(e)}  [--debug shows the traceback]", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def check_output_dir(out_dir: str | Path, **inputs: str | Path | None) -> Path:
    """Refuse an output directory that is also an input directory (writing there would overwrite or delete what
    is being read, e.g. the base model's shards). `inputs` maps flag names to the directories given for them."""
    out = Path(out_dir).expanduser().resolve()
    for flag, path in inputs.items():
        if path is not None and Path(path).expanduser().resolve() == out:
            raise UserError(
                f"--out_dir {out_dir} is also the input --{flag} {path}: writing there would overwrite or delete "
                "the files it is read from; choose another --out_dir"
            )
    return out
