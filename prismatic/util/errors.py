"""The marker for errors a user caused (a flag, a file, the data, the environment), whose message says what,
why and how to fix it. Entry points print them in one line instead of a traceback (`prismatic.util.cli`)."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment, explained by its message (not a bug in prismatic)."""
