"""SSC-3/SSC-4 tape drive model on top of a library drive bay and its cartridge.

``TapeDrive`` turns tape commands into ``TapeCartridge`` calls and cartridge outcomes into the
exact status, sense and residues SSC prescribes, because backup software (Linux st, Bacula,
tar) steers by them: ILI plus INFORMATION for short variable reads, FILEMARK/EOM bits,
BLANK CHECK at end of data, early warning as NO SENSE/EOM after a good write, VOLUME OVERFLOW
when nothing fits, and a failed disk write as MEDIUM ERROR, never as end of medium.

Conditions and the sense they produce (fixed format; descriptor format if D_SENSE is set),
each raised as the named condition of ``vtl.scsi.sense`` that carries this key and ASC/ASCQ
(END_OF_DATA_DETECTED, WRITE_PROTECTED, ...); CDB fields come from ``vtl.scsi.ssc_cdb``:

=====================================  ==========================================================
condition                              sense (flags, INFORMATION)
=====================================  ==========================================================
variable READ, block shorter/longer     NO SENSE 00/00, ILI, requested - actual (negative if longer)
READ hits a filemark                   NO SENSE 00/01, FILEMARK, residue (bytes or blocks)
READ/SPACE hits end of data            BLANK CHECK 00/05, residue (EOM if past early warning)
SPACE hits a filemark / BOP            NO SENSE 00/01 FILEMARK / 00/04 EOM, residue (never < 0)
WRITE/WFM past early warning           NO SENSE 00/02, EOM, 0 (the data *was* written)
WRITE/WFM into the PEW zone (PEWS set)  NO SENSE 00/07, once, 0 (the data *was* written)
WRITE/WFM with no room left            VOLUME OVERFLOW 00/02, EOM, residue
disk write / read failure              MEDIUM ERROR 0C/00 / 11/00, residue (never EOM)
damaged record (checksum)              MEDIUM ERROR 11/00, residue
error injected at the block (faults)   MEDIUM ERROR 0C/00 / 11/00, residue (vtl.faults)
cleaning cartridge cleaning / worn     NOT READY 30/03 / MEDIUM ERROR 30/03 (ssc_cleaning)
due for cleaning (REQUEST SENSE)       NO SENSE 00/17 (ssc_cleaning)
block the encryption keys do not open  DATA PROTECT 74/01-04, residue (ssc_encryption)
LOCATE CP to a partition not there     ILLEGAL REQUEST 24/00 (ssc_partitions; layout: 26/00)
write protected / WORM overwrite       DATA PROTECT 27/00 / 30/0C
older medium the drive cannot write    DATA PROTECT 30/05
medium the drive cannot read           MEDIUM ERROR 30/00
no cartridge / unloaded                NOT READY 3A/00
cartridge held by another process      NOT READY 04/01
unload while PREVENT is in effect      ILLEGAL REQUEST 53/02
cartridge changed in the bay           UNIT ATTENTION 28/00 (every nexus)
IMMED REWIND/LOAD/UNLOAD/ERASE running  NOT READY 04/07 at once (ssc_immediate; INQUIRY: BUSY)
IMMED work failed                      its error, deferred (0x71), to the nexus that asked
=====================================  ==========================================================

Data path: READ fills a per-drive buffer and returns a memoryview of it (no copy). The view is
valid until the drive's next-but-one READ (two buffers alternate), which leaves a transport
the time to send one response while the next command runs; a transport that pipelines deeper
must copy. WRITE hands the Data-Out view straight to the cartridge.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import crc32c
import zstandard

from tape_formats import block_packing
from tape_formats.block_crypto import DecryptMode
from tape_formats.cartridge import (
    WRITE_BEHIND_BYTES,
    CartridgeError,
    CorruptRecord,
    EndOfMedium,
    RecordKind,
    TapeCartridge,
    UndecryptableBlock,
    WormOverwrite,
    WriteProtected,
)
from tape_formats.mam import MamError
from tape_formats.read_ahead import SPAN_RECORD_MAX
from tape_formats.records import DATA_START, HEADER_FLAG_WRITE_PROTECT, RECORD_MAGIC
from tape_formats.store.medium import PlainMedium
from tape_formats.write_behind import DeferredWriteError
from tape_formats.writeback_pacing import WRITEBACK_CHUNK
from vtl.barcode import is_cleaning_label
from vtl.faults import READ, WRITE, device_key, take_injected
from vtl.native import optional_extension
from vtl.scsi import ssc_attributes as attributes
from vtl.scsi.base import (
    SPARE_BUFFERS,
    CheckCondition,
    DonatedBuffer,
    Nexus,
    ResetKind,
    ScsiResult,
    Status,
    donated,
)
from vtl.scsi.identities import (
    BITS_PER_MM,
    DENSITY,
    IBM_MEDIUM_TYPE,
    IBM_WORM_MEDIUM_TYPE,
    MEDIA_WIDTH_MM_X10,
    NATIVE_CAPACITY_MB,
    TRACKS,
    DriveIdentity,
    drive_identity,
)
from vtl.scsi.opcodes import Opcode
from vtl.scsi.pages import (
    LogPage,
    LogParameter,
    ModePage,
    ascii_field,
    counter,
    tapealert_parameters,
)
from vtl.scsi.sense import (
    BEGINNING_OF_MEDIUM_DETECTED,
    CANNOT_WRITE_MEDIUM_INCOMPATIBLE_FORMAT,
    CLEANING_REQUESTED,
    END_OF_DATA_DETECTED,
    END_OF_PARTITION_MEDIUM_DETECTED,
    FILEMARK_DETECTED,
    INCOMPATIBLE_MEDIUM_INSTALLED,
    LUN_BECOMING_READY,
    LUN_NOT_READY_OPERATION_IN_PROGRESS,
    MEDIUM_NOT_PRESENT,
    MEDIUM_REMOVAL_PREVENTED,
    NO_ADDITIONAL_SENSE,
    PARAMETER_LIST_LENGTH_ERROR,
    PROGRAMMABLE_EARLY_WARNING_DETECTED,
    UNRECOVERED_READ_ERROR,
    VOLUME_OVERFLOW,
    WORM_MEDIUM_OVERWRITE_ATTEMPTED,
    WRITE_ERROR,
    WRITE_PROTECTED,
    UnitAttention,
    invalid_field_in_cdb,
    invalid_field_in_parameter_list,
)
from vtl.scsi.spc import (
    PR_ALLOWED,
    PR_READ,
    PR_WRITE,
    CommandSpec,
    Request,
    ScsiModel,
    command,
    descriptor_sense,
    parameter_list_length,
    service_actions,
    trunc,
)
from vtl.scsi.ssc_cdb import (
    DEST_END_OF_DATA,
    DEST_FILEMARK,
    DEST_LOGICAL_OBJECT,
    FIXED,
    POSITION_EXTENDED,
    POSITION_LONG,
    POSITION_SHORT,
    POSITION_SHORT_VENDOR,
    SPACE_BLOCKS,
    SPACE_END_OF_DATA,
    SPACE_FILEMARKS,
    decode_load_unload,
    decode_locate10,
    decode_locate16,
    decode_read_position,
    decode_read_write6,
    decode_space6,
    decode_space16,
    decode_write_filemarks,
    immediate,
    streaming_fixed_count,
    streaming_read_length,
    streaming_write_length,
    transfer_length,
    verify_as_read6,
)
from vtl.scsi.ssc_cleaning import CLEANING_FLAGS, DriveCleaning
from vtl.scsi.ssc_diagnostics import DiagnosticCommands
from vtl.scsi.ssc_encryption import DriveEncryption, EncryptionCommands, decrypt_refusal
from vtl.scsi.ssc_immediate import ImmediateWork
from vtl.scsi.ssc_partitions import MediumPartitionPage, PartitionCommands
from vtl.scsi.ssc_protection import ControlDataProtectionPage, methods_for_generation
from vtl.scsi.ssc_streams import WRITE_STREAMS
from vtl.scsi.ssc_volume_pages import device_configuration_extension, volume_statistics

if TYPE_CHECKING:
    from vtl.library import DriveBay

log = logging.getLogger(__name__)

# TapeCartridge.read_ahead, its usual case (a plain record in the span) in C when the
# extension is built: vtl/_fastpath.c; tests/tape_formats/test_read_ahead_native.py holds the
# two to the same cache contents.
_native = optional_extension("vtl._fastpath", "configure_read_ahead", "read_ahead")
# A record too big for the span, stored as is, is read there too from a plain cartridge file.
if _native is not None:
    _ra_config = (TapeCartridge.read_ahead, zstandard.ZstdError, crc32c.crc32c, SPAN_RECORD_MAX,
                  DecryptMode.DECRYPT)
    try:
        _native.configure_read_ahead(*_ra_config, PlainMedium)
    except TypeError:  # built before the big records' case: the span's only
        _native.configure_read_ahead(*_ra_config)
read_ahead: Callable[[TapeCartridge], None] = (
    _native.read_ahead if _native is not None else TapeCartridge.read_ahead)
_wnative = optional_extension("vtl._fastpath", "configure_write", "ssc_stream_write",
                              "append_now")

MAX_BLOCK = 8 * 1024 * 1024  # READ BLOCK LIMITS maximum (LTO drives report 8 MiB)
MAX_FIXED_TRANSFER = 64 * 1024 * 1024  # fixed-mode READ/WRITE byte cap per command
# Fixed-mode READ/WRITE(6) move their blocks as one run through the cartridge
# (TapeCartridge.read_blocks/write_blocks); False: block by block, the reference that
# tests/scsi/test_ssc_fixed_runs.py holds the runs to.
FIXED_RUNS = True
DEFAULT_BUFFERED_MODE = 1
# In buffered mode a variable-mode WRITE(6) of at least this many bytes is answered once the
# block is in the drive's buffer (TapeCartridge.queue_block); smaller blocks cost less to
# write at once than to hand to another thread (TapeCartridge.append_now, on the fast path).
MIN_BUFFERED_WRITE = 16 * 1024
# A fixed-mode WRITE's several blocks (``mt setblk 512``) of at least this many bytes go into
# the write buffer as one lazy run (TapeCartridge.queue_run): answered GOOD at once, packed
# and stored by the drive's idle hook right after the answer went out, so zstd per block
# (most of their cost) overlaps the initiator's turn instead of delaying the answer
# (bench/README.md, blkgrp). From 64 KiB: the lead's quiet A/B (four pairs) found runs of
# 10-32 KiB no faster that way and 10-40% dearer in CPU per GB, 64 KiB ones ~15% faster.
MIN_BUFFERED_RUN = 64 * 1024

# Commands on the data path: skip the catalog refresh (a cartridge being read or written is
# flocked by this process, nobody can move it meanwhile).
_HOT = frozenset(map(int, (Opcode.READ_6, Opcode.WRITE_6, Opcode.WRITE_FILEMARKS_6,
                           Opcode.SPACE_6, Opcode.READ_POSITION)))
_INLINE = frozenset(map(int, (Opcode.READ_6, Opcode.WRITE_6, Opcode.READ_POSITION)))
_READ_6 = int(Opcode.READ_6)
_WRITE_6 = int(Opcode.WRITE_6)  # may join the blocks in the write buffer (before_command)
_NOT_INLINE: frozenset[int] = frozenset()

# TapeAlert flags (SSC-4 Annex A / the TapeAlert specification).
TA_WRITE_FAILURE = 6
TA_READ_FAILURE = 5
TA_MEDIA = 4
TA_HARD_ERROR = 3
TA_WRITE_PROTECT = 9
TA_NO_REMOVAL = 10
TA_UNSUPPORTED_FORMAT = 12
TA_WORM_OVERWRITE = 60


def _write6_length(drive: TapeDrive, cdb: bytes) -> int | None:
    """WRITE(6)'s Data-Out: the block (variable mode) or blocks x block size (fixed mode;
    None while no block size is set: the command fails on its FIXED bit anyway)."""
    count = transfer_length(cdb)
    if cdb[1] & FIXED:
        return count * drive.block_size if drive.block_size else None
    return count


class TapeDrive(EncryptionCommands, DiagnosticCommands, PartitionCommands, ScsiModel):
    """One LTO tape drive (SSC), the data-transfer element of a library drive bay."""

    PERIPHERAL_TYPE = 0x01
    REMOVABLE = True

    def __init__(self, bay: DriveBay, identity: DriveIdentity | None = None) -> None:
        if identity is None:
            model = getattr(getattr(bay.library, "config", None), "drive_model", None)
            try:
                identity = drive_identity(model)
            except ValueError as exc:
                log.warning("%s; emulating the default drive", exc)
                identity = drive_identity()
        super().__init__(identity, bay.serial)
        self.identity: DriveIdentity = identity
        self.bay = bay
        # One lock for "a command is using this drive" and "the bay's cartridge may change":
        # a changer move out of this drive (library.move_medium takes bay.io_lock) waits for
        # the running command instead of closing the cartridge under it. Lock order is
        # io_lock -> library.lock everywhere, and every command holds only this lock when it
        # calls into the library.
        if hasattr(bay, "io_lock"):
            bay.io_lock = self.lock
        self._gen = bay.media_generation
        self._cart: TapeCartridge | None = None
        self._part = 0  # the partition the drive is in (ssc_partitions)
        # A cartridge in the bay at start-up counts as loaded (threaded), like a drive that
        # powers on with a tape inside.
        self._loaded = True
        self.block_size = 0  # 0 = variable block mode
        self.buffered_mode = DEFAULT_BUFFERED_MODE
        self._bufs = [bytearray(0), bytearray(0)]
        self._which = 0
        self.tapealert: set[int] = set()  # raised by events, cleared when read (LOG SENSE)
        self._alerts_seen = 0  # the last injected TapeAlert raised (vtl.faults)
        # cleaning cartridges and wear (ssc_cleaning); it unloads a cleaning cartridge itself
        self.cleaning = DriveCleaning(bay, self.tapealert, unloaded=self._unload)
        self.write_errors = 0
        self.read_errors = 0
        self.bytes_written = 0  # from initiators, this load
        self.bytes_read = 0
        self._streaming = False  # the last command was a READ(6) that returned data
        # (blocks, block size) when it was a streaming fixed-mode READ of several blocks: the
        # next run is decoded ahead (TapeCartridge.run_ahead) instead of the next block
        self._run_ahead: tuple[int, int] | None = None
        self._buffered_for: Nexus | None = None  # whose WRITEs are in the write buffer
        # REWIND, LOAD UNLOAD, ERASE with IMMED: the work after the status (ssc_immediate).
        self._immediate = ImmediateWork(self.lock, f"drive{bay.index}")
        # SSC-4 data encryption: the key lives here, in memory (ssc_encryption).
        self.encryption = DriveEncryption()
        self._add_pages()
        # The write side in C (vtl/_fastpath_write.c): mode page 0x0F for its DCE bit, and
        # the cartridge stream_write last found writable by this drive (_can_write: its
        # generation, fixed per cartridge), which the C path asks instead.
        self._compression_page = self.mode_page(0x0F)
        self._writable: TapeCartridge | None = None
        if _wnative is not None:  # the streaming WRITE's usual case in C, this method else
            self.stream_write = functools.partial(_wnative.ssc_stream_write, self)

    # ------------------------------------------------------------------ pages
    def _add_pages(self) -> None:
        # 0x0A control: D_SENSE changeable (descriptor-format autosense), QERR 0, SWP 0.
        self.add_mode_page(
            ModePage(0x0A, bytes([0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00]),
                     bytes([0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]),
                     name="control")
        )
        # 0x0F data compression: DCE changeable, DDE fixed on, algorithm 0x01 (LTO default).
        self.add_mode_page(
            ModePage(
                0x0F,
                bytes([0xC0, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]),
                bytes([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                on_change=self._compression_changed,
                name="data compression",
            )
        )
        # 0x10 device configuration: EEG+SEW, SELECT DATA COMPRESSION ALGORITHM = 1.
        dc = bytearray(14)
        dc[8] = 0x18
        dc[12] = 0x01
        dc_mask = bytearray(14)
        dc_mask[4] = dc_mask[5] = 0xFF  # write delay time
        dc_mask[12] = 0xFF
        self.add_mode_page(ModePage(0x10, bytes(dc), bytes(dc_mask),
                                    on_change=self._devconf_changed, name="device configuration"))
        # 0x10/0x01 device configuration extension (LTFS cannot do without it).
        self.devconf_ext = self.add_mode_page(device_configuration_extension())
        # 0x0A/0xF0 control data protection: logical block protection (ssc_protection), with
        # the methods this generation offers (Reed-Solomon from LTO-5, CRC32C from LTO-7).
        self.protection = ControlDataProtectionPage(
            methods_for_generation(self.identity.generation))
        self.add_mode_page(self.protection)
        # 0x11 medium partition: the layout FORMAT MEDIUM applies (ssc_partitions).
        self.partition_page = MediumPartitionPage(self.identity, lambda: self._ready_cart())
        self.add_mode_page(self.partition_page)
        # 0x1D medium configuration: WORMM reflects the loaded cartridge (SSC-3 8.3.7).
        self.add_mode_page(_MediumConfigurationPage(self))
        # 0x1C informational exceptions control: DEXCPT off by default, MRIE 3.
        self.add_mode_page(
            ModePage(0x1C, bytes([0x08, 0x03, 0, 0, 0, 0, 0, 0, 0, 0]),
                     bytes([0x8C, 0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
                     name="informational exceptions")
        )
        self.add_log_page(LogPage(0x02, lambda: self._error_counters(True), name="write errors",
                                  reset=self._reset_errors))
        self.add_log_page(LogPage(0x03, lambda: self._error_counters(False), name="read errors",
                                  reset=self._reset_errors))
        self.add_log_page(LogPage(0x0C, self._seq_access_params, name="sequential access",
                                  reset=self._reset_traffic))
        self.add_log_page(LogPage(0x2E, self._tapealert_params, name="TapeAlert",
                                  after_read=self.tapealert.clear, reset=self.tapealert.clear))
        self.add_log_page(LogPage(0x31, self._capacity_params, name="tape capacity"))
        self.add_log_page(volume_statistics(lambda: self._cart))

    @property
    def compression(self) -> bool:
        return bool(self.mode_page(0x0F).current[0] & 0x80)

    def _compression_changed(self, old: bytes, new: bytes) -> None:
        self.mode_page(0x10).current[12] = 1 if new[0] & 0x80 else 0

    def _devconf_changed(self, old: bytes, new: bytes) -> None:
        p = self.mode_page(0x0F).current
        p[0] = (p[0] | 0x80) if new[12] else (p[0] & ~0x80 & 0xFF)

    def _error_counters(self, write: bool) -> list[LogParameter]:
        c = self._cart
        traffic = 0
        if c is not None:
            traffic = c.counters.written_native if write else c.counters.read_native
        errors = self.write_errors if write else self.read_errors
        return [counter(0, 0, 4), counter(1, 0, 4), counter(2, 0, 4), counter(3, 0, 4),
                counter(4, 0, 4), counter(5, traffic, 8), counter(6, errors, 4)]

    def _reset_errors(self) -> None:
        self.write_errors = self.read_errors = 0

    def _reset_traffic(self) -> None:
        self.bytes_written = self.bytes_read = 0

    def _seq_access_params(self) -> list[LogParameter]:
        c = self._cart
        stored_w = stored_r = 0
        used = ew = cap = pos_mb = 0
        if c is not None:
            stored_w, stored_r = c.counters.written_stored, c.counters.read_stored
            used = c.used_bytes // 1_000_000
            ew = c.ew_point // 1_000_000
            cap = c.capacity // 1_000_000
            pos_mb = used if c.at_eod else 0
        return [
            counter(0x0000, self.bytes_written), counter(0x0001, stored_w),
            counter(0x0002, stored_r), counter(0x0003, self.bytes_read),
            counter(0x0004, used, 4), counter(0x0005, ew, 4), counter(0x0006, max(cap - ew, 0), 4),
            counter(0x0007, pos_mb, 4), counter(0x0008, 0, 4),
            LogParameter(0x0100, bytes([self.cleaning.requested]), 0x00),  # cleaning required
        ]

    def _tapealert_params(self) -> list[LogParameter]:
        """Flags 1..64: the events since the last read, and the conditions that last
        (a drive due for cleaning, ssc_cleaning)."""
        return tapealert_parameters(self.tapealert | self.cleaning.wear_flags())

    def _capacity_params(self) -> list[LogParameter]:
        """Tape capacity (0x31): remaining and maximum MiB of partitions 0 and 1."""
        c = self._cart
        parts = [c.partition(n) for n in range(min(c.partition_count, 2))] if c else []
        rem = [p.remaining_bytes >> 20 for p in parts] + [0, 0]
        mx = [p.capacity >> 20 for p in parts] + [0, 0]
        return [counter(1, rem[0], 4), counter(2, rem[1], 4), counter(3, mx[0], 4),
                counter(4, mx[1], 4)]

    # ------------------------------------------------------------------ medium state
    @property
    def inline_opcodes(self) -> frozenset[int]:
        """READ(6), WRITE(6) and READ POSITION while a cartridge is mounted: at most one
        block of file I/O (fixed mode: up to MAX_FIXED_TRANSFER bytes), no fsync in the
        streaming case, so a transport may run them on the thread that received them. Not
        before the mount (the first command after a move opens and checks the cartridge and
        re-reads the catalog), and never TEST UNIT READY / REQUEST SENSE (they re-read the
        catalog). A WRITE(6) that overwrites mid-tape fsyncs the shortened index sidecar
        once: short, and rare in streaming."""
        if self._cart is not None and self._loaded:
            return _INLINE
        return _NOT_INLINE

    def execute(self, nexus: Nexus, cdb: bytes,
                data_out: bytes | bytearray | memoryview | None = None) -> ScsiResult:
        """While an IMMED command's work runs, answer at once (ssc_immediate) instead of
        waiting for it; otherwise the general path."""
        if self._immediate.running:
            answer = self._answer_in_progress(nexus, cdb)
            if answer is not None:
                return answer
        return super().execute(nexus, cdb, data_out)

    def _answer_in_progress(self, nexus: Nexus, cdb: bytes) -> ScsiResult | None:
        """The answer to ``cdb`` while IMMED work holds the drive; None for a CDB that only
        the general path can judge (it waits for the work)."""
        try:
            spec = self._command_for(cdb)
        except CheckCondition:
            return None  # unknown: the general path says why, after the work
        if spec.opcode in (Opcode.INQUIRY, Opcode.REPORT_LUNS):
            return ScsiResult(Status.BUSY)
        if (spec.pr != PR_ALLOWED and (self._reserve6 is not None or self.pr.reservation)
                and self._conflicts(nexus, spec.pr)):
            return ScsiResult(Status.RESERVATION_CONFLICT)
        if spec.opcode == Opcode.REQUEST_SENSE:
            alloc = cdb[4] if len(cdb) > 4 else 0
            return ScsiResult(Status.GOOD, LUN_NOT_READY_OPERATION_IN_PROGRESS.sense()[:alloc])
        result = LUN_NOT_READY_OPERATION_IN_PROGRESS.result()
        if self.descriptor_sense:
            result.sense = descriptor_sense(result.sense)
        return result

    def _run_immediate(self, req: Request, work: Callable[[], None]) -> None:
        """IMMED set (``ssc_cdb.immediate``): status now, ``work`` after it; else now."""
        if immediate(req.cdb):
            self._immediate.start(req.nexus, work)
        else:
            work()

    def before_command(self, nexus: Nexus, spec: CommandSpec) -> None:
        self._streaming = False
        self._run_ahead = None
        if not spec.ua_exempt:
            failed = self._immediate.take_failure(nexus)
            if failed is not None:  # the IMMED work this nexus asked for did not succeed
                raise failed
        bay = self.bay
        # The catalog is re-read unless a cartridge is mounted and the command is on the data
        # path (a mounted cartridge is flocked by this process: nobody can swap it meanwhile).
        if spec.opcode not in _HOT or self._cart is None:
            try:
                bay.library.refresh()
            except Exception:  # a catalog hiccup must not fail INQUIRY
                log.exception("catalog refresh failed")
            self._take_injected_alerts()
        if bay.media_generation != self._gen or (
            self._cart is not None and bay.cartridge is not self._cart
        ):
            self._media_changed()
        cart = self._cart
        if cart is not None and cart.writes_pending and not cart.closed:
            # Blocks still in the buffer: a WRITE(6) may add to them; anything else waits
            # until they are on tape. A block that failed there is reported now, as a
            # deferred error (but not to INQUIRY, REPORT LUNS, REQUEST SENSE, like a UA).
            if spec.ua_exempt:
                cart.wait_writes()
            elif spec.opcode != _WRITE_6 or cart.write_failed:
                self._flush_writes(cart, nexus)

    def _take_injected_alerts(self) -> None:
        """Raise the TapeAlert flags ``vtl drive tapealert`` injected since the last look
        (vtl.faults: each injection once, cleared by the LOG SENSE that reports it)."""
        self._alerts_seen = take_injected(self.bay.library.faults, device_key(self.bay.index),
                                          self._alerts_seen, self.tapealert)

    def _injected(self, cart: TapeCartridge, op: str) -> bool:
        """Whether ``vtl cartridge inject-error`` made ``op`` fail at the position."""
        errors = self.bay.library.faults.media_errors(cart.barcode)
        if not errors or op not in errors.get((self._part, cart.position), ()):
            return False
        return op == WRITE or cart.position < cart.eod  # a READ past the data meets EOD

    def _flush_writes(self, cart: TapeCartridge, nexus: Nexus) -> None:
        """Wait until the buffered blocks are on tape; a failure among them ends the current
        command with a deferred error: sense response code 0x71, INFORMATION = blocks lost.
        Only the nexus whose writes were buffered hears of it (SPC: a deferred error goes to
        the initiator whose command caused it); another one just waits for the buffer."""
        if nexus != self._buffered_for:
            cart.wait_writes()
            return
        try:
            cart.flush_writes()
        except DeferredWriteError as exc:
            self.bytes_written -= exc.lost_bytes
            cc = self._write_error(exc.cause, exc.lost)
            cc.deferred = True
            raise cc from None

    def _media_changed(self) -> None:
        """The bay's cartridge changed (changer move, CLI load, unmount underneath us)."""
        self._gen = self.bay.media_generation
        self._cart = None
        self._loaded = True  # a newly inserted cartridge is loaded automatically
        self._part = 0
        self.encryption.medium_removed()
        self.cleaning.medium_changed()
        self.tapealert.intersection_update(CLEANING_FLAGS)  # the drive's, not the medium's
        self._reset_traffic()
        if self.bay.barcode is not None:
            self.queue_ua(UnitAttention.NOT_READY_TO_READY)

    def _medium(self) -> TapeCartridge:
        """The partition the drive is in, of the loaded cartridge (``_base_cartridge``)."""
        cart = self._cart
        if cart is not None and self._loaded and not self._part:
            return cart
        cart = self._base_cartridge()
        return cart.partition(self._part) if self._part else cart

    def _base_cartridge(self) -> TapeCartridge:
        """The loaded cartridge (partition 0), mounting it on first use; NOT READY
        otherwise."""
        cart = self._cart
        if cart is not None and self._loaded:
            return cart
        if not self._loaded:
            raise MEDIUM_NOT_PRESENT()
        bay = self.bay
        inside = bay.cartridge
        barcode = inside.barcode if inside is not None else bay.barcode
        if barcode is None:
            raise MEDIUM_NOT_PRESENT()
        if is_cleaning_label(barcode):
            self.cleaning.refuse(self._mount)  # raises: it cleans, it holds no data
        cart = self._mount()
        if not self.identity.can_read(cart.media.name) and cart.media.name in DENSITY:
            self.tapealert.add(TA_UNSUPPORTED_FORMAT)
            raise INCOMPATIBLE_MEDIUM_INSTALLED()
        cart.set_crypto(self.encryption.settings)
        self._cart = cart
        self._gen = bay.media_generation
        return cart

    def _mount(self) -> TapeCartridge:
        """The bay's cartridge, opened; NOT READY or MEDIUM ERROR when that fails."""
        from vtl.library import CartridgeBusy, LibraryError, SourceEmpty

        bay = self.bay
        try:
            return bay.mount()
        except SourceEmpty:
            raise MEDIUM_NOT_PRESENT() from None
        except CartridgeBusy as exc:
            log.info("drive %s: %s", bay.index, exc)
            raise LUN_BECOMING_READY() from None
        except (LibraryError, CartridgeError, OSError) as exc:
            log.warning("drive %s: cannot mount: %s", bay.index, exc)
            raise INCOMPATIBLE_MEDIUM_INSTALLED() from None

    def check_ready(self, req: Request) -> None:
        self._medium()

    def idle_sense(self) -> bytes:
        try:
            cart = self._medium()
        except CheckCondition as cc:
            return cc.sense()
        eom = cart.at_eod and cart.at_early_warning
        if self.cleaning.requested:
            return CLEANING_REQUESTED(eom=eom).sense()
        return NO_ADDITIONAL_SENSE(eom=eom).sense()

    def on_prevent_changed(self, prevented: bool) -> None:
        self.bay.prevent_removal = prevented

    def on_reset(self, kind: ResetKind) -> None:
        """Block size and buffered mode return to their defaults with the mode pages; the
        tape position is kept (the cartridge stays threaded)."""
        self.bay.prevent_removal = False
        self.block_size = 0
        self.buffered_mode = DEFAULT_BUFFERED_MODE

    # ------------------------------------------------------------------ mode header / bd
    def _ready_cart(self) -> TapeCartridge | None:
        """The loaded cartridge if there is one (mounting it), else None: never raises."""
        try:
            return self._base_cartridge()
        except CheckCondition:
            return None

    def mode_header_fields(self) -> tuple[int, int]:
        cart = self._ready_cart()
        medium = 0
        wp = 0
        if cart is not None:
            medium = 0x01 if cart.worm else cart.media.medium_type
            if self.identity.vendor == "IBM":
                ibm = IBM_WORM_MEDIUM_TYPE if cart.worm else IBM_MEDIUM_TYPE
                medium = ibm.get(cart.media.name, medium)
            wp = 0x80 if cart.write_protected else 0
        return medium, wp | (self.buffered_mode << 4)

    def changeable_device_specific(self) -> int:
        return 0x70

    def _density(self) -> int:
        cart = self._ready_cart()
        return cart.media.density_code if cart is not None else 0

    def block_descriptors(self, pc: int, long_lba: bool) -> bytes:
        if pc == 1:  # changeable: block length only
            return bytes([0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF])
        bs = 0 if pc == 2 else self.block_size
        density = 0 if pc == 2 else self._density()
        return bytes([density, 0, 0, 0, 0]) + bs.to_bytes(3, "big")

    def select_header(self, medium_type: int, device_specific: int, offset: int) -> bool:
        mode = (device_specific >> 4) & 0x07
        if mode > 1:
            raise invalid_field_in_parameter_list(offset + 1, 6)
        changed = mode != self.buffered_mode
        self.buffered_mode = mode
        return changed

    def select_block_descriptors(self, data: memoryview, offset: int) -> bool:
        if len(data) == 0:
            return False
        if len(data) != 8:
            raise invalid_field_in_parameter_list(offset - 1)
        density = data[0]
        allowed = {0x00, 0x7F, self._density()} | {DENSITY[m] for m in self.identity.write_media
                                                   if m in DENSITY}
        if density not in allowed:
            raise invalid_field_in_parameter_list(offset)
        bs = int.from_bytes(data[5:8], "big")
        if bs > MAX_BLOCK:
            raise invalid_field_in_parameter_list(offset + 5)
        changed = bs != self.block_size
        self.block_size = bs
        return changed

    # ------------------------------------------------------------------ VPD
    def vpd_pages(self):
        pages = super().vpd_pages()
        pages[0xB0] = lambda: bytes([0x01, 0x00])  # sequential-access capabilities: WORM
        pages[0xB1] = lambda: ascii_field(self.serial, 12)  # manufacturer-assigned serial
        return pages

    # ------------------------------------------------------------------ helpers
    def _buffer(self, n: int) -> memoryview:
        self._which ^= 1
        buf = self._bufs[self._which]
        if len(buf) < n:
            size = max(n, 256 * 1024)
            buf = self._bufs[self._which] = bytearray(size)
        return memoryview(buf)[:n]

    def _write_error(self, exc: Exception, residue: int) -> CheckCondition:
        if isinstance(exc, WriteProtected):
            self.tapealert.add(TA_WRITE_PROTECT)
            return WRITE_PROTECTED()
        if isinstance(exc, WormOverwrite):
            self.tapealert.add(TA_WORM_OVERWRITE)
            return WORM_MEDIUM_OVERWRITE_ATTEMPTED()
        if isinstance(exc, EndOfMedium):
            return VOLUME_OVERFLOW(eom=True, information=residue)
        # Disk failure: MEDIUM ERROR, never EOM (mhVTL's lesson).
        log.error("drive %s: write failed: %s", self.bay.index, exc)
        self.write_errors += 1
        self.tapealert.update((TA_HARD_ERROR, TA_WRITE_FAILURE, TA_MEDIA))  # 3 with 4 and 6
        return WRITE_ERROR(information=residue)

    def _check_write_compat(self, cart: TapeCartridge) -> None:
        if not self._can_write(cart):
            raise CANNOT_WRITE_MEDIUM_INCOMPATIBLE_FORMAT()

    def _can_write(self, cart: TapeCartridge) -> bool:
        """Does this drive write the cartridge's generation (LTO writes n and n-1)?"""
        name = cart.media.name
        return name not in DENSITY or self.identity.can_write(name)

    # ------------------------------------------------------------------ READ / WRITE
    @command(Opcode.READ_6, "READ(6)", "08 03 ff ff ff 00", pr=PR_READ, timeout=600)
    def cmd_read6(self, req: Request):
        """READ(6). Variable mode, here: one block of up to ``count`` bytes; another length
        is ILI with INFORMATION = requested - actual (negative if longer: the rest is lost),
        except a shorter block with SILI. Fixed mode: ``_read_fixed``. (The variable case
        stays inline: it is the general path's commonest command.)"""
        fixed, sili, count = decode_read_write6(req.cdb)
        if fixed and self.block_size == 0:
            raise invalid_field_in_cdb(1, 0)
        cart = self._medium()
        if count == 0:
            return None
        if fixed:
            return self._read_fixed(cart, count)
        buf = self._buffer(count)
        if self._injected(cart, READ):
            return self._read_failed(CorruptRecord("injected error", cart.position), count, b"")
        try:
            if self.protection.read:  # the block with its LBP CRC appended (ssc_protection)
                r = self.protection.read_block(cart, buf)
            else:
                r = cart.read_block(buf, own=True)
        except (CorruptRecord, OSError) as exc:
            return self._read_failed(exc, count, b"")
        if r.kind == RecordKind.DATA:
            self._streaming = True
            self.bytes_read += min(r.length, count)
            if r.length == count:
                return r.data
            if r.length < count and sili:
                return r.data
            raise NO_ADDITIONAL_SENSE(ili=True, information=count - r.length, data=r.data)
        if r.kind == RecordKind.FILEMARK:
            raise FILEMARK_DETECTED(filemark=True, information=count)
        raise END_OF_DATA_DETECTED(information=count, eom=cart.at_early_warning)

    def _read_fixed(self, cart: TapeCartridge, count: int):
        """``count`` blocks of the mode's block size; the first block of another length, a
        filemark or end of data ends the transfer there, with the blocks before it as data
        and the blocks not read as INFORMATION (SSC-4: READ(6) in fixed mode)."""
        bs = self.block_size
        if count * bs > MAX_FIXED_TRANSFER:
            raise invalid_field_in_cdb(2)
        buf = self._buffer(count * bs)
        plain = FIXED_RUNS and not self.protection.read and not self._has_injected(cart)
        if count == 1 and plain:  # one block per command: as a variable-mode READ
            return self._read_one_fixed(cart, buf)
        # The usual run of plain blocks in one go, then the one that ends it block by block
        # (the reference path, which says what it is).
        first = cart.read_blocks(buf, bs) if plain else 0
        for i in range(first, count):
            chunk = buf[i * bs : (i + 1) * bs]
            if self._injected(cart, READ):
                return self._read_failed(CorruptRecord("injected error", cart.position),
                                         count - i, buf[: i * bs])
            try:
                r = self.protection.read_block(cart, chunk) if self.protection.read else \
                    cart.read_block(chunk)
            except (CorruptRecord, OSError) as exc:
                return self._read_failed(exc, count - i, buf[: i * bs])
            if r.kind == RecordKind.DATA:
                if r.length != bs:
                    self.bytes_read += i * bs
                    raise NO_ADDITIONAL_SENSE(ili=True, information=count - i, data=buf[: i * bs])
                continue
            self.bytes_read += i * bs
            if r.kind == RecordKind.FILEMARK:
                raise FILEMARK_DETECTED(filemark=True, information=count - i,
                                        data=buf[: i * bs])
            raise END_OF_DATA_DETECTED(information=count - i, eom=cart.at_early_warning,
                                       data=buf[: i * bs])
        self.bytes_read += count * bs
        self._streaming = True
        return buf

    def _read_one_fixed(self, cart: TapeCartridge, buf: memoryview):
        """A fixed-mode READ of one block (``buf`` its size), no protection or injected
        errors: the block without a copy where the cartridge has it (``read_block(own)``),
        else the conditions of ``_read_fixed`` for a count of 1."""
        bs = len(buf)
        try:
            r = cart.read_block(buf, own=True)
        except (CorruptRecord, OSError) as exc:
            return self._read_failed(exc, 1, b"")
        if r.kind == RecordKind.DATA:
            if r.length != bs:
                raise NO_ADDITIONAL_SENSE(ili=True, information=1, data=b"")
            self.bytes_read += bs
            self._streaming = True
            return r.data
        if r.kind == RecordKind.FILEMARK:
            raise FILEMARK_DETECTED(filemark=True, information=1, data=b"")
        raise END_OF_DATA_DETECTED(information=1, eom=cart.at_early_warning, data=b"")

    def stream_read(self, nexus: Nexus, cdb: bytes | memoryview, length: int
                    ) -> bytes | memoryview | None:
        """READ(6) in the streaming case (the transport's fast path, see vtl/scsi/base.py):
        variable mode, the next object a data block of exactly the requested and expected
        ``length``, nothing pending for ``nexus``. None otherwise, with nothing changed, and
        the command goes through ``execute``: the same answer either way, but filemarks,
        ILI, errors, UAs and reservations live in one place only (``cmd_read6``).
        Fixed mode too (``streaming_fixed_count``), ``length`` the count's blocks of the
        mode's size: one block as a variable-mode READ of that size, several as one run
        (``TapeCartridge.read_run``), all of them plain or none."""
        run = 0  # fixed mode, several blocks: their size
        if streaming_read_length(cdb) != length:
            bs = self._stream_fixed(cdb, _READ_6, length)
            if not bs or (length > bs and not FIXED_RUNS):
                return None
            run = bs if length > bs else 0
        if self.protection.active:
            return None
        with self.lock:
            cart = self._stream_cart(nexus, PR_READ)
            if cart is None or length <= 0 or self._has_injected(cart):
                return None
            buf = self._buffer(length)
            if run:  # all plain blocks of the mode's size, as one run (_read_fixed's first)
                data = cart.take_run_ahead(length, run)  # the usual case: decoded while idle
                if data is None:
                    try:
                        data = buf if cart.read_run(buf, run) else None
                    except (CartridgeError, OSError):
                        data = None
                if data is None:
                    return None  # nothing moved: execute meets what ends the run, reports it
                self._run_ahead = (length // run, run)  # idle decodes the next one
            else:
                data = cart.take_read_ahead(length, buf)  # the usual case: decoded while idle
            if data is None:
                if cart.writes_pending or cart.next_data_length() != length:
                    return None
                try:
                    data = cart.read_block(buf, own=True).data
                except (CorruptRecord, OSError):
                    return None  # nothing moved: execute meets the error again, reports it
            self._streaming = True
            self.bytes_read += length
            self._plain_done(nexus)
            return data

    def _stream_fixed(self, cdb: bytes | memoryview, opcode: int, n: int) -> int:
        """The mode's block size when ``cdb`` is a plain fixed-mode ``opcode`` (READ(6) or
        WRITE(6): ``streaming_fixed_count``) of one or more blocks, ``n`` bytes in all; else
        0 (a command for the general path)."""
        count = streaming_fixed_count(cdb)
        bs = self.block_size
        if (not count or not bs or count * bs != n or cdb[0] != opcode
                or n > MAX_FIXED_TRANSFER):
            return 0
        return bs

    def stream_write(self, nexus: Nexus, cdb: bytes | memoryview, data: memoryview) -> bool:
        """WRITE(6) in the streaming case (the transport's fast path, see vtl/scsi/base.py):
        variable mode, a block that the write buffer takes (buffered mode, MIN_BUFFERED_WRITE
        bytes or more, given away by the transport: DonatedBuffer) or that is written at once
        as a plain append before early warning (``_write_now``). False otherwise, with
        nothing changed, and the command goes through ``execute`` (``cmd_write6`` handles
        every other case and every error). Fixed mode too (``streaming_fixed_count``), as
        ``_write_fixed``: one block as a variable-mode block of that size, several written
        at once as one run (``_write_run_now``)."""
        n = len(data)
        bs = 0
        if streaming_write_length(cdb) != n:
            bs = self._stream_fixed(cdb, _WRITE_6, n)
            if not bs:
                return False
        elif n > MAX_BLOCK:
            return False
        if self.protection.active:
            return False
        with self.lock:
            cart = self._stream_cart(nexus, PR_WRITE)
            if (cart is None or cart.write_failed or not self._can_write(cart)
                    or self._has_injected(cart)):
                return False
            self._writable = cart
            compress = self.compression
            try:
                if n > bs > 0:  # fixed mode, several blocks: queued or written now, one run
                    if (not self._buffer_block(cart, nexus, data, compress, bs)
                            and not self._write_run_now(cart, data, bs, compress)):
                        return False
                elif (not self._buffer_block(cart, nexus, data, compress)
                        and not self._write_now(cart, data, compress)):
                    return False
            except (CartridgeError, OSError):
                return False  # nothing stored: execute meets it again and reports it
            self._streaming = False
            self._plain_done(nexus)
            return True

    def _buffer_block(self, cart: TapeCartridge, nexus: Nexus, data: bytes | memoryview,
                      compress: bool, run: int = 0) -> bool:
        """Hand a variable-mode block to the write buffer (buffered mode, a block big enough
        to be worth a thread hand-off, no other initiator's blocks waiting, room before early
        warning, and fewer than twice as many drives streaming as CPUs: ssc_streams). False:
        nothing queued, write it now. The buffer keeps ``data`` itself when the transport
        gave it away, else a copy (it is the transport's once we return). Raises what
        ``queue_block`` raises (write protect, WORM). ``run``: a fixed-mode WRITE's blocks
        of that size, queued as one lazy run (``TapeCartridge.queue_run``, FIXED_RUNS and
        MIN_BUFFERED_RUN bytes or more), which ``idle`` stores right after the answer."""
        if (not self.buffered_mode or self._part
                or len(data) < (MIN_BUFFERED_RUN if run else MIN_BUFFERED_WRITE)
                or (run and not FIXED_RUNS)
                or (nexus != self._buffered_for and cart.writes_pending)
                or self._has_injected(cart)  # written now, at a position that is known
                or self._near_pew(cart, len(data))
                # streams enough for every CPU: no hand-off (a run is stored by this thread)
                or (not run and WRITE_STREAMS.wrote(id(self)))):
            return False
        if not donated(data):
            if not (cart.queue_run(bytes(data), run, compress=compress) if run
                    else cart.queue_block(bytes(data), compress=compress)):
                return False
        elif not (cart.queue_run(data, run, compress=compress, done=SPARE_BUFFERS.give_back
                                 if len(data) >= MIN_BUFFERED_WRITE else None)
                  if run else cart.queue_block(data, compress=compress,
                                               done=SPARE_BUFFERS.give_back)):
            return False  # (a donated buffer is kept as it is, a big one given back once
            # stored: a small one costs less to allocate afresh than to pool, _write_now)
        self._buffered_for = nexus
        self.bytes_written += len(data)
        return True

    def _has_injected(self, cart: TapeCartridge) -> bool:
        """Whether the cartridge has injected media errors (the general path handles it)."""
        return bool(self.bay.library.faults.media_errors(cart.barcode))

    def _write_now(self, cart: TapeCartridge, data: memoryview, compress: bool) -> bool:
        """A block the write buffer did not take (smaller than MIN_BUFFERED_WRITE, say),
        written at once when it is a plain append whose answer can only be GOOD
        (``TapeCartridge.append_now``; nowhere near the PEW zone, whose crossing the general
        path reports): what ``cmd_write6`` would do, without its general path. A big
        block's donated buffer goes back to the transport's spares once stored (a small
        one costs less to allocate afresh than to pool). False: nothing written. Raises
        what ``append_now`` raises."""
        if self._near_pew(cart, len(data)) or not cart.append_now(data, compress=compress):
            return False
        n = len(data)
        self.bytes_written += n
        if n >= MIN_BUFFERED_WRITE and donated(data):  # stored, nothing keeps it: the
            SPARE_BUFFERS.give_back(data)  # transport's next WRITE of a big block reuses it
        return True

    def _write_run_now(self, cart: TapeCartridge, data: memoryview, bs: int,
                       compress: bool) -> bool:
        """A fixed-mode WRITE's blocks written at once as one run when they are a plain
        append (what ``_write_fixed`` would do, GOOD: ``TapeCartridge.append_run_now``).
        False: nothing written."""
        n = len(data)
        if (not FIXED_RUNS or self._near_pew(cart, n)
                or not cart.append_run_now(data, bs, compress=compress)):
            return False
        self.bytes_written += n
        return True

    def _stream_cart(self, nexus: Nexus, pr_class: int) -> TapeCartridge | None:
        """The mounted cartridge when a streaming fast path may use it: loaded, the same as
        at the last command, and the general path would have nothing to say to ``nexus``
        first (UA, reservation, IMMED work running or failed). None: take the general path.
        Call under ``self.lock``."""
        cart = self._cart
        bay = self.bay
        if (cart is None or not self._loaded or bay.cartridge is not cart or self._part
                or bay.media_generation != self._gen or not self._plain_nexus(nexus, pr_class)
                or self._immediate.busy_for(nexus)):
            return None
        return cart

    def idle(self) -> None:
        """Between commands (the transport calls this under the lock after sending a
        response): after a READ, decode the next block ahead like a drive's read buffer, so a
        one-READ-at-a-time initiator (Linux st) finds it ready; after a streaming fixed-mode
        READ of several blocks, the next run of as many (``TapeCartridge.run_ahead``). First,
        a fixed-mode WRITE's run queued lazily is stored (``TapeCartridge.store_queued``).
        Never raises."""
        cart = self._cart
        if cart is not None:
            try:  # a fixed-mode WRITE's run queued lazily (TapeCartridge.queue_run)
                cart.store_queued()
            except Exception:  # pragma: no cover - a disk error is kept for the next flush
                log.exception("drive %s: storing the queued blocks failed", self.bay.index)
        if not self._streaming:
            return
        self._streaming = False
        run, self._run_ahead = self._run_ahead, None
        cart = self._cart
        if (cart is None or not self._loaded or cart.closed or self.bay.cartridge is not cart
                or self._part):
            return
        try:
            if run is not None:
                cart.run_ahead(*run)
            else:
                read_ahead(cart)
        except Exception:  # speculative work: the real READ reports errors
            log.debug("drive %s: read-ahead failed", self.bay.index, exc_info=True)

    @command(Opcode.VERIFY_6, "VERIFY(6)", "13 01 ff ff ff 00", pr=PR_READ, timeout=600)
    def cmd_verify6(self, req: Request) -> None:
        """Read and check (checksums, decompression) without transferring data; the same
        conditions and residues as READ(6). Byte compare (BYTCMP) is not supported."""
        read = Request(req.nexus, verify_as_read6(req.cdb), b"", req.spec)
        try:
            self.cmd_read6(read)
        except CheckCondition as cc:
            cc.data = b""
            raise
        return None

    def _read_failed(self, exc: CorruptRecord | OSError, residue: int, data) -> None:
        """A damaged record or a failed disk read: MEDIUM ERROR 11/00, never a crash; a
        block the encryption key settings refuse: DATA PROTECT 74/xx (ssc_encryption)."""
        cart = self._cart
        if isinstance(exc, CorruptRecord) and cart is not None and cart.position == exc.position:
            cart.position = exc.position + 1  # step past the bad block, as a drive would
        if isinstance(exc, UndecryptableBlock):
            raise decrypt_refusal(exc)(information=residue, data=data)
        log.error("drive %s: read failed: %s", self.bay.index, exc)
        self.read_errors += 1
        self.tapealert.update((TA_HARD_ERROR, TA_READ_FAILURE, TA_MEDIA))  # 3 with 4 and 5
        raise UNRECOVERED_READ_ERROR(information=residue, data=data)

    @command(Opcode.WRITE_6, "WRITE(6)", "0a 01 ff ff ff 00", pr=PR_WRITE, timeout=600,
             data_out=_write6_length)
    def cmd_write6(self, req: Request) -> None:
        """WRITE(6). Variable mode, here: one block of ``count`` bytes, into the write
        buffer when buffered mode lets it (``_buffer_block``), else written now behind
        whatever is buffered; past early warning the block is written and the answer is NO
        SENSE, EOM, INFORMATION 0. Fixed mode: ``_write_fixed``."""
        fixed, _, count = decode_read_write6(req.cdb)
        if fixed and self.block_size == 0:
            raise invalid_field_in_cdb(1, 0)
        cart = self._medium()
        if count == 0:
            return None
        self._check_write_compat(cart)
        compress = self.compression
        if fixed:
            return self._write_fixed(cart, req, count, compress)
        if count > MAX_BLOCK:
            raise invalid_field_in_cdb(2)
        data = req.data_out
        if len(data) < count:
            raise PARAMETER_LIST_LENGTH_ERROR()
        if len(data) > count:
            data = memoryview(data)[:count]
        if self.protection.write:  # check and drop the block's LBP CRC (ssc_protection)
            data = self.protection.strip(memoryview(data))
            count = len(data)
        try:
            if self._buffer_block(cart, req.nexus, data, compress):
                return None
        except (CartridgeError, OSError) as exc:
            raise self._write_error(exc, count) from None
        self._flush_writes(cart, req.nexus)  # not buffered: what is buffered goes first
        if self._injected(cart, WRITE):
            raise self._write_error(OSError(errno.EIO, "injected error"), count)
        before = cart.used_bytes
        try:
            res = cart.write_block(data, compress=compress)
        except (CartridgeError, OSError) as exc:
            raise self._write_error(exc, count) from None
        self.bytes_written += count
        if res.early_warning:
            raise END_OF_PARTITION_MEDIUM_DETECTED(eom=True, information=0)
        self._report_pew(cart, before)
        return None

    def _write_fixed(self, cart: TapeCartridge, req: Request, count: int,
                     compress: bool) -> None:
        """``count`` blocks of the mode's block size; a failure reports the blocks not
        written as INFORMATION. One block goes into the write buffer as a variable-mode
        block would, several as one run (``_buffer_block``: buffered mode, big enough; a
        deferred error counts blocks either way); else they are written now."""
        bs = self.block_size
        total = count * bs
        if total > MAX_FIXED_TRANSFER:
            raise invalid_field_in_cdb(2)
        data = memoryview(req.data_out)
        if len(data) < total:
            raise PARAMETER_LIST_LENGTH_ERROR()
        blocks = None
        if self.protection.write:  # every block's LBP CRC checks before any is written
            blocks = [self.protection.strip(data[i * bs : (i + 1) * bs]) for i in range(count)]
        else:  # into the write buffer: one block as a variable-mode block, several as a run
            try:
                if self._buffer_block(cart, req.nexus,
                                      data if len(data) == total else data[:total], compress,
                                      bs if count > 1 else 0):
                    return None
            except (CartridgeError, OSError) as exc:
                raise self._write_error(exc, count) from None
        self._flush_writes(cart, req.nexus)
        before = cart.used_bytes
        early = False
        first = 0
        if FIXED_RUNS and blocks is None and not self._has_injected(cart):
            # All blocks in one go (as many as fit: the one that does not, and those after
            # it, then take the block-by-block path, which says so).
            try:
                first = cart.write_blocks(data[:total], bs, compress=compress)
            except (CartridgeError, OSError) as exc:
                raise self._write_error(exc, count) from None
            early = cart.at_early_warning
        for i in range(first, count):
            try:
                if self._injected(cart, WRITE):
                    raise OSError(errno.EIO, "injected error")
                res = cart.write_block(data[i * bs : (i + 1) * bs] if blocks is None
                                       else blocks[i], compress=compress)
            except (CartridgeError, OSError) as exc:
                self.bytes_written += i * bs
                raise self._write_error(exc, count - i) from None
            early = res.early_warning
        self.bytes_written += total
        if early:
            raise END_OF_PARTITION_MEDIUM_DETECTED(eom=True, information=0)
        self._report_pew(cart, before)

    @command(Opcode.WRITE_FILEMARKS_6, "WRITE FILEMARKS(6)", "10 01 ff ff ff 00", pr=PR_WRITE,
             timeout=600)
    def cmd_write_filemarks(self, req: Request) -> None:
        immed, count = decode_write_filemarks(req.cdb)
        # SSC: IMMED means "do not wait for the medium" only in buffered mode; unbuffered,
        # the filemarks (and what came before) are durable before GOOD, IMMED or not.
        immed = immed and bool(self.buffered_mode)
        cart = self._medium()
        if count:
            self._check_write_compat(cart)
        start, before = cart.position, cart.used_bytes
        try:
            res = cart.write_filemarks(count, sync=not immed)
        except (CartridgeError, OSError) as exc:
            # residue: the filemarks not written (some may fit before the end of medium)
            done = max(0, cart.position - start) if isinstance(exc, EndOfMedium) else 0
            raise self._write_error(exc, count - done) from None
        if count and res.early_warning:
            raise END_OF_PARTITION_MEDIUM_DETECTED(eom=True, information=0)
        self._report_pew(cart, before)

    # ------------------------------------------------------------------ programmable EW
    def _pew_point(self, cart: TapeCartridge) -> int | None:
        """Where the programmable early warning zone of ``cart`` (the partition written)
        starts, in bytes used: PEWS megabytes (page 0x10/0x01, as LTFS sets it) before early
        warning. None while PEWS is 0 (SSC-4 4.2.5)."""
        pews = int.from_bytes(self.devconf_ext.current[2:4], "big")
        return max(0, cart.ew_point - pews * 1_000_000) if pews else None

    def _report_pew(self, cart: TapeCartridge, before: int) -> None:
        """A write that took the medium from before the PEW into its zone succeeded, and
        says so once: NO SENSE 00/07 PROGRAMMABLE EARLY WARNING DETECTED, INFORMATION 0."""
        pew = self._pew_point(cart)
        if pew is not None and before < pew <= cart.used_bytes:
            raise PROGRAMMABLE_EARLY_WARNING_DETECTED(information=0)

    def _near_pew(self, cart: TapeCartridge, n: int) -> bool:
        """Whether ``n`` more bytes may reach the PEW zone, counting what the write buffer
        may still hold: such blocks are written now, so the crossing is seen and told."""
        pew = self._pew_point(cart)
        return pew is not None and cart.used_bytes + 2 * WRITE_BEHIND_BYTES + n >= pew

    # ------------------------------------------------------------------ positioning
    def _space(self, code: int, count: int) -> None:
        cart = self._medium()
        if code == SPACE_END_OF_DATA:
            cart.space_to_eod()
            return
        if code not in (SPACE_BLOCKS, SPACE_FILEMARKS):
            raise invalid_field_in_cdb(1, 3)
        if count == 0:
            return
        r = cart.space_blocks(count) if code == SPACE_BLOCKS else cart.space_filemarks(count)
        if r.stopped is None:
            return
        # SSC: early termination never yields a negative INFORMATION value, whatever the
        # direction: the residue is the number of objects not spaced over.
        residue = abs(count) - r.moved
        if r.stopped == RecordKind.FILEMARK:
            raise FILEMARK_DETECTED(filemark=True, information=residue)
        if r.stopped == RecordKind.EOD:
            raise END_OF_DATA_DETECTED(information=residue, eom=cart.at_early_warning)
        raise BEGINNING_OF_MEDIUM_DETECTED(eom=True, information=residue)  # BOP

    @command(Opcode.SPACE_6, "SPACE(6)", "11 0f ff ff ff 00", pr=PR_READ, timeout=3600)
    def cmd_space6(self, req: Request) -> None:
        self._space(*decode_space6(req.cdb))

    @command(Opcode.SPACE_16, "SPACE(16)", "91 0f 00 00 ff ff ff ff ff ff ff ff ff ff 00 00",
             pr=PR_READ, timeout=3600)
    def cmd_space16(self, req: Request) -> None:
        self._space(*decode_space16(req.cdb))

    def _locate(self, obj: int) -> None:
        cart = self._medium()
        try:
            cart.locate(obj)
        except CartridgeError:
            raise END_OF_DATA_DETECTED() from None

    @command(Opcode.LOCATE_10, "LOCATE(10)", "2b 07 00 ff ff ff ff 00 ff 00", pr=PR_READ,
             timeout=3600)
    def cmd_locate10(self, req: Request) -> None:
        ident, partition = decode_locate10(req.cdb)
        self._change_partition(partition, 8)
        self._locate(ident)

    def _change_partition(self, partition: int | None, byte: int) -> None:
        """LOCATE with CP: move to ``partition`` (its BOP until the locate moves on)."""
        if partition is None or partition == self._part:
            return
        base = self._base_cartridge()
        if partition >= base.partition_count:
            raise invalid_field_in_cdb(byte)
        self._medium().wait_writes()
        self._part = partition

    @command(Opcode.LOCATE_16, "LOCATE(16)", "92 3b 01 ff ff ff ff ff ff ff ff ff 00 00 00 00",
             pr=PR_READ, timeout=3600)
    def cmd_locate16(self, req: Request) -> None:
        dest, ident, partition = decode_locate16(req.cdb)
        if dest not in (DEST_LOGICAL_OBJECT, DEST_FILEMARK, DEST_END_OF_DATA):
            raise invalid_field_in_cdb(1, 5)
        self._change_partition(partition, 3)
        if dest == DEST_LOGICAL_OBJECT:
            self._locate(ident)
        elif dest == DEST_FILEMARK:
            cart = self._medium()
            start = cart.file_start(ident)
            if start is None:
                cart.space_to_eod()
                raise END_OF_DATA_DETECTED()
            cart.locate(start)
        elif dest == DEST_END_OF_DATA:
            self._medium().space_to_eod()
        else:
            raise invalid_field_in_cdb(1, 5)

    @service_actions(Opcode.READ_POSITION, "READ POSITION", "34 00 00 00 00 00 00 ff ff 00",
                     (POSITION_SHORT, POSITION_SHORT_VENDOR, POSITION_LONG, POSITION_EXTENDED),
                     pr=PR_READ)
    def cmd_read_position(self, req: Request) -> bytes:
        form, alloc = decode_read_position(req.cdb)
        cart = self._medium()
        pos = cart.position
        bop = 0x80 if pos == 0 else 0
        eop = 0x40 if (cart.at_eod and cart.at_early_warning) else 0
        if form in (POSITION_SHORT, POSITION_SHORT_VENDOR):
            d = bytearray(20)
            d[0] = bop | eop
            d[1] = self._part
            if pos > 0xFFFFFFFF:
                d[0] |= 0x20 | 0x04 | 0x02  # LOCU, LOLU, PERR: does not fit the short form
            else:
                d[4:8] = pos.to_bytes(4, "big")
                d[8:12] = pos.to_bytes(4, "big")
            return bytes(d)
        if form == POSITION_LONG:
            d = bytearray(32)
            d[0] = bop | eop
            d[4:8] = self._part.to_bytes(4, "big")
            d[8:16] = pos.to_bytes(8, "big")
            d[16:24] = cart.filemarks_before(pos).to_bytes(8, "big")
            return trunc(bytes(d), alloc) if alloc else bytes(d)
        d = bytearray(32)
        d[0] = bop | eop
        d[1] = self._part
        d[2:4] = (0x1C).to_bytes(2, "big")
        d[8:16] = pos.to_bytes(8, "big")
        d[16:24] = pos.to_bytes(8, "big")
        return trunc(bytes(d), alloc) if alloc else bytes(d)

    @command(Opcode.REWIND, "REWIND", "01 01 00 00 00 00", pr=PR_READ, timeout=600)
    def cmd_rewind(self, req: Request) -> None:
        cart = self._medium()
        base = self._base_cartridge()

        def rewind() -> None:  # to BOP of partition 0 (SSC-4), from any partition
            try:
                cart.rewind()
                base.rewind()
                self._part = 0
            except OSError as exc:
                raise self._write_error(exc, 0) from None

        self._run_immediate(req, rewind)

    @command(Opcode.LOAD_UNLOAD, "LOAD UNLOAD", "1b 01 00 00 0f 00", pr=PR_READ, timeout=600)
    def cmd_load_unload(self, req: Request) -> None:
        if decode_load_unload(req.cdb).load:
            if self.bay.cartridge is None and self.bay.barcode is None:
                raise MEDIUM_NOT_PRESENT()
            self._run_immediate(req, self._load)
            return
        if self.bay.cartridge is None and self.bay.barcode is None:
            raise MEDIUM_NOT_PRESENT()
        if self.prevent_removal:
            self.tapealert.add(TA_NO_REMOVAL)
            raise MEDIUM_REMOVAL_PREVENTED()
        self._run_immediate(req, self._unload)

    def _load(self) -> None:
        was_loaded = self._loaded
        self._loaded = True
        self._part = 0
        cart = self._medium()
        cart.rewind()
        if not was_loaded:
            # not ready -> ready: every nexus (the loader too) learns the medium may have
            # changed, which is how Linux st knows it is at BOT after `mt load`
            self.queue_ua(UnitAttention.NOT_READY_TO_READY)

    def _unload(self) -> None:
        if self._loaded and self._cart is not None:
            try:
                self._cart.rewind()
                self.bay.unmount()
            except (CartridgeError, OSError) as exc:
                raise self._write_error(exc, 0) from None
        elif self.bay.cartridge is not None:  # a cleaning cartridge (ssc_cleaning)
            try:
                self.bay.unmount()
            except (CartridgeError, OSError) as exc:  # it holds no data: nothing is lost
                log.warning("drive %s: unloading the cleaning cartridge: %s", self.bay.index,
                            exc)
        self._cart = None
        self._loaded = False
        self._gen = self.bay.media_generation
        self._part = 0
        self.encryption.medium_removed()
        self.cleaning.medium_changed()

    @command(Opcode.ERASE, "ERASE", "19 03 00 00 00 00", pr=PR_WRITE, timeout=3600)
    def cmd_erase(self, req: Request) -> None:
        cart = self._medium()
        self._check_write_compat(cart)
        try:
            cart.check_writable()  # write protect and WORM are told now, IMMED or not
        except CartridgeError as exc:
            raise self._write_error(exc, 0) from None

        def erase() -> None:
            try:
                cart.erase()
            except (CartridgeError, OSError) as exc:
                raise self._write_error(exc, 0) from None

        self._run_immediate(req, erase)

    # ------------------------------------------------------------------ limits / density
    @command(Opcode.READ_BLOCK_LIMITS, "READ BLOCK LIMITS", "05 01 00 00 00 00", pr=PR_READ)
    def cmd_read_block_limits(self, req: Request) -> bytes:
        if req.cdb[1] & 0x01:  # MLOI: maximum logical object identifier
            d = bytearray(20)
            d[3] = 0x10
            d[12:20] = (0xFFFFFFFF).to_bytes(8, "big")
            return bytes(d)
        return bytes([0x00]) + MAX_BLOCK.to_bytes(3, "big") + (1).to_bytes(2, "big")

    def _density_descriptor(self, media: str, *, writable: bool, default: bool) -> bytes:
        code = DENSITY[media]
        d = bytearray(52)
        d[0] = d[1] = code
        d[2] = (0x80 if writable else 0) | (0x20 if default else 0) | 0x01  # WRTOK DEFLT DLV
        d[3:5] = (49).to_bytes(2, "big")
        d[5:8] = BITS_PER_MM[media].to_bytes(3, "big")
        d[8:10] = MEDIA_WIDTH_MM_X10.to_bytes(2, "big")
        d[10:12] = TRACKS[media].to_bytes(2, "big")
        d[12:16] = NATIVE_CAPACITY_MB[media].to_bytes(4, "big")
        d[16:24] = ascii_field("LTO-CVE", 8)
        d[24:32] = ascii_field(media.replace("-", ""), 8)
        d[32:52] = ascii_field(f"Ultrium {media[4:]}/16T", 20)
        return bytes(d)

    @command(Opcode.REPORT_DENSITY_SUPPORT, "REPORT DENSITY SUPPORT",
             "44 03 00 00 00 00 00 ff ff 00", pr=PR_READ)
    def cmd_report_density(self, req: Request) -> bytes:
        media_only = bool(req.cdb[1] & 0x01)
        if req.cdb[1] & 0x02:  # MEDIUM TYPE: report medium types instead of densities
            raise invalid_field_in_cdb(1, 1)
        ident = self.identity
        if media_only:
            cart = self._medium()
            names = [cart.media.name] if cart.media.name in DENSITY else []
        else:
            names = [m for m in ident.read_media if m in DENSITY]
        descs = b"".join(
            self._density_descriptor(m, writable=ident.can_write(m),
                                     default=(m == ident.native_media))
            for m in names
        )
        out = (len(descs) + 2).to_bytes(2, "big") + bytes(2) + descs
        return trunc(out, req.u16(7))

    # ------------------------------------------------------------------ MAM attributes
    def _attribute_partition(self, req: Request) -> TapeCartridge:
        """The partition whose attributes READ/WRITE ATTRIBUTE address (volume 0 only)."""
        base = self._base_cartridge()
        if req.cdb[5] != 0:
            raise invalid_field_in_cdb(5)
        if req.cdb[7] >= base.partition_count:
            raise invalid_field_in_cdb(7)
        return base.partition(req.cdb[7])

    @service_actions(Opcode.READ_ATTRIBUTE, "READ ATTRIBUTE",
                     "8c 00 00 00 00 ff 00 ff ff ff ff ff ff ff 01 00",
                     (attributes.ATTRIBUTE_VALUES, attributes.ATTRIBUTE_LIST,
                      attributes.VOLUME_LIST, attributes.PARTITION_LIST,
                      attributes.SUPPORTED_ATTRIBUTES))
    def cmd_read_attribute(self, req: Request) -> bytes:
        sa = req.cdb[1] & 0x1F
        if sa not in (attributes.VOLUME_LIST, attributes.PARTITION_LIST):
            cart = self._attribute_partition(req)
        else:
            cart = self._base_cartridge()
        data = attributes.read_attribute(cart, self.tapealert, sa, req.u16(8))
        return trunc(data, req.u32(10))

    @command(Opcode.WRITE_ATTRIBUTE, "WRITE ATTRIBUTE",
             "8d 01 00 00 00 ff 00 ff 00 00 ff ff ff ff 00 00",
             pr=PR_WRITE, data_out=parameter_list_length(10, 4))
    def cmd_write_attribute(self, req: Request) -> None:
        plen = req.u32(10)
        cart = self._attribute_partition(req)
        if plen == 0:
            return
        staged = attributes.parse_write_attribute(req.param_list(plen), plen)
        try:
            attributes.apply_attributes(cart, staged)
        except MamError as exc:
            log.warning("drive %s: %s", self.bay.index, exc)
            raise invalid_field_in_parameter_list(4) from None
        except OSError as exc:
            log.error("drive %s: MAM write failed: %s", self.bay.index, exc)
            raise WRITE_ERROR() from None


# TapeDrive.stream_read's usual case (the block decoded ahead, every check plain) answered in
# C, with no Python frame, when the extension is built: vtl/_fastpath.c "The drive's streaming
# READ(6)". Every other case calls the method above; tests/iscsi/test_stream_read_native.py
# holds the two to the same answers.
if _native is not None and hasattr(_native, "configure_drive_read"):
    _native.configure_drive_read(TapeDrive.stream_read)

# TapeDrive.stream_write and TapeCartridge.append_now, their usual case (a variable-mode block
# written at once as a plain append) in C when the extension is built: vtl/_fastpath_write.c;
# tests/scsi/test_stream_write_native.py holds the two to the same cartridge bytes and answers.
if _wnative is not None:
    _wnative.configure_write(
        TapeCartridge.append_now, TapeDrive.stream_write, PlainMedium, crc32c.crc32c,
        crc32c._crc32c.__file__, crc32c.hardware_based, CartridgeError, globals(),
        {"DATA_START": DATA_START, "MIN_COMPRESS": block_packing.MIN_COMPRESS,
         "MISSES_BEFORE_SKIP": block_packing.MISSES_BEFORE_SKIP,
         "SKIP_BLOCKS": block_packing.SKIP_BLOCKS, "WRITEBACK_CHUNK": WRITEBACK_CHUNK,
         "HEADER_FLAG_WRITE_PROTECT": HEADER_FLAG_WRITE_PROTECT, "MAX_BLOCK": MAX_BLOCK,
         "MIN_BUFFERED_WRITE": MIN_BUFFERED_WRITE, "MAX_FIXED_TRANSFER": MAX_FIXED_TRANSFER,
         "RECORD_MAGIC": RECORD_MAGIC,
         "DonatedBuffer": DonatedBuffer})


class _MediumConfigurationPage(ModePage):
    """Mode page 0x1D: WORMM set while a WORM cartridge is loaded; label and filemark
    restrictions as LTO drives report them (no overwrite of labels; filemarks only at EOD)."""

    def __init__(self, drive: TapeDrive) -> None:
        super().__init__(0x1D, bytes([0, 0, 0x01, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                         name="medium configuration")
        self.drive = drive

    def refresh(self) -> None:
        cart = self.drive._cart
        self.current[0] = 0x01 if cart is not None and cart.worm else 0x00
