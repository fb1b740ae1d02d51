"""Commit times of WAL segments, read from the segments' own pages and records.

Why not ``pg_waldump``: it decodes and prints every record (about 3.8 CPU s per GB of pgbench
WAL, plus the text this side had to parse), while the catalogue needs two numbers a segment,
its first and last commit time. Those come from a handful of records each:

- the first commit: walk forward from the first record that starts in the segment (after the
  long page header and the continuation of a record from the previous segment) to the first
  commit record;
- the last commit: find the last record that starts in the segment (the last page on which a
  record starts, walked forward to the segment's end), then follow ``xl_prev`` back to the
  first commit record met.

A segment without any commit is walked once, record by record (a bulk load); a pgbench-like
segment takes a few dozen records. Layout (PostgreSQL's ``access/xlog_internal.h``,
``access/xlogrecord.h``, ``access/xact.h``; stable since 9.5): pages of ``XLOG_BLCKSZ``
bytes, each starting with a page header (24 bytes, 40 on the first page of a segment) whose
``xlp_pageaddr`` is the page's own LSN and ``xlp_rem_len`` the length of a record continued
from the page before; records 8-byte aligned, each starting with ``XLogRecord`` (total
length, xid, ``xl_prev``, info, resource manager, CRC-32C), a record's bytes continuing
after the next page's header where a page ends. A commit is resource manager 1 (``RM_XACT_ID``)
with ``info & 0x70`` 0x00 (COMMIT) or 0x30 (COMMIT_PREPARED); its main data (the record's
last bytes) starts with ``xact_time``, microseconds since 2000-01-01 UTC. That is the time
``recovery_target_time`` compares against.

Every record used is checked: its ``xl_prev`` links to the record walked from, and a
commit's CRC-32C is verified before its time is taken. What does not check out ends the walk
and marks the answer incomplete (a restore then always sets the time target), never a guess.
``tests/translators/test_postgresql.py`` compares the result with ``pg_waldump`` on real WAL.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
from collections.abc import Iterator
from pathlib import Path

from crc32c import crc32c

_PAGE_HEADER = struct.Struct("<HHIQI")  # magic, info, timeline, page address, remaining
_SHORT_HEADER, _LONG_HEADER = 24, 40  # MAXALIGN'd sizes
_RECORD = struct.Struct("<IIQBBxxI")  # total length, xid, prev, info, rmid, crc
_XLP_FIRST_IS_CONTRECORD = 0x0001
_RM_XLOG, _RM_XACT = 0, 1
_XLOG_SWITCH = 0x40
_XACT_OPMASK, _XACT_COMMIT, _XACT_COMMIT_PREPARED = 0x70, 0x00, 0x30
_BLOCK_DATA_SHORT, _BLOCK_DATA_LONG, _BLOCK_ORIGIN, _BLOCK_TOPLEVEL_XID = 255, 254, 253, 252
_EPOCH_2000 = 946_684_800  # PostgreSQL's timestamp epoch, in Unix seconds
MAX_RECORD = 1 << 30  # XLogRecordMaxSize: a longer length is not a record


class BadWal(Exception):
    """The records do not check out where the walk reached (the answer is incomplete)."""


def _align(n: int) -> int:
    return (n + 7) & ~7


class WalView:
    """A contiguous run of segments, mapped read-only, addressed by LSN."""

    def __init__(self, paths: list[Path], first_segno: int, segment_size: int,
                 page_size: int) -> None:
        self.size, self.page = segment_size, page_size
        self.start = first_segno * segment_size
        self.end = self.start + len(paths) * segment_size
        self._maps: list[mmap.mmap] = []
        for p in paths:
            with open(p, "rb") as f:
                self._maps.append(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ))

    def close(self) -> None:
        for m in self._maps:
            m.close()

    def raw(self, lsn: int, n: int) -> bytes:
        """``n`` file bytes at ``lsn`` (page headers included); they must be on one page."""
        if not (self.start <= lsn and lsn + n <= self.end):
            raise BadWal(f"LSN {lsn:X} is outside the segments read")
        k, off = divmod(lsn - self.start, self.size)
        return self._maps[k][off:off + n]

    def header_size(self, page_lsn: int) -> int:
        return _LONG_HEADER if page_lsn % self.size == 0 else _SHORT_HEADER

    def page_header(self, page_lsn: int) -> tuple[int, int]:
        """(info, remaining length) of the page at ``page_lsn``, whose address must match."""
        _magic, info, _tli, addr, rem = _PAGE_HEADER.unpack(self.raw(page_lsn, _PAGE_HEADER.size))
        if addr != page_lsn:
            raise BadWal(f"page at {page_lsn:X} has address {addr:X}")
        return info, rem

    def read(self, lsn: int, n: int) -> bytes:
        """``n`` bytes of record data from ``lsn``, skipping the page headers in between."""
        out = []
        while n:
            page = lsn - lsn % self.page
            if lsn == page:  # a record's bytes go on after the header of the next page
                info, _rem = self.page_header(page)
                if not info & _XLP_FIRST_IS_CONTRECORD:
                    raise BadWal(f"page at {page:X} does not continue the record")
                lsn += self.header_size(page)
            take = min(n, page + self.page - lsn)
            out.append(self.raw(lsn, take))
            lsn, n = lsn + take, n - take
        return b"".join(out)

    def record(self, lsn: int) -> tuple[int, int, int, int]:
        """(total length, prev, info, rmid) of the record starting at ``lsn``."""
        tot, _xid, prev, info, rmid, _crc = _RECORD.unpack(self.read(lsn, _RECORD.size))
        if not _RECORD.size <= tot <= MAX_RECORD:
            raise BadWal(f"no record at {lsn:X}")
        return tot, prev, info, rmid

    def after(self, lsn: int, tot: int) -> int:
        """Where the record after the one at ``lsn`` (``tot`` bytes long) starts."""
        pos, left = lsn, tot
        while True:
            room = self.page - pos % self.page
            if left <= room:
                pos += left
                break
            pos += room
            left -= room
            pos += self.header_size(pos)
        pos = _align(pos)
        if pos % self.page == 0:  # a record never starts in the header
            pos += self.header_size(pos)
        return pos

    def commit_time(self, lsn: int, tot: int) -> float:
        """The ``xact_time`` of the commit record at ``lsn``, its CRC-32C verified."""
        rec = self.read(lsn, tot)
        (crc,) = struct.unpack_from("<I", rec, 20)
        if crc32c(rec[:20], crc32c(rec[_RECORD.size:])) != crc:
            raise BadWal(f"commit record at {lsn:X} fails its CRC")
        main = _main_data_length(rec)
        if main < 8:
            raise BadWal(f"commit record at {lsn:X} has no commit time")
        (usecs,) = struct.unpack_from("<q", rec, tot - main)
        return _EPOCH_2000 + usecs / 1e6


def _main_data_length(rec: bytes) -> int:
    """The length of a record's main data (its last bytes), from its block headers."""
    pos = _RECORD.size
    while pos < len(rec):
        block_id = rec[pos]
        if block_id == _BLOCK_DATA_SHORT:
            return rec[pos + 1]
        if block_id == _BLOCK_DATA_LONG:
            return struct.unpack_from("<I", rec, pos + 1)[0]
        if block_id == _BLOCK_ORIGIN:
            pos += 3
        elif block_id == _BLOCK_TOPLEVEL_XID:
            pos += 5
        else:
            return 0  # block references: not a commit record's shape
    return 0


