"""Policies: the remote client against a local stdlib HTTP server (127.0.0.1 only), the local VLA wrapper,
the random baseline."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from prismatic.eval.policy import (
    RandomPolicy,
    RemotePolicy,
    RemotePolicyError,
    VLAPolicy,
    decode_array,
    encode_array,
)

ACTION = np.array([0.1, -0.2, 0.3, 0.0, 0.5, -0.6, 1.0])
MAX_REQUESTS = 20  # the server refuses to serve more than this, so no loop can run away


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        server = self.server
        server.count += 1  # type: ignore[attr-defined]
        if server.count > MAX_REQUESTS:  # type: ignore[attr-defined]
            self.send_error(429, "request budget spent")
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append((self.path, body))  # type: ignore[attr-defined]
        mode = body["instruction"]
        if self.path != "/act" or mode == "fail":
            reply, status = {"detail": "model exploded"}, 500
        elif mode == "numpy":
            reply, status = encode_array(ACTION.astype(np.float32)), 200
        elif mode == "double":  # what the original deploy.py sends: a JSON string holding the json-numpy text
            reply, status = json.dumps(encode_array(ACTION)), 200
        else:
            reply, status = {"action": ACTION.tolist()}, 200
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.count, httpd.requests = 0, []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _obs(text: str) -> dict:
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    return {"image": image, "instruction": text}


def test_remote_policy_wire_format(server):
    port = server.server_address[1]
    policy = RemotePolicy(f"http://127.0.0.1:{port}/act", unnorm_key="libero_spatial", timeout_s=5)
    for mode in ("numpy", "double", "list"):
        action = policy.act(_obs(mode))
        assert action.dtype == np.float64 and action.shape == (7,)
        np.testing.assert_allclose(action, ACTION, rtol=1e-6)
    path, body = server.requests[0]
    assert path == "/act" and body["unnorm_key"] == "libero_spatial" and body["instruction"] == "numpy"
    assert body["image"]["dtype"] == "|u1" and body["image"]["shape"] == [4, 5, 3]
    np.testing.assert_array_equal(decode_array(body["image"]), _obs("")["image"])
    assert server.count == 3


def test_remote_policy_preprocess_hook(server):
    port = server.server_address[1]
    policy = RemotePolicy(f"http://127.0.0.1:{port}/act", preprocess=lambda im: im[:2, :2], timeout_s=5)
    policy.act(_obs("list"))
    assert server.requests[-1][1]["image"]["shape"] == [2, 2, 3]


def test_remote_policy_http_error_is_not_retried(server):
    port = server.server_address[1]
    policy = RemotePolicy(f"http://127.0.0.1:{port}/act", timeout_s=5, retries=3)
    with pytest.raises(RemotePolicyError, match="HTTP 500.*model exploded"):
        policy.act(_obs("fail"))
    assert server.count == 1


def test_remote_policy_unreachable_server():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = RemotePolicy(f"http://127.0.0.1:{port}/act", timeout_s=2, retries=1, backoff_s=0.01)
    with pytest.raises(RemotePolicyError, match=rf"the policy server at http://127.0.0.1:{port}/act cannot be reached "
                                                r"\(.*Connection refused; 2 tries"):  # fmt: skip
        policy.act(_obs("list"))
    with pytest.raises(ValueError, match="http://"):
        RemotePolicy("127.0.0.1:8000/act")


def test_wire_format_matches_json_numpy():
    json_numpy = pytest.importorskip("json_numpy", reason="json-numpy comes with the `serve` extra")
    image = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    ours = json.dumps({"image": encode_array(image)})
    np.testing.assert_array_equal(json_numpy.loads(ours)["image"], image)
    theirs = json_numpy.dumps(ACTION.astype(np.float32))
    np.testing.assert_array_equal(decode_array(json.loads(theirs)), ACTION.astype(np.float32))


def test_random_policy():
    p = RandomPolicy(action_dim=3, low=[-1, 0, 0.5], high=[1, 0, 1.0], seed=0)
    a = np.stack([p.act({}) for _ in range(200)])
    assert a.shape == (200, 3) and np.all(a[:, 1] == 0) and a[:, 2].min() >= 0.5 and a[:, 0].min() < -0.5
    assert np.array_equal(RandomPolicy(seed=1).act({}), RandomPolicy(seed=1).act({}))
    with pytest.raises(ValueError, match="low <= high"):
        RandomPolicy(low=1, high=0)


def test_vla_policy_finds_the_no_noops_statistics_and_refuses_to_guess_at_construction():
    class Stats:  # VLAPolicy only reads the statistics until it acts
        norm_stats = {"bridge_orig": {}, "libero_goal_no_noops": {}}

    assert VLAPolicy(Stats(), unnorm_key="libero_goal").unnorm_key == "libero_goal_no_noops"
    assert VLAPolicy(Stats(), unnorm_key="bridge_orig").unnorm_key == "bridge_orig"
    with pytest.raises(KeyError, match="trained on 2 datasets; pass unnorm_key"):
        VLAPolicy(Stats())  # before the first episode, not at its first step


def test_vla_policy_wraps_predict_action(tiny_vla):
    from PIL import Image

    seen = []
    hook = lambda im: (seen.append(im.shape), im[:224, :224])[1]
    policy = VLAPolicy(tiny_vla, unnorm_key="toy_pick_place", preprocess=hook)
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    obs = {"image": image, "instruction": "pick up the red block"}
    policy.reset()
    action = policy.act(obs)
    expected = tiny_vla.predict_action(
        Image.fromarray(image[:224, :224]), obs["instruction"], unnorm_key="toy_pick_place"
    )
    assert action.shape == (7,) and seen == [(256, 256, 3)]
    np.testing.assert_array_equal(action, expected)  # the same call on the same input
    batch = policy.act_batch([obs, obs])
    assert batch.shape == (2, 7)
    cropped = Image.fromarray(image[:224, :224])
    both = tiny_vla.predict_actions([cropped, cropped], [obs["instruction"]] * 2, unnorm_key="toy_pick_place")
    np.testing.assert_array_equal(batch, both)  # one batched call (batched vs single: tests/models/test_reference.py)
    with pytest.raises(KeyError, match="HxWx3|missing"):
        policy.act({"image": image})
    with pytest.raises(KeyError, match=r"'libero_spatial' \(or 'libero_spatial_no_noops'\).*available: bridge_orig, toy_pick_place"):
        VLAPolicy(tiny_vla, unnorm_key="libero_spatial")


class _ChunkModel:
    """Stands in for a VLA with chunks of 3: chunk k (the k-th prediction) of row b is k * 10 + b + step / 10."""

    chunk_len, cameras, proprio_dim, norm_stats = 3, ("primary", "wrist"), 2, {"robot": {}}

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def predict_chunks(self, images, instructions, unnorm_key=None, proprio=None):
        self.calls.append({"n": len(images), "cameras": [len(i) for i in images], "proprio": np.asarray(proprio).tolist()})
        k = len(self.calls)
        steps = np.arange(3)[None, :, None] / 10
        return np.broadcast_to(k * 10 + np.arange(len(images))[:, None, None] + steps, (len(images), 3, 7)).copy()


def _chunk_obs(i: int = 0) -> dict:
    img = np.zeros((8, 8, 3), np.uint8)
    return {"image": img, "wrist_image": img, "state": [i, i + 1], "instruction": "go"}


def test_vla_policy_runs_chunks_open_loop_or_replans():
    model = _ChunkModel()
    policy = VLAPolicy(model)  # the whole chunk, then a new prediction
    firsts = [policy.act(_chunk_obs(t))[0] for t in range(5)]
    assert firsts == [10.0, 10.1, 10.2, 20.0, 20.1] and len(model.calls) == 2
    assert model.calls[0] == {"n": 1, "cameras": [2], "proprio": [[0.0, 1.0]]}  # both cameras, the raw state
    assert model.calls[1]["proprio"] == [[3.0, 4.0]]  # re-planned from the observation of step 3
    policy.reset()  # a new episode drops the rest of the chunk
    assert policy.act(_chunk_obs())[0] == 30.0
    model = _ChunkModel()
    two = VLAPolicy(model, open_loop_steps=2)
    assert [two.act(_chunk_obs())[0] for _ in range(4)] == [10.0, 10.1, 20.0, 20.1]
    every = VLAPolicy(_ChunkModel(), open_loop_steps=1)
    assert [every.act(_chunk_obs())[0] for _ in range(3)] == [10.0, 20.0, 30.0]
    with pytest.raises(ValueError, match="open_loop_steps=4 but the model predicts chunks of 3"):
        VLAPolicy(_ChunkModel(), open_loop_steps=4)


def test_vla_policy_batches_keep_one_chunk_per_env():
    model = _ChunkModel()
    policy = VLAPolicy(model)
    a = policy.act_batch([_chunk_obs(), _chunk_obs()])
    np.testing.assert_array_equal(a[:, 0], [10.0, 11.0])
    np.testing.assert_array_equal(policy.act_batch([_chunk_obs(), _chunk_obs()])[:, 0], [10.1, 11.1])
    policy._chunks[1].reset()  # env 1 starts a new episode: only it is re-planned
    np.testing.assert_array_equal(policy.act_batch([_chunk_obs(), _chunk_obs()])[:, 0], [10.2, 20.0])
    np.testing.assert_array_equal(policy.act_batch([_chunk_obs(), _chunk_obs()])[:, 0], [30.0, 20.1])
    assert [c["n"] for c in model.calls] == [2, 1, 1]


def test_vla_policy_names_missing_cameras_and_state():
    policy = VLAPolicy(_ChunkModel())
    obs = _chunk_obs()
    with pytest.raises(KeyError, match=r"reads cameras \['primary', 'wrist'\]: the observation has no 'wrist_image'"):
        policy.act({k: v for k, v in obs.items() if k != "wrist_image"})
    with pytest.raises(KeyError, match="2-D proprio state: the observation has no 'state'"):
        policy.act({k: v for k, v in obs.items() if k != "state"})


def test_vla_policy_with_the_oft_release_executes_its_chunk():
    from pathlib import Path

    from prismatic import load_vla
    from prismatic.models.oft import OFT_LIBERO

    vla = load_vla(Path(__file__).resolve().parents[1] / "assets" / "openvla-oft-tiny" / "checkpoint", **OFT_LIBERO)
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "instruction": "put the bowl on the plate",
           "wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "state": rng.normal(size=8)}  # fmt: skip
    chunk = vla.predict_chunks([[obs["image"], obs["wrist_image"]]], [obs["instruction"]], "libero_spatial_no_noops",
                               proprio=obs["state"][None])[0]  # fmt: skip
    policy = VLAPolicy(vla, unnorm_key="libero_spatial")  # resolves to libero_spatial_no_noops
    steps = np.stack([policy.act(obs) for _ in range(8)])
    np.testing.assert_array_equal(steps, chunk)
