"""iSCSI PDU layouts (RFC 7143 section 11) and their encoding.

Every PDU starts with a 48-byte Basic Header Segment (BHS), optionally followed by Additional
Header Segments (AHS), a header digest, a data segment padded to 4 bytes, and a data digest.
The layouts are written down once with :mod:`construct` (``LAYOUTS``) because that is the
readable, checkable description of the wire format; the tests hold the hand-written fast paths
to it. The hot paths (SCSI Command in, Data-In / SCSI Response / R2T out, Data-Out in) use
precompiled :class:`struct.Struct` objects, because construct parses at roughly 50 µs per header
and a 1 MiB write at 8 KiB segments is 128 of them.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import NamedTuple

import construct as cs
import crc32c as _crc32c

BHS_LEN = 48
ALL_ONES = 0xFFFFFFFF


class Op(enum.IntEnum):
    # initiator -> target
    NOP_OUT = 0x00
    SCSI_CMD = 0x01
    TMF_REQ = 0x02
    LOGIN_REQ = 0x03
    TEXT_REQ = 0x04
    DATA_OUT = 0x05
    LOGOUT_REQ = 0x06
    SNACK = 0x10
    # target -> initiator
    NOP_IN = 0x20
    SCSI_RSP = 0x21
    TMF_RSP = 0x22
    LOGIN_RSP = 0x23
    TEXT_RSP = 0x24
    DATA_IN = 0x25
    LOGOUT_RSP = 0x26
    R2T = 0x31
    ASYNC = 0x32
    REJECT = 0x3F


INITIATOR_OPS = frozenset(
    {Op.NOP_OUT, Op.SCSI_CMD, Op.TMF_REQ, Op.LOGIN_REQ, Op.TEXT_REQ, Op.DATA_OUT, Op.LOGOUT_REQ,
     Op.SNACK}
)


class RejectReason(enum.IntEnum):
    DATA_DIGEST_ERROR = 0x02
    SNACK_REJECT = 0x03
    PROTOCOL_ERROR = 0x04
    COMMAND_NOT_SUPPORTED = 0x05
    IMMEDIATE_COMMAND_REJECT = 0x06
    TASK_IN_PROGRESS = 0x07
    INVALID_DATA_ACK = 0x08
    INVALID_PDU_FIELD = 0x09
    LONG_OPERATION_REJECT = 0x0A
    WAITING_FOR_LOGOUT = 0x0C


class TmfFunction(enum.IntEnum):
    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LOGICAL_UNIT_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    TASK_REASSIGN = 8


class TmfResponse(enum.IntEnum):
    FUNCTION_COMPLETE = 0
    TASK_DOES_NOT_EXIST = 1
    LUN_DOES_NOT_EXIST = 2
    TASK_STILL_ALLEGIANT = 3
    REASSIGNMENT_NOT_SUPPORTED = 4
    NOT_SUPPORTED = 5
    AUTHORIZATION_FAILED = 6
    REJECTED = 255


# ---- construct layouts (the reference description of each BHS) ---------------------------
_Flags = cs.BitStruct(
    "reserved" / cs.Flag,
    "immediate" / cs.Flag,
    "opcode" / cs.BitsInteger(6),
)
_Common = (
    "total_ahs_len" / cs.Int8ub,
    "dsl" / cs.Int24ub,
)


def _lun_request(word5: str, *tail: cs.Construct) -> cs.Struct:
    """An initiator's request with a LUN (SCSI Command 11.3, Task Management 11.5, Text
    11.10, NOP-Out 11.18): bytes 2-3 reserved, the LUN, the ITT, ``word5`` (bytes 20-23),
    CmdSN and ExpStatSN; ``tail`` from byte 32 on."""
    return cs.Struct(
        "op" / _Flags,
        "flags" / cs.Int8ub,
        cs.Padding(2),
        *_Common,
        "lun" / cs.Bytes(8),
        "itt" / cs.Int32ub,
        word5 / cs.Int32ub,
        "cmdsn" / cs.Int32ub,
        "expstatsn" / cs.Int32ub,
        *tail,
    )


def _ttt_response(byte3: str | None, *tail: cs.Construct) -> cs.Struct:
    """A target's PDU with a LUN and a Target Transfer Tag (Data-In 11.7, R2T 11.8, Text
    11.11, NOP-In 11.19): byte 3 ``byte3`` (else reserved), the LUN, ITT, TTT, StatSN,
    ExpCmdSN and MaxCmdSN; ``tail`` from byte 36 on."""
    return cs.Struct(
        "op" / _Flags,
        "flags" / cs.Int8ub,
        *((cs.Padding(1), byte3 / cs.Int8ub) if byte3 else (cs.Padding(2),)),
        *_Common,
        "lun" / cs.Bytes(8),
        "itt" / cs.Int32ub,
        "ttt" / cs.Int32ub,
        "statsn" / cs.Int32ub,
        "expcmdsn" / cs.Int32ub,
        "maxcmdsn" / cs.Int32ub,
        *tail,
    )


# Login and Logout requests end alike (bytes 16-47): ITT, CID, CmdSN, ExpStatSN.
_ConnectionRequestTail = (
    "itt" / cs.Int32ub,
    "cid" / cs.Int16ub,
    cs.Padding(2),
    "cmdsn" / cs.Int32ub,
    "expstatsn" / cs.Int32ub,
    cs.Padding(16),
)

# Requests and responses that carry a Target Transfer Tag and no CDB: Text and NOP (flags
# F C in Text, reserved in NOP).
_TTT_REQUEST = _lun_request("ttt", cs.Padding(16))
_TTT_RESPONSE = _ttt_response(None, cs.Padding(12))


def _untagged_response(byte2: str, *tail: cs.Construct) -> cs.Struct:
    """A response with no LUN and no transfer tag (Task Management 11.6, Logout 11.15,
    Reject 11.17): ``byte2`` names byte 2 (response or reason), then the ITT, StatSN,
    ExpCmdSN and MaxCmdSN; ``tail`` from byte 36 on."""
    return cs.Struct(
        "op" / _Flags,
        "flags" / cs.Int8ub,
        byte2 / cs.Int8ub,
        cs.Padding(1),
        *_Common,
        cs.Padding(8),
        "itt" / cs.Int32ub,
        cs.Padding(4),
        "statsn" / cs.Int32ub,
        "expcmdsn" / cs.Int32ub,
        "maxcmdsn" / cs.Int32ub,
        *tail,
    )


LAYOUTS: dict[Op, cs.Struct] = {
    Op.SCSI_CMD: _lun_request("edtl", "cdb" / cs.Bytes(16)),  # flags: F R W . . ATTR(3)
    Op.DATA_OUT: cs.Struct(
        "op" / _Flags,
        "flags" / cs.Int8ub,  # F
        cs.Padding(2),
        *_Common,
        "lun" / cs.Bytes(8),
        "itt" / cs.Int32ub,
        "ttt" / cs.Int32ub,
        cs.Padding(4),
        "expstatsn" / cs.Int32ub,
        cs.Padding(4),
        "datasn" / cs.Int32ub,
        "offset" / cs.Int32ub,
        cs.Padding(4),
    ),
    Op.DATA_IN: _ttt_response(  # flags: F A . . . O U S
        "status",
        "datasn" / cs.Int32ub,
        "offset" / cs.Int32ub,
        "residual" / cs.Int32ub,
    ),
    Op.SCSI_RSP: cs.Struct(
        "op" / _Flags,
        "flags" / cs.Int8ub,  # 1 . . o u O U .
        "response" / cs.Int8ub,
        "status" / cs.Int8ub,
        *_Common,
        cs.Padding(8),
        "itt" / cs.Int32ub,
        "snack_tag" / cs.Int32ub,
        "statsn" / cs.Int32ub,
        "expcmdsn" / cs.Int32ub,
        "maxcmdsn" / cs.Int32ub,
        "expdatasn" / cs.Int32ub,
        "bidi_residual" / cs.Int32ub,
        "residual" / cs.Int32ub,
    ),
    Op.R2T: _ttt_response(
        None,
        "r2tsn" / cs.Int32ub,
        "offset" / cs.Int32ub,
        "desired_length" / cs.Int32ub,
    ),
    Op.LOGIN_REQ: cs.Struct(
        "op" / _Flags,
        "flags" / cs.Int8ub,  # T C . . CSG(2) NSG(2)
        "version_max" / cs.Int8ub,
        "version_min" / cs.Int8ub,
        *_Common,
        "isid" / cs.Bytes(6),
        "tsih" / cs.Int16ub,
        *_ConnectionRequestTail,
    ),
    Op.LOGIN_RSP: cs.Struct(
        "op" / _Flags,
        "flags" / cs.Int8ub,
        "version_max" / cs.Int8ub,
        "version_active" / cs.Int8ub,
        *_Common,
        "isid" / cs.Bytes(6),
        "tsih" / cs.Int16ub,
        "itt" / cs.Int32ub,
        cs.Padding(4),
        "statsn" / cs.Int32ub,
        "expcmdsn" / cs.Int32ub,
        "maxcmdsn" / cs.Int32ub,
        "status_class" / cs.Int8ub,
        "status_detail" / cs.Int8ub,
        cs.Padding(10),
    ),
    # Text and NOP share their layouts (RFC 7143 11.10/11.11 and 11.18/11.19).
    Op.TEXT_REQ: _TTT_REQUEST,
    Op.TEXT_RSP: _TTT_RESPONSE,
    Op.NOP_OUT: _TTT_REQUEST,
    Op.NOP_IN: _TTT_RESPONSE,
    Op.TMF_REQ: _lun_request(  # flags: 1 function(7)
        "ref_itt",
        "ref_cmdsn" / cs.Int32ub,
        "expdatasn" / cs.Int32ub,
        cs.Padding(8),
    ),
    Op.TMF_RSP: _untagged_response("response", cs.Padding(12)),
    Op.LOGOUT_REQ: cs.Struct(
        "op" / _Flags,
        "flags" / cs.Int8ub,  # 1 reason(7)
        cs.Padding(2),
        *_Common,
        cs.Padding(8),
        *_ConnectionRequestTail,
    ),
    Op.LOGOUT_RSP: _untagged_response(
        "response",
        cs.Padding(4),
        "time2wait" / cs.Int16ub,
        "time2retain" / cs.Int16ub,
        cs.Padding(4),
    ),
    Op.ASYNC: cs.Struct(
        "op" / _Flags,
        "flags" / cs.Int8ub,
        cs.Padding(2),
        *_Common,
        "lun" / cs.Bytes(8),
        "itt" / cs.Int32ub,
        cs.Padding(4),
        "statsn" / cs.Int32ub,
        "expcmdsn" / cs.Int32ub,
        "maxcmdsn" / cs.Int32ub,
        "event" / cs.Int8ub,
        "vcode" / cs.Int8ub,
        "param1" / cs.Int16ub,
        "param2" / cs.Int16ub,
        "param3" / cs.Int16ub,
        cs.Padding(4),
    ),
    Op.REJECT: _untagged_response(  # its ITT always 0xffffffff
        "reason",
        "datasn" / cs.Int32ub,
        cs.Padding(8),
    ),
}

# AHS (RFC 7143 11.2.2): AHSLength counts the bytes after AHSType (the type-specific byte
# included); the whole AHS is padded to 4 bytes. Type 1 = extended CDB, 2 = bidi read length.
AHS = cs.Struct(
    "length" / cs.Int16ub,
    "type" / cs.Int8ub,
    "specific" / cs.Bytes(cs.this.length),
    cs.Padding(lambda ctx: (-(3 + ctx.length)) & 3),
)
AHS_EXTENDED_CDB = 1
AHS_BIDI_READ_LENGTH = 2


def encode_layout(op: Op, *, immediate: bool = False, dsl: int = 0, total_ahs_len: int = 0,
                  **fields: object) -> bytes:
    """Build a BHS from the construct layout (used for the rarely sent PDUs)."""
    defaults: dict[str, object] = {}
    for sub in LAYOUTS[op].subcons:
        name = sub.name
        if name is None or name in ("op", "dsl", "total_ahs_len"):
            continue
        if name == "lun":
            defaults[name] = bytes(8)
        elif name == "isid":
            defaults[name] = bytes(6)
        elif name == "cdb":
            defaults[name] = bytes(16)
        else:
            defaults[name] = 0
    defaults.update(fields)
    return LAYOUTS[op].build(
        dict(op=dict(reserved=False, immediate=immediate, opcode=int(op)), dsl=dsl,
             total_ahs_len=total_ahs_len, **defaults)
    )


class LoginRequest(NamedTuple):
    """The fields of a Login Request BHS the target uses (RFC 7143 11.12)."""

    flags: int
    version_max: int
    version_min: int
    isid: bytes
    tsih: int
    itt: int
    cid: int
    cmdsn: int
    expstatsn: int


_LOGIN_REQ = struct.Struct(">xBBBx3x6sHIH2xII")
_LOGIN_RSP = struct.Struct(">BBBBI6sHI4xIIIBB10x")


def parse_login_request(bhs: bytes | bytearray | memoryview) -> LoginRequest:
    """A Login Request's fields by one struct unpack: served on the event loop, where
    construct's parse was a third of a login's time under a flood of them."""
    return LoginRequest(*_LOGIN_REQ.unpack_from(bhs))


def login_response(*, flags: int, dsl: int, isid: bytes, tsih: int, itt: int, statsn: int,
                   expcmdsn: int, maxcmdsn: int, status_class: int, status_detail: int
                   ) -> bytes:
    """A Login Response BHS (version 0, no AHS), what ``encode_layout`` builds, by one pack."""
    return _LOGIN_RSP.pack(int(Op.LOGIN_RSP), flags, 0, 0, dsl, isid, tsih, itt, statsn,
                           expcmdsn, maxcmdsn, status_class, status_detail)


def decode_layout(header: bytes | bytearray | memoryview) -> cs.Container:
    """Parse a BHS with its construct layout (KeyError for an opcode we have no layout for)."""
    op = Op(header[0] & 0x3F)
    return LAYOUTS[op].parse(bytes(header[:BHS_LEN]))


# ---- fast paths ----------------------------------------------------------------------------
# The whole BHS: byte0..3, TotalAHSLength, DataSegmentLength (1 + 2 bytes), LUN, ITT, 7 words
_BHS = struct.Struct(">BBBBBBH8sI7I")

_DATA_IN = struct.Struct(">BBBBI8sIIIIIIII")
_SCSI_RSP = struct.Struct(">BBBBI8sIIIIIIII")
_R2T = struct.Struct(">BBBBI8sIIIIIIII")


@dataclass(slots=True)
class Header:
    """A decoded BHS: the common fields, plus the raw bytes for opcode-specific ones."""

    raw: bytes
    opcode: int
    immediate: bool
    flags: int
    b2: int
    b3: int
    total_ahs_len: int
    dsl: int
    lun: bytes
    itt: int
    words: tuple[int, ...]  # bytes 20..47 as seven big-endian 32-bit words
    ahs: bytes = b""

    # words[0]=bytes 20-23 (EDTL / TTT / RefITT / CID), [1]=24-27 (CmdSN / StatSN),
    # [2]=28-31 (ExpStatSN), [3]=32-35, [4]=36-39 (DataSN), [5]=40-43 (offset), [6]=44-47
    @property
    def final(self) -> bool:
        return bool(self.flags & 0x80)

    @property
    def cmdsn(self) -> int:
        return self.words[1]

    @property
    def expstatsn(self) -> int:
        return self.words[2]


def parse_bhs(raw: bytes) -> Header:
    f = _BHS.unpack_from(raw, 0)  # one unpack: this runs for every PDU
    b0 = f[0]
    return Header(raw, b0 & 0x3F, bool(b0 & 0x40), f[1], f[2], f[3], f[4],
                  (f[5] << 16) | f[6], f[7], f[8], f[9:16])


def data_in_bhs(*, final: bool, status: int | None, lun: bytes, itt: int, statsn: int,
                expcmdsn: int, maxcmdsn: int, datasn: int, offset: int, dsl: int,
                residual_flags: int = 0, residual: int = 0) -> bytes:
    flags = (0x80 if final else 0)
    if status is not None:
        flags |= 0x01 | residual_flags
    return _DATA_IN.pack(
        Op.DATA_IN, flags, 0, status or 0, dsl, lun, itt, ALL_ONES,
        statsn if status is not None else 0, expcmdsn, maxcmdsn, datasn, offset,
        residual if status is not None else 0,
    )


def scsi_rsp_bhs(*, status: int, response: int = 0, itt: int, statsn: int, expcmdsn: int,
                 maxcmdsn: int, expdatasn: int, dsl: int, residual_flags: int = 0,
                 residual: int = 0) -> bytes:
    return _SCSI_RSP.pack(
        Op.SCSI_RSP, 0x80 | residual_flags, response, status, dsl, bytes(8), itt, 0, statsn,
        expcmdsn, maxcmdsn, expdatasn, 0, residual,
    )


def r2t_bhs(*, lun: bytes, itt: int, ttt: int, statsn: int, expcmdsn: int, maxcmdsn: int,
            r2tsn: int, offset: int, length: int) -> bytes:
    return _R2T.pack(
        Op.R2T, 0x80, 0, 0, 0, lun, itt, ttt, statsn, expcmdsn, maxcmdsn, r2tsn, offset, length
    )


def data_in_good(dsl: int, lun: bytes, itt: int, statsn: int, expcmdsn: int,
                 maxcmdsn: int) -> bytes:
    """The one Data-In of a READ answered GOOD in a single PDU, status included (the
    streaming fast path of :func:`data_in_bhs`; positional, no residual)."""
    return _DATA_IN.pack(0x25, 0x81, 0, 0, dsl, lun, itt, ALL_ONES, statsn, expcmdsn,
                         maxcmdsn, 0, 0, 0)


def scsi_rsp_good(itt: int, statsn: int, expcmdsn: int, maxcmdsn: int,
                  expdatasn: int) -> bytes:
    """SCSI Response GOOD without sense or residual (the fast path of :func:`scsi_rsp_bhs`)."""
    return _SCSI_RSP.pack(0x21, 0x80, 0, 0, 0, _NO_LUN, itt, 0, statsn, expcmdsn, maxcmdsn,
                          expdatasn, 0, 0)


_NO_LUN = bytes(8)


# Residual flag bits in SCSI Response byte 1 (the same positions in Data-In).
RESIDUAL_OVERFLOW = 0x04
RESIDUAL_UNDERFLOW = 0x02


def pad_len(n: int) -> int:
    return (-n) & 3


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    return _crc32c.crc32c(data, value)


def digest_bytes(*parts: bytes | bytearray | memoryview) -> bytes:
    """CRC32C over the parts, little-endian on the wire (RFC 7143 11.1 / RFC 3385)."""
    crc = 0
    for part in parts:
        crc = _crc32c.crc32c(part, crc)
    return crc.to_bytes(4, "little")


def encode_lun(lun: int) -> bytes:
    """SAM LUN encoding: peripheral addressing below 256, flat space addressing above."""
    if lun < 256:
        return bytes([0, lun]) + bytes(6)
    return bytes([0x40 | (lun >> 8), lun & 0xFF]) + bytes(6)


def decode_lun(raw: bytes) -> int | None:
    """The LUN number, or None for an address method / format we do not export."""
    method = raw[0] >> 6
    if any(raw[2:8]):
        return None
    if method == 0:
        return raw[1] if (raw[0] & 0x3F) == 0 else None
    if method == 1:
        return ((raw[0] & 0x3F) << 8) | raw[1]
    return None


def serial_lt(a: int, b: int) -> bool:
    """RFC 1982 serial number arithmetic, 32 bits: is ``a`` before ``b``?"""
    return a != b and ((b - a) & 0xFFFFFFFF) < 0x80000000


def serial_le(a: int, b: int) -> bool:
    return a == b or serial_lt(a, b)
