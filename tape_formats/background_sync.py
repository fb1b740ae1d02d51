"""fdatasync on a thread of its own while a cartridge is being written.

A stream of writes leaves the disk's write cache (and a virtual disk's host cache) full, and
the fsync of the next filemark then waits for all of it: over a second for a GB on the CI
box, long enough to dent the drive's throughput and to approach an initiator's command
timeout. Flushing every few dozen MB while writing goes on spreads that work over the stream
(bench/README.md has the figures). It adds no durability promise: the cartridge's own
``sync`` still decides what is durable; this only makes that ``sync`` short.

Linux reports a writeback error to the first fsync that asks after it, once per open file,
so an error met here is kept and handed to ``sync`` (``take_error``): never swallowed.

The same thread starts the write-out of ranges just written (``write_out``: Linux's
sync_file_range, not waiting), so the thread that appends never stalls in the block layer:
when blocks are written on the command's own thread (several drives streaming), a stall
there would hold up the initiator.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable


def _fdatasync(fd: int) -> None:
    os.fdatasync(fd)  # looked up at each call, not bound once


WriteOut = Callable[[int, int, int], None]  # (fd, offset, length): start write-out, a hint


class BackgroundSync:
    """One fdatasync at a time on ``fd``, started by ``kick`` without waiting for it
    (``flush``: another call on ``fd`` that raises OSError, e.g. a syncfs), and the
    write-out of ranges asked for with ``write_out`` (``start_write_out`` does it)."""

    def __init__(self, fd: int, name: str, flush: Callable[[int], None] | None = None,
                 start_write_out: WriteOut | None = None) -> None:
        self._fd = fd
        self._flush = flush if flush is not None else _fdatasync
        self._start_write_out = start_write_out
        self._name = name
        self._cv = threading.Condition(threading.Lock())
        self._wanted = False
        self._running = False  # a flush is running
        self._busy = False  # the thread is at work (a flush or a write-out)
        self._range: tuple[int, int] | None = None  # write-out asked for: [start, end)
        self._stopping = False
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None

    def kick(self) -> None:
        """Ask for a flush; one already running (or asked for) covers this one too."""
        with self._cv:
            if self._stopping or self._wanted or self._running:
                return
            self._wanted = True
            self._wake()

    def write_out(self, start: int, end: int) -> None:
        """Ask for the write-out of ``[start, end)`` to start (joined with a range asked for
        and not started yet); without ``start_write_out`` nothing happens."""
        if self._start_write_out is None:
            return
        with self._cv:
            if self._stopping:
                return
            pending = self._range
            self._range = (start, end) if pending is None else (
                min(pending[0], start), max(pending[1], end))
            self._wake()

    def _wake(self) -> None:
        """Start the thread on first use, else wake it (call under the lock)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"background sync {self._name}")
            self._thread.start()
        elif not self._busy:
            self._cv.notify_all()

    def wait(self) -> None:
        """Until no flush or write-out is running or asked for."""
        with self._cv:
            while self._busy or self._wanted or self._range is not None:
                self._cv.wait()

    def take_error(self) -> OSError | None:
        """The error a background flush met since the last call (then forgotten)."""
        with self._cv:
            error, self._error = self._error, None
        return error

    def close(self) -> None:
        """Wait for a running flush and stop the thread (before the fd is closed)."""
        with self._cv:
            self._stopping = True
            self._wanted = False
            self._range = None
            self._cv.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        cv = self._cv
        while True:
            with cv:
                while not self._wanted and self._range is None and not self._stopping:
                    cv.wait()
                if self._stopping:
                    return
                span, self._range = self._range, None
                flush, self._wanted = self._wanted, False
                self._running = flush
                self._busy = True
            if span is not None and self._start_write_out is not None:
                with contextlib.suppress(OSError):  # a hint: errors surface at fsync
                    self._start_write_out(self._fd, span[0], span[1] - span[0])
            try:
                if flush:
                    self._flush(self._fd)
            except OSError as exc:
                with cv:
                    if self._error is None:
                        self._error = exc
            finally:
                with cv:
                    self._running = self._busy = False
                    cv.notify_all()