def _is_commit(info: int, rmid: int) -> bool:
    return rmid == _RM_XACT and info & _XACT_OPMASK in (_XACT_COMMIT, _XACT_COMMIT_PREPARED)


def _first_record(wal: WalView, seg_start: int) -> int | None:
    """The LSN of the first record starting in the segment (None: a record spans it)."""
    page = seg_start
    while page < seg_start + wal.size:
        info, rem = wal.page_header(page)
        pos = page + wal.header_size(page) + (_align(rem) if info & _XLP_FIRST_IS_CONTRECORD
                                              else 0)
        if pos < page + wal.page:
            return pos
        page += wal.page
    return None


def _walk(wal: WalView, lsn: int, limit: int) -> Iterator[tuple[int, int, int, int]]:
    """(lsn, total length, info, rmid) of each record from ``lsn`` while they start before
    ``limit``, each linked to the one before; ends at the end of the WAL written (a zero
    length) or a segment switch."""
    prev = None
    while lsn < limit:
        try:
            tot, back, info, rmid = wal.record(lsn)
        except BadWal:
            if prev is None or wal.raw(lsn, 4) != bytes(4):
                raise
            return  # zeros: the end of the WAL written
        if prev is not None and back != prev:
            raise BadWal(f"record at {lsn:X} does not follow the one at {prev:X}")
        yield lsn, tot, info, rmid
        if rmid == _RM_XLOG and info & 0xF0 == _XLOG_SWITCH:
            return
        prev, lsn = lsn, wal.after(lsn, tot)


def _last_record(wal: WalView, seg_start: int) -> int | None:
    """The LSN of the last record starting in the segment: from the last page on which one
    starts, walked forward."""
    seg_end = seg_start + wal.size
    page = seg_end - wal.page
    while page >= seg_start:
        with contextlib.suppress(BadWal):  # a page past the end of the WAL written
            info, rem = wal.page_header(page)
            pos = page + wal.header_size(page) + (
                _align(rem) if info & _XLP_FIRST_IS_CONTRECORD else 0)
            if pos < page + wal.page and wal.raw(pos, 4) != bytes(4):
                starts = [rec[0] for rec in _walk(wal, pos, seg_end)]
                return starts[-1] if starts else None
        page -= wal.page
    return None


def segment_commits(wal: WalView, segno: int) -> tuple[float | None, float | None]:
    """First and last commit time of the records that start in segment ``segno``."""
    seg_start = segno * wal.size
    first_lsn = _first_record(wal, seg_start)
    if first_lsn is None:
        return None, None
    first = None
    for lsn, tot, info, rmid in _walk(wal, first_lsn, seg_start + wal.size):
        if _is_commit(info, rmid):
            first = wal.commit_time(lsn, tot)
            break
    if first is None:
        return None, None
    lsn = _last_record(wal, seg_start)
    while lsn is not None and lsn >= seg_start:
        tot, prev, info, rmid = wal.record(lsn)
        if _is_commit(info, rmid):
            return first, wal.commit_time(lsn, tot)
        if prev >= seg_start and wal.after(prev, wal.record(prev)[0]) != lsn:
            raise BadWal(f"record at {lsn:X} does not follow the one at {prev:X}")
        lsn = prev
    raise BadWal(f"segment {segno:X}: the walk back from its end missed its first commit")
