"""The library: elements (transport, slots, mailslots, drives), catalog access, and moves.

This is the one API that both the SCSI models (SMC changer, SSC drives) and the backup manager
use, in one process or several at once. Placement lives only in the media catalog
(:mod:`vtl.catalog`); a :class:`Library` caches it and re-reads it when ``PRAGMA data_version``
says another process committed, so a running server notices a CLI move cheaply.

Two processes must never write one cartridge: mounting a cartridge takes an exclusive
``flock`` on ``<root>/cartridges/<BARCODE>.lock`` (a separate file, so the cartridge module
may lock its own files as it likes), and every operation that changes a cartridge from outside
a drive (move out of a drive, erase, delete, WORM) takes the same lock first.

Inventory operations (create, adopt, erase, WORM, protect, delete) live in
:mod:`vtl.inventory`, the mailslot door (import, export) in :mod:`vtl.mailslots`; labels are
read by :mod:`vtl.barcode` and the error types are in :mod:`vtl.errors`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vtl import cleaning
from vtl.barcode import is_barcode, is_cleaning_label, parse_barcode
from vtl.catalog import AUTO_STATES, CATALOG_NAME, MediaCatalog, now_iso
from vtl.config import CONFIG_NAME, ConfigError, ConfigFileError, LibraryConfig
from vtl.errors import (
    BadBarcode,
    CartridgeArchived,
    CartridgeBusy,
    CartridgeInDrive,
    CartridgeMissing,
    CartridgeOutside,
    CartridgeProtected,
    CatalogDamaged,
    DestinationFull,
    DuplicateBarcode,
    InvalidElement,
    LibraryError,
    MediumRemovalPrevented,
    NoLibrary,
    SourceEmpty,
    UnknownBarcode,
)

if TYPE_CHECKING:
    from tape_formats.cartridge import MediaType, TapeCartridge
    from vtl.cleaning import DriveUsage
    from vtl.faults import FaultTable

# The error types and the barcode parser are part of this module's API (callers import them
# from here); they live in vtl.errors and vtl.barcode.
__all__ = [
    "BadBarcode", "CartridgeBusy", "CartridgeInDrive", "CartridgeMissing", "CartridgeOutside",
    "CartridgeProtected", "CatalogDamaged", "DestinationFull", "DriveBay", "DuplicateBarcode",
    "Element", "ElementType", "InvalidElement", "Library", "LibraryError",
    "MediumRemovalPrevented", "NoLibrary", "SourceEmpty", "UnknownBarcode", "media_type",
    "parse_barcode",
]

log = logging.getLogger(__name__)

CARTRIDGE_DIR = "cartridges"
CARTRIDGE_EXT = ".vtape"
LOCK_WAIT_S = 2.0  # how long an operation waits for another process's brief cartridge lock


# ---- elements -----------------------------------------------------------------------------
class ElementType(IntEnum):
    MEDIUM_TRANSPORT = 1
    STORAGE = 2
    IMPORT_EXPORT = 3
    DATA_TRANSFER = 4


_TYPE_NAMES = {
    ElementType.MEDIUM_TRANSPORT: "transport",
    ElementType.STORAGE: "slot",
    ElementType.IMPORT_EXPORT: "mailslot",
    ElementType.DATA_TRANSFER: "drive",
}
# Like mtx: slots and mailslots are numbered from 1, drives from 0.
_NAME_BASE = {
    ElementType.MEDIUM_TRANSPORT: 0,
    ElementType.STORAGE: 1,
    ElementType.IMPORT_EXPORT: 1,
    ElementType.DATA_TRANSFER: 0,
}


@dataclass
class Element:
    type: ElementType
    address: int
    index: int  # 0-based within its type
    barcode: str | None
    source_address: int | None
    media: str | None

    @property
    def full(self) -> bool:
        return self.barcode is not None

    @property
    def name(self) -> str:
        """Human name, e.g. ``slot:1`` (slots/mailslots from 1), ``drive:0``, ``transport``."""
        if self.type == ElementType.MEDIUM_TRANSPORT:
            return "transport"
        return f"{_TYPE_NAMES[self.type]}:{self.index + _NAME_BASE[self.type]}"


def _media_table() -> dict[str, MediaType]:
    from tape_formats.media import MEDIA

    return MEDIA


def media_type(name: str) -> MediaType:
    try:
        return _media_table()[name]
    except KeyError:
        raise LibraryError(f"unknown media {name!r}") from None


def open_cartridge(
    path: Path, *, readonly: bool = False, count_load: bool | None = None
) -> TapeCartridge:
    """Open a cartridge file, turning "held by another process" into CartridgeBusy."""
    from tape_formats.cartridge import CartridgeInUse, TapeCartridge

    if not path.exists():
        raise CartridgeMissing(f"cartridge file {path} is missing")
    try:
        return TapeCartridge.open(path, readonly=readonly, count_load=count_load)
    except CartridgeInUse as e:
        raise CartridgeBusy(str(e)) from None


def tape_files(cart: TapeCartridge) -> int:
    """Number of tape files: filemarks, plus one if data follows the last filemark."""
    eod = cart.eod
    if eod == 0:
        return 0
    filemarks = cart.filemarks_before(eod)
    _file, block_in_file = cart.block_number_at(eod)
    return filemarks + (1 if block_in_file > 0 else 0)


# ---- drive bays ---------------------------------------------------------------------------
class DriveBay:
    """One drive's mechanism. The SSC model and the SMC model of one process share it."""

    def __init__(self, library: Library, index: int) -> None:
        self.library = library
        self.index = index
        self.address = library.config.drive_base + index
        self.serial = library.config.drive_serial(index)
        self.prevent_removal = False
        # Held while a command uses the mounted cartridge, and by mount/unmount, so a move
        # by another thread (the changer) never closes the cartridge under a running READ or
        # WRITE. The SSC model may replace it with its own per-device lock. Lock order:
        # io_lock before library.lock, always.
        self.io_lock: threading.RLock = threading.RLock()
        self.cartridge: TapeCartridge | None = None
        self.media_generation = 0
        self._lock_fd: int | None = None
        self._mounted: str | None = None
        self._at_mount: tuple[int, int] = (0, 0)
        self._native_known = False  # the catalog has the mounted cartridge's native bytes
        self._loaded_since: float | None = None  # a data cartridge's mount (vtl.cleaning)
        self._usage: DriveUsage | None = None

    def __repr__(self) -> str:
        return f"<DriveBay {self.index} @{self.address} {self.barcode or 'empty'}>"

    @property
    def barcode(self) -> str | None:
        """What the catalog says is in this drive (re-read if another process changed it)."""
        self.library.refresh()
        return self.library._barcode_at(self.address)

    @property
    def mounted(self) -> bool:
        return self.cartridge is not None

    def mount(self) -> TapeCartridge:
        """Open the cartridge in this drive for this process (idempotent).

        Raises SourceEmpty if the drive is empty and CartridgeBusy if another process holds
        the cartridge or has claimed the drive.
        """
        lib = self.library
        with self.io_lock, lib.lock:
            if self.cartridge is not None:
                return self.cartridge
            lib.refresh()
            barcode = lib._barcode_at(self.address)
            if barcode is None:
                raise SourceEmpty(f"drive {self.index} is empty")
            lib._check_claim(self.index)
            fd = lib._lock_cartridge(barcode)
            try:
                # re-check under the lock: another process may have moved it meanwhile
                row = lib.catalog.cartridge(barcode)
                if row is None or row["address"] != self.address:
                    raise SourceEmpty(f"drive {self.index} is empty")
                # read-write even when write protected: the header's flag refuses writes, and
                # the MAM still counts the load
                cart = open_cartridge(lib.root / row["path"])
            except BaseException:
                os.close(fd)
                raise
            if lib.config.s3.gateway:  # writes stop when this gateway's lease lapses
                from vtl.leases import Fence

                cart.fence = Fence(lib.root, barcode, lib.config.s3.lease_ttl)
            self.cartridge = cart
            self._lock_fd = fd
            self._mounted = barcode
            self._at_mount = (cart.eod, cart.used_bytes)
            self._native_known = row.get("native_bytes") is not None
            values: dict[str, Any] = {"last_mounted": now_iso(), "open_since": now_iso()}
            if row.get("open_since") is not None:  # a crash left it open: count it afresh
                values.update(cartridge_stats(cart))
                if row["state"] not in AUTO_STATES:
                    values.pop("state")
            lib.catalog.update_cartridge(barcode, **values)
            if not is_cleaning_label(barcode):
                self._note_wear(cleaning.count_load)
                self._loaded_since = cleaning.monotonic()
            return cart

    @property
    def usage(self) -> DriveUsage:
        """The drive's wear since its last cleaning (vtl.cleaning), as this process last
        read or wrote it: it changes only at a load, an unload or a cleaning."""
        if self._usage is None:
            self._usage = cleaning.read_usage(self.library.root).get(self.index,
                                                                     cleaning.DriveUsage())
        return self._usage

    def _note_wear(self, change: Callable[[DriveUsage], None]) -> None:
        """Record wear (a load, loaded time, a cleaning); never fails the operation."""
        try:
            self._usage = cleaning.update_usage(self.library.root, self.index, change)
        except OSError as e:
            log.warning("drive %s: cannot record its wear: %s", self.index, e)

    def cleaned(self) -> None:
        """A cleaning cartridge has cleaned this drive: its wear counters start again."""
        self._note_wear(cleaning.cleaned)

    def unmount(self) -> None:
        """Sync and close the mounted cartridge, then record its stats in the catalog."""
        lib = self.library
        with self.io_lock, lib.lock:
            cart, barcode = self.cartridge, self._mounted
            if cart is None or barcode is None:
                return
            if self._loaded_since is not None:
                self._note_wear(cleaning.counter_adding(cleaning.monotonic()
                                                        - self._loaded_since))
                self._loaded_since = None
            try:
                cart.sync()
                counters = getattr(cart, "counters", None)
                written = (cart.eod, cart.used_bytes) != self._at_mount or (
                    counters is not None and getattr(counters, "written_native", 0) > 0)
                # a load that only read keeps the count: summing a large index costs ~0.2 s
                # per million blocks
                stats = cartridge_stats(cart, native=written or not self._native_known)
                if written:
                    stats["last_written"] = now_iso()
                if _mam_read_this_load(cart):
                    stats["last_read"] = now_iso()
            finally:
                try:
                    cart.close()
                finally:
                    self.cartridge = None
                    self._mounted = None
                    if self._lock_fd is not None:
                        os.close(self._lock_fd)
                        self._lock_fd = None
            row = lib.catalog.cartridge(barcode)
            if row is not None:
                if row["state"] not in AUTO_STATES:
                    stats.pop("state", None)
                lib.catalog.update_cartridge(barcode, open_since=None, **stats)


