"""Pack files: many chunks appended to one file, so a new chunk costs a write, not a file.

A pack is ``<store>/packs/<16 hex>.pack``, written by one writer at a time (a ``PackWriter``
holds an exclusive flock on it while it is open, so the collector leaves it alone) and
closed for good at ``PACK_SIZE``; nothing is ever rewritten inside a pack. A record is a
header (``VCK1``, the 32-byte chunk id, the flag byte of the stored form: 0 as is, 1 zstd,
u32 length of the stored bytes), the stored bytes, and a CRC32C of header and bytes, so a
record read at an offset the index gave proves it is the chunk asked for, whole. A crash
leaves at most a torn record at a pack's end (``records`` stops there). Where a chunk is,
and which records are live, is the index's business (chunk_index.py), not the pack's.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import crc32c

PACKS_DIR = "packs"
PACK_SUFFIX = ".pack"
PACK_SIZE = 32 << 20  # a pack is closed once it holds this much
MAGIC = b"VCK1"
HEADER = struct.Struct("<4s32sBI")
CRC_SIZE = 4
RAW, ZSTD = 0, 1
Buffer = bytes | memoryview  # (or any object with the buffer protocol: a zstd frame's view)
# A record to append: (chunk id, flag, stored bytes), or with its ``record_crc`` as a fourth
Record = tuple[bytes, int, Buffer] | tuple[bytes, int, Buffer, int]
_IOV_MAX = 1020  # buffers per pwritev (Linux's IOV_MAX is 1024; three per record)
# Bytes per pwritev at most. The page cache takes a write in folios up to the write's size
# (aligned), and on this machine kind (a VM whose free memory goes back to the host) a big
# folio's first write is slow: 2 MiB writes cost 0.4-3.0 CPU s per GB against 0.3 for
# writes of 256 KiB or less (bench/README.md, bench_dedup.py). A batch of chunks (~2 MiB
# stored) is written in pieces of this size, as the plain cartridge writes its blocks.
WRITE_MAX = 256 << 10


def _writes(bufs: list[Buffer]) -> Iterator[tuple[list[memoryview], int]]:
    """The buffers in order as pwritev calls (buffers, bytes) of at most ``WRITE_MAX`` bytes
    and ``_IOV_MAX`` buffers each (a buffer is split where a call ends)."""
    part: list[memoryview] = []
    size = 0
    for b in bufs:
        view = memoryview(b)
        while view:
            if size >= WRITE_MAX or len(part) == _IOV_MAX:
                yield part, size
                part, size = [], 0
            take = view[:WRITE_MAX - size]
            part.append(take)
            size += len(take)
            view = view[len(take):]
    if part:
        yield part, size


class PackDamaged(ValueError):
    """A record is not where the index says, or fails its CRC."""


def record_size(stored: int) -> int:
    """Bytes a record of ``stored`` stored bytes takes in its pack."""
    return HEADER.size + stored + CRC_SIZE


def record_crc(chunk_id: bytes, flag: int, body: Buffer) -> int:
    """The CRC32C a record of these ends with (of its header and stored bytes). Computed
    holding the GIL: a chunk's ~64 KiB take ~4 us, less than a release and take of the GIL
    (~6 us alone, a wait when another thread has it); the chunk writer computes it right
    after compressing, while the bytes are in the cache."""
    head = HEADER.pack(MAGIC, chunk_id, flag, len(body))
    return crc32c.crc32c(body, crc32c.crc32c(head), gil_release_mode=0)


def encode(chunk_id: bytes, flag: int, body: Buffer, crc: int | None = None) -> list[Buffer]:
    """A record as buffers for one writev (the body is not copied); ``crc``: its
    ``record_crc``, when known already."""
    head = HEADER.pack(MAGIC, chunk_id, flag, len(body))
    if crc is None:
        crc = crc32c.crc32c(body, crc32c.crc32c(head), gil_release_mode=0)
    return [head, body, crc.to_bytes(4, "little")]


def decode(buf: bytes | memoryview, at: int, chunk_id: bytes | None) -> tuple[int, memoryview]:
    """(flag, stored bytes) of the record at ``at`` in ``buf``; PackDamaged unless it is
    whole and (when given) holds ``chunk_id``."""
    view = memoryview(buf)
    if at + HEADER.size > len(view):
        raise PackDamaged("record header cut short")
    magic, cid, flag, n = HEADER.unpack_from(view, at)
    end = at + HEADER.size + n
    if magic != MAGIC or end + CRC_SIZE > len(view) or (chunk_id is not None
                                                        and cid != chunk_id):
        raise PackDamaged("not the record expected")
    if crc32c.crc32c(view[at:end]) != int.from_bytes(view[end:end + CRC_SIZE], "little"):
        raise PackDamaged("record fails its CRC")
    return flag, view[at + HEADER.size:end]


def records(data: bytes) -> Iterator[tuple[int, bytes, int]]:
    """(offset, chunk id, record size) of each whole record from the start of a pack's
    bytes, up to the first torn or damaged one (a crash's leftover)."""
    at = 0
    while at + HEADER.size <= len(data):
        _magic, cid, _flag, n = HEADER.unpack_from(data, at)
        try:
            decode(data, at, None)
        except PackDamaged:
            return
        size = record_size(n)
        yield at, cid, size
        at += size


def pack_name(pack: int) -> str:
    return f"{pack:016x}{PACK_SUFFIX}"


def pack_number(name: str) -> int | None:
    """The pack number a file name holds (None: not a pack)."""
    if not name.endswith(PACK_SUFFIX) or len(name) != 16 + len(PACK_SUFFIX):
        return None
    try:
        return int(name[:16], 16)
    except ValueError:
        return None


def try_lock(fd: int) -> bool:
    """An exclusive flock on a pack without waiting: False while a writer has it open."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class PackWriter:
    """One new pack, appended to by its owner only (flocked until ``close``)."""

    def __init__(self, folder: Path) -> None:
        while True:
            number = int.from_bytes(os.urandom(8), "little") >> 1
            path = folder / pack_name(number)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                continue
        fcntl.flock(fd, fcntl.LOCK_EX)  # new and ours: the collector skips a locked pack
        self.number, self.path, self.fd, self.end = number, path, fd, 0
        self.durable = 0  # bytes made durable by an fdatasync (the owner's to set)

    def append(self, chunk_id: bytes, flag: int, body: Buffer) -> int:
        """Write one record at the pack's end; returns its offset."""
        return self.append_many([(chunk_id, flag, body)])[0]

    def append_many(self, records: Sequence[Record]) -> list[int]:
        """Write records (chunk id, flag, stored bytes[, their ``record_crc``]) at the pack's
        end with one pwritev (up to IOV_MAX buffers a call); returns their offsets. A short
        write is an error, and the pack's end stays where it was (the torn tail is never
        indexed)."""
        bufs: list[Buffer] = []
        offsets = []
        at = self.end
        for rec in records:
            offsets.append(at)
            bufs += encode(*rec)
            at += record_size(len(rec[2]))
        pos = self.end
        for part, want in _writes(bufs):
            if os.pwritev(self.fd, part, pos) != want:
                raise OSError(errno.EIO, f"{self.path}: short write")
            pos += want
        self.end = at
        return offsets

    @property
    def full(self) -> bool:
        return self.end >= PACK_SIZE

    def close(self) -> None:
        os.close(self.fd)
