"""Cartridges archived to an object store and retrieved from it, as AWS Tape Gateway's
archive does: ``vtl cartridge archive`` uploads a cartridge that sits in no drive, records it
in the media catalog as archived (``archived_to = s3://...``) and frees its local files;
``vtl cartridge retrieve`` brings it back, checked, through a mailslot.

Objects of one archive, under ``<prefix>/tapes/<BARCODE>/<archive id>/``: each file of the
cartridge (``<BARCODE>.vtape`` and its sidecars: index, MAM, recipe) under its own name, then
``manifest.json`` (names, sizes, BLAKE3 and ETag of each object), written last: an archive
without a manifest is incomplete. A dedup cartridge's payload chunks go to the library's
shared pack objects (those the bucket lacks, :mod:`tape_formats.store.s3_tier`) and its
skeleton is stored *compact*: the bytes outside the recipe's payload ranges (a dense
skeleton as it is; an older sparse one without its holes, which retrieval puts back). A WORM
cartridge's objects get an S3 object-lock retention (``[s3] worm_lock``,
``worm_retention_days``) and are never deleted by retrieval.

Durability, step by step (docs/store-format.md):
1. a journal entry ``<root>/archive-journal/<BARCODE>.json`` is made durable first;
2. objects are uploaded, each checked (Content-MD5 per part, size and ETag after), under a
   writer marker that keeps a bucket collection out until the manifest is up
   (vtl/bucket_gc.py);
3. the manifest is uploaded and checked;
4. the catalog marks the cartridge archived (one transaction);
5. only then are the local files deleted, and the journal entry.
A crash before 4 leaves the cartridge local and whole; :func:`settle` (run by the next
archive or retrieve, and ``vtl store settle``) then completes the archive if the manifest is
there and still matches the local files, or else aborts its multipart uploads and deletes its
objects. A crash after 4 leaves local files that settle deletes. Retrieval mirrors it:
downloads to ``*.retrieving`` files, checked against the manifest, renamed into place (the
cartridge file last), walked record by record (CRC32C), then the catalog; a crash before the
catalog changes leaves the cartridge archived and settle removes the partial local copy.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tape_formats.durable import fsync_dir
from vtl.bucket_gc import library_name, uploading
from vtl.errors import (
    CartridgeArchived,
    CartridgeInDrive,
    CartridgeMissing,
    DuplicateBarcode,
    LibraryError,
)
from vtl.leases import kept
from vtl.library import CARTRIDGE_DIR, CARTRIDGE_EXT, ElementType
from vtl.s3_settings import S3Settings, split_location

if TYPE_CHECKING:
    from tape_formats.store.recipe import Recipe
    from tape_formats.store.s3_objects import ObjectLock
    from vtl.leases import Lease, LeaseStore
    from vtl.library import Element, Library

JOURNAL_DIR = "archive-journal"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "vtl-archive-1"
# catalog fields a manifest carries, so another gateway's catalog can take the cartridge in
CARRIED_FIELDS = ("media", "capacity", "worm", "write_protected", "state", "pool", "label",
                  "load_count", "used_bytes", "files", "blocks", "last_written",
                  "native_bytes")
_PARTIAL = (".new", ".tmp", ".retrieving")


class ArchiveFailed(LibraryError):
    """An upload, download or check that failed; the cartridge stays where it was."""


@dataclass
class ArchiveReport:
    barcode: str
    url: str
    files: int = 0
    bytes_uploaded: int = 0
    chunks_uploaded: int = 0
    chunks_already_there: int = 0
    locked_until: str | None = None


@dataclass
class SettleReport:
    completed: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)


# ---- local files ---------------------------------------------------------------------------
def _cartridge_dir(lib: Library) -> Path:
    return lib.root / CARTRIDGE_DIR


def _local_files(lib: Library, barcode: str) -> list[Path]:
    """The cartridge file and its sidecars, the cartridge file last (it is renamed in last)."""
    main = f"{barcode}{CARTRIDGE_EXT}"
    found = [p for p in _cartridge_dir(lib).glob(f"{main}*")
             if not p.name.endswith(_PARTIAL)]
    return sorted(found, key=lambda p: (p.name == main, p.name))


def _complement(rec: Recipe, size: int) -> list[tuple[int, int]]:
    """The (offset, length) ranges of a skeleton that hold bytes: all but the payloads."""
    gaps, at = [], 0
    for off, n in zip(rec.ext_off, rec.ext_len, strict=True):
        if off > at:
            gaps.append((at, off - at))
        at = max(at, off + n)
    if size > at:
        gaps.append((at, size - at))
    return gaps


def compact_skeleton(path: Path, rec: Recipe) -> bytes:
    """A dedup skeleton without its holes: the bytes outside the payload ranges, in order
    (a dense skeleton is that already, up to its durable length)."""
    if rec.skeleton is not None:
        with open(path, "rb") as f:
            return os.pread(f.fileno(), rec.skeleton, 0)
    size = path.stat().st_size
    with open(path, "rb") as f:
        return b"".join(os.pread(f.fileno(), n, off) for off, n in _complement(rec, size))


def expand_skeleton(compact: Path, dest: Path, rec: Recipe, size: int) -> None:
    """Write a compact skeleton back to a sparse file of ``size`` bytes (payloads as holes);
    a dense skeleton stays as it is."""
    if rec.skeleton is not None:
        os.replace(compact, dest)
        return
    with open(compact, "rb") as src, open(dest, "wb") as out:
        for off, n in _complement(rec, size):
            os.pwrite(out.fileno(), src.read(n), off)
        out.truncate(size)
        out.flush()
        os.fsync(out.fileno())


# ---- the journal ---------------------------------------------------------------------------
def _journal(lib: Library) -> Path:
    return lib.root / JOURNAL_DIR


def _journal_write(lib: Library, barcode: str, entry: dict[str, Any]) -> None:
    d = _journal(lib)
    d.mkdir(exist_ok=True)
    tmp = d / f"{barcode}.json.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(entry, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, d / f"{barcode}.json")
    fsync_dir(d)


def _journal_drop(lib: Library, barcode: str) -> None:
    (_journal(lib) / f"{barcode}.json").unlink(missing_ok=True)
    fsync_dir(_journal(lib))


def pending(lib: Library) -> list[dict[str, Any]]:
    """Journal entries of archives and retrievals a crash interrupted."""
    d = _journal(lib)
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.json")):
        try:
            out.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            p.unlink(missing_ok=True)  # torn before its rename: nothing was uploaded yet
    return out


# ---- archive -------------------------------------------------------------------------------
def _lock_for(row: dict[str, Any], s3: S3Settings) -> ObjectLock | None:
    from tape_formats.store.s3_objects import ObjectLock

    if not row["worm"] or not s3.worm_lock:
        return None
    until = datetime.now(UTC) + timedelta(days=s3.worm_retention_days)
    return ObjectLock(s3.worm_lock.upper(), until.replace(microsecond=0))


def _offline_row(lib: Library, barcode: str) -> dict[str, Any]:
    lib.refresh()
    row = lib.cartridge(barcode)
    if row.get("archived_to"):
        raise CartridgeArchived(f"cartridge {barcode} is already archived to "
                                f"{row['archived_to']}")
    if row["address"] is not None and lib._is_type(row["address"], ElementType.DATA_TRANSFER):
        raise CartridgeInDrive(f"cartridge {barcode} is in "
                               f"{lib.element_name(row['address'])}; unload it first")
    return row


def archive(lib: Library, barcode: str, client: Any, bucket: str, prefix: str,
            s3: S3Settings) -> ArchiveReport:
    """Upload a cartridge that sits in no drive, mark it archived, free its local files.
    A gateway of several (``[s3] gateway``) holds the cartridge's lease meanwhile, replaces
    the cartridge's earlier archive with this one, then gives the lease back."""
    from tape_formats.store import recipe as recipes
    from tape_formats.store.medium import recipe_path

    leases = leases_for(lib, client, bucket, prefix)
    with lib.lock:
        row = _offline_row(lib, barcode)
        with lib.held(barcode):  # no mount, erase or second archive meanwhile
            files = _local_files(lib, barcode)
            main = _cartridge_dir(lib) / f"{barcode}{CARTRIDGE_EXT}"
            if main not in files:
                raise CartridgeMissing(f"cartridge file {main} is missing")
            lease, held_before = _lease_to_archive(lib, leases, barcode, client, bucket,
                                                   prefix)
            archive_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + secrets.token_hex(2)
            base = "/".join(p for p in (prefix, "tapes", barcode, archive_id) if p)
            url = f"s3://{bucket}/{base}"
            _journal_write(lib, barcode, {"op": "archive", "barcode": barcode, "url": url})
            lock = _lock_for(row, s3)
            report = ArchiveReport(barcode, url, locked_until=lock and lock.until.isoformat())
            rec = recipes.load(recipe_path(main)) if recipe_path(main) in files else None
            try:
                with kept(lib.root, leases), uploading(
                        client, bucket, prefix, library_name(s3.gateway, lib.root)):
                    entries = _upload(lib, client, bucket, prefix, base, files, rec, lock, s3,
                                      report)
                    if lease is not None:  # renewed just before the manifest, else refused
                        lease = _still_ours(lib, leases, lease)
                    _put_manifest(client, bucket, base, _manifest(
                        row, report, prefix, lease.generation if lease else 0, entries), lock)
            except Exception as exc:
                _roll_back_archive(lib, client, barcode, url)
                if lease is not None and not held_before:
                    _give_back(lib, leases, lease)
                raise ArchiveFailed(f"archiving {barcode} failed, it stays local: "
                                    f"{exc}") from None
            _finish_archive(lib, barcode, url, row, files)
            if lease is not None:
                _drop_other_archives(client, bucket, prefix, barcode,
                                     keep=(lease.generation, archive_id))
                _give_back(lib, leases, lease)
            return report


