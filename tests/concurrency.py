"""Running the same call from several threads at once (race tests)."""

from __future__ import annotations

import threading
from collections.abc import Callable


def race(call: Callable[[int], object], n: int) -> list[object]:
    """Start ``call(0..n-1)`` on ``n`` threads released together; their results, in finish order."""
    results: list[object] = []
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        results.append(call(i))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
