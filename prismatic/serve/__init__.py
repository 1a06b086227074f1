"""The policy server: one port, three protocols (the original's REST, openpi's and vla-eval's websockets),
dynamic batching, validation with clear errors, optional token, clean shutdown. Guide: docs/serving.md.

    prismatic-serve --checkpoint /ckpts/openvla-7b --unnorm_key bridge_orig

Modules: `config` (settings), `model` (the VLA behind the server), `observation` (which keys carry what),
`codec` (wire encodings), `batcher` (dynamic batching), `protocol` (the adapter seam and shared state),
`rest` / `openpi` / `vlaeval` (the adapters), `app` (routes), `server` (uvicorn), `cli` (entry point).
Importing this package does not import FastAPI (the `serve` extra); `prismatic.serve.app` does.
"""

from prismatic.serve.config import ServeConfig
from prismatic.serve.errors import ModelFailure, RequestError
from prismatic.serve.model import ServedModel

__all__ = ["ModelFailure", "RequestError", "ServeConfig", "ServedModel"]