def leases_for(lib: Library, client: Any, bucket: str, prefix: str) -> LeaseStore | None:
    """The bucket's leases when this library is one gateway of several (``[s3] gateway``)."""
    from vtl.leases import LeaseStore

    s3 = lib.config.s3
    return LeaseStore(client, bucket, prefix, s3.gateway, s3.lease_ttl) if s3.gateway else None


def _lease_to_archive(lib: Library, leases: LeaseStore | None, barcode: str, client: Any,
                      bucket: str, prefix: str) -> tuple[Lease | None, bool]:
    """(lease, whether this gateway held it before): the lease it holds, renewed (so a copy
    another gateway took over after this one's lease expired is not archived over that
    one's), or a new one for a cartridge made here, refused when the bucket already holds
    another gateway's cartridge of that barcode."""
    from vtl import leases as lease_files

    if leases is None:
        return None, False
    lease_files.check_not_lost(lib.root, barcode)
    with lease_files.local_lock(lib.root):
        mine = lease_files.held(lib.root).get(barcode)
        if mine is not None:
            try:
                lease = leases.renew(mine)
            except lease_files.LeaseLost as exc:
                lease_files.mark_lost(lib.root, barcode, str(exc))
                raise lease_files.LeaseLost(f"{exc}; this copy of {barcode} is stale, "
                                            f"not archived") from None
        else:
            if latest_archive(client, bucket, prefix, barcode) is not None:
                raise DuplicateBarcode(f"the bucket already holds a cartridge {barcode} "
                                       f"(another gateway's): 'vtl cartridge import --from s3' "
                                       f"it instead")
            lease = leases.take(barcode)
        lease_files.remember(lib.root, lease)
    return lease, mine is not None


