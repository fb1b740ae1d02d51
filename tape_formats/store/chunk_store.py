"""A library's chunk store: each distinct chunk once, compressed, named by its BLAKE3 hash.

Layout (docs/store-format.md): ``<store>/chunks/<2 hex>/<62 hex>``, one file per chunk: one
flag byte (0 stored as is, 1 a zstd frame with its checksum) and the payload. A chunk file
appears whole or not at all (written under a temporary name, then renamed), so a file that
exists may be shared by any writer without reading it. Durability is batched: ``sync``
flushes the file system the store lives on (syncfs) once, at a cartridge's sync point,
instead of an fsync per chunk; while new chunks stream in, a syncfs on a thread of its own
every ``BACKGROUND_SYNC_BYTES`` keeps that last one short (as the plain cartridge's write-back
pacing does, tape_formats/writeback_pacing.py).

The collector and the writers meet at ``gc.lock``: a writer holds it shared from its first
chunk after a sync point until its recipe is durable (``Hold``); the collector takes it
exclusively, so it never frees a chunk that a writer has just found and not yet recorded.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import zstandard

from tape_formats.background_sync import BackgroundSync

CHUNKS_DIR = "chunks"
LOCK_NAME = "gc.lock"
# Per-chunk compression: fast, like the drive's (cartridge.ZSTD_LEVEL), since new chunks
# are compressed on the drive's write path.
CHUNK_ZSTD_LEVEL = 1
_RAW, _ZSTD = 0, 1
BACKGROUND_SYNC_BYTES = 32 << 20


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


class Remote(Protocol):
    """Where chunks the local store lacks are fetched from (the S3 tier, s3_tier.py); the
    local store is then its cache."""

    def fetch(self, store: ChunkStore, chunk_id: bytes) -> bytes:
        """The chunk file's bytes (flag byte and payload), left in ``store`` as a cached copy;
        StoreError when the remote lacks it too."""
        ...

    def prefetch(self, store: ChunkStore, ids: Sequence[bytes]) -> None:
        """Start fetching those of ``ids`` the store lacks, in the background (read-ahead)."""
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


class ChunkStore:
    """The chunk files of one store directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.chunks = self.root / CHUNKS_DIR
        if not self.chunks.is_dir():
            raise StoreError(f"chunk store {self.root} is missing")
        self.remote: Remote | None = _REMOTES.get(self.root.resolve()) if _REMOTES else None
        self._made: set[str] = set()
        self._unsynced = 0  # new chunk bytes since the last (background) flush
        self._dir_fd: int | None = None
        self._background: BackgroundSync | None = None

    @staticmethod
    def create(root: Path) -> ChunkStore:
        """Make an empty store (idempotent)."""
        (Path(root) / CHUNKS_DIR).mkdir(parents=True, exist_ok=True)
        (Path(root) / LOCK_NAME).touch(exist_ok=True)
        return ChunkStore(root)

    def path_of(self, chunk_id: bytes) -> Path:
        h = chunk_id.hex()
        return self.chunks / h[:2] / h[2:]

    def has(self, chunk_id: bytes) -> bool:
        return os.path.exists(self.path_of(chunk_id))

    def put(self, chunk_id: bytes, data: bytes | memoryview,
            cctx: zstandard.ZstdCompressor) -> int:
        """Store a chunk unless the store has it; returns the bytes it took (0: a dedup hit)."""
        h = chunk_id.hex()
        sub = self.chunks / h[:2]
        final = sub / h[2:]
        if os.path.exists(final):
            return 0
        packed = cctx.compress(data)
        flag = _ZSTD if len(packed) < len(data) else _RAW
        body = packed if flag == _ZSTD else data
        if h[:2] not in self._made:
            sub.mkdir(exist_ok=True)
            self._made.add(h[:2])
        tmp = sub / f".{h[2:]}.{os.getpid()}.{threading.get_ident()}.tmp"  # per writer thread
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if os.writev(fd, [bytes((flag,)), body]) != 1 + len(body):
                raise OSError(errno.EIO, "short write")
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, final)
        self._unsynced += 1 + len(body)
        if self._unsynced >= BACKGROUND_SYNC_BYTES:
            self._unsynced = 0
            self._flusher().kick()
        return 1 + len(body)

    def _flusher(self) -> BackgroundSync:
        if self._background is None:
            self._dir_fd = os.open(self.chunks, os.O_RDONLY)
            self._background = BackgroundSync(self._dir_fd, f"chunk store {self.root}",
                                              flush=_syncfs)
        return self._background

    def get(self, chunk_id: bytes, length: int, dctx: zstandard.ZstdDecompressor) -> bytes:
        """The chunk's bytes (``length`` long, as the recipe says)."""
        try:
            with open(self.path_of(chunk_id), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            if self.remote is None:
                raise StoreError(f"chunk {chunk_id.hex()} is missing from {self.root}") from None
            raw = self.remote.fetch(self, chunk_id)
        if raw[:1] == bytes((_RAW,)):
            data = raw[1:]
        elif raw[:1] == bytes((_ZSTD,)):
            try:
                data = dctx.decompress(raw[1:], max_output_size=length)
            except zstandard.ZstdError:
                data = b""
        else:
            data = b""
        if len(data) != length:
            raise StoreError(f"chunk {chunk_id.hex()} in {self.root} is damaged")
        return data

    def sync(self) -> None:
        """Make every chunk file written so far durable (one syncfs for the batch)."""
        self._unsynced = 0
        if self._background is not None:
            error = self._background.take_error()
            if error is not None:  # a background flush met it: it is this sync's to raise
                raise error
        fd = os.open(self.chunks, os.O_RDONLY)
        try:
            _syncfs(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Stop the background flush (no flush outlives the store's descriptor)."""
        background, self._background = self._background, None
        if background is not None:
            background.close()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def chunk_files(self) -> Iterator[tuple[bytes | None, Path]]:
        """Every file under chunks/: (chunk id, path), or (None, path) for a leftover
        temporary file of a writer that died."""
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
        return Hold(self.root / LOCK_NAME)

    def exclusive(self, timeout: float) -> Hold:
        """The collector's side of the lock; StoreBusy after ``timeout`` seconds."""
        hold = Hold(self.root / LOCK_NAME, exclusive=True, timeout=timeout)
        hold.acquire()
        return hold


class StoreBusy(Exception):
    """The collector could not take the store: a cartridge is being written."""


class Hold:
    """A flock on the store's gc.lock: shared for a writer, exclusive for the collector."""

    def __init__(self, path: Path, *, exclusive: bool = False, timeout: float = 0) -> None:
        self._path = path
        self._exclusive = exclusive
        self._timeout = timeout
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
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Hold:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
