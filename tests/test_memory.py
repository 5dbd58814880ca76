"""glibc's mmap threshold: pinned for flat memory, lifted for training (``worker.memory``).

Observed through ``mallinfo2().hblkhd`` (bytes currently in mmapped chunks): an 8 MiB block
is mmapped while the threshold is pinned at 1 MiB, and comes from the heap inside
``heap_allocations``.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from worker import memory


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                "usmblks", "fsmblks", "uordblks", "fordblks",
                                                "keepcost")]


@pytest.fixture(scope="module")
def libc():
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(lib, "mallinfo2") or not memory.pin_mmap_threshold():
        pytest.skip("needs glibc >= 2.33 (mallinfo2, mallopt)")
    lib.mallinfo2.restype = _MallInfo2
    lib.malloc.restype = ctypes.c_void_p
    lib.free.argtypes = [ctypes.c_void_p]
    return lib


def _mmapped_by_malloc(lib, n: int) -> int:
    """Bytes that an n-byte malloc added to the mmapped chunks (then freed)."""
    before = lib.mallinfo2().hblkhd
    p = lib.malloc(n)
    try:
        return lib.mallinfo2().hblkhd - before
    finally:
        lib.free(p)


def test_pinned_threshold_mmaps_and_heap_allocations_lifts_it(libc):
    n = 8 << 20
    assert _mmapped_by_malloc(libc, n) >= n  # pinned at 1 MiB
    with memory.heap_allocations():
        assert _mmapped_by_malloc(libc, n) == 0
        assert _mmapped_by_malloc(libc, n) == 0  # and stays so after a free
    assert _mmapped_by_malloc(libc, n) >= n  # the pin is back
