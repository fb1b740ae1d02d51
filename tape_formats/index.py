"""The position index of a cartridge: where every logical object starts in the file.

LOCATE and SPACE must not scan the tape, so the index keeps, per *record*, its file offset and
a packed (native length, record flags, kind) word. A data block or a filemark is one record and
one logical object; a run of N filemarks (``RecordKind.FILEMARK_RUN``, what WRITE FILEMARKS
with a count of N writes) is one record and N objects, and so is a run of N data blocks
(``RecordKind.DATA_RUN``, a fixed-mode WRITE's blocks). Without runs object -> record is
the identity; with them it is the identity up to the first run and a bisect over the runs
after it. Filemark records (single
or run) are listed with their first object and the filemarks before them, so "filemarks
before object p", "the n-th filemark" and "the next/previous filemark" are bisects, whatever
the counts: SPACE over millions of filemarks or blocks costs microseconds.

The index lives in memory while the cartridge is open and in an append-only sidecar of one
16-byte entry per record, extended at every durable point (filemark, rewind, unload, close);
after a crash the tail past the last durable point is re-read from the records themselves.
This module never touches the data file: ``tape_formats.cartridge`` does.
"""

from __future__ import annotations

import bisect
import os
import re
import sys
from array import array
from pathlib import Path

from tape_formats.records import (
    INDEX_ENTRY_SIZE,
    INDEX_HEADER,
    INDEX_HEADER_SIZE,
    RECORD_HEADER_SIZE,
    RUN_COUNT_SHIFT,
    RUN_SIZE_MASK,
    RecordKind,
    run_native,
)

_DATA = int(RecordKind.DATA)
_FILEMARK = int(RecordKind.FILEMARK)
_RUN = int(RecordKind.FILEMARK_RUN)
_DATA_RUN = int(RecordKind.DATA_RUN)
_NOT_DATA = re.compile(b"[^" + re.escape(bytes([_DATA])) + b"]")


def pack_meta(kind: int, native_len: int, flags: int) -> int:
    """An index entry's word: native length, the record's flags byte (FLAG_COMPRESSED,
    FLAG_ENCRYPTED), kind."""
    return (native_len << 16) | (flags << 8) | kind


def meta_objects(meta: int) -> int:
    """Logical objects of the record an index word describes (a run's count, else one)."""
    kind = meta & 0xFF
    if kind == _RUN:
        return meta >> 16
    if kind == _DATA_RUN:
        return meta >> (16 + RUN_COUNT_SHIFT)
    return 1


def meta_native_bytes(meta: int) -> int:
    """Native data bytes of the record an index word describes (0 for filemarks)."""
    kind = meta & 0xFF
    if kind == _DATA:
        return meta >> 16
    if kind == _DATA_RUN:
        return (meta >> (16 + RUN_COUNT_SHIFT)) * (meta >> 16 & RUN_SIZE_MASK)
    return 0


