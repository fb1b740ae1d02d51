"""PackedIndex: a backup's file index held as packed bytes, not one object per row.

Why: a translator builds one :class:`IndexEntry` per archived path, and the manager needs the
whole index at the end (trailer, catalog). As Python objects a row costs ~600 bytes (the
dataclass, its ints, the hex digest, the path); packed it is ~80 bytes plus the path. A tree
of millions of small files must fit, so translators append rows here and the consumers
iterate: each iteration decodes transient IndexEntry objects again, in order.

Layout per row: a fixed struct (kind, flags, size, mtime_ns, mode, uid, gid, header and data
offsets, path and link name lengths), the raw sha256 when the row has one, then the path and
link name as UTF-8 (``surrogateescape``, so any Linux name round-trips).

With ``spill=True`` the rows go to an unlinked temporary file once ``SPILL_BYTES`` have piled
up, and iteration reads them back a chunk at a time: the index of a tree of millions of files
then costs disk, not memory.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterable, Iterator

from .entry import KINDS, IndexEntry

_ROW = struct.Struct("<BBqqqqqqqII")
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}
_HAS_SHA, _DELETED, _TORN = 1, 2, 4
SPILL_BYTES = 4 << 20  # rows held in memory before a spilling index writes them out
_READ_CHUNK = 1 << 20


class PackedIndex:
    """An append-only, re-iterable sequence of IndexEntry rows kept as packed bytes."""

    def __init__(self, rows: Iterable[IndexEntry] = (), *, spill: bool = False) -> None:
        self._buf = bytearray()
        self._len = 0
        self._spill = spill
        self._file = None  # the spilled rows, when there are any
        self.extend(rows)

    def append(self, e: IndexEntry) -> None:
        kind = _KIND_CODE.get(e.kind)
        if kind is None:
            raise ValueError(f"unknown index entry kind {e.kind!r}")
        path = e.path.encode("utf-8", "surrogateescape")
        link = e.linkname.encode("utf-8", "surrogateescape") if e.linkname else b""
        sha = bytes.fromhex(e.sha256) if e.sha256 is not None else b""
        flags = (_HAS_SHA if sha else 0) | (_DELETED if e.deleted else 0) | (_TORN if e.torn else 0)
        self._buf += _ROW.pack(kind, flags, e.size, e.mtime_ns, e.mode, e.uid, e.gid,
                               e.header_offset, e.data_offset, len(path), len(link))
        self._buf += sha
        self._buf += path
        self._buf += link
        self._len += 1
        if self._spill and len(self._buf) >= SPILL_BYTES:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="ebm-index-")
            self._file.seek(0, 2)
            self._file.write(self._buf)
            self._buf = bytearray()

    def extend(self, rows: Iterable[IndexEntry]) -> None:
        for e in rows:
            self.append(e)

    def __iadd__(self, rows: Iterable[IndexEntry]) -> PackedIndex:
        self.extend(rows)
        return self

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[IndexEntry]:
        if self._file is not None:
            self._file.seek(0)
            rest = b""
            while chunk := self._file.read(_READ_CHUNK):
                data = rest + chunk if rest else chunk
                used = yield from _decode(data)
                rest = data[used:]
            if rest:
                raise ValueError("spilled index ends inside a row")
        yield from _decode(self._buf, whole=True)

    def close(self) -> None:
        """Drop the spilled rows (the file goes when closed)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _decode(buf: bytes | bytearray, *, whole: bool = False) -> Iterator[IndexEntry]:
    """The complete rows at the start of ``buf``; returns how many bytes they took."""
    view = memoryview(buf)  # appending while a row is being read raises BufferError
    try:
        unpack, size, pos, end = _ROW.unpack_from, _ROW.size, 0, len(view)
        while pos + size <= end:
            kind, flags, fsize, mtime, mode, uid, gid, hoff, doff, plen, llen = unpack(view, pos)
            stop = pos + size + (32 if flags & _HAS_SHA else 0) + plen + llen
            if stop > end:
                break
            pos += size
            sha = None
            if flags & _HAS_SHA:
                sha = view[pos:pos + 32].hex()
                pos += 32
            path = str(view[pos:pos + plen], "utf-8", "surrogateescape")
            pos += plen
            link = str(view[pos:pos + llen], "utf-8", "surrogateescape") if llen else ""
            pos += llen
            yield IndexEntry(path=path, kind=KINDS[kind], size=fsize, mtime_ns=mtime,
                             mode=mode, uid=uid, gid=gid, sha256=sha, header_offset=hoff,
                             data_offset=doff, deleted=bool(flags & _DELETED),
                             linkname=link, torn=bool(flags & _TORN))
        if whole and pos != end:
            raise ValueError("packed index ends inside a row")
        return pos
    finally:
        view.release()
