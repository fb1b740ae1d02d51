"""PaxReader: iterate ``(ArchiveEntry, EntryData)`` over a pax byte stream.

Reads what :class:`~tape_formats.archive.writer.PaxWriter` writes and, in general, what GNU
tar writes in ``--format=pax``/``ustar``/``gnu`` (long names via 'L'/'K', sparse 1.0). Deletion
records (``EBM.deleted`` in a global header) come out as ``ArchiveEntry(deleted=True)``.

Data is streamed: :class:`EntryData` hands out at most the entry's stored bytes through
``read``/``readinto``; whatever the consumer leaves unread is skipped when the iteration moves
on. When the caller passes the expected sha256 digests (from the trailer's file index, keyed
by the entry's header offset) every entry's data is hashed as it passes and a mismatch raises
:class:`ArchiveCorrupt` - at the latest when the iteration moves past the entry, so nothing
damaged is restored silently (a restore that wants to be sure writes to a temporary name and
renames after the entry's data is fully read, or checks ``EntryData.verified``).

With ``stream_digest=True`` the reader also recomputes the stream's member digest
(``stream_digest.py``) as it goes, from the same per-member sha256 it checks: ``ebm verify``
compares it with a version 2 trailer's, in one hash pass over the data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol, TypeVar

from . import pax
from .entry import (
    ArchiveCorrupt,
    ArchiveEntry,
    ArchiveError,
    IndexEntry,
    check_member_path,
    normalize_member_name,
)
from .stream_digest import StreamDigest

CHUNK = 1024 * 1024
T = TypeVar("T")

_KINDS = {
    pax.TYPE_FILE: "file",
    pax.TYPE_CONTIGUOUS: "file",
    pax.TYPE_HARDLINK: "hardlink",
    pax.TYPE_SYMLINK: "symlink",
    pax.TYPE_CHARDEV: "chardev",
    pax.TYPE_BLOCKDEV: "blockdev",
    pax.TYPE_DIR: "dir",
    pax.TYPE_FIFO: "fifo",
}


class ByteSource(Protocol):
    """``read`` returns bytes, or a memoryview of a buffer the source never writes to
    again (kept as it is, without a copy)."""

    def read(self, n: int, /) -> bytes | memoryview: ...


def _fsdecode(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


class _Input:
    """A small read buffer over the source so 512-byte header reads stay cheap."""

    def __init__(self, inp: ByteSource, offset: int, digest: StreamDigest | None) -> None:
        self._inp = inp
        self._buf: bytes | memoryview = b""
        self._pos = 0
        self.offset = offset
        self.digest = digest  # every byte handed out but file data goes into it

    def _fill(self, want: int) -> bool:
        chunk = self._inp.read(max(want, CHUNK))
        if not chunk:
            return False
        if not isinstance(chunk, bytes | memoryview):
            chunk = bytes(chunk)  # a bytearray the source may fill again
        rest = self._buf[self._pos :]
        self._buf = b"".join((rest, chunk)) if rest else chunk  # one copy, not three
        self._pos = 0
        return True

    def read_data(self, n: int) -> memoryview:
        """Up to ``n`` bytes of a file's data (fewer only at EOF or at the buffer's end)."""
        if self._pos >= len(self._buf):
            if not self._fill(n):
                return memoryview(b"")
        mv = memoryview(self._buf)[self._pos : self._pos + n]
        self._pos += len(mv)
        self.offset += len(mv)
        return mv

    def read_upto(self, n: int) -> memoryview:
        """:meth:`read_data` for the bytes around the data (headers, padding)."""
        mv = self.read_data(n)
        if self.digest is not None:
            self.digest.meta(mv)
        return mv

    def read_exact(self, n: int, what: str) -> bytes:
        parts = []
        got = 0
        while got < n:
            mv = self.read_upto(n - got)
            if not mv:
                raise ArchiveCorrupt(f"archive truncated inside {what} at offset {self.offset}")
            parts.append(bytes(mv))
            got += len(mv)
        return b"".join(parts)

    def buffered(self, want: int) -> tuple[bytes, int]:
        """The read buffer and the position of the next unread byte in it, with at least
        ``want`` bytes unread when the source still has them (fewer at its end)."""
        if len(self._buf) - self._pos < want:
            self._fill(want)
        return self._buf, self._pos

    def consumed(self, n: int) -> None:
        """``n`` buffered bytes were taken by someone else (PaxReader.take_members)."""
        self._pos += n
        self.offset += n

    def at_eof(self) -> bool:
        return self._pos >= len(self._buf) and not self._fill(pax.BLOCK)

    def skip(self, n: int, what: str) -> None:
        while n:
            mv = self.read_upto(min(n, CHUNK))
            if not mv:
                raise ArchiveCorrupt(f"archive truncated inside {what} at offset {self.offset}")
            n -= len(mv)


class EntryData:
    """The stored content bytes of one entry (sparse files: the data extents, concatenated)."""

    def __init__(self, src: _Input | None, size: int, padding: int, expected: str | None,
                 path: str, header_offset: int, data_offset: int,
                 digest: StreamDigest | None = None) -> None:
        self._src = src
        self.size = size
        self.remaining = size
        self._padding = padding
        self._expected = expected
        self._digest = digest  # the stream digest this member's sha256 goes into
        self._hash = hashlib.sha256() if expected is not None or digest is not None else None
        self.path = path
        self.header_offset = header_offset
        self.data_offset = data_offset
        self.verified = expected is None
        self._done = size == 0 and padding == 0
        if size == 0:
            self._finish_hash()

    def _finish_hash(self) -> None:
        if self._hash is None:
            return
        raw = self._hash.digest()
        if self._digest is not None:
            self._digest.member(raw)
        if not self.verified:
            if raw.hex() != self._expected:
                raise ArchiveCorrupt(f"sha256 mismatch for {self.path!r}: archive data is damaged")
            self.verified = True

    def _take(self, n: int) -> memoryview:
        if self.remaining <= 0 or self._src is None:
            return memoryview(b"")
        mv = self._src.read_data(min(n, self.remaining))
        if not mv:
            raise ArchiveCorrupt(f"archive truncated inside data of {self.path!r}")
        self.remaining -= len(mv)
        if self._hash is not None:
            self._hash.update(mv)
        if self.remaining == 0:
            self._finish_hash()
        return mv

    def read_view(self, n: int) -> memoryview:
        """Up to ``n`` bytes as a view of the reader's own buffer, without a copy (empty at
        the end): for a consumer that only passes the bytes on, such as the pax writer
        re-archiving pg_basebackup's tar member by member."""
        return self._take(n)

    def readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        n = 0
        while n < len(view) and self.remaining:
            mv = self._take(len(view) - n)
            view[n : n + len(mv)] = mv
            n += len(mv)
        return n

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.remaining
        parts = []
        while n > 0 and self.remaining:
            mv = self._take(n)
            parts.append(bytes(mv))
            n -= len(mv)
        return b"".join(parts)

    def _drain(self) -> None:
        """Skip what the consumer left (hashing it if verifying) and the block padding."""
        while self.remaining:
            self._take(CHUNK)
        if self._src is not None and self._padding:
            self._src.skip(self._padding, f"padding of {self.path!r}")
            self._padding = 0