def _still_ours(lib: Library, leases: LeaseStore, lease: Lease) -> Lease:
    """The lease renewed right before an archive's manifest goes up (LeaseLost, and the
    copy marked stale, when another gateway took it over meanwhile). A holder paused after
    this renewal uploads a manifest of its old generation: readers skip it."""
    from vtl import leases as lease_files

    with lease_files.local_lock(lib.root):
        mine = lease_files.held(lib.root).get(lease.barcode)
        if mine is None:
            raise lease_files.LeaseLost(lease_files.lost(lib.root, lease.barcode)
                                        or f"lease on {lease.barcode} lost")
        try:
            lease = leases.renew(mine)
        except lease_files.LeaseLost as exc:
            lease_files.mark_lost(lib.root, lease.barcode, str(exc))
            raise
        lease_files.remember(lib.root, lease, durable=False)
    return lease


def _take_lease(lib: Library, leases: LeaseStore, barcode: str) -> Lease:
    from vtl import leases as lease_files

    with lease_files.local_lock(lib.root):
        mine = lease_files.held(lib.root).get(barcode)
        lease = leases.renew(mine) if mine is not None else leases.take(barcode)
        lease_files.remember(lib.root, lease)
    return lease


def _give_back(lib: Library, leases: LeaseStore | None, lease: Lease) -> None:
    """Release the lease in the bucket (when still ours) and forget it here."""
    from vtl import leases as lease_files

    if leases is None:
        return
    with lease_files.local_lock(lib.root):
        try:
            leases.release(lease_files.held(lib.root).get(lease.barcode) or lease)
        except lease_files.LeaseLost:
            pass  # another gateway's now: not ours to delete
        lease_files.forget(lib.root, lease.barcode)


