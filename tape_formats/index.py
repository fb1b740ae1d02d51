"""The position index of a cartridge: where every logical object starts in the file.

LOCATE and SPACE must not scan the tape, so the index keeps, per object, its record's file
offset and a packed (native length, compressed, kind) word, plus the sorted list of filemark
positions, which turns "space N filemarks" into a bisect. It lives in memory while the
cartridge is open and in an append-only sidecar file, extended at every durable point
(filemark, rewind, unload, close); after a crash the tail past the last durable point is
re-read from the records themselves.
"""

from __future__ import annotations

import bisect
import os
import sys
from array import array
from pathlib import Path

from tape_formats.records import INDEX_ENTRY_SIZE, INDEX_HEADER, INDEX_HEADER_SIZE

KIND_DATA = 1
KIND_FILEMARK = 2


def pack_meta(kind: int, native_len: int, compressed: bool) -> int:
    return (native_len << 16) | (int(compressed) << 8) | kind


class PositionIndex:
    """In-memory index plus its sidecar. ``offsets[i]`` is object i's record offset;
    ``end`` is the file offset of end of data (where the next record goes)."""

    def __init__(self, data_start: int) -> None:
        self.offsets = array("Q")
        self.meta = array("Q")
        self.filemarks = array("Q")
        self.end = data_start
        self.data_start = data_start
        self.durable_count = 0  # entries already in the sidecar

    def __len__(self) -> int:
        return len(self.offsets)

    def append(self, offset: int, size: int, kind: int, native_len: int, compressed: bool) -> None:
        if kind == KIND_FILEMARK:
            self.filemarks.append(len(self.offsets))
        self.offsets.append(offset)
        self.meta.append(pack_meta(kind, native_len, compressed))
        self.end = offset + size

    def kind(self, obj: int) -> int:
        return self.meta[obj] & 0xFF

    def native_len(self, obj: int) -> int:
        return self.meta[obj] >> 16

    def truncate(self, obj: int) -> None:
        """Drop objects obj.. (an overwrite in the middle of the tape)."""
        if obj >= len(self.offsets):
            return
        self.end = self.offsets[obj]
        del self.offsets[obj:]
        del self.meta[obj:]
        del self.filemarks[bisect.bisect_left(self.filemarks, obj) :]
        self.durable_count = min(self.durable_count, obj)

    # filemark arithmetic -------------------------------------------------------------
    def filemarks_before(self, obj: int) -> int:
        return bisect.bisect_left(self.filemarks, obj)

    def next_filemark(self, obj: int) -> int | None:
        i = bisect.bisect_left(self.filemarks, obj)
        return self.filemarks[i] if i < len(self.filemarks) else None

    def prev_filemark(self, obj: int) -> int | None:
        """The last filemark strictly before obj."""
        i = bisect.bisect_left(self.filemarks, obj) - 1
        return self.filemarks[i] if i >= 0 else None

    # sidecar -------------------------------------------------------------------------
    @staticmethod
    def sidecar(path: Path) -> Path:
        return path.with_name(path.name + ".idx")

    def load_sidecar(self, path: Path, uuid: bytes) -> bool:
        """Read the sidecar if it belongs to this cartridge; False when absent or foreign."""
        side = self.sidecar(path)
        try:
            raw = side.read_bytes()
        except FileNotFoundError:
            return False
        try:
            hdr = INDEX_HEADER.parse(raw[:INDEX_HEADER_SIZE])
        except Exception:
            return False
        if hdr.uuid != uuid:
            return False
        body = raw[INDEX_HEADER_SIZE:]
        body = body[: len(body) - len(body) % INDEX_ENTRY_SIZE]
        words = array("Q")
        words.frombytes(body)
        if sys.byteorder != "little":  # pragma: no cover - the sidecar is little-endian
            words.byteswap()
        self.offsets = words[0::2]
        self.meta = words[1::2]
        self.filemarks = array(
            "Q", (i for i, m in enumerate(self.meta) if m & 0xFF == KIND_FILEMARK)
        )
        self.durable_count = len(self.offsets)
        return True

    def write_sidecar(self, path: Path, uuid: bytes, fsync: bool = True) -> None:
        """Append the entries added since the last durable point (rewrite if truncated)."""
        side = self.sidecar(path)
        n = len(self.offsets)
        mode = "r+b" if side.exists() else "w+b"
        with open(side, mode) as f:
            if mode == "w+b" or f.read(INDEX_HEADER_SIZE)[:8] != INDEX_HEADER.build(
                {"uuid": uuid}
            )[:8]:
                f.seek(0)
                f.truncate()
                f.write(INDEX_HEADER.build({"uuid": uuid}))
                start = 0
            else:
                start = self.durable_count
            words = array("Q", bytes(16 * (n - start)))
            words[0::2] = self.offsets[start:n]
            words[1::2] = self.meta[start:n]
            f.truncate(INDEX_HEADER_SIZE + start * INDEX_ENTRY_SIZE)
            f.seek(INDEX_HEADER_SIZE + start * INDEX_ENTRY_SIZE)
            f.write(words.tobytes())
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        self.durable_count = n

    def drop_sidecar_after(self, path: Path, obj: int) -> None:
        """Shorten the sidecar to obj entries before the data file is cut (crash order)."""
        side = self.sidecar(path)
        if not side.exists():
            return
        with open(side, "r+b") as f:
            size = INDEX_HEADER_SIZE + obj * INDEX_ENTRY_SIZE
            if os.fstat(f.fileno()).st_size > size:
                f.truncate(size)
                os.fsync(f.fileno())
        self.durable_count = min(self.durable_count, obj)
