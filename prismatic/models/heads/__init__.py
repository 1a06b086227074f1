"""Action heads (see `base.py`): `bins` (OpenVLA), `l1-regression` and `bins-parallel` (OpenVLA-OFT)."""

from prismatic.models.heads import bins, parallel  # noqa: F401  (registers the heads)
from prismatic.models.heads.base import ACTION_HEADS, ActionHead, HeadOutput, bidirectional_mask

__all__ = ["ACTION_HEADS", "ActionHead", "HeadOutput", "bidirectional_mask"]
