"""Dynamic batching: requests that arrive within a short window are answered by one model call.

The first request of a batch waits at most `window_ms` (counted from its arrival, so a request that
already queued behind a running model call does not wait again) for up to `max_batch - 1` others; the
batch then runs in the single model thread, so model calls never overlap and the event loop keeps
serving while one runs. `max_batch=1` turns batching off (requests still run one at a time, in
arrival order).

Each answer equals the answer to the same request alone: the model decodes a batch row by row
exactly as it decodes one request (`VLA.predict_actions`, tested), and `ServedModel.run_batch`
isolates a request that makes the model fail.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from prismatic.serve.errors import ModelFailure, ServerClosing
from prismatic.serve.observation import PolicyRequest

RunBatch = Callable[[Sequence[PolicyRequest]], "list[np.ndarray | Exception]"]


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    model_seconds: float = 0.0
    sizes: collections.Counter = field(default_factory=collections.Counter)  # batch size -> count

    def to_dict(self) -> dict:
        return {"requests": self.requests, "batches": self.batches, "largest_batch": self.largest_batch,
                "model_seconds": round(self.model_seconds, 3),
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())}}  # fmt: skip


@dataclass
class _Pending:
    request: PolicyRequest
    future: asyncio.Future
    arrived: float


@dataclass(frozen=True)
class Answer:
    chunk: np.ndarray  # [T, D]
    model_ms: float  # the model call that produced it (shared by its whole batch)
    batch_size: int


class Batcher:
    """Collects `submit`ted requests into batches for `run_batch` (which answers each with a chunk or an
    exception and never raises). Start and stop it inside the serving event loop."""

    def __init__(self, run_batch: RunBatch, max_batch: int = 8, window_ms: float = 5.0) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"--max_batch must be an integer >= 1 (1 turns batching off), got {max_batch!r}")
        if not 0 <= window_ms <= 10_000:
            raise ValueError(f"--batch_window_ms must be in [0, 10000], got {window_ms!r}")
        self.run_batch, self.max_batch, self.window_s = run_batch, max_batch, window_ms / 1000.0
        self.stats = BatchStats()
        self._items: collections.deque[_Pending] = collections.deque()
        self._running: list[_Pending] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prismatic-model")
        self._closing = False
        self._task = asyncio.create_task(self._loop(), name="prismatic-batcher")

    async def stop(self) -> None:
        """Refuse new requests, fail the queued ones (503), let a running model call finish."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for pending in [*self._items, *self._running]:
            if not pending.future.done():
                pending.future.set_exception(ServerClosing("the server is shutting down"))
        self._items.clear()
        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    async def submit(self, request: PolicyRequest) -> Answer:
        if self._closing or self._wakeup is None:
            raise ServerClosing(
                "the server is shutting down" if self._closing else "the batcher is not running"
            )
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop.create_future(), loop.time())
        self._items.append(pending)
        self._wakeup.set()
        return await pending.future  # cancelled with its caller (a client that went away): then skipped

    async def _next_batch(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        while not self._items:
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = self._items[0].arrived + self.window_s
        while len(self._items) < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                break
        batch = [self._items.popleft() for _ in range(min(self.max_batch, len(self._items)))]
        return [p for p in batch if not p.future.done()]

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            self._running = batch
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self._executor, self.run_batch, [p.request for p in batch]
                )
            except Exception as e:  # noqa: BLE001 - run_batch does not raise; if it ever does, fail this batch only
                results = [ModelFailure(f"the model failed: {type(e).__name__}: {e}")] * len(batch)
            seconds = time.perf_counter() - start
            self._running = []
            self.stats.requests += len(batch)
            self.stats.batches += 1
            self.stats.sizes[len(batch)] += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            self.stats.model_seconds += seconds
            for pending, result in zip(batch, results):
                if pending.future.done():
                    continue
                if isinstance(result, Exception):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(Answer(result, seconds * 1000.0, len(batch)))
