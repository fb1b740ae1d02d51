"""The import/export mailslots: cartridges enter and leave the library through them.

Export moves a cartridge from its slot into a free mailslot; emptying the mailslots (opening
the door) takes what is there out to the vault; import puts a vaulted cartridge into a free
mailslot. An initiator's PREVENT MEDIUM REMOVAL on the changer locks the door (the lock
lives in the catalog, :mod:`vtl.scsi.smc_lock`), so these refuse while another process holds it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from vtl.errors import CartridgeInDrive, DestinationFull, LibraryError, MediumRemovalPrevented
from vtl.library import Element, ElementType

if TYPE_CHECKING:
    from vtl.library import Library


def _check_mailslot_door(lib: Library) -> None:
    """Refuse door operations while an initiator's PREVENT locks the mailslots
    (the changer keeps that lock in the catalog; our own process's lock does not count)."""
    try:
        from vtl.scsi.smc_lock import mailslot_lock
    except ImportError:
        return
    lock = mailslot_lock(lib.catalog)
    if lock is not None and lock["pid"] != os.getpid():
        raise MediumRemovalPrevented(
            f"mailslots are locked by {lock['owner']} (pid {lock['pid']})"
        )


def export_cartridge(lib: Library, barcode: str) -> Element:
    """Move a cartridge from its slot into a free mailslot (as a library's export does)."""
    with lib.lock:
        _check_mailslot_door(lib)
        element = lib.find(barcode)
        if element.type == ElementType.DATA_TRANSFER:
            raise CartridgeInDrive(
                f"cartridge {barcode} is in drive {element.index}; unload it first"
            )
        if element.type == ElementType.IMPORT_EXPORT:
            raise LibraryError(f"cartridge {barcode} is already in {element.name}")
        free = lib.free(ElementType.IMPORT_EXPORT)
        if not free:
            raise DestinationFull("no free mailslot (empty the mailslots first)")
        lib.move_medium(element.address, free[0].address)
        return lib.element(free[0].address)


def import_cartridge(lib: Library, barcode: str) -> Element:
    """Put a vaulted cartridge into a free mailslot, ready to be moved to a slot."""
    with lib.lock:
        _check_mailslot_door(lib)
        element = lib.where(barcode)
        if element is not None:
            raise LibraryError(f"cartridge {barcode} is already in the library ({element.name})")
        from vtl.inventory import refuse_archived

        refuse_archived(lib.cartridge(barcode))
        free = lib.free(ElementType.IMPORT_EXPORT)
        if not free:
            raise DestinationFull("no free mailslot")
        dst = free[0].address
        with lib.catalog.transaction():
            if lib.catalog.at(dst) is not None:
                raise DestinationFull(f"{lib.element_name(dst)} is occupied")
            lib.catalog.update_cartridge(barcode, address=dst, source_address=None)
            lib.catalog.log("import", barcode, dst=dst)
        lib._reload()
        return lib.element(dst)


def empty_mailslots(lib: Library) -> list[str]:
    """Take every cartridge out of the mailslots into the vault (opening the door)."""
    with lib.lock:
        _check_mailslot_door(lib)
        taken: list[str] = []
        with lib.catalog.transaction():
            for element in lib.elements(ElementType.IMPORT_EXPORT):
                if element.barcode is None:
                    continue
                lib.catalog.update_cartridge(
                    element.barcode, address=None, source_address=element.address
                )
                lib.catalog.log("vault", element.barcode, src=element.address)
                taken.append(element.barcode)
        lib._reload()
        return taken
