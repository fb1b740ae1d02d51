"""A virtual cartridge: one file of construct-defined records, plus its index and MAM sidecars.

The tape is a sequence of *logical objects* numbered from 0 at BOP: data blocks and filemarks,
exactly as SSC counts them for READ POSITION / LOCATE. ``eod`` is the number of objects; the
position ``eod`` is end of data. Writing (a block or filemarks) at position p < eod first
discards every object from p on, as overwriting a real tape does.

``TapeCartridge`` owns the tape's state and the order of file operations (what is appended,
cut, synced); the parts with a job of their own live beside it: the record layout and its
pack/unpack in ``records.py``, compressing, sealing and checksumming a block in
``block_packing.py``, object positions in ``index.py``, the read-ahead cache in
``read_ahead.py``, the buffered-mode write buffer in ``write_behind.py`` and the pacing of
write-back to the disk in ``writeback_pacing.py``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import crc32c
import zstandard

from tape_formats.block_crypto import (
    ENVELOPE_OVERHEAD,
    CryptoSettings,
    DataKey,
    DecryptError,
    DecryptMode,
    Envelope,
    check_plain,
    envelope,
    unseal,
)
from tape_formats.block_packing import BlockPacker, Packed
from tape_formats.block_runs import pack_run, unpack_run
from tape_formats.durable import fsync_dir
from tape_formats.index import PositionIndex, meta_native_bytes, meta_objects
from tape_formats.mam import MamStore
from tape_formats.media import MEDIA, MediaType, media_by_density
from tape_formats.read_ahead import SPAN_BYTES, SPAN_RECORD_MAX, ReadAhead
from tape_formats.records import (
    CARTRIDGE_HEADER_BODY,
    DATA_START,
    FLAG_COMPRESSED,
    FLAG_ENCRYPTED,
    FORMAT_VERSION,
    FORMAT_VERSION_FEATURES,
    HEADER_FLAG_WORM,
    HEADER_FLAG_WRITE_PROTECT,
    HEADER_SIZE,
    KNOWN_INCOMPAT,
    READABLE_VERSIONS,
    RECORD_HEADER_SIZE,
    RUN_COUNT_SHIFT,
    RUN_MAX_COUNT,
    RUN_SIZE_MASK,
    IncompatFeature,
    RecordHeader,
    RecordKind,
    pack_record_header,
    run_native,
)
from tape_formats.store.medium import MediumFile, PlainMedium, open_medium, recipe_path
from tape_formats.write_behind import WriteBehind
from tape_formats.writeback_pacing import WritebackPacer

_DATA = int(RecordKind.DATA)  # the kind byte compared on the per-block path
_DATA_RUN = int(RecordKind.DATA_RUN)

# Multi-block data records (RecordKind.DATA_RUN): a fixed-mode WRITE's blocks stored as
# records of up to RUN_MAX_BYTES of blocks each (one header, one zstd frame, one CRC, one
# index entry) instead of one record per block: on by default (bench/README.md, mblk: fixed
# 512-byte text writes 2.2-12x tgt instead of 1.4-1.8x). Off: one record per block, as every
# build before wrote (the reference of the equivalence tests). VTL_DATA_RUNS=0/1 overrides.
DATA_RUNS = True
if os.environ.get("VTL_DATA_RUNS", "") != "":
    DATA_RUNS = os.environ["VTL_DATA_RUNS"] != "0"
# A run record's blocks at most (native bytes): a READ of one block decodes at most this.
RUN_MAX_BYTES = 128 * 1024


# Fewer blocks than this in a full run record: blocks big enough that a record each costs
# little (32 KiB and up at 128 KiB a run), so they stay one record each.
RUN_MIN_BLOCKS = 4


def run_blocks(size: int) -> int:
    """Blocks of ``size`` bytes one DATA_RUN record holds at most (0: no runs of them)."""
    n = min(RUN_MAX_COUNT, RUN_MAX_BYTES // size) if size > 0 else 0
    return n if n >= RUN_MIN_BLOCKS else 0


class CartridgeError(Exception):
    """Base of every cartridge failure; message is one line fit for an admin."""


class WriteProtected(CartridgeError):
    """The cartridge is write protected (DATA PROTECT 27/00)."""


class WormOverwrite(CartridgeError):
    """A WORM cartridge refuses to overwrite anything before EOD (DATA PROTECT 30/0C)."""


class EndOfMedium(CartridgeError):
    """No room for the object at all (VOLUME OVERFLOW 00/02, EOM bit)."""


class EndOfData(CartridgeError):
    """LOCATE past end of data: the tape is left at EOD (BLANK CHECK 00/05)."""


class CartridgeInUse(CartridgeError):
    """Another process has the cartridge open for writing (a flock is held)."""


class NotACartridge(CartridgeError):
    """The file is not a cartridge of this format (bad magic, version or header CRC)."""


class CorruptRecord(CartridgeError):
    """A record's checksum or framing is wrong (MEDIUM ERROR 11/00); carries ``position``."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


class UndecryptableBlock(CorruptRecord):
    """A whole block the drive's encryption settings do not let it read (no key, another
    key, a failed tag, a plain block while decrypting only): DATA PROTECT 74/xx, not a
    medium error. ``reason`` is a ``DecryptError`` reason, ``kad`` the block's KAD."""

    def __init__(self, message: str, position: int, reason: str, kad: bytes) -> None:
        super().__init__(message, position)
        self.reason = reason
        self.kad = kad


@dataclass(slots=True)
class ReadResult:
    kind: RecordKind
    length: int  # native (uncompressed) length of the block; 0 for filemark/EOD
    # The block bytes, or a memoryview into the buffer passed to read_block.
    data: memoryview | bytes = b""


@dataclass(slots=True)
class SpaceResult:
    """How far a SPACE went. ``moved`` counts objects of the kind asked for.

    ``stopped`` is None when the full count was spaced, else RecordKind.FILEMARK (a filemark
    was crossed when spacing blocks: position is past it forward, before it backward),
    RecordKind.EOD, or the string "BOP" when beginning of partition was hit backward.
    """

    moved: int
    stopped: RecordKind | str | None = None


@dataclass(slots=True)
class WriteResult:
    early_warning: bool  # position is past the early-warning point (report EOM, 00/02, GOOD data)


