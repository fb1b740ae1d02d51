"""Binary layout of a cartridge file, declared with construct.

A cartridge file is a 512-byte header followed by an append-only stream of records:

    +--------------------+  offset 0
    | CARTRIDGE_HEADER   |  512 bytes, CRC32C-protected, rewritten in place only for the
    |                    |  write-protect tab
    +--------------------+  offset 512 (DATA_START)
    | RECORD_HEADER      |  32 bytes: kind, flags, stored/native length, object number,
    | payload            |  file number, CRC32C of the payload, CRC32C of the header
    +--------------------+
    | ...                |
    +--------------------+  end of file = end of data

Every record carries enough to be checked on its own (the header's own CRC, the payload's
CRC, its logical object number), so a scan from the start can rebuild the position index and
a torn tail after a crash is recognised and cut off.

The per-block hot path packs and unpacks record headers with ``struct`` using the format
derived below (``RecordHeader.pack``/``unpack``); ``tests/tape_formats/test_cartridge.py`` proves
it is byte-identical to the construct declaration, which stays the single source of truth for
the layout. ``RecordKind`` is the one vocabulary for what a record holds, used by the file, the
position index and the drive's read results.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

import crc32c
from construct import (
    Bytes,
    Const,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    PaddedString,
    Padding,
    Struct,
)

CARTRIDGE_MAGIC = b"VTLCART\x01"
# Version 1: only what every build reads (data blocks, single filemarks). Version 2: the
# header's ``incompat`` word names the features a reader must know to touch the cartridge.
# A cartridge stays at version 1 until it first needs such a feature, so builds that know
# only version 1 keep reading it, and refuse it (never truncate it) once it has one.
FORMAT_VERSION = 1
FORMAT_VERSION_FEATURES = 2
READABLE_VERSIONS = frozenset({FORMAT_VERSION, FORMAT_VERSION_FEATURES})
HEADER_SIZE = 512
DATA_START = HEADER_SIZE
RECORD_MAGIC = b"RC"

FLAG_COMPRESSED = 0x01  # payload is a zstd frame; native_len is the decompressed size
FLAG_ENCRYPTED = 0x02  # payload is an AES-256-GCM envelope (tape_formats/block_crypto.py)
HEADER_FLAG_WORM = 0x01
HEADER_FLAG_WRITE_PROTECT = 0x02


class IncompatFeature(enum.IntFlag):
    """Bits of the header's ``incompat`` word: what a reader must understand, or refuse the
    cartridge. An unknown bit means a newer writer: refuse rather than misread or cut."""

    FILEMARK_RUNS = 0x01  # records of kind FILEMARK_RUN
    ENCRYPTED_BLOCKS = 0x02  # data records with FLAG_ENCRYPTED
    PARTITIONS = 0x04  # more than one partition: ``extra_partitions`` sibling files
    DATA_RUNS = 0x08  # records of kind DATA_RUN


# a plain int: ~ on it keeps every bit
KNOWN_INCOMPAT = int(IncompatFeature.FILEMARK_RUNS | IncompatFeature.ENCRYPTED_BLOCKS
                     | IncompatFeature.PARTITIONS | IncompatFeature.DATA_RUNS)

CARTRIDGE_HEADER_BODY = Struct(
    "magic" / Const(CARTRIDGE_MAGIC),
    "version" / Int16ul,
    "header_size" / Int16ul,
    "flags" / Int32ul,
    "barcode" / PaddedString(32, "ascii"),
    "media" / PaddedString(16, "ascii"),
    "density_code" / Int8ul,
    "medium_type" / Int8ul,
    Padding(6),
    "capacity" / Int64ul,
    "created_ns" / Int64ul,
    "uuid" / Bytes(16),
    # IncompatFeature bits (version 2; zero padding in a version 1 header).
    "incompat" / Int32ul,
    # Partitions after partition 0 (this file), each in ``<file>.p<N>`` (PARTITIONS).
    "extra_partitions" / Int8ul,
)
# The header is the body, zero padding, and a CRC32C of everything before it in the last 4
# bytes of the 512-byte block.
HEADER_BODY_SIZE = CARTRIDGE_HEADER_BODY.sizeof()



class RecordKind(enum.IntEnum):
    """What a record holds (the ``kind`` byte), and what a read finds past the last one."""

    EOD = 0  # end of data: what a read or a space finds there; never stored
    DATA = 1  # one data block
    FILEMARK = 2  # one filemark
    # ``native_len`` filemarks in a row (at least 2), one logical object each: WRITE FILEMARKS
    # with a count of millions is one record, not millions (docs/cartridge-format.md).
    FILEMARK_RUN = 3
    # A fixed-mode WRITE's blocks of one size as one record: ``native_len`` is
    # ``count << RUN_COUNT_SHIFT | block size`` (``run_native``), the payload one zstd frame
    # of the blocks back to back (or the blocks as they are); one logical object per block.
    # Cut inside (an overwrite after SPACE/LOCATE), the header is rewritten with the smaller
    # count and the payload kept: the payload holds *at least* ``count`` blocks.
    DATA_RUN = 4


STORED_KINDS = frozenset({RecordKind.DATA, RecordKind.FILEMARK, RecordKind.FILEMARK_RUN,
                          RecordKind.DATA_RUN})

# A DATA_RUN's native_len: its block count in the top byte, the block size (SSC's 24-bit
# fixed block length) below it.
RUN_COUNT_SHIFT = 24
RUN_SIZE_MASK = (1 << RUN_COUNT_SHIFT) - 1
RUN_MAX_COUNT = 0xFF


def run_native(count: int, size: int) -> int:
    """A DATA_RUN's native_len (also its index entry's length field) for ``count`` blocks
    of ``size`` bytes."""
    return count << RUN_COUNT_SHIFT | size


def record_objects(kind: int, native_len: int) -> int:
    """Logical objects a record of ``kind`` with ``native_len`` stands for."""
    if kind == RecordKind.FILEMARK_RUN:
        return native_len
    if kind == RecordKind.DATA_RUN:
        return native_len >> RUN_COUNT_SHIFT
    return 1

RECORD_HEADER = Struct(
    "magic" / Const(RECORD_MAGIC),
    "kind" / Int8ul,
    "flags" / Int8ul,
    "stored_len" / Int32ul,
    "native_len" / Int32ul,
    "file_no" / Int32ul,
    "obj" / Int64ul,
    "payload_crc" / Int32ul,
    "header_crc" / Int32ul,  # CRC32C of the 28 bytes before it
)
RECORD_HEADER_SIZE = RECORD_HEADER.sizeof()
# struct twin of RECORD_HEADER for the hot path (checked against construct in the tests).
RECORD_STRUCT = struct.Struct("<2sBBIIIQII")
assert RECORD_STRUCT.size == RECORD_HEADER_SIZE == 32
_CRC_SPAN = RECORD_HEADER_SIZE - 4  # the header CRC covers the bytes before it


def pack_record_header(kind: int, flags: int, stored_len: int, native_len: int, file_no: int,
                       obj: int, payload_crc: int) -> bytes:
    """``RecordHeader(...).pack()`` without the tuple (every appended block packs one)."""
    head = RECORD_STRUCT.pack(RECORD_MAGIC, kind, flags, stored_len, native_len, file_no, obj,
                              payload_crc, 0)
    return head[:_CRC_SPAN] + crc32c.crc32c(head[:_CRC_SPAN]).to_bytes(4, "little")


class RecordHeader(NamedTuple):
    """One record header's fields (RECORD_HEADER), packed and unpacked on the hot path."""

    kind: int
    flags: int
    stored_len: int  # payload bytes in the file
    native_len: int  # the block's length as written; a FILEMARK_RUN's filemark count;
    # a DATA_RUN's run_native(count, size)
    file_no: int  # filemarks before this record's first object
    obj: int  # logical object number of the record's (first) object
    payload_crc: int

    @property
    def objects(self) -> int:
        """Logical objects the record stands for: a run's count, else one."""
        return record_objects(self.kind, self.native_len)

    def pack(self) -> bytes:
        return pack_record_header(*self)

    @classmethod
    def unpack(cls, raw: bytes | bytearray | memoryview) -> RecordHeader | None:
        """The header at the start of ``raw``; None when it is not a whole, valid record
        header (short, wrong magic or CRC, unknown kind, a run of fewer than 2)."""
        if len(raw) < RECORD_HEADER_SIZE:
            return None
        magic, kind, flags, stored, native, file_no, obj, pcrc, hcrc = \
            RECORD_STRUCT.unpack_from(raw)
        if magic != RECORD_MAGIC or crc32c.crc32c(memoryview(raw)[:_CRC_SPAN]) != hcrc:
            return None
        if kind not in STORED_KINDS or (kind == RecordKind.FILEMARK_RUN and native < 2) or (
                kind == RecordKind.DATA_RUN and (native >> RUN_COUNT_SHIFT == 0
                                                 or native & RUN_SIZE_MASK == 0)):
            return None
        return tuple.__new__(cls, (kind, flags, stored, native, file_no, obj, pcrc))

