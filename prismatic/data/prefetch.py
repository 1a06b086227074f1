"""Prepare batches ahead of the training step, in a background thread.

With `DataLoader(num_workers=0)` (tf.data cannot be forked into worker processes) each step would
first wait for TensorFlow to hand over frames and for the Python transform (image processor,
tokenizer, collator) to run. `BackgroundIterator` moves that work onto a thread, so a GPU step, whose
host thread mostly waits on kernels, finds the next batch ready. It cannot beat the GIL: for the
tabletop demo's tiny CPU model, whose step is itself Python-bound, it measured no gain (0.0429 against
0.0432 s per step; docs/tabletop.md, results).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_DONE = object()  # end-of-stream marker


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class BackgroundIterator(Generic[T]):
    """Iterate `source` in a daemon thread, keeping up to `depth` items ready.

    Items come out in the source's order. An exception raised by the source is re-raised by `next()`
    in the consuming thread (with its original traceback) after the items produced before it. `close()`
    (or leaving a `with` block) stops the thread even when it is blocked on a full queue.
    """

    def __init__(self, source: Iterable[T], depth: int = 2, name: str = "prefetch") -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive int (items kept ready), got {depth!r}")
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        """Block until there is room or close() is called; False when closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, source: Iterable[T]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._put(_Failure(e))
            return
        self._put(_DONE)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        while True:
            try:
                item = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():  # closed, or died without a word
                    self._finished = True
                    raise StopIteration from None
        if item is _DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._finished = True
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        self._finished = True
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5.0)

    def __enter__(self) -> BackgroundIterator[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
