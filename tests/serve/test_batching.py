"""Dynamic batching end to end: concurrent requests from all three protocols, with instructions of
different lengths (so the batch is left-padded), are decoded in one model call, and each answer equals
the answer to the same request alone. Action token ids are exact, so the actions are compared exactly."""

from __future__ import annotations

import asyncio
import threading

import json_numpy
import numpy as np
import pytest
import requests
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from serve_helpers import running
from vla_eval.connection import Connection

from prismatic.serve import ServedModel

KEY = "bridge_orig"
INSTRUCTIONS = [
    "put the carrot on the plate",
    "pick up the spoon and place it in the pot next to the towel",
    "wipe",
    "open the drawer",
]


@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
def test_concurrent_requests_share_a_call_and_equal_their_single_answers(tiny_vla, case_images):
    images = [case_images[i % len(case_images)] for i in range(len(INSTRUCTIONS))]
    answers: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(INSTRUCTIONS), timeout=120)

    def rest(i: int, url: str) -> None:
        body = json_numpy.dumps({"image": images[i], "instruction": INSTRUCTIONS[i]})
        start.wait()
        response = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=300)
        answers[i] = json_numpy.loads(response.text)

    def openpi(i: int, port: int) -> None:
        client = WebsocketClientPolicy(host="127.0.0.1", port=port)
        try:
            start.wait()
            answers[i] = client.infer({"observation/image": images[i], "prompt": INSTRUCTIONS[i]})["actions"][
                0
            ]
        finally:
            client._ws.close()

    def vlaeval(i: int, url: str) -> None:
        async def main():
            async with Connection(url, timeout=300, max_retries=1) as conn:
                await asyncio.get_running_loop().run_in_executor(None, start.wait)
                return (await conn.act({"images": {"cam": images[i]}, "task_description": INSTRUCTIONS[i]}))[
                    "actions"
                ]

        answers[i] = asyncio.run(main())

    model = ServedModel(tiny_vla, "openvla-tiny", default_unnorm_key=KEY)
    with running(model, max_batch=8, batch_window_ms=3000) as server:
        clients = [
            threading.Thread(target=rest, args=(0, f"{server.url}/act")),
            threading.Thread(target=rest, args=(1, f"{server.url}/act")),
            threading.Thread(target=openpi, args=(2, server.port)),
            threading.Thread(target=vlaeval, args=(3, f"{server.ws_url}/vla-eval")),
        ]
        for c in clients:
            c.start()
        for c in clients:
            c.join(300)
        stats = requests.get(f"{server.url}/health", timeout=60).json()["batching"]
    assert sorted(answers) == [0, 1, 2, 3], "a client got no answer"
    # all four arrive within the 3 s window of the first: one model call (on a machine so loaded that one
    # misses it, still at least one batched call)
    assert stats["requests"] == 4 and stats["largest_batch"] >= 2, stats
    alone = [tiny_vla.predict_chunks([images[i]], [INSTRUCTIONS[i]], unnorm_key=KEY)[0, 0] for i in range(4)]
    for i in range(4):
        np.testing.assert_array_equal(answers[i], alone[i], err_msg=f"request {i}: {INSTRUCTIONS[i]!r}")
