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
then costs disk, not memory. With a ``sink`` (a callable) every ~``SINK_BYTES`` of whole rows
are also handed to it as they pile up, in order (the catalog inserts them while the backup is
still writing: :class:`ebm.catalog.IndexStager`); ``handed_over`` says how many bytes went.

The consumers at the end of a backup need no row objects: the trailer's counts are kept as
rows are added (:meth:`PackedIndex.counts`), and the trailer's JSON lines are formatted
straight from the packed fields (:meth:`PackedIndex.json_lines`, the same bytes as
``IndexEntry.to_json`` through the index encoder), and the catalog's insert parameters are
built from them in C (:meth:`PackedIndex.catalog_batches`), so a row is decoded into an
:class:`IndexEntry` only by a consumer that asks for one.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator
from json.encoder import encode_basestring

from .entry import KINDS, IndexEntry

try:  # JSON lines and catalog rows in C (tape_formats/archive/_paxfast.c), when it is built
    from ._paxfast import index_json as _index_json  # type: ignore[import-not-found]
    from ._paxfast import index_rows as _index_rows  # type: ignore[import-not-found]
except ImportError:
    _index_json = _index_rows = None
try:  # the catalog insert of a sink's chunk, when _paxfast links SQLite (setup.py)
    from ._paxfast import sqlite_symbol as _sqlite_symbol  # type: ignore[import-not-found]
    from ._paxfast import stage_rows as _stage_rows  # type: ignore[import-not-found]
except ImportError:
    _stage_rows = _sqlite_symbol = None
if os.environ.get("VTL_NO_FASTPATH"):
    _index_json = _index_rows = _stage_rows = None
_one_sqlite: bool | None = None  # stageable()'s check, once

_ROW = struct.Struct("<BBqqqqqqqII")
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}
_FILE = _KIND_CODE["file"]
_HAS_SHA, _DELETED, _TORN = 1, 2, 4
SPILL_BYTES = 4 << 20  # rows held in memory before a spilling index writes them out
SINK_BYTES = 1 << 20  # rows piled up before they are handed to a sink
_READ_CHUNK = 1 << 20


