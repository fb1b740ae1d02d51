"""The read-ahead span (tape_formats/read_ahead.py): small records are read many at a time,
and what a READ returns stays exactly what was written, through overwrites and damage."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tape_formats.cartridge import CorruptRecord, RecordKind, TapeCartridge
from tape_formats.media import MEDIA
from tape_formats.read_ahead import SPAN_BYTES

TEXT = b"2026-12-03 host backup[4000]: wrote block ok\n" * 228


@pytest.fixture
def small_blocks(tmp_path: Path):
    """A cartridge of 10 KiB blocks, compressible and not, one filemark; and the blocks."""
    p = tmp_path / "A00001L8.vtape"
    TapeCartridge.create(p, "A00001L8", MEDIA["LTO-8"], capacity=64 << 20)
    rnd = random.Random(5)
    blocks = [rnd.randbytes(10240) if i % 3 else TEXT[:10240] for i in range(120)]
    c = TapeCartridge.open(p)
    for i, b in enumerate(blocks):
        c.write_block(b)
        if i == 60:
            c.write_filemarks(1, sync=False)
    c.sync()
    c.rewind()
    yield c, blocks
    c.close()


def _reads(c: TapeCartridge, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the bytes of every read of the file from now on."""
    sizes: list[int] = []
    preadv, pread = c._io.preadv, c._io.pread

    def counting_preadv(buffers: list, offset: int) -> int:
        sizes.append(sum(len(b) for b in buffers))
        return preadv(buffers, offset)

    def counting_pread(n: int, offset: int) -> bytes:
        sizes.append(n)
        return pread(n, offset)

    monkeypatch.setattr(c._io, "preadv", counting_preadv)
    monkeypatch.setattr(c._io, "pread", counting_pread)
    return sizes


def test_small_blocks_are_read_a_span_at_a_time(small_blocks, monkeypatch) -> None:
    c, blocks = small_blocks
    sizes = _reads(c, monkeypatch)
    got = []
    while True:
        c.read_ahead()
        r = c.read_block(bytearray(16384), own=True)
        if r.kind == RecordKind.EOD:
            break
        got.append(bytes(r.data) if r.kind == RecordKind.DATA else None)
    assert got == blocks[:61] + [None] + blocks[61:]
    stored = c.used_bytes
    assert len(sizes) <= stored // SPAN_BYTES + 3, sizes  # not one read per block


def test_a_write_empties_the_span(small_blocks, monkeypatch) -> None:
    c, blocks = small_blocks
    c.read_ahead()
    assert c.read_block().data == blocks[0]
    c.read_ahead()  # block 1 decoded, blocks 2.. in the span
    new = os.urandom(10240)
    c.locate(2)
    c.write_block(new)  # cuts the tape after block 1
    c.write_block(b"tail")
    c.locate(1)
    out = []
    for _ in range(4):
        c.read_ahead()
        r = c.read_block()
        out.append(r.data if r.kind == RecordKind.DATA else r.kind)
    assert out == [blocks[1], new, b"tail", RecordKind.EOD]


def test_a_damaged_record_in_the_span_is_reported_by_the_read(small_blocks) -> None:
    c, blocks = small_blocks
    off = c.index.offsets[5] + 100
    with open(c.path, "r+b") as f:  # flip a payload byte of block 5 on disk
        f.seek(off)
        byte = f.read(1)
        f.seek(off)
        f.write(bytes([byte[0] ^ 0xFF]))
    for i in range(5):
        c.read_ahead()
        assert c.read_block().data == blocks[i]
    c.read_ahead()  # caches nothing: the READ meets the damage itself
    assert c._ahead.obj == -1
    with pytest.raises(CorruptRecord):
        c.read_block()


def test_take_read_ahead_is_read_block_in_one_call(small_blocks) -> None:
    """The streaming READ's shortcut hands out what read_block would, moves and counts the
    same, and declines (nothing moved) whatever is not a decoded block of that length."""
    c, blocks = small_blocks
    buf = bytearray(16384)
    assert c.take_read_ahead(10240, buf) is None  # nothing read ahead yet
    for i in range(61):
        c.read_ahead()
        assert c.take_read_ahead(10239, buf) is None  # another length: declined
        assert c.position == i
        before = (c.counters.read_native, c.counters.read_stored)
        data = c.take_read_ahead(10240, buf)
        assert data is not None and bytes(data) == blocks[i]
        assert c.position == i + 1
        assert c.counters.read_native == before[0] + 10240
        assert c.counters.read_stored > before[1]
    c.read_ahead()  # the filemark: nothing held
    assert c.take_read_ahead(10240, buf) is None
    assert c.read_block(buf).kind == RecordKind.FILEMARK
    c.read_ahead()
    assert bytes(c.take_read_ahead(10240, buf)) == blocks[61]
