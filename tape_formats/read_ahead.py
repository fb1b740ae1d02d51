"""The read-ahead cache of a cartridge: one decoded block and the raw records after it, like a
drive's read buffer.

While the drive is idle between READs, the cartridge decodes the next data block (header
check, crc32c, zstd) into this cache, so a one-READ-at-a-time initiator (Linux st) finds it
ready. Small records are not read one pread each: the cartridge reads up to ``SPAN_BYTES`` of
the records ahead in one go into the *span*, and decodes the next blocks from there (a
restore of 10 KiB blocks then costs one read syscall per ~50 blocks instead of one each).
The cache holds only what the cartridge put in it; it never reads the file itself. Anything
that changes the tape (a write, a filemark, an erase, a cut) empties it, span included.

A block too big for the span is decoded into one of two buffers that alternate, like the
drive's own READ buffers (vtl/scsi/ssc.py): a view of one stays valid until the next-but-one
block is decoded, so the drive hands it to the transport as it is instead of copying it into
its buffer (a 256 KiB block stored as is costs no memcpy on the way to ``sendmsg``; zstd's
output is memory of its own). A block from the span is copied out: two spans that alternate
measured no faster at 32 KiB (bench/README.md).
"""

from __future__ import annotations

# One read of the records ahead fills this many bytes at most.
SPAN_BYTES = 512 * 1024
# Records (header and payload) up to this size are read through the span; bigger ones are
# read straight into their destination, which spares the copy out of the span.
SPAN_RECORD_MAX = 128 * 1024 + 32


class ReadAhead:
    """Object ``obj``'s decoded block (``obj`` -1: empty). ``data`` is a view of one of the
    two alternating ``buffer``s (``lasting``) or of the span for a block stored as is, or the
    decompressor's own bytes (``own``). The span holds the file's bytes
    ``[span_off, span_off + span_len)``."""

    __slots__ = ("obj", "native", "stored", "data", "own", "lasting", "_bufs", "_which",
                 "span", "span_off", "span_len", "run_obj", "run_count", "run_size",
                 "run_stored", "run_data", "_run_bufs", "_run_which", "rec_off", "rec_data",
                 "rec_stored", "rec_first", "rec_count", "rec_size")

    def __init__(self) -> None:
        self.obj = -1
        self.native = 0
        self.stored = 0
        self.data: bytes | memoryview = b""
        self.own = False  # data is memory of its own, not a view of a reused buffer
        # data is a view of an alternating buffer: valid until the next-but-one decode
        self.lasting = False
        self._bufs = [memoryview(bytearray(0)), memoryview(bytearray(0))]
        self._which = 0
        self.span = memoryview(bytearray(0))
        self.span_off = 0
        self.span_len = 0
        # A fixed-mode READ's next run (TapeCartridge.run_ahead): ``run_count`` blocks of
        # ``run_size`` bytes from object ``run_obj`` on (-1: none), decoded into one of two
        # alternating buffers of its own (the other may still be on its way to the
        # initiator; the single block's buffers are the C read-ahead's too).
        self.run_obj = -1
        self.run_count = 0
        self.run_size = 0
        self.run_stored = 0
        self.run_data = memoryview(bytearray(0))
        self._run_bufs = [bytearray(0), bytearray(0)]
        self._run_which = 0
        # The last DATA_RUN record decoded (TapeCartridge._run_blocks): its file offset (-1:
        # none), its blocks (memory of its own, never reused: views of it may be handed
        # out) and its payload's stored bytes. A READ of the run's next block copies from it.
        self.rec_off = -1
        self.rec_data = memoryview(b"")
        self.rec_stored = 0
        self.rec_first = -1  # its first object, block count and block size
        self.rec_count = 0
        self.rec_size = 0

    def clear(self) -> None:
        """The tape changed: forget the decoded block, the run, the run record and the
        span."""
        self.obj = -1
        self.run_obj = -1
        self.rec_off = self.rec_first = -1
        self.span_len = 0

    def release(self) -> None:
        """Empty it and let go of the decoded bytes (the cartridge closes)."""
        self.clear()
        self.data = b""
        self.span = memoryview(bytearray(0))
        self._bufs = [self.span, self.span]
        self.run_data = self.span
        self._run_bufs = [bytearray(0), bytearray(0)]
        self.rec_data = memoryview(b"")

    def buffer(self, size: int) -> memoryview:
        """The next of the two alternating buffers a stored block is read into, at least
        ``size`` bytes (the other one may still be on its way to the initiator)."""
        which = self._which = self._which ^ 1
        buf = self._bufs[which]
        if len(buf) < size:
            buf = self._bufs[which] = memoryview(bytearray(size))
        return buf

    def run_buffer(self, size: int) -> memoryview:
        """The next of the run's two alternating buffers, exactly ``size`` bytes."""
        which = self._run_which = self._run_which ^ 1
        buf = self._run_bufs[which]
        if len(buf) < size:
            buf = self._run_bufs[which] = bytearray(size)
        return memoryview(buf)[:size]

    def hold_run(self, obj: int, count: int, size: int, stored: int, data: memoryview
                 ) -> None:
        self.run_count, self.run_size, self.run_stored, self.run_data = count, size, stored, data
        self.run_obj = obj

    def in_span(self, off: int, size: int) -> memoryview | None:
        """The file's bytes ``[off, off + size)`` when the span holds them all."""
        start = off - self.span_off
        if start < 0 or start + size > self.span_len:
            return None
        return self.span[start:start + size]

    def span_buffer(self, size: int) -> memoryview:
        """The span's memory, at least ``size`` bytes, emptied (the cartridge fills it and
        says how much with ``filled``)."""
        self.span_len = 0
        if len(self.span) < size:
            self.span = memoryview(bytearray(size))
        return self.span[:size]

    def filled(self, off: int, length: int) -> None:
        self.span_off, self.span_len = off, length

    def hold(self, obj: int, native: int, stored: int, data: bytes | memoryview,
             own: bool, lasting: bool = False) -> None:
        self.native, self.stored, self.data, self.own = native, stored, data, own
        self.lasting = lasting
        self.obj = obj
