"""CDB decoding for the SMC commands that move or locate media (SMC-3 6.x).

Each parser checks length and reserved fields and returns a small record; bad fields raise
ILLEGAL REQUEST / INVALID FIELD IN CDB with the field pointer set, so an initiator can see
which byte it got wrong. Control-byte vendor bits (6-7) are accepted: mtx puts its
"eepos" (import/export tray position) there in MOVE MEDIUM.
"""

from __future__ import annotations

from dataclasses import dataclass

from vtl.scsi.opcodes import Opcode
from vtl.scsi.sense import invalid_field_in_cdb

CDB_LENGTH = {
    Opcode.INITIALIZE_ELEMENT_STATUS: 6,
    Opcode.POSITION_TO_ELEMENT: 10,
    Opcode.INITIALIZE_ELEMENT_STATUS_WITH_RANGE: 10,
    Opcode.INITIALIZE_ELEMENT_STATUS_WITH_RANGE_LEGACY: 10,
    Opcode.MOVE_MEDIUM: 12,
    Opcode.EXCHANGE_MEDIUM: 12,
    Opcode.READ_ELEMENT_STATUS: 12,
}


def _u16(cdb: bytes, at: int) -> int:
    return int.from_bytes(cdb[at : at + 2], "big")


def check_length(cdb: bytes, opcode: int) -> None:
    if len(cdb) < CDB_LENGTH[opcode]:
        raise invalid_field_in_cdb(0)


def check_reserved(cdb: bytes, *positions: int, mask_byte1: int = 0xFF) -> None:
    """Every listed byte must be zero; byte 1 is checked against ``mask_byte1`` only.

    Byte 1 bits 5-7 held the LUN in SCSI-2 and are obsolete now; old initiators still set them,
    so callers leave them out of the mask.
    """
    for pos in positions:
        check_bits(cdb, pos, mask_byte1 if pos == 1 else 0xFF)


def check_bits(cdb: bytes, pos: int, mask: int) -> None:
    """The bits of byte ``pos`` under ``mask`` must be zero; the field pointer names the highest
    one set, so the initiator sees exactly which bit it got wrong."""
    if cdb[pos] & mask:
        raise invalid_field_in_cdb(pos, (cdb[pos] & mask).bit_length() - 1)


@dataclass(frozen=True, slots=True)
class MoveMediumCdb:
    transport: int
    source: int
    destination: int
    invert: bool


def parse_move_medium(cdb: bytes) -> MoveMediumCdb:
    check_length(cdb, Opcode.MOVE_MEDIUM)
    check_reserved(cdb, 1, 8, 9, mask_byte1=0x1F)
    check_bits(cdb, 10, 0xFE)
    return MoveMediumCdb(_u16(cdb, 2), _u16(cdb, 4), _u16(cdb, 6), bool(cdb[10] & 1))


@dataclass(frozen=True, slots=True)
class ExchangeMediumCdb:
    transport: int
    source: int
    first_destination: int
    second_destination: int
    invert1: bool
    invert2: bool


def parse_exchange_medium(cdb: bytes) -> ExchangeMediumCdb:
    check_length(cdb, Opcode.EXCHANGE_MEDIUM)
    check_reserved(cdb, 1, mask_byte1=0x1F)
    check_bits(cdb, 10, 0xFC)
    return ExchangeMediumCdb(
        _u16(cdb, 2), _u16(cdb, 4), _u16(cdb, 6), _u16(cdb, 8),
        bool(cdb[10] & 1), bool(cdb[10] & 2),
    )


@dataclass(frozen=True, slots=True)
class PositionToElementCdb:
    transport: int
    destination: int
    invert: bool


def parse_position_to_element(cdb: bytes) -> PositionToElementCdb:
    check_length(cdb, Opcode.POSITION_TO_ELEMENT)
    check_reserved(cdb, 1, 6, 7, mask_byte1=0x1F)
    check_bits(cdb, 8, 0xFE)
    return PositionToElementCdb(_u16(cdb, 2), _u16(cdb, 4), bool(cdb[8] & 1))


def parse_initialize_element_status(cdb: bytes) -> None:
    check_length(cdb, Opcode.INITIALIZE_ELEMENT_STATUS)
    check_reserved(cdb, 1, 2, 3, 4, mask_byte1=0x1F)


@dataclass(frozen=True, slots=True)
class InitializeRangeCdb:
    ranged: bool
    fast: bool
    start: int
    count: int


def parse_initialize_element_status_with_range(cdb: bytes) -> InitializeRangeCdb:
    """INITIALIZE ELEMENT STATUS WITH RANGE: RANGE=0 means every element (fields ignored)."""
    check_length(cdb, cdb[0])
    check_reserved(cdb, 1, 4, 5, 8, mask_byte1=0x1C)
    return InitializeRangeCdb(
        ranged=bool(cdb[1] & 1), fast=bool(cdb[1] & 2), start=_u16(cdb, 2), count=_u16(cdb, 6)
    )
