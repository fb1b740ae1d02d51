"""SSC and SMC commands as a client: CDBs out, data and sense in, over any transport.

What it owns: the client-side encoding of the tape (SSC-4) and changer (SMC-3) commands the
data mover needs, SPC-4 persistent reservations, and the decoding of sense (fixed and
descriptor formats) into the outcomes a tape reader steers by (filemark, end of data, early
warning, short block) or into one exception that names the device and the condition.

What it must not do: open connections or devices. A transport is anything with
``execute(lun, cdb, data_out=..., read_len=..., timeout=...) -> ScsiResult``: the iSCSI
initiator, or a kernel SG_IO device (``kernel_devices``).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Protocol

from ebm.remote.initiator import (
    STATUS_CHECK_CONDITION,
    STATUS_GOOD,
    STATUS_RESERVATION_CONFLICT,
    PositionUncertain,
    ScsiResult,
)
from vtl.scsi.opcodes import Opcode
from vtl.scsi.smc_elements import ElementTypeCode as ElementType

# SPC-4 sense keys the client distinguishes.
NO_SENSE, RECOVERED_ERROR, NOT_READY, MEDIUM_ERROR = 0x0, 0x1, 0x2, 0x3
ILLEGAL_REQUEST, UNIT_ATTENTION, DATA_PROTECT, BLANK_CHECK = 0x5, 0x6, 0x7, 0x8
VOLUME_OVERFLOW = 0xD

# SPACE codes (SSC-4 7.9 table) and LOCATE destination types.
SPACE_BLOCKS, SPACE_FILEMARKS, SPACE_EOD = 0, 1, 3

# Persistent reservation (SPC-4 6.15/6.16).
PR_READ_KEYS, PR_READ_RESERVATION = 0, 1
PR_REGISTER, PR_RESERVE, PR_RELEASE, PR_CLEAR, PR_PREEMPT = 0, 1, 2, 3, 4
PR_REGISTER_AND_IGNORE = 6
PR_WRITE_EXCLUSIVE = 1


class Transport(Protocol):
    def execute(self, lun: int, cdb: bytes, *, data_out: bytes | memoryview | None = None,
                read_len: int = 0, timeout: float | None = None,
                retry: bool | None = None) -> ScsiResult: ...


@dataclass(frozen=True, slots=True)
class Sense:
    key: int
    asc: int
    ascq: int
    filemark: bool = False
    eom: bool = False
    ili: bool = False
    information: int | None = None

    def __str__(self) -> str:
        return f"sense key 0x{self.key:x} ASC/ASCQ {self.asc:02x}/{self.ascq:02x}"


def parse_sense(raw: bytes) -> Sense | None:
    """Fixed (0x70/0x71) or descriptor (0x72/0x73) sense data; None if there is none."""
    if len(raw) < 2:
        return None
    code = raw[0] & 0x7F
    if code in (0x70, 0x71) and len(raw) >= 3:
        b2 = raw[2]
        info = struct.unpack(">i", raw[3:7])[0] if raw[0] & 0x80 and len(raw) >= 7 else None
        return Sense(b2 & 0x0F, raw[12] if len(raw) > 12 else 0, raw[13] if len(raw) > 13 else 0,
                     bool(b2 & 0x80), bool(b2 & 0x40), bool(b2 & 0x20), info)
    if code in (0x72, 0x73) and len(raw) >= 4:
        fm = eom = ili = False
        info = None
        off = 8
        end = min(len(raw), 8 + (raw[7] if len(raw) > 7 else 0))
        while off + 2 <= end:
            kind, length = raw[off], raw[off + 1]
            body = raw[off + 2:off + 2 + length]
            if kind == 0x00 and len(body) >= 10 and body[0] & 0x80:
                info = struct.unpack(">q", body[2:10])[0]
            elif kind == 0x04 and len(body) >= 2:
                fm, eom, ili = bool(body[1] & 0x80), bool(body[1] & 0x40), bool(body[1] & 0x20)
            off += 2 + length
        return Sense(raw[1] & 0x0F, raw[2], raw[3], fm, eom, ili, info)
    return None


class ScsiError(Exception):
    """A command ended in an error status; ``sense`` says which condition."""

    def __init__(self, what: str, status: int, sense: Sense | None) -> None:
        detail = {STATUS_RESERVATION_CONFLICT: "RESERVATION CONFLICT"}.get(status)
        if detail is None:
            detail = f"CHECK CONDITION, {sense}" if sense else f"status 0x{status:02x}"
        super().__init__(f"{what}: {detail}")
        self.status = status
        self.sense = sense


class ReservationConflict(ScsiError):
    """Another initiator holds a persistent reservation on the device."""


class EndOfMedium(ScsiError):
    """VOLUME OVERFLOW: nothing (or not all) of the write fitted."""


class NoMedium(ScsiError):
    """NOT READY, MEDIUM NOT PRESENT."""


class WriteProtectedMedium(ScsiError):
    """DATA PROTECT: the cartridge is write-protected or WORM."""


class UndecryptableBlock(ScsiError):
    """DATA PROTECT 74/xx: an encrypted block the drive's key settings do not let it read
    (no key, another key, a tag that does not check)."""


# ASC of the SSC-4 data encryption conditions (74/01 no key, 74/03 wrong key, ...).
ASC_SECURITY_ERROR = 0x74


def check(what: str, result: ScsiResult) -> Sense | None:
    """Raise the matching ScsiError for a failed status; return the sense of a GOOD one."""
    sense = parse_sense(result.sense)
    if result.status == STATUS_GOOD:
        return sense
    if result.status == STATUS_RESERVATION_CONFLICT:
        raise ReservationConflict(what, result.status, sense)
    if result.status == STATUS_CHECK_CONDITION and sense is not None:
        if sense.key == VOLUME_OVERFLOW:
            raise EndOfMedium(what, result.status, sense)
        if sense.key == NOT_READY and sense.asc == 0x3A:
            raise NoMedium(what, result.status, sense)
        if sense.key == DATA_PROTECT and sense.asc == ASC_SECURITY_ERROR:
            raise UndecryptableBlock(what, result.status, sense)
        if sense.key == DATA_PROTECT:
            raise WriteProtectedMedium(what, result.status, sense)
    raise ScsiError(what, result.status, sense)


# A command answered UNIT ATTENTION did not run (SAM-5 5.14): it is sent again, since a new
# nexus (a reconnect), a reset or a medium change raises one for the next command of each.
UNIT_ATTENTION_RETRIES = 5
# ... except a command whose effect depends on where the tape is, answered with a reset (29/xx)
# or a medium change (28/xx): the drive may be back at BOT (a restarted target or handler), so
# sending a WRITE again could overwrite the start of the cartridge. The caller settles it
# with READ POSITION (PositionUncertain), as after a lost connection.
POSITION_RESET_ASCS = (0x28, 0x29)


def _unit_attention(result: ScsiResult) -> bool:
    if result.status != STATUS_CHECK_CONDITION:
        return False
    sense = parse_sense(result.sense)
    return sense is not None and sense.key == UNIT_ATTENTION


class Kind(enum.Enum):
    DATA = "data"
    FILEMARK = "filemark"
    END_OF_DATA = "end of data"


@dataclass(frozen=True, slots=True)
class ReadOutcome:
    kind: Kind
    data: bytes = b""


class ScsiDevice:
    """One logical unit over a transport, with the commands every device type has."""

    def __init__(self, transport: Transport, lun: int, name: str) -> None:
        self.transport, self.lun, self.name = transport, lun, name

    def run(self, what: str, cdb: bytes, *, data_out: bytes | memoryview | None = None,
            read_len: int = 0, timeout: float | None = None) -> tuple[ScsiResult, Sense | None]:
        result = self._execute(cdb, data_out=data_out, read_len=read_len, timeout=timeout)
        return result, check(f"{self.name}: {what}", result)

    def _execute(self, cdb: bytes, *, data_out: bytes | memoryview | None = None,
                 read_len: int = 0, timeout: float | None = None,
                 positional: bool = False) -> ScsiResult:
        """Send ``cdb``, again while it is answered UNIT ATTENTION; no status check.
        ``positional``: a reset or medium change raises PositionUncertain instead."""
        for _attempt in range(UNIT_ATTENTION_RETRIES):
            result = self.transport.execute(self.lun, cdb, data_out=data_out,
                                            read_len=read_len, timeout=timeout)
            if not _unit_attention(result):
                break
            sense = parse_sense(result.sense)
            if positional and sense is not None and sense.asc in POSITION_RESET_ASCS:
                raise PositionUncertain(
                    f"{self.name}: command 0x{cdb[0]:02x} answered UNIT ATTENTION "
                    f"{sense.asc:02x}/{sense.ascq:02x} (reset or medium change): the tape "
                    "position is unknown")
        return result

    def test_unit_ready(self) -> None:
        self.run("TEST UNIT READY", bytes(6))

    def inquiry(self) -> tuple[int, str, str]:
        """(peripheral device type, vendor, product)."""
        res, _ = self.run("INQUIRY", bytes([Opcode.INQUIRY, 0, 0, 0, 96, 0]), read_len=96)
        d = res.data
        return d[0] & 0x1F, d[8:16].decode("ascii", "replace").strip(), \
            d[16:32].decode("ascii", "replace").strip()

    def report_luns(self) -> list[int]:
        cdb = struct.pack(">BBBBBBIBB", Opcode.REPORT_LUNS, 0, 0, 0, 0, 0, 4096, 0, 0)
        res, _ = self.run("REPORT LUNS", cdb, read_len=4096)
        n = int.from_bytes(res.data[:4], "big") // 8
        out = []
        for i in range(n):
            raw = res.data[8 + 8 * i:16 + 8 * i]
            if len(raw) == 8:
                out.append(((raw[0] & 0x3F) << 8 | raw[1]) if raw[0] >> 6 == 1 else raw[1])
        return out

    # -- persistent reservations (SPC-4 5.9) ----------------------------------------------
    def _pr_out(self, action: int, key: int, sa_key: int = 0, pr_type: int = 0) -> None:
        params = struct.pack(">QQ4xB3x", key, sa_key, 0)
        cdb = struct.pack(">BBBxxIB", Opcode.PERSISTENT_RESERVE_OUT, action, pr_type & 0x0F,
                          len(params), 0)
        self.run(f"PERSISTENT RESERVE OUT (service action {action})", cdb, data_out=params)

    def register(self, key: int) -> None:
        """Register ``key`` for this I_T nexus, whatever was registered before."""
        self._pr_out(PR_REGISTER_AND_IGNORE, 0, key)

    def unregister(self, key: int) -> None:
        self._pr_out(PR_REGISTER, key, 0)

    def reserve(self, key: int, pr_type: int = PR_WRITE_EXCLUSIVE) -> None:
        self._pr_out(PR_RESERVE, key, 0, pr_type)

    def release(self, key: int, pr_type: int = PR_WRITE_EXCLUSIVE) -> None:
        self._pr_out(PR_RELEASE, key, 0, pr_type)

    def preempt(self, key: int, victim: int, pr_type: int = PR_WRITE_EXCLUSIVE) -> None:
        self._pr_out(PR_PREEMPT, key, victim, pr_type)

    def reservation(self) -> tuple[int, int] | None:
        """(holder's key, type) of the reservation, or None."""
        cdb = struct.pack(">BB5xHx", Opcode.PERSISTENT_RESERVE_IN, PR_READ_RESERVATION, 64)
        res, _ = self.run("PERSISTENT RESERVE IN", cdb, read_len=64)
        d = res.data
        if len(d) < 8 or int.from_bytes(d[4:8], "big") < 16 or len(d) < 24:
            return None
        return int.from_bytes(d[8:16], "big"), d[21] & 0x0F


@dataclass(frozen=True, slots=True)
class Position:
    object: int  # logical object number
    file: int  # logical file identifier: filemarks before the position
    bop: bool = False
    eop: bool = False


class TapeDevice(ScsiDevice):
    """An SSC tape drive: variable-block reads and writes, filemarks, positioning."""

    def prepare(self) -> None:
        """Ready the drive for variable-block I/O (MODE SELECT block length 0 if needed)."""
        self.test_unit_ready()
        header = self.mode_header()
        if len(header) >= 12 and header[3] >= 8 and int.from_bytes(header[9:12], "big"):
            params = bytes([0, 0, header[2] & 0x70, 8]) + bytes([header[4]]) + bytes(7)
            self.run("MODE SELECT(6)", bytes([Opcode.MODE_SELECT_6, 0x10, 0, 0, 12, 0]),
                     data_out=params)

    def mode_header(self) -> bytes:
        res, _ = self.run("MODE SENSE(6)", bytes([Opcode.MODE_SENSE_6, 0, 0, 0, 12, 0]),
                          read_len=12)
        return res.data

    @property
    def write_protected(self) -> bool:
        header = self.mode_header()
        return len(header) >= 3 and bool(header[2] & 0x80)

    def write(self, data: bytes | memoryview) -> bool:
        """WRITE(6), one variable block; True when past early warning (the data was
        written); EndOfMedium when it was not."""
        n = len(data)
        cdb = bytes([Opcode.WRITE_6, 0]) + n.to_bytes(3, "big") + b"\0"
        return self._write_outcome("WRITE(6)", self._execute(cdb, data_out=data,
                                                             positional=True))

    def _write_outcome(self, what: str, result: ScsiResult) -> bool:
        """Early warning is CHECK CONDITION, NO SENSE with EOM after a write that *did* happen
        (SSC-4 4.2.5); anything else that is not GOOD is an error."""
        sense = parse_sense(result.sense)
        if result.status == STATUS_CHECK_CONDITION and sense is not None and sense.eom and \
                sense.key in (NO_SENSE, RECOVERED_ERROR):
            return True
        check(f"{self.name}: {what}", result)
        return bool(sense and sense.eom)

    def write_filemarks(self, count: int = 1, *, immediate: bool = False) -> bool:
        cdb = bytes([Opcode.WRITE_FILEMARKS_6, 1 if immediate else 0]) + \
            count.to_bytes(3, "big") + b"\0"
        return self._write_outcome("WRITE FILEMARKS",
                                   self._execute(cdb, timeout=600, positional=True))

    def read(self, length: int) -> ReadOutcome:
        """READ(6) of one variable block of at most ``length`` bytes."""
        cdb = bytes([Opcode.READ_6, 0]) + length.to_bytes(3, "big") + b"\0"
        result = self._execute(cdb, read_len=length, positional=True)
        sense = parse_sense(result.sense)
        if result.status == STATUS_CHECK_CONDITION and sense is not None:
            if sense.filemark:
                return ReadOutcome(Kind.FILEMARK)
            if sense.key == BLANK_CHECK:
                return ReadOutcome(Kind.END_OF_DATA)
            if sense.key == NO_SENSE and sense.ili and sense.information is not None:
                if sense.information < 0:
                    raise ScsiError(f"{self.name}: READ(6) of {length} bytes met a longer block",
                                    result.status, sense)
                return ReadOutcome(Kind.DATA, result.data[:length - sense.information])
        check(f"{self.name}: READ(6)", result)
        return ReadOutcome(Kind.DATA, result.data)

    def locate(self, obj: int, partition: int = 0) -> None:
        """LOCATE(16) to a logical object (SSC-4 7.3)."""
        cdb = struct.pack(">BBBBQHH", Opcode.LOCATE_16, 0, 0, partition, obj, 0, 0)
        self.run("LOCATE(16)", cdb, timeout=600)

    def read_position(self) -> Position:
        """READ POSITION, long form: logical object and file (SSC-4 7.5.3)."""
        cdb = bytes([Opcode.READ_POSITION, 0x06]) + bytes(8)
        res, _ = self.run("READ POSITION", cdb, read_len=32)
        d = res.data
        if len(d) < 24:
            raise ScsiError(f"{self.name}: READ POSITION returned {len(d)} bytes", 0, None)
        return Position(int.from_bytes(d[8:16], "big"), int.from_bytes(d[16:24], "big"),
                        bool(d[0] & 0x80), bool(d[0] & 0x40))

    def space(self, code: int, count: int) -> Sense | None:
        """SPACE(6) (count is signed 24-bit); returns the sense of a short space, if any."""
        cdb = bytes([Opcode.SPACE_6, code]) + (count & 0xFFFFFF).to_bytes(3, "big") + b"\0"
        result = self._execute(cdb, timeout=600, positional=True)
        sense = parse_sense(result.sense)
        if result.status == STATUS_CHECK_CONDITION and sense is not None and (
                sense.filemark or sense.key in (BLANK_CHECK, NO_SENSE)):
            return sense
        check(f"{self.name}: SPACE", result)
        return None

    def rewind(self) -> None:
        self.run("REWIND", bytes([Opcode.REWIND, 0, 0, 0, 0, 0]), timeout=600)

    def erase(self, *, long: bool = False) -> None:
        """ERASE: short (an end of data here) or long (to the end of the medium)."""
        self.run("ERASE", bytes([Opcode.ERASE, 1 if long else 0, 0, 0, 0, 0]), timeout=3600)

    def security_protocol_in(self, protocol: int, page: int, length: int = 1024) -> bytes:
        """SECURITY PROTOCOL IN (SPC-4 6.40): one page of ``protocol`` (0x20: tape data
        encryption, ``ebm.remote.drive_encryption``)."""
        cdb = struct.pack(">BBHBxIxx", Opcode.SECURITY_PROTOCOL_IN, protocol, page, 0, length)
        res, _ = self.run(f"SECURITY PROTOCOL IN (0x{protocol:02x}/0x{page:04x})", cdb,
                          read_len=length)
        return res.data

    def security_protocol_out(self, protocol: int, page: int, data: bytes) -> None:
        """SECURITY PROTOCOL OUT (SPC-4 6.41): hand the drive one page (a key, for 0x20)."""
        cdb = struct.pack(">BBHBxIxx", Opcode.SECURITY_PROTOCOL_OUT, protocol, page, 0,
                          len(data))
        self.run(f"SECURITY PROTOCOL OUT (0x{protocol:02x}/0x{page:04x})", cdb, data_out=data)

    def unload(self) -> None:
        self.run("LOAD UNLOAD", bytes([Opcode.LOAD_UNLOAD, 0, 0, 0, 0, 0]), timeout=600)


@dataclass(frozen=True, slots=True)
class Element:
    address: int
    type: ElementType
    full: bool
    barcode: str | None = None
    source: int | None = None
    lun: int | None = None  # a drive's LUN on the changer's target, when the changer says


class ChangerDevice(ScsiDevice):
    """An SMC medium changer: element status with volume tags, MOVE MEDIUM."""

    def elements(self) -> list[Element]:
        """READ ELEMENT STATUS of every element, with primary volume tags (SMC-3 6.12)."""
        alloc = 0xFFFF * 8
        cdb = struct.pack(">BBHHB", Opcode.READ_ELEMENT_STATUS, 0x10, 0, 0xFFFF, 0) + \
            alloc.to_bytes(3, "big") + b"\0\0"
        res, _ = self.run("READ ELEMENT STATUS", cdb, read_len=alloc, timeout=300)
        return parse_element_status(res.data)

    def move(self, transport: int, source: int, destination: int) -> None:
        cdb = struct.pack(">BxHHHxxxx", Opcode.MOVE_MEDIUM, transport, source, destination)
        self.run(f"MOVE MEDIUM {source} -> {destination}", cdb, timeout=600)


_ELEMENT_TYPES = frozenset(int(t) for t in ElementType if t != ElementType.ALL)


def parse_element_status(d: bytes) -> list[Element]:
    """The element pages of a READ ELEMENT STATUS report (SMC-3 6.12.2 - 6.12.6)."""
    out: list[Element] = []
    if len(d) < 8:
        return out
    end = min(len(d), 8 + int.from_bytes(d[5:8], "big"))
    off = 8
    while off + 8 <= end:
        type_code, flags = d[off], d[off + 1]
        desc_len = int.from_bytes(d[off + 2:off + 4], "big")
        page_end = min(end, off + 8 + int.from_bytes(d[off + 5:off + 8], "big"))
        off += 8
        while desc_len and off + desc_len <= page_end:
            e = d[off:off + desc_len]
            full = bool(e[2] & 0x01)
            barcode = None
            if flags & 0x80 and len(e) >= 48:
                barcode = e[12:44].decode("ascii", "replace").strip() or None
            source = int.from_bytes(e[10:12], "big") if e[9] & 0x80 else None
            lun = e[6] & 0x07 if type_code == ElementType.DATA_TRANSFER and e[6] & 0x10 else None
            if type_code in _ELEMENT_TYPES:
                out.append(Element(int.from_bytes(e[0:2], "big"), ElementType(type_code), full,
                                   barcode if full else None, source, lun))
            off += desc_len
        off = page_end
    return out
