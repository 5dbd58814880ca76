"""Keeping a long run's memory flat.

Frames and face crops are large, short-lived numpy/OpenCV buffers. glibc serves allocations
above its mmap threshold with mmap (returned to the OS on free), but it raises that threshold
after each such free, up to 32 MiB, so later frame-sized buffers come from the heap, fragment
it, and resident memory creeps up with the length of the video (measured: guided restoration of
8 crops of 512 px grew from 555 to 787 MiB over 60 batches; with the threshold pinned at 1 MiB
it stayed at 430 MiB). Pinning the threshold turns the dynamic adjustment off.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Iterator

M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
_pinned: list[int] = []  # the threshold pin_mmap_threshold set, when glibc took it


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


@functools.cache
def pin_mmap_threshold(size: int = 1 << 20) -> bool:
    """Once per process; True when glibc accepted it (False on other C libraries)."""
    try:
        ok = bool(_libc().mallopt(M_MMAP_THRESHOLD, size))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return False
    if ok:
        _pinned.append(size)
    return ok


@contextlib.contextmanager
def heap_allocations(size: int = 1 << 30) -> Iterator[None]:
    """Inside, allocations below ``size`` bytes come from the heap even when the threshold is
    pinned; on exit the pin is restored and the freed heap is given back (``malloc_trim``).

    Training allocates and frees the same multi-MiB activations every step. With the threshold
    pinned at 1 MiB each of them is a fresh mmap whose pages fault in again: RefSTAR adaptation
    steps measured 0.44-0.47 s instead of 0.37 s (2 cores). A no-op in a process that never
    pinned (glibc's dynamic threshold already keeps such buffers on the heap).

    Restorer calls are not wrapped, although RefSTAR inference suffers the same way (batches of
    8 faces at 128 px: 18 faces/s pinned, 41 unpinned). Lifting the threshold around each call
    and keeping 256 MiB of free heap for the next one made the whole worker only 8% faster
    (``bench_memory.py --pipeline --set restorer=refstar restore.adapt_steps=20``, where
    analysis dominates), and peak RSS grew with the video's length again: 1101/1192 MiB for
    50/500 frames instead of 999/992 (guided restoration: 943/1124 instead of 689/698).
    """
    if not _pinned:
        yield
        return
    libc = _libc()
    libc.mallopt(M_MMAP_THRESHOLD, size)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, _pinned[-1])
        libc.malloc_trim(0)