class PaxReader:
    """Iterate a pax stream: ``for entry, data in PaxReader(stream): ...``.

    ``start_offset``: stream offset of the first byte the source yields (a single-file restore
    that LOCATEd to an entry's header passes that entry's ``header_offset``).
    ``expected``: sha256 digests to verify, either ``{header_offset: hex}`` or an iterable of
    :class:`IndexEntry` (the trailer's index). ``require_end``: a stream that ends without the
    two zero blocks raises :class:`ArchiveCorrupt` (a torn backup is never taken as complete).
    ``stream_digest``: keep :attr:`digest`, the member digest of the bytes read (meaningful
    for a whole stream read from its start, once the iteration ended).
    """

    def __init__(self, inp: ByteSource, *, start_offset: int = 0,
                 expected: Mapping[int, str] | Iterable[IndexEntry] | None = None,
                 require_end: bool = True, stream_digest: bool = False) -> None:
        self.digest = StreamDigest() if stream_digest else None
        self._in = _Input(inp, start_offset, self.digest)
        if expected is None or isinstance(expected, Mapping):
            self._expected: Mapping[int, str] = expected or {}
        else:
            self._expected = {
                e.header_offset: e.sha256 for e in expected if e.sha256 and e.header_offset >= 0
            }
        self._require_end = require_end
        self.ended = False  # True once the end-of-archive marker was read
        self._current: EntryData | None = None  # the entry last handed out, until drained

    @property
    def offset(self) -> int:
        return self._in.offset

    def take_members(self, take: Callable[[bytes, int, int], tuple[int, T]],
                     want: int = 64 << 10) -> T:
        """Let ``take`` consume whole members straight from the read buffer, between two
        steps of the iteration: ``take(buf, pos, offset)`` gets the buffer, the position of
        the next member's header in it and that header's stream offset, and returns the
        bytes it used (whole members only) and its answer, which this returns. Why: a
        restore of many small files creates them in one C call per run
        (``_paxfast.extract_files``) instead of one entry object each. The entry last
        handed out is drained first; the buffer is refilled when less than ``want`` bytes
        are left; the iteration then goes on after what ``take`` used. Not with ``stream_digest`` (those bytes would miss the digest)."""
        if self.digest is not None:
            raise ArchiveError("take_members cannot keep the stream digest")
        if self._current is not None:
            self._current._drain()
        buf, pos = self._in.buffered(want)
        used, answer = take(buf, pos, self._in.offset)
        self._in.consumed(used)
        return answer

    def __iter__(self) -> Iterator[tuple[ArchiveEntry, EntryData]]:
        src = self._in
        pending: dict[bytes, bytes] = {}
        longname: bytes | None = None
        longlink: bytes | None = None
        header_offset: int | None = None
        while True:
            if header_offset is None:
                header_offset = src.offset
            if src.at_eof():
                if self._require_end:
                    raise ArchiveCorrupt(
                        f"archive ends at offset {src.offset} without the end-of-archive marker"
                    )
                return
            block = src.read_exact(pax.BLOCK, "a header")
            if block == pax.ZERO_BLOCK:
                self.ended = True
                if not src.at_eof():
                    src.read_upto(pax.BLOCK)  # the second zero block, when present
                return
            h = pax.parse_ustar(block)
            tf = h.typeflag
            if tf in (pax.TYPE_PAX, pax.TYPE_GLOBAL, pax.TYPE_GNU_LONGNAME, pax.TYPE_GNU_LONGLINK):
                body = src.read_exact(h.size, "an extended header")
                src.skip(pax.padding(h.size), "extended header padding")
                if tf == pax.TYPE_PAX:
                    pending.update(pax.parse_pax_records(body))
                elif tf == pax.TYPE_GLOBAL:
                    yield from self._global(body, header_offset)
                    header_offset = None
                elif tf == pax.TYPE_GNU_LONGNAME:
                    longname = body.split(b"\x00", 1)[0]
                else:
                    longlink = body.split(b"\x00", 1)[0]
                continue
            entry, stored = self._make_entry(h, pending, longname, longlink)
            data_offset = src.offset
            if entry.sparse_map is not None:
                extents, consumed = pax.decode_sparse_map_numbers(
                    lambda: src.read_exact(pax.BLOCK, "a sparse map")
                )
                stored -= consumed
                if stored < 0:
                    raise ArchiveCorrupt(f"sparse map of {entry.path!r} exceeds its size")
                prev_end = 0
                for o, n in extents:
                    if o < prev_end or n < 0 or o + n > entry.size:
                        raise ArchiveCorrupt(f"sparse map of {entry.path!r} is inconsistent")
                    prev_end = o + n
                entry.sparse_map = [(o, n) for o, n in extents if n > 0]
                if sum(n for _, n in entry.sparse_map) != stored:
                    raise ArchiveCorrupt(f"sparse map of {entry.path!r} disagrees with its size")
            total_stored = stored + (src.offset - data_offset)
            padding = pax.padding(total_stored)
            data = EntryData(src, stored, padding, self._expected.get(header_offset),
                             entry.path, header_offset, data_offset,
                             self.digest if entry.kind == "file" else None)
            self._current = data
            yield entry, data
            data._drain()
            self._current = None
            pending, longname, longlink, header_offset = {}, None, None, None

    def _global(self, body: bytes, offset: int) -> Iterator[tuple[ArchiveEntry, EntryData]]:
        for key, value in pax.parse_pax_records(body):
            if key != b"EBM.deleted":
                continue
            try:
                paths = json.loads(value)
            except ValueError:
                raise ArchiveCorrupt("malformed EBM.deleted record") from None
            for p in paths:
                path = check_member_path(normalize_member_name(p))
                yield ArchiveEntry(path=path, kind="file", deleted=True), EntryData(
                    None, 0, 0, None, path, offset, offset
                )

    @staticmethod
    def _make_entry(h: pax.UstarHeader, rec: dict[bytes, bytes], longname: bytes | None,
                    longlink: bytes | None) -> tuple[ArchiveEntry, int]:
        kind = _KINDS.get(h.typeflag)
        if kind is None:
            raise ArchiveError(f"unsupported tar member type {h.typeflag!r} for {h.name!r}")
        sparse = rec.get(b"GNU.sparse.major") == b"1"
        if b"GNU.sparse.map" in rec or (b"GNU.sparse.size" in rec and not sparse):
            raise ArchiveError("GNU sparse format 0.x is not supported (use 1.0)")
        if sparse:
            raw_name = rec.get(b"GNU.sparse.name", h.name)
        else:
            raw_name = rec.get(b"path", longname if longname is not None else h.name)
        path = check_member_path(normalize_member_name(_fsdecode(raw_name)))
        raw_link = rec.get(b"linkpath", longlink if longlink is not None else h.linkname)

        def num(key: bytes, default: int) -> int:
            if key in rec:
                try:
                    value = int(rec[key])
                except ValueError:
                    raise ArchiveCorrupt(f"bad pax {key.decode()} value") from None
                if value < 0:
                    raise ArchiveCorrupt(f"negative pax {key.decode()} value")
                return value
            return default

        stored = num(b"size", h.size) if kind == "file" else 0
        entry = ArchiveEntry(
            path=path,
            kind=kind,  # type: ignore[arg-type]
            size=stored,
            mode=h.mode & 0o7777,
            uid=num(b"uid", h.uid),
            gid=num(b"gid", h.gid),
            uname=_fsdecode(rec.get(b"uname", h.uname)),
            gname=_fsdecode(rec.get(b"gname", h.gname)),
            mtime_ns=pax.parse_pax_time(rec[b"mtime"]) if b"mtime" in rec else h.mtime * pax.NS,
            atime_ns=pax.parse_pax_time(rec[b"atime"]) if b"atime" in rec else None,
            ctime_ns=pax.parse_pax_time(rec[b"ctime"]) if b"ctime" in rec else None,
            devmajor=h.devmajor,
            devminor=h.devminor,
        )
        if kind == "symlink":
            entry.linkname = _fsdecode(raw_link)
        elif kind == "hardlink":
            entry.linkname = check_member_path(normalize_member_name(_fsdecode(raw_link)))
        for key, value in rec.items():
            if key.startswith(b"SCHILY.xattr."):
                entry.xattrs[_fsdecode(key[13:])] = value
        if sparse:
            entry.size = num(b"GNU.sparse.realsize", 0)
            entry.sparse_map = []  # filled from the map block by the caller
        return entry, stored
