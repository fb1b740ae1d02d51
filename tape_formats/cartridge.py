"""A virtual cartridge: one file of construct-defined records, plus its index and MAM sidecars.

API CONTRACT (implementation in progress; signatures are stable).

The tape is a sequence of *logical objects* numbered from 0 at BOP: data blocks and filemarks,
exactly as SSC counts them for READ POSITION / LOCATE. ``eod`` is the number of objects; the
position ``eod`` is end of data. Writing (a block or filemarks) at position p < eod first
discards every object from p on, as overwriting a real tape does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class RecordKind(enum.IntEnum):
    DATA = 1
    FILEMARK = 2
    EOD = 3  # what a read finds at end of data (never stored as an object)


@dataclass(frozen=True)
class MediaType:
    """A cartridge generation, e.g. LTO-8: density code, native capacity, barcode suffix."""

    name: str  # "LTO-8"
    suffix: str  # "L8"; WORM suffix "LW"
    worm_suffix: str
    density_code: int  # SSC density code (LTO-8: 0x5E)
    medium_type: int  # MODE header medium type (0x00 data, 0x01 WORM per IBM)
    capacity: int  # native bytes


class CartridgeError(Exception):
    """Base of every cartridge failure; message is one line fit for an admin."""


class WriteProtected(CartridgeError):
    """The cartridge is write protected (DATA PROTECT 27/00)."""


class WormOverwrite(CartridgeError):
    """A WORM cartridge refuses to overwrite anything before EOD (DATA PROTECT 30/0C)."""


class EndOfMedium(CartridgeError):
    """No room for the object at all (VOLUME OVERFLOW 00/02, EOM bit)."""


class CorruptRecord(CartridgeError):
    """A record's checksum or framing is wrong (MEDIUM ERROR 11/00); carries ``position``."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


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


class TapeCartridge:
    """An open cartridge. Not thread safe: one drive owns it at a time (flock enforces that
    across processes)."""

    path: Path
    barcode: str
    media: MediaType
    capacity: int  # native bytes, may be smaller than media.capacity (test cartridges)
    worm: bool
    write_protected: bool
    position: int
    eod: int

    @classmethod
    def create(
        cls,
        path: Path,
        barcode: str,
        media: MediaType,
        *,
        capacity: int | None = None,
        worm: bool = False,
    ) -> None: ...

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> TapeCartridge: ...

    # positioning
    def rewind(self) -> None: ...  # durable (syncs) then position 0
    def locate(self, obj: int) -> None: ...  # 0 <= obj <= eod else CartridgeError
    def space_blocks(self, count: int) -> SpaceResult: ...  # count < 0 backward
    def space_filemarks(self, count: int) -> SpaceResult: ...
    def space_to_eod(self) -> None: ...
    def block_number_at(self, obj: int) -> tuple[int, int]: ...  # (file number, block in file)
    def filemarks_before(self, obj: int) -> int: ...

    # data
    def read_block(self, buf: memoryview | None = None) -> ReadResult: ...
    def write_block(self, data: bytes | memoryview, *, compress: bool = True) -> WriteResult: ...
    def write_filemarks(self, count: int = 1, *, sync: bool = True) -> WriteResult: ...
    def erase(self) -> None: ...  # discard everything from position on
    def sync(self) -> None: ...
    def close(self) -> None: ...

    # accounting
    @property
    def used_bytes(self) -> int: ...  # native bytes up to EOD
    @property
    def remaining_bytes(self) -> int: ...
    @property
    def at_early_warning(self) -> bool: ...
    @property
    def at_bop(self) -> bool: ...
    @property
    def at_eod(self) -> bool: ...