def archives_of(client: Any, bucket: str, prefix: str, barcode: str) -> list[str]:
    """The ids of the complete archives (with a manifest) of ``barcode``, oldest first."""
    start = "/".join(p for p in (prefix, "tapes", barcode) if p) + "/"
    ids = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start):
        for obj in page.get("Contents", []):
            archive_id, _, name = obj["Key"][len(start):].partition("/")
            if name == MANIFEST:
                ids.append(archive_id)
    return sorted(ids)


def archive_url(bucket: str, prefix: str, barcode: str, archive_id: str) -> str:
    return f"s3://{bucket}/" + "/".join(p for p in (prefix, "tapes", barcode, archive_id) if p)


def ranked(client: Any, bucket: str, prefix: str, barcode: str, ids: list[str]
           ) -> list[tuple[int, str]]:
    """(generation, id) of each archive, lowest first: the last is the current one. The
    generation is the fencing token of the lease its gateway held (0 without leases), so an
    archive a holder uploaded after it lost its lease ranks below the new holder's. One
    manifest GET per archive, none when there is only one."""
    if len(ids) <= 1:
        return [(0, i) for i in ids]
    out = []
    for archive_id in ids:
        manifest = read_manifest(client, archive_url(bucket, prefix, barcode, archive_id))
        out.append((int((manifest or {}).get("generation", 0)), archive_id))
    return sorted(out)


def latest_archive(client: Any, bucket: str, prefix: str, barcode: str) -> str | None:
    """The URL of ``barcode``'s current complete archive in the bucket (the highest
    generation, then the newest id), None when none."""
    ids = archives_of(client, bucket, prefix, barcode)
    if not ids:
        return None
    current = ranked(client, bucket, prefix, barcode, ids)[-1][1]
    return archive_url(bucket, prefix, barcode, current)


def _drop_other_archives(client: Any, bucket: str, prefix: str, barcode: str,
                         keep: tuple[int, str]) -> None:
    """After a gateway archived ``barcode`` again, the archives ranked below its own go
    (WORM ones stay: the store refuses). One of a newer generation is never deleted: a
    holder that lost its lease cannot remove the new holder's archive."""
    for archive_id in archives_of(client, bucket, prefix, barcode):
        if archive_id == keep[1]:
            continue
        url = archive_url(bucket, prefix, barcode, archive_id)
        manifest = read_manifest(client, url)
        if (int((manifest or {}).get("generation", 0)), archive_id) < keep:
            _delete_archive(client, url, manifest)


def _reader(path: Path) -> Callable[[int, int], bytes]:
    def read(offset: int, n: int) -> bytes:
        with open(path, "rb") as f:
            return os.pread(f.fileno(), n, offset)
    return read