# Early warning sits this far before the end of the medium, like the physical EW marker:
# 2% of capacity, at least 1 MiB (or a quarter of a tiny test cartridge).
def early_warning_margin(capacity: int) -> int:
    return max(capacity // 50, min(capacity // 4, 1 << 20))


# The write-behind buffer (queue_block) holds at most this many worst-case medium bytes: a
# few blocks in flight are enough to keep the compressor busy, and memory stays flat.
WRITE_BEHIND_BYTES = 4 << 20
# Threads compressing buffered blocks (the second one only helps when blocks pile up).
WRITE_BEHIND_PACKERS = 2
# ... when blocks are not compressed here (a dedup medium compresses per chunk) nor sealed:
# packing is then a CRC32C (~0.06 CPU s per GB), less than a second thread's hand-offs cost
# (a dedup first full, bench_dedup's tar: ~1,200 of its ~5,000 voluntary context switches
# were the helper's, bench/README.md).
WRITE_BEHIND_PACKERS_UNCOMPRESSED = 1

log = logging.getLogger("tape_formats.cartridge")


@dataclass(slots=True)
class _Counters:
    """Bytes moved since load, for MAM totals and LOG SENSE page 0x0C."""

    written_native: int = 0
    written_stored: int = 0
    read_native: int = 0
    read_stored: int = 0


def _build_header(fields: dict) -> bytes:
    body = CARTRIDGE_HEADER_BODY.build(fields)
    block = body.ljust(HEADER_SIZE - 4, b"\0")
    return block + crc32c.crc32c(block).to_bytes(4, "little")


def _parse_header(raw: bytes, path: Path):
    if len(raw) < HEADER_SIZE:
        raise NotACartridge(f"{path}: too short to be a cartridge")
    if crc32c.crc32c(raw[: HEADER_SIZE - 4]) != int.from_bytes(raw[HEADER_SIZE - 4 :], "little"):
        raise NotACartridge(f"{path}: cartridge header checksum mismatch")
    try:
        hdr = CARTRIDGE_HEADER_BODY.parse(raw)
    except Exception as exc:
        raise NotACartridge(f"{path}: not a cartridge file ({exc.__class__.__name__})") from None
    if hdr.version not in READABLE_VERSIONS:
        raise NotACartridge(f"{path}: cartridge format version {hdr.version} is not supported")
    incompat = hdr.incompat if hdr.version == FORMAT_VERSION_FEATURES else 0
    unknown = incompat & ~KNOWN_INCOMPAT
    if unknown:
        raise NotACartridge(f"{path}: written with format features this vtl does not know "
                            f"(0x{unknown:x}): open it with a newer vtl")
    hdr.incompat = incompat
    if not incompat & IncompatFeature.PARTITIONS:
        hdr.extra_partitions = 0
    return hdr


@dataclass(slots=True)
class VerifyReport:
    """What a full walk of a cartridge file found."""

    path: Path
    objects: int = 0
    blocks: int = 0
    filemarks: int = 0
    native_bytes: int = 0
    stored_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    torn_tail_bytes: int = 0  # bytes after the last whole record (a crash's leftovers)

    @property
    def ok(self) -> bool:
        return not self.errors


class TapeCartridge:
    """An open cartridge. One drive owns it at a time: ``open`` takes an exclusive flock
    (shared for read-only opens), so two processes never write one cartridge.

    Thread use: one thread at a time (the drive's), plus the write-behind thread while
    blocks queued with ``queue_block`` are being stored: every other operation first waits
    for those (``wait_writes``). ``_lock`` guards the counters read by LOG SENSE from another
    thread.
    """

    def __init__(self, path: Path, fd: int, hdr, readonly: bool,
                 medium: MediumFile | None = None) -> None:
        self.path = path
        self._fd = fd
        # Where the bytes live (tape_formats/store): the file itself, or a dedup store that
        # compresses per chunk, so blocks then go to it as they are.
        self._io = medium if medium is not None else PlainMedium(fd)
        self._block_zstd = not self._io.compresses
        # Fixed-mode runs of blocks stored as DATA_RUN records (``DATA_RUNS`` at open; the
        # tests set it per cartridge). Not on a medium that compresses itself (a dedup store).
        self.data_runs = DATA_RUNS
        self.readonly = readonly
        # Asked before each write when set: why writing is refused now, else None (a gateway
        # whose lease on the cartridge lapsed, vtl/leases.py Fence); refused as write protect.
        self.fence: Callable[[], str | None] | None = None
        self.barcode: str = hdr.barcode
        self.uuid: bytes = hdr.uuid
        self.created_ns: int = hdr.created_ns
        self.media: MediaType = MEDIA.get(hdr.media) or media_by_density(hdr.density_code) or \
            MediaType(hdr.media, "", "", hdr.density_code, hdr.medium_type, hdr.capacity)
        self.capacity: int = hdr.capacity
        self._flags: int = hdr.flags
        self._incompat = IncompatFeature(hdr.incompat)
        self.worm = bool(hdr.flags & HEADER_FLAG_WORM)
        self.position = 0
        self.index = PositionIndex(DATA_START)
        self.mam = MamStore(path.with_name(path.name + ".mam"))
        self.counters = _Counters()
        self._packer = BlockPacker()  # for blocks written on the drive's thread
        self._dctx = zstandard.ZstdDecompressor()
        self._dirty = False  # records written since the last durable point
        self._pacer = WritebackPacer(fd, self.barcode, DATA_START, enabled=self._io.paced)
        self._lock = threading.Lock()
        self._closed = False
        self.ew_point = self.capacity - early_warning_margin(self.capacity)
        self._ahead = ReadAhead()  # a decoded block and the records ahead: a read buffer
        # Write-behind buffer (buffered mode), started by the first queue_block.
        self._wb: WriteBehind | None = None
        self._queued_end = 0  # the object after the last one queued (while any are)
        # The drive's tape data encryption settings (keys in memory only): set_crypto.
        self.crypto: CryptoSettings | None = None
        # Partitions after this one (partition 0), opened on first use (``partition``).
        self.extra_partitions: int = hdr.extra_partitions
        self._partitions: dict[int, TapeCartridge] = {}

    # -- creation and opening -----------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: Path,
        barcode: str,
        media: MediaType,
        *,
        capacity: int | None = None,
        worm: bool = False,
        chunk_store: Path | None = None,
    ) -> None:
        """Write a blank cartridge (header only) and its MAM; refuses to replace a file.
        With ``chunk_store`` it is a dedup cartridge whose data goes to that store."""
        path = Path(path)
        cap = capacity if capacity is not None else media.capacity
        if cap <= 0:
            raise CartridgeError(f"capacity must be positive, not {cap}")
        fields = {
            "version": FORMAT_VERSION,
            "header_size": HEADER_SIZE,
            "flags": HEADER_FLAG_WORM if worm else 0,
            "barcode": barcode,
            "media": media.name,
            "density_code": media.density_code,
            "medium_type": 0x01 if worm else media.medium_type,
            "capacity": cap,
            "created_ns": time.time_ns(),
            "uuid": uuidlib.uuid4().bytes,
            "incompat": 0,
            "extra_partitions": 0,
        }
        header = _build_header(fields)
        tmp = path.with_name(path.name + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, header)
            os.fsync(fd)
        finally:
            os.close(fd)
        mam = MamStore(path.with_name(path.name + ".mam"))
        mam.set(0x0001, cap >> 20)
        mam.set(0x0003, 0)
        mam.set(0x0400, "VTL-EBM")
        mam.set(0x0401, fields["uuid"].hex().upper())
        mam.set(0x0405, media.density_code)
        mam.set(0x0406, time.strftime("%Y%m%d", time.gmtime()))
        mam.set(0x0407, 16384)
        mam.set(0x0408, 0x80 if worm else 0x00)
        mam.set(0x0220, 0)
        mam.set(0x0221, 0)
        mam.set(0x0806, barcode)
        mam.save()
        if chunk_store is not None and not path.exists():
            from tape_formats.store.dedup_medium import create_recipe

            os.rename(create_recipe(path, Path(chunk_store), len(header)), recipe_path(path))
        try:
            os.link(tmp, path)  # fails if the cartridge exists: never replace one
        except FileExistsError:
            raise CartridgeError(f"{path} already exists") from None
        finally:
            os.unlink(tmp)
        fsync_dir(path.parent)

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False, count_load: bool | None = None
             ) -> TapeCartridge:
        """Open a cartridge, rebuilding or extending its index from the records as needed.

        A read-write open is a load into a drive: it counts in the MAM load count (unless
        ``count_load=False``) and cuts off a torn tail left by a crash.
        """
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        except FileNotFoundError:
            raise CartridgeError(f"cartridge file {path} does not exist") from None
        try:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CartridgeInUse(f"{path.name} is in use by another process") from None
            hdr = _parse_header(os.pread(fd, HEADER_SIZE, 0), path)
            cart = cls(path, fd, hdr, readonly, open_medium(path, fd, readonly=readonly))
            cart._recover()
            idx = cart.index
            if (idx.fm_total > len(idx.fm_first) and not readonly
                    and not cart._incompat & IncompatFeature.FILEMARK_RUNS):
                # runs of filemarks (a filemark record holding more than one) written by a
                # build that did not flag them yet; O(1), however many runs of data there are
                cart._require(IncompatFeature.FILEMARK_RUNS)
            cart._pacer.restart(cart.index.end)
        except BaseException:
            os.close(fd)
            raise
        if not readonly and (count_load if count_load is not None else True):
            cart.mam.add_int(0x0003, 1)
            cart.mam.save()
        return cart

    def _recover(self) -> None:
        """Load the sidecar index, check it against the data, then read the tail."""
        self._ahead.clear()
        idx = self.index
        size = self._io.size()
        if idx.load_sidecar(self.path, self.uuid) and idx.records:
            last = idx.records - 1
            rec = RecordHeader.unpack(self._io.pread(RECORD_HEADER_SIZE, idx.offsets[last]))
            if rec is None or rec.obj != idx.first_object(last) or rec.objects != (
                    idx.objects - rec.obj):
                idx.clear()  # stale: rebuild from the records
            else:
                idx.end = idx.offsets[last] + RECORD_HEADER_SIZE + rec.stored_len
                if idx.end > size:
                    idx.clear()
        elif idx.records == 0:
            idx.clear()
        trusted_end = idx.end
        end, torn = self._scan(idx, idx.end, size, verify_payload=True)
        if torn and not self.readonly:
            # A record the crash cut short: drop it so the tape ends on a whole record.
            self._io.truncate(end)
            self._io.fsync()
        if idx.end != trusted_end and not self.readonly:
            idx.write_sidecar(self.path, self.uuid)

    def _scan(self, idx: PositionIndex, start: int, size: int, *, verify_payload: bool
              ) -> tuple[int, bool]:
        """Append records found from ``start`` to the index; returns (end, torn_tail)."""
        off = start
        while off < size:
            rec = RecordHeader.unpack(self._io.pread(RECORD_HEADER_SIZE, off))
            if rec is None:
                return off, True
            stored = rec.stored_len
            if rec.obj != idx.objects or off + RECORD_HEADER_SIZE + stored > size:
                return off, True
            if verify_payload and stored:
                payload = self._io.pread(stored, off + RECORD_HEADER_SIZE)
                if crc32c.crc32c(payload) != rec.payload_crc:
                    return off, True
            idx.append(off, RECORD_HEADER_SIZE + stored, rec.kind, rec.native_len, rec.flags)
            off += RECORD_HEADER_SIZE + stored
        return off, False

    # -- state ------------------------------------------------------------------------
    @property
    def eod(self) -> int:
        return len(self.index)

    @property
    def write_protected(self) -> bool:
        return (bool(self._flags & HEADER_FLAG_WRITE_PROTECT) or self.readonly
                or (self.fence is not None and self.fence() is not None))

    @property
    def used_bytes(self) -> int:
        """Medium bytes consumed up to EOD (compressed size: what a drive's capacity counts;
        each filemark of a run as much as a filemark record)."""
        return self.index.medium_end - DATA_START

    @property
    def remaining_bytes(self) -> int:
        return max(0, self.capacity - self.used_bytes)

    @property
    def at_early_warning(self) -> bool:
        return self.used_bytes >= self.ew_point

    @property
    def at_bop(self) -> bool:
        return self.position == 0

    @property
    def at_eod(self) -> bool:
        return self.position == len(self.index)

    @property
    def files(self) -> int:
        return self.index.fm_total

    def file_start(self, file_no: int) -> int | None:
        """The object where tape file ``file_no`` starts (just past its filemark), None when
        the tape has fewer filemarks (LOCATE(16) to a file number)."""
        if file_no == 0:
            return 0
        if file_no > self.index.fm_total:
            return None
        return self.index.filemark_object(file_no - 1) + 1

    def block_number_at(self, obj: int) -> tuple[int, int]:
        """(tape file number, block number within that file) of logical object ``obj``."""
        fm = self.index.filemarks_before(obj)
        first = self.index.filemark_object(fm - 1) + 1 if fm else 0
        return fm, obj - first

    def filemarks_before(self, obj: int) -> int:
        return self.index.filemarks_before(obj)

    def object_kind(self, obj: int) -> RecordKind:
        if obj >= len(self.index):
            return RecordKind.EOD
        return self.index.kind(obj)

    def block_length(self, obj: int) -> int:
        return self.index.native_len(obj)

    def set_write_protect(self, on: bool) -> None:
        """Slide the write-protect tab: rewrite the header in place (one sector, CRC'd)."""
        self.wait_writes()  # what the drive accepted before the tab moved goes to tape
        if self.readonly:
            raise WriteProtected(f"{self.barcode} is open read-only")
        flags = (self._flags | HEADER_FLAG_WRITE_PROTECT) if on else (
            self._flags & ~HEADER_FLAG_WRITE_PROTECT)
        self._rewrite_header(flags=flags)
        self._flags = flags

    def _require(self, feature: IncompatFeature) -> None:
        """Flag ``feature`` in the header (version 2) before the first record that needs it
        is written, so a build that does not know it refuses the cartridge instead of taking
        the record for a damaged tail and cutting it off (docs/cartridge-format.md)."""
        if self._incompat & feature:
            return
        incompat = self._incompat | feature
        self._rewrite_header(version=FORMAT_VERSION_FEATURES, incompat=int(incompat))
        self._incompat = incompat

    def _rewrite_header(self, **changes: int) -> None:
        """Rewrite the header sector in place with ``changes`` (CRC'd, fsync'd)."""
        hdr = _parse_header(self._io.pread(HEADER_SIZE, 0), self.path)
        fields = dict(hdr)
        fields.pop("_io", None)
        fields.update(changes)
        if self._io.pwrite(_build_header(fields), 0) != HEADER_SIZE:
            raise OSError(errno.EIO, "short write")
        self._io.fsync()

    @property
    def format_features(self) -> IncompatFeature:
        """The incompatible format features this cartridge uses (header ``incompat``)."""
        return self._incompat

    # -- positioning --------------------------------------------------------------------
    def rewind(self) -> None:
        self.sync()
        self.position = 0

    def locate(self, obj: int) -> None:
        self.wait_writes()
        if obj < 0:
            raise CartridgeError(f"cannot locate to negative object {obj}")
        if obj > len(self.index):
            self.position = len(self.index)
            raise EndOfData(f"object {obj} is past end of data ({len(self.index)})")
        self.position = obj

    def space_blocks(self, count: int) -> SpaceResult:
        self.wait_writes()
        idx, p = self.index, self.position
        if count >= 0:
            fm = idx.next_filemark(p)
            if fm is not None and fm < p + count:
                self.position = fm + 1
                return SpaceResult(fm - p, RecordKind.FILEMARK)
            if p + count > len(idx):
                self.position = len(idx)
                return SpaceResult(len(idx) - p, RecordKind.EOD)
            self.position = p + count
            return SpaceResult(count)
        n = -count
        fm = idx.prev_filemark(p)
        if fm is not None and fm >= p - n:
            self.position = fm
            return SpaceResult(p - fm - 1, RecordKind.FILEMARK)
        if p - n < 0:
            self.position = 0
            return SpaceResult(p, "BOP")
        self.position = p - n
        return SpaceResult(n)

    def space_filemarks(self, count: int) -> SpaceResult:
        self.wait_writes()
        idx, p = self.index, self.position
        before = idx.filemarks_before(p)
        if count >= 0:
            if before + count - 1 < idx.fm_total:
                if count:
                    self.position = idx.filemark_object(before + count - 1) + 1
                return SpaceResult(count)
            self.position = len(idx)
            return SpaceResult(idx.fm_total - before, RecordKind.EOD)
        n = -count
        if before - n >= 0:
            self.position = idx.filemark_object(before - n)
            return SpaceResult(n)
        self.position = 0
        return SpaceResult(before, "BOP")

    def space_to_eod(self) -> None:
        self.wait_writes()
        self.position = len(self.index)

    # -- data ---------------------------------------------------------------------------
    def next_data_length(self) -> int:
        """The length of the data block at the position, -1 when the next object is a
        filemark or the end of data (a look at the index: no I/O, nothing moves)."""
        wb = self._wb  # wait_writes(), inline: asked on every streaming READ
        if wb is not None and wb.blocks:
            wb.wait()
        p = self.position
        idx = self.index
        if p >= idx.objects:
            return -1
        meta = idx.meta[p if not idx.run_rec else idx.record_of(p)]
        kind = meta & 0xFF
        if kind == _DATA_RUN:
            return meta >> 16 & RUN_SIZE_MASK
        return meta >> 16 if kind == _DATA else -1

    def read_block(self, buf: memoryview | bytearray | None = None, *,
                   own: bool = False) -> ReadResult:
        """Read the object at the position and move past it (not past EOD).

        A data block longer than ``buf`` fills ``buf`` and reports its full length (the
        drive turns that into ILI); the position still moves past the whole block.
        ``own``: the caller takes the data wherever it is; a block that was decompressed
        into memory of its own (never reused), or read ahead into one of the read-ahead's
        alternating buffers (valid until the next-but-one block is decoded, as long as a
        view of the drive's own alternating buffers), then comes back as is instead of being
        copied into ``buf`` (the result's ``data`` is what to use either way).
        """
        wb = self._wb
        if wb is not None and wb.blocks:
            wb.wait()
        p = self.position
        ahead = self._ahead
        if p == ahead.obj:
            # Read ahead while the drive was idle: the block is already checked and decoded.
            ahead.obj = -1
            native, stored, data = ahead.native, ahead.stored, ahead.data
            direct = own and (ahead.own or ahead.lasting) and (buf is None or len(buf) >= native)
            if buf is None and not direct and not ahead.own:
                data = bytes(data)  # the cache buffer is reused: the caller gets its own copy
        else:
            idx = self.index
            if p >= idx.objects:
                return ReadResult(RecordKind.EOD, 0)
            r = p if not idx.run_rec else idx.record_of(p)
            kind = idx.meta[r] & 0xFF
            if kind == _DATA:
                native, stored, data, direct = self._decode(p, r, buf)
            elif kind == _DATA_RUN:
                native, stored, data = self._decode_in_run(p, r)
                direct = False
                if buf is None:
                    data = bytes(data)
            else:  # a filemark, alone or in a run
                self.position = p + 1
                return ReadResult(RecordKind.FILEMARK, 0)
            if own and not direct and (buf is None or len(buf) >= native):
                direct = True  # decompressed into memory of its own: no copy into buf
        self.position = p + 1
        with self._lock:
            self.counters.read_native += native
            self.counters.read_stored += stored
        if buf is None or direct:
            return ReadResult(RecordKind.DATA, native, data)
        n = min(len(buf), native)
        out = memoryview(buf)
        out[:n] = data[:n]
        return ReadResult(RecordKind.DATA, native, out[:n])

    def read_blocks(self, buf: memoryview, size: int) -> int:
        """Read data blocks of exactly ``size`` bytes at the position into ``buf`` (one
        ``size`` slot each, as many as it holds) and move past them: a fixed-block READ's
        blocks, the same bytes as one ``read_block`` each, their records read in one go
        (through the read-ahead span when they fit: the next command's are read with them)
        and decoded by ``block_runs.unpack_run``. Stops before the first object that is
        anything else (a filemark, end of data, another length) or fails a check, and
        before any block while the drive decrypts only (encrypted blocks end a run too):
        the caller reads that one with ``read_block``, which reports it. Returns the blocks
        read."""
        return self._read_run(buf, size, False)

    def read_run(self, buf: memoryview, size: int) -> bool:
        """``read_blocks`` all or nothing: True when every slot of ``buf`` was filled and the
        position moved past them all; False with nothing moved or counted (a block that is
        not a plain one of ``size`` bytes among them, a write queued: the caller takes the
        general path, which reads them again and reports what it meets). A streaming
        fixed-mode READ's run (TapeDrive.stream_read)."""
        wb = self._wb
        if wb is not None and (wb.blocks or wb.failed):
            return False
        return self._read_run(buf, size, True) > 0

    def _read_run(self, buf: memoryview, size: int, whole: bool) -> int:
        """read_blocks, or (``whole``) only a run that fills ``buf``: else 0, nothing moved."""
        wb = self._wb
        if wb is not None and wb.blocks:
            wb.wait()
        p = self.position
        done, stored = self._decode_run(p, buf, size, whole)
        if done:
            self._pass_run(p, done, size, stored)
        return done

    def _decode_run(self, p: int, buf: memoryview, size: int, whole: bool) -> tuple[int, int]:
        """Decode the data blocks of ``size`` bytes from object ``p`` on into ``buf`` (one
        slot each; ``whole``: all of its slots or none), without moving or counting: (blocks
        decoded, their payload bytes stored)."""
        idx = self.index
        n = min(len(buf) // size, idx.objects - p)
        crypto = self.crypto
        if (n <= 0 or (crypto is not None and crypto.decrypt == DecryptMode.DECRYPT)
                or (whole and n * size != len(buf))):
            return 0, 0  # plain blocks refused: read_block says so
        if not idx.run_rec:
            return self._decode_records(p, p, buf, size, n, whole)
        ahead = self._ahead
        j = p - ahead.rec_first
        if 0 <= j <= ahead.rec_count - n and ahead.rec_first >= 0 and ahead.rec_size == size:
            # the usual streaming case: all of them in the run record decoded last
            buf[: n * size] = ahead.rec_data[j * size : (j + n) * size]
            rstored, count = ahead.rec_stored, ahead.rec_count
            return n, rstored * (j + n) // count - rstored * j // count
        done = stored = 0
        while done < n:
            q = p + done
            r = idx.record_of(q)
            m = idx.meta[r]
            kind = m & 0xFF
            if kind == _DATA or (kind == _DATA_RUN and idx.first_object(r) == q):
                # records of one block, and runs wanted whole: block_runs.unpack_run
                got, st = self._decode_records(q, r, buf[done * size :], size, n - done, False)
                if got:
                    done += got
                    stored += st
                    continue
                if kind == _DATA:
                    break
            if kind == _DATA_RUN:
                if m >> 16 & RUN_SIZE_MASK != size:
                    break
                try:
                    blocks, rstored = self._run_blocks(q, r)
                except CorruptRecord:
                    break  # read_block meets it and reports it
                count = meta_objects(m)
                j = q - idx.first_object(r)
                k = min(count - j, n - done)
                buf[done * size : (done + k) * size] = blocks[j * size : (j + k) * size]
                stored += rstored * (j + k) // count - rstored * j // count
                done += k
            else:
                break
        if whole and done != n:
            return 0, 0
        return done, stored

    def _decode_records(self, p: int, r0: int, buf: memoryview, size: int, n: int,
                        whole: bool) -> tuple[int, int]:
        """``_decode_run``'s part for records of one block each and runs of blocks wanted
        whole, from record ``r0`` (object ``p``) on, at most ``n`` blocks:
        ``block_runs.unpack_run`` over them, which stops before anything else."""
        idx = self.index
        offsets = idx.offsets
        last = min(r0 + n, len(offsets))
        base = offsets[r0]
        # n blocks take at most n records of a stored block each: read no further
        end = min(offsets[last] if last < len(offsets) else idx.end,
                  base + n * (RECORD_HEADER_SIZE + size))
        ahead = self._ahead
        raw = ahead.in_span(base, end - base)
        if raw is None:
            if end - base <= SPAN_BYTES:  # the records after them come along
                ahead.obj = -1  # its block may be a view of the span
                got = self._io.preadv([ahead.span_buffer(min(SPAN_BYTES, idx.end - base))],
                                      base)
                ahead.filled(base, got)
                raw = ahead.span[:got]
            else:
                raw = memoryview(self._io.pread(end - base, base))
        done, stored = unpack_run(raw, base, offsets, idx.meta, r0, idx.end, p, size,
                                  buf[: n * size], self._dctx)
        if whole and done != n:
            return 0, 0  # (the span holds what was read: harmless)
        return done, stored

    def _pass_run(self, p: int, done: int, size: int, stored: int) -> None:
        """Move past ``done`` blocks read from object ``p`` on, and count them."""
        ahead = self._ahead
        if p <= ahead.obj < p + done:
            ahead.obj = -1
        self.position = p + done
        with self._lock:
            self.counters.read_native += done * size
            self.counters.read_stored += stored

    def run_ahead(self, count: int, size: int) -> None:
        """Decode the ``count`` data blocks of ``size`` bytes at the position into the
        read-ahead's run, without moving or counting: a fixed-mode READ's next run, decoded
        while the drive is idle (``take_run_ahead``), as ``read_ahead`` decodes the next
        block. Only a whole run of plain blocks is kept; anything else (or a failure) leaves
        it empty, and the READ meets it and reports it."""
        wb = self._wb
        if wb is not None and (wb.blocks or wb.failed):
            return
        ahead = self._ahead
        p = self.position
        if ahead.run_obj == p and ahead.run_count == count and ahead.run_size == size:
            return
        ahead.run_obj = -1
        buf = ahead.run_buffer(count * size)
        try:
            done, stored = self._decode_run(p, buf, size, True)
        except (CartridgeError, OSError):
            return
        if done:
            ahead.hold_run(p, count, size, stored, buf)

    def take_run_ahead(self, length: int, size: int) -> memoryview | None:
        """``read_run`` in the streaming READ's usual case, in one call: the read-ahead's run
        starts at the position, ``length`` bytes of ``size``-byte blocks, and no write is
        queued. Returns its data (valid until the next-but-one run decoded) with the
        position moved past it and its blocks counted; None: not that case, nothing moved."""
        ahead = self._ahead
        wb = self._wb
        p = self.position
        if (p != ahead.run_obj or ahead.run_size != size or ahead.run_count * size != length
                or (wb is not None and (wb.blocks or wb.failed))):
            return None
        ahead.run_obj = -1
        self._pass_run(p, ahead.run_count, size, ahead.run_stored)
        return ahead.run_data

    def take_read_ahead(self, length: int, buf: memoryview | bytearray
                        ) -> bytes | memoryview | None:
        """``read_block(buf, own=True).data`` in the streaming READ's usual case, in one
        call: the read-ahead holds the data block at the position, decoded, ``length``
        bytes long, and no write is queued. None: not that case, nothing moved or counted
        (the caller asks ``next_data_length`` and ``read_block``)."""
        ahead = self._ahead
        wb = self._wb
        if (self.position != ahead.obj or ahead.native != length or len(buf) < length
                or (wb is not None and (wb.blocks or wb.failed))):
            return None
        ahead.obj = -1
        self.position += 1
        with self._lock:
            self.counters.read_native += length
            self.counters.read_stored += ahead.stored
        data = ahead.data
        if ahead.own or ahead.lasting:
            return data
        out = memoryview(buf)[:length]
        out[:] = data[:length]
        return out

    def read_ahead(self) -> None:
        """Decode the data block at the position into the read-ahead cache, without moving
        or counting: the next read_block of it then costs a copy instead of pread + crc32c +
        zstd. A small record is decoded from the span, the records ahead read in one go
        (``read_ahead.py``). Called while the drive is idle between commands; any failure
        just leaves the cache empty, so the real read meets the same error and reports it."""
        wb = self._wb  # wait_writes(), inline: called after every streaming READ
        if wb is not None and wb.blocks:
            wb.wait()
        p = self.position
        idx = self.index
        ahead = self._ahead
        if p == ahead.obj or p >= idx.objects:
            return
        r = p if not idx.run_rec else idx.record_of(p)
        meta = idx.meta[r]
        if meta & 0xFF != _DATA:
            if meta & 0xFF == _DATA_RUN:
                ahead.obj = -1
                try:
                    native, stored, data = self._decode_in_run(p, r)
                except CartridgeError:
                    return
                ahead.hold(p, native, stored, data, own=True)
            return
        ahead.obj = -1
        try:
            raw = self._from_span(r)
            native, stored, data, lasting = self._decode(p, r, ahead.buffer(meta >> 16)
                                                         if raw is None else None, raw)
        except (CartridgeError, OSError, zstandard.ZstdError):
            return
        # zstd's (or the decryption's) output is memory of its own; a view is reused memory,
        # and lasts until the next-but-one decode when it is one of the alternating buffers
        # (a view of the span is copied out by read_block)
        ahead.hold(p, native, stored, data, own=type(data) is bytes, lasting=lasting)

    def _from_span(self, r: int) -> memoryview | None:
        """Record ``r`` (header and payload) out of the read-ahead span, refilled with one
        read from ``r`` on when it does not hold it; None for a record too big for the span
        (read straight into its destination instead) or when the read fails."""
        idx = self.index
        off = idx.offsets[r]
        end = idx.offsets[r + 1] if r + 1 < len(idx.offsets) else idx.end
        size = end - off
        if size > SPAN_RECORD_MAX:
            return None
        ahead = self._ahead
        start = off - ahead.span_off  # ahead.in_span(off, size), inline: once per READ
        if start >= 0 and start + size <= ahead.span_len:
            return ahead.span[start:start + size]
        want = min(SPAN_BYTES, idx.end - off)
        got = self._io.preadv([ahead.span_buffer(want)], off)
        ahead.filled(off, got)
        return ahead.in_span(off, size)

    def _decode(self, p: int, r: int, buf: memoryview | bytearray | None,
                raw_record: memoryview | None = None
                ) -> tuple[int, int, bytes | memoryview, bool]:
        """Read data block ``p`` (record ``r``): pread, header check, crc32c, zstd; the pread
        is spared when ``raw_record`` holds the record already (the read-ahead span).
        Returns (native length, stored length, data, direct): ``direct`` when the payload
        was read straight into ``buf`` (a stored block that fits), so ``data`` is a view of
        ``buf``; else ``data`` is the whole block in memory of its own, or a view of
        ``raw_record``."""
        idx = self.index
        meta = idx.meta[r]
        native = meta >> 16
        compressed = bool(meta & (FLAG_COMPRESSED << 8))
        encrypted = bool(meta & (FLAG_ENCRYPTED << 8))
        off = idx.offsets[r]
        stored = (idx.offsets[r + 1] if r + 1 < len(idx.offsets) else idx.end) - off \
            - RECORD_HEADER_SIZE
        direct = (buf is not None and raw_record is None and not compressed and not encrypted
                  and len(buf) >= native)
        raw: bytes | bytearray | memoryview
        if raw_record is not None:
            raw = raw_record
            payload = raw_record[RECORD_HEADER_SIZE:]
        elif direct:
            # The common streaming case: the payload lands straight in the caller's buffer.
            out = memoryview(buf)[:native]
            head = bytearray(RECORD_HEADER_SIZE)
            got = self._io.preadv([head, out], off)
            raw = head
            payload = out
            if got != RECORD_HEADER_SIZE + stored:
                raise CorruptRecord(f"{self.barcode}: block {p} is cut short", p)
        else:
            raw = self._io.pread(RECORD_HEADER_SIZE + stored, off)
            payload = memoryview(raw)[RECORD_HEADER_SIZE :]
        rec = RecordHeader.unpack(raw)
        if rec is None or rec.obj != p or rec.stored_len != stored:
            raise CorruptRecord(f"{self.barcode}: record header of block {p} is damaged", p)
        if crc32c.crc32c(payload) != rec.payload_crc:
            raise CorruptRecord(f"{self.barcode}: block {p} fails its checksum", p)
        try:
            if encrypted:
                payload = unseal(self.crypto, payload, native)
            elif self.crypto is not None:  # no settings: every plain block reads
                check_plain(self.crypto)
        except DecryptError as exc:
            raise UndecryptableBlock(f"{self.barcode}: block {p}: {exc.reason}", p,
                                     exc.reason, exc.kad) from None
        if not compressed:
            if encrypted and len(payload) != native:
                raise CorruptRecord(f"{self.barcode}: block {p} has the wrong length", p)
            return native, stored, payload, direct
        try:
            data = self._dctx.decompress(payload, max_output_size=native)
        except zstandard.ZstdError as exc:
            raise CorruptRecord(f"{self.barcode}: block {p} does not decompress: {exc}",
                                p) from None
        if len(data) != native:
            raise CorruptRecord(f"{self.barcode}: block {p} has the wrong length", p)
        return native, stored, data, False

    def _decode_in_run(self, p: int, r: int) -> tuple[int, int, memoryview]:
        """Data block ``p`` of DATA_RUN record ``r``: (block size, its share of the run's
        stored bytes, a view of the decoded run: memory of its own, never reused)."""
        if self.crypto is not None:  # a run's blocks are plain: refused while decrypting only
            try:
                check_plain(self.crypto)
            except DecryptError as exc:
                raise UndecryptableBlock(f"{self.barcode}: block {p}: {exc.reason}", p,
                                         exc.reason, exc.kad) from None
        blocks, stored = self._run_blocks(p, r)
        m = self.index.meta[r]
        size = m >> 16 & RUN_SIZE_MASK
        count = m >> (16 + RUN_COUNT_SHIFT)
        j = p - self.index.first_object(r)
        return (size, stored * (j + 1) // count - stored * j // count,
                blocks[j * size : (j + 1) * size])

    def _run_blocks(self, p: int, r: int) -> tuple[memoryview, int]:
        """DATA_RUN record ``r`` checked and decoded (header, crc32c, zstd), kept in the
        read-ahead so the run's next blocks are copies: (its blocks back to back, at least
        its count's worth; the payload's stored bytes). ``p``: the object being read, named
        by the CorruptRecord raised when the record is damaged."""
        idx = self.index
        off = idx.offsets[r]
        ahead = self._ahead
        if ahead.rec_off == off:
            return ahead.rec_data, ahead.rec_stored
        meta = idx.meta[r]
        count = meta >> (16 + RUN_COUNT_SHIFT)
        size = meta >> 16 & RUN_SIZE_MASK
        stored = (idx.offsets[r + 1] if r + 1 < len(idx.offsets) else idx.end) - off \
            - RECORD_HEADER_SIZE
        raw = self._from_span(r)
        if raw is None:
            raw = memoryview(self._io.pread(RECORD_HEADER_SIZE + stored, off))
        rec = RecordHeader.unpack(raw)
        if (rec is None or rec.kind != _DATA_RUN or rec.obj != idx.first_object(r)
                or rec.stored_len != stored or rec.native_len != meta >> 16
                or rec.flags & FLAG_ENCRYPTED):
            raise CorruptRecord(f"{self.barcode}: record header of block {p} is damaged", p)
        payload = raw[RECORD_HEADER_SIZE : RECORD_HEADER_SIZE + stored]
        if len(payload) != stored:
            raise CorruptRecord(f"{self.barcode}: block {p} is cut short", p)
        if crc32c.crc32c(payload) != rec.payload_crc:
            raise CorruptRecord(f"{self.barcode}: block {p} fails its checksum", p)
        if rec.flags & FLAG_COMPRESSED:
            try:
                data: bytes = self._dctx.decompress(payload, max_output_size=RUN_MAX_BYTES)
            except zstandard.ZstdError as exc:
                raise CorruptRecord(f"{self.barcode}: block {p} does not decompress: {exc}",
                                    p) from None
        else:
            data = bytes(payload)  # the span is reused: the run's blocks get memory of their own
        if len(data) < count * size:
            raise CorruptRecord(f"{self.barcode}: block {p} has the wrong length", p)
        blocks = memoryview(data)
        ahead.rec_off, ahead.rec_data, ahead.rec_stored = off, blocks, stored
        ahead.rec_first, ahead.rec_count, ahead.rec_size = rec.obj, count, size
        return blocks, stored

    def check_writable(self) -> None:
        """WriteProtected or WormOverwrite if writing at the position would be refused."""
        if self.write_protected:
            why = self.fence() if self.fence is not None else None
            raise WriteProtected(f"{self.barcode} is write protected" + (f": {why}" if why else ""))
        if self.worm and self.position < len(self.index):
            raise WormOverwrite(
                f"{self.barcode} is WORM: cannot overwrite object {self.position} "
                f"(end of data is {len(self.index)})"
            )

    def _cut_at_position(self) -> None:
        """Discard everything from the position on, as overwriting a real tape does. Inside
        a run of filemarks, the run keeps the filemarks before the position: its header is
        rewritten with the shorter count (one sector, CRC'd) before the file is cut."""
        p = self.position
        idx = self.index
        self._ahead.clear()
        if p >= len(idx):
            return
        rec, keep = idx.cut_point(p)
        idx.drop_sidecar_after(self.path, rec)  # index first: crash-consistent order
        if keep and idx.meta[rec] & 0xFF == _DATA_RUN:
            # a data run keeps its blocks before the position: the same payload, a smaller
            # count (readers take the first ``count`` blocks of what it decodes to)
            first = p - keep
            old = RecordHeader.unpack(self._io.pread(RECORD_HEADER_SIZE, idx.offsets[rec]))
            if old is None or old.kind != _DATA_RUN or old.obj != first:
                raise CorruptRecord(f"{self.barcode}: record header of block {first} is "
                                    f"damaged", first)
            head = old._replace(native_len=run_native(keep, old.native_len & RUN_SIZE_MASK)
                                ).pack()
            if self._io.pwrite(head, idx.offsets[rec]) != len(head):
                raise OSError(errno.EIO, "short write")
        elif keep:
            first = p - keep
            kind = RecordKind.FILEMARK_RUN if keep > 1 else RecordKind.FILEMARK
            head = RecordHeader(kind, 0, 0, keep if keep > 1 else 0,
                                idx.filemarks_before(first), first, 0).pack()
            if self._io.pwrite(head, idx.offsets[rec]) != len(head):
                raise OSError(errno.EIO, "short write")
        idx.truncate(p)
        self._io.truncate(idx.end)
        self._dirty = True

    def _append(self, kind: int, payload: bytes | memoryview, native: int, flags: int,
                crc: int | None = None) -> None:
        idx = self.index
        obj = len(idx)
        if crc is None:
            crc = crc32c.crc32c(payload)
        head = pack_record_header(kind, flags, len(payload), native, idx.fm_total, obj, crc)
        off = idx.end
        try:
            if len(payload):
                written = self._io.pwritev([head, payload], off)
            else:
                written = self._io.pwrite(head, off)
            if written != len(head) + len(payload):
                raise OSError(errno.EIO, "short write")
        except OSError:
            # Leave nothing half-written behind: cut back to the last whole record.
            try:
                self._io.truncate(off)
            except OSError:
                pass
            raise
        idx.append(off, len(head) + len(payload), kind, native, flags)
        self.position = idx.objects
        self._dirty = True
        self._pacer.appended(off, idx.end)

    def write_block(self, data: bytes | bytearray | memoryview, *, compress: bool = True
                    ) -> WriteResult:
        """Write one data block at the position. Raises EndOfMedium (nothing written) when
        it would not fit; OSError when the disk fails (the drive reports MEDIUM ERROR)."""
        self.wait_writes()
        self._ahead.clear()  # the tape changes under the read-ahead cache
        self.check_writable()
        if self.position < len(self.index):
            self._cut_at_position()
        self._store(data, compress and self._block_zstd, self._sealing_key)
        return WriteResult(self.at_early_warning)

    def write_blocks(self, data: memoryview, size: int, *, compress: bool = True) -> int:
        """Write the blocks ``data[i * size : (i + 1) * size]`` at the position in one go (a
        fixed-block WRITE's blocks): the same records as one ``write_block`` each
        (``block_runs.pack_run``), one file write. Returns how many were written: all of
        them, or fewer when the next would not fit (its ``write_block`` then raises
        EndOfMedium), or 0 while blocks are encrypted (written one by one). Raises what
        ``write_block`` raises; after a disk error none of them is on the tape."""
        self.wait_writes()
        self._ahead.clear()
        self.check_writable()
        if self.position < len(self.index):
            self._cut_at_position()
        if self._sealing_key is not None:
            return 0
        return self._append_run(data, size, compress and self._block_zstd)

    def _append_run(self, data: bytes | bytearray | memoryview, size: int, compress: bool
                    ) -> int:
        """``write_blocks``' append at end of data, its checks done: as many blocks as fit,
        packed with the cartridge's packer (``_packer``: the drive's thread, or the write
        buffer's storing one while blocks are queued). With ``data_runs`` (a plain file
        medium, blocks of at most a quarter of ``RUN_MAX_BYTES``) as DATA_RUN records of up to
        ``run_blocks(size)`` blocks each when they shrink; blocks that do not (incompressible
        data, compression off or skipped) stay one record each, stored as they are, so their
        reads keep the per-record C paths (a run stored as is would save no room: each block
        counts a record header's room either way)."""
        per = run_blocks(size) if self.data_runs and self._block_zstd else 0
        if per < 2 or len(data) < 2 * size:
            return self._append_records(data, size, compress)
        idx = self.index
        off = pos = idx.end
        room = self.capacity - self.used_bytes
        view = data if isinstance(data, memoryview) else memoryview(data)
        n = len(view) // size
        pack = self._packer.pack
        parts: list[bytes | memoryview] = []
        # in file order: (offset, size, kind, native, flags) of a run record, or the
        # (offsets, meta, end) of one record per block (block_runs.pack_run)
        entries: list[tuple] = []
        done = stored = 0
        obj, fm = idx.objects, idx.fm_total
        runs = False
        while done < n:
            k = min(per, n - done)
            chunk = view[done * size : (done + k) * size]
            payload, flags, crc = pack(chunk, compress) if k > 1 else (b"", 0, 0)
            if not flags & FLAG_COMPRESSED:  # did not shrink: a record per block, as is
                # (a last block alone: packed as a single-block write packs it)
                records, offs, meta, st = pack_run(chunk, size, self._packer,
                                                   compress and k == 1, room, fm, obj + done,
                                                   pos)
                got = len(meta) // 8
                if got:
                    parts.append(records)
                    entries.append((offs, meta, pos + len(records)))
                    room -= len(records)
                    pos += len(records)
                    stored += st
                    done += got
                if got < k:
                    break
                continue
            if RECORD_HEADER_SIZE * k + len(payload) > room:
                break  # the rest one record per block: as many as fit
            native = run_native(k, size)
            parts.append(pack_record_header(_DATA_RUN, flags, len(payload), native, fm,
                                            obj + done, crc))
            parts.append(payload)
            rec = RECORD_HEADER_SIZE + len(payload)
            entries.append((pos, rec, _DATA_RUN, native, flags))
            runs = True
            room -= RECORD_HEADER_SIZE * k + len(payload)
            pos += rec
            stored += len(payload)
            done += k
        if entries:
            if runs:
                self._require(IncompatFeature.DATA_RUNS)
            self._put_records(b"".join(parts), off)
            for entry in entries:
                if len(entry) == 3:
                    idx.append_data(*entry)
                else:
                    idx.append(*entry)
            self._appended_blocks(off, done * size, stored)
        if done < n:
            done += self._append_records(view[done * size :], size, compress)
        return done

    def _append_records(self, data: bytes | bytearray | memoryview, size: int, compress: bool
                        ) -> int:
        """``_append_run`` one record per block (``block_runs.pack_run``)."""
        idx = self.index
        off = idx.end
        records, offsets, meta, stored = pack_run(
            data, size, self._packer, compress, self.capacity - self.used_bytes, idx.fm_total,
            idx.objects, off)
        written = len(meta) // 8  # one 64-bit index word each
        if not written:
            return 0
        self._put_records(records, off)
        idx.append_data(offsets, meta, off + len(records))
        self._appended_blocks(off, written * size, stored)
        return written

    def _put_records(self, records: bytes, off: int) -> None:
        """Write whole records at end of data ``off`` in one go; after a disk error nothing
        half-written is left (the file is cut back to the last whole record)."""
        try:
            if self._io.pwrite(records, off) != len(records):
                raise OSError(errno.EIO, "short write")
        except OSError:
            try:
                self._io.truncate(off)
            except OSError:
                pass
            raise

    def _appended_blocks(self, off: int, native: int, stored: int) -> None:
        """After data records from ``off`` went into the file and the index: the position
        at end of data, the dirty flag, the write-back pacer, the counters."""
        self.position = self.index.objects
        self._dirty = True
        self._pacer.appended(off, self.index.end)
        with self._lock:
            self.counters.written_native += native
            self.counters.written_stored += stored

    def queue_block(self, data: bytes | bytearray | memoryview, *, compress: bool = True,
                    done: Callable[[bytes | bytearray | memoryview], None] | None = None
                    ) -> bool:
        """Accept a block to be written behind (a drive's buffered mode) when nothing but a
        disk error can keep it off the tape: an append at end of data that ends before the
        early-warning point even stored uncompressed. False: nothing queued, and the caller
        writes it with ``write_block`` (which first stores what is queued). ``data`` must not
        change until it is stored; ``done(data)`` is then called from the writing thread
        (also for a block dropped after a disk error), when no reference to it is kept.
        WriteProtected/WormOverwrite are raised at once, as by ``write_block``; a disk error
        is raised later, by ``flush_writes``."""
        wb, first = self._write_buffer()
        if wb is None:
            return False
        worst = RECORD_HEADER_SIZE + len(data)
        key = self._sealing_key
        if key is not None:
            worst += ENVELOPE_OVERHEAD + len(key.kad)
        if not wb.put(data, compress and self._block_zstd, worst, self._end,
                      DATA_START + self.ew_point, done):
            return False
        self._queued_end = first + 1
        return True

    def queue_run(self, data: bytes | bytearray | memoryview, size: int, *,
                  compress: bool = True,
                  done: Callable[[bytes | bytearray | memoryview], None] | None = None
                  ) -> bool:
        """``queue_block`` for a fixed-block WRITE's blocks ``data[i * size : (i + 1) *
        size]``: accepted as one item of the write buffer when all of them end before the
        early-warning point even stored uncompressed, and packed into the records
        ``write_blocks`` would write (``block_runs.pack_run``: one record per block,
        numbered from the object after the last one queued). The run is lazy: no thread
        is woken for it, the caller stores it with ``store_queued`` once it has answered
        (the drive's idle hook), and anything that waits for the buffer has the buffer's
        thread store it. False: nothing queued (also while blocks are encrypted: those are
        written one by one). A disk error drops the run whole and counts its blocks lost
        (``flush_writes``)."""
        count = len(data) // size if size > 0 else 0
        if count * size != len(data) or not count or self._sealing_key is not None:
            return False
        wb, first = self._write_buffer()
        if wb is None:
            return False
        compress = compress and self._block_zstd
        if not wb.put(data, compress, count * (RECORD_HEADER_SIZE + size), self._end,
                      DATA_START + self.ew_point, done, (size, first, compress), count,
                      lazy=True):
            return False
        self._queued_end = first + count
        return True

    def store_queued(self) -> None:
        """Store what is queued on this thread now when nothing else is storing it (the
        lazy runs of ``queue_run``), else let the write buffer's thread do it."""
        wb = self._wb
        if wb is not None and wb.blocks:
            wb.store_here()

    def _write_buffer(self) -> tuple[WriteBehind | None, int]:
        """The write buffer to queue an append into (started on first use) and the object
        number the append will get; (None, 0) when it may not be queued (the position is not
        at end of data). Raises WriteProtected/WormOverwrite as ``write_block`` does. Only
        the thread queueing adds blocks, so a buffer seen holding some ends at
        ``_queued_end``, and an empty one at the end of the index."""
        wb = self._wb
        if wb is None or not wb.blocks:
            if self.position != len(self.index) or self.readonly:
                return None, 0
            self.check_writable()
            if wb is None:
                packers = WRITE_BEHIND_PACKERS if (
                    self._block_zstd or self._sealing_key is not None
                ) else WRITE_BEHIND_PACKERS_UNCOMPRESSED
                wb = self._wb = WriteBehind(self._new_packer, self._store_queued,
                                            WRITE_BEHIND_BYTES, self.barcode, packers=packers,
                                            store_packer=self._new_packer(self._packer))
            first = len(self.index)
        else:
            if self.write_protected:
                raise WriteProtected(f"{self.barcode} is write protected")
            first = self._queued_end
        self._ahead.clear()
        return wb, first

    def append_now(self, data: bytes | bytearray | memoryview, *, compress: bool = True
                   ) -> bool:
        """Write one data block at once when that is a plain append: nothing queued, the
        position at end of data, and the block ends before the early-warning point even
        stored uncompressed, so nothing but a disk error can make its answer anything but
        GOOD (small blocks: cheaper written now than handed to the write buffer's threads).
        False: nothing written, and the caller takes ``write_block``'s way. Raises what
        ``write_block`` raises, with nothing written."""
        wb = self._wb
        if ((wb is not None and (wb.blocks or wb.failed)) or self.position != len(self.index)
                or self.readonly):
            return False
        self.check_writable()
        worst = RECORD_HEADER_SIZE + len(data)
        key = self._sealing_key
        if key is not None:
            worst += ENVELOPE_OVERHEAD + len(key.kad)
        if self.index.medium_end + worst >= DATA_START + self.ew_point:
            return False
        self._ahead.clear()
        self._store(data, compress and self._block_zstd, key)
        return True

    def append_run_now(self, data: memoryview, size: int, *, compress: bool = True) -> bool:
        """``write_blocks`` of the whole run when that is a plain append (``append_now``'s
        rule for a fixed-block WRITE's blocks): nothing queued, the position at end of data,
        no key sealing blocks, and the run ends before the early-warning point even stored
        uncompressed, so every block goes on the tape and nothing but a disk error can make
        the answer anything but GOOD. False: nothing written (the caller takes the general
        path). Raises what ``write_blocks`` raises, with nothing written."""
        wb = self._wb
        if ((wb is not None and (wb.blocks or wb.failed)) or self.position != len(self.index)
                or self.readonly or self._sealing_key is not None):
            return False
        self.check_writable()
        count = len(data) // size
        if (count * size != len(data) or self.index.medium_end
                + count * (RECORD_HEADER_SIZE + size) >= DATA_START + self.ew_point):
            return False
        if self.write_blocks(data, size, compress=compress) != count:  # pragma: no cover
            raise CartridgeError(f"{self.barcode}: a run cut short before early warning")
        return True

    def _end(self) -> int:
        """End of data on the medium, for the write buffer's early-warning check."""
        return self.index.medium_end

    @property
    def writes_pending(self) -> bool:
        """Blocks queued by ``queue_block`` are still being stored (or one failed)."""
        wb = self._wb
        return wb is not None and (wb.blocks > 0 or wb.failed)

    @property
    def write_failed(self) -> bool:
        """A queued block could not be stored: ``flush_writes`` raises it."""
        return self._wb is not None and self._wb.failed


    def flush_writes(self) -> None:
        """Wait until every queued block is stored; DeferredWriteError (once) if any was not."""
        if self._wb is not None:
            self._wb.flush()

    def wait_writes(self) -> None:
        """Let queued blocks reach the tape before anything else looks at it (a failure
        stays for ``flush_writes``: the drive reports it on its next command)."""
        wb = self._wb
        if wb is not None and wb.blocks:
            wb.wait()

    def _store(self, data: bytes | bytearray | memoryview, compress: bool,
               key: DataKey | None) -> None:
        """Compress (when it pays), encrypt with ``key`` (the ``_sealing_key`` the caller
        looked up) and append one data block at end of data."""
        self._store_packed(len(data), self._packer.pack(data, compress, key))

    def _store_packed(self, native: int, packed: Packed) -> None:
        """Append one data block that ``BlockPacker.pack`` prepared, at end of data."""
        payload, flags, crc = packed
        if self.used_bytes + RECORD_HEADER_SIZE + len(payload) > self.capacity:
            raise EndOfMedium(f"{self.barcode} is full ({self.capacity} bytes)")
        if flags & FLAG_ENCRYPTED:
            self._require(IncompatFeature.ENCRYPTED_BLOCKS)
        self._append(RecordKind.DATA, payload, native, flags, crc)
        with self._lock:
            self.counters.written_native += native
            self.counters.written_stored += len(payload)

    def _new_packer(self, packer: BlockPacker | None = None
                    ) -> Callable[[bytes | bytearray | memoryview, bool], Packed]:
        """A packer of its own (zstd context, skip state) for one write-behind thread, or
        ``packer``'s (the storing thread gets the cartridge's own, which nobody else uses
        while blocks are queued: blocks it packs in order come out as written without the
        buffer; a run of ``queue_run`` is packed by ``_store_queued`` with it too). The key
        is the one in force when the block is packed: ``set_crypto`` waits for the buffer to
        empty first."""
        if packer is None:
            packer = BlockPacker()
        pack = packer.pack
        return lambda data, compress: pack(data, compress, self._sealing_key)

    def _store_queued(self, native: int, packed: Packed | tuple[int, int, bool],
                      data: bytes | bytearray | memoryview | None = None) -> None:
        """Append what the write buffer packed (one data block), or a run of blocks
        ``data`` (``queue_run``'s (size, first object, compress)), packed now with the
        cartridge's packer: only one thread appends, and its records' offsets are known."""
        if data is None:
            self._store_packed(native, packed)  # type: ignore[arg-type]
            return
        size, first, compress = packed  # type: ignore[misc]
        if first != self.index.objects:  # pragma: no cover - queue_run's numbering
            raise CartridgeError(f"{self.barcode}: a queued run numbered from object "
                                 f"{first} met end of data at {self.index.objects}")
        if self._append_run(data, size, compress) != native // size:  # pragma: no cover
            raise EndOfMedium(f"{self.barcode} is full ({self.capacity} bytes)")

    # -- encryption ---------------------------------------------------------------------
    @property
    def _sealing_key(self) -> DataKey | None:
        crypto = self.crypto
        return crypto.sealing_key if crypto is not None else None

    def set_crypto(self, settings: CryptoSettings | None) -> None:
        """Take the drive's encryption settings: blocks queued before are stored with the
        old ones, and no block decoded ahead with the old key is handed out later."""
        self.wait_writes()
        self._ahead.clear()
        self.crypto = settings
        for part in self._partitions.values():
            part.set_crypto(settings)

    def block_envelope(self, obj: int) -> Envelope | None:
        """The clear header of data block ``obj`` when it is encrypted (which key, which
        KAD), else None (NEXT BLOCK ENCRYPTION STATUS asks this without reading it)."""
        self.wait_writes()
        idx = self.index
        if obj >= idx.objects:
            return None
        r = idx.record_of(obj)
        meta = idx.meta[r]
        if meta & 0xFF != _DATA or not meta & (FLAG_ENCRYPTED << 8):
            return None
        head = self._io.pread(RECORD_HEADER_SIZE + ENVELOPE_OVERHEAD + (1 << 16),
                              idx.offsets[r])
        return envelope(head[RECORD_HEADER_SIZE:])

    def write_filemarks(self, count: int = 1, *, sync: bool = True) -> WriteResult:
        """Write ``count`` filemarks; with ``sync`` everything written so far is durable on
        return (a filemark without the IMMED bit). Count 0 just syncs, as SSC says.

        Two or more are one FILEMARK_RUN record, so the time and the file and index sizes do
        not grow with the count; each still takes a filemark record's room on the medium.
        When not all fit, as many as fit are written and EndOfMedium is raised (the
        position says how many)."""
        if count < 0:
            raise CartridgeError("filemark count must not be negative")
        self.wait_writes()
        self._ahead.clear()
        if count:
            self.check_writable()
            if self.position < len(self.index):
                self._cut_at_position()
            fit = min(count, max(0, self.capacity - self.used_bytes) // RECORD_HEADER_SIZE)
            if fit > 1:
                self._require(IncompatFeature.FILEMARK_RUNS)
                self._append(RecordKind.FILEMARK_RUN, b"", fit, 0)
            elif fit == 1:
                self._append(RecordKind.FILEMARK, b"", 0, 0)
            if fit < count:
                raise EndOfMedium(f"{self.barcode} is full ({self.capacity} bytes)")
        if sync:
            self.sync()
        return WriteResult(self.at_early_warning)

    def erase(self) -> None:
        """Erase from the position to the end of the medium (SSC long erase)."""
        self.wait_writes()
        self._ahead.clear()
        self.check_writable()
        self._cut_at_position()
        self.sync()

    def sync(self) -> None:
        """Make every record written so far durable, and the index with it."""
        self.wait_writes()
        if self._dirty and not self.readonly:
            error = self._pacer.take_error()
            if error is not None:  # Linux reports a writeback error once: it was ours
                raise error
            self._io.fsync()
            self.index.write_sidecar(self.path, self.uuid)
            self._dirty = False

    def update_mam_counters(self) -> None:
        """Fold this load's traffic into the MAM lifetime totals (at unload/close)."""
        self.wait_writes()
        if self.readonly:
            return
        c = self.counters
        mb_w, mb_r = c.written_native >> 20, c.read_native >> 20
        self.mam.set(0x0222, mb_w)
        self.mam.set(0x0223, mb_r)
        self.mam.add_int(0x0220, mb_w)
        self.mam.add_int(0x0221, mb_r)
        self.mam.set(0x0000, self.remaining_bytes >> 20)
        if c.written_native:
            self.mam.set(0x0804, time.strftime("%Y%m%d%H%M", time.gmtime()))
        self.mam.save()

    def close(self) -> None:
        self._ahead.release()
        if self._closed:
            return
        parts, self._partitions = self._partitions, {}
        for part in parts.values():
            part.close()
        wb, self._wb = self._wb, None
        if wb is not None:
            lost = wb.close()
            if lost is not None:  # nobody asked since: say so where an admin will look
                log.error("%s: %s", self.barcode, lost)
        self._pacer.close()  # no fdatasync may outlive the descriptor
        try:
            self.sync()
            self.update_mam_counters()
        finally:
            self._closed = True
            self._io.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> TapeCartridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- partitions ---------------------------------------------------------------------
    @property
    def partition_count(self) -> int:
        return 1 + self.extra_partitions

    def partition_path(self, number: int) -> Path:
        """Where partition ``number`` (1 or more) lives: a cartridge file of its own."""
        return self.path.with_name(f"{self.path.name}.p{number}")

    def partition(self, number: int) -> TapeCartridge:
        """Partition ``number`` of this cartridge (0 is this file), opened on first use and
        closed with it. Each partition is its own stream of objects, numbered from 0."""
        if number == 0:
            return self
        if not 0 < number <= self.extra_partitions:
            raise CartridgeError(f"{self.barcode} has no partition {number}")
        part = self._partitions.get(number)
        if part is None:
            part = TapeCartridge.open(self.partition_path(number), readonly=self.readonly,
                                      count_load=False)
            part.set_crypto(self.crypto)
            self._partitions[number] = part
        return part

    @property
    def medium_capacity(self) -> int:
        """The whole medium's capacity: what its partitions share."""
        return self.capacity + sum(self.partition(n).capacity
                                   for n in range(1, self.partition_count))

    def format_partitions(self, leading: list[int]) -> None:
        """FORMAT MEDIUM: erase the whole cartridge and lay it out as ``len(leading) + 1``
        partitions, the first ones of ``leading`` bytes each and the last one the rest of
        the medium (no ``leading``: one partition, the whole medium). The header is flagged
        PARTITIONS before it names more than one, and partition files are made before the
        header names them, so a crash leaves at worst an unused file."""
        self.wait_writes()
        self.check_writable()
        if self.worm:
            raise WormOverwrite(f"{self.barcode} is WORM: it cannot be formatted")
        total = self.medium_capacity
        rest = total - sum(leading)
        if any(n <= 0 for n in leading) or rest <= 0:
            raise CartridgeError(f"partitions of {leading} bytes leave no room in {total}")
        sizes = [*leading, rest]
        for part in self._partitions.values():
            part.close()
        self._partitions = {}
        for number in range(1, 1 + max(self.extra_partitions, len(leading))):
            name = self.partition_path(number).name
            for side in self.path.parent.glob(f"{name}*"):
                side.unlink(missing_ok=True)
        self.position = 0
        self._cut_at_position()
        self.sync()
        if leading:
            self._require(IncompatFeature.PARTITIONS)
            for number, size in enumerate(sizes[1:], start=1):
                TapeCartridge.create(self.partition_path(number), self.barcode, self.media,
                                     capacity=size)
        self._rewrite_header(capacity=sizes[0], extra_partitions=len(leading))
        self.capacity = sizes[0]
        self.ew_point = sizes[0] - early_warning_margin(sizes[0])
        self.extra_partitions = len(leading)

    # -- file-level summaries ----------------------------------------------------------
    def tape_files(self) -> Iterator[TapeFile]:
        """The tape files in order, as an iterator with flat memory: the empty files between
        the filemarks of a run come as one entry (``count`` files), so a run of 10 million
        filemarks is one entry, not 10 million. The last entry is the file after the last
        filemark, left out when empty (unless the tape holds nothing else)."""
        self.wait_writes()
        idx = self.index
        eod = len(idx)
        n = start = 0
        for i in range(len(idx.fm_first)):
            fm, count = idx.fm_first[i], idx.filemark_count(i)
            yield TapeFile(n, start, fm - start, self._native_bytes(start, fm))
            if count > 1:  # the empty files between the filemarks of a run
                yield TapeFile(n + 1, fm + 1, 0, 0, count - 1)
            n += count
            start = fm + count
        if start < eod or n == 0:
            yield TapeFile(n, start, eod - start, self._native_bytes(start, eod))

    def _native_bytes(self, start: int, end: int) -> int:
        """Native bytes of the data blocks start..end-1 (no filemark among them), summed a
        slice at a time so a file of millions of blocks needs no copy of its index."""
        idx = self.index
        total = 0
        if start >= end:
            return 0
        first = idx.record_of(start)
        last = idx.record_of(end - 1) + 1  # runs of data lie whole inside a tape file
        if not idx.run_rec:
            for lo in range(first, last, _SUM_SLICE):
                total += sum(m >> 16 for m in idx.meta[lo : min(lo + _SUM_SLICE, last)])
            return total
        for lo in range(first, last, _SUM_SLICE):
            total += sum(map(meta_native_bytes, idx.meta[lo : min(lo + _SUM_SLICE, last)]))
        return total


class TapeFile(NamedTuple):
    """One tape file (``count`` 1), or ``count`` empty ones in a row (between the filemarks
    of a run): where it starts, its data blocks and their native bytes."""

    number: int
    first_object: int
    blocks: int
    native_bytes: int
    count: int = 1


_SUM_SLICE = 1 << 16  # index entries summed per slice (512 KiB of the meta array)


def verify_cartridge(path: Path) -> VerifyReport:
    """Walk every record of a cartridge file and check framing and checksums (read-only).

    This ignores the index sidecar on purpose: it is the independent check of the data.
    """
    path = Path(path)
    report = VerifyReport(path)
    medium = open_medium(path, os.open(path, os.O_RDONLY), readonly=True)
    try:
        _parse_header(medium.pread(HEADER_SIZE, 0), path)
        size = medium.size()
        off = DATA_START
        dctx = zstandard.ZstdDecompressor()
        while off < size:
            rec = RecordHeader.unpack(medium.pread(RECORD_HEADER_SIZE, off))
            if rec is None:
                report.errors.append(f"object {report.objects}: damaged record header at "
                                     f"offset {off}")
                report.torn_tail_bytes = size - off
                break
            kind, flags, stored, native, _fno, obj, pcrc = rec
            if obj != report.objects:
                report.errors.append(f"offset {off}: object number {obj}, expected "
                                     f"{report.objects}")
            if off + RECORD_HEADER_SIZE + stored > size:
                report.errors.append(f"object {obj}: record cut short at end of file")
                report.torn_tail_bytes = size - off
                break
            try:
                payload = medium.pread(stored, off + RECORD_HEADER_SIZE)
            except OSError as exc:  # a dedup store's chunk is missing or damaged
                report.errors.append(f"object {obj}: {exc}")
                payload, pcrc = b"", 0
            if crc32c.crc32c(payload) != pcrc:
                report.errors.append(f"object {obj}: checksum mismatch")
            elif kind == _DATA_RUN:
                _verify_run(report, dctx, obj, flags, payload, native)
            elif flags & FLAG_COMPRESSED and not flags & FLAG_ENCRYPTED:  # sealed: no key here
                try:
                    if len(dctx.decompress(payload, max_output_size=native)) != native:
                        report.errors.append(f"object {obj}: wrong decompressed length")
                except zstandard.ZstdError:
                    report.errors.append(f"object {obj}: compressed payload is damaged")
            report.objects += rec.objects
            if kind == _DATA_RUN:
                report.blocks += rec.objects
                report.native_bytes += rec.objects * (native & RUN_SIZE_MASK)
                report.stored_bytes += stored
            elif kind != RecordKind.DATA:
                report.filemarks += rec.objects
            else:
                report.blocks += 1
                report.native_bytes += native
                report.stored_bytes += stored
            off += RECORD_HEADER_SIZE + stored
    finally:
        medium.close()
    return report


def _verify_run(report: VerifyReport, dctx: zstandard.ZstdDecompressor, obj: int, flags: int,
                payload: bytes, native: int) -> None:
    """verify_cartridge's check of a DATA_RUN's payload: it holds at least its blocks."""
    want = (native >> RUN_COUNT_SHIFT) * (native & RUN_SIZE_MASK)
    if flags & FLAG_ENCRYPTED:
        report.errors.append(f"object {obj}: an encrypted run of blocks")
        return
    if not flags & FLAG_COMPRESSED:
        have = len(payload)
    else:
        try:
            have = len(dctx.decompress(payload, max_output_size=RUN_MAX_BYTES))
        except zstandard.ZstdError:
            report.errors.append(f"object {obj}: compressed payload is damaged")
            return
    if have < want:
        report.errors.append(f"object {obj}: wrong decompressed length")


def rebuild_index(path: Path) -> int:
    """Throw the index sidecar away and rebuild it from the records; returns objects found.
    A torn tail is cut off, as at any read-write open."""
    path = Path(path)
    PositionIndex.sidecar(path).unlink(missing_ok=True)
    cart = TapeCartridge.open(path, count_load=False)
    try:
        cart.index.write_sidecar(path, cart.uuid)
        return cart.eod
    finally:
        cart.close()
