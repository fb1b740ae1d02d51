"""A dedup cartridge's recipe: where its payload bytes lie in the file, and which chunks
hold them, in order.

The payloads of all records, concatenated in file order, form the cartridge's *data
stream*; content-defined chunking cuts the stream (not each block), so a shift of the data
against block boundaries (one changed file early in a tar) does not change later chunks.

File layout (docs/store-format.md), little endian:
- header: ``VTLRCP2\\n`` (a *dense* skeleton: the cartridge file holds only the bytes outside
  the payloads, back to back) or ``VTLRCP1\\n`` (the older *sparse* skeleton: the cartridge
  file at its full size, payloads as holes), u16 length + UTF-8 path of the chunk store
  relative to the recipe's folder, u32 CRC32C of the above;
- then batches, one per sync point: ``RB``, u16 flags, u32 extents, u32 chunks, u32 CRC32C of
  the body; body: extents as (i64 file offset, i64 length), chunks as (u32 length, 32-byte
  BLAKE3), then with flag 1 (every batch of a dense recipe) the u64 length of the dense
  skeleton at this sync point. The stream offsets are the running sums. Each batch ends on
  a point where the extents and the chunks cover the same stream length.
A torn last batch (a crash while appending) fails its CRC and is ignored: the cartridge then
ends at its previous sync point, as the plain file does. A rewrite (after a truncate) goes
to a temporary file renamed over the recipe.
"""

from __future__ import annotations

import os
import struct
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import crc32c

from tape_formats.durable import fsync_dir

MAGIC = b"VTLRCP1\n"  # sparse skeleton (written before dense ones; still read and appended)
MAGIC_DENSE = b"VTLRCP2\n"
_BATCH = struct.Struct("<2sHIII")
_SKELETON = struct.Struct("<Q")
FLAG_SKELETON = 1  # the batch body ends with the dense skeleton's length
_EXTENT = struct.Struct("<qq")
_CHUNK = struct.Struct("<I32s")
ID_SIZE = 32


class RecipeError(ValueError):
    """The recipe's header is not one of ours."""


@dataclass
class Recipe:
    """The parsed content of a recipe file."""

    store: str  # chunk store path relative to the recipe's folder
    ext_off: array = field(default_factory=lambda: array("q"))
    ext_len: array = field(default_factory=lambda: array("q"))
    ch_len: array = field(default_factory=lambda: array("q"))
    ch_ids: list[bytes] = field(default_factory=list)
    good_end: int = 0  # file offset after the last whole batch
    file_size: int = 0
    #: the dense skeleton's length at the last whole batch; None: a sparse skeleton
    skeleton: int | None = None


def header(store: str, *, dense: bool) -> bytes:
    raw = (MAGIC_DENSE if dense else MAGIC) + struct.pack("<H", len(store.encode())) \
        + store.encode()
    return raw + crc32c.crc32c(raw).to_bytes(4, "little")


def batch(ext: list[tuple[int, int]], chunks: list[tuple[int, bytes]],
          skeleton: int | None = None) -> bytes:
    """One sync point's batch; ``skeleton``: the dense skeleton's length (dense recipes)."""
    body = b"".join(_EXTENT.pack(o, n) for o, n in ext) + b"".join(
        _CHUNK.pack(n, i) for n, i in chunks)
    flags = 0
    if skeleton is not None:
        body += _SKELETON.pack(skeleton)
        flags = FLAG_SKELETON
    return _BATCH.pack(b"RB", flags, len(ext), len(chunks), crc32c.crc32c(body)) + body


def load(path: Path) -> Recipe:
    """Parse a recipe; RecipeError when its header is not one of ours."""
    raw = Path(path).read_bytes()
    if raw[:8] not in (MAGIC, MAGIC_DENSE) or len(raw) < 14:
        raise RecipeError(f"{path}: not a recipe")
    n = struct.unpack_from("<H", raw, 8)[0]
    end = 10 + n
    if len(raw) < end + 4 or crc32c.crc32c(raw[:end]) != int.from_bytes(raw[end:end + 4],
                                                                       "little"):
        raise RecipeError(f"{path}: recipe header is damaged")
    dense = raw[:8] == MAGIC_DENSE
    rec = Recipe(raw[10:end].decode())
    off = end + 4
    rec.good_end = off
    while off + _BATCH.size <= len(raw):
        magic, flags, n_ext, n_ch, crc = _BATCH.unpack_from(raw, off)
        size = n_ext * _EXTENT.size + n_ch * _CHUNK.size
        if flags & FLAG_SKELETON:
            size += _SKELETON.size
        body_at = off + _BATCH.size
        if magic != b"RB" or bool(flags & FLAG_SKELETON) != dense or body_at + size > len(
                raw) or crc32c.crc32c(raw[body_at:body_at + size]) != crc:
            break
        for i in range(n_ext):
            o, length = _EXTENT.unpack_from(raw, body_at + i * _EXTENT.size)
            rec.ext_off.append(o)
            rec.ext_len.append(length)
        at = body_at + n_ext * _EXTENT.size
        for i in range(n_ch):
            length, cid = _CHUNK.unpack_from(raw, at + i * _CHUNK.size)
            rec.ch_len.append(length)
            rec.ch_ids.append(cid)
        if dense:
            rec.skeleton = _SKELETON.unpack_from(raw, body_at + size - _SKELETON.size)[0]
        off = body_at + size
        rec.good_end = off
    rec.file_size = len(raw)
    return rec


def write_new(path: Path, store: str, ext: list[tuple[int, int]],
              chunks: list[tuple[int, bytes]], skeleton: int | None = None) -> None:
    """Write a whole recipe under a temporary name and rename it over ``path`` (durable):
    a dense one when ``skeleton`` (its length) is given, else a sparse one."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        data = header(store, dense=skeleton is not None)
        if ext or chunks or skeleton is not None:
            data += batch(ext, chunks, skeleton)
        if os.write(fd, data) != len(data):
            raise OSError("short write")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(path.parent)


def append(path: Path, good_end: int, data: bytes) -> int:
    """Append one batch at ``good_end`` (cutting a torn tail first); returns the new end."""
    fd = os.open(path, os.O_WRONLY)
    try:
        if os.pwrite(fd, data, good_end) != len(data):
            raise OSError("short write")
        os.ftruncate(fd, good_end + len(data))
        os.fsync(fd)
    finally:
        os.close(fd)
    return good_end + len(data)