def cartridge_stats(cart: TapeCartridge, native: bool = True) -> dict[str, Any]:
    """used bytes (on the medium, compressed), native bytes (as written: their ratio is the
    compression ``vtl status`` shows; left out with ``native=False``), objects, tape files and
    the automatic state of an open cartridge."""
    stats: dict[str, Any] = {"used_bytes": cart.used_bytes, "blocks": cart.eod}
    if native:
        stats["native_bytes"] = sum(f.native_bytes for f in cart.tape_files())
    stats["files"] = tape_files(cart)
    if cart.eod == 0:
        stats["state"] = "scratch"
    elif cart.remaining_bytes <= 0 or cart.at_early_warning:  # past EW: a drive reports EOM
        stats["state"] = "full"
    else:
        stats["state"] = "append"
    return stats


def _mam_read_this_load(cart: TapeCartridge) -> bool:
    """Whether anything was read since the mount (the cartridge's per-load counters)."""
    counters = getattr(cart, "counters", None)
    return bool(counters is not None and getattr(counters, "read_native", 0) > 0)


# ---- the library --------------------------------------------------------------------------
class Library:
    """A changer, its drives, slots and mailslots, over one data directory."""

    def __init__(self, root: Path, config: LibraryConfig, catalog: MediaCatalog) -> None:
        """Use :meth:`open` or :meth:`create`."""
        self.root = Path(root)
        self.config = config
        self.catalog = catalog
        self.lock = threading.RLock()
        self.drives = [DriveBay(self, i) for i in range(config.drives)]
        self._placement: dict[int, dict[str, Any]] = {}
        self._data_version: int | None = None
        self._pid = os.getpid()
        if not catalog.readonly:
            from vtl import catalog_backup

            catalog.placement_hook = functools.partial(catalog_backup.note_placement, self.root)
        self._reload()

    @functools.cached_property
    def faults(self) -> FaultTable:
        """Faults injected for testing (vtl.faults), as the device models consult them."""
        from vtl.faults import FaultTable

        return FaultTable(self.root)

    # ---- lifecycle ----------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, config: LibraryConfig | None = None) -> Library:
        """Create a new library directory; refuses one that already has a library."""
        root = Path(root)
        config = (config or LibraryConfig())
        try:
            config.validate()
        except ConfigError as e:
            raise LibraryError(str(e)) from None
        if (root / CONFIG_NAME).exists() or (root / CATALOG_NAME).exists():
            raise LibraryError(f"a library already exists at {root}")
        if root.exists() and not root.is_dir():
            raise LibraryError(f"{root} exists and is not a directory")
        try:
            (root / CARTRIDGE_DIR).mkdir(parents=True, exist_ok=True)
            catalog = MediaCatalog(root / CATALOG_NAME, create=True)
            config.save(root)
        except OSError as e:
            raise LibraryError(f"cannot create library at {root}: {e.strerror or e}") from None
        lib = cls(root, config, catalog)
        catalog.log("library-created", detail=config.to_dict())
        return lib

    @classmethod
    def open(cls, root: Path, *, readonly: bool = False) -> Library:
        """Open an existing library; NoLibrary if there is none (or its config is invalid),
        CatalogDamaged if its catalog is missing or damaged (never a fresh, empty catalog
        under existing cartridges).

        ``readonly`` is for commands that only look: the catalog is opened ``mode=ro`` and
        nothing is created, migrated, reconciled or backed up. A writer reconciles the
        catalog with cartridges a crashed process left open (:meth:`reconcile`)."""
        root = Path(root)
        if not (root / CONFIG_NAME).is_file():
            raise NoLibrary(f"no library at {root} (run 'vtl init' first)")
        try:
            config = LibraryConfig.load(root)
        except ConfigFileError:
            raise  # a damaged library.toml is not a missing library
        except ConfigError as e:
            raise NoLibrary(str(e)) from None
        catalog = MediaCatalog(root / CATALOG_NAME, readonly=readonly)
        if not readonly:
            (root / CARTRIDGE_DIR).mkdir(exist_ok=True)
        lib = cls(root, config, catalog)
        try:
            from vtl import layout_check

            layout_check.check(lib)  # slots shrunk under cartridges: refused, not orphaned
        except BaseException:
            catalog.close()
            raise
        if config.store == "dedup" and config.s3.location:  # chunks may live in S3
            from vtl.inventory import STORE_DIR
            from vtl.s3_settings import attach_chunk_remote

            attach_chunk_remote(root / STORE_DIR, config.s3, None if readonly else root)
        if not readonly:
            lib.reconcile()
        return lib

    def close(self, *, back_up: bool | None = None) -> None:
        """Unmount every drive of this process and close the catalog. A writer that changed
        the catalog leaves a rotating backup copy (at most every few minutes); ``back_up=True``
        always does (``vtl serve`` at stop), ``False`` never."""
        for bay in self.drives:
            try:
                bay.unmount()
            except Exception:  # close the rest anyway
                pass
        if self.config.s3.upload == "auto" and not self.catalog.readonly:
            from vtl.s3_uploader import drain

            drain(self.root)  # what this process wrote is in the bucket when it returns
        with self.lock:
            if back_up is None:
                back_up = not self.catalog.readonly and self.catalog.conn.total_changes > 0
                interval = None
            else:
                interval = 0.0
            if back_up and not self.catalog.readonly:
                self.back_up_catalog(min_interval=interval, strict=False)
            self.catalog.close()

    def back_up_catalog(self, *, min_interval: float | None = 0.0, strict: bool = True
                        ) -> Path | None:
        """A rotating backup copy of the catalog (:mod:`vtl.catalog_backup`), unless the
        newest is younger than ``min_interval`` seconds (None: the module's default). Not
        ``strict``: a copy that cannot be written never fails the command that changed the
        catalog."""
        from vtl import catalog_backup

        if min_interval is None:
            min_interval = catalog_backup.MIN_INTERVAL_S
        try:
            return catalog_backup.maybe_take_copy(self.catalog, self.root, min_interval)
        except (OSError, sqlite3.Error) as e:
            if strict:
                raise LibraryError(f"cannot copy the catalog: {e}") from None
            return None

    # ---- reconciling after a crash -------------------------------------------------------
    def reconcile(self) -> list[str]:
        """Bring the catalog in line with cartridges a crashed process left open.

        A drive records what a cartridge holds (used bytes, objects, tape files) when it is
        unmounted; a process killed meanwhile leaves ``open_since`` set and the counts stale.
        Each such cartridge that no live process holds is opened read-write under its lock
        (which also cuts a torn tail, as any read-write open does), its counts are stored and
        the mark is cleared. Returns the barcodes it fixed; busy ones are left for later."""
        fixed: list[str] = []
        with self.lock:
            for row in self.catalog.left_open():
                barcode = row["barcode"]
                if self._mounted_here(barcode) is not None:
                    continue
                try:
                    fd = self._lock_cartridge(barcode, wait=0)
                except CartridgeBusy:
                    continue  # a live process has it mounted: its unmount records the stats
                try:
                    stats = self._stats_from_file(row)
                finally:
                    os.close(fd)
                self.catalog.update_cartridge(barcode, open_since=None, **stats)
                self.catalog.log("reconcile", barcode, detail=stats)
                fixed.append(barcode)
        return fixed

    def _stats_from_file(self, row: dict[str, Any]) -> dict[str, Any]:
        """What the cartridge file of ``row`` holds, as catalog values (state kept when an
        admin or the EBM set it); {} if the file cannot be opened (verify reports why)."""
        from tape_formats.cartridge import CartridgeError

        try:
            cart = open_cartridge(self.root / row["path"], count_load=False)
        except (LibraryError, CartridgeError, OSError):
            return {}
        try:
            cart.sync()
            stats = cartridge_stats(cart)
        finally:
            cart.close()
        if row["state"] not in AUTO_STATES:
            stats.pop("state")
        if (stats["blocks"], stats["used_bytes"]) != (row["blocks"], row["used_bytes"]):
            stats["last_written"] = now_iso()
        return stats

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- placement cache ----------------------------------------------------------------
    def _reload(self) -> bool:
        with self.lock:
            self._data_version = self.catalog.data_version()
            new = self.catalog.placement()
            changed = False
            for bay in self.drives:
                old_bc = self._placement.get(bay.address, {}).get("barcode")
                new_bc = new.get(bay.address, {}).get("barcode")
                if old_bc != new_bc:
                    bay.media_generation += 1
            if {a: r["barcode"] for a, r in new.items()} != {
                a: r["barcode"] for a, r in self._placement.items()
            }:
                changed = True
            self._placement = new
            return changed

    def refresh(self) -> bool:
        """Re-read placement if another process committed to the catalog; True if it moved."""
        with self.lock:
            if self.catalog.data_version() == self._data_version:
                return False
            return self._reload()

    def _barcode_at(self, address: int) -> str | None:
        row = self._placement.get(address)
        return row["barcode"] if row else None

    # ---- elements ------------------------------------------------------------------------
    def _ranges(self) -> list[tuple[ElementType, int, int]]:
        c = self.config
        return [
            (ElementType.MEDIUM_TRANSPORT, c.transport_base, 1),
            (ElementType.IMPORT_EXPORT, c.mailslot_base, c.mailslots),
            (ElementType.DATA_TRANSFER, c.drive_base, c.drives),
            (ElementType.STORAGE, c.slot_base, c.slots),
        ]

    def _classify(self, address: int) -> tuple[ElementType, int]:
        for etype, base, count in self._ranges():
            if base <= address < base + count:
                return etype, address - base
        raise InvalidElement(f"no element at address {address}")

    def address_of(self, etype: ElementType, index: int) -> int:
        for t, base, count in self._ranges():
            if t == etype:
                if not 0 <= index < count:
                    raise InvalidElement(f"no {_TYPE_NAMES[etype]} {index + _NAME_BASE[etype]}")
                return base + index
        raise InvalidElement(f"unknown element type {etype}")

    def _element(self, etype: ElementType, address: int, index: int) -> Element:
        row = self._placement.get(address) if etype != ElementType.MEDIUM_TRANSPORT else None
        return Element(
            type=etype,
            address=address,
            index=index,
            barcode=row["barcode"] if row else None,
            source_address=row["source_address"] if row else None,
            media=row["media"] if row else None,
        )

    def elements(self, type: ElementType | None = None) -> list[Element]:
        """All elements (or those of one type), in address order."""
        with self.lock:
            self.refresh()
            out = [
                self._element(etype, base + i, i)
                for etype, base, count in self._ranges()
                if type is None or etype == type
                for i in range(count)
            ]
        return sorted(out, key=lambda e: e.address)

    def element(self, address: int) -> Element:
        with self.lock:
            self.refresh()
            etype, index = self._classify(address)
            return self._element(etype, address, index)

    def element_name(self, address: int | None) -> str:
        """``slot:3``-style name of an address (``vault`` for None)."""
        if address is None:
            return "vault"
        try:
            etype, index = self._classify(address)
        except InvalidElement:
            return str(address)
        return Element(etype, address, index, None, None, None).name

    def resolve(self, spec: str, *, allow_barcode: bool = False) -> int:
        """An element address from ``1024``, ``slot:1``, ``drive:0``, ``mailslot:1``,
        ``transport``, or (if allowed) a barcode naming where that cartridge is."""
        spec = spec.strip()
        if spec.isdigit():
            address = int(spec)
            self._classify(address)
            return address
        m = re.fullmatch(r"(slot|drive|mailslot|transport)(?::(\d+))?", spec.lower())
        if m:
            kind = {v: k for k, v in _TYPE_NAMES.items()}[m.group(1)]
            if kind == ElementType.MEDIUM_TRANSPORT:
                return self.config.transport_base
            if m.group(2) is None:
                raise InvalidElement(f"element {spec!r} needs a number, e.g. {m.group(1)}:1")
            index = int(m.group(2)) - _NAME_BASE[kind]
            if index < 0:
                raise InvalidElement(f"no element {spec!r}")
            return self.address_of(kind, index)
        if allow_barcode and is_barcode(spec.upper()):
            element = self.find(spec.upper())
            return element.address
        raise InvalidElement(
            f"bad element {spec!r} (use an address or slot:N, drive:N, mailslot:N"
            + (", or a barcode)" if allow_barcode else ")")
        )

    def free(self, etype: ElementType) -> list[Element]:
        return [e for e in self.elements(etype) if not e.full]

    # ---- locating cartridges -------------------------------------------------------------
    def cartridge(self, barcode: str) -> dict[str, Any]:
        """The catalog row of a cartridge; UnknownBarcode if none."""
        row = self.catalog.cartridge(barcode)
        if row is None:
            parse_barcode(barcode)  # a malformed label gets BadBarcode with the reason
            raise UnknownBarcode(f"unknown barcode {barcode}")
        return row

    def where(self, barcode: str) -> Element | None:
        """The element holding a cartridge, None if it is in the vault."""
        row = self.cartridge(barcode)
        if row["address"] is None:
            return None
        return self.element(row["address"])

    def find(self, barcode: str) -> Element:
        """The element holding a cartridge; UnknownBarcode / CartridgeOutside otherwise."""
        element = self.where(barcode)
        if element is None:
            raise CartridgeOutside(f"cartridge {barcode} is outside the library (vault)")
        return element

    def cartridge_path(self, barcode: str) -> Path:
        """The cartridge's local file; CartridgeArchived when it lives in the object store."""
        row = self.cartridge(barcode)
        if row.get("archived_to"):
            raise CartridgeArchived(f"cartridge {barcode} is archived to {row['archived_to']}"
                                    f" ('vtl cartridge retrieve {barcode}' brings it back)")
        if self.config.s3.gateway:  # one gateway of several: not a copy another one took
            from vtl.leases import check_not_lost

            check_not_lost(self.root, barcode)
        return self.root / row["path"]

    # ---- locks and claims ----------------------------------------------------------------
    def _lock_path(self, barcode: str) -> Path:
        return self.root / CARTRIDGE_DIR / f"{barcode}.lock"

    def _lock_cartridge(self, barcode: str, wait: float = LOCK_WAIT_S) -> int:
        """Take the cartridge's exclusive flock; CartridgeBusy if still held after ``wait``
        seconds. Moves hold it for milliseconds, so a short wait turns a race between two
        movers into a queue; a mount holds it for long, so the wait stays short."""
        fd = os.open(self._lock_path(barcode), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise CartridgeBusy(
                        f"cartridge {barcode} is in use by another process"
                    ) from None
                time.sleep(0.02)

    def in_use(self, barcode: str) -> bool:
        """Whether some process (this one included) has the cartridge mounted right now."""
        if self._mounted_here(barcode) is not None:
            return True
        try:
            fd = os.open(self._lock_path(barcode), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def record_stats(self, barcode: str, cart: TapeCartridge) -> None:
        """Store what an open cartridge holds (used bytes, objects, files) in the catalog,
        e.g. after an index rebuild, so catalog and tape agree."""
        stats = cartridge_stats(cart)
        if self.cartridge(barcode)["state"] not in AUTO_STATES:
            stats.pop("state")
        self.catalog.update_cartridge(barcode, **stats)

    def _mounted_here(self, barcode: str) -> DriveBay | None:
        for bay in self.drives:
            if bay._mounted == barcode:
                return bay
        return None

    def _check_claim(self, drive: int) -> None:
        claim = self.catalog.claims().get(drive)
        if claim is not None and claim["pid"] != os.getpid():
            raise CartridgeBusy(
                f"drive {drive} is claimed by {claim['owner']} (pid {claim['pid']})"
            )

    class _Held:
        """Context manager: a cartridge's flock for an offline operation (erase, delete...)."""

        def __init__(self, lib: Library, barcode: str) -> None:
            self.lib, self.barcode, self.fd = lib, barcode, -1

        def __enter__(self) -> None:
            if self.lib._mounted_here(self.barcode) is not None:
                raise CartridgeBusy(f"cartridge {self.barcode} is mounted in this process")
            self.fd = self.lib._lock_cartridge(self.barcode)

        def __exit__(self, *exc: object) -> None:
            os.close(self.fd)

    def held(self, barcode: str) -> Library._Held:
        return Library._Held(self, barcode)

    def claims(self) -> dict[int, dict[str, Any]]:
        """Live drive claims: drive index -> {owner, pid, host, since}."""
        return self.catalog.claims()

    def claim_drive(self, owner: str, drive: int | None = None) -> DriveBay:
        """Reserve a drive for this process (the EBM), so no one else mounts or unloads it.

        ``drive=None`` picks a free drive, preferring empty ones. CartridgeBusy if the drive
        is claimed by another live process (stale claims of dead processes are taken over)
        or its cartridge is open elsewhere.
        """
        with self.lock, self.catalog.transaction():
            self.refresh()
            claims = self.catalog.claims()
            if drive is None:
                free = [b for b in self.drives if b.index not in claims]
                if not free:
                    raise CartridgeBusy("every drive is claimed")
                free.sort(key=lambda b: (self._barcode_at(b.address) is not None, b.index))
                candidates = free
            else:
                if not 0 <= drive < len(self.drives):
                    raise InvalidElement(f"no drive {drive}")
                claim = claims.get(drive)
                if claim is not None and (claim["pid"], claim["owner"]) != (os.getpid(), owner):
                    raise CartridgeBusy(
                        f"drive {drive} is claimed by {claim['owner']} (pid {claim['pid']})"
                    )
                candidates = [self.drives[drive]]
            last: LibraryError | None = None
            for bay in candidates:
                barcode = self._barcode_at(bay.address)
                if barcode is not None and self._mounted_here(barcode) is None:
                    if self.in_use(barcode):  # a probe: never wait while holding the catalog
                        last = CartridgeBusy(f"cartridge {barcode} in drive {bay.index} "
                                             "is in use by another process")
                        continue
                self.catalog.claim(bay.index, owner)
                self.catalog.log("drive-claimed", barcode, dst=bay.address, detail=owner)
                return bay
            raise last or CartridgeBusy("no drive can be claimed")

    def release_drive(self, drive: int) -> None:
        """Drop this process's claim on a drive (a no-op if it holds none)."""
        with self.lock:
            claim = self.catalog.claims().get(drive)
            if claim is None:
                return
            if claim["pid"] != os.getpid():
                raise CartridgeBusy(
                    f"drive {drive} is claimed by {claim['owner']} (pid {claim['pid']})"
                )
            self.catalog.release(drive)
            self.catalog.log("drive-released", dst=self.address_of(ElementType.DATA_TRANSFER, drive))

    # ---- moves ---------------------------------------------------------------------------
    def move_medium(self, src: int, dst: int) -> None:
        """Move the cartridge at element ``src`` to the empty element ``dst``.

        Moving out of a drive unmounts the cartridge first (sync + close), unless the drive's
        medium removal is prevented. Placement changes in one IMMEDIATE transaction, while the
        cartridge's flock is held so no other process can mount it half-way.
        """
        stype, sindex = self._classify(src)
        dtype, dindex = self._classify(dst)
        io = (self.drives[sindex].io_lock if stype == ElementType.DATA_TRANSFER
              else contextlib.nullcontext())
        with io, self.lock:
            self.refresh()
            if ElementType.MEDIUM_TRANSPORT in (stype, dtype):
                raise InvalidElement("the medium transport cannot be a source or destination")
            barcode = self._barcode_at(src)
            if barcode is None:
                raise SourceEmpty(f"{self.element_name(src)} is empty")
            if src == dst:
                return
            if self._barcode_at(dst) is not None:
                raise DestinationFull(
                    f"{self.element_name(dst)} is occupied by {self._barcode_at(dst)}"
                )
            if stype == ElementType.DATA_TRANSFER:
                bay = self.drives[sindex]
                if bay.prevent_removal:
                    raise MediumRemovalPrevented(f"drive {sindex}: medium removal is prevented")
                self._check_claim(sindex)
                bay.unmount()
            if dtype == ElementType.DATA_TRANSFER:
                self._check_claim(dindex)
            with self.held(barcode), self.catalog.transaction() as conn:
                row = self.catalog.cartridge(barcode)
                if row is None or row["address"] != src:
                    raise SourceEmpty(f"{self.element_name(src)} changed meanwhile; retry")
                if self.catalog.at(dst) is not None:
                    raise DestinationFull(f"{self.element_name(dst)} is occupied")
                home = src if stype == ElementType.STORAGE else row["home_address"]
                conn.execute(
                    "UPDATE cartridges SET address = ?, source_address = ?, home_address = ?, "
                    "load_count = load_count + ? WHERE barcode = ?",
                    (dst, src, home, 1 if dtype == ElementType.DATA_TRANSFER else 0, barcode),
                )
                self.catalog.log("move", barcode, src=src, dst=dst)
            self._reload()

    def load(self, barcode: str, drive: int) -> DriveBay:
        """Move a cartridge into drive ``drive`` (0-based); a no-op if it is already there."""
        if not 0 <= drive < len(self.drives):
            raise InvalidElement(f"no drive {drive}")
        bay = self.drives[drive]
        src = self.find(barcode).address
        if src != bay.address:
            self.move_medium(src, bay.address)
        return bay

    def unload(self, drive: int) -> None:
        """Move drive ``drive``'s cartridge back to its home slot (or the first free slot)."""
        if not 0 <= drive < len(self.drives):
            raise InvalidElement(f"no drive {drive}")
        bay = self.drives[drive]
        with bay.io_lock, self.lock:
            self.refresh()
            row = self._placement.get(bay.address)
            if row is None:
                raise SourceEmpty(f"drive {drive} is empty")
            home = row["home_address"]
            dst: int | None = None
            if home is not None and self._is_type(home, ElementType.STORAGE):
                if self._barcode_at(home) is None:
                    dst = home
            if dst is None:
                free = self.free(ElementType.STORAGE)
                if not free:
                    raise DestinationFull("no free slot to unload into")
                dst = free[0].address
            self.move_medium(bay.address, dst)

    def _is_type(self, address: int, etype: ElementType) -> bool:
        try:
            return self._classify(address)[0] == etype
        except InvalidElement:
            return False

    def open_readonly(self, barcode: str) -> TapeCartridge:
        """Open a cartridge read-only for inspection (works while it is mounted elsewhere)."""
        return open_cartridge(self.cartridge_path(barcode), readonly=True)

    # ---- shortcuts used across the project (tests, benchmarks, the EBM helpers) -----------
    def create_cartridge(self, barcode: str, **options: Any) -> None:
        """:func:`vtl.inventory.create_cartridge` on this library."""
        from vtl import inventory

        inventory.create_cartridge(self, barcode, **options)

    def create_cartridges(self, barcodes: Iterable[str], **options: Any) -> list[str]:
        """:func:`vtl.inventory.create_cartridges` on this library."""
        from vtl import inventory

        return inventory.create_cartridges(self, barcodes, **options)

    def import_cartridge(self, barcode: str) -> Element:
        """:func:`vtl.mailslots.import_cartridge` on this library."""
        from vtl import mailslots

        return mailslots.import_cartridge(self, barcode)

    def export_cartridge(self, barcode: str) -> Element:
        """:func:`vtl.mailslots.export_cartridge` on this library."""
        from vtl import mailslots

        return mailslots.export_cartridge(self, barcode)

    def empty_mailslots(self) -> list[str]:
        """:func:`vtl.mailslots.empty_mailslots` on this library."""
        from vtl import mailslots

        return mailslots.empty_mailslots(self)

