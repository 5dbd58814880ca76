"""Progress lines for long work: rate and ETA on stderr, at most one line per ``interval`` s.
On a terminal the line is redrawn in place; elsewhere (a log file, a pipe) each update is a
line; with ``--log-format json`` each is a log record of ``worker.progress``."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger(__name__)
AS_LOG = False  # set by worker.logs.setup_logging for --log-format json


def say(line: str, stream: TextIO | None = None) -> None:
    """One progress line: a log record of this module under ``--log-format json``, else a line on
    ``stream`` (stderr)."""
    if AS_LOG:
        log.info(line)
    else:
        print(line, file=stream or sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts units of work (frames, images) and prints ``label: n/total unit rate/s ETA``."""

    def __init__(self, label: str, total: int = 0, unit: str = "frames", *, enabled: bool = True,
                 interval: float = 1.0, stream: TextIO | None = None, then: float | None = None):
        """``then``: the seconds the item's later stages take per second of this one (known from
        an earlier item): the line adds the item's ETA."""
        self.label, self.total, self.unit, self.then = label, total, unit, then
        self.enabled, self.interval = enabled, interval
        self.stream = stream or sys.stderr
        self.count = 0
        self.start = time.monotonic()
        self._last = self.start  # the first line waits one interval: a rate over 1 ms means nothing

    def update(self, n: int = 1, note: str = "") -> None:
        self.count += n
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._print(now, note)

    def rate(self) -> float:
        """Units per second since the start."""
        return self.count / max(time.monotonic() - self.start, 1e-9)

    def _print(self, now: float, note: str) -> None:
        rate = self.count / max(now - self.start, 1e-9)
        line = f"{self.label}: {self.count}"
        if self.total:
            left = (self.total - self.count) / rate if rate > 0 else 0
            line += f"/{self.total} {self.unit} ({100 * self.count / self.total:.0f}%) {rate:.1f}/s ETA {_clock(left)}"
            if self.then is not None:
                line += f", item ETA {_clock(left + self.total / rate * self.then if rate > 0 else 0)}"
        else:
            line += f" {self.unit} {rate:.1f}/s"
        if note:
            line += f" {note}"
        self._emit(line, final=False)

    def _emit(self, line: str, final: bool) -> None:
        if not AS_LOG and getattr(self.stream, "isatty", lambda: False)():
            self.stream.write(f"\r{line}\x1b[K" + ("\n" if final else ""))
            self.stream.flush()
        else:
            say(line, self.stream)

    def done(self, note: str = "") -> float:
        """Print the closing line; returns the elapsed seconds."""
        elapsed = time.monotonic() - self.start
        if self.enabled:
            self._emit(f"{self.label}: {self.count} {self.unit} in {elapsed:.1f} s "
                       f"({self.count / max(elapsed, 1e-9):.1f}/s){' ' + note if note else ''}", final=True)
        return elapsed


class BatchProgress:
    """Where a batch of items stands: ``batch: 2/5 items (40% of the bytes) in 0:03:12, ETA
    0:04:48``. The ETA scales the time the worked items took by the input bytes left (a long
    video weighs what it costs; an item found done costs nothing and counts as no work)."""

    def __init__(self, sizes: list[int], *, enabled: bool = True, stream: TextIO | None = None):
        self.sizes = [max(int(s), 1) for s in sizes]
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.items = 0  # items finished (worked or skipped)
        self.worked_bytes = 0
        self.left_bytes = sum(self.sizes)

    def finished(self, k: int, worked: bool = True) -> None:
        """Item ``k`` (0-based) is over; print the batch line (when enabled and more are left)."""
        self.items += 1
        self.left_bytes -= self.sizes[k]
        if worked:
            self.worked_bytes += self.sizes[k]
        if self.enabled and self.items < len(self.sizes):
            say(self.line(), self.stream)

    def eta(self) -> float | None:
        """Seconds left, None before any item was worked."""
        if not self.worked_bytes:
            return None
        return (time.monotonic() - self.start) * self.left_bytes / self.worked_bytes

    def line(self) -> str:
        total = sum(self.sizes)
        eta = self.eta()
        return (f"batch: {self.items}/{len(self.sizes)} items ({100 * (total - self.left_bytes) / total:.0f}% "
                f"of the bytes) in {_clock(time.monotonic() - self.start)}"
                + (f", ETA {_clock(eta)}" if eta is not None else ""))
