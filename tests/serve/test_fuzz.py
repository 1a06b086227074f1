"""A bounded fuzz run: 360 malformed requests over the three protocols (random bytes, truncated bodies,
wrong types, shapes, dtypes, NaN, unknown keys and message types, oversized bodies), each answered with
a 4xx or a protocol error frame that carries a message; none reaches the model; clients that hang up
mid-request disturb nobody; afterwards good requests on every protocol are still answered exactly."""

from __future__ import annotations

import asyncio
import http.client
import json

import json_numpy
import msgpack
import numpy as np
import pytest
import requests
import websockets
import websockets.sync.client
from openpi_client import msgpack_numpy as openpi_msgpack
from serve_helpers import running
from vla_eval.protocol.messages import Message, MessageType, pack_message

from prismatic.serve import ServedModel
from prismatic.serve.codec import unpack_msgpack

KEY, INSTRUCTION = "bridge_orig", "put the carrot on the plate"
N_REST, N_OPENPI, N_VLAEVAL = 160, 100, 100
LIMIT_MB = 0.25

BAD_IMAGES = [
    3, "abc", None, [1, 2], {"__numpy__": "###", "dtype": "|u1", "shape": [2]},
    np.zeros((16, 16, 3), np.float32), np.zeros((16, 16), np.uint8), np.zeros((16, 16, 4), np.uint8),
    np.zeros((0, 16, 3), np.uint8), np.zeros((5000, 1, 3), np.uint8), np.zeros((2, 2, 3), np.int64),
    np.full((4, 4, 3), np.nan, np.float64), np.zeros(3, np.bool_),
]  # fmt: skip
BAD_TEXT = [5, None, "", "   ", "x" * 3000, [], {}, 1.5, np.zeros(3, np.uint8)]
BAD_KEYS = ["nope", 5, [], {}, "", "BRIDGE_ORIG"]


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _mutated(rng: np.random.Generator, good: dict, image_key: str, text_key: str) -> dict:
    """A copy of `good` that is invalid in one of several ways (never valid by accident)."""
    obs = dict(good)
    kind = rng.integers(5)
    if kind == 0:
        del obs[image_key if rng.random() < 0.5 else text_key]
    elif kind == 1:
        obs[image_key] = _pick(rng, BAD_IMAGES)
    elif kind == 2:
        obs[text_key] = _pick(rng, BAD_TEXT)
    elif kind == 3:
        obs["unnorm_key"] = _pick(rng, BAD_KEYS)
    else:
        obs[image_key], obs[text_key] = _pick(rng, BAD_IMAGES), _pick(rng, BAD_TEXT)
    return obs


def _rest_bodies(rng: np.random.Generator, image: np.ndarray) -> list[bytes]:
    good = {"image": image, "instruction": INSTRUCTION, "unnorm_key": KEY}
    good_body = json_numpy.dumps(good).encode()
    bodies: list[bytes] = []
    while len(bodies) < N_REST:
        kind = rng.integers(8)
        if kind == 0:
            bodies.append(rng.bytes(int(rng.integers(1, 2000))))
        elif kind == 1:
            bodies.append(good_body[: int(rng.integers(1, len(good_body) - 1))])
        elif kind in (2, 3):
            bodies.append(json_numpy.dumps(_mutated(rng, good, "image", "instruction")).encode())
        elif kind == 4:
            bodies.append(
                _pick(rng, [b"[]", b"3", b'"str"', b"null", b'{"a": NaN}', b"[" * 50_000 + b"]" * 50_000])
            )
        elif kind == 5:
            inner = json_numpy.dumps(_mutated(rng, good, "image", "instruction"))
            bodies.append(
                _pick(rng, [json.dumps({"encoded": inner}), '{"encoded": 5}', '{"encoded": "{bad"}']).encode()
            )
        elif kind == 6:
            bodies.append(b'{"x": "' + b"a" * int(rng.integers(300_000, 900_000)) + b'"}')  # over the limit
        else:
            obs = {"image": json_numpy.default(image), "instruction": INSTRUCTION, "unnorm_key": KEY}
            obs["image"] = {**obs["image"], "shape": [int(rng.integers(1, 10**5)), 7, 3]}  # size mismatch
            bodies.append(json.dumps(obs).encode())
    return bodies


def _openpi_frames(rng: np.random.Generator, image: np.ndarray) -> list[bytes | str]:
    good = {"observation/image": image, "prompt": INSTRUCTION, "unnorm_key": KEY}
    frames: list[bytes | str] = []
    while len(frames) < N_OPENPI:
        kind = rng.integers(5)
        if kind == 0:
            frames.append(rng.bytes(int(rng.integers(1, 500))))
        elif kind == 1:
            frames.append("please act")
        elif kind == 2:
            frames.append(openpi_msgpack.packb(_pick(rng, [[1, 2], "obs", 3, None])))
        else:
            frames.append(openpi_msgpack.packb(_mutated(rng, good, "observation/image", "prompt")))
    return frames


