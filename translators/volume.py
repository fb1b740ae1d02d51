"""The volume translator: a block device or disk image, by fixed-size chunks, full or changed.

What it reads. The source is a raw block device (``/dev/vg/snap``) or an image file, split in
``chunk_size`` chunks (1 MiB). Each chunk gets a 16-byte hash (:mod:`translators.block_hashes`);
an all-zero chunk gets the reserved zero hash and is never stored. Holes of an image file are
found with SEEK_DATA/SEEK_HOLE and not even read. The source must hold still during a backup
(back up an LVM/dm snapshot of a live device): every stored chunk is hashed again as it is
written, and a chunk that changed in between fails the attempt (the manager retries it).

On tape, per backup (see docs/volume-format.md):

* ``<data member>.ebm-volume.json`` - the extent map: image size, chunk size, the ``data`` extents
  this backup stores and the ``zero`` extents it records as zero, ``(offset, length)`` each,
  plus a digest of the image at this point (sha256 over all chunk hashes) and its parent's;
* the data, as one GNU sparse 1.0 member whose apparent size is the image size and whose data
  extents are exactly the ``data`` extents: ``<name>`` for a baseline (so GNU tar alone
  extracts the image itself, sparse where zero), ``<name>.ebm-volume-delta.NNNNNN`` for an
  incremental (only the chunks that changed since the parent, at their offsets).

Incrementals store the chunks whose hash differs from the parent's state; a chunk that became
zero is a ``zero`` extent. A changed image size is just a new size (the restore truncates or
extends; new chunks are new). Restore rebuilds ``<target>/<name>`` under a temporary name:
baseline data at its offsets (holes elsewhere), then each delta (zero extents punched out with
``fallocate``), checks the digest recorded at backup time, and renames it into place.
Consolidation restores the chain into a work directory and writes it back as a baseline.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import stat
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tape_formats.archive import ArchiveEntry, EntryData, IndexEntry, PaxWriter

from . import block_hashes
from .base import (
    BackupResult,
    PieceReader,
    Progress,
    ProgressCallback,
    TranslatorError,
    TranslatorState,
    delete_stale_members,
    file_row,
    stat_source,
)
from .delta_restore import DeltaRebuild, DeltaTranslator
from .filesystem import data_extents

CHUNK_SIZE = 1024 * 1024
META_SUFFIX = ".ebm-volume.json"
DELTA_INFIX = ".ebm-volume-delta."
STATE_FORMAT = "ebm-volume-state/1"
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


@dataclass(slots=True)
class ChunkScan:
    """One pass over a volume: every chunk's hash, and the chunks this backup must carry."""

    size: int
    chunk_size: int
    hashes: bytearray
    data: array = field(default_factory=lambda: array("Q"))  # chunk numbers to store
    zero: array = field(default_factory=lambda: array("Q"))  # chunk numbers now all zero

    def length(self, i: int) -> int:
        return min(self.chunk_size, self.size - i * self.chunk_size)

    def digest(self) -> str:
        return hashlib.sha256(self.hashes).hexdigest()


