"""Policies the harness can evaluate: a local VLA, a remote policy server, and a random baseline.

A policy maps an observation dict (at least "image": HxWx3 uint8 and "instruction": str) to an action
(np.ndarray [action_dim]), in the convention of the data the model was trained on; an environment adapter
converts to its simulator's convention (see `prismatic.eval.libero.libero_gripper_action`). Models with
more cameras read "<camera>_image" (e.g. "wrist_image"); models with proprio read "state" (raw).

A model that predicts chunks of actions (OpenVLA-OFT) runs them open loop: `VLAPolicy(open_loop_steps=n)`
executes the first n actions of each chunk before predicting the next (None: the whole chunk, as OFT's
LIBERO evaluation; 1: re-plan every step).

Remote wire format (one request per step, JSON over HTTP POST to `http://HOST:PORT/act`):

    request   {"image": ARRAY, "instruction": "pick up the bowl", "unnorm_key": "libero_spatial" | null}
    response  ARRAY  |  [0.1, ...]  |  {"action": ARRAY or list}  |  a JSON string holding any of these
              |  [ARRAY, ARRAY, ...] (an action chunk, as OpenVLA-OFT's server sends: executed open loop)
    ARRAY     {"__numpy__": "<base64 of the C-order bytes>", "dtype": "|u1", "shape": [224, 224, 3]}

ARRAY is the encoding of the `json-numpy` package, so a server that calls `json_numpy.patch()` decodes the
request as is; the "JSON string" response form is what the original OpenVLA `deploy.py` returns. The
server in `prismatic.serve` speaks this protocol (and answers errors with 4xx/5xx and a reason).
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


def camera_key(camera: str) -> str:
    """Observation key of a camera's image: "image" for the primary view, "<camera>_image" for the others."""
    return "image" if camera == "primary" else f"{camera}_image"


class OpenLoopChunks:
    """Actions from a chunk predictor, executed open loop: the first `steps` of each chunk (None: all of it)
    are returned one per call, then the next call predicts a new chunk."""

    def __init__(self, steps: int | None = None) -> None:
        if steps is not None and steps < 1:
            raise ValueError(f"open_loop_steps must be >= 1 (or None for the whole chunk), got {steps}")
        self.steps = steps
        self._queue: list[np.ndarray] = []

    def reset(self) -> None:
        self._queue = []

    @property
    def empty(self) -> bool:
        return not self._queue

    def push(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, dtype=np.float64)
        chunk = chunk.reshape(1, -1) if chunk.ndim == 1 else chunk
        self._queue = list(chunk[: self.steps] if self.steps is not None else chunk)

    def pop(self) -> np.ndarray:
        return self._queue.pop(0)


class VLAPolicy:
    """A local `prismatic.models.vla.VLA` (from `prismatic.load_vla`) as a harness policy.

    `preprocess` runs on every camera image before the model's own processor: environment-specific steps
    that reproduce the training data (e.g. LIBERO's JPEG round trip, resize, centre crop). Chunks run open
    loop for `open_loop_steps` steps (None: the whole chunk; 1: re-plan every step); `reset()` drops what
    is left of a chunk.
    """

    def __init__(
        self,
        vla: Any,
        unnorm_key: str | None = None,
        preprocess: ImageHook | None = None,
        open_loop_steps: int | None = None,
        **predict_kwargs: Any,
    ) -> None:
        self.vla = vla
        self.unnorm_key = resolve_unnorm_key(vla.norm_stats, unnorm_key, try_suffixes=UNNORM_KEY_SUFFIXES)
        self.preprocess = preprocess
        chunk_len = getattr(vla, "chunk_len", 1)
        if open_loop_steps is not None and open_loop_steps > chunk_len:
            raise ValueError(f"open_loop_steps={open_loop_steps} but the model predicts chunks of {chunk_len} actions")
        self.open_loop_steps = open_loop_steps
        self.predict_kwargs = predict_kwargs
        self._chunks: list[OpenLoopChunks] = []

    def reset(self) -> None:
        for queue in self._chunks:
            queue.reset()

    def _inputs(self, obs: Observation):
        """The model's camera images (preprocessed, in its order), instruction and raw proprio of one observation."""
        from PIL import Image

        _, instruction = _check_obs(obs)
        cameras = getattr(self.vla, "cameras", ("primary",))
        images = []
        for camera in cameras:
            key = camera_key(camera)
            if key not in obs:
                raise KeyError(f"the model reads cameras {list(cameras)}: the observation has no {key!r} (keys: {sorted(obs)})")
            image = np.asarray(obs[key])
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise ValueError(f"obs[{key!r}] must be HxWx3 uint8, got shape {image.shape} dtype {image.dtype}")
            if self.preprocess is not None:
                image = self.preprocess(image)
            images.append(Image.fromarray(np.ascontiguousarray(image)).convert("RGB"))
        state = None
        if getattr(self.vla, "proprio_dim", 0):
            if "state" not in obs:
                raise KeyError(f"the model reads a {self.vla.proprio_dim}-D proprio state: the observation has no 'state'")
            state = np.asarray(obs["state"], dtype=np.float64).reshape(-1)
        return (images[0] if len(images) == 1 else images), instruction, state

    def _plan(self, observations: Sequence[Observation], queues: Sequence[OpenLoopChunks]) -> None:
        """One batched prediction for the observations whose chunk is used up."""
        todo = [(o, q) for o, q in zip(observations, queues) if q.empty]
        if not todo:
            return
        inputs = [self._inputs(o) for o, _ in todo]
        proprio = None if inputs[0][2] is None else np.stack([i[2] for i in inputs])
        chunks = self.vla.predict_chunks([i[0] for i in inputs], [i[1] for i in inputs], unnorm_key=self.unnorm_key,
                                         proprio=proprio, **self.predict_kwargs)  # fmt: skip
        for (_, queue), chunk in zip(todo, chunks):
            queue.push(chunk)

    def _queues(self, n: int) -> list[OpenLoopChunks]:
        while len(self._chunks) < n:
            self._chunks.append(OpenLoopChunks(self.open_loop_steps))
        return self._chunks[:n]

    def act(self, obs: Observation) -> np.ndarray:
        (queue,) = self._queues(1)
        self._plan([obs], [queue])
        return queue.pop()

    def act_batch(self, observations: Sequence[Observation]) -> np.ndarray:
        queues = self._queues(len(observations))
        self._plan(observations, queues)
        return np.stack([q.pop() for q in queues])


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