class PackedIndex:
    """An append-only, re-iterable sequence of IndexEntry rows kept as packed bytes."""

    def __init__(self, rows: Iterable[IndexEntry] = (), *, spill: bool = False,
                 sink: Callable[[bytes], object] | None = None) -> None:
        self._buf = bytearray()
        self._len = 0
        self._spill = spill
        self._file = None  # the spilled rows, when there are any
        self._spilled = 0  # bytes in the file
        self.sink = sink
        self._sunk = 0  # bytes of _buf already handed to the sink
        self.handed_over = 0  # bytes handed to the sink in all (a prefix of the rows)
        self._kind_counts = [0] * len(KINDS)  # rows that are not deletions, per kind
        self._deleted = self._torn = self._file_bytes = 0
        self.extend(rows)

    def append(self, e: IndexEntry) -> None:
        self.add(e.path, e.kind, e.size, e.mtime_ns, e.mode, e.uid, e.gid, e.sha256,
                 e.header_offset, e.data_offset, deleted=e.deleted, linkname=e.linkname,
                 torn=e.torn)

    def add(self, path: str, kind: str, size: int, mtime_ns: int, mode: int, uid: int, gid: int,
            sha256: str | None, header_offset: int, data_offset: int, deleted: bool = False,
            linkname: str = "", torn: bool = False) -> None:
        """Append one row from its fields (what :meth:`append` does without an IndexEntry)."""
        code = _KIND_CODE.get(kind)
        if code is None:
            raise ValueError(f"unknown index entry kind {kind!r}")
        path_b = path.encode("utf-8", "surrogateescape")
        link = linkname.encode("utf-8", "surrogateescape") if linkname else b""
        sha = bytes.fromhex(sha256) if sha256 is not None else b""
        flags = (_HAS_SHA if sha else 0) | (_DELETED if deleted else 0) | (_TORN if torn else 0)
        if deleted:
            self._deleted += 1
        else:
            self._kind_counts[code] += 1
            self._torn += torn
            if code == _FILE:
                self._file_bytes += size
        self._buf += _ROW.pack(code, flags, size, mtime_ns, mode, uid, gid,
                               header_offset, data_offset, len(path_b), len(link))
        self._buf += sha
        self._buf += path_b
        self._buf += link
        self._len += 1
        self._maybe_spill()

    def add_files(self, rows: bytes, count: int, data_bytes: int) -> None:
        """``count`` rows of regular files (not deleted, not torn) already packed in this
        layout, holding ``data_bytes`` in all: what ``_paxfast.pack_files`` builds."""
        self._buf += rows
        self._len += count
        self._kind_counts[_FILE] += count
        self._file_bytes += data_bytes
        self._maybe_spill()

    def _maybe_spill(self) -> None:
        if self.sink is not None and len(self._buf) - self._sunk >= SINK_BYTES:
            self._hand_over()
        if self._spill and len(self._buf) >= SPILL_BYTES:
            if self.sink is not None:
                self._hand_over()
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="ebm-index-")
            self._file.seek(0, 2)
            self._file.write(self._buf)
            self._spilled += len(self._buf)
            self._buf = bytearray()
            self._sunk = 0

    def _hand_over(self) -> None:
        """The rows added since the last hand-over, to the sink (whole rows: a row is
        appended whole before this runs)."""
        chunk = bytes(self._buf[self._sunk:])
        if chunk:
            self.sink(chunk)  # type: ignore[misc]
            self.handed_over += len(chunk)
            self._sunk = len(self._buf)

    def extend(self, rows: Iterable[IndexEntry]) -> None:
        for e in rows:
            self.append(e)

    def __iadd__(self, rows: Iterable[IndexEntry]) -> PackedIndex:
        self.extend(rows)
        return self

    def __len__(self) -> int:
        return self._len

    def counts(self) -> dict[str, int]:
        """The trailer's counts of these rows (what ``BackupTrailerInfo.from_index`` would
        find by iterating): deletions apart, every other row by kind."""
        per_kind = dict(zip(KINDS, self._kind_counts, strict=True))
        return {
            "entry_count": sum(self._kind_counts), "file_count": per_kind["file"],
            "dir_count": per_kind["dir"], "symlink_count": per_kind["symlink"],
            "hardlink_count": per_kind["hardlink"],
            "other_count": per_kind["chardev"] + per_kind["blockdev"] + per_kind["fifo"],
            "deleted_count": self._deleted, "torn_count": self._torn,
            "data_bytes": self._file_bytes,
        }

    def __iter__(self) -> Iterator[IndexEntry]:
        for row in self.rows():
            yield IndexEntry(*row)

    def rows(self, *, raw_sha: bool = False) -> Iterator[tuple]:
        """Every row as a tuple in IndexEntry's field order (path, kind, size, mtime_ns, mode,
        uid, gid, sha256, header_offset, data_offset, deleted, linkname, torn); the sha256 as
        hex, or as its 32 bytes with ``raw_sha`` (what the catalog stores)."""
        if self._file is not None:
            self._file.seek(0)
            rest = b""
            while chunk := self._file.read(_READ_CHUNK):
                data = rest + chunk if rest else chunk
                used = yield from _decode(data, raw_sha=raw_sha)
                rest = data[used:]
            if rest:
                raise ValueError("spilled index ends inside a row")
        yield from _decode(self._buf, whole=True, raw_sha=raw_sha)

    def json_lines(self) -> Iterator[bytes]:
        """The rows as the trailer's JSON lines (``IndexEntry.to_json`` encoded compactly,
        key order kept, non-ASCII as is, names as their raw bytes), a chunk of rows at a time,
        each line ending in "\\n". Formatted in C when the extension is built."""
        parse = _json_chunk if _index_json is None else _index_json
        rest = b""
        for piece in self._pieces():
            data = rest + piece if rest else piece
            text, used = parse(data)
            yield text
            rest = data[used:]
        if rest:
            raise ValueError("packed index ends inside a row")

    def catalog_batches(self, backup: int, start: int = 0,
                        ) -> Iterator[tuple[list[tuple], list[tuple]]] | None:
        """The rows as the catalog's ``ebm_files`` parameters, a read chunk of rows at a time:
        (rows, their paths as 1-tuples), decoded in C (``_paxfast.index_rows``: a path is a
        str when it is UTF-8, else its bytes). None when the extension is not built: the
        catalog then builds them from :meth:`rows` (ebm/catalog.py, the reference).
        ``start``: the rows from that byte on (a row's start: ``handed_over`` or less, at
        a hand-over's end), those before are in the catalog already."""
        if _index_rows is None:
            return None
        return self._catalog_batches(backup, start)

    def _catalog_batches(self, backup: int, start: int = 0,
                         ) -> Iterator[tuple[list[tuple], list[tuple]]]:
        rest = b""
        for piece in self._pieces(start):
            data = rest + piece if rest else piece
            rows, paths, used = _index_rows(data, backup)
            if rows:
                yield rows, paths
            rest = data[used:]
        if rest:
            raise ValueError("packed index ends inside a row")

    def _pieces(self, start: int = 0) -> Iterator[bytes]:
        """The packed bytes from byte ``start`` on, spilled and held, a read chunk at a time
        (rows cut anywhere)."""
        if self._file is not None and start < self._spilled:
            self._file.seek(start)
            while chunk := self._file.read(_READ_CHUNK):
                yield chunk
        for pos in range(max(0, start - self._spilled), len(self._buf), _READ_CHUNK):
            yield bytes(self._buf[pos:pos + _READ_CHUNK])

    def close(self) -> None:
        """Drop the spilled rows (the file goes when closed)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _json_chunk(data: bytes) -> tuple[bytes, int]:
    """The complete rows at the start of ``data`` as JSON lines, and the bytes they took:
    the reference for the C ``index_json``."""
    lines: list[str] = []
    rows = _decode(data)
    while True:
        try:
            (path, kind, size, mtime, mode, uid, gid, sha, hoff, doff, deleted, link,
             torn) = next(rows)
        except StopIteration as stop:
            return "".join(lines).encode("utf-8", "surrogateescape"), stop.value
        line = (f'{{"path":{encode_basestring(path)},"kind":"{kind}","size":{size},'
                f'"mtime_ns":{mtime},"mode":{mode},"uid":{uid},"gid":{gid},'
                f'"header_offset":{hoff},"data_offset":{doff}')
        if sha is not None:
            line += f',"sha256":"{sha}"'
        if deleted:
            line += ',"deleted":true'
        if link:
            line += f',"linkname":{encode_basestring(link)}'
        lines.append(line + ("}\n" if not torn else ',"torn":true}\n'))


def _decode(buf: bytes | bytearray, *, whole: bool = False,
            raw_sha: bool = False) -> Generator[tuple, None, int]:
    """The complete rows at the start of ``buf`` as tuples in IndexEntry's field order (the
    sha256 as hex, or as bytes with ``raw_sha``); returns how many bytes they took."""
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
                sha = view[pos:pos + 32].hex() if not raw_sha else bytes(view[pos:pos + 32])
                pos += 32
            path = str(view[pos:pos + plen], "utf-8", "surrogateescape")
            pos += plen
            link = str(view[pos:pos + llen], "utf-8", "surrogateescape") if llen else ""
            pos += llen
            yield (path, KINDS[kind], fsize, mtime, mode, uid, gid, sha, hoff, doff,
                   bool(flags & _DELETED), link, bool(flags & _TORN))
        if whole and pos != end:
            raise ValueError("packed index ends inside a row")
        return pos
    finally:
        view.release()


def stage_rows(catalog: str, backup: int, chunk: bytes) -> int:
    """A sink's chunk of whole packed rows inserted into the catalog file ``catalog`` for
    ``backup``, in one transaction on a connection of its own, without the GIL (C:
    ``_paxfast.stage_rows``); the count of rows. Needs :func:`stageable`."""
    return _stage_rows(catalog, backup, chunk)  # type: ignore[misc]


def stageable() -> bool:
    """Whether :func:`stage_rows` can run: the C extension is built with SQLite, not turned
    off, and links the very SQLite the ``sqlite3`` module uses (one copy in the process: two
    would not see each other's file locks)."""
    global _one_sqlite
    if _stage_rows is None or _index_rows is None:
        return False
    if _one_sqlite is None:
        try:
            import _sqlite3
            import ctypes

            theirs = ctypes.cast(ctypes.CDLL(_sqlite3.__file__).sqlite3_libversion,
                                 ctypes.c_void_p).value
            _one_sqlite = theirs == _sqlite_symbol()  # type: ignore[misc]
        except (ImportError, OSError, AttributeError):
            _one_sqlite = False
    return _one_sqlite
