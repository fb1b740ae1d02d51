"""The object-store tier of a chunk store: chunks copied to an S3 bucket in pack objects,
fetched back on demand into the local store (which is then the cache).

The bucket's layout is s3_packs.py's: pack objects ``<prefix>/packs/<id>`` of several MiB
holding chunks as records (the local pack encoding: the stored bytes, ``ChunkStore.
read_stored``, with the chunk id and a CRC32C), each with a manifest ``<prefix>/manifests/
<id>``; chunks of stores from before pack objects (``<prefix>/chunks/<hex>``) are still
read. Nothing in the bucket is ever overwritten (``If-None-Match: *``): a push sends the
chunks the bucket does not hold as far as the manifests it has read say, so two writers
racing only store a chunk twice (the bucket collector, vtl/bucket_gc.py, frees the spare).
``vtl store push/pull`` run it for a whole store, ``vtl cartridge archive/retrieve`` for one
cartridge's chunks (vtl/archive.py); a library with ``upload = "auto"`` sends new packs'
chunks as they become durable (s3_cache.py, the same objects). The tests run it against a
real single-node Ceph radosgw (tests/support/ceph_cluster.py).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tape_formats.store import s3_packs
from tape_formats.store.chunk_store import ChunkStore, StoreError
from tape_formats.store.pack import RAW, ZSTD
from tape_formats.store.s3_cache import STATE_NAME, CacheState
from tape_formats.store.s3_objects import DEFAULT_PART, ObjectLock
from tape_formats.store.s3_packs import ChunkMap

FETCH_BATCH = 256  # chunks asked for at once by a pull
REFRESH_EVERY = 1.0  # seconds between two readings of new manifests by a reader


@dataclass(slots=True)
class PushReport:
    uploaded: int = 0
    already_there: int = 0
    bytes_uploaded: int = 0
    packs_put: int = 0
    in_bucket: list[bytes] = field(default_factory=list)  # ids the bucket now holds


def _state_of(store: ChunkStore) -> CacheState | None:
    """The store's record of what the bucket holds, when it has one and may write it."""
    if not (store.root / STATE_NAME).exists():
        return None
    try:
        return CacheState(store.root)
    except (OSError, sqlite3.Error):
        return None


def push(store: ChunkStore, client: Any, bucket: str, prefix: str,
         ids: Iterable[bytes] | None = None, *, lock: ObjectLock | None = None,
         part_size: int = DEFAULT_PART) -> PushReport:
    """Upload the chunks ``ids`` (default: every chunk of the store) the bucket lacks, in
    pack objects (``lock``'s retention on them, for a WORM cartridge's chunks)."""
    report = PushReport()
    state = _state_of(store)
    try:
        chunk_map = ChunkMap(state)
        chunk_map.refresh(client, bucket, prefix, forget=True)  # the bucket's chunk table
        todo: list[s3_packs.Record] = []
        wanted = list(dict.fromkeys(ids if ids is not None else store.ids()))
        there = chunk_map.locate(wanted)
        local = store.index.lookup(wanted)  # sent in the order written: a stream's order,
        far = (1 << 64, 0)  # so a restore's chunks are adjacent in the pack objects
        for cid in sorted(wanted, key=lambda c: (local[c].pack, local[c].offset)
                          if c in local else far):
            if cid in there:
                report.already_there += 1
                continue
            body = store.read_stored(cid)
            if body is None:
                raise StoreError(f"chunk {cid.hex()} is missing from {store.root}")
            todo.append((cid, body[0], memoryview(body)[1:]))
            report.bytes_uploaded += len(body)
        if todo:
            with ThreadPoolExecutor(4, thread_name_prefix="pack-push") as pool:
                for placed in pool.map(
                        lambda g: s3_packs.put_pack(client, bucket, prefix, todo[g],
                                                    part_size=part_size, lock=lock),
                        s3_packs.split(todo)):
                    chunk_map.add(placed, placed[0][1].pack)
                    report.packs_put += 1
        report.uploaded = len(todo)
        report.in_bucket = wanted
    finally:
        if state is not None:
            state.close()
    return report


def evict(store: ChunkStore, ids: Iterable[bytes]) -> tuple[int, int]:
    """Drop the local copies of chunks the bucket holds (after a push), so the store is a
    cache: a read fetches them back (S3ChunkRemote). Returns (chunks, bytes) dropped; the
    packs' space returns at the next ``vtl store gc`` (compaction)."""
    return store.discard(list(ids))


def _fetched(store: ChunkStore, bucket: str, prefix: str, ids: Sequence[bytes],
             fetch: Callable[[], dict[bytes, bytes]]) -> dict[bytes, bytes]:
    """``fetch()``, a failure to reach the bucket or a damaged range as a StoreError (the
    medium error a reader reports), naming the first chunk asked for."""
    try:
        return fetch()
    except StoreError:
        raise
    except Exception as exc:  # botocore's errors, a damaged pack object
        raise StoreError(f"chunk {ids[0].hex()} and {len(ids) - 1} more: not in {store.root}, "
                         f"and fetching from s3://{bucket}/{prefix} failed: {exc}") from None


def _keep(store: ChunkStore, got: dict[bytes, bytes]) -> None:
    """Fetched chunks (stored bytes) into the local store, those it lacks, with one write;
    durable and indexed at its next sync."""
    ids = list(got)
    records = [(ids[i], got[ids[i]][0], memoryview(got[ids[i]])[1:])
               for i in store.lacking(ids)]
    for cid, flag, _body in records:
        if flag not in (RAW, ZSTD):
            raise StoreError(f"chunk {cid.hex()}: not a stored chunk")
    if records:
        store.append_many(records)


