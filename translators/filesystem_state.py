"""The filesystem translator's per-path records as sorted streams, never as a dict in memory.

Why: a tree of millions of files must be backed up in flat memory. Two record streams replace
what used to be held per path:

- the incremental **state** (``[inode, size, mtime_ns, ctime_ns, st_mode]`` per path, see
  :mod:`translators.filesystem`) is written as packed rows through zstd while the backup
  writes its entries, in *walk order*, and the next incremental reads it back row by row,
  merged with its own walk (both sorted the same way, so one pass finds what changed and what
  is gone);
- the **scan spool**: the walk's entries (stat fields and what the merge decided) go to an
  unlinked temporary file, which the writing pass then reads back in order.

Walk order is pre-order with each directory's names sorted: the order of the paths' component
lists, which :func:`walk_key` turns into one string comparison ("/" becomes NUL, which sorts
below every character a name can hold).

State blob: ``STATE_MAGIC`` then one zstd frame of rows ``<QqqqII`` (inode, size, mtime_ns,
ctime_ns, st_mode, path length) each followed by the path as UTF-8 (``surrogateescape``),
handed to the manager as a temporary file, which it stores as is and hands back as a file
(``ebm.manager.encode_state``, ``ebm.manager.load_state``). The JSON state of format 1 (``{"format": "ebm-filesystem-state/1", "entries": {path: key}}``) is still read.
"""

from __future__ import annotations

import os
import struct
import tempfile
import threading
from collections.abc import Iterator
from typing import IO, Any

import zstandard

STATE_MAGIC = b"EBMFS2\0"  # not the zstd magic: stored as is, handed back as is
STATE_FORMAT_V1 = "ebm-filesystem-state/1"
STATE_ROW = struct.Struct("<QqqqII")
READ_CHUNK = 256 * 1024

StateKey = list[int]  # [inode, size, mtime_ns, ctime_ns, st_mode]


class BadState(ValueError):
    """Not a state this translator wrote."""


def walk_key(rel: str) -> str:
    """The sort key of a path in walk order (the root "." first)."""
    return "" if rel == "." else rel.replace("/", "\0")


def _encode_path(rel: str) -> bytes:
    return rel.encode("utf-8", "surrogateescape")


def iter_packed(stream: IO[bytes], row: struct.Struct) -> Iterator[tuple[tuple, str]]:
    """Rows ``row`` (whose last field is the path length), each followed by its path, read
    from ``stream`` a chunk at a time: yields (fields, path)."""
    buf = b""
    pos = 0
    size = row.size
    unpack = row.unpack_from
    while True:
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            if pos != len(buf):
                raise BadState("record stream ends inside a row")
            return
        buf = buf[pos:] + chunk if pos < len(buf) else chunk
        pos = 0
        end = len(buf)
        while pos + size <= end:
            fields = unpack(buf, pos)
            plen = fields[-1]
            stop = pos + size + plen
            if stop > end:
                break
            yield fields, buf[pos + size:stop].decode("utf-8", "surrogateescape")
            pos = stop


class StateWriter:
    """The new state, row by row in walk order, compressed into an unlinked temporary file as
    it goes (a state of millions of paths is tens of megabytes: never held whole)."""

    def __init__(self) -> None:
        self._comp = zstandard.ZstdCompressor(level=3).compressobj()
        self._file = tempfile.TemporaryFile(prefix="ebm-state-")
        self._file.write(STATE_MAGIC)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.rows = 0

    def add(self, rel: str, key: StateKey) -> None:
        path = _encode_path(rel)
        self._pending.append(STATE_ROW.pack(key[0], key[1], key[2], key[3], key[4], len(path)))
        self._pending.append(path)
        self._pending_bytes += STATE_ROW.size + len(path)
        self.rows += 1
        if self._pending_bytes >= READ_CHUNK:
            self._flush()

    def add_packed(self, rows: bytes, count: int) -> None:
        """``count`` rows already packed as :meth:`add` packs them (``_paxfast.pack_files``)."""
        if rows:
            self._pending.append(rows)
            self._pending_bytes += len(rows)
            self.rows += count
            if self._pending_bytes >= READ_CHUNK:
                self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._file.write(self._comp.compress(b"".join(self._pending)))
            self._pending.clear()
            self._pending_bytes = 0

    def finish(self) -> IO[bytes]:
        """The state blob as an open file at offset 0 (closing it deletes it)."""
        self._flush()
        self._file.write(self._comp.flush())
        self._file.seek(0)
        return self._file


