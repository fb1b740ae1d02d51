"""The object-store tier of a chunk store: chunks copied to an S3 bucket, fetched back on
demand into the local store (which is then the cache).

A chunk's object name is ``<prefix>/chunks/<hex id>`` and its body is the chunk file as it
is (flag byte and payload), so the same bytes verify the same way on either side. Uploads are
conditional (``If-None-Match: *``): a chunk another gateway or an earlier push already put is
answered 412 and skipped, never rewritten, so a push never overwrites and can be retried or
run by several writers at once. ``vtl store push/pull`` run it for a whole store, ``vtl
cartridge archive/retrieve`` for one cartridge's chunks (vtl/archive.py). The tests run it
against a real single-node Ceph radosgw (tests/support/ceph_cluster.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tape_formats.store.chunk_store import ChunkStore, StoreError
from tape_formats.store.s3_objects import ObjectLock, md5_b64


@dataclass(slots=True)
class PushReport:
    uploaded: int = 0
    already_there: int = 0
    bytes_uploaded: int = 0


def _key(prefix: str, chunk_id: bytes) -> str:
    return f"{prefix.strip('/')}/chunks/{chunk_id.hex()}".lstrip("/")


def push(store: ChunkStore, client: Any, bucket: str, prefix: str,
         ids: Iterable[bytes] | None = None, *, lock: ObjectLock | None = None) -> PushReport:
    """Upload the chunks ``ids`` (default: every chunk of the store) the bucket lacks, each
    with its Content-MD5 (and ``lock``'s retention, for a WORM cartridge's chunks)."""
    from botocore.exceptions import ClientError

    report = PushReport()
    chunks = ((cid, store.path_of(cid)) for cid in ids) if ids is not None else (
        (cid, path) for cid, path in store.chunk_files() if cid is not None)
    for cid, path in chunks:
        body = path.read_bytes()
        try:
            client.put_object(Bucket=bucket, Key=_key(prefix, cid), Body=body,
                              IfNoneMatch="*", ContentMD5=md5_b64(body),
                              **(lock.put_args() if lock else {}))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                report.already_there += 1
                continue
            raise
        report.uploaded += 1
        report.bytes_uploaded += len(body)
    return report


def pull(store: ChunkStore, client: Any, bucket: str, prefix: str,
         ids: Iterable[bytes]) -> int:
    """Fetch the chunks ``ids`` the local store lacks; returns how many came down. Each
    appears whole or not at all (temporary name, then rename), as a written chunk does."""
    from botocore.exceptions import ClientError

    fetched = 0
    for cid in ids:
        final = store.path_of(cid)
        if final.exists():
            continue
        try:
            body = client.get_object(Bucket=bucket, Key=_key(prefix, cid))["Body"].read()
        except ClientError as exc:
            raise StoreError(f"chunk {cid.hex()} is in neither {store.root} nor "
                             f"s3://{bucket}/{prefix}: {exc}") from None
        final.parent.mkdir(exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        tmp.write_bytes(body)
        os.rename(tmp, final)
        fetched += 1
    if fetched:
        store.sync()
    return fetched