class PositionIndex:
    """In-memory index plus its sidecar. ``offsets[r]``/``meta[r]`` describe record r;
    ``objects`` counts logical objects (end of data); ``end`` is the file offset of end of
    data (where the next record goes)."""

    def __init__(self, data_start: int) -> None:
        self.data_start = data_start
        self.clear()

    def clear(self) -> None:
        """Forget everything (a blank tape, or a stale sidecar about to be rebuilt)."""
        self.offsets = array("Q")
        self.meta = array("Q")
        self.end = self.data_start
        self.objects = 0
        self.durable_count = 0  # records already in the sidecar
        # Filemark records, single or run: first object, filemarks before it.
        self.fm_first = array("Q")
        self.fm_before = array("Q")
        self.fm_total = 0
        # Run records: record number, first object, and the objects beyond one per record
        # up to and including this run (object = record + that, after the run).
        self.run_rec = array("Q")
        self.run_first = array("Q")
        self.run_extra = array("Q")

    def __len__(self) -> int:
        return self.objects

    @property
    def records(self) -> int:
        return len(self.offsets)

    @property
    def medium_end(self) -> int:
        """Where end of data is on the *medium*: a filemark in a run takes the room of a
        filemark record (capacity, early warning, VOLUME OVERFLOW stay as they were), though
        the file holds one record for the run; a block of a data run a record header's room
        too (its share of the run's payload is in ``end``)."""
        return self.end + (self.run_extra[-1] * RECORD_HEADER_SIZE if self.run_extra else 0)

    def append(self, offset: int, size: int, kind: int, native_len: int, flags: int) -> None:
        rec = len(self.offsets)
        if kind == _DATA:
            self.objects += 1
        elif kind == _DATA_RUN:
            count = native_len >> RUN_COUNT_SHIFT
            self._add_run(rec, self.objects, count)
            self.objects += count
        else:
            count = native_len if kind == _RUN else 1
            self._add_filemarks(rec, self.objects, count)
            self.objects += count
        self.offsets.append(offset)
        self.meta.append(pack_meta(kind, native_len, flags))
        self.end = offset + size

    def append_data(self, offsets: bytes, meta: bytes, end: int) -> None:
        """Append data records at once, one object each: a fixed-block command's blocks.
        ``offsets``/``meta`` hold the words ``append`` would store, in machine order (an
        array's ``tobytes``); ``end`` is where the last record ends."""
        self.offsets.frombytes(offsets)
        self.meta.frombytes(meta)
        self.objects += len(meta) // self.meta.itemsize
        self.end = end

    def _add_filemarks(self, rec: int, first: int, count: int) -> None:
        self.fm_first.append(first)
        self.fm_before.append(self.fm_total)
        self.fm_total += count
        if count > 1:
            self._add_run(rec, first, count)

    def _add_run(self, rec: int, first: int, count: int) -> None:
        """Record ``rec`` stands for ``count`` objects from ``first`` on (a run of either
        kind; a data run of one block, left by a cut, too)."""
        self.run_rec.append(rec)
        self.run_first.append(first)
        self.run_extra.append((self.run_extra[-1] if self.run_extra else 0) + count - 1)

    # object <-> record ---------------------------------------------------------------
    def record_of(self, obj: int) -> int:
        """The record holding object ``obj`` (0 <= obj < objects)."""
        if not self.run_rec:
            return obj
        j = bisect.bisect_right(self.run_first, obj) - 1
        if j < 0:
            return obj
        rec = self.run_rec[j]
        if obj < self.run_first[j] + meta_objects(self.meta[rec]):
            return rec
        return obj - self.run_extra[j]

    def first_object(self, rec: int) -> int:
        """The logical object number of record ``rec``'s (first) object."""
        j = bisect.bisect_left(self.run_rec, rec) - 1
        return rec + (self.run_extra[j] if j >= 0 else 0)

    def kind(self, obj: int) -> RecordKind:
        """DATA or FILEMARK (a filemark inside a run is a filemark like any other, a block
        inside a data run a data block)."""
        kind = self.meta[self.record_of(obj)] & 0xFF
        return RecordKind.DATA if kind == _DATA or kind == _DATA_RUN else RecordKind.FILEMARK

    def native_len(self, obj: int) -> int:
        m = self.meta[self.record_of(obj)]
        kind = m & 0xFF
        if kind == _DATA_RUN:
            return m >> 16 & RUN_SIZE_MASK
        return m >> 16 if kind == _DATA else 0

    def cut_point(self, obj: int) -> tuple[int, int]:
        """(record holding ``obj``, objects of it kept when the tape is cut at ``obj``): the
        second is 0 unless ``obj`` lies inside a run, which then ends just before it."""
        rec = self.record_of(obj)
        return rec, obj - self.first_object(rec)

    def truncate(self, obj: int) -> None:
        """Drop objects obj.. (an overwrite in the middle of the tape); a run that ``obj``
        lies inside keeps its filemarks before ``obj`` (as a FILEMARK if only one is left),
        a data run its blocks before ``obj`` (the record whole, its count made smaller: the
        cartridge rewrites the record's header so)."""
        if obj >= self.objects:
            return
        rec, keep = self.cut_point(obj)
        first = obj - keep
        before = self.filemarks_before(first)
        offset = self.offsets[rec]
        meta = self.meta[rec]
        size = (self.offsets[rec + 1] if rec + 1 < len(self.offsets) else self.end) - offset
        del self.offsets[rec:]
        del self.meta[rec:]
        fm = bisect.bisect_left(self.fm_first, first)
        del self.fm_first[fm:]
        del self.fm_before[fm:]
        run = bisect.bisect_left(self.run_rec, rec)
        del self.run_rec[run:]
        del self.run_first[run:]
        del self.run_extra[run:]
        self.fm_total = before
        self.objects = first
        self.end = offset
        self.durable_count = min(self.durable_count, rec)
        if keep and meta & 0xFF == _DATA_RUN:
            self.append(offset, size, _DATA_RUN,
                        run_native(keep, meta >> 16 & RUN_SIZE_MASK), meta >> 8 & 0xFF)
        elif keep:
            self.append(offset, RECORD_HEADER_SIZE, _RUN if keep > 1 else _FILEMARK,
                        keep if keep > 1 else 0, 0)

    # filemark arithmetic -------------------------------------------------------------
    def filemark_count(self, i: int) -> int:
        """Filemarks in filemark record i (of ``fm_first``): 1, or a run's count."""
        nxt = self.fm_before[i + 1] if i + 1 < len(self.fm_before) else self.fm_total
        return nxt - self.fm_before[i]

    def filemarks_before(self, obj: int) -> int:
        i = bisect.bisect_right(self.fm_first, obj) - 1
        if i < 0:
            return 0
        return self.fm_before[i] + min(self.filemark_count(i), obj - self.fm_first[i])

    def filemark_object(self, n: int) -> int:
        """The object number of filemark ``n`` (0-based, n < fm_total)."""
        i = bisect.bisect_right(self.fm_before, n) - 1
        return self.fm_first[i] + n - self.fm_before[i]

    def next_filemark(self, obj: int) -> int | None:
        """The first filemark at or after obj."""
        i = bisect.bisect_right(self.fm_first, obj) - 1
        if i >= 0 and obj < self.fm_first[i] + self.filemark_count(i):
            return obj
        i += 1
        return self.fm_first[i] if i < len(self.fm_first) else None

    def prev_filemark(self, obj: int) -> int | None:
        """The last filemark strictly before obj."""
        i = bisect.bisect_left(self.fm_first, obj) - 1
        if i < 0:
            return None
        return min(obj - 1, self.fm_first[i] + self.filemark_count(i) - 1)

    # sidecar -------------------------------------------------------------------------
    @staticmethod
    def sidecar(path: Path) -> Path:
        return path.with_name(path.name + ".idx")

    def load_sidecar(self, path: Path, uuid: bytes) -> bool:
        """Read the sidecar if it belongs to this cartridge; False when absent or foreign."""
        side = self.sidecar(path)
        try:
            raw = side.read_bytes()
        except FileNotFoundError:
            return False
        try:
            hdr = INDEX_HEADER.parse(raw[:INDEX_HEADER_SIZE])
        except Exception:
            return False
        if hdr.uuid != uuid:
            return False
        body = raw[INDEX_HEADER_SIZE:]
        body = body[: len(body) - len(body) % INDEX_ENTRY_SIZE]
        words = array("Q")
        words.frombytes(body)
        if sys.byteorder != "little":  # pragma: no cover - the sidecar is little-endian
            words.byteswap()
        self.clear()
        self.offsets = words[0::2]
        self.meta = meta = words[1::2]
        # Only filemark records need a look: find them among millions of data blocks at C
        # speed (each entry's kind is the low byte of its little-endian meta word).
        kinds = body[INDEX_ENTRY_SIZE // 2 :: INDEX_ENTRY_SIZE]
        extra = 0
        for found in _NOT_DATA.finditer(kinds):
            rec = found.start()
            count = meta_objects(meta[rec])
            if kinds[rec] == _DATA_RUN:
                self._add_run(rec, rec + extra, count)
            else:
                self._add_filemarks(rec, rec + extra, count)
            extra += count - 1
        self.objects = len(meta) + extra
        self.durable_count = len(self.offsets)
        return True

    def write_sidecar(self, path: Path, uuid: bytes, fsync: bool = True) -> None:
        """Append the entries added since the last durable point (rewrite if truncated)."""
        side = self.sidecar(path)
        n = len(self.offsets)
        mode = "r+b" if side.exists() else "w+b"
        with open(side, mode) as f:
            if mode == "w+b" or f.read(INDEX_HEADER_SIZE)[:8] != INDEX_HEADER.build(
                {"uuid": uuid}
            )[:8]:
                f.seek(0)
                f.truncate()
                f.write(INDEX_HEADER.build({"uuid": uuid}))
                start = 0
            else:
                start = self.durable_count
            words = array("Q", bytes(16 * (n - start)))
            words[0::2] = self.offsets[start:n]
            words[1::2] = self.meta[start:n]
            f.truncate(INDEX_HEADER_SIZE + start * INDEX_ENTRY_SIZE)
            f.seek(INDEX_HEADER_SIZE + start * INDEX_ENTRY_SIZE)
            f.write(words.tobytes())
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        self.durable_count = n

    def drop_sidecar_after(self, path: Path, records: int) -> None:
        """Shorten the sidecar to ``records`` entries before the data file is cut (crash
        order: the sidecar never points past the data)."""
        side = self.sidecar(path)
        if not side.exists():
            return
        with open(side, "r+b") as f:
            size = INDEX_HEADER_SIZE + records * INDEX_ENTRY_SIZE
            if os.fstat(f.fileno()).st_size > size:
                f.truncate(size)
                os.fsync(f.fileno())
        self.durable_count = min(self.durable_count, records)
