"""Packing one data block for the tape: compress when it pays, encrypt, checksum.

This is the part of a write that needs no tape position, so the write-behind buffer runs it
on several threads at once (one ``BlockPacker`` each: a zstd context must not be shared)
and the drive's thread runs it for blocks it writes at once. It never touches the file.

Like an LTO drive's hardware compression, a block that does not shrink is stored as it is.
Much of what reaches a backup tape is already compressed or encrypted, and trying zstd on
every such block costs as much as the rest of a small write: after ``MISSES_BEFORE_SKIP``
blocks in a row that did not shrink, the packer stores the next ``SKIP_BLOCKS`` as they are
without trying, then tries one again (a stream that turns compressible again is compressed
from at most ``SKIP_BLOCKS`` blocks later). Only how many bytes are stored changes, never
what a READ returns.
"""

from __future__ import annotations

import crc32c
import zstandard

from tape_formats.block_crypto import DataKey, seal
from tape_formats.records import FLAG_COMPRESSED, FLAG_ENCRYPTED

# Blocks smaller than this are stored as they are: zstd cannot win on them.
MIN_COMPRESS = 256
# Like an LTO drive's hardware compression, this must keep up with the line rate rather than
# squeeze the last bytes: zstd's fast level -1 compresses text about 4:1 (LTO's SLDC manages
# about 2.5:1) at ~1.4x the speed of level 1 on this class of machine (docs/cartridge-format.md).
ZSTD_LEVEL = -1
# Incompressible blocks in a row after which compression is skipped for a while, and for how
# many blocks (then one is tried again).
MISSES_BEFORE_SKIP = 8
SKIP_BLOCKS = 32

Data = bytes | bytearray | memoryview
# A data block ready to append: (payload, record flags, payload CRC32C).
Packed = tuple[bytes | memoryview, int, int]


class BlockPacker:
    """Turns a block into its record payload; one per thread (it owns a zstd context)."""

    __slots__ = ("_cctx", "_misses", "_skip")

    def __init__(self) -> None:
        self._cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self._misses = 0  # blocks in a row that did not shrink
        self._skip = 0  # blocks still to store without trying

    def pack(self, data: Data, compress: bool, key: DataKey | None = None) -> Packed:
        """Compress ``data`` when it pays (never store it bigger), encrypt it when the drive
        has a key to write with (after compressing: ciphertext does not shrink), and
        checksum what will be stored."""
        native = len(data)
        payload: bytes | memoryview = data if isinstance(data, bytes | memoryview) else \
            memoryview(data)
        flags = 0
        if compress and native >= MIN_COMPRESS:
            if self._skip:
                self._skip -= 1
            else:
                packed = self._cctx.compress(data)
                if len(packed) < native:
                    payload, flags = packed, FLAG_COMPRESSED
                    self._misses = 0
                else:
                    self._misses += 1
                    if self._misses >= MISSES_BEFORE_SKIP:
                        self._skip = SKIP_BLOCKS
        if key is not None:
            payload, flags = seal(key, payload, native), flags | FLAG_ENCRYPTED
        return payload, flags, crc32c.crc32c(payload)
