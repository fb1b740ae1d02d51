"""The changer's mode pages (SMC-3 7.3): element address assignment, transport geometry,
device capabilities.

Pure builders: each returns the page bytes (page code, page length, parameters) with the PS
bit clear; the MODE SENSE framework adds headers and sets PS. None of these pages has a
changeable field, so their changeable-values masks are all zeros of the same length.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vtl.scsi.smc_elements import ElementTypeCode

PAGE_ELEMENT_ADDRESS = 0x1D
PAGE_TRANSPORT_GEOMETRY = 0x1E
PAGE_DEVICE_CAPABILITIES = 0x1F

# Bit position of each element type in the capability bytes of page 0x1F.
_TYPE_BIT = {
    ElementTypeCode.MEDIUM_TRANSPORT: 0x01,
    ElementTypeCode.STORAGE: 0x02,
    ElementTypeCode.IMPORT_EXPORT: 0x04,
    ElementTypeCode.DATA_TRANSFER: 0x08,
}
_TYPE_ORDER = (
    ElementTypeCode.MEDIUM_TRANSPORT,
    ElementTypeCode.STORAGE,
    ElementTypeCode.IMPORT_EXPORT,
    ElementTypeCode.DATA_TRANSFER,
)


@dataclass(frozen=True, slots=True)
class ElementRange:
    """First address and count of one element type (a zero count reports address 0)."""

    first: int
    count: int


def element_address_assignment_page(
    transport: ElementRange,
    storage: ElementRange,
    import_export: ElementRange,
    data_transfer: ElementRange,
) -> bytes:
    """Page 0x1D: where each element type starts and how many there are.

    This is the first thing mtx and the Linux ch driver read; every later READ ELEMENT STATUS
    they send is sized and addressed from it.
    """
    p = bytearray(20)
    p[0] = PAGE_ELEMENT_ADDRESS
    p[1] = 0x12
    for offset, r in zip(range(2, 18, 4), (transport, storage, import_export, data_transfer),
                         strict=True):
        first = r.first if r.count else 0
        p[offset : offset + 2] = first.to_bytes(2, "big")
        p[offset + 2 : offset + 4] = r.count.to_bytes(2, "big")
    return bytes(p)


def transport_geometry_page(transports: int = 1) -> bytes:
    """Page 0x1E: one 2-byte descriptor per transport; ROTATE clear (cartridges have one side)."""
    p = bytearray(2 + 2 * transports)
    p[0] = PAGE_TRANSPORT_GEOMETRY
    p[1] = 2 * transports
    for i in range(transports):
        p[2 + 2 * i] = 0x00  # ROTATE = 0
        p[3 + 2 * i] = i  # member number in transport element set
    return bytes(p)


def device_capabilities_page(
    storage_types: Iterable[ElementTypeCode],
    moves: Iterable[tuple[ElementTypeCode, ElementTypeCode]],
    exchanges: Iterable[tuple[ElementTypeCode, ElementTypeCode]] = (),
) -> bytes:
    """Page 0x1F: which element types hold media and which moves/exchanges are allowed.

    ``moves`` and ``exchanges`` are (source type, destination type) pairs; byte 4 + n holds the
    destinations reachable from the n-th type (MT, ST, IE, DT) for MOVE MEDIUM, byte 12 + n the
    same for EXCHANGE MEDIUM.
    """
    p = bytearray(20)
    p[0] = PAGE_DEVICE_CAPABILITIES
    p[1] = 0x12
    for t in storage_types:
        p[2] |= _TYPE_BIT[t]
    for src, dst in moves:
        p[4 + _TYPE_ORDER.index(src)] |= _TYPE_BIT[dst]
    for src, dst in exchanges:
        p[12 + _TYPE_ORDER.index(src)] |= _TYPE_BIT[dst]
    return bytes(p)
