"""Freed memory kept for reuse: a drive's write path allocates at GB/s and should not fault.

A streaming write allocates and frees buffers of 100 KiB to a few MiB at the data rate: each
block the initiator sends (256 KiB), each compressed block or chunk (zstd's output, up to the
input's size). glibc's defaults give much of that back to the kernel as soon as it is freed:
blocks above ``M_MMAP_THRESHOLD`` (128 KiB at first, raised as such blocks are freed) are
unmapped, and a heap whose free top exceeds ``M_TRIM_THRESHOLD`` (twice that) is trimmed,
also in the per-thread arenas of the compressing threads. The next allocation then faults
in fresh zeroed pages, and on a virtual machine whose free memory goes back to the host
(this project's kind) a first touch costs far more than a copy. Measured (2026-12-04, the
bench_dedup tar, 714 MB, written onto a new cartridge as bench_dedup does, five interleaved
pairs at load 4.4-5.3): page faults per plain write 53-63 thousand -> 7.3-7.5 thousand,
median CPU 3.50 -> 3.11 s per GB; per dedup first full 53-79 thousand -> 19-21 thousand,
3.70 -> 3.33 s per GB; peak RSS +2-3 MiB (plain) and +5 MiB (dedup) (bench/README.md).

``keep_freed_memory`` sets both thresholds once per process (a no-op off glibc, or when the
environment already sets ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``): blocks up to
``MMAP_THRESHOLD`` come from the heap, and up to ``TRIM_THRESHOLD`` of free heap top is kept
for the next ones. Memory stays bounded by the peak the buffers reach, which their own
limits bound (the write-behind buffer, the chunk writer's batches in flight).
"""

from __future__ import annotations

import ctypes
import os
import threading

MMAP_THRESHOLD = 4 << 20  # bigger blocks (a dedup stream buffer is 5 MiB, reused) are mmapped
TRIM_THRESHOLD = 16 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_done = False
_lock = threading.Lock()


def keep_freed_memory() -> bool:
    """Set the thresholds (once); True when glibc took them."""
    global _done
    with _lock:
        if _done:
            return False
        _done = True
        if os.environ.get("MALLOC_MMAP_THRESHOLD_") or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
            return False  # the operator's choice stands
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc
            return False
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
