"""The contract between SCSI device models and the transports that carry CDBs to them.

A device model is pure: a CDB (plus any Data-Out bytes the initiator sent) goes in, a status,
Data-In bytes and sense come out. The iSCSI target (``vtl.iscsi``), the LIO/TCMU handler
(``vtl.lio``) and the unit tests all drive models through this one interface, so the
behaviour an initiator sees never depends on which transport carried the command.

Models are synchronous and may block (file I/O, zstd). A transport calls a model from one
thread at a time (it holds the LUN's lock), keeps one nexus's commands to a LUN in arrival
order, and never calls a model from an event loop.

Optional parts that let a transport skip work on the hot path:

* ``inline_opcodes: frozenset[int]``: commands that never block for long (at most one block of
  file I/O: no fsync, no medium load). The embedded iSCSI target runs these on the thread that
  received them instead of handing them to the LUN's worker thread, which saves a thread
  wake-up per command; everything else goes to the worker, so a long command never stops the
  connection from answering NOP-Outs and task management.
* ``idle() -> None``: called (under the LUN's lock) right after a response has been sent,
  before the transport waits for the next command. A model may do speculative work there
  that no initiator can observe, as a tape drive reads the next block ahead into its buffer.
* ``DonatedBuffer`` (below): a transport that allocates each command's Data-Out memory afresh
  says so by its type, and a model may then keep it instead of copying. A model that kept
  one may hand it to ``SPARE_BUFFERS.give_back`` once nothing of it is needed any more (a
  tape drive, when the block is on the medium), and the transport takes its next command's
  buffer of that size from there: no allocation and no zeroing of a 256 KiB block per WRITE.
* ``stream_read(nexus, cdb, length) -> bytes | memoryview | None``: the streaming READ of a
  sequential device, answered GOOD with exactly ``length`` bytes, or None: then nothing has
  changed and the transport runs the command through ``execute`` as usual (which handles
  every unusual case: unit attentions, reservations, filemarks, ILI, errors). It lets a
  transport answer the commonest command of a restore without building a task for it.
* ``stream_write(nexus, cdb, data) -> bool``: the same for a sequential device's streaming
  WRITE, its whole block in ``data`` (a DonatedBuffer): True once taken and answered GOOD,
  False with nothing changed, and ``execute`` runs it.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol


class Status(enum.IntEnum):
    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


class SenseKey(enum.IntEnum):
    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    VENDOR_SPECIFIC = 0x9
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE


@dataclass(frozen=True, slots=True)
class Nexus:
    """The I_T nexus a command arrived on: who is asking, for reservations and unit attentions.

    ``initiator`` is the initiator port name (for iSCSI ``iqn...,i,0x<ISID>``); ``transport_id``
    is the TransportID used by PERSISTENT RESERVE (iSCSI: the initiator name).
    """

    initiator: str
    transport_id: str = ""


LOCAL_NEXUS = Nexus(initiator="local")


class DonatedBuffer(bytearray):
    """Data-Out memory a transport gives away with the command: allocated for this one
    command and never touched by the transport once ``execute`` is called, so a model may
    keep it (a tape drive holds a buffered WRITE's block until it is stored) instead of
    copying it. Any other ``data_out`` is only the model's until ``execute`` returns."""

    __slots__ = ()


def donated(data: bytes | bytearray | memoryview) -> bool:
    """May a model keep ``data`` (or the memory it views) past ``execute``?"""
    if type(data) is memoryview:
        data = data.obj
    return type(data) is bytes or type(data) is DonatedBuffer


class SpareBuffers:
    """DonatedBuffers given back by the models that kept them, for the next command of the
    same size. A buffer taken here still holds its last command's bytes: ``take`` is only
    for a command whose whole Data-Out is read into it before ``execute`` (the streaming
    WRITE's case), never for one whose data arrives in pieces that may not all come.

    ``give_back`` trusts its caller: nothing (model or transport) may look at the buffer
    again. Bounded by ``keep_bytes``: beyond it a buffer given back is simply freed."""

    def __init__(self, keep_bytes: int, largest: int) -> None:
        self._keep = keep_bytes
        self._largest = largest
        self._kept = 0
        self._spare: dict[int, list[DonatedBuffer]] = {}
        self._lock = threading.Lock()

    def take(self, n: int) -> DonatedBuffer:
        """A buffer of ``n`` bytes (old contents) or a new one (zeros)."""
        if self._spare.get(n):  # a look without the lock: most small sizes never come back
            with self._lock:
                spare = self._spare.get(n)
                if spare:
                    self._kept -= n
                    return spare.pop()
        return DonatedBuffer(n)

    def give_back(self, data: bytes | bytearray | memoryview) -> None:
        """Keep the DonatedBuffer behind ``data`` for a later ``take`` (other data: nothing)."""
        buf = data.obj if type(data) is memoryview else data
        n = len(buf)
        if type(buf) is not DonatedBuffer or not n or n > self._largest:
            return
        with self._lock:
            spare = self._spare.setdefault(n, [])
            if self._kept + n <= self._keep and not any(b is buf for b in spare):
                self._kept += n
                spare.append(buf)

    @property
    def kept_bytes(self) -> int:
        return self._kept


# One pool per process: 8 MiB holds the blocks four 256 KiB streams give back between two
# WRITEs many times over; a block larger than 8 MiB (READ BLOCK LIMITS' maximum) is not kept.
SPARE_BUFFERS = SpareBuffers(8 << 20, 8 << 20)


@dataclass(slots=True)
class ScsiResult:
    """What a command produced. ``data`` is the Data-In payload (may be a memoryview)."""

    status: Status = Status.GOOD
    data: bytes | bytearray | memoryview = b""
    sense: bytes = b""


class CheckCondition(Exception):  # named after the SCSI status it produces
    """Raised inside a model to end a command with CHECK CONDITION and fixed-format sense.

    Made from a named condition of ``vtl.scsi.sense`` (``raise MEDIUM_NOT_PRESENT()``); the
    key/ASC/ASCQ arguments are that table's to fill, not a call site's.

    ``information`` fills the INFORMATION field (residue for READ/WRITE/SPACE, in blocks or
    bytes as SSC says) and sets the VALID bit. ``filemark``/``eom``/``ili`` are the SSC flag
    bits in byte 2. ``field_pointer`` (with ``cd`` = error in the CDB, ``bit``) fills the
    sense-key-specific bytes for ILLEGAL REQUEST, which lets initiators point at the bad field.
    """

    def __init__(
        self,
        key: SenseKey,
        asc: int,
        ascq: int = 0,
        *,
        information: int | None = None,
        filemark: bool = False,
        eom: bool = False,
        ili: bool = False,
        field_pointer: int | None = None,
        cd: bool = True,
        bit: int | None = None,
        data: bytes | bytearray | memoryview = b"",
        deferred: bool = False,
    ) -> None:
        super().__init__(f"{key.name} {asc:02x}/{ascq:02x}")
        self.key, self.asc, self.ascq = key, asc, ascq
        self.information = information  # bytes 3-6, with VALID
        self.filemark, self.eom, self.ili = filemark, eom, ili  # byte 2's flags
        self.field_pointer, self.cd, self.bit = field_pointer, cd, bit  # sense-key specific
        # Data already transferred before the condition (e.g. a short READ with ILI).
        self.data = data
        self.deferred = deferred

    def sense(self) -> bytes:
        """Fixed-format sense data (SPC-4 4.5.3), 18 bytes, response code 0x70 (current) or
        0x71 (deferred: about an earlier command, e.g. a buffered write that failed)."""
        s = bytearray(18)
        s[0] = 0x71 if self.deferred else 0x70
        if self.information is not None:
            s[0] |= 0x80
            s[3:7] = (self.information & 0xFFFFFFFF).to_bytes(4, "big")
        s[2] = (int(self.key) & 0x0F) | (0x80 if self.filemark else 0) | (
            0x40 if self.eom else 0) | (0x20 if self.ili else 0)
        s[7] = 10  # additional sense length
        s[12] = self.asc
        s[13] = self.ascq
        if self.field_pointer is not None:
            s[15] = 0x80 | (0x40 if self.cd else 0)
            if self.bit is not None:
                s[15] |= 0x08 | (self.bit & 0x07)
            s[16:18] = self.field_pointer.to_bytes(2, "big")
        return bytes(s)

    def result(self) -> ScsiResult:
        return ScsiResult(Status.CHECK_CONDITION, self.data, self.sense())


def fixed_sense(key: SenseKey, asc: int, ascq: int = 0, **fields: Any) -> bytes:
    """The sense bytes of ``CheckCondition(key, asc, ascq, **fields)``, where nothing is
    raised: ``fields`` are its keyword fields (information, filemark, eom, ili,
    field_pointer, cd, bit, deferred)."""
    return CheckCondition(key, asc, ascq, **fields).sense()


class ResetKind(enum.Enum):
    LUN_RESET = "lun"
    TARGET_RESET = "target"
    ABORT_TASK_SET = "abort_task_set"


class ScsiDevice(Protocol):
    """What a transport needs from a device model (one per LUN)."""

    def execute(
        self, nexus: Nexus, cdb: bytes, data_out: bytes | bytearray | memoryview | None = None
    ) -> ScsiResult:
        """Run one command to completion. Never raises: every failure becomes sense data."""
        ...

    def reset(self, kind: ResetKind, nexus: Nexus | None = None) -> None:
        """Task management: a LUN or target reset (queues UNIT ATTENTION for every nexus)."""
        ...

    def nexus_lost(self, nexus: Nexus) -> None:
        """The I_T nexus went away (logout or dropped connection): drop RESERVE(6) it held."""
        ...


@dataclass(slots=True)
class DeviceSet:
    """The LUN map one target exports: LUN number to device model."""

    luns: dict[int, ScsiDevice] = field(default_factory=dict)
