"""READ ELEMENT STATUS: CDB parsing and the element status data it returns (SMC-3 6.11, 6.12).

This module is pure: it knows nothing about the library, only about a list of
:class:`ElementState` snapshots. The changer model turns library elements into snapshots and
hands them here, which keeps the byte layout testable on its own and keeps one rule in one
place: the report is built in full first, then cut to the allocation length, so the byte counts
in the headers always describe the whole report (mtx re-issues the command with a larger
allocation length when the "byte count of report available" says it was cut short).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from vtl.scsi.sense import INVALID_ELEMENT_ADDRESS, invalid_field_in_cdb


class ElementTypeCode(enum.IntEnum):
    """SMC element type codes as they appear on the wire."""

    ALL = 0
    MEDIUM_TRANSPORT = 1
    STORAGE = 2
    IMPORT_EXPORT = 3
    DATA_TRANSFER = 4


class MediumType(enum.IntEnum):
    """SMC-3 MEDIUM TYPE field (byte 9, bits 0-2) of a full element."""

    UNSPECIFIED = 0
    DATA = 1
    CLEANING = 2
    DIAGNOSTIC = 3
    WORM = 4


# Volume tag: 32-byte volume identifier, 2 reserved bytes, 2-byte volume sequence number.
VOLUME_TAG_LEN = 36
VOLUME_IDENTIFIER_LEN = 32
BASE_DESCRIPTOR_LEN = 12
DEVICE_ID_HEADER_LEN = 4
CODE_SET_ASCII = 2
IDENTIFIER_TYPE_VENDOR_SPECIFIC = 0


@dataclass(frozen=True, slots=True)
class ElementState:
    """One element as the changer reports it, frozen at the moment the command runs.

    ``impexp`` (import/export elements only) is the IMPEXP bit: True when an operator put the
    cartridge there (an import waiting to be taken in), False when the transport put it there
    (an export waiting to be taken out). ``device_id`` is the DVCID identifier of a data
    transfer element (the drive's serial number).
    """

    type: ElementTypeCode
    address: int
    full: bool = False
    barcode: str | None = None
    source: int | None = None
    access: bool = True
    exception: tuple[int, int] | None = None
    impexp: bool = False
    device_id: bytes | None = None
    medium_type: MediumType = MediumType.UNSPECIFIED
    lun: int | None = None  # data transfer elements: the drive's LUN next to the changer


@dataclass(frozen=True, slots=True)
class ReadElementStatusCdb:
    element_type: ElementTypeCode
    voltag: bool
    start: int
    count: int
    dvcid: bool
    curdata: bool
    allocation_length: int


def parse_read_element_status(cdb: bytes) -> ReadElementStatusCdb:
    """Decode and check a READ ELEMENT STATUS CDB.

    Byte 1 bits 5-7 are the SCSI-2 LUN field, obsolete in SMC-3; mtx still fills them with the
    LUN it talks to, so they are ignored rather than rejected.
    """
    if len(cdb) < 12:
        raise invalid_field_in_cdb(0)
    type_code = cdb[1] & 0x0F
    if type_code > ElementTypeCode.DATA_TRANSFER:
        raise invalid_field_in_cdb(1, 3)
    if cdb[6] & 0xFC:
        raise invalid_field_in_cdb(6, 7)
    if cdb[10]:
        raise invalid_field_in_cdb(10, 7)
    return ReadElementStatusCdb(
        element_type=ElementTypeCode(type_code),
        voltag=bool(cdb[1] & 0x10),
        start=int.from_bytes(cdb[2:4], "big"),
        count=int.from_bytes(cdb[4:6], "big"),
        dvcid=bool(cdb[6] & 0x01),
        curdata=bool(cdb[6] & 0x02),
        allocation_length=int.from_bytes(cdb[7:10], "big"),
    )


def volume_tag(barcode: str | None) -> bytes:
    """Primary volume tag: the barcode left-aligned and space-padded to 32 bytes, sequence 0.

    An element without a cartridge (or a cartridge without a label) gets an all-zero tag, which
    initiators read as "no volume identifier".
    """
    if not barcode:
        return bytes(VOLUME_TAG_LEN)
    ident = barcode.encode("ascii", "replace")[:VOLUME_IDENTIFIER_LEN]
    return ident.ljust(VOLUME_IDENTIFIER_LEN, b" ") + bytes(4)


def device_id_length(elements: list[ElementState]) -> int:
    """Identifier length shared by every data transfer descriptor of one page.

    All descriptors in a page have one length, so the identifier is padded to the longest one,
    rounded up to a multiple of 4 as SPC asks of designators.
    """
    longest = max((len(e.device_id or b"") for e in elements), default=0)
    return (longest + 3) // 4 * 4


def descriptor_length(type_code: ElementTypeCode, voltag: bool, dvcid: bool, id_len: int) -> int:
    length = BASE_DESCRIPTOR_LEN + (VOLUME_TAG_LEN if voltag else 0)
    if dvcid and type_code == ElementTypeCode.DATA_TRANSFER:
        length += DEVICE_ID_HEADER_LEN + id_len
    return length


def element_descriptor(
    e: ElementState, *, voltag: bool, dvcid: bool, id_len: int
) -> bytes:
    """One element descriptor (SMC-3 6.12.3 - 6.12.6); the four types share one layout."""
    d = bytearray(BASE_DESCRIPTOR_LEN)
    d[0:2] = e.address.to_bytes(2, "big")
    flags = 0x01 if e.full else 0
    if e.exception is not None:
        flags |= 0x04
    if e.type != ElementTypeCode.MEDIUM_TRANSPORT and e.access:
        flags |= 0x08
    if e.type == ElementTypeCode.IMPORT_EXPORT:
        # IMPEXP only means something while the element holds a cartridge; INENAB and
        # EXENAB: our mailslots can both import and export.
        if e.full and e.impexp:
            flags |= 0x02
        flags |= 0x10 | 0x20
    d[2] = flags
    if e.exception is not None:
        d[4], d[5] = e.exception
    if e.type == ElementTypeCode.DATA_TRANSFER and e.lun is not None and 0 <= e.lun <= 7:
        # NOT BUS = 0, ID VALID = 0, LU VALID = 1: the drive is a LUN of the changer's own
        # target; the Linux ch driver uses this to name the tape device of each drive.
        d[6] = 0x10 | e.lun
    if e.full:
        if e.source is not None:
            d[9] |= 0x80  # SVALID; INVERT (0x40) stays 0: media are never turned over
            d[10:12] = e.source.to_bytes(2, "big")
        d[9] |= int(e.medium_type) & 0x07
    if voltag:
        d += volume_tag(e.barcode if e.full else None)
    if dvcid and e.type == ElementTypeCode.DATA_TRANSFER:
        ident = (e.device_id or b"").ljust(id_len, b" ")
        d += bytes((CODE_SET_ASCII, IDENTIFIER_TYPE_VENDOR_SPECIFIC, 0, id_len)) + ident
    return bytes(d)


def select_elements(
    elements: list[ElementState], type_code: ElementTypeCode, start: int, count: int
) -> list[ElementState]:
    """The elements a request covers: of the type asked, address >= start, at most ``count``.

    The starting address need not be an element's own address (mtx's "all elements" polling
    starts at 0 and then at last-reported + 1); a start beyond every element of the type is
    INVALID ELEMENT ADDRESS, which is also how mtx learns it has walked off the end. A type
    the library has none of (no mailslots) reports no elements rather than an error.
    """
    of_type = [e for e in elements if type_code == ElementTypeCode.ALL or e.type == type_code]
    if not of_type:
        return []
    candidates = sorted((e for e in of_type if e.address >= start), key=lambda e: e.address)
    if not candidates:
        raise INVALID_ELEMENT_ADDRESS()
    return candidates[:count]


def element_status_data(
    elements: list[ElementState], *, voltag: bool, dvcid: bool
) -> bytes:
    """The whole report for the selected elements: header, then one page per run of one type."""
    pages = bytearray()
    run: list[ElementState] = []

    def flush() -> None:
        if not run:
            return
        type_code = run[0].type
        id_len = device_id_length(run) if dvcid else 0
        desc_len = descriptor_length(type_code, voltag, dvcid, id_len)
        body = b"".join(
            element_descriptor(e, voltag=voltag, dvcid=dvcid, id_len=id_len) for e in run
        )
        header = bytearray(8)
        header[0] = int(type_code)
        header[1] = 0x80 if voltag else 0  # PVOLTAG; no alternate volume tags
        header[2:4] = desc_len.to_bytes(2, "big")
        header[5:8] = len(body).to_bytes(3, "big")
        pages.extend(header)
        pages.extend(body)
        run.clear()

    for e in elements:
        if run and run[0].type != e.type:
            flush()
        run.append(e)
    flush()

    header = bytearray(8)
    if elements:
        header[0:2] = elements[0].address.to_bytes(2, "big")
    header[2:4] = len(elements).to_bytes(2, "big")
    header[5:8] = len(pages).to_bytes(3, "big")
    return bytes(header + pages)


def read_element_status(
    elements: list[ElementState], req: ReadElementStatusCdb
) -> bytes:
    """Run a parsed READ ELEMENT STATUS against a snapshot; returns the Data-In bytes.

    A NUMBER OF ELEMENTS of zero reports no descriptors (just the header); the data is cut to
    the allocation length while the headers keep the full counts.
    """
    if req.allocation_length == 0:
        return b""
    if req.count == 0:
        chosen: list[ElementState] = []
        select_elements(elements, req.element_type, req.start, 1)  # still validate the start
    else:
        chosen = select_elements(elements, req.element_type, req.start, req.count)
    data = element_status_data(chosen, voltag=req.voltag, dvcid=req.dvcid)
    return data[: req.allocation_length]
