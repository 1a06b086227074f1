"""Rank-aware logging: INFO on rank 0, WARNING and above elsewhere (no duplicated lines under torchrun)."""

from __future__ import annotations

import logging
import os


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    root = logging.getLogger("prismatic")
    if not root.handlers:
        handler = logging.StreamHandler()
        rank = int(os.environ.get("RANK", "0"))
        handler.setFormatter(logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        root.propagate = False
    return logger
