"""The read-ahead cache of a cartridge: one decoded block, like a drive's read buffer.

While the drive is idle between READs, the cartridge decodes the next data block (pread,
header check, crc32c, zstd) into this cache, so a one-READ-at-a-time initiator (Linux st)
finds it ready. It holds only what a decode produced; it never reads the file itself and
knows nothing of positions beyond the object number it holds. Anything that changes the
tape (a write, a filemark, an erase, a cut) empties it.
"""

from __future__ import annotations


class ReadAhead:
    """Object ``obj``'s decoded block (``obj`` -1: empty). ``data`` is a view of the reused
    ``buffer`` for a block stored as is, or the decompressor's own bytes (``own``)."""

    __slots__ = ("obj", "native", "stored", "data", "own", "_buf")

    def __init__(self) -> None:
        self.obj = -1
        self.native = 0
        self.stored = 0
        self.data: bytes | memoryview = b""
        self.own = False  # data is memory of its own, not a view of the reused buffer
        self._buf = memoryview(bytearray(0))

    def clear(self) -> None:
        self.obj = -1

    def release(self) -> None:
        """Empty it and let go of the decoded bytes (the cartridge closes)."""
        self.obj = -1
        self.data = b""

    def buffer(self, size: int) -> memoryview:
        """The reused buffer a stored block is read into, at least ``size`` bytes."""
        if len(self._buf) < size:
            self._buf = memoryview(bytearray(size))
        return self._buf

    def hold(self, obj: int, native: int, stored: int, data: bytes | memoryview,
             own: bool) -> None:
        self.native, self.stored, self.data, self.own = native, stored, data, own
        self.obj = obj
