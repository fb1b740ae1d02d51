"""The same tape and changer commands through Linux's own devices, for a host whose library is
kernel-attached (a real library on SAS/FC, or iSCSI through open-iscsi).

Two ways in, the second implementation of what the iSCSI initiator offers:

- ``SgTransport``: any SCSI device node (``/dev/sg*``, and ``/dev/sch*`` / ``/dev/nst*``,
  which pass SG_IO through) as a ``scsi_client.Transport``: one ``sg_io_hdr`` per CDB
  (``SG_IO`` ioctl), so ``ChangerDevice`` and ``TapeDevice`` run over it unchanged, and so do
  persistent reservations, which the st driver has no ioctl for.
- ``StTape``: a tape through the st driver's own interface: ``read``/``write`` of one
  variable block each, ``MTIOCTOP`` (MTWEOF, MTFSF/MTBSF, MTEOM, MTSEEK, MTREW, MTOFFL,
  MTSETBLK) and ``MTIOCGET``/``MTIOCPOS`` for the position, with the ``TapeDevice`` methods
  the remote cartridge uses. The st driver then owns buffering and error recovery, as for
  ``mt`` and ``tar``.

The ioctl numbers and structure layouts are Linux's (``<scsi/sg.h>``, ``<sys/mtio.h>``) for
64-bit hosts; ``struct`` computes them from the C layouts, so the unit tests can check the
encoding on a machine that has no st driver.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import time

from ebm.remote.initiator import STATUS_CHECK_CONDITION, ScsiResult
from ebm.remote.scsi_client import (
    SPACE_EOD,
    SPACE_FILEMARKS,
    EndOfMedium,
    Kind,
    Position,
    ReadOutcome,
    ScsiDevice,
    ScsiError,
    Sense,
)


def _ioc(direction: int, kind: str, nr: int, size: int) -> int:
    """Linux _IOC(dir, type, nr, size) for x86/arm (dir: 1 write, 2 read)."""
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | nr


OPEN_WAIT_S = 60.0  # how long a freshly loaded drive may take to open (st waits for ready)

# <scsi/sg.h>
SG_IO = 0x2285
SG_DXFER_NONE, SG_DXFER_TO_DEV, SG_DXFER_FROM_DEV = -1, -2, -3
SG_IO_HDR = struct.Struct("@iiBBHIPPPIIiPBBBBHHiII0P")  # struct sg_io_hdr (88 bytes)
SENSE_MAX = 64
DRIVER_SENSE = 0x08  # driver_status: sense data is valid (not a failure)

# <sys/mtio.h>
MTOP = struct.Struct("@hi")  # struct mtop {short mt_op; int mt_count;}
MTGET = struct.Struct("@lllllii")  # struct mtget
MTPOS = struct.Struct("@l")  # struct mtpos {long mt_blkno;}
MTIOCTOP = _ioc(1, "m", 1, MTOP.size)
MTIOCGET = _ioc(2, "m", 2, MTGET.size)
MTIOCPOS = _ioc(2, "m", 3, MTPOS.size)
MTFSF, MTBSF, MTWEOF, MTREW, MTOFFL, MTEOM = 1, 2, 5, 6, 7, 12
MTSETBLK, MTSEEK = 20, 22
GMT_WR_PROT = 0x04000000  # mt_gstat bit


def sg_io_header(cdb: bytes, direction: int, length: int, data_addr: int, sense_addr: int,
                 cdb_addr: int, timeout_ms: int) -> bytes:
    """One ``struct sg_io_hdr`` (interface id 'S'), output fields zero."""
    return SG_IO_HDR.pack(ord("S"), direction, len(cdb), SENSE_MAX, 0, length, data_addr,
                          cdb_addr, sense_addr, timeout_ms, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


class SgTransport:
    """A SCSI device node driven with SG_IO; ``lun`` is ignored (a node is one LU)."""

    def __init__(self, path: str, *, ioctl=fcntl.ioctl, fd: int | None = None) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK) if fd is None else fd
        self._ioctl = ioctl

    def close(self) -> None:
        os.close(self.fd)

    def execute(self, lun: int, cdb: bytes, *, data_out: bytes | memoryview | None = None,
                read_len: int = 0, timeout: float | None = None,
                retry: bool | None = None) -> ScsiResult:
        if data_out is not None:
            buf = ctypes.create_string_buffer(bytes(data_out), len(data_out))
            direction, length = SG_DXFER_TO_DEV, len(data_out)
        else:
            buf = ctypes.create_string_buffer(max(read_len, 1))
            direction, length = (SG_DXFER_FROM_DEV, read_len) if read_len else (SG_DXFER_NONE, 0)
        cdb_buf = ctypes.create_string_buffer(bytes(cdb), len(cdb))
        sense = ctypes.create_string_buffer(SENSE_MAX)
        hdr = bytearray(sg_io_header(bytes(cdb), direction, length, ctypes.addressof(buf),
                                     ctypes.addressof(sense), ctypes.addressof(cdb_buf),
                                     int((timeout or 60) * 1000)))
        self._ioctl(self.fd, SG_IO, hdr)
        out = SG_IO_HDR.unpack(bytes(hdr))
        status, sb_len, host, driver, resid = out[13], out[16], out[17], out[18], out[19]
        if host or driver & ~DRIVER_SENSE:
            raise ScsiError(f"{self.path}: command 0x{cdb[0]:02x} failed in the kernel "
                            f"(host status 0x{host:x}, driver status 0x{driver:x})", status, None)
        got = max(0, read_len - resid) if read_len else 0
        return ScsiResult(status, buf.raw[:got], sense.raw[:sb_len], resid)


class StTape:
    """A tape through the st driver (``/dev/nstN``: no rewind on close), with the
    ``TapeDevice`` methods ``remote_library.RemoteCartridge`` calls. Persistent reservations
    go through SG_IO on the same node (``ScsiDevice`` over ``SgTransport``)."""

    def __init__(self, path: str, *, ioctl=fcntl.ioctl, fd: int | None = None,
                 ready_wait: float = OPEN_WAIT_S) -> None:
        self.path = self.name = path
        self._ioctl = ioctl
        self._pr: ScsiDevice | None = None
        self._ready_wait = ready_wait
        # st refuses a plain open of a drive that holds no cartridge (ENOMEDIUM), and the
        # library opens its drives before the changer loads one: O_NONBLOCK opens it empty,
        # and the first tape operation after a load reopens it blocking (``_ready``), which
        # is when st checks the medium (UNIT ATTENTION, write protect, block limits).
        self._owns_fd = fd is None
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK) if fd is None else fd
        self._loaded = not self._owns_fd

    def _ready(self) -> int:
        """The descriptor, opened blocking once a cartridge is in the drive. st allows one
        open at a time, so the empty-drive descriptor is closed first."""
        if self._loaded:
            return self.fd
        os.close(self.fd)
        deadline = time.monotonic() + self._ready_wait
        while True:
            try:
                self.fd = os.open(self.path, os.O_RDWR)
                break
            except OSError as e:
                if e.errno not in (errno.ENOMEDIUM, errno.EIO, errno.EAGAIN, errno.EBUSY) \
                        or time.monotonic() > deadline:
                    self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
                    raise ScsiError(f"{self.path}: not ready: {e.strerror}", 0, None) from None
                time.sleep(0.2)
        self._loaded, self._pr = True, None
        return self.fd

    def close(self) -> None:
        if self._owns_fd:
            os.close(self.fd)

    def _op(self, op: int, count: int = 1) -> None:
        self._ioctl(self._ready(), MTIOCTOP, MTOP.pack(op, count))

    def _status(self) -> tuple[int, ...]:
        return MTGET.unpack(self._ioctl(self._ready(), MTIOCGET, bytes(MTGET.size)))

    # -- TapeDevice's surface --------------------------------------------------------------
    def prepare(self) -> None:
        self._op(MTSETBLK, 0)  # variable-block mode

    @property
    def write_protected(self) -> bool:
        return bool(self._status()[3] & GMT_WR_PROT)

    def read_position(self) -> Position:
        block = MTPOS.unpack(self._ioctl(self._ready(), MTIOCPOS, bytes(MTPOS.size)))[0]
        fileno = self._status()[5]
        return Position(block, max(fileno, 0), bop=block == 0)

    def locate(self, obj: int, partition: int = 0) -> None:
        self._op(MTSEEK, obj)

    def write(self, data: bytes | memoryview) -> bool:
        """One block per write(2). st reports early warning as a short write or ENOSPC
        after the data went down: the data was written, so that is early warning; ENOSPC
        before anything was written is end of medium."""
        try:
            n = os.write(self._ready(), data)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise EndOfMedium(f"{self.path}: write", STATUS_CHECK_CONDITION,
                                  Sense(0xD, 0, 2, eom=True)) from None
            raise ScsiError(f"{self.path}: write: {e.strerror}", 0, None) from None
        return n < len(data)

    def write_filemarks(self, count: int = 1, *, immediate: bool = False) -> bool:
        self._op(MTWEOF, count)
        return False

    def read(self, length: int) -> ReadOutcome:
        try:
            data = os.read(self._ready(), length)
        except OSError as e:
            if e.errno in (errno.EIO, errno.ENOSPC):
                return ReadOutcome(Kind.END_OF_DATA)
            raise ScsiError(f"{self.path}: read: {e.strerror}", 0, None) from None
        return ReadOutcome(Kind.DATA, data) if data else ReadOutcome(Kind.FILEMARK)

    def space(self, code: int, count: int) -> Sense | None:
        try:
            if code == SPACE_EOD:
                self._op(MTEOM)
            elif code == SPACE_FILEMARKS:
                self._op(MTFSF if count >= 0 else MTBSF, abs(count))
            else:
                raise ScsiError(f"{self.path}: SPACE code {code} is not offered by st", 0, None)
        except OSError:
            return Sense(0x8, 0, 5)  # blank check: end of data reached first
        return None

    def rewind(self) -> None:
        self._op(MTREW)

    def erase(self, *, long: bool = False) -> None:
        raise ScsiError(f"{self.path}: a short ERASE is not offered by st "
                        "(the next write ends the data there)", 0, None)

    def unload(self) -> None:
        self._op(MTOFFL)
        if self._owns_fd:  # the drive is empty now: back to the descriptor st allows then
            os.close(self.fd)
            self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
            self._loaded, self._pr = False, None

    # -- persistent reservations through SG_IO on the same node --------------------------
    def _reservations(self) -> ScsiDevice:
        if self._pr is None:
            transport = SgTransport(self.path, ioctl=self._ioctl, fd=self.fd)
            self._pr = ScsiDevice(transport, 0, self.path)
        return self._pr

    def register(self, key: int) -> None:
        self._reservations().register(key)

    def unregister(self, key: int) -> None:
        self._reservations().unregister(key)

    def reserve(self, key: int, pr_type: int = 1) -> None:
        self._reservations().reserve(key, pr_type)

    def release(self, key: int, pr_type: int = 1) -> None:
        self._reservations().release(key, pr_type)

    def preempt(self, key: int, victim: int, pr_type: int = 1) -> None:
        self._reservations().preempt(key, victim, pr_type)

    def reservation(self) -> tuple[int, int] | None:
        return self._reservations().reservation()