# Position index sidecar (<cartridge>.idx): a header, then one entry per record,
# appended at every durable point, so reopening a cartridge reads the index instead of
# scanning the tape. The data file stays the truth: the index is checked against it and
# rebuilt from it when they disagree.
INDEX_MAGIC = b"VTLIDX\x00\x01"
INDEX_HEADER = Struct(
    "magic" / Const(INDEX_MAGIC),
    "uuid" / Bytes(16),  # the cartridge's uuid, so a stale index from another file is refused
    Padding(8),
)
INDEX_HEADER_SIZE = INDEX_HEADER.sizeof()
INDEX_ENTRY = Struct(
    "offset" / Int64ul,  # file offset of the record header
    # native_len << 16 | record flags << 8 | kind (a FILEMARK_RUN's native_len is its count,
    # a DATA_RUN's run_native(count, size), as in the record header)
    "meta" / Int64ul,
)
INDEX_ENTRY_SIZE = INDEX_ENTRY.sizeof()

# MAM sidecar (<cartridge>.mam): the cartridge memory chip, as SSC attribute records.
MAM_MAGIC = b"VTLMAM\x00\x01"
MAM_ATTRIBUTE = Struct(
    "id" / Int16ul,
    "format" / Int8ul,
    "length" / Int16ul,
    "value" / Bytes(lambda ctx: ctx.length),
)