def decode_action_chunk(body: bytes) -> np.ndarray:
    """Parse every response form listed in the module docstring into actions [chunk_len, action_dim]."""
    payload: Any = json.loads(body.decode("utf-8"))
    if isinstance(payload, str):  # double-encoded, as the original deploy.py returns
        payload = json.loads(payload)
    if isinstance(payload, Mapping) and "action" in payload:
        payload = payload["action"]
    if isinstance(payload, list) and payload and all(isinstance(p, Mapping) for p in payload):
        return np.stack([decode_array(p).astype(np.float64).reshape(-1) for p in payload])
    actions = decode_array(payload).astype(np.float64)
    return actions.reshape(-1, actions.shape[-1]) if actions.ndim else actions.reshape(1, 1)


class RemotePolicyError(RuntimeError):
    """The policy server answered with an error for this request (the episode fails, the evaluation goes on)."""


class PolicyUnavailable(UserError, RemotePolicyError):
    """The policy cannot act at all (its server cannot be reached): the evaluation stops and the interrupted
    episode is not recorded, so a re-run resumes with it."""


class RemotePolicy:
    """Client for a policy server speaking the wire format above (POST JSON to `url`, one step at a time).

    Connection errors and timeouts are retried `retries` times, waiting `backoff_s`, then twice as long each
    time; then `PolicyUnavailable` (naming the URL) stops the evaluation. HTTP errors are not retried (a
    server that answers 4xx/5xx will answer the same again): `RemotePolicyError` fails that episode. When the
    server answers with an action chunk, `act` returns its actions one per step (the first `open_loop_steps`
    of each chunk, default all) before asking again; `reset` drops what is left of a chunk. `token` is sent
    as a bearer token.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000/act",
        unnorm_key: str | None = None,
        preprocess: ImageHook | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        token: str | None = None,
        open_loop_steps: int | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"remote policy url must start with http:// or https://, got {url!r}")
        if open_loop_steps is not None and open_loop_steps < 1:
            raise ValueError(f"open_loop_steps must be >= 1 (or None: the whole chunk), got {open_loop_steps}")
        self.url, self.unnorm_key, self.preprocess = url, unnorm_key, preprocess
        self.timeout_s, self.retries, self.backoff_s = timeout_s, max(0, retries), max(0.0, backoff_s)
        self.token, self.open_loop_steps = token, open_loop_steps
        self._queued: list[np.ndarray] = []

    def reset(self) -> None:
        self._queued = []

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
        if not self._queued:
            self._queued = list(self.predict_chunk(obs)[: self.open_loop_steps])
        return self._queued.pop(0)

    def predict_chunk(self, obs: Observation) -> np.ndarray:
        """One request: the server's answer as actions [chunk_len, action_dim]."""
        body = self.request_body(obs)
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return decode_action_chunk(response.read())
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
