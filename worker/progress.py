"""Progress lines for long work: rate and ETA on stderr, at most one line per ``interval`` s."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts units of work (frames, images) and prints ``label: n/total unit rate/s ETA``."""

    def __init__(self, label: str, total: int = 0, unit: str = "frames", *, enabled: bool = True,
                 interval: float = 1.0, stream: TextIO | None = None):
        self.label, self.total, self.unit = label, total, unit
        self.enabled, self.interval = enabled, interval
        self.stream = stream or sys.stderr
        self.count = 0
        self.start = time.monotonic()
        self._last = 0.0

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
        else:
            line += f" {self.unit} {rate:.1f}/s"
        if note:
            line += f" {note}"
        print(line, file=self.stream, flush=True)

    def done(self, note: str = "") -> float:
        """Print the closing line; returns the elapsed seconds."""
        elapsed = time.monotonic() - self.start
        if self.enabled:
            print(f"{self.label}: {self.count} {self.unit} in {elapsed:.1f} s "
                  f"({self.count / max(elapsed, 1e-9):.1f}/s){' ' + note if note else ''}",
                  file=self.stream, flush=True)
        return elapsed
