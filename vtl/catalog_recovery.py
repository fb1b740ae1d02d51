"""Getting a lost or damaged catalog back: from a backup copy, or from the cartridges alone.

``vtl catalog restore`` puts the newest good backup copy (:mod:`vtl.catalog_backup`) in
place, then catches it up with the cartridges: counts of cartridges written since the copy,
cartridge files created since (taken in as :func:`vtl.inventory.adopt_cartridge` does), and
the EBM backups on the cartridges that changed.

``vtl catalog rebuild`` needs no copy, like Bareos's bscan: each cartridge file's header and
index give its barcode, media, capacity, WORM and write-protect flags and what it holds;
its place is the last one known (the newest backup copy's placement, if a copy is readable;
a drive counts as its home slot), else the next free slot, else the vault; the EBM part of
the catalog (the same file, ``ebm_*`` tables) is rebuilt by :func:`ebm.rebuild.rebuild`
from the backup headers and trailers on tape.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtl import CATALOG_NAME, catalog_backup
from vtl.barcode import is_barcode
from vtl.catalog import AUTO_STATES, MediaCatalog
from vtl.config import LibraryConfig
from vtl.errors import CatalogDamaged, LibraryError, NoLibrary
from vtl.library import CARTRIDGE_DIR, CARTRIDGE_EXT, ElementType, Library


@dataclass
class Recovery:
    """What a restore or a rebuild did, for the one-line summary and ``--json``."""

    source: str = ""
    set_aside: str | None = None
    cartridges: dict[str, str] = field(default_factory=dict)  # barcode -> where it went
    updated: list[str] = field(default_factory=list)  # counts caught up with the tape
    moved: list[str] = field(default_factory=list)  # placed as the journal last saw them
    backups: list[str] = field(default_factory=list)  # EBM backups found on tape
    skipped: list[str] = field(default_factory=list)  # "what: why"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---- restore ------------------------------------------------------------------------------
def restore(root: Path, source: Path | None = None, secret: bytes | None = None) -> Recovery:
    """Put a backup copy back and catch it up with the cartridges."""
    root = Path(root)
    _require_config(root)
    copy, aside = catalog_backup.restore_copy(root, source)
    rec = Recovery(source=str(copy), set_aside=str(aside) if aside else None)
    before = _counts(root / CATALOG_NAME)
    lib = Library.open(root)  # reconciles what a crash left open since the copy
    try:
        for row in lib.catalog.cartridges():
            if not (root / row["path"]).exists():
                rec.skipped.append(f"{row['barcode']}: cartridge file missing")
                continue
            stats = lib._stats_from_file(row)
            if not stats:
                continue
            now = (stats["blocks"], stats["used_bytes"])
            if now != (row["blocks"], row["used_bytes"]):
                lib.catalog.update_cartridge(row["barcode"], **stats)
            if now != before.get(row["barcode"]):
                rec.updated.append(row["barcode"])
        _replay_placements(lib, rec)
        _adopt_files(lib, {}, rec)
        _rebuild_backups(lib, rec.updated + list(rec.cartridges), secret, rec)
        lib.catalog.log("catalog-restored", detail={"from": str(copy)})
        lib.back_up_catalog()
    finally:
        lib.close()
    return rec


# ---- rebuild ------------------------------------------------------------------------------
def rebuild(root: Path, *, secret: bytes | None = None, force: bool = False) -> Recovery:
    """A new catalog from the cartridge files alone (the damaged one is set aside)."""
    root = Path(root)
    config = _require_config(root)
    if not force and _healthy(root):
        raise LibraryError(
            f"media catalog {root / CATALOG_NAME} is healthy; rebuilding it loses its history"
            " (events, pools without cartridges, schedules): confirm with --force"
        )
    hints, pools, copy = _last_known(root)
    ebm_media = _ebm_media(copy)
    aside = catalog_backup.set_aside(root)
    rec = Recovery(source="cartridges", set_aside=str(aside) if aside else None)
    lib = Library(root, config, MediaCatalog(root / CATALOG_NAME, create=True))
    try:
        for pool in pools:
            if pool["name"] not in {p["name"] for p in lib.catalog.pools()}:
                lib.catalog.add_pool(pool["name"], pool["description"], media=pool["media"],
                                     retention_days=pool["retention_days"])
        _adopt_files(lib, hints, rec)
        _rebuild_backups(lib, None, secret, rec, ebm_media)
        lib.catalog.log("catalog-rebuilt", detail={"cartridges": len(rec.cartridges),
                                                    "backups": len(rec.backups)})
        lib.back_up_catalog()
    finally:
        lib.close()
    return rec


def _counts(path: Path) -> dict[str, tuple[int, int]]:
    """(objects, used bytes) by barcode as a catalog file says."""
    cat = MediaCatalog(path, readonly=True)
    try:
        return {r["barcode"]: (r["blocks"], r["used_bytes"]) for r in cat.cartridges()}
    finally:
        cat.close()


def _require_config(root: Path) -> LibraryConfig:
    from vtl.config import CONFIG_NAME, ConfigError

    if not (root / CONFIG_NAME).is_file():
        raise NoLibrary(f"no library at {root} (run 'vtl init' first)")
    try:
        return LibraryConfig.load(root)
    except ConfigError as e:
        raise NoLibrary(str(e)) from None


def _healthy(root: Path) -> bool:
    try:
        MediaCatalog(root / CATALOG_NAME, readonly=True).close()
    except CatalogDamaged:
        return False
    return True


def _last_known(root: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]],
                                     Path | None]:
    """Rows by barcode and pools from the newest readable backup copy (and which copy), with
    the placements journalled since replayed over the rows (the last event for a barcode
    wins)."""
    rows: dict[str, dict[str, Any]] = {}
    pools: list[dict[str, Any]] = []
    used = None
    for copy in catalog_backup.copies(root):
        try:
            cat = MediaCatalog(copy, readonly=True)
        except CatalogDamaged:
            continue
        try:
            rows, pools, used = {r["barcode"]: r for r in cat.cartridges()}, cat.pools(), copy
            break
        except LibraryError:
            continue
        finally:
            cat.close()
    _apply_journal(root, rows)
    return rows, pools, used


def _apply_journal(root: Path, rows: dict[str, dict[str, Any]]) -> set[str]:
    """Replay the placement journal over ``rows``; the barcodes it named."""
    named: set[str] = set()
    for event in catalog_backup.placements_since(root):
        barcode, action = event.get("barcode"), event.get("action")
        if not isinstance(barcode, str):
            continue
        named.add(barcode)
        if action == "delete":
            rows.pop(barcode, None)
            continue
        row = rows.setdefault(barcode, {"address": None, "home_address": None, "pool": None,
                                        "state": "scratch"})
        row["address"] = event.get("dst")
        if action in ("create", "adopt"):
            row["home_address"] = event.get("dst")
        elif action == "move":
            row["previous_address"] = event.get("src")  # its slot, if it went into a drive
    return named


def _replay_placements(lib: Library, rec: Recovery) -> None:
    """After a restore: put cartridges where the journal last saw them (a drive counts as
    the slot it came from); one whose place is taken stays where the copy had it."""
    rows = {r["barcode"]: dict(r) for r in lib.catalog.cartridges()}
    named = _apply_journal(lib.root, rows) & set(rows)
    if not named:
        return
    wanted: dict[str, int | None] = {}
    with lib.catalog.transaction():
        old = {bc: lib.catalog.cartridge(bc)["address"] for bc in named}
        for bc in named:
            lib.catalog.update_cartridge(bc, address=None)
        taken = {r["address"] for r in lib.catalog.cartridges() if r["address"] is not None}
        for bc in sorted(named):
            hint = rows[bc]
            target = None
            if hint["address"] is not None:
                for address in (hint["address"], hint.get("previous_address"),
                                hint.get("home_address"), old[bc]):
                    if address is not None and address not in taken and (
                        lib._is_type(address, ElementType.STORAGE)
                        or lib._is_type(address, ElementType.IMPORT_EXPORT)
                    ):
                        target = address
                        break
            wanted[bc] = target
            if target is not None:
                taken.add(target)
            lib.catalog.update_cartridge(bc, address=target)
    lib._reload()
    rec.moved += sorted(bc for bc in named if wanted[bc] != old[bc])


def _adopt_files(lib: Library, hints: dict[str, dict[str, Any]], rec: Recovery) -> None:
    """Take every cartridge file the catalog lacks in, where ``hints`` last saw it."""
    from vtl import inventory

    for barcode in inventory.orphans(lib):
        path = lib.root / CARTRIDGE_DIR / f"{barcode}{CARTRIDGE_EXT}"
        if not is_barcode(barcode):
            rec.skipped.append(f"{path.name}: not named by a barcode")
            continue
        hint = hints.get(barcode)
        slot, vault = _place(lib, hint)
        pool = hint["pool"] if hint and hint["pool"] in _pool_names(lib) else "Scratch"
        try:
            element = inventory.adopt_cartridge(lib, barcode, slot=slot, vault=vault, pool=pool)
        except LibraryError as e:
            rec.skipped.append(f"{barcode}: {e}")
            continue
        if hint is not None:
            keep = {k: hint[k] for k in ("label", "load_count", "last_written", "last_read",
                                         "last_mounted") if hint.get(k) is not None}
            if hint["state"] not in AUTO_STATES:
                keep["state"] = hint["state"]
            lib.catalog.update_cartridge(barcode, **keep)
        rec.cartridges[barcode] = element.name if element else "vault"


def _place(lib: Library, hint: dict[str, Any] | None) -> tuple[int | None, bool]:
    """(slot address or None, vault?) for a cartridge last seen as ``hint`` says."""
    if hint is not None:
        if hint["address"] is None:
            return None, True
        for address in (hint["address"], hint.get("previous_address"), hint["home_address"]):
            if address is not None and lib._is_type(address, ElementType.STORAGE) and \
                    lib._barcode_at(address) is None:
                return address, False
    if lib.free(ElementType.STORAGE):
        return None, False
    return None, True


def _pool_names(lib: Library) -> set[str]:
    return {p["name"] for p in lib.catalog.pools()}


def _rebuild_backups(lib: Library, barcodes: list[str] | None, secret: bytes | None,
                     rec: Recovery, ebm_media: set[str] = frozenset()) -> None:
    """The EBM's part of the catalog from the backups on tape (all cartridges, or these).

    Cartridges the EBM had been handed (``ebm_media`` as the last copy knew it) but that
    hold no backup yet are handed to it again, in the pool the library's catalog gives."""
    if barcodes is not None and not barcodes:
        return
    try:
        from ebm.catalog import Catalog, CatalogError
        from ebm.rebuild import rebuild as rebuild_backups
    except ImportError:  # the library without the backup manager
        return
    catalog = Catalog.for_root(lib.root)
    try:
        found = rebuild_backups(catalog, lib, secret, barcodes)
        rec.backups += found.backups
        rec.skipped += found.skipped
        for barcode in sorted(ebm_media):
            row = lib.catalog.cartridge(barcode)
            if row is None or row["pool"] is None or catalog.media(barcode) is not None:
                continue
            try:
                catalog.add_to_pool(row["pool"], barcode)
            except CatalogError as e:
                rec.skipped.append(f"{barcode}: {e}")
    finally:
        catalog.close()


def _ebm_media(copy: Path | None) -> set[str]:
    """The cartridges handed to the EBM, as a catalog copy says (empty if it cannot)."""
    if copy is None:
        return set()
    cat = MediaCatalog(copy, readonly=True)
    try:
        with cat.lock:
            return {r[0] for r in cat.conn.execute("SELECT barcode FROM ebm_media")}
    except sqlite3.Error:
        return set()
    finally:
        cat.close()
