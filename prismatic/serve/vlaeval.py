"""vla-eval's model-server protocol (protocol version 1), so a vla-eval harness can evaluate a checkpoint.

Every frame is msgpack {"type", "payload", "seq", "timestamp"}; arrays as vla-eval's numpy codec packs
them (images may arrive PNG- or JPEG-compressed). A connection (`vla_eval.connection.Connection`) goes:

    HELLO          -> HELLO {protocol_version, model_server: "prismatic", capabilities, observation_params?,
                             prismatic: <the /config dictionary>}  (observation_params asks the benchmark for
                             a wrist image / the state when the model reads them)
    EPISODE_START  -> nothing (clears the session's queued chunk actions)
    OBSERVATION    -> ACTION {"actions": float64 [action_dim]} with the observation's seq
    EPISODE_END    -> nothing
    anything wrong -> ERROR {"error": "<what was wrong and what is valid>"}; the connection stays open

One action per observation, as vla-eval's benchmarks step: for a chunk model the server runs the model
once per chunk and answers the following observations from the session's queue (open loop), as
vla-eval's own `PredictModelServer` does. Observation keys: `images` (a dict of camera -> image; the
first is the primary camera), `task_description`, `states`/`state` (see `prismatic.serve.observation`).

Served on `/vla-eval`, and on `/` with `--ws_root vla-eval` (vla-eval configs name a URL, so
`ws://HOST:8000/vla-eval` works as is). vla-eval's client sets no headers: with `--token`, put it in
the URL, `ws://HOST:8000/vla-eval?token=TOKEN`.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, WebSocket

import prismatic
from prismatic.serve.codec import pack_vlaeval, unpack_msgpack
from prismatic.serve.errors import ModelFailure, RequestError, ServerClosing
from prismatic.serve.protocol import DISCONNECTED, PROTOCOLS, Protocol

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MESSAGE_TYPES = ("hello", "observation", "action", "episode_start", "episode_end", "error")
MESSAGE_FORM = (
    '{"type": one of ' + ", ".join(MESSAGE_TYPES) + ', "payload": {...}, "seq": int, "timestamp": float}'
)


def parse_message(data: Any) -> tuple[str, Any, int]:
    """A frame -> (type, payload, seq), or RequestError naming what is missing or unknown."""
    if not isinstance(data, (bytes, bytearray)):
        raise RequestError(f"send binary msgpack frames of the form {MESSAGE_FORM}", 400)
    raw = unpack_msgpack(data)
    if not isinstance(raw, dict):
        raise RequestError(f"a message is a msgpack map {MESSAGE_FORM}, got {type(raw).__name__}", 400)
    missing = [k for k in ("type", "payload", "seq", "timestamp") if k not in raw]
    if missing:
        raise RequestError(f"message without {missing}; the form is {MESSAGE_FORM}", 400)
    if raw["type"] not in MESSAGE_TYPES:
        raise RequestError(
            f"unknown message type {raw['type']!r}; valid types: {', '.join(MESSAGE_TYPES)}", 400
        )
    seq = raw["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise RequestError(f"seq must be an integer, got {seq!r}", 400)
    return raw["type"], raw["payload"], seq


def frame(kind: str, payload: dict[str, Any], seq: int) -> bytes:
    return pack_vlaeval({"type": kind, "payload": payload, "seq": seq, "timestamp": time.time()})


@PROTOCOLS.register("vla-eval")
class VlaEvalProtocol(Protocol):
    name = "vla-eval"

    def mount(self, app: FastAPI) -> None:
        app.add_api_websocket_route("/vla-eval", self.serve_websocket)

    def hello(self, payload: Any) -> dict[str, Any]:
        version = payload.get("protocol_version") if isinstance(payload, dict) else None
        if version is not None and version != PROTOCOL_VERSION:
            raise RequestError(
                f"client speaks vla-eval protocol version {version!r}; this server speaks {PROTOCOL_VERSION}"
            )
        params: dict[str, Any] = {}
        if len(self.state.model.cameras) > 1:
            params["send_wrist_image"] = True
        if self.state.model.proprio_dim > 0:
            params["send_state"] = True
        reply = {"protocol_version": PROTOCOL_VERSION, "model_server": "prismatic",
                 "server_version": prismatic.__version__, "capabilities": {},
                 "prismatic": self.state.describe()}  # fmt: skip
        if params:
            reply["observation_params"] = params
        return reply

    async def serve_websocket(self, ws: WebSocket) -> None:
        if not await self.state.accept(ws):
            return
        try:
            await self._session(ws)
        except DISCONNECTED:
            return  # the client went away mid-answer: nothing to tell it, nothing else is affected

    async def _session(self, ws: WebSocket) -> None:
        queued: collections.deque[np.ndarray] = collections.deque()  # the rest of the current chunk
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            seq = 0
            try:
                data = message.get("bytes")
                if data is not None and len(data) > self.state.max_request_bytes:
                    raise RequestError(f"the message is {len(data)} bytes; the server accepts at most "
                                       f"{self.state.max_request_bytes} (--max_request_mb)", 413)  # fmt: skip
                kind, payload, seq = parse_message(data)
                if kind == "hello":
                    await ws.send_bytes(frame("hello", self.hello(payload), seq))
                elif kind in ("episode_start", "episode_end"):
                    if not isinstance(payload, dict):
                        raise RequestError(f"{kind} payload must be a map, got {type(payload).__name__}")
                    queued.clear()
                elif kind == "observation":
                    if not queued:
                        answer = await self.state.act(self.name, payload)
                        queued.extend(answer.chunk)
                    await ws.send_bytes(frame("action", {"actions": queued.popleft()}, seq))
                elif kind == "error":
                    log.warning("vla-eval client reported an error: %s", payload)
                else:
                    raise RequestError(f"a client does not send {kind!r} messages; send observation, "
                                       "hello, episode_start or episode_end")  # fmt: skip
            except (RequestError, ModelFailure, ServerClosing) as e:
                reason = (
                    "observation_failed" if isinstance(e, (ModelFailure, ServerClosing)) else "bad_request"
                )
                await ws.send_bytes(frame("error", {"error": f"{reason}: {e}", "status": e.status}, seq))
            except DISCONNECTED:
                raise
            except Exception as e:  # noqa: BLE001 - a bug must not take the server down; the client gets the reason
                log.exception("unexpected error on the vla-eval websocket")
                await ws.send_bytes(
                    frame("error", {"error": f"internal: {type(e).__name__}: {e}", "status": 500}, seq)
                )
