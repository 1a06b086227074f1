"""openpi's own client (`openpi_client.WebsocketClientPolicy`, PyPI 0.1.2, unchanged; its numpy<2 pin is
relaxed in pyproject.toml and its code runs on numpy 2) against the websocket: metadata, actions equal to
the local model's, error frames that leave the connection usable, api_key auth, multi-camera chunks."""

from __future__ import annotations

import numpy as np
import pytest
import websockets
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from serve_helpers import FakeChunkVLA, running

from prismatic.serve import ServedModel

# openpi-client 0.1.2 calls websockets.sync.client.connect() outside a `with`, which websockets 17 deprecates
pytestmark = pytest.mark.filterwarnings(
    "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning"
)


def _close(*clients: WebsocketClientPolicy) -> None:
    for client in clients:
        client._ws.close()


def test_openpi_client_unchanged(tiny_model, tiny_vla, case_images):
    first, second = case_images[0], case_images[1]
    with running(tiny_model) as server:
        root = WebsocketClientPolicy(host="127.0.0.1", port=server.port)  # connects to "/"
        named = WebsocketClientPolicy(host=f"{server.ws_url}/openpi")
        try:
            metadata = root.get_server_metadata()
            obs = {"observation/image": first, "observation/state": np.zeros(8), "prompt": "put the carrot on the plate",
                   "unnorm_key": "bridge_orig"}  # fmt: skip
            out = root.infer(obs)
            with pytest.raises(RuntimeError, match=r"(?s)Error in inference server:\ninvalid observation \(422\): "
                               r"primary image \(observation/image\) must be an HxWx3 uint8 array"):  # fmt: skip
                root.infer({**obs, "observation/image": first.astype(np.float32)})
            again = root.infer(obs)  # the connection survived the error
            other = named.infer(
                {"observation/image": second, "prompt": "wipe the table", "unnorm_key": "toy_pick_place"}
            )
        finally:
            _close(root, named)
    assert metadata["model"] == "openvla-tiny" and metadata["chunk_len"] == 1
    assert metadata["unnorm_keys"] == ["bridge_orig", "toy_pick_place"]
    local = tiny_vla.predict_action(first, "put the carrot on the plate", unnorm_key="bridge_orig")
    assert out["actions"].shape == (1, 7) and out["actions"].dtype == np.float64
    np.testing.assert_array_equal(out["actions"][0], local)
    np.testing.assert_array_equal(again["actions"][0], local)
    np.testing.assert_array_equal(
        other["actions"][0], tiny_vla.predict_action(second, "wipe the table", unnorm_key="toy_pick_place")
    )
    assert out["server_timing"]["infer_ms"] >= out["policy_timing"]["infer_ms"] > 0
    assert "prev_total_ms" in again["server_timing"] and out["batch_size"] == 1


def test_openpi_chunks_cameras_and_api_key(fake_vla, monkeypatch):
    monkeypatch.setenv("PRISMATIC_SERVE_TOKEN", "k3y")
    image, wrist, state = (np.full((12, 12, 3), 40, np.uint8), np.full((12, 12, 3), 80, np.uint8),
                           np.arange(8, dtype=np.float32))  # fmt: skip
    with running(ServedModel(fake_vla, "fake", default_unnorm_key="libero_spatial")) as server:
        with pytest.raises(websockets.exceptions.InvalidStatus, match="401"):
            WebsocketClientPolicy(host="127.0.0.1", port=server.port)
        client = WebsocketClientPolicy(host="127.0.0.1", port=server.port, api_key="k3y")
        try:
            out = client.infer({"observation/image": image, "observation/wrist_image": wrist,
                                "observation/state": state, "prompt": "stack the cups"})  # fmt: skip
            with pytest.raises(RuntimeError, match=r"server error \(500\): the model failed.*out of memory"):
                client.infer({"observation/image": image, "observation/wrist_image": wrist,
                              "observation/state": state, "prompt": "explode"})  # fmt: skip
            with pytest.raises(
                RuntimeError, match=r"missing wrist: looked for key 'observation/wrist_image'"
            ):
                client.infer({"observation/image": image, "observation/state": state, "prompt": "x"})
        finally:
            _close(client)
    expected = FakeChunkVLA.expected(
        (image, wrist), "stack the cups", state.astype(np.float64), "libero_spatial"
    )
    assert out["actions"].shape == (4, 7)
    np.testing.assert_array_equal(out["actions"], expected)
