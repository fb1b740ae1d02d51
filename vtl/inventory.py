"""Inventory operations: cartridges come into being, change their medium, and go.

Create (one or a batch, all or nothing), adopt a file the catalog lacks, erase, make WORM,
slide the write-protect tab, delete, set a media state. Each works on one :class:`Library`
(its catalog and its cartridge locks) and never moves a cartridge between elements; moves
and the catalog access they need stay in :mod:`vtl.library`, the mailslot door in
:mod:`vtl.mailslots`. Operations that change a cartridge's file take its lock
(:meth:`Library.held`) and refuse a cartridge that sits in a drive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vtl.barcode import is_cleaning_label, parse_barcode
from vtl.catalog import AUTO_STATES, now_iso
from vtl.cleaning import CLEANING_CAPACITY, make_cleaning_medium
from vtl.errors import (
    BadBarcode,
    CartridgeArchived,
    CartridgeInDrive,
    CartridgeMissing,
    CartridgeProtected,
    DestinationFull,
    DuplicateBarcode,
    InvalidElement,
    LibraryError,
)
from vtl.library import (
    CARTRIDGE_DIR,
    CARTRIDGE_EXT,
    Element,
    ElementType,
    cartridge_stats,
    media_type,
    open_cartridge,
)

if TYPE_CHECKING:
    from tape_formats.cartridge import MediaType
    from vtl.library import Library


def _plan_cartridge(
    lib: Library, barcode: str, media: str | None, capacity: int | None, worm: bool
) -> tuple[MediaType, int, bool]:
    if is_cleaning_label(barcode):
        # a cleaning cartridge fits the library's drives (a universal one, as LTO's are)
        if worm or capacity is not None:
            raise LibraryError(f"{barcode} is a cleaning cartridge: no WORM, no capacity")
        return media_type(media or lib.config.media), CLEANING_CAPACITY, False
    name, suffix_worm = parse_barcode(barcode)
    if media is not None and media != name:
        raise BadBarcode(f"barcode {barcode} is {name} media, not {media}")
    mtype = media_type(name)
    if capacity is None:
        capacity = mtype.capacity
    if not isinstance(capacity, int) or capacity <= 0:
        raise LibraryError(f"invalid capacity {capacity!r}")
    if capacity > mtype.capacity:
        raise LibraryError(
            f"capacity {capacity} exceeds the native capacity of {name} ({mtype.capacity})"
        )
    return mtype, capacity, worm or suffix_worm


def create_cartridge(
    lib: Library,
    barcode: str,
    *,
    media: str | None = None,
    capacity: int | None = None,
    worm: bool = False,
    slot: int | None = None,
    vault: bool = False,
    pool: str | None = "Scratch",
    cycles: int | None = None,
) -> None:
    """Create one cartridge in ``slot`` (an element address; default: first free slot)."""
    create_cartridges(
        lib,
        [barcode], media=media, capacity=capacity, worm=worm,
        slots=None if slot is None else [slot], vault=vault, pool=pool, cycles=cycles,
    )


def create_cartridges(
    lib: Library,
    barcodes: Iterable[str],
    *,
    media: str | None = None,
    capacity: int | None = None,
    worm: bool = False,
    slots: list[int] | None = None,
    vault: bool = False,
    pool: str | None = "Scratch",
    progress: Callable[[str], None] | None = None,
    cycles: int | None = None,
) -> list[str]:
    """Create many cartridges, all or nothing: everything is validated first, and if a
    cartridge fails half-way the ones created by this call are removed again. Cleaning
    labels (``CLN001L1``) make cleaning cartridges good for ``cycles`` cleanings (default:
    library.toml's ``[cleaning] cycles``), in no pool (vtl.cleaning)."""
    barcodes = list(barcodes)
    if cycles is None:
        cycles = lib.config.cleaning.cycles
    if isinstance(cycles, bool) or not isinstance(cycles, int) or not 1 <= cycles <= 1000:
        raise LibraryError(f"cleaning cycles must be 1 to 1000, not {cycles!r}")
    with lib.lock:
        lib.refresh()
        plans = []
        seen: set[str] = set()
        for bc in barcodes:
            if bc in seen:
                raise DuplicateBarcode(f"barcode {bc} given twice")
            seen.add(bc)
            plan = _plan_cartridge(lib, bc, media, capacity, worm)
            if lib.catalog.cartridge(bc) is not None:
                raise DuplicateBarcode(f"cartridge {bc} already exists")
            if _file_path(lib, bc).exists():
                raise DuplicateBarcode(
                    f"a cartridge file for {bc} already exists but is not in the catalog"
                    f" ('vtl cartridge adopt {bc}' takes it in)"
                )
            plans.append((bc, plan))
        if pool is not None and pool not in {p["name"] for p in lib.catalog.pools()}:
            raise LibraryError(f"unknown pool {pool!r}")
        targets: list[int | None]
        if vault:
            targets = [None] * len(plans)
        elif slots is not None:
            if len(slots) != len(plans):
                raise LibraryError("one slot per cartridge is needed")
            targets = []
            for address in slots:
                etype, _ = lib._classify(address)
                if etype != ElementType.STORAGE:
                    raise InvalidElement(f"{lib.element_name(address)} is not a slot")
                if lib._barcode_at(address) is not None or address in targets:
                    raise DestinationFull(f"{lib.element_name(address)} is occupied")
                targets.append(address)
        else:
            free = [e.address for e in lib.free(ElementType.STORAGE)]
            if len(free) < len(plans):
                raise DestinationFull(
                    f"{len(plans)} cartridge(s) need free slots but only {len(free)} are free"
                    " (use --vault to create them outside the library)"
                )
            targets = list(free[: len(plans)])
        created: list[str] = []
        try:
            for (bc, (mtype, cap, is_worm)), address in zip(plans, targets, strict=True):
                _create_one(lib, bc, mtype, cap, is_worm, address, pool, cycles)
                created.append(bc)
                if progress is not None:
                    progress(bc)
        except BaseException:
            for bc in created:
                _remove_files(lib, bc)
                lib.catalog.delete_cartridge(bc)
            lib._reload()
            raise
        lib._reload()
        return created


def orphans(lib: Library) -> list[str]:
    """Barcodes of cartridge files the catalog does not know (e.g. after a crash
    between writing the file and the catalog row, or a lost catalog)."""
    known = {r["barcode"] for r in lib.catalog.cartridges()}
    return sorted(
        p.name[: -len(CARTRIDGE_EXT)]
        for p in (lib.root / CARTRIDGE_DIR).glob(f"*{CARTRIDGE_EXT}")
        if p.name[: -len(CARTRIDGE_EXT)] not in known
    )


def adopt_cartridge(lib: Library, barcode: str, *, slot: int | None = None, vault: bool = False,
                    pool: str | None = "Scratch") -> Element | None:
    """Take a cartridge file the catalog does not know into the catalog, from what its
    header and index say (like Bareos's bscan, for one cartridge). Returns where it went."""
    from tape_formats.cartridge import HEADER_FLAG_WRITE_PROTECT

    with lib.lock:
        lib.refresh()
        cleaner = is_cleaning_label(barcode)
        media = lib.config.media if cleaner else parse_barcode(barcode)[0]
        if lib.catalog.cartridge(barcode) is not None:
            raise DuplicateBarcode(f"cartridge {barcode} is already in the catalog")
        path = _file_path(lib, barcode)
        if not path.exists():
            raise CartridgeMissing(f"no cartridge file {path}")
        if slot is not None and vault:
            raise LibraryError("a slot and the vault exclude each other")
        if vault:
            address = None
        elif slot is not None:
            etype, _ = lib._classify(slot)
            if etype != ElementType.STORAGE:
                raise InvalidElement(f"{lib.element_name(slot)} is not a slot")
            if lib._barcode_at(slot) is not None:
                raise DestinationFull(f"{lib.element_name(slot)} is occupied")
            address = slot
        else:
            free = lib.free(ElementType.STORAGE)
            if not free:
                raise DestinationFull("no free slot (use --vault)")
            address = free[0].address
        with lib.held(barcode):
            with open_cartridge(path, readonly=True) as cart:
                if cart.barcode != barcode:
                    raise BadBarcode(f"{path.name} holds cartridge {cart.barcode}, not {barcode}")
                stats = cartridge_stats(cart)
                row = {
                    "barcode": barcode,
                    "media": cart.media.name or media,
                    "capacity": cart.capacity,
                    "worm": int(cart.worm),
                    "write_protected": int(bool(cart._flags & HEADER_FLAG_WRITE_PROTECT)),
                    "pool": pool,
                    "path": str(path.relative_to(lib.root)),
                    "address": address,
                    "home_address": address,
                    **stats,
                }
                if row["write_protected"]:
                    row["state"] = "read-only"
                if cleaner:
                    row.update(state="cleaning", pool=None)
            with lib.catalog.transaction():
                if address is not None and lib.catalog.at(address) is not None:
                    raise DestinationFull(f"{lib.element_name(address)} is occupied")
                lib.catalog.insert_cartridge(row)
                lib.catalog.log("adopt", barcode, dst=address)
        lib._reload()
        return None if address is None else lib.element(address)


STORE_DIR = "store"  # a dedup library's chunk store, beside cartridges/


def chunk_store_of(lib: Library) -> Path | None:
    """Where new cartridges of ``lib`` keep their data: None for plain files."""
    return lib.root / STORE_DIR if lib.config.store == "dedup" else None


def _file_path(lib: Library, barcode: str) -> Path:
    return lib.root / CARTRIDGE_DIR / f"{barcode}{CARTRIDGE_EXT}"


def _create_one(
    lib: Library, barcode: str, mtype: MediaType, capacity: int, worm: bool, address: int | None,
    pool: str | None, cycles: int,
) -> None:
    from tape_formats.cartridge import TapeCartridge
    from tape_formats.mam import MamStore

    path = _file_path(lib, barcode)
    cleaner = is_cleaning_label(barcode)
    try:
        TapeCartridge.create(path, barcode, mtype, capacity=capacity, worm=worm,
                             chunk_store=None if cleaner else chunk_store_of(lib))
        if cleaner:
            make_cleaning_medium(MamStore(path.with_name(path.name + ".mam")), cycles)
    except BaseException:
        _remove_files(lib, barcode)
        raise
    try:
        with lib.catalog.transaction():
            if address is not None and lib.catalog.at(address) is not None:
                raise DestinationFull(f"{lib.element_name(address)} is occupied")
            lib.catalog.insert_cartridge(
                {
                    "barcode": barcode,
                    "media": mtype.name,
                    "capacity": capacity,
                    "worm": int(worm),
                    "write_protected": 0,
                    "state": "cleaning" if cleaner else "scratch",
                    "pool": None if cleaner else pool,
                    "path": str(path.relative_to(lib.root)),
                    "address": address,
                    "home_address": address,
                    "native_bytes": 0,
                }
            )
            detail: dict[str, Any] = {"media": mtype.name, "capacity": capacity, "worm": worm}
            if cleaner:
                detail["cleaning_cycles"] = cycles
            lib.catalog.log("create", barcode, dst=address, detail=detail)
    except BaseException:
        _remove_files(lib, barcode)
        raise


def _remove_files(lib: Library, barcode: str) -> None:
    """Remove a cartridge's file and its sidecars (``<BARCODE>.*``)."""
    for p in (lib.root / CARTRIDGE_DIR).glob(f"{barcode}.*"):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _offline(lib: Library, barcode: str) -> dict[str, Any]:
    """The row of a cartridge that must not be in any drive for the next operation."""
    lib.refresh()
    row = lib.cartridge(barcode)
    refuse_archived(row)
    if row["address"] is not None and lib._is_type(row["address"], ElementType.DATA_TRANSFER):
        raise CartridgeInDrive(
            f"cartridge {barcode} is in {lib.element_name(row['address'])}; unload it first"
        )
    return row


def refuse_archived(row: dict[str, Any]) -> None:
    """CartridgeArchived for a cartridge whose data lives only in the object store."""
    if row.get("archived_to"):
        raise CartridgeArchived(
            f"cartridge {row['barcode']} is archived to {row['archived_to']}; "
            f"'vtl cartridge retrieve {row['barcode']}' brings it back first")


def _refuse_cleaning(barcode: str, what: str) -> None:
    if is_cleaning_label(barcode):
        raise CartridgeProtected(f"{barcode} is a cleaning cartridge and cannot be {what}")


def erase_cartridge(lib: Library, barcode: str) -> None:
    """Erase all data (long erase from BOP); refuses WORM and write-protected cartridges."""
    with lib.lock:
        row = _offline(lib, barcode)
        _refuse_cleaning(barcode, "erased")
        if row["worm"]:
            raise CartridgeProtected(f"cartridge {barcode} is WORM and cannot be erased")
        if row["write_protected"]:
            raise CartridgeProtected(f"cartridge {barcode} is write protected")
        with lib.held(barcode):
            with open_cartridge(lib.root / row["path"], count_load=False) as cart:
                cart.locate(0)
                cart.erase()
                cart.sync()
            lib.catalog.update_cartridge(
                barcode, used_bytes=0, native_bytes=0, files=0, blocks=0, state="scratch",
                last_written=now_iso(),
            )
            lib.catalog.log("erase", barcode)


def set_write_protect(lib: Library, barcode: str, protect: bool) -> None:
    """Slide the write-protect tab (only outside the drives, like a real cartridge)."""
    with lib.lock:
        row = _offline(lib, barcode)
        with lib.held(barcode):
            with open_cartridge(lib.root / row["path"], count_load=False) as cart:
                cart.set_write_protect(protect)
            values: dict[str, Any] = {"write_protected": int(protect)}
            if protect and row["state"] in AUTO_STATES:
                values["state"] = "read-only"
            elif not protect and row["state"] == "read-only":
                values["state"] = "append" if row["blocks"] else "scratch"
            lib.catalog.update_cartridge(barcode, **values)
            lib.catalog.log("protect" if protect else "unprotect", barcode)


def make_worm(lib: Library, barcode: str) -> None:
    """Turn a blank cartridge into WORM (the header flag is rewritten); refuses data."""
    from tape_formats.cartridge import TapeCartridge

    with lib.lock:
        row = _offline(lib, barcode)
        _refuse_cleaning(barcode, "made WORM")
        if row["worm"]:
            raise LibraryError(f"cartridge {barcode} is already WORM")
        with lib.held(barcode):
            path = lib.root / row["path"]
            with open_cartridge(path, readonly=True) as cart:
                blank = cart.eod == 0
                mtype = cart.media
            if not blank:
                raise CartridgeProtected(
                    f"cartridge {barcode} holds data; only a blank cartridge can become WORM"
                )
            for p in (lib.root / CARTRIDGE_DIR).glob(f"{barcode}.*"):
                if p.suffix != ".lock":
                    p.unlink()
            TapeCartridge.create(path, barcode, mtype, capacity=row["capacity"], worm=True,
                                 chunk_store=chunk_store_of(lib))
            lib.catalog.update_cartridge(barcode, worm=1)
            lib.catalog.log("worm", barcode)


def delete_cartridge(lib: Library, barcode: str, *, force: bool = False) -> None:
    """Delete a cartridge and its file; one holding data needs ``force``."""
    with lib.lock:
        row = _offline(lib, barcode)
        if (row["blocks"] or row["used_bytes"]) and not force:
            raise LibraryError(f"cartridge {barcode} holds data; confirm with --yes")
        with lib.held(barcode):
            with lib.catalog.transaction():
                lib.catalog.delete_cartridge(barcode)
                lib.catalog.log("delete", barcode, src=row["address"])
            for p in (lib.root / CARTRIDGE_DIR).glob(f"{barcode}.*"):
                if p.suffix != ".lock":
                    p.unlink(missing_ok=True)
        lib._lock_path(barcode).unlink(missing_ok=True)
        lib._reload()


def set_state(lib: Library, barcode: str, state: str, *, pool: str | None = None) -> None:
    """Set a cartridge's media state (and optionally pool), for admins and the EBM."""
    lib.cartridge(barcode)
    if pool is not None and pool not in {p["name"] for p in lib.catalog.pools()}:
        raise LibraryError(f"unknown pool {pool!r}")
    with lib.catalog.transaction():
        try:
            lib.catalog.set_state(barcode, state)
        except ValueError as e:
            raise LibraryError(str(e)) from None
        if pool is not None:
            lib.catalog.update_cartridge(barcode, pool=pool)
