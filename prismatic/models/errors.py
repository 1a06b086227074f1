"""Errors of reading checkpoints, shared by the loaders (`load`, `oft`, `base_vlm`) without importing them."""

from __future__ import annotations

from prismatic.util.errors import UserError


class CheckpointError(UserError, FileNotFoundError):
    """A checkpoint directory is incomplete, damaged or not in a layout we know."""
