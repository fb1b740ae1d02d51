"""Cartridges for the data mover, through the library API (load, mount, unmount, unload).

Why its own module: the writer and reader only see "give me the next cartridge" and "open
cartridge X"; which drive, which slot and what to do when a crashed job left a cartridge in a
drive is library business kept here.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from ebm.catalog import Catalog
from ebm.mover import MoverError
from tape_formats.cartridge import CartridgeError, RecordKind, TapeCartridge

if TYPE_CHECKING:  # vtl is imported only when a command needs the library
    from vtl.library import Library


class MediaError(MoverError):
    """A cartridge cannot be had (missing, busy, pool exhausted); one line."""


def _lib_errors() -> tuple[type[BaseException], ...]:
    from vtl.library import LibraryError

    return (LibraryError, CartridgeError)


class DriveSession:
    """One claimed drive for one job: loads cartridges into it and mounts them.

    Claiming the drive (``library.claim_drive``) is what keeps two jobs off one drive, across
    processes; a claim whose process died is dropped by the library.
    """

    def __init__(self, library: Library, owner: str, wait: float = 120.0) -> None:
        """Claim a free drive, waiting up to ``wait`` seconds for one (more jobs than drives
        queue here instead of failing)."""
        self.library = library
        deadline = time.monotonic() + wait
        while True:
            try:
                self.bay = library.claim_drive(owner)
                break
            except _lib_errors() as e:
                if time.monotonic() >= deadline:
                    raise MediaError(f"no free drive: {e}") from None
                time.sleep(0.5)
        self.loaded: str | None = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.unload()
        with contextlib.suppress(Exception):
            self.library.release_drive(self.bay.index)

    def unload(self) -> None:
        if self.bay.cartridge is not None:
            self.bay.unmount()
        if self.loaded is not None or self.bay.barcode is not None:
            self.library.unload(self.bay.index)
        self.loaded = None

    def mount(self, barcode: str) -> TapeCartridge:
        """Load ``barcode`` into our drive (taking it out of a dead job's drive if needed)."""
        if self.loaded == barcode and self.bay.cartridge is not None:
            return self.bay.cartridge
        self.unload()
        lib = self.library
        try:
            lib.refresh()
            el = lib.find(barcode)
        except _lib_errors():
            raise MediaError(f"cartridge {barcode} is not in the library (exported or missing)") from None
        try:
            if el.type.name == "DATA_TRANSFER":
                # In a drive: ours after a crash, or one nobody holds any more.
                other = el.index
                if other != self.bay.index:
                    lib.unload(other)
            elif el.type.name not in ("STORAGE", "IMPORT_EXPORT"):
                raise MediaError(f"cartridge {barcode} is not where a drive can reach it")
            lib.load(barcode, self.bay.index)
            self.loaded = barcode
            return self.bay.mount()
        except MediaError:
            raise
        except _lib_errors() as e:
            raise MediaError(f"cannot mount cartridge {barcode}: {e}") from None


class PoolMedia:
    """MediaProvider for a backup: next cartridge from the pool, positioned at its append
    point (after the last good backup; a crashed job's torn tail there gets overwritten)."""

    def __init__(self, catalog: Catalog, session: DriveSession, pool: str, backup_id: int) -> None:
        self.catalog = catalog
        self.session = session
        self.pool = pool
        self.backup_id = backup_id
        self.used: list[str] = []

    def next_volume(self, seq: int) -> tuple[str, TapeCartridge]:
        while True:
            row = self.catalog.reserve_media(self.pool, self.backup_id, exclude=self.used)
            if row is None:
                raise MediaError(
                    f"pool {self.pool!r} has no scratch or appendable cartridge left"
                    + (f" (used {', '.join(self.used)})" if self.used else ""))
            barcode = row["barcode"]
            self.used.append(barcode)
            try:
                cart = self.session.mount(barcode)
            except MediaError:
                self.catalog.release_media(barcode)
                if seq == 0 and len(self.used) < 64:
                    continue  # try another cartridge of the pool
                raise
            if cart.write_protected:
                # A gateway's lapsed lease (vtl/leases.py) protects the cartridge only until
                # the lease is renewed: skip it for this job, but keep its catalog state.
                lapsed = cart.fence is not None and cart.fence() is not None
                self.session.unload()
                self.catalog.release_media(barcode, state=None if lapsed else "read-only")
                continue
            at = row["append_at"] if row["state"] == "append" else 0
            if at > cart.eod:
                self.catalog.release_media(barcode, state="error")
                raise MediaError(f"cartridge {barcode} ends at object {cart.eod}, before its "
                                 f"recorded append point {at} (erased outside the EBM?)")
            if cart.worm and at < cart.eod:
                # WORM cannot overwrite a crashed job's tail: end it with a filemark (so no
                # scanner runs it into our header) and append after it.
                cart.space_to_eod()
                if cart.object_kind(cart.eod - 1) != RecordKind.FILEMARK:
                    cart.write_filemarks(1, sync=True)
                at = cart.eod
            cart.locate(at)
            if at > 0 and cart.at_early_warning:
                # Nothing worth writing fits any more: close it and take the next one.
                self.session.unload()
                self.catalog.release_media(barcode, state="full")
                continue
            return barcode, cart

    def release_volume(self, barcode: str, cart: TapeCartridge, *, full: bool) -> None:
        self.session.unload()


class ReadMedia:
    """VolumeOpener for restores and verification (one drive, cartridges as needed)."""

    def __init__(self, session: DriveSession) -> None:
        self.session = session

    def open(self, barcode: str) -> TapeCartridge:
        return self.session.mount(barcode)

    def close(self, barcode: str, cart: TapeCartridge) -> None:
        self.session.unload()