def _volume_size(fd: int) -> tuple[int, bool]:
    """(size in bytes, whether SEEK_DATA/SEEK_HOLE may find holes: image files only)."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return os.lseek(fd, 0, os.SEEK_END), False
    return st.st_size, True


def _data_ranges(fd: int, size: int, sparse: bool) -> list[tuple[int, int]]:
    if not sparse:
        return [(0, size)]
    try:
        return data_extents(fd, size)
    except OSError:
        return [(0, size)]


def scan_chunks(fd: int, chunk_size: int, parent: bytes | None) -> ChunkScan:
    """Hash every chunk (holes are zero without a read) and list what differs from ``parent``."""
    size, sparse = _volume_size(fd)
    scan = ChunkScan(size, chunk_size, bytearray())
    ranges = iter(_data_ranges(fd, size, sparse))
    cur = next(ranges, None)
    buf = bytearray(chunk_size)
    zero = bytes(chunk_size)
    nchunks = -(-size // chunk_size)
    for i in range(nchunks):
        start, n = i * chunk_size, scan.length(i)
        while cur is not None and cur[0] + cur[1] <= start:
            cur = next(ranges, None)
        if cur is None or cur[0] >= start + n:
            h = block_hashes.ZERO_HASH
        else:
            got = os.preadv(fd, [memoryview(buf)[:n]], start)
            if got != n:
                raise TranslatorError(f"volume shrank while read (chunk {i})")
            same = buf == zero if n == chunk_size else bytes(buf[:n]) == zero[:n]
            h = block_hashes.ZERO_HASH if same else block_hashes.block_hash(memoryview(buf)[:n])
        scan.hashes += h
        old = block_hashes.hash_at(parent, i) if parent is not None else None
        if h == block_hashes.ZERO_HASH:
            if old is not None and old != h:
                scan.zero.append(i)
        elif old != h:
            scan.data.append(i)
    return scan


def _extents(scan: ChunkScan, chunks: Iterable[int]) -> list[tuple[int, int]]:
    """Adjacent chunks coalesced into (offset, length) extents."""
    out: list[tuple[int, int]] = []
    for i in chunks:
        off, n = i * scan.chunk_size, scan.length(i)
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((off, n))
    return out


class _ChunkReader(PieceReader):
    """``readinto`` over the chunks to store, each hashed again as it is read: a chunk that
    changed since the scan is still streamed (the member must keep its announced size) and
    listed in ``moved``, and the caller fails the attempt."""

    def __init__(self, fd: int, scan: ChunkScan, chunks: Iterable[int]) -> None:
        self._fd, self._scan = fd, scan
        self._chunks: Iterator[int] = iter(chunks)
        self.moved: list[int] = []

    def _next_piece(self) -> memoryview | None:
        i = next(self._chunks, None)
        return None if i is None else memoryview(self._read(i))

    def _read(self, i: int) -> bytes:
        n = self._scan.length(i)
        data = os.pread(self._fd, n, i * self._scan.chunk_size)
        if len(data) != n:
            data += bytes(n - len(data))
        hl = block_hashes.HASH_LEN
        if block_hashes.block_hash(data) != self._scan.hashes[i * hl:(i + 1) * hl]:
            self.moved.append(i)
        return data


def _parent_hashes(parent_state: TranslatorState | None, name: str, chunk_size: int) -> bytes | None:
    if not isinstance(parent_state, dict) or parent_state.get("format") != STATE_FORMAT:
        return None
    if parent_state.get("name") != name or parent_state.get("chunk_size") != chunk_size:
        return None
    return block_hashes.decode(parent_state.get("hashes"))


def volume_name(source: str) -> str:
    name = os.path.basename(os.path.normpath(source))
    return name if name not in ("", ".", "..") else "volume"


def delta_member(name: str, seq: int) -> str:
    return f"{name}{DELTA_INFIX}{seq:06d}"


def _punch(fd: int, off: int, length: int) -> None:
    """Make [off, off+length) a hole (zeros that take no space); written zeros as a fallback."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, off, length) == 0:
        return
    if ctypes.get_errno() not in (errno.EOPNOTSUPP, errno.ENOSYS):
        raise OSError(ctypes.get_errno(), "fallocate")
    zeros = bytes(min(length, CHUNK_SIZE))
    while length > 0:
        n = os.pwrite(fd, zeros[:length], off)
        off, length = off + n, length - n


def _copy_sparse(src: Path, dst: Path) -> None:
    """``src`` copied to a new ``dst`` extent by extent: holes stay holes, and
    copy_file_range lets the filesystem share or clone blocks where it can."""
    with open(src, "rb") as fin:
        size = os.fstat(fin.fileno()).st_size
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
            for off, length in data_extents(fin.fileno(), size):
                end = off + length
                while off < end:
                    n = os.copy_file_range(fin.fileno(), fd, end - off, off, off)
                    if n == 0:
                        raise TranslatorError(f"{src} shrank while being copied")
                    off += n
        finally:
            os.close(fd)


