"""PaxWriter: turns ArchiveEntry objects plus their data into a POSIX pax byte stream.

What it writes, per entry (GNU tar lists and extracts all of it):

* a pax 'x' extended header when anything does not fit plain ustar: long or non-ASCII
  ``path``/``linkpath``, big ``size``/``uid``/``gid``, ``uname``/``gname``, nanosecond
  ``mtime``/``atime``/``ctime``, ``SCHILY.xattr.<name>`` for extended attributes (raw bytes),
  and for sparse files the GNU 1.0 keywords (``GNU.sparse.major=1``, ``minor=0``, ``name``,
  ``realsize``) with the member stored as ``<dir>/GNUSparseFile.0/<name>`` and its data
  prefixed by the decimal sparse map block; holes are *not* stored;
* the ustar header (typeflag '0' file, '1' hard link, '2' symlink, '3'/'4' devices, '5' dir,
  '6' fifo);
* the data, streamed in 1 MiB chunks and padded to 512 bytes.

Names that are not valid UTF-8 (Linux names are bytes) are written as their raw bytes with a
``hdrcharset=BINARY`` record first in that entry's extended header, as POSIX asks (without it
the ``path``/``linkpath``/``uname``/``gname`` values must be UTF-8). GNU tar 1.34 extracts
such names byte-exact, exit status 0, but says "Ignoring unknown extended header keyword
'hdrcharset'" once per such entry (``--warning=no-unknown-keyword`` silences it); Python's
tarfile and libarchive honour the record.

Deletion markers (incremental backups) are written as a pax *global* header ('g') with one
record ``EBM.deleted=<JSON list of paths>``. GNU tar silently ignores unknown keywords in
global headers (it would warn for them in 'x' headers) and creates nothing for them, so a
plain ``tar -x`` of an incremental just skips deletions, while :class:`PaxReader` yields one
``ArchiveEntry(deleted=True)`` per path. Per-file sha256 digests are *not* written into the
stream (they are only known after the data): they go into the trailer's file index.

``close()`` writes the two zero blocks that end a tar archive. The writer keeps the stream's
member digest (``stream_digest.py``: every header and padding byte plus each member's data
sha256, so no content byte is hashed twice): ``stream_digest()`` and ``offset`` feed the
backup trailer.

The headers of a plain regular file (ASCII name that fits, ids and times in the ustar ranges,
no xattrs, not sparse: most files of a backup) are built by the C extension
``tape_formats.archive._paxfast`` when it is built (``setup.py``) and ``VTL_NO_FASTPATH`` is
not set; the Python code below stays the reference, and the tests compare the two byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from functools import lru_cache
from typing import BinaryIO, Protocol

from . import pax
from .entry import ArchiveEntry, ArchiveError, EntryLocation, check_member_path
from .stream_digest import StreamDigest, StreamDigestBehind

try:
    from . import _paxfast  # type: ignore[attr-defined]
except ImportError:  # not built: the Python path serves
    _paxfast = None
if os.environ.get("VTL_NO_FASTPATH"):
    _paxfast = None

CHUNK = 1024 * 1024
_NS = 1_000_000_000
_MAX_SIZE = 8**11  # what a 12-byte octal field holds
_MAX_TIME = 8**11
_MAX_ID = 8**7  # what an 8-byte octal field holds

_TYPEFLAGS = {
    "file": pax.TYPE_FILE,
    "dir": pax.TYPE_DIR,
    "symlink": pax.TYPE_SYMLINK,
    "hardlink": pax.TYPE_HARDLINK,
    "chardev": pax.TYPE_CHARDEV,
    "blockdev": pax.TYPE_BLOCKDEV,
    "fifo": pax.TYPE_FIFO,
}


@lru_cache(maxsize=512)
def _ext_ustar(size: int, typeflag: bytes) -> bytes:
    name = b"././@PaxHeader" if typeflag == pax.TYPE_PAX else b"././@GlobalHeader"
    return pax.build_ustar(name=name, mode=0o644, uid=0, gid=0, size=size, mtime=0,
                           typeflag=typeflag)


class ByteSink(Protocol):
    def write(self, b: bytes | memoryview, /) -> object: ...


def _is_utf8(b: bytes) -> bool:
    if b.isascii():
        return True
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def fsencode(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


class PaxWriter:
    """Write a pax stream to ``out`` (anything with ``write``; ``tell`` is not required).

    Offsets are counted from ``start_offset`` (default 0, or ``out.tell()`` if ``out`` has a
    working ``tell``), so the EntryLocations are stream offsets the data mover can map to tape
    blocks.
    """

    def __init__(self, out: ByteSink, *, start_offset: int | None = None,
                 digest_behind: bool = False) -> None:
        self._out = out
        if start_offset is None:
            try:
                start_offset = out.tell()  # type: ignore[attr-defined]
            except (AttributeError, OSError, ValueError):
                start_offset = 0
        self._offset = start_offset
        self._start = start_offset
        # the trailer's stream digest, from what is hashed anyway; ``digest_behind``: hashed
        # on a worker thread (a backup's big streams), not on the writing one
        self._digest = StreamDigestBehind() if digest_behind else StreamDigest()
        self._closed = False
        # Where a translator's PackedIndex may hand its finished rows as it grows (the
        # EBM's catalog stager, ebm.catalog.IndexStager); None: nobody takes them early.
        self.index_sink: Callable[[bytes], object] | None = None

    # --- raw output -------------------------------------------------------------------
    def _emit(self, b: bytes | memoryview) -> None:
        """Stream bytes that are not file data (headers, padding): into the stream digest."""
        if not b:
            return
        self._out.write(b)
        self._digest.meta(b)
        self._offset += len(b)

    def _emit_data(self, b: bytes | memoryview) -> None:
        """File data: its member's sha256 stands for it in the stream digest."""
        self._out.write(b)
        self._offset += len(b)

    def tell(self) -> int:
        return self._offset

    @property
    def offset(self) -> int:
        """Stream offset of the next byte (bytes written so far + start_offset)."""
        return self._offset

    @property
    def bytes_written(self) -> int:
        return self._offset - self._start

    def stream_digest(self) -> str:
        """Hex member digest (``stream_digest.py``) of the stream so far; after ``close``, of
        the whole stream: what a version 2 trailer records."""
        return self._digest.hexdigest()

    # --- headers ----------------------------------------------------------------------
    @staticmethod
    def _pax_header(name: bytes, records: list[bytes], mtime: int, typeflag: bytes) -> bytes:
        """An extended header block + its records. The header's own ustar block depends only
        on the body length (constant name and time, as Python's tarfile and star write them),
        so it is cached: one 512-byte build per entry instead of two."""
        body = b"".join(records)
        return b"".join((_ext_ustar(len(body), typeflag), body, bytes(pax.padding(len(body)))))

    def add_deletions(self, paths: list[str]) -> int:
        """Record deleted paths (incrementals) as one pax global header; returns its offset."""
        if self._closed:
            raise ArchiveError("archive writer is closed")
        for p in paths:
            check_member_path(p)
        offset = self._offset
        if paths:
            value = json.dumps(paths, ensure_ascii=True).encode()
            self._emit(self._pax_header(b"", [pax.pax_record(b"EBM.deleted", value)], 0, pax.TYPE_GLOBAL))
        return offset

    def add_prebuilt(self, members: bytes | memoryview, digest_feed: bytes | memoryview) -> None:
        """Whole file members (headers, data, padding) built elsewhere at :attr:`offset` on:
        the filesystem translator's run of small files (``_paxfast.pack_files``).
        ``digest_feed`` is what the stream digest takes for them (``stream_digest.py``): the
        same bytes with each member's data replaced by its 32-byte sha256. Both may be views
        of buffers the caller refills next: ``out.write`` copies (as for file data)."""
        if self._closed:
            raise ArchiveError("archive writer is closed")
        if members:
            self._out.write(members)
            self._offset += len(members)
            self._digest.meta(digest_feed)

    def add(self, entry: ArchiveEntry, data: BinaryIO | bytes | memoryview | None = None) -> EntryLocation:
        """Append one entry. ``data`` gives ``entry.data_size`` bytes for files (a file-like
        with ``readinto`` or ``read``, or a bytes-like); it is ignored for other kinds.

        A data source that ends early is padded with zeros and reported as ``short``; extra
        bytes are not read.
        """
        if self._closed:
            raise ArchiveError("archive writer is closed")
        if entry.deleted:
            self.add_deletions([entry.path])
            return EntryLocation(self._offset, self._offset, 0, None)
        path = entry.path
        check_member_path(path)
        kind = entry.kind
        typeflag = _TYPEFLAGS.get(kind)
        if typeflag is None:
            raise ArchiveError(f"unknown entry kind {kind!r} for {path!r}")
        header_offset = self._offset
        path_b = b"." if path == "." else path.encode("utf-8", "surrogateescape")
        if (kind == "file" and _paxfast is not None and entry.sparse_map is None
                and not entry.xattrs and entry.ctime_ns is None):
            head_b = _paxfast.file_headers(
                path_b, entry.mode, entry.uid, entry.gid, entry.size, entry.mtime_ns,
                entry.atime_ns, entry.uname.encode("utf-8", "surrogateescape"),
                entry.gname.encode("utf-8", "surrogateescape"))
            if head_b is not None:
                return self._add_data(head_b, header_offset, header_offset + len(head_b),
                                      entry.size, entry.data_size, data)
        records: list[bytes] = []
        record = pax.pax_record

        sparse = kind == "file" and entry.sparse_map is not None
        if kind == "dir":
            tar_name = b"./" if path == "." else path_b + b"/"
        else:
            tar_name = path_b
        if sparse:
            head_dir, _, base = path_b.rpartition(b"/")
            tar_name = (head_dir + b"/" if head_dir else b"") + b"GNUSparseFile.0/" + base
            records += [
                record(b"GNU.sparse.major", b"1"),
                record(b"GNU.sparse.minor", b"0"),
                record(b"GNU.sparse.name", path_b),
                record(b"GNU.sparse.realsize", b"%d" % entry.size),
            ]
        elif (len(tar_name) > 100 and pax.split_ustar_name(tar_name) is None) or not tar_name.isascii():
            records.append(record(b"path", tar_name))

        if kind == "symlink" or kind == "hardlink":
            link_b = entry.linkname.encode("utf-8", "surrogateescape")
            if len(link_b) > 100 or not link_b.isascii():
                records.append(record(b"linkpath", link_b))
        else:
            link_b = b""

        if sparse:
            map_block = pax.encode_sparse_map(self._sparse_extents(entry))
            stored_size = len(map_block) + entry.data_size
        else:
            map_block = b""
            stored_size = entry.size if kind == "file" else 0
        if stored_size >= _MAX_SIZE:
            records.append(record(b"size", b"%d" % stored_size))
        uid, gid = entry.uid, entry.gid
        if not 0 <= uid < _MAX_ID:
            records.append(record(b"uid", b"%d" % uid))
        if not 0 <= gid < _MAX_ID:
            records.append(record(b"gid", b"%d" % gid))
        uname_b = entry.uname.encode("utf-8", "surrogateescape")
        gname_b = entry.gname.encode("utf-8", "surrogateescape")
        if len(uname_b) > 32 or not uname_b.isascii():
            records.append(record(b"uname", uname_b))
        if len(gname_b) > 32 or not gname_b.isascii():
            records.append(record(b"gname", gname_b))
        if records and not (path_b + link_b + uname_b + gname_b).isascii() and not all(
                _is_utf8(b) for b in (path_b, link_b, uname_b, gname_b)):
            # POSIX: path/linkpath/uname/gname values are UTF-8 unless this record says they
            # are raw bytes (a Linux name that is not UTF-8); GNU tar and Python read it.
            records.insert(0, record(b"hdrcharset", b"BINARY"))
        mtime_ns = entry.mtime_ns
        mtime_s = mtime_ns // _NS
        if mtime_ns % _NS or not 0 <= mtime_s < _MAX_TIME:
            records.append(record(b"mtime", pax.format_pax_time(mtime_ns)))
        if entry.atime_ns is not None:
            records.append(record(b"atime", pax.format_pax_time(entry.atime_ns)))
        if entry.ctime_ns is not None:
            records.append(record(b"ctime", pax.format_pax_time(entry.ctime_ns)))
        xattrs = entry.xattrs
        if xattrs:
            for name in sorted(xattrs):
                records.append(record(b"SCHILY.xattr." + fsencode(name), bytes(xattrs[name])))
        ustar = pax.build_ustar(
            name=tar_name, mode=entry.mode, uid=uid, gid=gid,
            size=stored_size, mtime=mtime_s, typeflag=typeflag,
            linkname=link_b[:100], uname=uname_b[:32], gname=gname_b[:32],
            devmajor=entry.devmajor, devminor=entry.devminor,
        )
        if records:
            body = b"".join(records)
            head = [_ext_ustar(len(body), pax.TYPE_PAX), body, bytes(-len(body) % 512), ustar]
            data_offset = header_offset + 1024 + len(body) + (-len(body) % 512)
        else:
            head = [ustar]
            data_offset = header_offset + 512
        if kind != "file":
            self._emit(b"".join(head))
            return EntryLocation(header_offset, data_offset, 0, None, end_offset=self._offset)
        head.append(map_block)
        return self._add_data(b"".join(head), header_offset, data_offset, stored_size,
                              entry.data_size, data)

    def _add_data(self, head: bytes, header_offset: int, data_offset: int, stored_size: int,
                  size: int, data) -> EntryLocation:
        """A file's headers (``head``), then its ``size`` data bytes and the padding."""
        if isinstance(data, (bytes, bytearray, memoryview)) and len(data) == size and size <= CHUNK:
            # Small file: one write for headers, data and padding.
            digest = hashlib.sha256(data)
            pad = bytes(-stored_size % 512)
            self._out.write(b"".join((head, data, pad)))
            self._offset += len(head) + size + len(pad)
            self._digest.meta(head)
            self._digest.member(digest.digest())
            self._digest.meta(pad)
            return EntryLocation(header_offset, data_offset, size, digest.hexdigest(), False,
                                 end_offset=self._offset)
        self._emit(head)
        digest = hashlib.sha256()
        written, short = self._copy_data(data, size, digest)  # written == data_size
        self._digest.member(digest.digest())
        self._emit(bytes(pax.padding(stored_size)))
        return EntryLocation(
            header_offset, data_offset, written, digest.hexdigest(), short, end_offset=self._offset
        )

    @staticmethod
    def _sparse_extents(entry: ArchiveEntry) -> list[tuple[int, int]]:
        extents = list(entry.sparse_map or [])
        # GNU tar expects a final (realsize, 0) extent when the file ends in a hole.
        end = extents[-1][0] + extents[-1][1] if extents else 0
        if end < entry.size or not extents:
            extents.append((entry.size, 0))
        return extents

    def _copy_data(self, data, size: int, digest) -> tuple[int, bool]:
        """Copy exactly ``size`` bytes from ``data``; pad with zeros if it ends early."""
        remaining = size
        if isinstance(data, (bytes, bytearray, memoryview)):
            mv = memoryview(data)[:size]
            self._emit_data(mv)
            digest.update(mv)
            remaining -= len(mv)
        elif (read_view := getattr(data, "read_view", None)) is not None:
            while remaining and (mv := read_view(min(CHUNK, remaining))):  # no copy in between
                self._emit_data(mv)
                digest.update(mv)
                remaining -= len(mv)
        elif data is not None and remaining:
            buf = bytearray(min(CHUNK, remaining))
            view = memoryview(buf)
            readinto = getattr(data, "readinto", None)
            while remaining:
                want = min(len(buf), remaining)
                if readinto is not None:
                    n = readinto(view[:want])
                else:
                    chunk = data.read(want)
                    n = len(chunk)
                    view[:n] = chunk
                if not n:
                    break
                self._emit_data(view[:n])
                digest.update(view[:n])
                remaining -= n
        short = remaining > 0
        while remaining:
            zeros = bytes(min(CHUNK, remaining))
            self._emit_data(zeros)  # keep the stream valid; the caller marks the copy torn
            digest.update(zeros)
            remaining -= len(zeros)
        return size, short

    def close(self) -> None:
        """Write the end-of-archive marker (two zero blocks). Idempotent."""
        if not self._closed:
            self._emit(pax.ZERO_BLOCK * 2)
            self._closed = True

    def __enter__(self) -> PaxWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
