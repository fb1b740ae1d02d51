"""A drive's write buffer: blocks accepted at once, compressed and appended on a thread of
their own.

An LTO drive in buffered mode (SSC: MODE SELECT Buffered Mode 1, the default) answers a
WRITE as soon as the block is in its buffer and streams the buffer to tape while the next
block arrives. Here the costly part of a write (zstd, crc32c, pwrite: all release the GIL)
runs on one thread per cartridge while the initiator's thread goes back for the next
command, so a one-command-at-a-time initiator no longer waits for the compressor.

What may be queued is decided by ``TapeCartridge.queue_block``: only appends that nothing but
a disk error can stop. Every other operation waits until the buffer is empty, so positions,
early warning, end of medium and overwrites behave exactly as without the buffer. A disk
error on a queued block is kept and raised by the next ``flush`` (SCSI reports it as a
deferred error); the blocks queued behind it are dropped, never written out of order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

Store = Callable[[bytes | bytearray | memoryview, bool], None]


class DeferredWriteError(Exception):
    """Queued blocks were not written: ``lost`` of them (``lost_bytes`` native bytes), the
    first one failing with ``cause``; the tape ends after the last block written."""

    def __init__(self, cause: BaseException, lost: int, lost_bytes: int) -> None:
        super().__init__(f"{lost} buffered block(s) not written: {cause}")
        self.cause = cause
        self.lost = lost
        self.lost_bytes = lost_bytes


class WriteBehind:
    """A FIFO of blocks and the thread that stores them with ``store(data, compress)``.

    ``limit`` bounds the worst-case medium bytes waiting (each block counted as stored
    uncompressed, with its record header): ``put`` blocks while the buffer is full, which keeps
    memory flat however fast the initiator sends.
    """

    def __init__(self, store: Store, limit: int, name: str) -> None:
        self._store = store
        self._limit = limit
        self._cv = threading.Condition(threading.Lock())
        self._jobs: deque[tuple[bytes | bytearray | memoryview, bool, int]] = deque()
        self.blocks = 0  # queued or being stored
        self.reserved = 0  # their worst-case medium bytes
        self._error: BaseException | None = None
        self._lost = 0
        self._lost_bytes = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"write-behind {name}",
                                        daemon=True)
        self._thread.start()

    def put(self, data: bytes | bytearray | memoryview, compress: bool, worst: int,
            end: Callable[[], int], ceiling: int) -> bool:
        """Queue ``data`` if ``end() + reserved + worst`` stays below ``ceiling``; False (and
        nothing queued) otherwise. ``end()`` is the medium offset after the last block stored:
        it is read under the buffer's lock, where it never lags behind ``reserved``, so the
        sum can only overestimate."""
        cv = self._cv
        with cv:
            while self.blocks and self.reserved + worst > self._limit:
                cv.wait()
            if self._error is not None or self._stopping:
                return False
            if end() + self.reserved + worst >= ceiling:
                return False
            self._jobs.append((data, compress, worst))
            self.blocks += 1
            self.reserved += worst
            if self.blocks == 1:
                cv.notify_all()
        return True

    @property
    def failed(self) -> bool:
        return self._error is not None

    def wait(self) -> None:
        """Until every queued block is stored or dropped (an error stays for ``flush``)."""
        with self._cv:
            while self.blocks:
                self._cv.wait()

    def flush(self) -> None:
        """``wait``, then raise the error a queued block met, once."""
        with self._cv:
            while self.blocks:
                self._cv.wait()
            error = self._error
            if error is None:
                return
            lost, lost_bytes = self._lost, self._lost_bytes
            self._error, self._lost, self._lost_bytes = None, 0, 0
        raise DeferredWriteError(error, lost, lost_bytes)

    def close(self) -> DeferredWriteError | None:
        """Store what is queued, stop the thread; returns the error nobody collected."""
        try:
            self.flush()
            error = None
        except DeferredWriteError as exc:
            error = exc
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        return error

    def _run(self) -> None:
        cv = self._cv
        jobs = self._jobs
        while True:
            with cv:
                while not jobs:
                    if self._stopping:
                        return
                    cv.wait()
                data, compress, worst = jobs[0]
                skip = self._error is not None
            error = None
            if not skip:
                try:
                    self._store(data, compress)
                except BaseException as exc:  # noqa: BLE001 - kept for the next flush
                    error = exc
            with cv:
                jobs.popleft()
                self.blocks -= 1
                self.reserved -= worst
                if skip or error is not None:
                    if error is not None:
                        self._error = error
                    self._lost += 1
                    self._lost_bytes += len(data)
                cv.notify_all()
