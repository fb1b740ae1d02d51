"""A library's chunk store: each distinct chunk once, compressed, named by its BLAKE3 hash.

Layout (docs/store-format.md): new chunks are appended to this writer's own pack file
(``<store>/packs/<16 hex>.pack``, pack.py: records of header, stored bytes, CRC32C) and the
index (``<store>/index.sqlite``, chunk_index.py) maps each id to its record. A chunk's
*stored bytes* are one flag byte (0 as is, 1 a zstd frame with its checksum) and the
payload; they are what the S3 tier uploads, the same bytes on either side. Stores written
before packs keep their ``chunks/<2 hex>/<62 hex>`` files, one per chunk: those are still
read (and found by writers), never written.

Durability is batched, in this order (``sync``, at a cartridge's sync point): the packs
written since the last sync are fdatasync'd (and the packs folder, for a new pack), then
their index rows are committed (SQLite, durable at commit). So a row always names a durable
record, and a chunk a writer *finds* in the index needs no flush of its own; chunks of the
current batch are visible to this ``ChunkStore`` only (``_pending``). While new chunks stream
in, a thread of its own keeps the sync point short (as the plain cartridge's write-back
pacing does): every ``WRITE_OUT_BYTES`` it starts the write-out of the packs (not waiting),
and every ``BACKGROUND_SYNC_BYTES`` it fdatasyncs them and commits the index rows of the
records that flush made durable (the same order as ``sync``: a row still names a durable
record), so the sync point flushes and indexes only what came since. Those rows reach the
index before the cartridge's recipe names the chunks, as rows of a writer killed before its
recipe do: the collector frees them once no recipe holds them.

The collector and the writers meet at ``gc.lock``: a writer holds it shared from its first
chunk after a sync point until its recipe is durable (``Hold``); the collector takes it
exclusively, so it never frees a chunk that a writer has just found and not yet recorded.
A pack stays flocked by its writer while open, so compaction leaves it alone. A collector
killed inside an index commit may leave that transaction in flight (chunk_index.py): not
seen by the writer that takes the lock next, replayed by a later recovery of the WAL. So
the collector marks ``gc.lock`` (its first byte) while it runs and settles the index when it
starts; a writer that finds the mark settles the index before its first lookup.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import zstandard

from tape_formats.background_sync import BackgroundSync
from tape_formats.store import pack as packs
from tape_formats.store.chunk_index import ChunkIndex, Location
from tape_formats.writeback_pacing import start_write_out

CHUNKS_DIR = "chunks"  # the per-file layout of stores written before packs (read only)
LOCK_NAME = "gc.lock"
# gc.lock's first byte while a collector runs: still there, the collector died in its run
COLLECTING, IDLE = b"\x01", b"\x00"
_RAW, _ZSTD = packs.RAW, packs.ZSTD
BACKGROUND_SYNC_BYTES = 32 << 20
# Stored bytes after which the write-out of the packs starts (sync_file_range, not waiting):
# the next flush (background or the sync point's) then waits for little. A sync point's
# flush of up to 32 MiB not yet written out took ~23 ms here (the disk writes ~1.4 GB/s),
# with both cores idle at the end of a stream.
WRITE_OUT_BYTES = 8 << 20
MAX_RUN = 4 << 20  # adjacent records read with one pread
_OPEN_PACKS = 16  # pack descriptors a reader keeps open


class StoreError(OSError):
    """A chunk or recipe is missing or damaged: an I/O error of the medium (MEDIUM ERROR)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)

    def __str__(self) -> str:
        return str(self.args[1])


def _libc_syncfs() -> ctypes._CFuncPtr | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS = _libc_syncfs()


