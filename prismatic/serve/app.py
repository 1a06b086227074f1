"""The app: every enabled protocol on one port, plus `GET /health` and `GET /config`.

    app = create_app(ServedModel(vla, "my-vla"), ServeConfig(checkpoint="...").validate())

Routes: POST /act (rest), websocket /openpi, websocket /vla-eval, websocket / (the `--ws_root`
protocol: openpi's and vla-eval's clients both default to the root path), GET /health (no token
needed: a readiness probe), GET /config (model, cameras, image size, proprio dim, chunk length,
action dimension per unnorm key, limits, observation keys).
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from prismatic.serve import openpi, rest, vlaeval  # noqa: F401  (register the protocols)
from prismatic.serve.batcher import Batcher
from prismatic.serve.config import ServeConfig
from prismatic.serve.model import ServedModel
from prismatic.serve.observation import DEFAULT_KEYS, parse_overrides
from prismatic.serve.protocol import PROTOCOLS, Auth, ServerState

log = logging.getLogger(__name__)


def create_app(model: ServedModel, config: ServeConfig) -> FastAPI:
    """Build the server for `model` (start it with uvicorn, see `prismatic.serve.server`)."""
    config.validate()
    batcher = Batcher(model.run_batch, max_batch=config.max_batch, window_ms=config.batch_window_ms)
    state = ServerState(model, batcher, Auth.from_config(config.token), config.max_request_bytes,
                        parse_overrides(config.obs_keys, tuple(DEFAULT_KEYS)))  # fmt: skip
    protocols = {name: PROTOCOLS.get(name)(state) for name in config.protocols}
    started = time.time()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        await batcher.start()
        log.info("serving %s: %s", model.name, ", ".join(sorted(protocols)))
        try:
            yield
        finally:
            await batcher.stop()
            log.info("server stopped after %d requests in %d model calls", batcher.stats.requests,
                     batcher.stats.batches)  # fmt: skip

    app = FastAPI(title="prismatic policy server", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    app.state.server = state

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model.name, "uptime_s": round(time.time() - started, 1),
                "batching": batcher.stats.to_dict()}  # fmt: skip

    @app.get("/config")
    async def config_route(request: Request) -> Any:
        reason = state.auth.check(request.headers)
        if reason is not None:
            return JSONResponse({"error": reason}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return {**state.describe(), "protocols": sorted(protocols),
                "ws_root": config.ws_root if config.ws_root in protocols else None}  # fmt: skip

    for protocol in protocols.values():
        protocol.mount(app)
    if config.ws_root in protocols:
        app.add_api_websocket_route("/", protocols[config.ws_root].serve_websocket)
    return app