def _split_member(path: str) -> tuple[str, bool]:
    """(volume name, whether it is an extent map) of an archive member."""
    member = path[: -len(META_SUFFIX)] if path.endswith(META_SUFFIX) else path
    return member.rpartition(DELTA_INFIX)[0] or member, path.endswith(META_SUFFIX)


class _Rebuild(DeltaRebuild):
    """One image: the baseline's data at its offsets, then each delta, chained by digest."""

    def apply(self, path: str, entry: ArchiveEntry, data: EntryData) -> int:
        meta = self.meta
        if meta is None or meta.get("data_member") != path:
            raise TranslatorError(f"volume member {path!r} without its extent map")
        if meta["kind"] == "baseline":
            flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
        else:
            if self.digest is None and self.final.is_file():
                self._resume()
            if self.digest is None or meta.get("parent_digest") != self.digest:
                raise TranslatorError(f"volume delta {path!r} does not apply to the image "
                                      "restored so far (chain out of order or damaged)")
            flags = os.O_RDWR
        fd = os.open(self.tmp, flags | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, meta["size"])
            for off, length in meta["zero"]:
                _punch(fd, off, length)
            written = self._write_extents(fd, entry, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.digest = meta["digest"]
        return written

    @staticmethod
    def _write_extents(fd: int, entry: ArchiveEntry, data: EntryData) -> int:
        buf = bytearray(CHUNK_SIZE)
        total = 0
        extents = entry.sparse_map if entry.sparse_map is not None else [(0, entry.size)]
        for off, length in extents:
            while length > 0:
                view = memoryview(buf)[: min(length, len(buf))]
                n = data.readinto(view)
                if n == 0:
                    raise TranslatorError(f"volume member {entry.path!r} ends early")
                os.pwrite(fd, view[:n], off)
                off, length, total = off + n, length - n, total + n
        return total

    def _resume(self) -> None:
        """Continue from the image an earlier restore call left (``apply_chain``), on a
        copy: a delta that is refused or fails half-way leaves that image as it was."""
        _copy_sparse(self.final, self.tmp)
        self.digest = self._digest_of_tmp(self.meta["chunk_size"] if self.meta else CHUNK_SIZE)

    def _digest_of_tmp(self, chunk_size: int) -> str:
        fd = os.open(self.tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return scan_chunks(fd, chunk_size, None).digest()
        finally:
            os.close(fd)

    def finish(self) -> None:
        if self._digest_of_tmp(self.meta["chunk_size"] if self.meta else CHUNK_SIZE) != self.digest:
            raise TranslatorError(f"restored image {self.name} does not match its recorded digest")
        if self.entry is not None:
            os.chmod(self.tmp, self.entry.mode)
        os.replace(self.tmp, self.final)


class VolumeTranslator(DeltaTranslator):
    name = "volume"
    version = "1.0"
    supports_incremental = True
    split_member = staticmethod(_split_member)
    rebuild = _Rebuild
    restore_noun = "a volume backup"
    chunk_size = CHUNK_SIZE

    def validate_source(self, source: str) -> None:
        if not source:
            raise TranslatorError("no volume given (a block device or an image file)")
        st = stat_source(source, "volume")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise TranslatorError(f"volume {source} is not a block device or an image file")
        if not os.access(source, os.R_OK):
            raise TranslatorError(f"volume {source} is not readable")

    def backup(self, source: str, parent_state: TranslatorState | None, writer: PaxWriter, *,
               progress: ProgressCallback | None = None) -> BackupResult:
        self.validate_source(source)
        name = volume_name(source)
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            parent = _parent_hashes(parent_state, name, self.chunk_size)
            scan = scan_chunks(fd, self.chunk_size, parent)
            if parent is None:
                seq, level = 0, "baseline"
            else:
                seq, level = int(parent_state.get("seq", 0)) + 1, "incremental"  # type: ignore[union-attr]
            parent_digest = parent_state.get("digest") if parent is not None else None  # type: ignore[union-attr]
            rows = self._write(fd, st, name, scan, seq, parent_digest, writer, progress)
        finally:
            os.close(fd)
        members = [r.path for r in rows]
        if level == "baseline":
            rows += delete_stale_members(parent_state, members, writer)
        state = {"format": STATE_FORMAT, "name": name, "size": scan.size,
                 "chunk_size": self.chunk_size, "hashes": block_hashes.encode(scan.hashes),
                 "digest": scan.digest(), "seq": seq, "members": members,
                 "created_ns": time.time_ns()}
        return BackupResult(state=state, entries=rows, level_hint=level)

    def _write(self, fd: int, st: os.stat_result, name: str, scan: ChunkScan, seq: int,
               parent_digest: str | None, writer: PaxWriter,
               progress: ProgressCallback | None) -> list[IndexEntry]:
        """The extent map member, then the data member (see the module doc)."""
        data_ext = _extents(scan, scan.data)
        member = name if seq == 0 else delta_member(name, seq)
        meta = {"name": name, "kind": "baseline" if seq == 0 else "delta", "seq": seq,
                "size": scan.size, "chunk_size": scan.chunk_size, "data_member": member,
                "digest": scan.digest(), "parent_digest": parent_digest,
                "data": data_ext, "zero": _extents(scan, scan.zero)}
        body = json.dumps(meta, separators=(",", ":")).encode() + b"\n"
        mode = stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else 0o600
        now = time.time_ns()
        meta_entry = ArchiveEntry(path=member + META_SUFFIX, kind="file", size=len(body), mode=mode,
                                  uid=st.st_uid, gid=st.st_gid, mtime_ns=now)
        rows = [file_row(meta_entry, writer.add(meta_entry, body))]
        entry = ArchiveEntry(path=member, kind="file", size=scan.size, mode=mode, uid=st.st_uid,
                             gid=st.st_gid, mtime_ns=st.st_mtime_ns if seq == 0 else now,
                             sparse_map=data_ext)
        reader = _ChunkReader(fd, scan, scan.data)
        loc = writer.add(entry, reader)
        if reader.moved:
            raise TranslatorError(f"{len(reader.moved)} chunks of {name} changed while being "
                                  "read (back up a snapshot of a live volume)")
        rows.append(file_row(entry, loc))
        if progress is not None:
            stored = entry.data_size
            progress(Progress("backup", 2, 2, stored, stored, name))
        return rows

    # ------------------------------------------------------------------ consolidation
    def write_merged(self, workdir: Path, state: TranslatorState, writer: PaxWriter, *,
                     progress: ProgressCallback | None = None) -> BackupResult:
        """The merged image as a baseline; its chunks are checked against the last state's
        hashes as they are written, and that state stays the state."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise TranslatorError("the chain's last state is not a volume chunk state")
        name = state["name"]
        hashes = block_hashes.decode(state.get("hashes"))
        if hashes is None:
            raise TranslatorError("the chain's last state has no chunk hashes")
        fd = os.open(Path(workdir) / name, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            scan = ChunkScan(state["size"], state["chunk_size"], bytearray(hashes))
            scan.data.extend(i for i in range(len(hashes) // block_hashes.HASH_LEN)
                             if block_hashes.hash_at(hashes, i) != block_hashes.ZERO_HASH)
            rows = self._write(fd, st, name, scan, 0, None, writer, progress)
        finally:
            os.close(fd)
        new_state = {**state, "seq": 0, "members": [r.path for r in rows],
                     "created_ns": time.time_ns()}
        return BackupResult(state=new_state, entries=rows, level_hint="baseline")
