"""The local chunk store as a bounded cache of an S3 bucket: what is uploaded, what may go.

A library with ``[s3] upload = "auto"`` writes its chunks into local packs as any dedup
library does; this module moves them to the bucket and keeps the local copies under
``[s3] cache_size``. It owns ``<store>/s3_cache.sqlite`` (WAL):

- ``scanned(pack, upto)``: every whole record of the pack below byte ``upto`` is in the
  bucket. An upload pass reads each pack past its ``upto`` (a pack a writer still appends
  to as far as its records are whole), PUTs each record's stored bytes to
  ``<prefix>/chunks/<hex>`` with ``If-None-Match: *`` (a 412 means the bucket has it: the
  same as uploaded), then advances ``upto``. A pack no writer holds (no flock) whose scan
  stops short of its end has a torn tail (a crash's): ``upto`` becomes its size.
- ``in_bucket(id, stored)``: chunks known to be in the bucket (uploaded, answered 412, or
  fetched from it), so a pack rewritten by compaction or filled by fetches is scanned
  without sending its chunks again, and ``vtl store stats`` can say how much the bucket
  holds.

A crash anywhere loses only progress: rows are committed after the PUTs they record, so the
next pass sends again (and is answered 412) what was up but not recorded.

Eviction (``evict_to``) removes whole packs, least recently used first (by the pack's
access time, which a reader sets when it opens a pack: chunk_store.py), until the packs
fit in the cache size. A pack goes only when every record of it is in the bucket (``upto``
at its end), it is not empty and no writer holds it (a writer flocks a pack from its
creation until its ``ChunkStore`` closes it, before its first record: a mounted
cartridge's pack is never evicted). Its index rows are removed first, then the file: a
crash between leaves a pack no row points into, which ``vtl store gc`` removes. A reader
that looked a chunk up before the rows went reads it through its open descriptor or, not
finding the pack, fetches it from the bucket (S3ChunkRemote).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tape_formats.store import pack as packs
from tape_formats.store.chunk_store import ChunkStore
from tape_formats.store.s3_objects import error_code, md5_b64

STATE_NAME = "s3_cache.sqlite"
UPLOAD_THREADS = 4  # PUTs in flight during a pass (radosgw answers them in parallel)
BATCH = 64  # records uploaded between two commits of the state
_LOOKUP = 500


def chunk_key(prefix: str, chunk_id: bytes) -> str:
    """The object name of a chunk (the same as s3_tier's pushes and fetches)."""
    return f"{prefix.strip('/')}/chunks/{chunk_id.hex()}".lstrip("/")


class CacheState:
    """``<store>/s3_cache.sqlite``: upload progress per pack and chunks known in the bucket.
    One connection, usable from any thread."""

    def __init__(self, store_root: Path) -> None:
        self._db = sqlite3.connect(Path(store_root) / STATE_NAME, timeout=120,
                                   check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # lost progress is only resent
            self._db.execute("CREATE TABLE IF NOT EXISTS scanned (pack INTEGER PRIMARY KEY, "
                             "upto INTEGER NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS in_bucket (id BLOB PRIMARY KEY, "
                             "stored INTEGER NOT NULL) WITHOUT ROWID")

    def scanned(self) -> dict[int, int]:
        with self._lock:
            return dict(self._db.execute("SELECT pack, upto FROM scanned"))

    def known(self, ids: Sequence[bytes]) -> set[bytes]:
        """Those of ``ids`` known to be in the bucket."""
        found: set[bytes] = set()
        with self._lock:
            for i in range(0, len(ids), _LOOKUP):
                part = ids[i:i + _LOOKUP]
                marks = ",".join("?" * len(part))
                found.update(r[0] for r in self._db.execute(
                    f"SELECT id FROM in_bucket WHERE id IN ({marks})", part))
        return found

    def record(self, chunks: Iterable[tuple[bytes, int]], pack: int | None = None,
               upto: int = 0) -> None:
        """Chunks now in the bucket, and (with ``pack``) the pack's scan progress: one
        transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO in_bucket VALUES (?, ?)", chunks)
                if pack is not None:
                    self._db.execute("INSERT OR REPLACE INTO scanned VALUES (?, ?)",
                                     (pack, upto))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def forget_packs(self, numbers: Iterable[int]) -> None:
        """Drop the progress of packs that are gone (compacted, evicted)."""
        with self._lock:
            self._db.executemany("DELETE FROM scanned WHERE pack = ?", ((n,) for n in numbers))

    def bucket_bytes(self) -> tuple[int, int]:
        """(chunks, stored bytes) known to be in the bucket."""
        with self._lock:
            n, total = self._db.execute("SELECT count(*), total(stored) FROM in_bucket"
                                        ).fetchone()
        return int(n), int(total)

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(slots=True)
class UploadReport:
    uploaded: int = 0  # chunks PUT
    already_there: int = 0  # answered 412 or known from before
    bytes_uploaded: int = 0
    packs_done: int = 0  # packs whose every record is now in the bucket


@dataclass(slots=True)
class CacheReport:
    local_bytes: int = 0  # pack files on disk
    pending_bytes: int = 0  # pack bytes not yet in the bucket
    packs: int = 0
    packs_evicted: int = 0
    chunks_evicted: int = 0
    bytes_evicted: int = 0


def _put(client: Any, bucket: str, key: str, body: bytes) -> bool:
    """One conditional PUT; False when the bucket has the object already (412)."""
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*",
                          ContentMD5=md5_b64(body))
    except Exception as exc:
        if error_code(exc) in ("PreconditionFailed", "412"):
            return False
        raise
    return True


def upload_pending(store: ChunkStore, state: CacheState, client: Any, bucket: str,
                   prefix: str) -> UploadReport:
    """One pass: every pack's records past its ``upto`` into the bucket (module docstring)."""
    report = UploadReport()
    done = state.scanned()
    present = set()
    with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="chunk-upload") as pool:
        for number, path in store.pack_files():
            present.add(number)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                _upload_pack(fd, number, done.get(number, 0), state, pool, client, bucket,
                             prefix, report)
            finally:
                os.close(fd)
    state.forget_packs(n for n in done if n not in present)
    return report


def _upload_pack(fd: int, number: int, upto: int, state: CacheState, pool: ThreadPoolExecutor,
                 client: Any, bucket: str, prefix: str, report: UploadReport) -> None:
    size = os.fstat(fd).st_size
    if size <= upto:
        return
    writing = not packs.try_lock(fd)  # (released when fd closes: nobody reopens a pack)
    data = os.pread(fd, size - upto, upto)
    found = list(packs.records(data))
    for i in range(0, len(found), BATCH):
        batch = found[i:i + BATCH]
        known = state.known([cid for _at, cid, _n in batch])
        todo: list[tuple[bytes, bytes]] = []
        rows: list[tuple[bytes, int]] = []
        for at, cid, _n in batch:
            flag, body = packs.decode(data, at, cid)
            rows.append((cid, 1 + len(body)))
            if cid in known:
                report.already_there += 1
            else:
                todo.append((cid, bytes((flag,)) + bytes(body)))
        sent = pool.map(lambda c: _put(client, bucket, chunk_key(prefix, c[0]), c[1]), todo)
        for (_cid, body), new in zip(todo, sent, strict=True):
            if new:
                report.uploaded += 1
                report.bytes_uploaded += len(body)
            else:
                report.already_there += 1
        last_at, _cid, last_size = batch[-1]
        state.record(rows, number, upto + last_at + last_size)
    end = upto + (found[-1][0] + found[-1][2] if found else 0)
    if not writing and end < size:  # a torn tail no writer will finish
        state.record([], number, size)
        end = size
    if end >= size and not writing:
        report.packs_done += 1


def _last_used(st: os.stat_result) -> float:
    return max(st.st_atime, st.st_mtime)


def cache_report(store: ChunkStore, state: CacheState | None) -> CacheReport:
    """Local pack bytes and how many of them are not in the bucket yet (None: no upload
    state yet, nothing is)."""
    out = CacheReport()
    done = state.scanned() if state is not None else {}
    for number, path in store.pack_files():
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        out.packs += 1
        out.local_bytes += size
        out.pending_bytes += max(0, size - done.get(number, 0))
    return out


def evict_to(store: ChunkStore, state: CacheState, limit: int) -> CacheReport:
    """Evict the least recently used packs the bucket holds whole until the packs take at
    most ``limit`` bytes (module docstring); a pack not uploaded yet or held by a writer
    stays, so the cache may stay above ``limit`` until they are."""
    report = cache_report(store, state)
    if report.local_bytes <= limit:
        return report
    done = state.scanned()
    candidates = []
    for number, path in store.pack_files():
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if st.st_size > 0 and done.get(number, 0) >= st.st_size:
            candidates.append((_last_used(st), number, path))
    gone = []
    for _used, number, path in sorted(candidates):
        if report.local_bytes <= limit:
            break
        freed = _evict_pack(store, number, path, report)
        if freed:
            report.local_bytes -= freed
            gone.append(number)
    if gone:
        store.sync_folder()
        state.forget_packs(gone)
    return report


def _evict_pack(store: ChunkStore, number: int, path: Path, report: CacheReport) -> int:
    """Drop one pack's rows, then the pack; returns the bytes freed (0: left alone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        if not packs.try_lock(fd):  # a writer (or the collector) has it
            return 0
        size = os.fstat(fd).st_size
        ids = [cid for _at, cid, _n in packs.records(os.pread(fd, size, 0))]
        here = [cid for cid, loc in store.index.lookup(ids).items() if loc.pack == number]
        if here:
            store.index.remove(here)
        path.unlink()
    finally:
        os.close(fd)
    report.packs_evicted += 1
    report.chunks_evicted += len(here)
    report.bytes_evicted += size
    return size
