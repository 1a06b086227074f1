"""openpi's websocket protocol, so `openpi_client.websocket_client_policy.WebsocketClientPolicy` works unchanged.

On connect the server sends one metadata frame (msgpack: the /config dictionary). Then, for each binary
frame holding a msgpack-numpy observation, it answers

    {"actions": float64 [chunk_len, action_dim],
     "server_timing": {"infer_ms": <receipt to answer>, "prev_total_ms": <previous round trip>},
     "policy_timing": {"infer_ms": <the model call>}, "batch_size": <requests in that model call>}

with arrays packed as openpi's `msgpack_numpy` packs them. openpi clients execute the chunk themselves
(`ActionChunkBroker`); an OpenVLA model has chunk_len 1, so replan every step. A malformed observation or
a model failure is answered with a text frame saying what was wrong (the client raises it as
RuntimeError) and, unlike openpi's server, the connection stays open for the next observation.

Served on `/openpi`, and on `/` unless `--ws_root vla-eval`: `WebsocketClientPolicy(host="127.0.0.1",
port=8000)` connects to `/`, `WebsocketClientPolicy(host="ws://127.0.0.1:8000/openpi")` to the named path.
With `--token`, pass it as `api_key=` (openpi-client sends `Authorization: Api-Key ...`).
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, WebSocket

from prismatic.serve.codec import pack_openpi, unpack_msgpack
from prismatic.serve.errors import ModelFailure, RequestError, ServerClosing
from prismatic.serve.protocol import DISCONNECTED, PROTOCOLS, Protocol

log = logging.getLogger(__name__)


@PROTOCOLS.register("openpi")
class OpenpiProtocol(Protocol):
    name = "openpi"

    def mount(self, app: FastAPI) -> None:
        app.add_api_websocket_route("/openpi", self.serve_websocket)

    async def serve_websocket(self, ws: WebSocket) -> None:
        if not await self.state.accept(ws):
            return
        try:
            await self._session(ws)
        except DISCONNECTED:
            return  # the client went away mid-answer: nothing to tell it, nothing else is affected

    async def _session(self, ws: WebSocket) -> None:
        await ws.send_bytes(pack_openpi(self.state.describe()))
        prev_total_ms = None
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            start = time.perf_counter()
            try:
                data = message.get("bytes")
                if data is None:
                    raise RequestError(
                        "send observations as binary msgpack frames (openpi_client.msgpack_numpy)", 400
                    )
                if len(data) > self.state.max_request_bytes:
                    raise RequestError(f"the observation is {len(data)} bytes; the server accepts at most "
                                       f"{self.state.max_request_bytes} (--max_request_mb)", 413)  # fmt: skip
                answer = await self.state.act(self.name, unpack_msgpack(data))
            except (RequestError, ModelFailure, ServerClosing) as e:
                kind = "invalid observation" if isinstance(e, RequestError) else "server error"
                await ws.send_text(f"{kind} ({e.status}): {e}")
                continue
            except Exception as e:  # noqa: BLE001 - a bug must not take the server down; the client gets the reason
                log.exception("unexpected error on the openpi websocket")
                await ws.send_text(f"internal server error (500): {type(e).__name__}: {e}")
                continue
            timing = {"infer_ms": (time.perf_counter() - start) * 1000.0}
            if prev_total_ms is not None:
                timing["prev_total_ms"] = prev_total_ms
            reply = {"actions": answer.chunk, "server_timing": timing,
                     "policy_timing": {"infer_ms": answer.model_ms}, "batch_size": answer.batch_size}  # fmt: skip
            await ws.send_bytes(pack_openpi(reply))
            prev_total_ms = (time.perf_counter() - start) * 1000.0