def read_state(state: Any) -> Iterator[tuple[str, StateKey]]:
    """(path, key) rows of a parent state in walk order, streamed (format 2, as bytes or as a
    binary file read from its start) or sorted from the JSON dict of format 1.
    :class:`BadState` if it is neither."""
    if hasattr(state, "read"):
        state.seek(0)
        if state.read(len(STATE_MAGIC)) == STATE_MAGIC:
            return _read_v2(state)
    elif isinstance(state, bytes | bytearray) and state.startswith(STATE_MAGIC):
        return _read_v2(memoryview(state)[len(STATE_MAGIC):])
    elif isinstance(state, dict) and state.get("format") == STATE_FORMAT_V1:
        entries = state["entries"]
        return ((p, entries[p]) for p in sorted(entries, key=walk_key))
    raise BadState("parent state is not a filesystem translator state")


def _read_v2(blob: memoryview | IO[bytes]) -> Iterator[tuple[str, StateKey]]:
    reader = zstandard.ZstdDecompressor().stream_reader(blob, closefd=False)
    try:
        for fields, path in iter_packed(reader, STATE_ROW):
            yield path, list(fields[:5])
    except zstandard.ZstdError as exc:
        raise BadState(f"damaged filesystem translator state: {exc}") from None
    finally:
        reader.close()


def state_dict(state: Any) -> dict[str, StateKey]:
    """The whole state as {path: key}: for tests and tools, not for the backup path."""
    return dict(read_state(state))


# ---------------------------------------------------------------------- scan spool
# flags, mode, ino, dev, nlink, uid, gid, size, atime_ns, mtime_ns, ctime_ns, rdev,
# blocks, prev_mode, path length
SCAN_ROW = struct.Struct("<BIQQQIIqqqqQqII")
CHANGED, IN_PREV, KEPT = 1, 2, 4  # flags: back it up; the parent had it; carry parent's key


class ScanRecord:
    """One spooled scan entry; the ``st_*`` names let it stand in for an ``os.stat_result``."""

    __slots__ = ("flags", "st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid",
                 "st_size", "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_rdev",
                 "st_blocks", "prev_mode", "rel")

    def __init__(self, fields: tuple, rel: str) -> None:
        (self.flags, self.st_mode, self.st_ino, self.st_dev, self.st_nlink, self.st_uid,
         self.st_gid, self.st_size, self.st_atime_ns, self.st_mtime_ns, self.st_ctime_ns,
         self.st_rdev, self.st_blocks, self.prev_mode, _) = fields
        self.rel = rel


def scan_row(rel: str, st: Any, flags: int, prev_mode: int = 0) -> bytes:
    """One spool row (:data:`SCAN_ROW`, then the path) as :meth:`ScanSpool.add` writes it."""
    path = _encode_path(rel)
    return SCAN_ROW.pack(
        flags, st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid,
        st.st_size, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, st.st_rdev,
        st.st_blocks, prev_mode, len(path)) + path


