"""The uncut tail of a dedup cartridge's data stream, in reused buffers of fixed size.

Each record's payload is copied here (the caller may reuse its buffer once the write
returns) until a batch is cut into chunks. A growing ``bytearray`` would reallocate several
times per batch and fault fresh pages in each time (measured: 0.4-0.5 CPU s per GB written,
more than the copy itself); a buffer of ``BUFFER_SIZE`` is filled in place instead, handed
to the chunk writer whole when its batch is cut (its chunks are views of it), and comes back
as a spare once they are stored. What follows the last cut is copied to the next buffer.
"""

from __future__ import annotations

import os
from collections import deque

try:  # the same copy with the GIL released (setup.py builds it; optional)
    from ._streamfast import copy_into as _copy_into  # type: ignore[import-not-found]
    from ._streamfast import new_buffer as _new_buffer  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - without a compiler
    _copy_into = _new_buffer = None
if os.environ.get("VTL_NO_FASTPATH"):  # the reference path, as for the other extensions
    _copy_into = _new_buffer = None

BUFFER_SIZE = 5 << 20  # a 4 MiB batch (dedup_medium.CUT_BATCH) plus the block completing it
SPARES = 5  # buffers kept for reuse (the chunk writer's batches in flight, and one)


class StreamTail:
    """The bytes of the stream after its last cut (``len`` of them)."""

    def __init__(self) -> None:
        self.spares: deque[bytearray] = deque()  # given back by the chunk writer (any thread)
        self._buf = bytearray()
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def view(self) -> memoryview:
        """The tail's bytes, valid until the next change."""
        return memoryview(self._buf)[:self._n]

    def append(self, data: bytes | bytearray | memoryview) -> None:
        end = self._n + len(data)
        if end > len(self._buf):
            old = self._buf
            self._move_to(self._fresh(end), self._n)
            self.give_back(old)
        _copy(self._buf, self._n, data)
        self._n = end

    def hand_over(self, used: int) -> bytearray:
        """The buffer whose first ``used`` bytes were cut into chunks (the caller keeps views
        of them; it is never written again until it comes back as a spare); the tail goes on
        with the rest, in another buffer."""
        old = self._buf
        self._move_to(self._fresh(self._n - used), self._n, used)
        return old

    def cut_back(self, length: int) -> None:
        """Drop the tail's bytes from ``length`` on."""
        self._n = min(self._n, length)

    def reset(self, data: bytes | memoryview = b"") -> None:
        """Make the tail ``data`` (after a truncate into cut chunks)."""
        self._buf, self._n = bytearray(data), len(data)

    def give_back(self, buf: bytearray) -> None:
        """A buffer the chunk writer is done with (thread-safe)."""
        if len(buf) == BUFFER_SIZE and len(self.spares) < SPARES:
            self.spares.append(buf)

    def _fresh(self, need: int) -> bytearray:
        if need <= BUFFER_SIZE:
            try:
                return self.spares.popleft()
            except IndexError:
                return _new(BUFFER_SIZE)
        return _new(need + BUFFER_SIZE)  # a big block: room for the next one too

    def _move_to(self, new: bytearray, end: int, start: int = 0) -> None:
        _copy(new, 0, memoryview(self._buf)[start:end])
        self._buf, self._n = new, end - start


def _new(size: int) -> bytearray:
    """A buffer for the stream: ``_streamfast.new_buffer`` leaves it unfilled, so its pages
    are first touched by the copies into it, with the GIL released; ``bytearray(size)``
    zero-fills it holding the GIL (the reference and the fallback). Only bytes copied in
    are ever read."""
    if _new_buffer is not None:
        return _new_buffer(size)
    return bytearray(size)


def _copy(dst: bytearray, at: int, src: bytes | bytearray | memoryview) -> None:
    """``src`` into ``dst`` from ``at`` on, with one memcpy: a bytearray slice assigned
    anything but a bytearray copies it into a temporary bytearray first (CPython 3.11:
    ``bytearray_ass_subscript``), twice the copying and an allocation per block, where a
    memoryview slice takes the bytes as they are. ``_streamfast.copy_into`` does that
    memcpy with the GIL released (the compress threads take it meanwhile)."""
    if _copy_into is not None:
        _copy_into(dst, at, src)
        return
    view = memoryview(src)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    memoryview(dst)[at:at + view.nbytes] = view
