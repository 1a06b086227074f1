"""POST /act with the original OpenVLA client code (requests + json_numpy.patch()), the encoded form,
OpenVLA-OFT's chunk responses, and every error path with its status and message; /health, /config."""

from __future__ import annotations

import json

import json_numpy
import numpy as np
import pytest
import requests
from serve_helpers import FakeChunkVLA, running

from prismatic.eval.policy import RemotePolicy, RemotePolicyError
from prismatic.serve import ServedModel

TIMEOUT = 120


@pytest.fixture()
def patched_json(monkeypatch):
    """What the original client does first (`json_numpy.patch()`), undone after the test."""
    for name in ("dumps", "loads", "dump", "load"):
        monkeypatch.setattr(json, name, getattr(json, name))
    json_numpy.patch()


def test_original_client_snippet(tiny_model, tiny_vla, case_images, patched_json):
    image = case_images[0]
    with running(tiny_model) as server:
        # the docstring of the original vla-scripts/deploy.py, verbatim apart from the address
        action = requests.post(
            f"{server.url}/act",
            json={"image": image, "instruction": "put the carrot on the plate", "unnorm_key": "bridge_orig"},
            timeout=TIMEOUT,
        ).json()
        # the "encoded" form for clients without json-numpy: the arrays travel inside a JSON string
        encoded = requests.post(
            f"{server.url}/act",
            json={
                "encoded": json_numpy.dumps(
                    {
                        "image": image,
                        "instruction": "put the carrot on the plate",
                        "unnorm_key": "bridge_orig",
                    }
                )
            },  # fmt: skip
            timeout=TIMEOUT,
        ).json()
    local = tiny_vla.predict_action(image, "put the carrot on the plate", unnorm_key="bridge_orig")
    assert isinstance(action, np.ndarray) and action.dtype == np.float64 and action.shape == (7,)
    np.testing.assert_array_equal(action, local)
    assert isinstance(encoded, str)  # as the original: a JSON string holding the json-numpy action
    np.testing.assert_array_equal(json_numpy.loads(encoded), local)


def test_chunk_models_answer_a_list_of_actions_like_oft(fake_vla, patched_json):
    primary = np.full((16, 16, 3), 30, np.uint8)
    wrist = np.full((8, 8, 3), 60, np.uint8)
    state = np.linspace(0, 1, 8)
    with running(ServedModel(fake_vla, "fake"), unnorm_key="") as server:
        # OpenVLA-OFT's client sends its observation dict with full_image / wrist_image / state
        obs = {"full_image": primary, "wrist_image": wrist, "state": state, "instruction": "stack",
               "unnorm_key": "aloha"}  # fmt: skip
        chunk = requests.post(f"{server.url}/act", json=obs, timeout=TIMEOUT).json()
        remote = RemotePolicy(f"{server.url}/act", unnorm_key="aloha", timeout_s=TIMEOUT, open_loop_steps=3)
        remote_obs = {"image": primary, "instruction": "stack"}
        with pytest.raises(RemotePolicyError, match="HTTP 422.*missing wrist"):
            remote.act(remote_obs)  # RemotePolicy sends one image; this model needs two
    expected = FakeChunkVLA.expected((primary, wrist), "stack", state, "aloha")
    assert isinstance(chunk, list) and len(chunk) == 4
    np.testing.assert_array_equal(np.stack(chunk), expected)


def _post(url: str, body: bytes, headers: dict | None = None) -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": "application/json", **(headers or {})},
                         timeout=TIMEOUT)  # fmt: skip


def test_errors_say_what_was_wrong(tiny_model, case_images):
    image = json_numpy.dumps(case_images[0])
    with running(tiny_model, max_request_mb=0.5) as server:
        url = f"{server.url}/act"
        cases = [
            (b"{not json", 400, "not valid JSON"),
            (b'{"image": 1, "instruction": NaN}', 400, "NaN"),
            (b"[1, 2, 3]", 422, "must be a map"),
            (b'{"instruction": "go", "unnorm_key": "bridge_orig"}', 422, "missing primary: looked for key 'image|full_image'"),
            (f'{{"image": {image}, "instruction": "go", "unnorm_key": "bridge"}}'.encode(), 422,
             "unknown unnorm_key 'bridge'; this model has statistics for: bridge_orig, toy_pick_place"),
            (f'{{"image": {image}, "instruction": "go"}}'.encode(), 422, "trained on 2 datasets"),
            (json.dumps({"image": json_numpy.default(np.zeros((4, 4, 3), np.float32)), "instruction": "go",
                         "unnorm_key": "bridge_orig"}).encode(), 422, "must be an HxWx3 uint8 array, got shape [4, 4, 3] dtype float32"),
            (b'{"encoded": "{}", "image": 1}', 422, "exactly"),
            (b'{"encoded": "{oops"}', 400, "the 'encoded' string is not valid JSON"),
            (b"x" * 600_000, 413, "larger than the server's limit of 524288 bytes"),
        ]  # fmt: skip
        for body, status, message in cases:
            response = _post(url, body)
            assert response.status_code == status, (body[:60], response.text)
            assert message in response.json()["error"], (message, response.json())
            assert "instruction" in response.json()["expected"]
        assert requests.get(url, timeout=TIMEOUT).status_code == 405
        health = requests.get(f"{server.url}/health", timeout=TIMEOUT).json()
    assert health["status"] == "ok" and health["batching"]["requests"] == 0  # nothing bad reached the model


