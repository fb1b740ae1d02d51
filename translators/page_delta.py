"""The page-delta member: what an SQLite incremental carries, declared once with construct.

A delta turns the database file as it was at the parent backup into the file as it is at this
backup. Body layout (big-endian; see docs/sqlite-page-delta.md)::

    header  : magic "EBMSQLD1", page_size u32, page_count u32 (pages after applying),
              records u32, parent_sha256[32] (file it applies to), sha256[32] (file it makes)
    records : records x (page_number u32 (1-based, as SQLite numbers pages), page[page_size])

Applying: truncate (or extend) the file to ``page_count * page_size`` bytes, then write each
record's page at ``(page_number - 1) * page_size``. The sha256 pair chains deltas: a delta
applies only to the file whose sha256 is its ``parent_sha256``.

This module only knows the bytes; it must not know about tapes, catalogs or SQLite itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from construct import Bytes, Const, Int32ub, Struct

from .base import PieceReader

MAGIC = b"EBMSQLD1"
DELTA_HEADER = Struct(
    "magic" / Const(MAGIC),
    "page_size" / Int32ub,
    "page_count" / Int32ub,
    "records" / Int32ub,
    "parent_sha256" / Bytes(32),
    "sha256" / Bytes(32),
)
HEADER_SIZE = DELTA_HEADER.sizeof()
PAGE_NUMBER = Int32ub


class DeltaError(Exception):
    """A delta body is damaged or does not apply; one line."""


@dataclass(frozen=True, slots=True)
class DeltaHeader:
    page_size: int
    page_count: int
    records: int
    parent_sha256: bytes
    sha256: bytes

    def build(self) -> bytes:
        return DELTA_HEADER.build(dict(page_size=self.page_size, page_count=self.page_count,
                                       records=self.records, parent_sha256=self.parent_sha256,
                                       sha256=self.sha256))

    def body_size(self) -> int:
        return HEADER_SIZE + self.records * (4 + self.page_size)


class DeltaReader(PieceReader):
    """``readinto`` over a delta body built on the fly from ``pages`` (page numbers, 1-based)
    of the open file ``fd``: header first, then one record per page, read with pread. What the
    pax writer streams, so a delta never sits in memory whole."""

    def __init__(self, header: DeltaHeader, fd: int, pages: Iterator[int] | list[int]) -> None:
        self._ps = header.page_size
        self._fd = fd
        self._pages = iter(pages)
        self._pending = memoryview(header.build())
        self._record = bytearray(4 + self._ps)

    def _next_piece(self) -> memoryview | None:
        """The next page's record (page number, then the page), in the one record buffer."""
        pgno = next(self._pages, None)
        if pgno is None:
            return None
        rec = memoryview(self._record)
        rec[:4] = PAGE_NUMBER.build(pgno)
        got = os.preadv(self._fd, [rec[4:]], (pgno - 1) * self._ps)
        if got != self._ps:
            raise DeltaError(f"page {pgno} is short in the snapshot")
        return rec


def _read_exact(src: BinaryIO, n: int, what: str) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise DeltaError(f"delta body ends inside {what}")
    return data


def read_header(src: BinaryIO) -> DeltaHeader:
    raw = _read_exact(src, HEADER_SIZE, "its header")
    try:
        h = DELTA_HEADER.parse(raw)
    except Exception:
        raise DeltaError("not a page delta (bad magic)") from None
    if h.page_size < 512 or h.page_size > 65536 or h.page_size & (h.page_size - 1):
        raise DeltaError(f"bad page size {h.page_size} in a page delta")
    return DeltaHeader(h.page_size, h.page_count, h.records, h.parent_sha256, h.sha256)


def apply_delta(header: DeltaHeader, src: BinaryIO, fd: int) -> int:
    """Apply the records that follow ``header`` in ``src`` to the open file ``fd``; return
    the number of pages written. The caller checks the sha256 chain."""
    ps = header.page_size
    os.ftruncate(fd, header.page_count * ps)
    for _ in range(header.records):
        pgno = PAGE_NUMBER.parse(_read_exact(src, 4, "a page number"))
        if not 1 <= pgno <= header.page_count:
            raise DeltaError(f"page {pgno} is outside the database ({header.page_count} pages)")
        page = _read_exact(src, ps, f"page {pgno}")
        os.pwrite(fd, page, (pgno - 1) * ps)
    return header.records
