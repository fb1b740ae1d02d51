"""The uncut tail of a dedup cartridge's data stream, in reused buffers of fixed size.

Each record's payload is copied here (the caller may reuse its buffer once the write
returns) until a batch is handed to the cut (dedup_medium.py). A growing ``bytearray``
would reallocate several times per batch and fault fresh pages in each time (measured:
0.4-0.5 CPU s per GB written, more than the copy itself); a buffer of ``BUFFER_SIZE`` is
filled in place instead, handed over whole (``take``: the chunks cut from it are views of
it), and comes back as a spare once they are stored. A buffer's first ``HEADROOM`` bytes are
left free for what the previous batch left uncut (its last chunk, at most FastCDC's maximum
size): the cut copies it there, right before the batch's bytes (``prepend``), so a batch
and what precedes it are one piece of memory without moving the batch.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable

try:  # the same copy with the GIL released (setup.py builds it; optional)
    from ._streamfast import copy_into as _copy_into  # type: ignore[import-not-found]
    from ._streamfast import new_buffer as _new_buffer  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - without a compiler
    _copy_into = _new_buffer = None
if os.environ.get("VTL_NO_FASTPATH"):  # the reference path, as for the other extensions
    _copy_into = _new_buffer = None

HEADROOM = 512 << 10  # FastCDC's largest chunk (dedup_medium.MAX_CHUNK): the carried tail
BUFFER_SIZE = HEADROOM + (5 << 20)  # a 4 MiB batch (dedup_medium.CUT_BATCH), the block
# completing it, and room to spare
SPARES = 7  # buffers kept for reuse: the chunk writer's batches in flight, the cut's two


class StreamTail:
    """The bytes of the stream after its last cut (``len`` of them): ``_buf[_start:_n]``."""

    def __init__(self) -> None:
        self.spares: deque[bytearray] = deque()  # given back by the chunk writer (any thread)
        self._buf = bytearray()
        self._start = self._n = 0

    def __len__(self) -> int:
        return self._n - self._start

    def view(self) -> memoryview:
        """The tail's bytes, valid until the next change."""
        return memoryview(self._buf)[self._start:self._n]

    def room(self) -> int:
        """Bytes that can be appended without moving to another buffer."""
        return len(self._buf) - self._n

    def append(self, data: bytes | bytearray | memoryview) -> None:
        end = self._n + len(data)
        if end > len(self._buf):
            old = self._buf
            self._move_to(self._fresh(end - self._start), self._start, self._n)
            self.give_back(old)
            end = self._n + len(data)
        _copy(self._buf, self._n, data)
        self._n = end

    def prepend(self, data: bytes | bytearray | memoryview) -> None:
        """Put ``data`` before the tail's bytes: into the headroom, where it fits."""
        if not data:
            return
        if len(data) > self._start:
            old = self._buf
            self._move_to(self._fresh(len(data) + len(self)), self._start, self._n,
                          len(data))
            self.give_back(old)
        self._start -= len(data)
        _copy(self._buf, self._start, data)

    def take(self) -> tuple[bytearray, int, int]:
        """The buffer and where the tail's bytes are in it, ``(buf, start, end)``; the
        tail goes on empty in another one. The caller keeps the buffer (it is never written
        here again) until it comes back with ``give_back``."""
        out = self._buf, self._start, self._n
        self._buf = self._fresh(0)
        self._start = self._n = _head(self._buf)
        return out

    def cut_back(self, length: int) -> None:
        """Drop the tail's bytes from ``length`` on."""
        self._n = min(self._n, self._start + length)

    def reset(self, data: bytes | memoryview = b"") -> None:
        """Make the tail ``data`` (after a truncate into cut chunks)."""
        self._buf, self._start, self._n = bytearray(data), 0, len(data)

    def give_back(self, buf: bytearray) -> None:
        """A buffer the chunk writer is done with (thread-safe)."""
        if len(buf) == BUFFER_SIZE and len(self.spares) < SPARES:
            self.spares.append(buf)

    def _fresh(self, need: int) -> bytearray:
        """A buffer with room for ``need`` bytes after its headroom."""
        if need <= BUFFER_SIZE - HEADROOM:
            try:
                return self.spares.popleft()
            except IndexError:
                return _new(BUFFER_SIZE)
        return _new(HEADROOM + need + BUFFER_SIZE)  # a big block: room for the next one too

    def _move_to(self, new: bytearray, start: int, end: int, before: int = 0) -> None:
        """Bytes ``[start, end)`` of the buffer into ``new`` (``before`` bytes of room left
        in front of them, past the headroom's start), which becomes the buffer."""
        at = _head(new) if before <= _head(new) else before
        _copy(new, at, memoryview(self._buf)[start:end])
        self._buf, self._start, self._n = new, at, at + end - start


def join(head: bytes | memoryview, buf: bytearray, start: int, end: int,
         give_back: Callable[[bytearray], None]) -> tuple[bytearray, int, int]:
    """``head`` put right before ``buf[start:end]``, in its headroom: ``(buf, start, end)``
    of the whole; a new buffer where the headroom is too small (``buf`` goes to
    ``give_back``)."""
    if not head:
        return buf, start, end
    if len(head) <= start:
        start -= len(head)
        _copy(buf, start, head)
        return buf, start, end
    joined = bytearray(head)
    joined += memoryview(buf)[start:end]
    give_back(buf)
    return joined, 0, len(joined)


def _head(buf: bytearray) -> int:
    """Where a buffer's bytes start: after the headroom, in a buffer big enough to have one."""
    return HEADROOM if len(buf) > HEADROOM else 0


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