class ScanSpool:
    """The walk's entries in an unlinked temporary file: written once, then read in order."""

    cancelled = False  # (LiveSpool's: a reader that stopped reading)

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="ebm-scan-")
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def add(self, rel: str, st: Any, flags: int, prev_mode: int = 0) -> None:
        self.add_packed(scan_row(rel, st, flags, prev_mode))

    def add_packed(self, rows: bytes) -> None:
        """Rows already packed as :meth:`add` packs them (``_paxfast.scan_dir``)."""
        if rows:
            self._pending.append(rows)
            self._pending_bytes += len(rows)
            if self._pending_bytes >= READ_CHUNK:
                self._flush()

    def clear(self) -> None:
        """Forget every row spooled so far (a walk that starts over)."""
        self._pending.clear()
        self._pending_bytes = 0
        self._file.seek(0)
        self._file.truncate()

    def add_kept(self, rel: str, key: StateKey) -> None:
        """A parent path under a directory that could not be listed: its key carries over."""
        self.add(rel, _KeptStat(key), KEPT, key[4])

    def _flush(self) -> None:
        self._file.write(b"".join(self._pending))
        self._pending.clear()
        self._pending_bytes = 0

    def __iter__(self) -> Iterator[ScanRecord]:
        self._flush()
        self._file.seek(0)
        for fields, rel in iter_packed(self._file, SCAN_ROW):
            yield ScanRecord(fields, rel)

    def chunks(self) -> Iterator[bytes]:
        """The spooled rows as raw bytes, a read chunk at a time (rows cut anywhere): for a
        consumer that parses them itself (``_paxfast.pack_files``, :func:`record_at`)."""
        self._flush()
        self._file.seek(0)
        while chunk := self._file.read(READ_CHUNK):
            yield chunk

    def close(self) -> None:
        self._file.close()


def record_at(data: bytes, pos: int) -> tuple[ScanRecord, int] | None:
    """The spooled row at ``pos`` of raw spool bytes and where the next one starts; None if
    the row is not complete there."""
    if pos + SCAN_ROW.size > len(data):
        return None
    fields = SCAN_ROW.unpack_from(data, pos)
    stop = pos + SCAN_ROW.size + fields[-1]
    if stop > len(data):
        return None
    return ScanRecord(fields, data[pos + SCAN_ROW.size:stop].decode("utf-8", "surrogateescape")), stop


class _KeptStat:
    """The stat fields a kept parent row is spooled with (only the key's five matter)."""

    def __init__(self, key: StateKey) -> None:
        self.st_ino, self.st_size, self.st_mtime_ns, self.st_ctime_ns, self.st_mode = key
        self.st_dev = self.st_nlink = self.st_uid = self.st_gid = self.st_atime_ns = 0
        self.st_rdev = self.st_blocks = 0


class LiveSpool(ScanSpool):
    """A :class:`ScanSpool` that one thread writes while another reads it: the baseline's
    scan runs beside the writing pass instead of before it. Rows go to an unlinked temporary
    file (memory stays flat however far the scan runs ahead); :meth:`chunks` yields them as
    they are written and ends when the writer calls :meth:`finish` (raising the writer's
    error, if any); :meth:`cancel` tells the writer (``cancelled``) that nobody reads on."""

    def __init__(self) -> None:
        super().__init__()
        self._fd = self._file.fileno()  # pwrite and pread at offsets: no shared file position
        self._end = 0  # bytes written and visible to the reader
        self._done = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self.cancelled = False

    def _flush(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        done = 0
        while done < len(data):
            done += os.pwrite(self._fd, memoryview(data)[done:], self._end + done)
        with self._cond:
            self._end += len(data)
            self._cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        try:
            if error is None:
                self._flush()
        except BaseException as exc:  # a full disk: the reader raises it
            error = exc
        with self._cond:
            self._done, self._error = True, error
            self._cond.notify_all()

    def cancel(self) -> None:
        self.cancelled = True

    def chunks(self) -> Iterator[bytes]:
        pos = 0
        while True:
            with self._cond:
                while self._end == pos and not self._done:
                    self._cond.wait()
                if self._error is not None:
                    raise self._error
                end = self._end
            if end == pos:
                return
            data = os.pread(self._fd, min(end - pos, READ_CHUNK), pos)
            if not data:
                raise OSError("the scan spool ends early")
            pos += len(data)
            yield data

    def __iter__(self) -> Iterator[ScanRecord]:
        raise TypeError("a LiveSpool is read by chunks()")