def _syncfs(fd: int) -> None:
    """Flush the whole file system ``fd`` is on (os.sync where syncfs is missing)."""
    if _SYNCFS is None:
        os.sync()
    elif _SYNCFS(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs: {os.strerror(err)}")


def _mark_used(fd: int) -> None:
    """Set a pack's access time to now when a reader opens it: the S3 cache evicts the least
    recently used packs first (s3_cache.py); its mtime stays. Best effort: a group member
    who does not own the pack may not set it."""
    try:
        os.utime(fd, ns=(time.time_ns(), os.fstat(fd).st_mtime_ns))
    except OSError:
        pass


class Remote(Protocol):
    """Where chunks the local store lacks are fetched from (the S3 tier, s3_tier.py); the
    local store is then its cache."""

    def fetch(self, store: ChunkStore, chunk_id: bytes) -> bytes:
        """The chunk's stored bytes (flag byte and payload), left in ``store`` as a cached
        copy; StoreError when the remote lacks it too."""
        ...

    def prefetch(self, store: ChunkStore, ids: Sequence[bytes]) -> None:
        """Start fetching those of ``ids`` the store lacks, in the background (read-ahead)."""
        ...

    def synced(self, store: ChunkStore) -> None:
        """New chunks of ``store`` are durable and indexed (the uploader's cue: s3_cache.py)."""
        ...


_REMOTES: dict[Path, Remote] = {}


def attach_remote(root: Path, remote: Remote | None) -> None:
    """Make ``remote`` the source of the chunks missing from the store at ``root``, for every
    ChunkStore opened on it from now on in this process (None: detach)."""
    key = Path(root).resolve()
    if remote is None:
        _REMOTES.pop(key, None)
    else:
        _REMOTES[key] = remote


def unpack(chunk_id: bytes, flag: int, body: bytes | memoryview, length: int,
           dctx: zstandard.ZstdDecompressor) -> bytes:
    """A chunk's bytes from its stored form; StoreError unless ``length`` long."""
    if flag == _RAW:
        data = bytes(body)
    elif flag == _ZSTD:
        try:
            data = dctx.decompress(body, max_output_size=length)
        except zstandard.ZstdError:
            data = b""
    else:
        data = b""
    if len(data) != length:
        raise StoreError(f"chunk {chunk_id.hex()} is damaged")
    return data


class ChunkStore:
    """The packs, index and older chunk files of one store directory. Thread-safe: a
    reader's read-ahead thread and the S3 tier's fetch threads share it with the drive."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.chunks = self.root / CHUNKS_DIR
        self.packs = self.root / packs.PACKS_DIR
        if not self.packs.is_dir():
            if not self.chunks.is_dir():
                raise StoreError(f"chunk store {self.root} is missing")
            self.packs.mkdir(exist_ok=True)  # a store from before packs: new chunks go there
        self._legacy = self.chunks.is_dir() and any(True for _ in self.chunks.iterdir())
        self.index = ChunkIndex(self.root)
        self.remote: Remote | None = _REMOTES.get(self.root.resolve()) if _REMOTES else None
        self._mutex = threading.Lock()
        self._writer: packs.PackWriter | None = None
        self._finished: list[packs.PackWriter] = []  # full packs not yet flushed
        self._pending: dict[bytes, Location] = {}  # written since the last sync, not indexed
        self._new_pack = False  # a pack created since the last sync: fsync the folder
        self._legacy_hit = False  # found an old chunk file: syncfs at the next sync
        self._unsynced = 0  # new pack bytes since the last (background) flush
        self._unwritten = 0  # new pack bytes since the last write-out was started
        self._indexed = False  # the background flush indexed rows since the last sync
        self._background: BackgroundSync | None = None
        self._fds: dict[int, int] = {}  # pack -> open descriptor for reads (LRU)
        self._packs_fd: int | None = None  # the packs folder, for its fsync

    @staticmethod
    def create(root: Path) -> ChunkStore:
        """Make an empty store (idempotent)."""
        (Path(root) / packs.PACKS_DIR).mkdir(parents=True, exist_ok=True)
        (Path(root) / LOCK_NAME).touch(exist_ok=True)
        return ChunkStore(root)

    def path_of(self, chunk_id: bytes) -> Path:
        """Where the per-file layout kept a chunk (stores from before packs)."""
        h = chunk_id.hex()
        return self.chunks / h[:2] / h[2:]

    # -- lookups ----------------------------------------------------------------------------
    def _locate(self, ids: Sequence[bytes]) -> dict[bytes, Location]:
        with self._mutex:
            found = {cid: loc for cid in ids if (loc := self._pending.get(cid)) is not None}
        rest = [cid for cid in ids if cid not in found]
        if rest:
            found.update(self.index.lookup(rest))
        return found

    def _legacy_has(self, chunk_id: bytes) -> bool:
        return self._legacy and os.path.exists(self.path_of(chunk_id))

    def has(self, chunk_id: bytes) -> bool:
        """Whether the store holds the chunk locally."""
        return bool(self._locate([chunk_id])) or self._legacy_has(chunk_id)

    # -- writes -----------------------------------------------------------------------------
    def lacking(self, ids: Sequence[bytes]) -> list[int]:
        """Indexes of those of ``ids`` the store lacks (one index lookup for all; the write
        path, chunk_writer.py, stores these)."""
        known = self._locate(ids)
        out = []
        for i, cid in enumerate(ids):
            if cid in known:
                continue
            if self._legacy_has(cid):
                self._legacy_hit = True
                continue
            out.append(i)
        return out

    def put_stored(self, chunk_id: bytes, stored: bytes) -> int:
        """Keep a chunk's stored bytes as they are (fetched from the S3 tier) unless the store
        has it; durable and indexed at the next ``sync`` (or ``close``)."""
        if not stored or stored[0] not in (_RAW, _ZSTD):
            raise StoreError(f"chunk {chunk_id.hex()}: not a stored chunk")
        if self.has(chunk_id):
            return 0
        return self._append(chunk_id, stored[0], memoryview(stored)[1:])

    def _append(self, chunk_id: bytes, flag: int, body: bytes | memoryview) -> int:
        return self.append_many([(chunk_id, flag, body)])

    def append_many(self, records: Sequence[packs.Record]) -> int:
        """Append chunks in their stored form, (id, flag, stored payload[, record CRC]), to
        this writer's pack with one write (those already written since the last sync are
        skipped); durable and indexed at the next ``sync``. Returns the stored bytes they
        took."""
        with self._mutex:
            records = [r for r in dict((r[0], r) for r in records).values()
                       if r[0] not in self._pending]
            if not records:
                return 0
            if self._writer is None:
                self._writer = packs.PackWriter(self.packs)
                self._new_pack = True
            writer = self._writer
            offsets = writer.append_many(records)
            for rec, at in zip(records, offsets, strict=True):
                self._pending[rec[0]] = Location(writer.number, at, len(rec[2]))
            if writer.full:
                self._finished.append(writer)
                self._writer = None
            took = sum(1 + len(rec[2]) for rec in records)
            wrote = offsets[-1] - offsets[0] + packs.record_size(len(records[-1][2]))
            self._unsynced += wrote
            self._unwritten += wrote
            kick = self._unsynced >= BACKGROUND_SYNC_BYTES
            if kick:
                self._unsynced = 0
            write_out = self._unwritten >= WRITE_OUT_BYTES
            if write_out or kick:
                self._unwritten = 0
        if kick:
            self._flusher().kick()
        elif write_out:
            self._flusher().write_out(0, 0)
        return took

    def _flusher(self) -> BackgroundSync:
        if self._background is None:
            self._background = BackgroundSync(-1, f"chunk store {self.root}",
                                               flush=self._flush_open_packs,
                                               start_write_out=self._write_out_open_packs)
        return self._background

    def _open_pack_fds(self) -> list[int]:
        """The packs written since the last sync (their descriptors are closed only by
        ``sync``/``close``, after waiting for the background thread)."""
        with self._mutex:
            return [w.fd for w in self._finished] + ([self._writer.fd] if self._writer else [])

    def _flush_packs(self, writers: Sequence[packs.PackWriter]) -> None:
        """fdatasync those of ``writers`` with bytes past what an earlier flush made
        durable, and note how far each one now is. A full pack is flushed once, not again
        by every later flush until the sync point (on this disk each fdatasync is a cache
        flush, 0.06-3.8 ms even for a clean file: ~10 of them at a first full's end)."""
        with self._mutex:
            todo = [(w, w.end) for w in writers if w.end > w.durable]
        for w, end in todo:
            os.fdatasync(w.fd)
            with self._mutex:
                w.durable = max(w.durable, end)

    def _write_out_open_packs(self, _fd: int, _start: int, _length: int) -> None:
        """Start the write-out of the packs' dirty pages (the background thread; a hint)."""
        for fd in self._open_pack_fds():
            start_write_out(fd, 0, 0)  # (0, 0: to the end of the file)

    def _flush_open_packs(self, _fd: int) -> None:
        """The background flush: fdatasync of the packs written since the last sync, then
        (the folder's fsync for a new pack first) the index rows of the records written
        before it, committed, so that the sync point has only the rest to do."""
        with self._mutex:
            rows = list(self._pending.items())  # written before the flush: covered by it
            new_pack, self._new_pack = self._new_pack, False
            writers = [*self._finished, *([self._writer] if self._writer else [])]
        try:
            self._flush_packs(writers)
            if new_pack:
                self.sync_folder()
        except BaseException:
            if new_pack:
                with self._mutex:
                    self._new_pack = True  # the sync point's to do (and to raise)
            raise
        if not rows:
            return
        try:
            self.index.add(rows)  # (left pending on failure: the sync point retries them)
        except sqlite3.Error as exc:  # the background thread keeps OSErrors for the sync
            raise StoreError(f"chunk index of {self.root}: {exc}") from exc
        with self._mutex:
            self._indexed = True
            for cid, loc in rows:
                if self._pending.get(cid) == loc:
                    del self._pending[cid]

    def sync(self) -> None:
        """Make every chunk written so far durable and indexed: packs, folder, then rows
        (those the background flush has not indexed already)."""
        if self._background is not None:
            self._background.wait()
            error = self._background.take_error()
            if error is not None:  # a background flush met it: it is this sync's to raise
                raise error
        with self._mutex:
            rows = list(self._pending.items())
            writers = [*self._finished, *([self._writer] if self._writer else [])]
            new_pack, self._new_pack = self._new_pack, False
            legacy_hit, self._legacy_hit = self._legacy_hit, False
            indexed, self._indexed = self._indexed, False
            self._unsynced = self._unwritten = 0
        if rows:
            self._flush_packs(writers)
            if new_pack:
                self.sync_folder()
        if legacy_hit:
            self.sync_all()
        if rows:
            self.index.add(rows)
        with self._mutex:
            for cid, loc in rows:
                if self._pending.get(cid) == loc:
                    del self._pending[cid]
            done = [w for w in self._finished if w in writers]
            self._finished = [w for w in self._finished if w not in writers]
        for w in done:  # flushed and indexed: the collector may have it from now on
            w.close()
        if (rows or indexed) and self.remote is not None:
            self.remote.synced(self)  # the S3 cache uploads them (may wait: s3_uploader.py)

    def sync_folder(self) -> None:
        """Make packs created or removed durable (fsync of the packs folder)."""
        with self._mutex:
            if self._packs_fd is None:
                self._packs_fd = os.open(self.packs, os.O_RDONLY | os.O_DIRECTORY)
            folder = self._packs_fd
        os.fsync(folder)

    def sync_all(self) -> None:
        """Flush the file system the store is on (syncfs): chunk files of the per-file layout
        that another writer made or the collector removed."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            _syncfs(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Index what was cached since the last sync, stop the background flush, let go of
        the packs and the index."""
        with self._mutex:
            pending = bool(self._pending) or self._indexed
        if pending:
            self.sync()
        background, self._background = self._background, None
        if background is not None:
            background.close()
        with self._mutex:
            writers = [*self._finished, *([self._writer] if self._writer else [])]
            self._finished, self._writer = [], None
            fds, self._fds = list(self._fds.values()), {}
            if self._packs_fd is not None:
                fds.append(self._packs_fd)
                self._packs_fd = None
        for w in writers:
            w.close()
        for fd in fds:
            os.close(fd)
        self.index.close()

    # -- reads ------------------------------------------------------------------------------
    def _pread(self, pack: int, n: int, offset: int) -> bytes | None:
        """``n`` bytes of a pack (None: the pack is gone, compacted since the lookup)."""
        with self._mutex:
            fd = self._fds.pop(pack, None)
            if fd is None:
                try:
                    fd = os.open(self.packs / packs.pack_name(pack), os.O_RDONLY)
                except FileNotFoundError:
                    return None
                _mark_used(fd)
            self._fds[pack] = fd  # most recently used last
            while len(self._fds) > _OPEN_PACKS:
                os.close(self._fds.pop(next(iter(self._fds))))
            return os.pread(fd, n, offset)

    def _record(self, chunk_id: bytes, loc: Location) -> tuple[int, memoryview] | None:
        buf = self._pread(loc.pack, packs.record_size(loc.stored), loc.offset)
        if buf is None:
            return None
        try:
            return packs.decode(buf, 0, chunk_id)
        except packs.PackDamaged as exc:
            raise StoreError(f"chunk {chunk_id.hex()} in {self.root}: {exc}") from None

    def _read_local(self, chunk_id: bytes) -> tuple[int, memoryview | bytes] | None:
        """(flag, stored payload) of a chunk held locally; None when it is not."""
        for _attempt in range(2):  # a compaction may move it between lookup and read
            loc = self._locate([chunk_id]).get(chunk_id)
            if loc is None:
                break
            found = self._record(chunk_id, loc)
            if found is not None:
                return found
        if not self._legacy:
            return None
        try:
            with open(self.path_of(chunk_id), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        return (raw[0], raw[1:]) if raw else (-1, b"")

    def read_stored(self, chunk_id: bytes) -> bytes | None:
        """A chunk's stored bytes (flag byte and payload) as the local store holds them, for
        the S3 tier; None when it is not held locally."""
        found = self._read_local(chunk_id)
        if found is None:
            return None
        flag, body = found
        return bytes((flag & 0xFF,)) + bytes(body)

    def get(self, chunk_id: bytes, length: int, dctx: zstandard.ZstdDecompressor) -> bytes:
        """The chunk's bytes (``length`` long, as the recipe says)."""
        found = self._read_local(chunk_id)
        if found is None:
            if self.remote is None:
                raise StoreError(f"chunk {chunk_id.hex()} is missing from {self.root}")
            raw = self.remote.fetch(self, chunk_id)
            found = (raw[0], memoryview(raw)[1:]) if raw else (-1, b"")
        try:
            return unpack(chunk_id, found[0], found[1], length, dctx)
        except StoreError:
            raise StoreError(f"chunk {chunk_id.hex()} in {self.root} is damaged") from None

    def read_many(self, ids: Sequence[bytes], lengths: Sequence[int],
                  dctx: zstandard.ZstdDecompressor) -> list[bytes | None]:
        """The chunks ``ids`` (read-ahead: records adjacent in a pack come with one pread);
        None for a chunk not held locally (the caller fetches it with ``get``)."""
        locs = self._locate(ids)
        out: list[bytes | None] = []
        i = 0
        while i < len(ids):
            loc = locs.get(ids[i])
            if loc is None:
                out.append(self.get(ids[i], lengths[i], dctx) if self._legacy_has(ids[i])
                           else None)
                i += 1
                continue
            end, k = loc.offset + packs.record_size(loc.stored), i + 1
            while k < len(ids) and end - loc.offset < MAX_RUN:
                nxt = locs.get(ids[k])
                if nxt is None or nxt.pack != loc.pack or nxt.offset != end:
                    break
                end += packs.record_size(nxt.stored)
                k += 1
            buf = self._pread(loc.pack, end - loc.offset, loc.offset)
            for j in range(i, k):
                if buf is None:  # compacted since the lookup: one by one
                    out.append(self.get(ids[j], lengths[j], dctx))
                    continue
                at = locs[ids[j]].offset - loc.offset
                try:
                    flag, body = packs.decode(buf, at, ids[j])
                except packs.PackDamaged as exc:
                    raise StoreError(f"chunk {ids[j].hex()} in {self.root}: {exc}") from None
                try:
                    out.append(unpack(ids[j], flag, body, lengths[j], dctx))
                except StoreError:
                    raise StoreError(f"chunk {ids[j].hex()} in {self.root} is damaged") \
                        from None
            i = k
        return out

    # -- listing and removal (the collector, the S3 tier) -----------------------------------
    def ids(self) -> Iterator[bytes]:
        """Every chunk held locally (indexed in a pack, or an older chunk file)."""
        for cid, _loc in self.index.rows():
            yield cid
        for cid, _path in self.chunk_files():
            if cid is not None and self.index.get(cid) is None:
                yield cid

    def discard(self, ids: Sequence[bytes]) -> tuple[int, int]:
        """Forget the local copies of chunks (the S3 tier's eviction: the bucket has them).
        Returns (chunks, stored bytes) dropped; a pack's space returns when the collector
        compacts it."""
        count = freed = 0
        locs = self.index.lookup(ids)
        self.index.remove(list(locs))
        for loc in locs.values():
            count += 1
            freed += packs.record_size(loc.stored)
        if self._legacy:
            for cid in ids:
                path = self.path_of(cid)
                try:
                    size = path.stat().st_size
                    path.unlink()
                except FileNotFoundError:
                    continue
                count += cid not in locs
                freed += size
        return count, freed

    def pack_files(self) -> Iterator[tuple[int, Path]]:
        """Every pack file: (number, path)."""
        for f in sorted(self.packs.iterdir()):
            number = packs.pack_number(f.name)
            if number is not None:
                yield number, f

    def chunk_files(self) -> Iterator[tuple[bytes | None, Path]]:
        """Every file under chunks/ (the per-file layout): (chunk id, path), or (None, path)
        for a leftover temporary file of a writer that died."""
        if not self.chunks.is_dir():
            return
        for sub in sorted(self.chunks.iterdir()):
            if not sub.is_dir():
                continue
            for f in sub.iterdir():
                name = f.name
                if name.startswith("."):
                    yield None, f
                    continue
                try:
                    yield bytes.fromhex(sub.name + name), f
                except ValueError:
                    continue

    # -- the collector's lock ---------------------------------------------------------------
    def hold(self) -> Hold:
        return Hold(self.root / LOCK_NAME, settle=self.index.settle)

    def exclusive(self, timeout: float) -> Hold:
        """The collector's side of the lock (marked, the index settled); StoreBusy after
        ``timeout`` seconds. The collector calls ``finish`` once its last index transaction
        has returned."""
        hold = Hold(self.root / LOCK_NAME, exclusive=True, timeout=timeout,
                    settle=self.index.settle)
        hold.acquire()
        return hold


class StoreBusy(Exception):
    """The collector could not take the store: a cartridge is being written."""


class Hold:
    """A flock on the store's gc.lock: shared for a writer, exclusive for the collector.

    The collector writes ``COLLECTING`` into the file's first byte once it has the lock,
    then settles the index (``settle``: no transaction a killed process left in flight can
    come back, chunk_index.py), and writes ``IDLE`` when its run is over (``finish``). A
    writer that takes the lock and finds ``COLLECTING`` follows a collector that died in its
    run, maybe inside an index commit: it settles the index before it looks a chunk up (so
    a chunk it finds stays found) and writes ``IDLE``."""

    def __init__(self, path: Path, *, exclusive: bool = False, timeout: float = 0,
                 settle: Callable[[], None] | None = None) -> None:
        self._path = path
        self._exclusive = exclusive
        self._timeout = timeout
        self._settle = settle
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if not self._exclusive:
                fcntl.flock(fd, fcntl.LOCK_SH)  # waits while the collector runs
            else:
                deadline = time.monotonic() + self._timeout
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise StoreBusy(
                                "the store is in use: a cartridge is being written since its "
                                "last filemark (try again later)") from None
                        time.sleep(0.05)
            if self._settle is not None:
                if self._exclusive:
                    os.pwrite(fd, COLLECTING, 0)
                    self._settle()
                elif os.pread(fd, 1, 0) == COLLECTING:
                    self._settle()
                    os.pwrite(fd, IDLE, 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def finish(self) -> None:
        """The collector's run is over, every index transaction of it returned (committed
        or rolled back): nothing of it is in flight."""
        if self._fd is not None:
            os.pwrite(self._fd, IDLE, 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Hold:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
