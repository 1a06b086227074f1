"""vla-eval's own client (`vla_eval.connection.Connection`, PyPI 0.8.0) against the vla-eval endpoint:
the HELLO handshake, episode start/end, observation -> action, error frames that leave the session
usable, the token in the URL, the "/" alias, and open-loop execution of action chunks."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import websockets
from serve_helpers import FakeChunkVLA, running
from vla_eval.connection import Connection

from prismatic.serve import ServedModel

TIMEOUT = 120


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 300))


def test_connection_handshake_actions_and_errors(tiny_model, tiny_vla, case_images):
    image = case_images[0]
    obs = {
        "images": {"agentview": image},
        "task_description": "put the carrot on the plate",
        "unnorm_key": "bridge_orig",
    }

    async def session(url: str):
        async with Connection(url, timeout=TIMEOUT, max_retries=1) as conn:
            await conn.start_episode({"task": {"name": "carrot"}})
            first = await conn.act(obs)
            errors = []
            for bad in ({"images": {}, "task_description": "x"}, {**obs, "unnorm_key": "nope"}):
                with pytest.raises(RuntimeError, match="Server error") as info:
                    await conn.act(bad)
                errors.append(str(info.value))
            second = await conn.act(obs)  # the session survived both errors
            await conn.end_episode({"success": False})
            return conn.server_info, first, second, errors

    with running(tiny_model) as server:
        info, first, second, errors = _run(session(f"{server.ws_url}/vla-eval"))
    assert info["protocol_version"] == 1 and info["model_server"] == "prismatic"
    assert (
        info["prismatic"]["cameras"] == ["primary"] and "observation_params" not in info
    )  # one camera, no state
    local = tiny_vla.predict_action(image, "put the carrot on the plate", unnorm_key="bridge_orig")
    for answer in (first, second):
        assert answer["actions"].shape == (7,)
        np.testing.assert_array_equal(answer["actions"], local)
    assert "bad_request: missing primary: looked for key 'images[0]'" in errors[0]
    assert "unknown unnorm_key 'nope'" in errors[1] and "bridge_orig, toy_pick_place" in errors[1]


def test_chunks_run_open_loop_token_and_root_alias(fake_vla, monkeypatch):
    monkeypatch.setenv("PRISMATIC_SERVE_TOKEN", "t0k")
    image, wrist = np.full((10, 10, 3), 20, np.uint8), np.full((10, 10, 3), 50, np.uint8)
    states = np.linspace(-1, 1, 8)
    obs = {"images": {"agentview": image, "wrist": wrist}, "task_description": "fold", "states": states}

    async def session(url: str):
        async with Connection(url, timeout=TIMEOUT, max_retries=1) as conn:
            await conn.start_episode({"task": {"name": "fold"}})
            actions = [(await conn.act(obs))["actions"] for _ in range(6)]
            calls_before_restart = list(fake_vla.calls)
            await conn.start_episode({"task": {"name": "fold"}})  # a new episode drops the queued actions
            actions.append((await conn.act(obs))["actions"])
            await conn.end_episode({})
            return conn.server_info, actions, calls_before_restart

    model = ServedModel(fake_vla, "fake", default_unnorm_key="libero_spatial")
    with running(model, ws_root="vla-eval") as server:
        with pytest.raises(ConnectionError):  # no token: the handshake is refused (HTTP 401)
            _run(session(server.ws_url))
        info, actions, calls = _run(session(f"{server.ws_url}/?token=t0k"))
    assert info["observation_params"] == {"send_wrist_image": True, "send_state": True}
    chunk = FakeChunkVLA.expected((image, wrist), "fold", states, "libero_spatial")
    expected = [chunk[0], chunk[1], chunk[2], chunk[3], chunk[0], chunk[1], chunk[0]]
    np.testing.assert_array_equal(np.stack(actions), np.stack(expected))
    assert calls == [1, 1]  # 6 observations of one episode: 2 model calls (chunks of 4, open loop)
    assert fake_vla.calls == [1, 1, 1]


def test_protocol_errors_on_a_raw_socket(fake_vla):
    """Frames vla-eval's client would never send still get an ERROR frame, not a dropped connection."""
    import msgpack

    from prismatic.serve.codec import unpack_msgpack

    async def session(url: str):
        async with websockets.connect(url, max_size=None) as ws:
            replies = []
            for frame in (b"\x00\xff", "text", msgpack.packb({"type": "dance", "payload": {}, "seq": 1, "timestamp": 0}),
                          msgpack.packb({"type": "hello", "payload": {"protocol_version": 7}, "seq": 2, "timestamp": 0}),
                          msgpack.packb({"type": "action", "payload": {}, "seq": 3, "timestamp": 0}),
                          msgpack.packb({"payload": {}, "seq": 4})):  # fmt: skip
                await ws.send(frame)
                replies.append(unpack_msgpack(await asyncio.wait_for(ws.recv(), TIMEOUT)))
            return replies

    with running(ServedModel(fake_vla, "fake")) as server:
        replies = _run(session(f"{server.ws_url}/vla-eval"))
    assert [r["type"] for r in replies] == ["error"] * 6
    messages = [r["payload"]["error"] for r in replies]
    assert "not valid msgpack" in messages[0]
    assert "send binary msgpack frames" in messages[1]
    assert "unknown message type 'dance'; valid types: hello, observation" in messages[2]
    assert "protocol version 7; this server speaks 1" in messages[3] and replies[3]["seq"] == 2
    assert "a client does not send 'action' messages" in messages[4]
    assert "message without ['type', 'timestamp']" in messages[5]
