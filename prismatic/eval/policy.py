"""Policies the harness can evaluate: a local VLA, a remote policy server, and a random baseline.

A policy maps an observation dict (at least "image": HxWx3 uint8 and "instruction": str) to an action
(np.ndarray [action_dim]), in the convention of the data the model was trained on; an environment adapter
converts to its simulator's convention (see `prismatic.eval.libero.libero_gripper_action`).

Remote wire format (one request per step, JSON over HTTP POST to `http://HOST:PORT/act`):

    request   {"image": ARRAY, "instruction": "pick up the bowl", "unnorm_key": "libero_spatial" | null}
    response  ARRAY  |  [0.1, ...]  |  {"action": ARRAY or list}  |  a JSON string holding any of these
    ARRAY     {"__numpy__": "<base64 of the C-order bytes>", "dtype": "|u1", "shape": [224, 224, 3]}

ARRAY is the encoding of the `json-numpy` package, so a server that calls `json_numpy.patch()` decodes the
request as is; the "JSON string" response form is what the original OpenVLA `deploy.py` returns.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from prismatic.normalization import resolve_unnorm_key
from prismatic.util.errors import UserError

Observation = Mapping[str, Any]
ImageHook = Callable[[np.ndarray], np.ndarray]


@runtime_checkable
class Policy(Protocol):
    """What the harness needs: `reset()` at the start of each episode, `act(obs)` at each step."""

    def reset(self) -> None: ...

    def act(self, obs: Observation) -> np.ndarray: ...


def _check_obs(obs: Observation) -> tuple[np.ndarray, str]:
    missing = [k for k in ("image", "instruction") if k not in obs]
    if missing:
        raise KeyError(
            f"observation is missing {missing}; policies need 'image' (HxWx3 uint8) and 'instruction'"
        )
    image = np.asarray(obs["image"])
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"obs['image'] must be HxWx3 uint8, got shape {image.shape} dtype {image.dtype}")
    return image, str(obs["instruction"])


class RandomPolicy:
    """Uniform random actions in [low, high] (a chance-level baseline and a harness smoke test)."""

    def __init__(
        self,
        action_dim: int = 7,
        low: float | Sequence[float] = -1.0,
        high: float | Sequence[float] = 1.0,
        seed: int | None = None,
    ) -> None:
        self.low = np.broadcast_to(np.asarray(low, np.float64), (action_dim,))
        self.high = np.broadcast_to(np.asarray(high, np.float64), (action_dim,))
        if np.any(self.low > self.high):
            raise ValueError(f"RandomPolicy needs low <= high, got low={low}, high={high}")
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, obs: Observation) -> np.ndarray:
        return self._rng.uniform(self.low, self.high)

    def act_batch(self, observations: Sequence[Observation]) -> np.ndarray:
        return np.stack([self.act(o) for o in observations])


# LIBERO fine-tunes were trained on suites regenerated without no-op steps ("libero_goal_no_noops"), so
# the suite name also finds those statistics.
UNNORM_KEY_SUFFIXES = ("_no_noops",)


class VLAPolicy:
    """A local `prismatic.models.vla.VLA` (from `prismatic.load_vla`) as a harness policy.

    `preprocess` runs on obs["image"] before the model's own processor: environment-specific steps that
    reproduce the training data (e.g. LIBERO's JPEG round trip, resize, centre crop).
    """

    def __init__(
        self,
        vla: Any,
        unnorm_key: str | None = None,
        preprocess: ImageHook | None = None,
        **predict_kwargs: Any,
    ) -> None:
        self.vla = vla
        self.unnorm_key = resolve_unnorm_key(vla.norm_stats, unnorm_key, try_suffixes=UNNORM_KEY_SUFFIXES)
        self.preprocess = preprocess
        self.predict_kwargs = predict_kwargs

    def reset(self) -> None:
        pass  # OpenVLA is stateless across steps

    def _image(self, obs: Observation):
        from PIL import Image

        image, instruction = _check_obs(obs)
        if self.preprocess is not None:
            image = self.preprocess(image)
        return Image.fromarray(np.ascontiguousarray(image)).convert("RGB"), instruction

    def act(self, obs: Observation) -> np.ndarray:
        image, instruction = self._image(obs)
        action = self.vla.predict_action(
            image, instruction, unnorm_key=self.unnorm_key, **self.predict_kwargs
        )
        return np.asarray(action, dtype=np.float64).reshape(-1)

    def act_batch(self, observations: Sequence[Observation]) -> np.ndarray:
        pairs = [self._image(o) for o in observations]
        actions = self.vla.predict_actions(
            [p[0] for p in pairs], [p[1] for p in pairs], unnorm_key=self.unnorm_key, **self.predict_kwargs
        )
        return np.asarray(actions, dtype=np.float64)


# -- remote ------------------------------------------------------------------------------------------
def encode_array(array: np.ndarray) -> dict[str, Any]:
    """np.ndarray -> the json-numpy object form (base64 of the raw bytes, dtype string, shape)."""
    array = np.ascontiguousarray(array)
    return {
        "__numpy__": base64.b64encode(array.tobytes()).decode("ascii"),
        "dtype": array.dtype.str,
        "shape": list(array.shape),
    }


def decode_array(obj: Any) -> np.ndarray:
    """Inverse of `encode_array`; also accepts plain JSON lists of numbers."""
    if isinstance(obj, Mapping) and "__numpy__" in obj:
        data = base64.b64decode(obj["__numpy__"])
        return np.frombuffer(data, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    if isinstance(obj, (list, tuple, int, float)):
        return np.asarray(obj, dtype=np.float64)
    raise ValueError(f"cannot decode an array from {type(obj).__name__}: {str(obj)[:120]!r}")


def decode_action_response(body: bytes) -> np.ndarray:
    """Parse every response form listed in the module docstring into a 1-D float action."""
    payload: Any = json.loads(body.decode("utf-8"))
    if isinstance(payload, str):  # double-encoded, as the original deploy.py returns
        payload = json.loads(payload)
    if isinstance(payload, Mapping) and "action" in payload:
        payload = payload["action"]
    return decode_array(payload).astype(np.float64).reshape(-1)


class RemotePolicyError(RuntimeError):
    """The policy server answered with an error for this request (the episode fails, the evaluation goes on)."""


class PolicyUnavailable(UserError, RemotePolicyError):
    """The policy cannot act at all (its server cannot be reached): the evaluation stops and the interrupted
    episode is not recorded, so a re-run resumes with it."""


class RemotePolicy:
    """Client for a policy server speaking the wire format above (POST JSON to `url`, one step at a time).

    Connection errors and timeouts are retried `retries` times, waiting `backoff_s`, then twice as long each
    time; then `PolicyUnavailable` (naming the URL) stops the evaluation. HTTP errors are not retried (a
    server that answers 4xx/5xx will answer the same again): `RemotePolicyError` fails that episode.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000/act",
        unnorm_key: str | None = None,
        preprocess: ImageHook | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 1.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"remote policy url must start with http:// or https://, got {url!r}")
        self.url, self.unnorm_key, self.preprocess = url, unnorm_key, preprocess
        self.timeout_s, self.retries, self.backoff_s = timeout_s, max(0, retries), max(0.0, backoff_s)

    def reset(self) -> None:
        pass

    def request_body(self, obs: Observation) -> bytes:
        image, instruction = _check_obs(obs)
        if self.preprocess is not None:
            image = self.preprocess(image)
        payload = {
            "image": encode_array(np.asarray(image, dtype=np.uint8)),
            "instruction": instruction,
            "unnorm_key": self.unnorm_key,
        }
        return json.dumps(payload).encode("utf-8")

    def act(self, obs: Observation) -> np.ndarray:
        body = self.request_body(obs)
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(
                self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return decode_action_response(response.read())
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                raise RemotePolicyError(
                    f"policy server at {self.url} answered HTTP {e.code}: {detail}"
                ) from e
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
                if attempt == self.retries:
                    reason = getattr(e, "reason", e)
                    raise PolicyUnavailable(
                        f"the policy server at {self.url} cannot be reached ({reason}; {attempt + 1} tries over "
                        f"{self.backoff_s * (2**attempt - 1):.0f}s): start it, or fix the URL"
                    ) from e
                time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")
