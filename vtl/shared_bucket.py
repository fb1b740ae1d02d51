"""One bucket shared by several gateways (libraries with their own roots and ``[s3]
gateway`` set): what the bucket holds (``vtl cartridge list --remote``), taking in a
cartridge another gateway archived (``vtl cartridge import --from s3``), and the catalog
rows of the bucket's cartridges after a lost catalog (``vtl catalog rebuild --from-bucket``).

A cartridge lives in one of two places: archived in the bucket (its newest complete
archive under ``<prefix>/tapes/<BARCODE>/``), or local at the one gateway holding its lease
(vtl/leases.py), which keeps the archive it started from in the bucket until it archives the
cartridge again. The transfers themselves are vtl/archive.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vtl import archive as archives
from vtl.errors import DuplicateBarcode, LibraryError
from vtl.leases import lost
from vtl.library import CARTRIDGE_DIR, CARTRIDGE_EXT

if TYPE_CHECKING:
    from vtl.library import Element, Library


@dataclass
class RemoteCartridge:
    barcode: str
    archive: str | None  # URL of its newest complete archive
    held_by: str | None  # gateway holding its lease (None: free or expired)
    lease_until: str | None


def remote_cartridges(client: Any, bucket: str, prefix: str, lease_ttl: int = 60
                      ) -> list[RemoteCartridge]:
    """Every cartridge the bucket knows: archived ones and leased ones, by barcode."""
    import time

    from vtl.leases import LeaseStore

    start = "/".join(p for p in (prefix, "tapes") if p) + "/"
    ids: dict[str, list[str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start):
        for obj in page.get("Contents", []):
            barcode, archive_id, name = (obj["Key"][len(start):].split("/") + ["", ""])[:3]
            if name == archives.MANIFEST:
                ids.setdefault(barcode, []).append(archive_id)
    leases = LeaseStore(client, bucket, prefix, "", lease_ttl).all()
    now = time.time()
    out = []
    for bc in sorted(set(ids) | {b for b, held in leases.items() if not held.free(lease_ttl)}):
        lease = leases.get(bc)
        live = lease is not None and not lease.free(lease_ttl, now)
        url = None
        if bc in ids:  # the current one: highest generation (fencing token), then newest
            url = archives.archive_url(bucket, prefix, bc,
                                       archives.ranked(client, bucket, prefix, bc,
                                                       sorted(ids[bc]))[-1][1])
        out.append(RemoteCartridge(bc, url, lease.gateway if live else None,
                                   lease.until() if live else None))
    return out


def import_from_store(lib: Library, barcode: str, client: Any) -> Element | None:
    """Take in the cartridge another gateway archived: its catalog row from the manifest
    (archived here too), then a retrieval (which takes the lease). Returns where it went."""
    if not lib.config.s3.gateway:
        raise LibraryError("importing from the bucket needs [s3] gateway in library.toml "
                           "(this library must be one gateway of several)")
    bucket, prefix = lib.config.s3.target()
    with lib.lock:
        lib.refresh()
        row = lib.catalog.cartridge(barcode)
        if row is not None and not row.get("archived_to"):
            if lost(lib.root, barcode) is None:
                raise DuplicateBarcode(f"cartridge {barcode} is already local in this library")
            _drop_stale_copy(lib, barcode, client, bucket, prefix)
        added = row is None
        if added:
            url = archives.latest_archive(client, bucket, prefix, barcode)
            if url is None:
                raise LibraryError(f"no cartridge {barcode} in s3://{bucket}/{prefix}")
            _add_row(lib, barcode, url, archives.read_manifest(client, url) or {})
        try:
            return archives.retrieve(lib, barcode, client)
        except BaseException:
            if added:
                lib.catalog.delete_cartridge(barcode)
                lib._reload()
            raise


def adopt_archived(lib: Library, client: Any) -> tuple[dict[str, str], list[str]]:
    """After a catalog rebuild: a row, archived, for every cartridge of the bucket the
    catalog lacks (it has no local file here), from its current archive's manifest.
    Returns (barcode -> where, with the gateway holding its lease), and the skipped ones."""
    bucket, prefix = lib.config.s3.target()
    found: dict[str, str] = {}
    skipped: list[str] = []
    for rc in remote_cartridges(client, bucket, prefix, lib.config.s3.lease_ttl):
        if rc.archive is None or lib.catalog.cartridge(rc.barcode) is not None:
            continue  # a lease without an archive, or local here (its file was adopted)
        try:
            _add_row(lib, rc.barcode, rc.archive, archives.read_manifest(client, rc.archive)
                     or {})
        except (LibraryError, ValueError) as exc:
            skipped.append(f"{rc.barcode}: {exc}")
            continue
        held = f" (lease: {rc.held_by} until {rc.lease_until})" if rc.held_by else ""
        found[rc.barcode] = rc.archive + held
    return found, skipped


def _drop_stale_copy(lib: Library, barcode: str, client: Any, bucket: str, prefix: str
                     ) -> None:
    """A copy whose lease another gateway took over: its local files go, and the catalog
    says archived again, so the retrieval that follows brings the current one."""
    url = archives.latest_archive(client, bucket, prefix, barcode)
    if url is None:
        raise LibraryError(f"no cartridge {barcode} in s3://{bucket}/{prefix}")
    with lib.held(barcode):
        with lib.catalog.transaction():
            lib.catalog.update_cartridge(barcode, archived_to=url, address=None,
                                         open_since=None)
            lib.catalog.log("drop-stale", barcode, detail={"current": url})
        archives.remove_local_copy(lib, barcode)
    lib._reload()


def _add_row(lib: Library, barcode: str, url: str, manifest: dict[str, Any]) -> None:
    carried = dict(manifest.get("cartridge") or {})
    if not carried.get("media") or not carried.get("capacity"):
        raise LibraryError(f"archive {url} does not say the cartridge's media and capacity "
                           f"(archived by an older vtl): retrieve it on its own library")
    if carried.get("pool") not in {p["name"] for p in lib.catalog.pools()}:
        carried["pool"] = None
    with lib.catalog.transaction():
        lib.catalog.insert_cartridge({
            "barcode": barcode, **carried,
            "path": f"{CARTRIDGE_DIR}/{barcode}{CARTRIDGE_EXT}",
            "address": None, "archived_to": url})
        lib.catalog.log("import", barcode, detail={"from": url})
    lib._reload()
