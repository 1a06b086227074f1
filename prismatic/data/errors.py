"""The one exception type for bad data input (no TensorFlow import here)."""

from __future__ import annotations

from prismatic.util.errors import UserError


class DataError(UserError, ValueError):
    """Bad data input: a missing dataset, key or file, invalid options, or data that cannot be used.

    Messages say what is wrong, why, and how to fix it (valid choices, expected layout).
    """
