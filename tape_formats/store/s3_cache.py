"""The local chunk store as a bounded cache of an S3 bucket: what is uploaded, what may go.

A library with ``[s3] upload = "auto"`` writes its chunks into local packs as any dedup
library does; this module moves them to the bucket and keeps the local copies under
``[s3] cache_size``. It owns ``<store>/s3_cache.sqlite`` (WAL):

- ``scanned(pack, upto)``: every whole record of the local pack below byte ``upto`` is in
  the bucket. An upload pass reads each pack past its ``upto`` (a pack a writer still
  appends to as far as its records are whole), puts the records the bucket does not hold
  into pack objects of up to 8 MiB with their manifests (s3_packs.py; up to
  ``UPLOAD_THREADS`` sent at once), then advances ``upto`` past each object's records in
  order. A pack no writer holds (no flock) whose scan stops short of
  its end has a torn tail (a crash's): ``upto`` becomes its size.
- ``in_bucket(id, stored, pack, offset)``: chunks known to be in the bucket and, when known,
  where (pack object and record offset): uploaded from here, read from another gateway's
  manifest (``manifests``: the manifests read), or fetched from it. So a pack rewritten by
  compaction or filled by fetches is scanned without sending its chunks again, a reader
  finds a chunk's byte range without asking the bucket, and ``vtl store stats`` can say
  how much the bucket holds. Rows of a state from before pack objects have no pack: their
  chunks are ``<prefix>/chunks/<hex>`` objects.

A crash anywhere loses only progress: rows are committed after the objects they record are
up, so the next pass sends again what was up but not recorded (a spare pack object whose
chunks are also elsewhere: the bucket collector removes it once nothing names it).

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
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tape_formats.store import pack as packs
from tape_formats.store import s3_packs
from tape_formats.store.chunk_store import ChunkStore
from tape_formats.store.s3_objects import DEFAULT_PART
from tape_formats.store.s3_packs import Where

STATE_NAME = "s3_cache.sqlite"
UPLOAD_THREADS = 4  # pack objects in flight during a pass (radosgw takes them in parallel)
REFRESH_SECONDS = 60.0  # an upload pass reads new manifests at least this often
_LOOKUP = 500


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
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(in_bucket)")}
            if "pack" not in columns:  # a state from before pack objects: rows stay valid
                self._db.execute("ALTER TABLE in_bucket ADD COLUMN pack TEXT")
                self._db.execute("ALTER TABLE in_bucket ADD COLUMN offset INTEGER")
            self._db.execute("CREATE INDEX IF NOT EXISTS in_bucket_pack ON in_bucket(pack)")
            self._db.execute("CREATE TABLE IF NOT EXISTS manifests (pack TEXT PRIMARY KEY) "
                             "WITHOUT ROWID")
            self._db.execute("CREATE TABLE IF NOT EXISTS refreshed (what TEXT PRIMARY KEY, "
                             "mark TEXT NOT NULL, at REAL NOT NULL)")

    def scanned(self) -> dict[int, int]:
        with self._lock:
            return dict(self._db.execute("SELECT pack, upto FROM scanned"))

    def known(self, ids: Sequence[bytes]) -> set[bytes]:
        """Those of ``ids`` known to be in a pack object of the bucket (a chunk of the
        per-chunk layout is sent again, into a pack: the collector may have taken it)."""
        found: set[bytes] = set()
        with self._lock:
            for i in range(0, len(ids), _LOOKUP):
                part = ids[i:i + _LOOKUP]
                marks = ",".join("?" * len(part))
                found.update(r[0] for r in self._db.execute(
                    f"SELECT id FROM in_bucket WHERE id IN ({marks}) AND pack IS NOT NULL",
                    part))
        return found

    def record(self, chunks: Iterable[tuple[bytes, int]], pack: int | None = None,
               upto: int = 0) -> None:
        """Chunks now in the bucket (where unknown), and (with ``pack``) the local pack's
        scan progress: one transaction."""
        self._write(((cid, stored, None, None) for cid, stored in chunks), pack, upto)

    def add_locations(self, found: Sequence[tuple[bytes, Where]], manifest: str | None = None,
                      pack: int | None = None, upto: int = 0) -> None:
        """Chunks now known in pack objects (uploaded, or read from a manifest: then
        ``manifest`` is marked read), and the local pack's scan progress: one transaction.
        The pack last learnt of is where a chunk is looked for (a collection's rewrite of a
        pack is newer than the pack)."""
        self._write(((cid, w.stored, w.pack, w.offset) for cid, w in found), pack, upto,
                    manifest)

    def _write(self, rows: Iterable[tuple[bytes, int, str | None, int | None]],
               pack: int | None, upto: int, manifest: str | None = None) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO in_bucket (id, stored, pack, offset) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET pack = excluded.pack, "
                    "offset = excluded.offset WHERE excluded.pack IS NOT NULL", rows)
                if pack is not None:
                    self._db.execute("INSERT OR REPLACE INTO scanned VALUES (?, ?)",
                                     (pack, upto))
                if manifest is not None:
                    self._db.execute("INSERT OR IGNORE INTO manifests VALUES (?)", (manifest,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def locate(self, ids: Sequence[bytes]) -> dict[bytes, Where]:
        """Where those of ``ids`` in a known pack object are."""
        found: dict[bytes, Where] = {}
        with self._lock:
            for i in range(0, len(ids), _LOOKUP):
                part = ids[i:i + _LOOKUP]
                marks = ",".join("?" * len(part))
                for cid, stored, pack, offset in self._db.execute(
                        f"SELECT id, stored, pack, offset FROM in_bucket WHERE id IN ({marks}) "
                        "AND pack IS NOT NULL", part):
                    found[cid] = Where(pack, offset, stored)
        return found

    def last_refresh(self) -> tuple[str, float]:
        """(the bucket's collection mark, time) of the last full reading of the manifests
        by an upload pass (("", 0): none yet)."""
        with self._lock:
            row = self._db.execute("SELECT mark, at FROM refreshed WHERE what = 'manifests'"
                                   ).fetchone()
        return (row[0], row[1]) if row else ("", 0.0)

    def refreshed(self, mark: str, at: float) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO refreshed VALUES ('manifests', ?, ?)",
                             (mark, at))

    def manifests_seen(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT pack FROM manifests")}

    def drop_pack(self, pack: str) -> None:
        """A pack object is gone (collected): forget where its chunks were."""
        with self._lock:
            self._db.execute("DELETE FROM in_bucket WHERE pack = ?", (pack,))
            self._db.execute("DELETE FROM manifests WHERE pack = ?", (pack,))

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

    def bucket_packs(self) -> int:
        """Pack objects known to hold chunks (uploaded here or read from manifests)."""
        with self._lock:
            return int(self._db.execute("SELECT count(DISTINCT pack) FROM in_bucket "
                                        "WHERE pack IS NOT NULL").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(slots=True)
class UploadReport:
    uploaded: int = 0  # chunks put into pack objects
    already_there: int = 0  # known in the bucket from before
    packs_put: int = 0  # pack objects (and manifests) put
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


def upload_pending(store: ChunkStore, state: CacheState, client: Any, bucket: str,
                   prefix: str, *, part_size: int = DEFAULT_PART) -> UploadReport:
    """One pass: every pack's records past its ``upto`` into the bucket (module docstring)."""
    report = UploadReport()
    _refresh(state, client, bucket, prefix)
    done = state.scanned()
    present = set()
    with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="pack-upload") as pool:
        for number, path in store.pack_files():
            present.add(number)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                _upload_pack(fd, number, done.get(number, 0), state, pool,
                             _Target(client, bucket, prefix, part_size), report)
            finally:
                os.close(fd)
    state.forget_packs(n for n in done if n not in present)
    return report


