"""The original OpenVLA REST protocol (`vla-scripts/deploy.py`): `POST /act`, JSON with json-numpy arrays.

    request   {"image": ARRAY, "instruction": "pick up the remote", "unnorm_key": "bridge_orig" | null}
              or {"encoded": "<that object, serialised with json_numpy.dumps>"} (for clients without
              json-numpy support: the arrays travel inside a JSON string)
              OpenVLA-OFT clients may send "full_image", "wrist_image" and "state" instead.
    response  ARRAY [action_dim] when the model predicts one step, a list of chunk_len ARRAYs when it
              predicts chunks (as OpenVLA-OFT's server does); for the encoded form, the same as a JSON string
    ARRAY     {"__numpy__": "<base64 of the C-order bytes>", "dtype": "<f8", "shape": [7]}

so the original client snippet works unchanged:

    import json_numpy; json_numpy.patch()
    action = requests.post("http://127.0.0.1:8000/act", json={"image": img, "instruction": "..."}).json()

Unlike the original (HTTP 200 with the body "error" for every failure), errors are 4xx/5xx with
{"error": "<what was wrong>", "expected": "<the request form>"}: 400 unreadable JSON, 401 missing or
wrong token, 413 body over --max_request_mb, 422 invalid observation (missing key, wrong image shape or
dtype, NaN, unknown unnorm_key), 500 model failure, 503 shutting down.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request, Response

from prismatic.serve.codec import encode_json_numpy, loads_json
from prismatic.serve.errors import ModelFailure, RequestError, ServerClosing
from prismatic.serve.protocol import PROTOCOLS, Protocol

log = logging.getLogger(__name__)

EXPECTED = (
    '{"image": json-numpy HxWx3 uint8 array, "instruction": str, "unnorm_key": str or null} '
    '(or {"encoded": "<that object as a json_numpy.dumps string>"})'
)
DRAIN_FACTOR = (
    4  # read (and drop) an oversized body up to this multiple of the limit, so the client sees the 413
)


def error_response(status: int, message: str) -> Response:
    from fastapi.responses import JSONResponse

    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message, "expected": EXPECTED}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 RequestError once it exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    too_big = RequestError(
        f"the request body is larger than the server's limit of {limit} bytes (--max_request_mb); "
        "send a smaller image (the model resizes to its input size anyway)",
        413,
    )
    if declared is not None and declared.isdigit() and int(declared) > DRAIN_FACTOR * limit:
        raise too_big
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN_FACTOR * limit:
            raise too_big
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise too_big
    return b"".join(chunks)


@PROTOCOLS.register("rest")
class RestProtocol(Protocol):
    name = "rest"

    def mount(self, app: FastAPI) -> None:
        app.add_api_route("/act", self.act, methods=["POST"], include_in_schema=False)

    def encode(self, chunk: Any) -> Any:
        if self.state.model.chunk_len == 1:
            return encode_json_numpy(chunk[0])
        return [encode_json_numpy(action) for action in chunk]

    async def act(self, request: Request) -> Response:
        from fastapi.responses import JSONResponse

        reason = self.state.auth.check(request.headers)
        if reason is not None:
            return error_response(401, reason)
        try:
            payload = loads_json(await read_body(request, self.state.max_request_bytes), arrays=True)
            encoded = isinstance(payload, dict) and "encoded" in payload
            if encoded:
                if len(payload) != 1 or not isinstance(payload["encoded"], str):
                    raise RequestError(
                        'the encoded form is exactly {"encoded": "<json string>"}, with no other keys'
                    )
                payload = loads_json(payload["encoded"], "the 'encoded' string", arrays=True)
            answer = await self.state.act(self.name, payload)
        except (RequestError, ModelFailure, ServerClosing) as e:
            return error_response(e.status, str(e))
        except Exception as e:  # noqa: BLE001 - a bug must not take the server down; the client gets the reason
            log.exception("unexpected error while answering /act")
            return error_response(500, f"internal server error: {type(e).__name__}: {e}")
        body = self.encode(answer.chunk)
        return JSONResponse(json.dumps(body) if encoded else body)
