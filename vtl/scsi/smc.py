"""The medium changer (SMC-3): the library's robot, slots, mailslots and drives as one LUN.

``MediumChanger`` adds the SMC commands to the SPC-4 base: READ ELEMENT STATUS, MOVE MEDIUM,
EXCHANGE MEDIUM, INITIALIZE ELEMENT STATUS (plain and WITH RANGE), POSITION TO ELEMENT, the
mode pages 0x1D/0x1E/0x1F and the log pages 0x00 and 0x2E (TapeAlert: the library's flags,
raised by ``vtl changer tapealert``, cleared when read). All placement lives in the library's catalog; this model keeps no
copy of it except a snapshot used to notice changes made behind its back.

Changes from elsewhere (``vtl cartridge import`` in another process, the backup manager
loading a drive) reach initiators as UNIT ATTENTION: 28/01 IMPORT OR EXPORT ELEMENT ACCESSED
when a mailslot changed, 28/00 NOT READY TO READY CHANGE (medium may have changed) when any
other element did. Moves this changer made itself raise no UNIT ATTENTION, like a real library.

Library errors map to sense data as SMC-3 and SPC-4 name them (``sense_for``; the names are
the conditions of ``vtl.scsi.sense``):

=========================  ==============================================================
library error              sense
=========================  ==============================================================
InvalidElement             ILLEGAL REQUEST 21/01 INVALID ELEMENT ADDRESS
SourceEmpty                ILLEGAL REQUEST 3B/0E MEDIUM SOURCE ELEMENT EMPTY
DestinationFull            ILLEGAL REQUEST 3B/0D MEDIUM DESTINATION ELEMENT FULL
MediumRemovalPrevented     ILLEGAL REQUEST 53/02 MEDIUM REMOVAL PREVENTED (drive PREVENT)
CartridgeBusy              NOT READY 04/07 LOGICAL UNIT NOT READY, OPERATION IN PROGRESS
other LibraryError         HARDWARE ERROR 3B/16 MECHANICAL POSITIONING OR CHANGER ERROR
=========================  ==============================================================

CartridgeBusy (the cartridge is open in another process, or the drive is claimed by the
backup manager) is transient and not the initiator's fault, so it is NOT READY rather than
ILLEGAL REQUEST: the same command succeeds once the other user is done. ASCQ 07h says
"an operation is in progress", which is exactly the situation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from vtl.faults import CHANGER, take_injected
from vtl.library import (
    CartridgeBusy,
    DestinationFull,
    DriveBay,
    Element,
    ElementType,
    InvalidElement,
    Library,
    LibraryError,
    MediumRemovalPrevented,
    SourceEmpty,
)
from vtl.scsi.base import CheckCondition, Nexus
from vtl.scsi.identities import ChangerIdentity, changer_identity
from vtl.scsi.opcodes import Opcode
from vtl.scsi.pages import LogPage, ModePage, tapealert_parameters
from vtl.scsi.sense import (
    INVALID_ELEMENT_ADDRESS,
    LUN_NOT_READY_OPERATION_IN_PROGRESS,
    MECHANICAL_POSITIONING_OR_CHANGER_ERROR,
    MEDIUM_DESTINATION_ELEMENT_FULL,
    MEDIUM_REMOVAL_PREVENTED,
    MEDIUM_SOURCE_ELEMENT_EMPTY,
    UnitAttention,
    invalid_field_in_cdb,
)
from vtl.scsi.smc_cdb import (
    parse_exchange_medium,
    parse_initialize_element_status_with_range,
    parse_move_medium,
    parse_position_to_element,
)
from vtl.scsi.smc_elements import (
    ElementState,
    ElementTypeCode,
    MediumType,
    parse_read_element_status,
    read_element_status,
)
from vtl.scsi.smc_lock import set_mailslot_lock
from vtl.scsi.smc_pages import (
    ElementRange,
    device_capabilities_page,
    element_address_assignment_page,
    transport_geometry_page,
)
from vtl.scsi.spc import PR_READ, PR_WRITE, CommandSpec, Request, ScsiModel, command

log = logging.getLogger(__name__)

_MEDIA_TYPES = (ElementTypeCode.STORAGE, ElementTypeCode.IMPORT_EXPORT,
                ElementTypeCode.DATA_TRANSFER)
# Every move the library allows: any element that holds media to any other (the transport
# never holds a cartridge between commands, so it is neither source nor destination).
MOVES = [(s, d) for s in _MEDIA_TYPES for d in _MEDIA_TYPES]


def sense_for(error: LibraryError) -> CheckCondition:
    """The CHECK CONDITION a library error becomes (table in the module docstring)."""
    if isinstance(error, InvalidElement):
        return INVALID_ELEMENT_ADDRESS()
    if isinstance(error, SourceEmpty):
        return MEDIUM_SOURCE_ELEMENT_EMPTY()
    if isinstance(error, DestinationFull):
        return MEDIUM_DESTINATION_ELEMENT_FULL()
    if isinstance(error, MediumRemovalPrevented):
        return MEDIUM_REMOVAL_PREVENTED()
    if isinstance(error, CartridgeBusy):
        return LUN_NOT_READY_OPERATION_IN_PROGRESS()
    return MECHANICAL_POSITIONING_OR_CHANGER_ERROR()


@contextmanager
def library_errors() -> Iterator[None]:
    """Turn LibraryError raised inside the block into the matching CHECK CONDITION."""
    try:
        yield
    except LibraryError as e:
        log.info("changer: %s", e)
        raise sense_for(e) from None


def medium_type_of(barcode: str, worm: bool) -> MediumType:
    if barcode.upper().startswith("CLN"):
        return MediumType.CLEANING
    return MediumType.WORM if worm else MediumType.DATA


class MediumChanger(ScsiModel):
    """SMC-3 medium changer over a :class:`vtl.library.Library` (peripheral type 0x08)."""

    PERIPHERAL_TYPE = 0x08

    def __init__(self, library: Library, identity: ChangerIdentity | None = None) -> None:
        if identity is None:
            identity = changer_identity(library.config.changer_model)
        super().__init__(identity, library.config.changer_serial)
        self.library = library
        cfg = library.config
        self.transport_address = cfg.transport_base
        self.add_mode_page(_static_page(element_address_assignment_page(
            ElementRange(cfg.transport_base, 1),
            ElementRange(cfg.slot_base, cfg.slots),
            ElementRange(cfg.mailslot_base, cfg.mailslots),
            ElementRange(cfg.drive_base, cfg.drives),
        ), "element address assignment"))
        self.add_mode_page(_static_page(transport_geometry_page(1), "transport geometry"))
        self.add_mode_page(_static_page(device_capabilities_page(
            _MEDIA_TYPES, MOVES, MOVES), "device capabilities"))
        # TapeAlert 0x2E with the library's flags (SMC-3): raised by ``vtl changer
        # tapealert`` (vtl.faults), cleared when read, as a real library's are.
        self.tapealert: set[int] = set()
        self._alerts_seen = 0
        self.add_log_page(LogPage(0x2E, lambda: tapealert_parameters(self.tapealert),
                                  name="TapeAlert", after_read=self.tapealert.clear,
                                  reset=self.tapealert.clear))
        self._snapshot = self._inventory()

    # ------------------------------------------------------------------ inventory watch
    def _inventory(self) -> dict[int, str | None]:
        """Address -> barcode for every element, re-read from the catalog if it moved."""
        return {e.address: e.barcode for e in self.library.elements()}

    def before_command(self, nexus: Nexus, spec: CommandSpec) -> None:
        """Notice changes made outside this changer and queue the matching UNIT ATTENTION;
        raise TapeAlert flags injected since the last command."""
        self._notice_changes()
        self._alerts_seen = take_injected(self.library.faults, CHANGER, self._alerts_seen,
                                          self.tapealert)

    def _notice_changes(self, ours: dict[int, str | None] | None = None) -> None:
        """Compare the library with the last known state and tell every nexus what changed.

        ``ours`` is what a move by this changer changed (address -> new barcode); those
        differences are expected and raise nothing, anything else came from outside.
        """
        if ours:
            self._snapshot.update(ours)
        try:
            current = self._inventory()
        except Exception as e:  # a catalog hiccup must not block INQUIRY
            log.warning("changer: cannot read inventory: %s", e)
            return
        if current == self._snapshot:
            return
        changed = {a for a in current.keys() | self._snapshot.keys()
                   if current.get(a) != self._snapshot.get(a)}
        self._snapshot = current
        cfg = self.library.config
        mailslots = range(cfg.mailslot_base, cfg.mailslot_base + cfg.mailslots)
        if any(a in mailslots for a in changed):
            self.queue_ua(UnitAttention.IMPORT_EXPORT_ACCESSED)
        if any(a not in mailslots for a in changed):
            self.queue_ua(UnitAttention.NOT_READY_TO_READY)

    # ------------------------------------------------------------------ element snapshots
    def element_states(self) -> list[ElementState]:
        """Every element as READ ELEMENT STATUS reports it, in address order."""
        lib = self.library
        elements = lib.elements()
        worm = {a: bool(r.get("worm")) for a, r in lib.catalog.placement().items()}
        bays = {bay.address: bay for bay in lib.drives}
        me = os.getpid()
        # A drive the backup manager (another process) claimed is out of the robot's reach.
        claimed = {lib.drives[i].address for i, c in lib.claims().items()
                   if c["pid"] != me and 0 <= i < len(lib.drives)}
        return [self._state(e, worm.get(e.address, False), bays.get(e.address),
                            e.address not in claimed)
                for e in elements]

    def _state(self, e: Element, worm: bool, bay: DriveBay | None, access: bool) -> ElementState:
        type_code = ElementTypeCode(int(e.type))
        full = e.barcode is not None
        return ElementState(
            type=type_code,
            address=e.address,
            full=full,
            barcode=e.barcode,
            source=e.source_address if full else None,
            # A cartridge in a mailslot with no source came in through the door (vtl
            # cartridge import); one with a source was put there by the robot (export).
            impexp=full and type_code == ElementTypeCode.IMPORT_EXPORT
            and e.source_address is None,
            device_id=bay.serial.encode("ascii", "replace") if bay else None,
            medium_type=medium_type_of(e.barcode, worm) if e.barcode else MediumType.UNSPECIFIED,
            access=access,
            lun=self.drive_lun(bay.index) if bay else None,
        )

    def drive_lun(self, index: int) -> int | None:
        """The LUN drive ``index`` has next to this changer (vtl.scsi.devices: index + 1).

        Reported in the data transfer element descriptor; a transport with another layout
        overrides it (None = not on the changer's target).
        """
        return index + 1

    def _check_transport(self, address: int) -> None:
        """0 names the default transport; anything else must be our one transport."""
        if address not in (0, self.transport_address):
            raise INVALID_ELEMENT_ADDRESS()

    def _check_element(self, address: int) -> Element:
        with library_errors():
            return self.library.element(address)

    # ------------------------------------------------------------------ SMC commands
    @command(Opcode.READ_ELEMENT_STATUS, "READ ELEMENT STATUS",
             "b8 ff ff ff ff ff 03 ff ff ff 00 00", pr=PR_READ)
    def cmd_read_element_status(self, req: Request) -> bytes:
        parsed = parse_read_element_status(req.cdb)
        if parsed.voltag and not getattr(self.identity, "has_barcode_reader", True):
            # what a library without a reader answers; mtx then retries without VOLTAG
            raise invalid_field_in_cdb(1, 4)
        with library_errors():
            states = self.element_states()
        return read_element_status(states, parsed)

    @command(Opcode.MOVE_MEDIUM, "MOVE MEDIUM", "a5 e0 ff ff ff ff ff ff 00 00 01 00",
             pr=PR_WRITE, timeout=300)
    def cmd_move_medium(self, req: Request) -> None:
        m = parse_move_medium(req.cdb)
        self._check_transport(m.transport)
        if m.invert:
            raise invalid_field_in_cdb(10, 0)  # page 0x1E: ROTATE = 0
        with library_errors():
            barcode = self.library.element(m.source).barcode
            self.library.move_medium(m.source, m.destination)
        if m.source != m.destination:
            self._notice_changes({m.source: None, m.destination: barcode})

    @command(Opcode.EXCHANGE_MEDIUM, "EXCHANGE MEDIUM", "a6 e0 ff ff ff ff ff ff ff ff 03 00",
             pr=PR_WRITE, timeout=600)
    def cmd_exchange_medium(self, req: Request) -> None:
        x = parse_exchange_medium(req.cdb)
        self._check_transport(x.transport)
        if x.invert1 or x.invert2:
            raise invalid_field_in_cdb(10, 1 if x.invert2 else 0)
        lib = self.library
        with library_errors():
            before = {a: lib.element(a).barcode
                      for a in (x.source, x.first_destination, x.second_destination)}
        try:
            with library_errors():
                self._exchange(x.source, x.first_destination, x.second_destination)
        except CheckCondition:
            self._notice_changes()  # a failed exchange is undone; report only outside changes
            raise
        ours = {x.source: None, x.second_destination: before[x.first_destination]}
        ours[x.first_destination] = before[x.source]
        self._notice_changes(ours)

    def _exchange(self, src: int, first: int, second: int) -> None:
        """Source -> first destination, whose cartridge goes to the second destination.

        Built from single moves. When the second destination is the source (a swap) the
        first destination's cartridge waits in a free slot meanwhile; its source element is
        then set back to where it really came from. A failed second step undoes the first.
        """
        lib = self.library
        for address in (src, first, second):
            element = lib.element(address)
            if element.type == ElementType.MEDIUM_TRANSPORT:
                raise InvalidElement("the medium transport cannot take part in an exchange")
        if lib.element(src).barcode is None or lib.element(first).barcode is None:
            raise SourceEmpty("exchange needs media in the source and first destination")
        if second != src and lib.element(second).barcode is not None:
            raise DestinationFull("second destination is occupied")
        if src == first:
            raise InvalidElement("source and first destination are the same element")
        if second != src:
            stage = second
        else:
            free = [e for e in lib.free(ElementType.STORAGE) if e.address not in (src, first)]
            if not free:
                raise DestinationFull("no free slot to stage an exchange")
            stage = free[0].address
        moved = lib.element(first).barcode
        lib.move_medium(first, stage)
        try:
            lib.move_medium(src, first)
        except LibraryError:
            lib.move_medium(stage, first)
            raise
        if stage == second:  # not a swap: first's cartridge already sits where it belongs
            return
        lib.move_medium(stage, src)
        if moved is not None:
            lib.catalog.update_cartridge(moved, source_address=first)
            # our own write does not bump PRAGMA data_version, so refresh() would not see it
            lib._reload()

    @command(Opcode.INITIALIZE_ELEMENT_STATUS, "INITIALIZE ELEMENT STATUS", "07 e0 00 00 00 00",
             pr=PR_WRITE, timeout=600)
    def cmd_initialize_element_status(self, req: Request) -> None:
        self._rescan()

    @command(Opcode.INITIALIZE_ELEMENT_STATUS_WITH_RANGE, "INITIALIZE ELEMENT STATUS WITH RANGE",
             "37 e3 ff ff 00 00 ff ff 00 00", pr=PR_WRITE, timeout=600)
    @command(Opcode.INITIALIZE_ELEMENT_STATUS_WITH_RANGE_LEGACY,
             "INITIALIZE ELEMENT STATUS WITH RANGE", "e7 e3 ff ff 00 00 ff ff 00 00",
             pr=PR_WRITE, timeout=600)
    def cmd_initialize_element_status_with_range(self, req: Request) -> None:
        r = parse_initialize_element_status_with_range(req.cdb)
        if r.ranged:
            self._check_element(r.start)
        self._rescan()

    def _rescan(self) -> None:
        """Our "inventory" is the catalog: re-read it, as a robot would scan barcodes.

        Changes from outside were already noticed before this command ran (and queued as
        UNIT ATTENTION for every nexus), so the rescan only makes sure the cache is fresh.
        """
        with library_errors():
            self.library.refresh()
        self._notice_changes()

    @command(Opcode.POSITION_TO_ELEMENT, "POSITION TO ELEMENT", "2b e0 ff ff ff ff 00 00 01 00",
             pr=PR_WRITE)
    def cmd_position_to_element(self, req: Request) -> None:
        p = parse_position_to_element(req.cdb)
        self._check_transport(p.transport)
        if p.invert:
            raise invalid_field_in_cdb(8, 0)
        self._check_element(p.destination)

    # ------------------------------------------------------------------ PREVENT ALLOW
    def on_prevent_changed(self, prevented: bool) -> None:
        """PREVENT on the changer locks the mailslot door (SMC-3 6.9).

        Moves by the robot into and out of mailslots stay allowed; what is prevented is an
        operator taking cartridges out or pushing them in from another process, so the lock
        is recorded in the shared catalog (see :mod:`vtl.scsi.smc_lock`). Also called from
        reset and nexus loss, outside any command, so a catalog failure is only logged.
        """
        try:
            set_mailslot_lock(self.library.catalog, prevented, f"changer {self.serial}")
        except Exception:  # the SCSI state is already changed; keep serving
            log.exception("changer: cannot record the mailslot lock")

    @property
    def mailslots_locked(self) -> bool:
        return self.prevent_removal


def _static_page(page: bytes, name: str) -> ModePage:
    """A mode page with no changeable field, from its full bytes (code, length, body)."""
    return ModePage(page[0] & 0x3F, page[2:], name=name)
