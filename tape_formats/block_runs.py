"""Runs of fixed-length data blocks: many records packed, or checked and decoded, in one call.

A drive in fixed-block mode (``mt setblk 512``) moves a command's N blocks at once, and each
block is still one record of the cartridge format (its own header, checksum and compression:
docs/cartridge-format.md), so the file holds exactly what N single-block writes would leave.
What a run saves is the per-block round trip through the cartridge: one write (or read) of
the whole run, one index extension, one counter update.

``pack_run`` builds the records of a run; ``unpack_run`` checks and decodes the records of a
run into the caller's buffer and stops, without raising, at the first one that is not a plain
data block of the run's length or fails its checks (the caller reads that one the single-block
way, which reports it). Neither touches a file or a tape position: ``tape_formats.cartridge``
does (``write_blocks``, ``read_blocks``).
"""

from __future__ import annotations

import os
from array import array

import crc32c
import zstandard

from tape_formats.block_packing import MIN_COMPRESS, MISSES_BEFORE_SKIP, SKIP_BLOCKS, BlockPacker
from tape_formats.index import pack_meta
from tape_formats.records import (
    FLAG_COMPRESSED,
    FLAG_ENCRYPTED,
    RECORD_HEADER_SIZE,
    RECORD_MAGIC,
    RUN_COUNT_SHIFT,
    RUN_SIZE_MASK,
    RecordHeader,
    RecordKind,
    pack_record_header,
)

_DATA = int(RecordKind.DATA)
_DATA_RUN = int(RecordKind.DATA_RUN)


def _pack_run(data: memoryview, size: int, packer: BlockPacker, compress: bool, room: int,
              file_no: int, obj: int, offset: int) -> tuple[bytes, bytes, bytes, int]:
    """The records of the blocks ``data[i * size : (i + 1) * size]``, objects ``obj``...,
    the first at file ``offset``: as many as fit in ``room`` bytes of medium (the first block
    that does not fit and the rest are left out). Returns (the records as one bytes,
    their file offsets and their index meta words as 64-bit words in machine order, payload
    bytes stored). Each block is packed by ``packer`` as a single-block write packs it (no
    key: runs are never encrypted)."""
    parts: list[bytes | memoryview] = []
    offsets = array("Q")
    meta = array("Q")
    stored = 0
    for i in range(len(data) // size):
        payload, flags, crc = packer.pack(data[i * size : (i + 1) * size], compress)
        rec = RECORD_HEADER_SIZE + len(payload)
        if rec > room:
            break
        room -= rec
        parts.append(pack_record_header(_DATA, flags, len(payload), size, file_no, obj + i,
                                        crc))
        parts.append(payload)
        offsets.append(offset)
        meta.append(pack_meta(_DATA, size, flags))
        offset += rec
        stored += len(payload)
    return b"".join(parts), offsets.tobytes(), meta.tobytes(), stored


def _unpack_run(raw: memoryview, base: int, offsets: array, meta: array, r0: int, end: int,
               obj: int, size: int, buf: memoryview, dctx: zstandard.ZstdDecompressor
               ) -> tuple[int, int]:
    """Decode records ``r0``... (objects ``obj``...) into ``buf``, one ``size`` slot each,
    from ``raw``: the file's bytes from offset ``base`` on (``end``: where the last record
    ends). A record is a plain data block of ``size`` bytes, or a run of them
    (``RecordKind.DATA_RUN``) whose blocks all fit in ``buf`` and whose payload holds just
    them. Stops before the first record that is anything else (a filemark, another length,
    an encrypted block, a run cut short by an overwrite), lies beyond ``raw``, or fails a
    check (header, checksum, decompression): the caller reads that one its own way, which
    reports it. Returns (blocks decoded, their payload bytes stored)."""
    n = len(buf) // size
    want = pack_meta(_DATA, size, 0)
    last = len(offsets) - 1
    records = len(meta)
    stored_total = 0
    j = 0
    r = r0
    while j < n and r < records:
        m = meta[r]
        count, kind = 1, _DATA
        if m & ~(FLAG_COMPRESSED << 8) != want:
            if (m & 0xFF != _DATA_RUN or m >> 16 & RUN_SIZE_MASK != size
                    or m & (FLAG_ENCRYPTED << 8)):
                break
            count, kind = m >> (16 + RUN_COUNT_SHIFT), _DATA_RUN
            if not 1 <= count <= n - j:
                break
        off = offsets[r] - base
        nxt = (offsets[r + 1] if r < last else end) - base
        if nxt > len(raw):
            break
        stored = nxt - off - RECORD_HEADER_SIZE
        rec = RecordHeader.unpack(raw[off:nxt])
        if rec is None or rec.obj != obj + j or rec.stored_len != stored \
                or rec.kind != kind or rec.flags & FLAG_ENCRYPTED \
                or (kind == _DATA_RUN and rec.native_len != m >> 16):
            break
        payload = raw[off + RECORD_HEADER_SIZE : nxt]
        if crc32c.crc32c(payload) != rec.payload_crc:
            break
        length = count * size
        slot = buf[j * size : j * size + length]
        if m & (FLAG_COMPRESSED << 8):
            try:
                block = dctx.decompress(payload, max_output_size=length)
            except zstandard.ZstdError:
                break
            if len(block) != length:
                break
            slot[:] = block
        elif stored != length:
            break
        else:
            slot[:] = payload
        stored_total += stored
        j += count
        r += 1
    return j, stored_total


# The same two in C (tape_formats/_blockruns.c) when the extension is built;
# tests/tape_formats/test_block_runs.py holds them to these.
try:  # setup.py builds it; optional
    from tape_formats import _blockruns as _native  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - without a compiler
    _native = None
if os.environ.get("VTL_NO_FASTPATH", "") not in ("", "0"):  # the reference, as elsewhere
    _native = None
if _native is not None:
    _native.configure(RECORD_MAGIC, MIN_COMPRESS, MISSES_BEFORE_SKIP, SKIP_BLOCKS,
                      zstandard.ZstdError)
pack_run = _native.pack_run if _native is not None else _pack_run
unpack_run = _native.unpack_run if _native is not None else _unpack_run