def pull(store: ChunkStore, client: Any, bucket: str, prefix: str,
         ids: Iterable[bytes]) -> int:
    """Fetch the chunks ``ids`` the local store lacks; returns how many came down. Each
    is kept as a written chunk is (a pack record, indexed at the store's sync)."""
    wanted = [cid for cid in dict.fromkeys(ids) if not store.has(cid)]
    state = _state_of(store)
    try:
        chunk_map = ChunkMap(state)
        for i in range(0, len(wanted), FETCH_BATCH):
            part = wanted[i:i + FETCH_BATCH]
            got = _fetched(store, bucket, prefix, part, lambda p=part: s3_packs.fetch_many(
                client, bucket, prefix, chunk_map, p))
            for cid in part:
                if cid not in got:
                    raise StoreError(f"chunk {cid.hex()} is in neither {store.root} nor "
                                     f"s3://{bucket}/{prefix}")
            _keep(store, got)
    finally:
        if state is not None:
            state.close()
    if wanted:
        store.sync()
    return len(wanted)


class S3ChunkRemote:
    """The bucket as the source of chunks a read finds missing locally (the Remote of
    chunk_store.py): a missing chunk is fetched while the reader waits, the next ones of
    the cartridge (``prefetch``) on a few threads meanwhile, records adjacent in a pack
    object with one ranged GET, so a restore of one tape file GETs byte ranges of its own
    chunks and a read-ahead window, not the cartridge. Fetched chunks stay in the local
    store (the cache: appended to its pack, indexed at its next sync or close) and are
    recorded in ``state`` as in the bucket (so the uploader never sends them back).
    ``on_synced`` is called when a store of this remote made new chunks durable (the
    uploader's cue). ``gets`` counts the GETs of chunk data, ``chunks_fetched`` the chunks
    they brought (tests, stats)."""

    def __init__(self, connect: Callable[[], Any], bucket: str, prefix: str,
                 workers: int = 4, *, state: CacheState | None = None,
                 on_synced: Callable[[], None] | None = None) -> None:
        self._connect = connect
        self._state = state
        self._map = ChunkMap(state)
        self._on_synced = on_synced
        self._client: Any = None
        self.bucket, self.prefix = bucket, prefix
        self._lock = threading.Lock()
        self._inflight: dict[bytes, Future[dict[bytes, bytes]]] = {}
        self._seen: set[bytes] = set()  # ids known to be local (checked or fetched)
        self._refreshed = 0.0
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="chunk-fetch")
        self.gets = 0
        self.chunks_fetched = 0

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _may_refresh(self) -> bool:
        """Read new manifests at most every REFRESH_EVERY seconds (a miss of an id no
        manifest names, as a chunk of the per-chunk layout, would else LIST each time)."""
        with self._lock:
            now = time.monotonic()
            if now - self._refreshed < REFRESH_EVERY:
                return False
            self._refreshed = now
            return True

    def _get(self, store: ChunkStore, ids: Sequence[bytes]) -> dict[bytes, bytes]:
        got = _fetched(store, self.bucket, self.prefix, ids, lambda: s3_packs.fetch_many(
            self._s3(), self.bucket, self.prefix, self._map, ids,
            refreshed=self._may_refresh, counted=self._count))
        try:  # the cached copy is a convenience: the bytes in hand are the answer
            _keep(store, got)
            if self._state is not None:
                self._state.record([(cid, len(body)) for cid, body in got.items()])
        except (OSError, sqlite3.Error):
            pass
        with self._lock:
            self._seen.update(got)
        return got

    def _count(self, chunks: int) -> None:
        with self._lock:
            self.gets += 1
            self.chunks_fetched += chunks

    def fetch(self, store: ChunkStore, chunk_id: bytes) -> bytes:
        with self._lock:
            pending = self._inflight.get(chunk_id)
        if pending is not None:
            try:
                got = pending.result().get(chunk_id)
                if got is not None:
                    return got
            except Exception:  # a failed read-ahead: try again in the open
                pass
        cached = store.read_stored(chunk_id)  # a read-ahead may have brought it meanwhile
        if cached is not None:
            return cached
        got = self._get(store, [chunk_id]).get(chunk_id)
        if got is None:
            raise StoreError(f"chunk {chunk_id.hex()} is in neither {store.root} nor "
                             f"s3://{self.bucket}/{self.prefix}")
        return got

    def prefetch(self, store: ChunkStore, ids: Sequence[bytes]) -> None:
        """Fetch those of ``ids`` not local nor on their way, once they are at least half
        of ``ids`` (so the GETs are of a read-ahead window's adjacent records, not one
        chunk each time the window moves on by one)."""
        with self._lock:
            new = [cid for cid in ids if cid not in self._seen and cid not in self._inflight]
        if not new or len(new) * 2 < len(ids):
            return
        new = [cid for cid in new if not store.has(cid)]
        with self._lock:
            self._seen.update(new)
        if not new:
            return
        future = self._pool.submit(self._get, store, new)
        with self._lock:
            for cid in new:
                self._inflight[cid] = future
        future.add_done_callback(lambda _f, ids=tuple(new): self._done(ids))

    def synced(self, store: ChunkStore) -> None:
        if self._on_synced is not None:
            self._on_synced()

    def _done(self, ids: Sequence[bytes]) -> None:
        with self._lock:
            for cid in ids:
                self._inflight.pop(cid, None)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
