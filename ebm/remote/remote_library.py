"""A tape library on another host, shown to the data mover as the in-process one is.

Why this shape: ``ebm.drive_session`` and the mover use a small part of ``vtl.library``
(claim a drive, find a barcode, load, unload, mount; then position, read and write one
cartridge). ``RemoteLibrary`` offers exactly that part over SCSI: the changer through READ
ELEMENT STATUS (volume tags) and MOVE MEDIUM, each drive through SSC commands
(``RemoteCartridge``), so backup, restore, verify, rebuild and retention run unchanged on
either path.

A claimed drive is reserved with PERSISTENT RESERVE OUT (register, then reserve Write
Exclusive) so that legacy software on the same library cannot interleave writes; release
drops it. The reservation key is this host's (a hash of the initiator name) in the high 32
bits and the process id in the low 32, so a later EBM process on the same host can tell a
reservation left by one that died (its pid is gone) and preempt it, while a live job's
reservation keeps its drive.

What it must not do: touch the catalog (the EBM host's ``ebm.catalog`` does that) or guess
at the medium: positions come from READ POSITION, end of data from SPACE to EOD.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ebm.remote.drive_encryption import (
    DriveEncryptionError,
    DriveKey,
    aes_algorithm,
    clear_key,
    load_key,
)
from ebm.remote.initiator import Chap, Initiator, PositionUncertain, TransportError
from ebm.remote.iscsi_url import IscsiUrl
from ebm.remote.scsi_client import (
    MEDIUM_ERROR,
    SPACE_EOD,
    SPACE_FILEMARKS,
    ChangerDevice,
    Element,
    ElementType,
    EndOfMedium,
    Kind,
    NoMedium,
    ReservationConflict,
    ScsiError,
    TapeDevice,
    Transport,
    UndecryptableBlock,
)
from tape_formats.cartridge import (
    CorruptRecord,
    ReadResult,
    RecordKind,
    SpaceResult,
    WriteResult,
)
from tape_formats.cartridge import EndOfMedium as CartridgeEndOfMedium
from vtl.catalog import pid_alive
from vtl.errors import LibraryError

# ASCQ of DATA PROTECT 74/xx (SSC-4 tape data encryption), as the drive names them.
_DECRYPT_REFUSALS = {0x01: "it holds no key", 0x02: "it decrypts only, the block is plain",
                     0x03: "it holds another key", 0x04: "the integrity check failed"}
_KIND = {Kind.DATA: RecordKind.DATA, Kind.FILEMARK: RecordKind.FILEMARK,
         Kind.END_OF_DATA: RecordKind.EOD}


T = TypeVar("T")


class RemoteError(LibraryError):
    """The remote library refuses (no free drive, no such cartridge, no empty slot): one
    line; the drive session reports it as a media error, the CLIs exit 2."""


class RemoteFailure(Exception):
    """The remote library cannot be reached or failed a command (connection, login, a
    SCSI error): one line; the CLIs exit 1, as for any failed operation."""


def reservation_key(initiator_name: str, pid: int | None = None) -> int:
    host = int.from_bytes(hashlib.sha256(initiator_name.encode()).digest()[:4], "big")
    return (host << 32) | ((os.getpid() if pid is None else pid) & 0xFFFFFFFF)


class RemoteCartridge:
    """The mounted cartridge of one remote drive, with ``TapeCartridge``'s positioning
    vocabulary (logical objects, filemarks before an object, end of data)."""

    def __init__(self, tape: TapeDevice, barcode: str) -> None:
        self.tape = tape
        self.barcode = barcode
        self.worm = False
        self._eod: int | None = None
        self._sync_position()

    def __repr__(self) -> str:
        return f"RemoteCartridge({self.barcode} in {self.tape.name})"

    def _sync_position(self) -> None:
        pos = self.tape.read_position()
        self.position, self._file = pos.object, pos.file

    def _settled(self, what: str, op: Callable[[], T]) -> T:
        """``op`` (a command whose effect depends on the position), sent again only if the
        drive is still where it was when a lost connection or a reset cut it off."""
        start = self.position
        try:
            return op()
        except PositionUncertain:
            self._sync_position()
            if self.position != start:
                raise RemoteError(
                    f"cartridge {self.barcode}: {what} at object {start} cut off (connection "
                    f"lost or drive reset), drive now at {self.position}") from None
            return op()

    # -- what the mover asks -------------------------------------------------------------
    @property
    def write_protected(self) -> bool:
        return self.tape.write_protected

    @property
    def at_early_warning(self) -> bool:
        return self.tape.read_position().eop

    @property
    def eod(self) -> int:
        if self._eod is None:
            here = self.position
            self._settled("SPACE", lambda: self.tape.space(SPACE_EOD, 0))
            self._eod = self.tape.read_position().object
            self.locate(here)
        return self._eod

    @property
    def at_eod(self) -> bool:
        return self.position >= self.eod

    def filemarks_before(self, obj: int) -> int:
        if obj == self.position:
            return self._file
        here = self.position
        self.locate(obj)
        n = self._file
        self.locate(here)
        return n

    def object_kind(self, obj: int) -> RecordKind:
        here = self.position
        self.locate(obj)
        kind = _KIND[self._settled("READ", lambda: self.tape.read(1 << 16)).kind]
        self.locate(here)
        return kind

    def locate(self, obj: int) -> None:
        self.tape.locate(obj)
        self._sync_position()

    def rewind(self) -> None:
        self.tape.rewind()
        self.position, self._file = 0, 0

    def space_to_eod(self) -> None:
        self._settled("SPACE", lambda: self.tape.space(SPACE_EOD, 0))
        self._sync_position()
        self._eod = self.position

    def space_filemarks(self, count: int) -> SpaceResult:
        before = self._file
        sense = self._settled("SPACE", lambda: self.tape.space(SPACE_FILEMARKS, count))
        self._sync_position()
        if sense is None:
            return SpaceResult(count)
        stopped = RecordKind.EOD if sense.key == 0x8 else RecordKind.FILEMARK
        if stopped == RecordKind.EOD:
            self._eod = self.position
        return SpaceResult(abs(self._file - before), stopped)

    def read_block(self, buf: memoryview | bytearray | None = None, *,
                   own: bool = False) -> ReadResult:
        size = len(buf) if buf is not None else 1 << 24
        try:
            out = self._settled("READ", lambda: self.tape.read(size))
        except ScsiError as e:
            if e.sense is not None and e.sense.key == MEDIUM_ERROR:
                # the drive's word for a damaged record: the mover names cartridge and block
                raise CorruptRecord(f"{self.barcode}: {e}", self.position) from None
            if isinstance(e, UndecryptableBlock):
                raise RemoteError(
                    f"cartridge {self.barcode}: block {self.position} was encrypted by the drive "
                    f"and the drive cannot decrypt it ({_DECRYPT_REFUSALS.get(e.sense.ascq if e.sense else 0, e)});"
                    " give --drive-key-file with its key") from None
            raise
        kind = _KIND[out.kind]
        if kind == RecordKind.DATA:
            self.position += 1
        elif kind == RecordKind.FILEMARK:
            self.position += 1
            self._file += 1
        return ReadResult(kind, len(out.data), out.data)

    def write_block(self, data: bytes | memoryview, *, compress: bool = True) -> WriteResult:
        """WRITE(6) of one block (the drive compresses, or not, by its own setting). A
        connection lost mid-WRITE is settled with READ POSITION: the block is there (one
        object further), or it is written again, or the position is unknown (an error)."""
        start = self.position
        try:
            ew = self.tape.write(data)
        except EndOfMedium:
            self._sync_position()
            raise CartridgeEndOfMedium(f"cartridge {self.barcode} is full") from None
        except PositionUncertain:
            self._sync_position()
            if self.position == start + 1:
                ew = False
            elif self.position == start:
                ew = self.tape.write(data)
            else:
                raise RemoteError(
                    f"cartridge {self.barcode}: WRITE at object {start} cut off (connection "
                    f"lost or drive reset), drive now at {self.position}") from None
        self.position = start + 1
        self._eod = self.position
        return WriteResult(ew)

    def write_filemarks(self, count: int = 1, *, sync: bool = True) -> bool:
        start, file = self.position, self._file
        try:
            ew = self.tape.write_filemarks(count)
        except EndOfMedium:
            self._sync_position()
            raise CartridgeEndOfMedium(f"cartridge {self.barcode} is full") from None
        except PositionUncertain:
            self._sync_position()
            if self.position == start:
                ew = self.tape.write_filemarks(count)
            elif self.position != start + count:
                raise RemoteError(f"cartridge {self.barcode}: WRITE FILEMARKS at object "
                                  f"{start} cut off (connection lost or drive reset), drive "
                                  f"now at {self.position}") from None
            else:
                ew = False
        self.position, self._file = start + count, file + count
        self._eod = self.position
        return ew

    def sync(self) -> None:
        """WRITE FILEMARKS 0: the drive writes out what it buffered (SSC-4 7.8)."""
        self.tape.write_filemarks(0)

    def erase(self) -> None:
        """Short ERASE: the end of data is here now."""
        self.tape.erase()
        self._eod = self.position


@dataclass
class RemoteElement:
    """An element as ``DriveSession`` reads it: ``type.name``, ``index`` (a drive's number
    for drives, else the element address) and the barcode it holds."""

    type: ElementType
    index: int
    address: int
    barcode: str | None
    source: int | None


class RemoteBay:
    """One drive of the remote library: its LUN, what it holds, its mounted cartridge."""

    def __init__(self, library: RemoteLibrary, index: int, address: int, lun: int,
                 tape: TapeDevice | None = None) -> None:
        self.library, self.index, self.address, self.lun = library, index, address, lun
        self.tape = tape or TapeDevice(library.transport, lun, f"drive {index} (LUN {lun})")
        self.barcode: str | None = None
        self.cartridge: RemoteCartridge | None = None
        self.algorithm: int | None = None  # AES-256-GCM's index, once the drive was asked
        self.keyed = False  # the drive holds our key (ebm.remote.drive_encryption)

    def mount(self) -> RemoteCartridge:
        if self.barcode is None:
            raise RemoteError(f"drive {self.index} holds no cartridge")
        deadline = time.monotonic() + 60
        while True:
            try:
                self.tape.prepare()
                break
            except ScsiError as e:
                not_ready = e.sense is not None and e.sense.key == 0x2 and not isinstance(e, NoMedium)
                if not not_ready or time.monotonic() > deadline:
                    raise RemoteError(f"{e}") from None
                time.sleep(0.1)
        key = self.library.drive_key
        if key is not None and self.algorithm is not None:
            try:
                load_key(self.tape, key, self.algorithm)
            except ScsiError as e:
                raise RemoteError(f"{e}") from None
            self.keyed = True
        self.cartridge = RemoteCartridge(self.tape, self.barcode)
        return self.cartridge

    def clear_key(self) -> None:
        """SECURITY PROTOCOL OUT with encryption off: the key leaves the drive (best effort;
        the key was set clear-on-demount, so the drive drops it with the cartridge anyway)."""
        if self.keyed:
            with contextlib.suppress(ScsiError, TransportError):
                clear_key(self.tape)
                self.keyed = False

    def unmount(self) -> None:
        self.cartridge = None


class RemoteLibrary:
    """The changer and drives of one iSCSI target (changer at LUN 0 unless the URL names
    another), with the ``vtl.library.Library`` operations the EBM's drive session uses."""

    def __init__(self, transport: Transport, *, changer_lun: int = 0,
                 drive_luns: list[int] | None = None, key: int | None = None,
                 name: str = "remote library", tapes: list[TapeDevice] | None = None) -> None:
        """``tapes``: the drives' devices in element-address order, when they are not LUNs
        of ``transport`` (kernel devices: ``RemoteLibrary.kernel``)."""
        self.transport = transport
        self.name = name
        self.changer = ChangerDevice(transport, changer_lun, "changer")
        self.key = key if key is not None else reservation_key(name)
        self._elements: list[Element] = []
        self.refresh()
        drives = sorted((e for e in self._elements if e.type == ElementType.DATA_TRANSFER),
                        key=lambda e: e.address)
        if tapes is not None:
            self.bays = [RemoteBay(self, i, d.address, 0, tape)
                         for i, (d, tape) in enumerate(zip(drives, tapes, strict=False))]
        else:
            luns = drive_luns if drive_luns is not None else self._drive_luns(drives, changer_lun)
            self.bays = [RemoteBay(self, i, d.address, lun)
                         for i, (d, lun) in enumerate(zip(drives, luns, strict=False))]
        self.claimed: set[int] = set()
        self.drive_key: DriveKey | None = None  # see use_drive_key

    def use_drive_key(self, key: DriveKey | None) -> None:
        """Let the drives encrypt (and decrypt) with ``key``: loaded into a drive when a
        cartridge is mounted, cleared before it leaves and when the drive is released.
        Refused (DriveEncryptionError) unless every drive offers AES-256-GCM under host
        control, checked now, before any cartridge moves."""
        if key is not None:
            try:
                for bay in self.bays:
                    bay.algorithm = aes_algorithm(bay.tape)
            except ScsiError as e:
                raise DriveEncryptionError(str(e)) from None
            if not self.bays:
                raise DriveEncryptionError(f"{self.name} has no drive")
        self.drive_key = key

    @classmethod
    def open(cls, url: IscsiUrl, *, chap: Chap | None = None, initiator_name: str,
             header_digest: bool = False, data_digest: bool = False) -> RemoteLibrary:
        ini = Initiator(url.host, url.port, url.iqn, initiator_name=initiator_name,
                        chap_auth=chap, header_digest=header_digest, data_digest=data_digest)
        try:
            ini.connect()
            return cls(ini, changer_lun=url.lun or 0, key=reservation_key(initiator_name),
                       name=str(url))
        except (TransportError, ScsiError) as e:
            ini.close()
            raise RemoteFailure(str(e)) from None
        except OSError as e:
            raise RemoteFailure(str(e)) from None

    @classmethod
    def kernel(cls, changer: str, drives: list[str], *, initiator_name: str) -> RemoteLibrary:
        """A kernel-attached library: the changer's node (``/dev/sch0`` or its ``/dev/sgN``)
        and the drives' ``/dev/nstN`` in element-address order."""
        from ebm.remote.kernel_devices import SgTransport, StTape

        try:
            tapes = [StTape(path) for path in drives]
            return cls(SgTransport(changer), key=reservation_key(initiator_name),
                       name=changer, tapes=tapes)  # type: ignore[arg-type]
        except OSError as e:
            raise RemoteFailure(f"{e.filename or changer}: {e.strerror}") from None
        except ScsiError as e:
            raise RemoteFailure(str(e)) from None

    def _drive_luns(self, drives: list[Element], changer_lun: int) -> list[int]:
        """Each drive's LUN: as the changer reports it (LU VALID), else the target's other
        LUNs in order."""
        if drives and all(d.lun is not None for d in drives):
            return [d.lun for d in drives]  # type: ignore[misc]
        others = [lun for lun in self.changer.report_luns() if lun != changer_lun]
        return sorted(others)

    # -- inventory -------------------------------------------------------------------------
    def refresh(self) -> None:
        self.changer.test_unit_ready()
        self._elements = self.changer.elements()
        for bay in getattr(self, "bays", []):
            el = next((e for e in self._elements if e.address == bay.address), None)
            bay.barcode = el.barcode if el is not None and el.full else None

    def _element(self, e: Element) -> RemoteElement:
        index = e.address
        if e.type == ElementType.DATA_TRANSFER:
            index = next((b.index for b in self.bays if b.address == e.address), -1)
        return RemoteElement(e.type, index, e.address, e.barcode, e.source)

    def elements(self) -> list[RemoteElement]:
        return [self._element(e) for e in self._elements]

    def barcodes(self) -> list[str]:
        return sorted({e.barcode for e in self._elements if e.barcode})

    def find(self, barcode: str) -> RemoteElement:
        for e in self._elements:
            if e.barcode == barcode:
                return self._element(e)
        raise RemoteError(f"cartridge {barcode} is not in {self.name}")

    # -- drives ----------------------------------------------------------------------------
    def claim_drive(self, owner: str) -> RemoteBay:
        """Reserve a free drive (PERSISTENT RESERVE, Write Exclusive) for this process."""
        for bay in self.bays:
            if bay.index in self.claimed:
                continue
            try:
                self._reserve(bay)
            except ReservationConflict:
                continue
            except ScsiError as e:
                raise RemoteFailure(str(e)) from None
            self.claimed.add(bay.index)
            return bay
        raise RemoteError(f"no free drive in {self.name}: every drive is reserved")

    def _reserve(self, bay: RemoteBay) -> None:
        bay.tape.register(self.key)
        try:
            bay.tape.reserve(self.key)
        except ReservationConflict:
            holder = bay.tape.reservation()
            if holder is None or not self._stale(holder[0]):
                with contextlib.suppress(ScsiError):
                    bay.tape.unregister(self.key)
                raise
            bay.tape.preempt(self.key, holder[0])
            bay.tape.reserve(self.key)

    def _stale(self, key: int) -> bool:
        """A reservation this host's EBM left in a process that is gone."""
        return key >> 32 == self.key >> 32 and key != self.key and not pid_alive(key & 0xFFFFFFFF, None, socket.gethostname())

    def release_drive(self, index: int) -> None:
        bay = self.bays[index]
        self.claimed.discard(index)
        bay.clear_key()
        with contextlib.suppress(ScsiError, TransportError):
            bay.tape.release(self.key)
        with contextlib.suppress(ScsiError, TransportError):
            bay.tape.unregister(self.key)

    def load(self, barcode: str, drive: int) -> None:
        bay = self.bays[drive]
        src = self.find(barcode)
        self._move(src.address, bay.address)
        bay.barcode = barcode

    def unload(self, drive: int) -> None:
        """Eject the drive's cartridge and put it back where it came from (else the first
        empty slot)."""
        bay = self.bays[drive]
        self.refresh()
        el = next((e for e in self._elements if e.address == bay.address), None)
        if el is None or not el.full:
            bay.barcode = None
            return
        if drive not in self.claimed:
            holder = bay.tape.reservation()
            if holder is not None and holder[0] != self.key and not self._stale(holder[0]):
                raise RemoteError(f"cartridge {el.barcode} is in drive {drive}, which another "
                                  "initiator has reserved")
        bay.clear_key()
        with contextlib.suppress(ScsiError):
            bay.tape.unload()
        dest = el.source if el.source is not None and self._empty(el.source) else None
        if dest is None:
            dest = next((e.address for e in self._elements
                         if e.type == ElementType.STORAGE and not e.full), None)
        if dest is None:
            raise RemoteError(f"no empty slot for the cartridge in drive {drive}")
        self._move(bay.address, dest)
        bay.barcode = None
        bay.cartridge = None

    def _empty(self, address: int) -> bool:
        return any(e.address == address and not e.full for e in self._elements)

    def _move(self, source: int, destination: int) -> None:
        transport = next((e.address for e in self._elements
                          if e.type == ElementType.MEDIUM_TRANSPORT), 0)
        try:
            self.changer.move(transport, source, destination)
        except ScsiError as e:
            raise RemoteError(str(e)) from None
        finally:
            self.refresh()

    def close(self) -> None:
        for index in list(self.claimed):
            self.release_drive(index)
        for bay in self.bays:  # kernel devices hold a descriptor per drive (st: one open)
            close_tape = getattr(bay.tape, "close", None)
            if close_tape is not None:
                close_tape()
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()
