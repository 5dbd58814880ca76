"""prefetch: order, the producer's error after its items, early close stops the producer."""

from __future__ import annotations

import threading
import time

import pytest

from worker.media.prefetch import prefetch


def _counted(n: int, made: list[int]):
    """0..n-1, each noted in ``made`` as it is produced."""
    for i in range(n):
        made.append(i)
        yield i


def test_items_come_in_order_and_ahead_of_the_consumer():
    made = []
    it = prefetch(_counted(10, made), depth=3)
    assert next(it) == 0
    deadline = time.monotonic() + 5
    while len(made) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert made[:4] == [0, 1, 2, 3]  # produced while the consumer held item 0
    assert [0, *it] == list(range(10))


def test_the_producers_error_comes_after_its_items():
    def gen():
        yield 1
        yield 2
        raise ValueError("frame 2 is damaged")

    got = []
    with pytest.raises(ValueError, match="frame 2 is damaged"):
        for x in prefetch(gen()):
            got.append(x)
    assert got == [1, 2]


def test_closing_early_stops_the_producer():
    made = []
    it = prefetch(_counted(10_000, made), depth=2)
    assert next(it) == 0
    it.close()
    n = len(made)
    time.sleep(0.3)
    assert len(made) == n <= 5
    assert not [t for t in threading.enumerate() if t.name == "prefetch"]


def test_closing_early_closes_the_source():
    closed = threading.Event()

    def gen():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    source = gen()  # held here, so only an explicit close can end it, not the collector
    it = prefetch(source, depth=2)
    assert next(it) == 0
    it.close()
    assert closed.wait(5)
