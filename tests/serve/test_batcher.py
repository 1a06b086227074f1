"""The dynamic batcher (window, size cap, arrival order, cancelled and shutting-down requests) and the
model side of batching (grouping by unnorm key, isolating a request that makes the model fail)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from prismatic.serve import ServedModel
from prismatic.serve.batcher import Batcher
from prismatic.serve.errors import ModelFailure, ServerClosing
from prismatic.serve.observation import PolicyRequest

IMAGE = np.zeros((4, 4, 3), np.uint8)


def _request(i: int, key: str = "k") -> PolicyRequest:
    return PolicyRequest((IMAGE,), f"task {i}", key)


class Recorder:
    """run_batch stand-in: answers request i with [[i]], records the batches, can be held mid-call."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, requests):
        self.release.wait(10)
        self.batches.append([r.instruction for r in requests])
        return [np.array([[float(r.instruction.split()[1])]]) for r in requests]


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_requests_in_one_window_share_one_call_and_keep_their_answers():
    async def main():
        rec = Recorder()
        batcher = Batcher(rec, max_batch=8, window_ms=200)
        await batcher.start()
        answers = await asyncio.gather(*(batcher.submit(_request(i)) for i in range(5)))
        await batcher.stop()
        return rec, answers, batcher.stats

    rec, answers, stats = _run(main())
    assert rec.batches == [[f"task {i}" for i in range(5)]]
    assert [a.chunk.item() for a in answers] == [0, 1, 2, 3, 4] and {a.batch_size for a in answers} == {5}
    assert stats.largest_batch == 5 and stats.batches == 1 and stats.requests == 5


def test_max_batch_caps_and_order_is_kept():
    async def main():
        rec = Recorder()
        batcher = Batcher(rec, max_batch=2, window_ms=100)
        await batcher.start()
        answers = await asyncio.gather(*(batcher.submit(_request(i)) for i in range(5)))
        await batcher.stop()
        return rec, answers

    rec, answers = _run(main())
    assert rec.batches == [["task 0", "task 1"], ["task 2", "task 3"], ["task 4"]]
    assert [a.chunk.item() for a in answers] == [0, 1, 2, 3, 4]


def test_batching_off_and_the_window_closes():
    async def main():
        rec = Recorder()
        off = Batcher(rec, max_batch=1, window_ms=100)
        await off.start()
        await asyncio.gather(*(off.submit(_request(i)) for i in range(3)))
        await off.stop()
        late = Batcher(rec, max_batch=8, window_ms=20)
        await late.start()
        first = asyncio.ensure_future(late.submit(_request(10)))
        await asyncio.sleep(0.5)  # well past the window: the first request has been answered alone
        await late.submit(_request(11))
        await first
        await late.stop()
        return rec

    rec = _run(main())
    assert rec.batches == [["task 0"], ["task 1"], ["task 2"], ["task 10"], ["task 11"]]


def test_cancelled_requests_are_skipped_and_stop_fails_the_queue():
    async def main():
        rec = Recorder()
        rec.release.clear()  # hold the model thread inside the first call
        batcher = Batcher(rec, max_batch=1, window_ms=0)
        await batcher.start()
        running = asyncio.ensure_future(batcher.submit(_request(0)))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(batcher.submit(_request(1)))
        queued = asyncio.ensure_future(batcher.submit(_request(2)))
        await asyncio.sleep(0.05)
        gone.cancel()  # a client that disconnected while queued
        rec.release.set()
        assert (await running).chunk.item() == 0
        assert (await queued).chunk.item() == 2
        rec.release.clear()
        held = asyncio.ensure_future(batcher.submit(_request(3)))
        waiting = asyncio.ensure_future(batcher.submit(_request(4)))
        await asyncio.sleep(0.05)
        threading.Timer(0.2, rec.release.set).start()
        await batcher.stop()  # waits for the running call, fails what has not run
        results = await asyncio.gather(held, waiting, return_exceptions=True)
        with pytest.raises(ServerClosing):
            await batcher.submit(_request(5))
        return rec, results

    rec, results = _run(main())
    assert ["task 1"] not in rec.batches
    assert all(isinstance(r, ServerClosing) for r in results)


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(lambda r: r, max_batch=0)
    with pytest.raises(ValueError, match="batch_window_ms"):
        Batcher(lambda r: r, window_ms=-1)


def test_served_model_groups_by_key_and_isolates_a_failing_request(fake_vla):
    model = ServedModel(fake_vla, "fake")
    wrist = np.full((4, 4, 3), 9, np.uint8)
    requests = [
        PolicyRequest((IMAGE, wrist), "a", "libero_spatial", np.zeros(8)),
        PolicyRequest((IMAGE, wrist), "explode now", "libero_spatial", np.zeros(8)),
        PolicyRequest((IMAGE, wrist), "bb", "aloha", np.ones(8)),
        PolicyRequest((IMAGE, wrist), "ccc", "libero_spatial", np.zeros(8)),
    ]
    results = model.run_batch(requests)
    # one call per key (3 libero_spatial, 1 aloha), then the failed group's requests one by one
    assert fake_vla.calls == [3, 1, 1, 1, 1]
    assert isinstance(results[1], ModelFailure) and "simulated CUDA out of memory" in str(results[1])
    for i in (0, 2, 3):
        r = requests[i]
        np.testing.assert_array_equal(
            results[i], fake_vla.expected(r.images, r.instruction, r.proprio, r.unnorm_key)
        )


def test_served_model_gripper_convention(fake_vla):
    model = ServedModel(fake_vla, "fake", gripper="binary_close_positive")
    chunk = model.predict([PolicyRequest((IMAGE, IMAGE), "a", "libero_spatial", np.zeros(8))])[0]
    raw = fake_vla.expected((IMAGE, IMAGE), "a", np.zeros(8), "libero_spatial")
    np.testing.assert_array_equal(chunk[:, :6], raw[:, :6])
    np.testing.assert_array_equal(chunk[:, 6], -np.sign(2 * raw[:, 6] - 1))
    with pytest.raises(ValueError, match="--gripper 'open'.*binary_close_positive"):
        ServedModel(fake_vla, "fake", gripper="open")
    with pytest.raises(ValueError, match="--unnorm_key 'bridge'.*aloha, libero_spatial"):
        ServedModel(fake_vla, "fake", default_unnorm_key="bridge")
