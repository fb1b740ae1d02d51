"""CDB decoding for the SSC commands a tape drive parses (SSC-4 clauses 6-8), in one place.

The drive model (vtl.scsi.ssc) and the transports' streaming fast paths both read READ(6) and
WRITE(6) through this module, so "what do these bytes ask for" has one answer. Reserved bits
are not checked here: the ``@command`` usage mask already did that before a handler runs.
Fields that are valid bits but an invalid combination raise ILLEGAL REQUEST / INVALID FIELD
IN CDB with the field pointer set, as in ``smc_cdb``.

READ(6) and WRITE(6) are the per-block commands of a tape stream, so their decoding is
indexing and ``int.from_bytes`` only (no construct, no dataclass): a fast path calls it for
every block.
"""

from __future__ import annotations

from typing import NamedTuple

from vtl.scsi.opcodes import Opcode
from vtl.scsi.sense import invalid_field_in_cdb

# Byte 1 of READ(6)/WRITE(6)/VERIFY(6): FIXED (transfer length in blocks of the mode's block
# size, not bytes) and, READ only, SILI (do not report a shorter block as ILI).
FIXED = 0x01
SILI = 0x02

_READ_6 = int(Opcode.READ_6)
_WRITE_6 = int(Opcode.WRITE_6)
_NOT_SILI = ~SILI & 0xFF


def transfer_length(cdb: bytes | memoryview) -> int:
    """TRANSFER LENGTH (bytes 2-4) of READ(6)/WRITE(6)/VERIFY(6)/WRITE FILEMARKS(6): bytes
    in variable mode, blocks (or filemarks) otherwise."""
    return int.from_bytes(cdb[2:5], "big")


def decode_read_write6(cdb: bytes | memoryview) -> tuple[int, int, int]:
    """(FIXED, SILI, TRANSFER LENGTH) of READ(6), WRITE(6) or VERIFY(6) (SSC-4), the bits
    as set in byte 1 (FIXED 0/1, SILI 0/2). FIXED with SILI is an invalid READ(6) (the
    device may reject it; LTO drives do), reported at byte 1 bit 1. A plain tuple: a named
    one costs a Python-level constructor call on every block."""
    b1 = cdb[1]
    if b1 & FIXED and b1 & SILI:
        raise invalid_field_in_cdb(1, 1)
    return b1 & FIXED, b1 & SILI, int.from_bytes(cdb[2:5], "big")


def streaming_read_length(cdb: bytes | memoryview) -> int | None:
    """The transfer length of a READ(6) that asks for one variable-mode block with nothing
    unusual (SILI allowed, CONTROL byte 0), or None for any other CDB. What a fast path may
    answer without the general one (vtl/scsi/base.py, ``stream_read``)."""
    if cdb[0] != _READ_6 or cdb[1] & _NOT_SILI or cdb[5]:
        return None
    return int.from_bytes(cdb[2:5], "big")


def streaming_write_length(cdb: bytes | memoryview) -> int | None:
    """The transfer length of a variable-mode WRITE(6) with nothing unusual (byte 1 and the
    CONTROL byte 0), or None for any other CDB (``stream_write``)."""
    if cdb[0] != _WRITE_6 or cdb[1] or cdb[5]:
        return None
    return int.from_bytes(cdb[2:5], "big")


def streaming_fixed_count(cdb: bytes | memoryview) -> int | None:
    """The block count of a fixed-mode READ(6) or WRITE(6) with nothing unusual (byte 1 just
    FIXED, no SILI; CONTROL byte 0), or None for any other CDB: the fixed-mode case of
    ``stream_read``/``stream_write`` (the bytes are the count times the mode's block size)."""
    if (cdb[0] != _READ_6 and cdb[0] != _WRITE_6) or cdb[1] != FIXED or cdb[5]:
        return None
    return int.from_bytes(cdb[2:5], "big")


def verify_as_read6(cdb: bytes) -> bytes:
    """The READ(6) a VERIFY(6) performs without transferring data: same FIXED bit and
    length, no SILI (VERIFY has none; BYTCMP is not supported, the usage mask refuses it)."""
    return bytes((_READ_6, cdb[1] & FIXED)) + cdb[2:]


_ERASE = int(Opcode.ERASE)


def immediate(cdb: bytes) -> bool:
    """IMMED of REWIND, LOAD UNLOAD, WRITE FILEMARKS (byte 1 bit 0) and ERASE (byte 1 bit 1,
    bit 0 being LONG): return status once the CDB is checked, do the work after."""
    return bool(cdb[1] & (0x02 if cdb[0] == _ERASE else 0x01))


class WriteFilemarks(NamedTuple):
    immed: bool  # return before the filemarks are on the medium (no sync)
    count: int


