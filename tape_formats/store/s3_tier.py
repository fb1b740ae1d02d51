"""The object-store tier of a chunk store: chunks copied to an S3 bucket, fetched back on
demand into the local store (which is then the cache).

A chunk's object name is ``<prefix>/chunks/<hex id>`` and its body is the chunk's stored
bytes as the local store keeps them in its pack (flag byte and payload:
``ChunkStore.read_stored``), so the same bytes verify the same way on either side; the bucket
keeps one object per chunk, not packs. Uploads are
conditional (``If-None-Match: *``): a chunk another gateway or an earlier push already put is
answered 412 and skipped, never rewritten, so a push never overwrites and can be retried or
run by several writers at once. ``vtl store push/pull`` run it for a whole store, ``vtl
cartridge archive/retrieve`` for one cartridge's chunks (vtl/archive.py); a library with
``upload = "auto"`` sends new packs' chunks as they become durable (s3_cache.py, the same
objects). The tests run it
against a real single-node Ceph radosgw (tests/support/ceph_cluster.py).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tape_formats.store.chunk_store import ChunkStore, StoreError
from tape_formats.store.s3_cache import CacheState, chunk_key
from tape_formats.store.s3_objects import ObjectLock, md5_b64


@dataclass(slots=True)
class PushReport:
    uploaded: int = 0
    already_there: int = 0
    bytes_uploaded: int = 0
    in_bucket: list[bytes] = field(default_factory=list)  # ids the bucket now holds


def push(store: ChunkStore, client: Any, bucket: str, prefix: str,
         ids: Iterable[bytes] | None = None, *, lock: ObjectLock | None = None) -> PushReport:
    """Upload the chunks ``ids`` (default: every chunk of the store) the bucket lacks, each
    with its Content-MD5 (and ``lock``'s retention, for a WORM cartridge's chunks)."""
    from botocore.exceptions import ClientError

    report = PushReport()
    for cid in ids if ids is not None else store.ids():
        body = store.read_stored(cid)
        if body is None:
            raise StoreError(f"chunk {cid.hex()} is missing from {store.root}")
        try:
            client.put_object(Bucket=bucket, Key=chunk_key(prefix, cid), Body=body,
                              IfNoneMatch="*", ContentMD5=md5_b64(body),
                              **(lock.put_args() if lock else {}))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                report.already_there += 1
                report.in_bucket.append(cid)
                continue
            raise
        report.uploaded += 1
        report.bytes_uploaded += len(body)
        report.in_bucket.append(cid)
    return report


def evict(store: ChunkStore, ids: Iterable[bytes]) -> tuple[int, int]:
    """Drop the local copies of chunks the bucket holds (after a push), so the store is a
    cache: a read fetches them back (S3ChunkRemote). Returns (chunks, bytes) dropped; the
    packs' space returns at the next ``vtl store gc`` (compaction)."""
    return store.discard(list(ids))


def pull(store: ChunkStore, client: Any, bucket: str, prefix: str,
         ids: Iterable[bytes]) -> int:
    """Fetch the chunks ``ids`` the local store lacks; returns how many came down. Each
    is kept as a written chunk is (a pack record, indexed at the store's sync)."""
    from botocore.exceptions import ClientError

    fetched = 0
    for cid in ids:
        if store.has(cid):
            continue
        try:
            body = client.get_object(Bucket=bucket, Key=chunk_key(prefix, cid))["Body"].read()
        except ClientError as exc:
            raise StoreError(f"chunk {cid.hex()} is in neither {store.root} nor "
                             f"s3://{bucket}/{prefix}: {exc}") from None
        store.put_stored(cid, body)
        fetched += 1
    if fetched:
        store.sync()
    return fetched


class S3ChunkRemote:
    """The bucket as the source of chunks a read finds missing locally (the Remote of
    chunk_store.py): a missing chunk is fetched while the reader waits, the next ones of
    the cartridge (``prefetch``) on a few threads meanwhile, so a restore of one tape file
    GETs its own chunks and a read-ahead window, not the cartridge. Fetched chunks stay in
    the local store (the cache: appended to its pack, indexed at its next sync or close) and
    are recorded in ``state`` as in the bucket (so the uploader never sends them back).
    ``on_synced`` is called when a store of this remote made new chunks durable (the
    uploader's cue). ``gets`` counts the GETs (tests, stats)."""

    def __init__(self, connect: Callable[[], Any], bucket: str, prefix: str,
                 workers: int = 4, *, state: CacheState | None = None,
                 on_synced: Callable[[], None] | None = None) -> None:
        self._connect = connect
        self._state = state
        self._on_synced = on_synced
        self._client: Any = None
        self.bucket, self.prefix = bucket, prefix
        self._lock = threading.Lock()
        self._inflight: dict[bytes, Future] = {}
        self._seen: set[bytes] = set()  # ids known to be local (checked or fetched)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="chunk-fetch")
        self.gets = 0

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _get(self, store: ChunkStore, cid: bytes) -> bytes:
        from botocore.exceptions import ClientError

        try:
            body = self._s3().get_object(Bucket=self.bucket, Key=chunk_key(self.prefix, cid)
                                         )["Body"].read()
        except ClientError as exc:
            raise StoreError(f"chunk {cid.hex()} is in neither {store.root} nor "
                             f"s3://{self.bucket}/{self.prefix}: {exc}") from None
        with self._lock:
            self.gets += 1
        try:  # the cached copy is a convenience: the bytes in hand are the answer
            store.put_stored(cid, body)
            if self._state is not None:
                self._state.record([(cid, len(body))])
        except (OSError, sqlite3.Error):
            pass
        with self._lock:
            self._seen.add(cid)
        return body

    def fetch(self, store: ChunkStore, chunk_id: bytes) -> bytes:
        with self._lock:
            pending = self._inflight.get(chunk_id)
        if pending is not None:
            try:
                return pending.result()
            except Exception:  # a failed read-ahead: try again in the open
                pass
        cached = store.read_stored(chunk_id)  # a read-ahead may have brought it meanwhile
        return cached if cached is not None else self._get(store, chunk_id)

    def prefetch(self, store: ChunkStore, ids: Sequence[bytes]) -> None:
        for cid in ids:
            with self._lock:
                if cid in self._seen or cid in self._inflight:
                    continue
                self._seen.add(cid)
            if store.has(cid):
                continue
            future = self._pool.submit(self._get, store, cid)
            with self._lock:
                self._inflight[cid] = future
            future.add_done_callback(lambda _f, c=cid: self._done(c))

    def synced(self, store: ChunkStore) -> None:
        if self._on_synced is not None:
            self._on_synced()

    def _done(self, cid: bytes) -> None:
        with self._lock:
            self._inflight.pop(cid, None)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
