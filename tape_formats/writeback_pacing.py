"""Write-back pacing: hand a cartridge's written data to the disk while it streams.

A drive streams its buffer to tape as data arrives; a file left to the page cache would
instead hold GBs of dirty pages until the next filemark's fsync (seconds, long enough for an
initiator's NOP-Out timeout). So every ``WRITEBACK_CHUNK`` bytes appended, write-out of what
came before starts (sync_file_range, not waiting), and every ``BACKGROUND_SYNC_CHUNK`` bytes
an fdatasync runs, both on a thread of its own (``BackgroundSync``), so the disk's write cache
drains during the stream, not all at the next filemark, and the appending thread (the
initiator's command, when blocks are written at once) never waits in the block layer.
Pacing adds no durability promise: the cartridge's ``sync`` still decides what is durable;
this only keeps that ``sync`` short.
It never writes data, only says when the kernel should.
"""

from __future__ import annotations

import ctypes

from tape_formats.background_sync import BackgroundSync

WRITEBACK_CHUNK = 8 << 20
BACKGROUND_SYNC_CHUNK = 64 << 20
_SYNC_FILE_RANGE_WRITE = 2  # start write-out of dirty pages, do not wait


def _sync_file_range() -> ctypes._CFuncPtr | None:
    """Linux's sync_file_range(2) through ctypes (the os module has no binding)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_START_WRITEBACK = _sync_file_range()


def start_write_out(fd: int, offset: int, length: int) -> None:
    """Start write-out of the range, not waiting (run on the background sync thread)."""
    start = _START_WRITEBACK  # looked up at each call, not bound once
    if start is not None:
        start(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # a hint: errors surface at fsync


class WritebackPacer:
    """Paces one open cartridge file: ``appended`` after each record, ``take_error`` before
    the cartridge's own fsync, ``close`` before the descriptor is closed."""

    def __init__(self, fd: int, name: str, start: int, *, enabled: bool = True) -> None:
        """``enabled=False``: a pacer that does nothing (a file the records do not go to)."""
        self._fd = fd
        self._enabled = enabled
        self._handed = start  # data before this offset was handed to the disk
        self._synced = start  # data before this offset had a background fdatasync
        self.background = BackgroundSync(fd, name, start_write_out=start_write_out)

    def restart(self, offset: int) -> None:
        """What lies before ``offset`` was written (and synced) before: start pacing there."""
        self._handed = offset

    def appended(self, offset: int, end: int) -> None:
        """A record was appended at ``offset``; end of data is now ``end``."""
        if not self._enabled:  # (_handed kept at the end: the drive's C write path reads
            self._handed = end  # it and calls this only when a write-out would be due)
            return
        if self._handed > offset:
            self._handed = offset  # the tape was cut back
            self._synced = min(self._synced, offset)
        elif end - self._handed >= WRITEBACK_CHUNK and _START_WRITEBACK is not None:
            self.background.write_out(self._handed, end)
            self._handed = end
            if end - self._synced >= BACKGROUND_SYNC_CHUNK:
                self._synced = end
                self.background.kick()

    def take_error(self) -> OSError | None:
        """A writeback error the background fdatasync met (Linux reports it once: it is the
        cartridge's to raise at its next sync)."""
        return self.background.take_error()

    def close(self) -> None:
        """No fdatasync may outlive the descriptor."""
        self.background.close()