def test_model_failure_is_a_500_and_the_server_goes_on(fake_vla, patched_json):
    obs = {"image": np.zeros((8, 8, 3), np.uint8), "wrist_image": np.zeros((8, 8, 3), np.uint8),
           "state": np.zeros(8), "unnorm_key": "libero_spatial"}  # fmt: skip
    with running(ServedModel(fake_vla, "fake")) as server:
        bad = requests.post(f"{server.url}/act", json={**obs, "instruction": "explode"}, timeout=TIMEOUT)
        good = requests.post(f"{server.url}/act", json={**obs, "instruction": "fine"}, timeout=TIMEOUT)
    assert bad.status_code == 500 and "simulated CUDA out of memory" in bad.json()["error"]
    assert good.status_code == 200 and len(good.json()) == 4


def test_token(fake_vla, monkeypatch, patched_json):
    obs = {"image": np.zeros((8, 8, 3), np.uint8), "wrist_image": np.zeros((8, 8, 3), np.uint8),
           "state": np.zeros(8), "instruction": "go", "unnorm_key": "aloha"}  # fmt: skip
    monkeypatch.setenv("PRISMATIC_SERVE_TOKEN", "s3cret")
    with running(ServedModel(fake_vla, "fake")) as server:
        url = f"{server.url}/act"
        missing = requests.post(url, json=obs, timeout=TIMEOUT)
        wrong = requests.post(url, json=obs, headers={"Authorization": "Bearer nope"}, timeout=TIMEOUT)
        right = requests.post(url, json=obs, headers={"Authorization": "Bearer s3cret"}, timeout=TIMEOUT)
        config = requests.get(f"{server.url}/config", timeout=TIMEOUT)
        health = requests.get(f"{server.url}/health", timeout=TIMEOUT)
    assert missing.status_code == 401 and "requires a token" in missing.json()["error"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]
    assert right.status_code == 200
    assert config.status_code == 401 and health.status_code == 200  # the readiness probe needs no token


def test_health_and_config(tiny_model):
    with running(
        tiny_model,
        max_batch=4,
        batch_window_ms=3,
        obs_keys=["openpi.primary=observation/exterior_image_1_left"],
    ) as server:
        config = requests.get(f"{server.url}/config", timeout=TIMEOUT).json()
        health = requests.get(f"{server.url}/health", timeout=TIMEOUT).json()
    assert health["status"] == "ok" and health["model"] == "openvla-tiny"
    assert config["model"] == "openvla-tiny" and config["cameras"] == ["primary"]
    assert config["chunk_len"] == 1 and config["proprio_dim"] == 0 and config["image_size"] == [224, 224]
    assert config["action_dim"] == {"bridge_orig": 7, "toy_pick_place": 7}
    assert config["unnorm_keys"] == ["bridge_orig", "toy_pick_place"]
    assert config["max_batch"] == 4 and config["batch_window_ms"] == 3
    assert config["protocols"] == ["openpi", "rest", "vla-eval"] and config["ws_root"] == "openpi"
    assert config["observation_keys"]["openpi"]["primary"] == "observation/exterior_image_1_left"
    assert config["observation_keys"]["rest"]["instruction"] == "instruction"


def test_remote_policy_executes_chunks_open_loop(monkeypatch):
    """prismatic's own client: chunk answers are executed open loop, reset drops the rest, token sent."""
    monkeypatch.setenv("PRISMATIC_SERVE_TOKEN", "tk")
    fake = FakeChunkVLA(cameras=("primary",), proprio_dim=0)
    obs = {"image": np.full((6, 6, 3), 7, np.uint8), "instruction": "pour"}
    with running(ServedModel(fake, "fake")) as server:
        policy = RemotePolicy(
            f"{server.url}/act", unnorm_key="aloha", timeout_s=TIMEOUT, token="tk", open_loop_steps=3
        )
        actions = [policy.act(obs) for _ in range(4)]  # 3 from the first chunk, then a new request
        policy.reset()
        actions.append(policy.act(obs))
        with pytest.raises(RemotePolicyError, match="HTTP 401"):
            RemotePolicy(f"{server.url}/act", unnorm_key="aloha", timeout_s=TIMEOUT).act(obs)
    chunk = FakeChunkVLA.expected([obs["image"]], "pour", None, "aloha")
    np.testing.assert_array_equal(np.stack(actions), chunk[[0, 1, 2, 0, 0]])
    assert fake.calls == [1, 1, 1]
    with pytest.raises(ValueError, match="open_loop_steps"):
        RemotePolicy("http://127.0.0.1:1/act", open_loop_steps=0)
