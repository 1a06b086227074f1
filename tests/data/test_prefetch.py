import itertools
import threading
import time

import pytest

from prismatic.data.prefetch import BackgroundIterator


def test_items_arrive_in_order_then_stop():
    it = BackgroundIterator(iter(range(50)), depth=3)
    assert list(it) == list(range(50))
    with pytest.raises(StopIteration):
        next(it)


def test_source_error_is_raised_in_the_consumer_after_earlier_items():
    def source():
        yield from range(3)
        raise KeyError("frame 3 is corrupt")

    it = BackgroundIterator(source(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError, match="frame 3 is corrupt"):
        next(it)
    with pytest.raises(StopIteration):  # finished: no hang on a second call
        next(it)


def test_work_runs_ahead_of_the_consumer_in_another_thread():
    produced, threads = [], set()

    def source():
        for i in itertools.count():
            threads.add(threading.get_ident())
            produced.append(i)
            yield i

    with BackgroundIterator(source(), depth=4) as it:
        assert next(it) == 0
        deadline = time.monotonic() + 5
        while len(produced) < 6 and time.monotonic() < deadline:  # 1 taken + 4 queued + 1 waiting to be put
            time.sleep(0.01)
        assert len(produced) == 6
        time.sleep(0.1)
        assert len(produced) == 6  # bounded by depth, not racing through an endless source
    assert threading.get_ident() not in threads


def test_close_stops_a_producer_blocked_on_a_full_queue():
    it = BackgroundIterator(itertools.count(), depth=1)
    assert next(it) == 0
    it.close()
    assert not it._thread.is_alive()
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("depth", [0, -1, 1.5, True])
def test_bad_depth_is_rejected(depth):
    with pytest.raises(ValueError, match="depth must be a positive int"):
        BackgroundIterator(iter([]), depth=depth)
