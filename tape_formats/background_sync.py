"""fdatasync on a thread of its own while a cartridge is being written.

A stream of writes leaves the disk's write cache (and a virtual disk's host cache) full, and
the fsync of the next filemark then waits for all of it: over a second for a GB on the CI
box, long enough to dent the drive's throughput and to approach an initiator's command
timeout. Flushing every few dozen MB while writing goes on spreads that work over the stream
(bench/README.md has the figures). It adds no durability promise: the cartridge's own
``sync`` still decides what is durable; this only makes that ``sync`` short.

Linux reports a writeback error to the first fsync that asks after it, once per open file,
so an error met here is kept and handed to ``sync`` (``take_error``): never swallowed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


def _fdatasync(fd: int) -> None:
    os.fdatasync(fd)  # looked up at each call, not bound once


class BackgroundSync:
    """One fdatasync at a time on ``fd``, started by ``kick`` without waiting for it
    (``flush``: another call on ``fd`` that raises OSError, e.g. a syncfs)."""

    def __init__(self, fd: int, name: str, flush: Callable[[int], None] | None = None) -> None:
        self._fd = fd
        self._flush = flush if flush is not None else _fdatasync
        self._name = name
        self._cv = threading.Condition(threading.Lock())
        self._wanted = False
        self._running = False
        self._stopping = False
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None

    def kick(self) -> None:
        """Ask for a flush; one already running (or asked for) covers this one too."""
        with self._cv:
            if self._stopping or self._wanted or self._running:
                return
            self._wanted = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"background sync {self._name}")
                self._thread.start()
            else:
                self._cv.notify_all()

    def wait(self) -> None:
        """Until no flush is running or asked for."""
        with self._cv:
            while self._running or self._wanted:
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
            self._cv.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        cv = self._cv
        while True:
            with cv:
                while not self._wanted and not self._stopping:
                    cv.wait()
                if self._stopping:
                    return
                self._wanted = False
                self._running = True
            try:
                self._flush(self._fd)
            except OSError as exc:
                with cv:
                    if self._error is None:
                        self._error = exc
            finally:
                with cv:
                    self._running = False
                    cv.notify_all()
