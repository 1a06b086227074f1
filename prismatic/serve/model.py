"""The model behind the server: what it needs (cameras, proprio, unnorm keys), what it says about itself
(/config), and the one call that answers a batch of validated requests.

`ServedModel` codes against the action-chunk contract of `prismatic.models.vla.VLA` (`predict_chunks`,
`chunk_len`, `cameras`, `proprio_dim`, `action_dim`), so any head that implements it is served unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from prismatic.serve.errors import ModelFailure, RequestError
from prismatic.serve.observation import PolicyRequest

log = logging.getLogger(__name__)

GRIPPER_CONVENTIONS = ("model", "binary_close_positive")


class ServedModel:
    """A VLA as the server uses it.

    default_unnorm_key: used when a request names none (required if the model has several datasets and
        clients do not send `unnorm_key`).
    gripper: "model" returns actions as trained (gripper in [0, 1], 1 = open, for OpenVLA data);
        "binary_close_positive" maps the last dimension to -1 = open / +1 = close, binarised (LIBERO and
        robosuite benchmarks, e.g. through vla-eval; the mapping of `prismatic.eval.libero`).
    """

    def __init__(
        self,
        vla: Any,
        name: str,
        default_unnorm_key: str | None = None,
        gripper: str = "model",
        **predict_kwargs: Any,
    ) -> None:
        self.vla, self.name, self.predict_kwargs = vla, name, predict_kwargs
        keys = sorted(vla.norm_stats)
        if default_unnorm_key and default_unnorm_key not in keys:
            raise ValueError(
                f"--unnorm_key {default_unnorm_key!r} is not in the checkpoint's statistics; choose one of: {', '.join(keys)}"
            )
        if gripper not in GRIPPER_CONVENTIONS:
            raise ValueError(f"--gripper {gripper!r} is not one of: {', '.join(GRIPPER_CONVENTIONS)}")
        self.default_unnorm_key, self.gripper = default_unnorm_key or None, gripper

    # -- what the model needs ----------------------------------------------------------------------
    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.vla.cameras)

    @property
    def proprio_dim(self) -> int:
        return int(self.vla.proprio_dim)

    @property
    def chunk_len(self) -> int:
        return int(self.vla.chunk_len)

    @property
    def unnorm_keys(self) -> list[str]:
        return sorted(self.vla.norm_stats)

    def resolve_unnorm_key(self, key: str | None) -> str:
        key = key or self.default_unnorm_key
        keys = self.unnorm_keys
        if key is None:
            if len(keys) == 1:
                return keys[0]
            raise RequestError(
                f"this model was trained on {len(keys)} datasets: send unnorm_key (one of: {', '.join(keys)}) "
                "or start the server with --unnorm_key KEY"
            )
        if key not in self.vla.norm_stats:
            raise RequestError(
                f"unknown unnorm_key {key!r}; this model has statistics for: {', '.join(keys)}"
            )
        return key

    def describe(self) -> dict[str, Any]:
        """The /config answer (also the openpi metadata frame and part of the vla-eval HELLO reply)."""
        config = self.vla.config
        model = getattr(self.vla, "model", None)
        return {
            "model": self.name,
            "architecture": f"{config.vision_backbone_id} + {config.llm_backbone_id}",
            "cameras": list(self.cameras),
            "image_size": list(config.image_sizes),
            "proprio_dim": self.proprio_dim,
            "chunk_len": self.chunk_len,
            "action_dim": {k: int(self.vla.action_dim(k)) for k in self.unnorm_keys},
            "unnorm_keys": self.unnorm_keys,
            "default_unnorm_key": self.default_unnorm_key,
            "gripper": self.gripper,
            "device": str(getattr(model, "device", "?")),
            "dtype": str(getattr(model, "dtype", "?")).replace("torch.", ""),
        }

    # -- answering ---------------------------------------------------------------------------------
    def predict(self, requests: Sequence[PolicyRequest]) -> np.ndarray:
        """Requests sharing one unnorm_key -> chunks [len(requests), T, D] in one model call."""
        key = requests[0].unnorm_key
        if any(r.unnorm_key != key for r in requests):
            raise ValueError("one model call takes requests with one unnorm_key; group them first")
        images = [list(r.images) for r in requests]
        proprio = np.stack([r.proprio for r in requests]) if self.proprio_dim > 0 else None
        chunks = self.vla.predict_chunks(images, [r.instruction for r in requests], unnorm_key=key, proprio=proprio,
                                         **self.predict_kwargs)  # fmt: skip
        chunks = np.asarray(chunks, dtype=np.float64)
        if self.gripper == "binary_close_positive":
            from prismatic.eval.libero import libero_gripper_action

            chunks = libero_gripper_action(chunks)
        return chunks

    def run_batch(self, requests: Sequence[PolicyRequest]) -> list[np.ndarray | Exception]:
        """Answer each request with its chunk [T, D] or a `ModelFailure`; never raises.

        Requests are grouped by unnorm_key (one model call per group). If a group's call fails, each of its
        requests is retried alone, so a request that breaks the model fails by itself and the others in
        its batch are still answered.
        """
        results: list[np.ndarray | Exception | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.unnorm_key, []).append(i)
        for members in groups.values():
            try:
                chunks = self.predict([requests[i] for i in members])
                for i, chunk in zip(members, chunks):
                    results[i] = chunk
            except Exception as e:  # noqa: BLE001 - reported to the client as a 5xx, the server keeps going
                if len(members) == 1:
                    log.exception("model call failed")
                    results[members[0]] = ModelFailure(
                        f"the model failed on this request: {type(e).__name__}: {e}"
                    )
                    continue
                log.warning("a batch of %d failed (%s: %s); retrying its requests one by one", len(members),
                            type(e).__name__, e)  # fmt: skip
                for i in members:
                    results[i] = self.run_batch([requests[i]])[0]
        return results  # type: ignore[return-value]