def _upload(lib: Library, client: Any, bucket: str, prefix: str, base: str,
            files: list[Path], rec: Recipe | None, lock: ObjectLock | None, s3: S3Settings,
            report: ArchiveReport) -> list[dict[str, Any]]:
    from tape_formats.store import s3_objects
    from tape_formats.store.chunk_store import ChunkStore
    from tape_formats.store.medium import recipe_path
    from tape_formats.store.s3_tier import push

    if rec is not None:
        main = files[-1]
        store = ChunkStore((recipe_path(main).parent / rec.store).resolve())
        try:
            pushed = push(store, client, bucket, prefix, sorted(set(rec.ch_ids)), lock=lock,
                          part_size=s3.part_size)
        finally:
            store.close()
        report.chunks_uploaded, report.chunks_already_there = pushed.uploaded, \
            pushed.already_there
        report.bytes_uploaded += pushed.bytes_uploaded
    entries = []
    for path in files:
        key = f"{base}/{path.name}"
        if rec is not None and path == files[-1]:
            up = s3_objects.put_bytes(client, bucket, key, compact_skeleton(path, rec), lock)
            entry = {"form": "compact-skeleton", "file_size": path.stat().st_size}
        else:
            up = s3_objects.put_file(client, bucket, key, _reader(path), path.stat().st_size,
                                     part_size=s3.part_size, lock=lock)
            entry = {"form": "file"}
        entries.append({"name": path.name, "size": up.size, "blake3": up.blake3,
                        "etag": up.etag, **entry})
        report.files += 1
        report.bytes_uploaded += up.size
    return entries


