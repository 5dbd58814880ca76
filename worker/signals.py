"""SIGTERM unwinds like Ctrl-C, so that ``finally`` blocks remove partial files and temporary
folders (Python's default for SIGTERM kills the process where it stands)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwind like Ctrl-C (exit status 143 instead of 130)."""


_terminated = threading.Event()


def _raise_terminated(signum, frame) -> None:
    _terminated.set()
    raise Terminated()


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM (Ray's waits re-raise a plain KeyboardInterrupt, so the
    signal is remembered rather than read off the exception)."""
    return 143 if isinstance(interrupt, Terminated) or _terminated.is_set() else 130


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While inside, SIGTERM raises ``Terminated`` in the main thread (elsewhere: no change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
