"""glibc's mmap threshold: pinned for flat memory, lifted for training (``worker.memory``).

Observed through ``mallinfo2().hblkhd`` (bytes currently in mmapped chunks): an 8 MiB block
is mmapped while the threshold is pinned at 1 MiB, and comes from the heap inside
``heap_allocations``. It runs in a fresh interpreter: in a process whose heap already holds
large free chunks (earlier tests), glibc serves big requests from them whatever the threshold.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import ctypes, ctypes.util, sys
    from worker import memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(lib, "mallinfo2") or not memory.pin_mmap_threshold():
        sys.exit(3)
    lib.mallinfo2.restype = MallInfo2
    lib.malloc.restype = ctypes.c_void_p
    lib.free.argtypes = [ctypes.c_void_p]

    def mmapped(n):  # bytes an n-byte malloc added to the mmapped chunks (then freed)
        before = lib.mallinfo2().hblkhd
        p = lib.malloc(n)
        try:
            return lib.mallinfo2().hblkhd - before
        finally:
            lib.free(p)

    n = 8 << 20
    seen = [mmapped(n)]
    with memory.heap_allocations():
        seen += [mmapped(n), mmapped(n)]
    print(*seen)
""")


def test_pinned_threshold_mmaps_and_heap_allocations_lifts_it():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    if run.returncode == 3:
        pytest.skip("needs glibc >= 2.33 (mallinfo2, mallopt)")
    assert run.returncode == 0, run.stderr
    pinned, inside, inside_again = map(int, run.stdout.split())
    n = 8 << 20
    assert pinned >= n  # pinned at 1 MiB: a fresh mmap
    assert inside == 0 and inside_again == 0  # from the heap, also after a free
