"""The seam for serving protocols: a registry of adapters, and the state they share.

A protocol adapter only translates wire messages to and from `PolicyRequest` / action chunks. Batching
(`Batcher`), validation (`build_request`), authentication (`Auth`) and the model (`ServedModel`) live
behind it once, in `ServerState`. Adding a protocol is a new module with a registered `Protocol`
subclass (import it in `prismatic.serve.app`).
"""

from __future__ import annotations

import hmac
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocketDisconnect

from prismatic.serve.batcher import Answer, Batcher
from prismatic.serve.model import ServedModel
from prismatic.serve.observation import ObservationKeys, build_request
from prismatic.util.registry import Registry

if TYPE_CHECKING:
    from fastapi import FastAPI, WebSocket

log = logging.getLogger(__name__)

TOKEN_ENV = "PRISMATIC_SERVE_TOKEN"
DISCONNECTED = (WebSocketDisconnect, ConnectionError)  # what sending to a client that went away raises


class Auth:
    """Optional shared-secret check. The token may come as `Authorization: Bearer TOKEN`,
    `Authorization: Api-Key TOKEN` (what openpi-client sends with api_key=...), or, on websockets only,
    as `?token=TOKEN` for clients that cannot set headers (vla-eval's `Connection`)."""

    def __init__(self, token: str | None) -> None:
        self.token = token or None

    @classmethod
    def from_config(cls, token: str) -> Auth:
        return cls(token or os.environ.get(TOKEN_ENV) or None)

    def check(self, headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
        """None when allowed, else the reason (for a 401)."""
        if self.token is None:
            return None
        given = None
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() in ("bearer", "api-key") and value:
            given = value.strip()
        elif query is not None and query.get("token"):
            given = query["token"]
        if given is None:
            return "this server requires a token: send the header 'Authorization: Bearer TOKEN'"
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return "the token is not valid"
        return None


class ServerState:
    """What every protocol shares: the model, the batcher, auth, limits and the observation keys."""

    def __init__(
        self,
        model: ServedModel,
        batcher: Batcher,
        auth: Auth,
        max_request_bytes: int,
        obs_keys: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.model, self.batcher, self.auth, self.max_request_bytes = model, batcher, auth, max_request_bytes
        self._obs_overrides = dict(obs_keys or {})
        self._keys: dict[str, ObservationKeys] = {}

    def keys(self, protocol: str) -> ObservationKeys:
        if protocol not in self._keys:
            self._keys[protocol] = ObservationKeys(
                protocol, self.model.cameras, self._obs_overrides.get(protocol)
            )
        return self._keys[protocol]

    def describe(self) -> dict[str, Any]:
        return {**self.model.describe(), "max_request_bytes": self.max_request_bytes,
                "max_batch": self.batcher.max_batch, "batch_window_ms": self.batcher.window_s * 1000.0,
                "observation_keys": {p: k.describe() for p, k in sorted(self._keys.items())}}  # fmt: skip

    async def act(self, protocol: str, obs: Any) -> Answer:
        """Validate an observation in `protocol`'s keys and answer it through the batcher."""
        request = build_request(
            obs, self.keys(protocol), self.model.proprio_dim, self.model.resolve_unnorm_key
        )
        return await self.batcher.submit(request)

    async def accept(self, ws: WebSocket) -> bool:
        """Authenticate a websocket handshake: accept it, or refuse it with HTTP 401 and the reason."""
        reason = self.auth.check(ws.headers, ws.query_params)
        if reason is None:
            await ws.accept()
            return True
        log.warning("refused a websocket from %s: %s", ws.client, reason)
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            from fastapi.responses import JSONResponse

            await ws.send_denial_response(JSONResponse({"error": reason}, status_code=401))
        else:
            await ws.close(code=1008, reason=reason)
        return False


class Protocol(ABC):
    """One wire protocol. `mount` adds its routes; websocket protocols also `serve_websocket` a
    connection, so the app can alias one of them on "/" (`--ws_root`)."""

    name: str = ""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        state.keys(self.name)  # validate its observation keys against the model at start-up

    @abstractmethod
    def mount(self, app: FastAPI) -> None: ...

    async def serve_websocket(self, ws: WebSocket) -> None:
        raise NotImplementedError(f"the {self.name} protocol does not speak websocket")


PROTOCOLS: Registry[type[Protocol]] = Registry("serving protocol", flag="--protocols")