def _vlaeval_frames(rng: np.random.Generator, image: np.ndarray) -> list[bytes | str]:
    good = {"images": {"agentview": image}, "task_description": INSTRUCTION, "unnorm_key": KEY}
    frames: list[bytes | str] = []
    while len(frames) < N_VLAEVAL:
        kind = rng.integers(6)
        if kind == 0:
            frames.append(rng.bytes(int(rng.integers(1, 500))))
        elif kind == 1:
            frames.append(msgpack.packb(_pick(rng, [{"type": "observation"}, {"payload": {}, "seq": 1},
                                                    {"type": "teleport", "payload": {}, "seq": 1, "timestamp": 0},
                                                    [1, 2, 3], {"type": "observation", "payload": {}, "seq": "x",
                                                                "timestamp": 0}])))  # fmt: skip
        elif kind == 2:
            frames.append(
                pack_message(Message(MessageType.EPISODE_START, "not a map", seq=int(rng.integers(99))))
            )  # type: ignore[arg-type]
        else:
            obs = _mutated(rng, good, "images", "task_description")
            frames.append(pack_message(Message(MessageType.OBSERVATION, obs, seq=int(rng.integers(10**6)))))
    return frames


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
def test_fuzz_then_good_requests(tiny_vla, case_images):
    rng = np.random.default_rng(20240613)
    image = case_images[0][:32, :32].copy()
    model = ServedModel(tiny_vla, "openvla-tiny")
    local = tiny_vla.predict_action(image, INSTRUCTION, unnorm_key=KEY)
    with running(model, max_request_mb=LIMIT_MB, batch_window_ms=0) as server:
        # -- REST -----------------------------------------------------------------------------------
        with requests.Session() as session:
            for body in _rest_bodies(rng, image):
                r = session.post(f"{server.url}/act", data=body, timeout=60)
                assert r.status_code in (400, 413, 422), (r.status_code, body[:80], r.text[:200])
                assert r.json()["error"], body[:80]
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.putrequest("POST", "/act")
        conn.putheader("Content-Length", str(10**9))  # declared far over the limit: refused before reading
        conn.endheaders()
        r = conn.getresponse()
        assert r.status == 413 and b"larger than the server's limit" in r.read()
        conn.close()

        # -- openpi ---------------------------------------------------------------------------------
        with websockets.sync.client.connect(f"{server.ws_url}/openpi", max_size=None) as ws:
            assert openpi_msgpack.unpackb(ws.recv())["model"] == "openvla-tiny"  # metadata frame
            for frame in _openpi_frames(rng, image):
                ws.send(frame)
                reply = ws.recv(timeout=60)
                assert isinstance(reply, str) and reply.startswith("invalid observation (4"), reply[:200]

        # -- vla-eval -------------------------------------------------------------------------------
        with websockets.sync.client.connect(f"{server.ws_url}/vla-eval", max_size=None) as ws:
            for frame in _vlaeval_frames(rng, image):
                ws.send(frame)
                reply = unpack_msgpack(ws.recv(timeout=60))
                assert reply["type"] == "error" and reply["payload"]["status"] in (400, 413, 422), reply
                assert reply["payload"]["error"].startswith("bad_request: ")

        # -- clients that hang up before their answer ----------------------------------------------
        for _ in range(2):
            with websockets.sync.client.connect(f"{server.ws_url}/openpi", max_size=None) as ws:
                ws.recv()
                ws.send(
                    openpi_msgpack.packb(
                        {"observation/image": image, "prompt": INSTRUCTION, "unnorm_key": KEY}
                    )
                )
        assert requests.get(f"{server.url}/health", timeout=60).json()["status"] == "ok"

        # -- good requests on every protocol --------------------------------------------------------
        rest = json_numpy.loads(
            requests.post(
                f"{server.url}/act",
                data=json_numpy.dumps({"image": image, "instruction": INSTRUCTION, "unnorm_key": KEY}),
                timeout=120,
            ).text  # fmt: skip
        )
        with websockets.sync.client.connect(f"{server.ws_url}/openpi", max_size=None) as ws:
            ws.recv()
            ws.send(
                openpi_msgpack.packb({"observation/image": image, "prompt": INSTRUCTION, "unnorm_key": KEY})
            )
            openpi = openpi_msgpack.unpackb(ws.recv(timeout=120))["actions"][0]

        async def vlaeval_act():
            from vla_eval.connection import Connection

            async with Connection(f"{server.ws_url}/vla-eval", timeout=120, max_retries=1) as c:
                return (
                    await c.act({"images": {"a": image}, "task_description": INSTRUCTION, "unnorm_key": KEY})
                )["actions"]

        vlaeval = asyncio.run(vlaeval_act())
        stats = requests.get(f"{server.url}/health", timeout=60).json()["batching"]
    for answer in (rest, openpi, vlaeval):
        np.testing.assert_array_equal(answer, local)
    # only the 2 hung-up requests and the 3 good ones reached the model; no malformed one did
    assert stats["requests"] == 5, stats
