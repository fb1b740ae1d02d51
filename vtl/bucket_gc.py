"""Garbage collection of a bucket's chunks (``vtl store gc --bucket``): the pack objects
under ``<prefix>/packs/`` whose manifest names no chunk that an archive or a library's local
cartridges name go (with their manifests), and so do the per-chunk objects of the older
layout under ``<prefix>/chunks/`` that nothing names (tape_formats/store/s3_packs.py).

Marks, read from the bucket (every gateway's):
- every archive manifest under ``<prefix>/tapes/`` (any generation, complete ones only): the
  chunks its recipe object names;
- every *reference list* ``<prefix>/refs/<library>``: the chunk ids a library's local
  recipes named when it last pushed (``vtl store push`` and the uploader write it, after
  their uploads), so chunks evicted from a library's cache survive while it uses them;
- the running library's own local recipes.

An object survives when a mark names it (a pack: one of its chunks), when it is younger
than ``grace`` (its LastModified against this machine's clock: uploads of a writer that
started before the collector, clock skew), or when the store keeps it (object lock: it is
skipped, counted). A pack object without a manifest (a crash between its put and its
manifest's, the manifest being put second and deleted first) goes once older than
``grace``. A pack older than ``grace`` whose live records are under half its bytes is
rewritten: its live records are copied into a new pack object (and manifest), then it is
deleted as a dead one (not in a bucket with object lock: there it is only counted, as a
young one is, ``packs_mostly_dead``). A gateway that still maps a chunk to a deleted pack
finds it gone at its next GET and reads the manifests again (s3_packs.fetch_many); a
collection that deleted packs rewrites ``<prefix>/gc/collected`` before its lease goes, and
the next upload pass of every gateway, seeing it changed, lists the manifests and forgets
the packs gone (s3_cache.upload_pending), so no gateway counts a collected chunk as in the
bucket.

Writers and the collector exclude each other in the bucket, as the local store's
``gc.lock`` does on one disk: a writer (an archive from its first chunk to its manifest, a
push from its first chunk to its reference list) first puts a *writer marker*
``<prefix>/gc/writers/<name>-<random>`` (``expires`` one hour on), then reads the
collector's lease ``<prefix>/gc/collector`` and waits while one runs; the collector first
takes that lease (a conditional PUT, vtl/leases.py: one collector at a time), then lists
the markers and refuses while an unexpired one exists. Each puts its own object before it
reads the other's, so (the store being read-after-write consistent, as radosgw and S3 are)
at least one of the two sees the other: no chunk is deleted between a writer finding it in
the bucket (named by a pack manifest it read) and the object naming it (an archive
manifest, a reference list). A writer killed
meanwhile leaves a marker that blocks collection until it expires.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tape_formats.store import s3_packs
from vtl.errors import LibraryError
from vtl.leases import CartridgeLeased, LeaseStore

GC_FOLDER = "gc"
COLLECTOR = "collector"
COLLECTOR_TTL = 3600  # seconds a collection may run before another may take over
WRITER_TTL = 3600  # seconds a writer marker blocks collection unless deleted earlier
REFS_DIR = "refs"
DEFAULT_GRACE = 3600.0
ID_SIZE = 32
DELETE_BATCH = 1000  # keys per DeleteObjects request (S3's most)


def library_name(gateway: str, root: Path) -> str:
    """How a library signs its writer markers and reference list: its gateway name, else
    this host and a hash of its root."""
    import socket

    import blake3

    if gateway:
        return gateway
    digest = blake3.blake3(str(Path(root).resolve()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}-{digest}"


class BucketBusy(LibraryError):
    """Another collector runs, or a writer is between its first chunk and its manifest."""


@dataclass
class BucketGcReport:
    archives: int = 0
    reference_lists: int = 0
    chunks_marked: int = 0
    chunks_kept: int = 0  # live chunks found (in pack objects or per-chunk objects)
    chunks_young: int = 0  # per-chunk objects spared by the grace
    chunks_locked: int = 0
    chunks_deleted: int = 0  # per-chunk objects, and chunks of pack objects, deleted
    bytes_deleted: int = 0
    packs_kept: int = 0
    packs_young: int = 0  # dead (or without a manifest) but younger than the grace
    packs_locked: int = 0
    packs_deleted: int = 0
    packs_rewritten: int = 0  # less than half of their bytes live: copied, then deleted
    packs_mostly_dead: int = 0  # as those, but young or locked: kept as they are
    bytes_dead_in_kept: int = 0  # the dead records' bytes in those


def _key(prefix: str, *parts: str) -> str:
    return "/".join(p for p in (prefix, *parts) if p)


def _collector_lease(client: Any, bucket: str, prefix: str, who: str) -> LeaseStore:
    return LeaseStore(client, bucket, prefix, who, COLLECTOR_TTL, folder=GC_FOLDER)


def _list(client: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


# ---- writers ---------------------------------------------------------------------------------
@contextlib.contextmanager
def uploading(client: Any, bucket: str, prefix: str, who: str, *, wait: float = 60.0
              ) -> Iterator[None]:
    """Hold a writer marker while the body uploads chunks and the object naming them; waits
    up to ``wait`` seconds for a running collection to end (BucketBusy after)."""
    key = _key(prefix, GC_FOLDER, "writers", f"{who}-{secrets.token_hex(4)}")
    body = json.dumps({"writer": who, "expires": time.time() + WRITER_TTL}).encode()
    client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    try:
        deadline = time.monotonic() + wait
        while (running := _collector_lease(client, bucket, prefix, who).read(COLLECTOR)
               ) is not None and not running.free(COLLECTOR_TTL):
            if time.monotonic() > deadline:
                raise BucketBusy(f"a bucket collection by {running.gateway} is running "
                                 f"(until {running.until()} at the latest); try again later")
            time.sleep(0.5)
        yield
    finally:
        client.delete_object(Bucket=bucket, Key=key)


def put_references(client: Any, bucket: str, prefix: str, who: str, ids: Iterable[bytes]
                   ) -> None:
    """The reference list of library ``who``: the chunk ids its local cartridges name."""
    body = b"".join(sorted(set(ids)))
    client.put_object(Bucket=bucket, Key=_key(prefix, REFS_DIR, who), Body=body)


# ---- the collector ---------------------------------------------------------------------------
def collect(client: Any, bucket: str, prefix: str, who: str, *,
            local_ids: Iterable[bytes] = (), grace: float = DEFAULT_GRACE) -> BucketGcReport:
    """Delete the pack objects (and older per-chunk objects) nothing marks, rewrite the
    mostly dead packs (see the module doc); BucketBusy when another collector or a writer
    is at work."""
    leases = _collector_lease(client, bucket, prefix, f"{who}:{secrets.token_hex(3)}")
    try:  # (a name of this run: a second run of the same library is refused too)
        lease = leases.take(COLLECTOR)
    except CartridgeLeased:
        held = leases.read(COLLECTOR)
        raise BucketBusy(f"another bucket collection (by {held.gateway if held else '?'}) "
                         f"is running") from None
    try:
        _check_no_writer(client, bucket, prefix)
        start = time.time()
        chunks = list(_list(client, bucket, _key(prefix, "chunks") + "/"))
        pack_objects = list(_list(client, bucket, _key(prefix, s3_packs.PACKS) + "/"))
        report = BucketGcReport()
        marks = _marks(client, bucket, prefix, report)
        marks.update(local_ids)
        report.chunks_marked = len(marks)
        locking = _object_lock_enabled(client, bucket)
        _sweep(client, bucket, chunks, marks, start - grace, locking, report)
        _sweep_packs(client, bucket, prefix, pack_objects, marks, start - grace, locking,
                     report)
        if report.packs_deleted:  # (before the lease goes: a writer then sees it)
            client.put_object(Bucket=bucket, Key=s3_packs.collected_key(prefix),
                              Body=json.dumps({"by": who, "at": time.time()}).encode(),
                              ContentType="application/json")
        return report
    finally:
        # deleted rather than written released: it needs no generation, and in a versioned
        # bucket (radosgw refuses If-Match there) a release would fail and block for an hour
        if (now := leases.read(COLLECTOR)) is not None and now.gateway == lease.gateway:
            client.delete_object(Bucket=bucket, Key=leases.key(COLLECTOR))


def _check_no_writer(client: Any, bucket: str, prefix: str) -> None:
    now = time.time()
    for obj in _list(client, bucket, _key(prefix, GC_FOLDER, "writers") + "/"):
        try:
            doc = json.loads(client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
        except Exception:  # deleted meanwhile: that writer is done
            continue
        if float(doc.get("expires", 0)) > now:
            raise BucketBusy(f"{doc.get('writer', 'a writer')} is uploading chunks to the "
                             f"bucket (since {obj['LastModified']:%Y-%m-%dT%H:%M:%SZ}); "
                             f"try again later")


def _marks(client: Any, bucket: str, prefix: str, report: BucketGcReport) -> set[bytes]:
    from vtl.archive import MANIFEST

    marks: set[bytes] = set()
    for obj in _list(client, bucket, _key(prefix, "tapes") + "/"):
        if obj["Key"].endswith("/" + MANIFEST):
            report.archives += 1
            marks.update(_archive_chunks(client, bucket, obj["Key"].rsplit("/", 1)[0]))
    for obj in _list(client, bucket, _key(prefix, REFS_DIR) + "/"):
        report.reference_lists += 1
        body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        marks.update(body[i:i + ID_SIZE] for i in range(0, len(body), ID_SIZE))
    return marks


def _archive_chunks(client: Any, bucket: str, base: str) -> list[bytes]:
    """The chunk ids the recipe of the archive at ``base`` names (none: a plain cartridge)."""
    from tape_formats.store import recipe as recipes
    from vtl.archive import read_manifest

    manifest = read_manifest(client, f"s3://{bucket}/{base}") or {}
    ids: list[bytes] = []
    for entry in manifest.get("files", []):
        if entry["name"].endswith(".recipe"):
            with tempfile.TemporaryDirectory(prefix="vtl-gc-") as tmp:
                path = Path(tmp) / entry["name"]
                path.write_bytes(client.get_object(Bucket=bucket, Key=f"{base}/{entry['name']}"
                                                   )["Body"].read())
                ids.extend(recipes.load(path).ch_ids)
    return ids


def _sweep(client: Any, bucket: str, chunks: list[dict[str, Any]], marks: set[bytes],
           older_than: float, locking: bool, report: BucketGcReport) -> None:
    """Delete the unmarked per-chunk objects older than ``older_than``, DELETE_BATCH at a
    time (one DeleteObjects request each); with object lock (``locking``), each is HEADed
    first."""
    doomed: list[dict[str, Any]] = []
    for obj in chunks:
        try:
            cid = bytes.fromhex(obj["Key"].rsplit("/", 1)[1])
        except ValueError:
            cid = b""
        if cid in marks:
            report.chunks_kept += 1
        elif obj["LastModified"].timestamp() > older_than:
            report.chunks_young += 1
        elif locking and _locked(client, bucket, obj["Key"]):
            report.chunks_locked += 1
        else:
            doomed.append(obj)
    for at in range(0, len(doomed), DELETE_BATCH):
        _delete_batch(client, bucket, doomed[at:at + DELETE_BATCH], report)


def _sweep_packs(client: Any, bucket: str, prefix: str, objects: list[dict[str, Any]],
                 marks: set[bytes], older_than: float, locking: bool,
                 report: BucketGcReport) -> None:
    """Delete the pack objects older than ``older_than`` whose manifest names no marked
    chunk, or that have no manifest (a crash between the two puts, or between the two
    deletes): manifests first, then packs, so a manifest always names a pack that is there.
    Then rewrite those older than ``older_than`` whose live records are under half their
    bytes (not in a bucket with object lock: counted only)."""
    doomed: list[tuple[dict[str, Any], int]] = []  # (pack object, chunks it held)
    sparse: list[tuple[dict[str, Any], list[tuple[bytes, s3_packs.Where]]]] = []
    for obj in objects:
        name = obj["Key"].rsplit("/", 1)[1]
        rows = s3_packs.read_manifest(client, bucket, prefix, name) or []
        live = [(cid, w) for cid, w in rows if cid in marks]
        young = obj["LastModified"].timestamp() > older_than
        if live:
            report.packs_kept += 1
            report.chunks_kept += len(live)
            dead = obj["Size"] - sum(w.size for _cid, w in live)
            if dead * 2 > obj["Size"]:
                if young or locking:
                    report.packs_mostly_dead += 1
                    report.bytes_dead_in_kept += dead
                else:
                    sparse.append((obj, live))
                    report.chunks_deleted += len(rows) - len(live)
        elif young:
            report.packs_young += 1
        elif locking and _locked(client, bucket, obj["Key"]):
            report.packs_locked += 1
        else:
            doomed.append((obj, len(rows)))
    for obj, live in sparse:
        new = _rewrite(client, bucket, prefix, live)
        doomed.append((obj, 0))
        report.packs_rewritten += 1
        report.bytes_deleted -= new
    _delete_packs(client, bucket, prefix, doomed, report)


def _rewrite(client: Any, bucket: str, prefix: str,
             live: list[tuple[bytes, s3_packs.Where]]) -> int:
    """The live records of a mostly dead pack into a new pack object (with its manifest,
    before the old one goes: a crash between leaves both, and the old one is rewritten
    again next time); returns the new pack's size. A gateway that still maps a chunk to
    the old pack finds it gone at its next GET and reads the new manifest."""
    got: dict[bytes, bytes] = {}
    for run in s3_packs.runs(live):
        part = s3_packs.get_run(client, bucket, prefix, run)
        if part is None:
            raise LibraryError(f"pack {run[0][1].pack} vanished while it was collected")
        got.update(part)
    records = [(cid, got[cid][0], memoryview(got[cid])[1:]) for cid, _w in live]
    placed = s3_packs.put_pack(client, bucket, prefix, records)
    return sum(w.size for _cid, w in placed)


def _delete_packs(client: Any, bucket: str, prefix: str,
                  doomed: list[tuple[dict[str, Any], int]], report: BucketGcReport) -> None:
    """Manifests first, then their packs, DELETE_BATCH at a time."""
    for at in range(0, len(doomed), DELETE_BATCH):
        batch = doomed[at:at + DELETE_BATCH]
        names = [o["Key"].rsplit("/", 1)[1] for o, _n in batch]
        kept = _delete_keys(client, bucket, [s3_packs.manifest_key(prefix, n) for n in names])
        gone = [(o, n) for (o, n), name in zip(batch, names, strict=True)
                if s3_packs.manifest_key(prefix, name) not in kept]
        kept = _delete_keys(client, bucket, [o["Key"] for o, _n in gone])
        for obj, n in gone:
            if obj["Key"] in kept:
                report.packs_locked += 1
                continue
            report.packs_deleted += 1
            report.chunks_deleted += n
            report.bytes_deleted += obj["Size"]
        report.packs_locked += len(batch) - len(gone)


def _delete_keys(client: Any, bucket: str, keys: list[str]) -> set[str]:
    """Delete ``keys`` (one request); returns those the store keeps (object lock)."""
    if not keys:
        return set()
    r = client.delete_objects(Bucket=bucket, Delete={
        "Objects": [{"Key": k} for k in keys], "Quiet": True})
    kept = set()
    for e in r.get("Errors", []):
        if e.get("Code") != "AccessDenied":
            raise LibraryError(f"deleting s3://{bucket}/{e['Key']}: {e.get('Code')}")
        kept.add(e["Key"])
    return kept


def _delete_batch(client: Any, bucket: str, objs: list[dict[str, Any]],
                  report: BucketGcReport) -> None:
    kept = _delete_keys(client, bucket, [o["Key"] for o in objs])
    for obj in objs:
        if obj["Key"] in kept:  # locked after all
            report.chunks_locked += 1
        else:
            report.chunks_deleted += 1
            report.bytes_deleted += obj["Size"]


def _object_lock_enabled(client: Any, bucket: str) -> bool:
    from tape_formats.store.s3_objects import error_code

    try:
        conf = client.get_object_lock_configuration(Bucket=bucket)
    except Exception as exc:
        if error_code(exc) in ("ObjectLockConfigurationNotFoundError", "NoSuchKey", "404",
                               "InvalidRequest", "NotImplemented"):
            return False
        raise
    return conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"


def _locked(client: Any, bucket: str, key: str) -> bool:
    """Whether the store keeps the object (a retention not yet over, or a legal hold): in a
    versioned bucket a DELETE would only hide it behind a delete marker."""
    from datetime import UTC, datetime

    head = client.head_object(Bucket=bucket, Key=key)
    until = head.get("ObjectLockRetainUntilDate")
    return (until is not None and until > datetime.now(UTC)) or \
        head.get("ObjectLockLegalHoldStatus") == "ON"