def _refresh(state: CacheState, client: Any, bucket: str, prefix: str) -> None:
    """The bucket's chunk table as of now (no collection runs during a pass): the packs
    collected since the last reading forgotten, those other gateways put read (their
    chunks are not sent again). The LIST of every manifest runs when the collection mark
    (s3_packs.collected_mark) has changed, or ``REFRESH_SECONDS`` after the last one: a
    pass costs one HEAD otherwise. A changed mark also resets every local pack's upload
    progress: a chunk the collection took (nothing named it) may still be in a local pack,
    and a recipe may name it again; the pass then scans the packs again and sends what
    the bucket lacks, before any of them may be evicted."""
    mark = s3_packs.collected_mark(client, bucket, prefix)
    seen, at = state.last_refresh()
    now = time.time()
    if mark != seen:
        state.forget_packs(list(state.scanned()))
    if mark != seen or not 0 <= now - at < REFRESH_SECONDS:
        s3_packs.ChunkMap(state).refresh(client, bucket, prefix, forget=True)
        state.refreshed(mark, now)


@dataclass(frozen=True, slots=True)
class _Target:
    client: Any
    bucket: str
    prefix: str
    part_size: int


def _upload_pack(fd: int, number: int, upto: int, state: CacheState, pool: ThreadPoolExecutor,
                 to: _Target, report: UploadReport) -> None:
    size = os.fstat(fd).st_size
    if size <= upto:
        return
    writing = not packs.try_lock(fd)  # (released when fd closes: nobody reopens a pack)
    data = os.pread(fd, size - upto, upto)
    found = list(packs.records(data))
    known = state.known([cid for _at, cid, _n in found])
    view = memoryview(data)
    # id -> (its record's start and end in ``data``, record): the records were checked by
    # ``packs.records``; they are sent in their encoding as it is
    todo: dict[bytes, tuple[int, int, s3_packs.Record]] = {}
    for at, cid, n in found:
        if cid in known or cid in todo:
            report.already_there += 1
        else:
            flag = view[at + packs.HEADER.size - 5]
            body = view[at + packs.HEADER.size:at + n - packs.CRC_SIZE]
            todo[cid] = (at, at + n, (cid, flag, body))
    end = upto + (found[-1][0] + found[-1][2] if found else 0)
    if not writing and end < size:  # a torn tail no writer will finish
        end = size
    if todo:
        rows = list(todo.values())
        records = [r for _start, _end, r in rows]
        groups = s3_packs.split(records)
        sent = pool.map(lambda g: s3_packs.put_pack(
            to.client, to.bucket, to.prefix, records[g], part_size=to.part_size,
            encoded=_runs(view, rows[g])), groups)
        for i, placed in enumerate(sent):  # progress in order, one pack object at a time
            last = i == len(groups) - 1
            state.add_locations(placed, placed[0][1].pack, pack=number,
                                upto=end if last else upto + rows[groups[i].stop - 1][1])
            report.packs_put += 1
            report.uploaded += len(placed)
            report.bytes_uploaded += sum(w.stored for _cid, w in placed)
    else:
        state.add_locations([], pack=number, upto=end)
    if end >= size and not writing:
        report.packs_done += 1


def _runs(view: memoryview, rows: list[tuple[int, int, s3_packs.Record]]
          ) -> list[memoryview]:
    """The bytes of records [start, end) of ``view``, adjacent ones as one slice."""
    out: list[list[int]] = []
    for start, end, _r in rows:
        if out and out[-1][1] == start:
            out[-1][1] = end
        else:
            out.append([start, end])
    return [view[a:e] for a, e in out]


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