def decode_write_filemarks(cdb: bytes) -> WriteFilemarks:
    """WRITE FILEMARKS(6): IMMED (byte 1 bit 0) and the filemark count (bytes 2-4)."""
    return WriteFilemarks(bool(cdb[1] & 0x01), int.from_bytes(cdb[2:5], "big"))


# SPACE CODE (byte 1 bits 0-3).
SPACE_BLOCKS = 0
SPACE_FILEMARKS = 1
SPACE_END_OF_DATA = 3


class Space(NamedTuple):
    code: int  # SPACE_BLOCKS, SPACE_FILEMARKS, SPACE_END_OF_DATA (others are refused later)
    count: int  # signed: negative spaces towards the beginning of the medium


def decode_space6(cdb: bytes) -> Space:
    """SPACE(6): code and a signed 24-bit count."""
    return Space(cdb[1] & 0x0F, int.from_bytes(cdb[2:5], "big", signed=True))


def decode_space16(cdb: bytes) -> Space:
    """SPACE(16): code and a signed 64-bit count (bytes 4-11). The PARAMETER LENGTH (bytes
    12-13) must be zero: no parameter list is supported."""
    if cdb[12] or cdb[13]:
        raise invalid_field_in_cdb(12)
    return Space(cdb[1] & 0x0F, int.from_bytes(cdb[4:12], "big", signed=True))


# LOCATE(16) DEST_TYPE (byte 1 bits 3-5).
DEST_LOGICAL_OBJECT = 0
DEST_FILEMARK = 1
DEST_END_OF_DATA = 3

_CP = 0x02  # change partition: the PARTITION field names the partition to move to


class Locate10(NamedTuple):
    identifier: int  # LOGICAL OBJECT IDENTIFIER (bytes 3-6)
    partition: int | None  # PARTITION (byte 8) when CP is set: the partition to move to


def decode_locate10(cdb: bytes) -> Locate10:
    """LOCATE(10): the logical object identifier, and the partition when CP is set (the
    drive judges whether it exists: byte 8)."""
    return Locate10(int.from_bytes(cdb[3:7], "big"), cdb[8] if cdb[1] & _CP else None)


class Locate16(NamedTuple):
    dest_type: int  # DEST_LOGICAL_OBJECT, DEST_FILEMARK, DEST_END_OF_DATA, or unsupported
    identifier: int  # LOGICAL IDENTIFIER (bytes 4-11)
    partition: int | None = None  # PARTITION (byte 3) when CP is set


def decode_locate16(cdb: bytes) -> Locate16:
    """LOCATE(16): destination type, identifier, and the partition when CP is set (byte 3)."""
    return Locate16((cdb[1] >> 3) & 0x07, int.from_bytes(cdb[4:12], "big"),
                    cdb[3] if cdb[1] & _CP else None)


# READ POSITION service actions (byte 1 bits 0-4): the forms of the returned data.
POSITION_SHORT = 0x00
POSITION_SHORT_VENDOR = 0x01  # short form, vendor-specific block identifiers (same for us)
POSITION_LONG = 0x06
POSITION_EXTENDED = 0x08


class ReadPosition(NamedTuple):
    form: int  # one of the POSITION_* service actions
    alloc: int  # ALLOCATION LENGTH (bytes 7-8), 0 = the whole form


def decode_read_position(cdb: bytes) -> ReadPosition:
    return ReadPosition(cdb[1] & 0x1F, int.from_bytes(cdb[7:9], "big"))


class LoadUnload(NamedTuple):
    load: bool  # LOAD (byte 4 bit 0): load and rewind; else unload
    eot: bool  # EOT (byte 4 bit 2): unload at end of tape


def decode_load_unload(cdb: bytes) -> LoadUnload:
    """LOAD UNLOAD: LOAD with EOT is contradictory (SSC-4), refused at byte 4 bit 2."""
    load, eot = bool(cdb[4] & 0x01), bool(cdb[4] & 0x04)
    if load and eot:
        raise invalid_field_in_cdb(4, 2)
    return LoadUnload(load, eot)


class SecurityProtocol(NamedTuple):
    """SECURITY PROTOCOL IN / OUT (SPC-4 6.30/6.31): which protocol and page, and the
    ALLOCATION (IN) or TRANSFER (OUT) LENGTH in bytes."""

    protocol: int
    specific: int  # SECURITY PROTOCOL SPECIFIC: the page, for tape data encryption
    length: int


def decode_security_protocol(cdb: bytes) -> SecurityProtocol:
    """Protocol, page and length. INC_512 (lengths in 512-byte units) is refused at byte 4
    bit 7: the encryption pages are a few dozen bytes."""
    if cdb[4] & 0x80:
        raise invalid_field_in_cdb(4, 7)
    return SecurityProtocol(cdb[1], int.from_bytes(cdb[2:4], "big"),
                            int.from_bytes(cdb[6:10], "big"))