def _manifest(row: dict[str, Any], report: ArchiveReport, chunk_prefix: str, generation: int,
              entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What an archive's manifest.json says: its files, the catalog fields another gateway
    takes the cartridge in with, and the lease generation it was written under (the fencing
    token readers rank archives by; 0 for a library that is no gateway of several)."""
    return {"format": MANIFEST_FORMAT, "barcode": report.barcode, "url": report.url,
            "generation": generation,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "worm": bool(row["worm"]), "locked_until": report.locked_until,
            "chunk_prefix": chunk_prefix,
            "cartridge": {k: row.get(k) for k in CARRIED_FIELDS}, "files": entries}


def _put_manifest(client: Any, bucket: str, base: str, manifest: dict[str, Any],
                  lock: ObjectLock | None) -> None:
    from tape_formats.store import s3_objects

    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    s3_objects.put_bytes(client, bucket, f"{base}/{MANIFEST}", data, lock,
                         ContentType="application/json")


def _finish_archive(lib: Library, barcode: str, url: str, row: dict[str, Any],
                    files: list[Path]) -> None:
    """Steps 4 and 5: the catalog says archived, then the local files go."""
    with lib.catalog.transaction():
        lib.catalog.update_cartridge(barcode, archived_to=url, address=None,
                                     source_address=row["address"], open_since=None)
        lib.catalog.log("archive", barcode, src=row["address"], detail={"to": url})
    lib._reload()
    for path in files:
        path.unlink(missing_ok=True)
    fsync_dir(_cartridge_dir(lib))
    _journal_drop(lib, barcode)


def _roll_back_archive(lib: Library, client: Any, barcode: str, url: str) -> None:
    """Abort the archive's multipart uploads and delete its objects; the journal entry goes
    only when that worked (else the next settle tries again). Chunks already pushed stay:
    they are content-addressed and shared, not part of this archive."""
    from tape_formats.store import s3_objects

    bucket, base = split_location(url)
    try:
        s3_objects.abort_incomplete(client, bucket, base + "/")
        s3_objects.delete_prefix(client, bucket, base + "/")
    except Exception:  # the store is unreachable: settle tries again later
        return
    _journal_drop(lib, barcode)


# ---- retrieve ------------------------------------------------------------------------------
def read_manifest(client: Any, url: str) -> dict[str, Any] | None:
    """The manifest of the archive at ``url``; None when there is none (incomplete)."""
    from tape_formats.store.s3_objects import error_code

    bucket, base = split_location(url)
    try:
        body = client.get_object(Bucket=bucket, Key=f"{base}/{MANIFEST}")["Body"].read()
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise
    manifest = json.loads(body)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ArchiveFailed(f"{url}/{MANIFEST} is not a vtl archive manifest")
    return manifest


def retrieve(lib: Library, barcode: str, client: Any) -> Element | None:
    """Bring an archived cartridge back: download, check, walk, then a free mailslot (the
    vault when none is free). Returns where it went. A gateway of several takes the
    cartridge's lease first (CartridgeLeased when another gateway holds it), fetches the
    newest archive in the bucket and leaves it there (the state another gateway takes over
    if this one dies)."""
    from tape_formats.cartridge import verify_cartridge

    with lib.lock:
        lib.refresh()
        row = lib.cartridge(barcode)
        url = row.get("archived_to")
        if not url:
            raise LibraryError(f"cartridge {barcode} is not archived")
        bucket, prefix = lib.config.s3.target() if lib.config.s3.gateway else ("", "")
        leases = leases_for(lib, client, bucket, prefix)
        lease = _take_lease(lib, leases, barcode) if leases is not None else None
        try:
            if leases is not None:
                url = latest_archive(client, bucket, prefix, barcode) or url
            manifest = read_manifest(client, url)
            if manifest is None:
                raise ArchiveFailed(f"archive {url} has no {MANIFEST}")
            _journal_write(lib, barcode, {"op": "retrieve", "barcode": barcode, "url": url})
            with lib.held(barcode):
                try:
                    with kept(lib.root, leases):
                        main = _download(lib, client, url, manifest)
                    report = verify_cartridge(main)
                    if report.errors:
                        raise ArchiveFailed(f"{main.name}: {report.errors[0]}")
                except Exception as exc:
                    remove_local_copy(lib, barcode)
                    _journal_drop(lib, barcode)
                    if isinstance(exc, ArchiveFailed):
                        raise
                    raise ArchiveFailed(f"retrieving {barcode} failed, it stays archived: "
                                        f"{exc}") from None
                with lib.catalog.transaction():
                    lib.catalog.update_cartridge(barcode, archived_to=None, address=None)
                    lib.catalog.log("retrieve", barcode, detail={"from": url})
                _journal_drop(lib, barcode)
        except BaseException:
            if lease is not None:
                _give_back(lib, leases, lease)
            raise
        if lease is None:
            _delete_archive(client, url, manifest)
        return _into_mailslot(lib, barcode)


def _download(lib: Library, client: Any, url: str, manifest: dict[str, Any]) -> Path:
    """Every file of the archive into place, checked; the cartridge file last. Chunks of a
    dedup cartridge come down first, under the store's shared hold (so a collector cannot
    sweep them before the recipe that names them is in place)."""
    from tape_formats.store import recipe as recipes
    from tape_formats.store.chunk_store import ChunkStore
    from tape_formats.store.s3_objects import get_file
    from tape_formats.store.s3_tier import pull

    bucket, base = split_location(url)
    d = _cartridge_dir(lib)
    temps: dict[str, Path] = {}
    for entry in manifest["files"]:
        tmp = d / (entry["name"] + ".retrieving")
        get_file(client, bucket, f"{base}/{entry['name']}", tmp, entry["size"], entry["blake3"])
        temps[entry["name"]] = tmp
    hold = None
    try:
        recipe = next((n for n in temps if n.endswith(".recipe")), None)
        if recipe is not None:
            rec = recipes.load(temps[recipe])
            store = ChunkStore((d / rec.store).resolve())
            hold = store.hold()
            hold.acquire()
            try:  # closed at once: its pack is flocked while open (vtl serve lives on)
                pull(store, client, bucket, manifest["chunk_prefix"], sorted(set(rec.ch_ids)))
            finally:
                store.close()
            for entry in manifest["files"]:
                if entry["form"] == "compact-skeleton":
                    full = temps[entry["name"]].with_name(entry["name"] + ".full.retrieving")
                    expand_skeleton(temps[entry["name"]], full, rec, entry["file_size"])
                    os.replace(full, temps[entry["name"]])
        main = ""
        for entry in manifest["files"]:  # sidecars first, the cartridge file last
            if entry["name"].endswith(CARTRIDGE_EXT):
                main = entry["name"]
                continue
            os.rename(temps[entry["name"]], d / entry["name"])
        os.rename(temps[main], d / main)
        fsync_dir(d)
    finally:
        if hold is not None:
            hold.release()
    return d / main


def remove_local_copy(lib: Library, barcode: str) -> None:
    for p in _cartridge_dir(lib).glob(f"{barcode}{CARTRIDGE_EXT}*"):
        p.unlink(missing_ok=True)
    fsync_dir(_cartridge_dir(lib))


def _delete_archive(client: Any, url: str, manifest: dict[str, Any] | None) -> None:
    """Delete a retrieved archive's objects, unless they are a WORM cartridge's (locked)."""
    from tape_formats.store import s3_objects

    if manifest is not None and manifest.get("locked_until"):
        return
    bucket, base = split_location(url)
    try:
        s3_objects.delete_prefix(client, bucket, base + "/")
    except Exception:  # left behind in the bucket: space, not data, is lost
        pass


def _into_mailslot(lib: Library, barcode: str) -> Element | None:
    from vtl import mailslots

    if not lib.free(ElementType.IMPORT_EXPORT):
        return None
    try:
        return mailslots.import_cartridge(lib, barcode)
    except LibraryError:  # the door is locked by an initiator: it waits in the vault
        return None


# ---- after a crash -------------------------------------------------------------------------
def settle(lib: Library, client: Any) -> SettleReport:
    """Finish or undo the archives and retrievals a crash interrupted (see the module doc)."""
    report = SettleReport()
    with lib.lock:
        lib.refresh()
        for entry in pending(lib):
            barcode, url = entry["barcode"], entry["url"]
            row = lib.catalog.cartridge(barcode)
            archived = row is not None and row.get("archived_to") == url
            with lib.held(barcode):
                if entry["op"] == "archive":
                    done = _settle_archive(lib, client, barcode, url, row, archived)
                else:
                    done = _settle_retrieve(lib, client, barcode, url, archived)
            (report.completed if done else report.rolled_back).append(barcode)
    return report


def _settle_archive(lib: Library, client: Any, barcode: str, url: str,
                    row: dict[str, Any] | None, archived: bool) -> bool:
    files = _local_files(lib, barcode)
    if archived:  # the catalog step was made: only the local files were left
        for path in files:
            path.unlink(missing_ok=True)
        _journal_drop(lib, barcode)
        return True
    manifest = read_manifest(client, url)
    if row is not None and manifest is not None and _matches(lib, files, manifest):
        _finish_archive(lib, barcode, url, row, files)
        return True
    _roll_back_archive(lib, client, barcode, url)
    return False


def _matches(lib: Library, files: list[Path], manifest: dict[str, Any]) -> bool:
    """Whether the local files are still exactly what the archive holds (nothing was
    written to the cartridge since)."""
    import blake3

    from tape_formats.store import recipe as recipes
    from tape_formats.store.medium import recipe_path

    by_name = {e["name"]: e for e in manifest["files"]}
    if sorted(by_name) != sorted(p.name for p in files):
        return False
    for path in files:
        entry = by_name[path.name]
        if entry["form"] == "compact-skeleton":
            data = compact_skeleton(path, recipes.load(recipe_path(path)))
        else:
            data = path.read_bytes()
        if len(data) != entry["size"] or blake3.blake3(data).hexdigest() != entry["blake3"]:
            return False
    return True


def _settle_retrieve(lib: Library, client: Any, barcode: str, url: str,
                     archived: bool) -> bool:
    for p in _cartridge_dir(lib).glob(f"{barcode}{CARTRIDGE_EXT}*.retrieving"):
        p.unlink(missing_ok=True)
    if archived:  # the catalog still says archived: the local copy was not finished
        remove_local_copy(lib, barcode)
        _journal_drop(lib, barcode)
        return False
    _journal_drop(lib, barcode)
    if not lib.config.s3.gateway:  # one gateway of several keeps it (see retrieve)
        _delete_archive(client, url, read_manifest(client, url))
    return True
