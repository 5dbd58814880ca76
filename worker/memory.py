"""Keeping a long run's memory flat.

Frames and face crops are large, short-lived numpy/OpenCV buffers. glibc serves allocations
above its mmap threshold with mmap (returned to the OS on free), but it raises that threshold
after each such free, up to 32 MiB, so later frame-sized buffers come from the heap, fragment
it, and resident memory creeps up with the length of the video (measured: guided restoration of
8 crops of 512 px grew from 555 to 787 MiB over 60 batches; with the threshold pinned at 1 MiB
it stayed at 430 MiB). Pinning the threshold turns the dynamic adjustment off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h


@functools.cache
def pin_mmap_threshold(size: int = 1 << 20) -> bool:
    """Once per process; True when glibc accepted it (False on other C libraries)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, size))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return False
