"""The read-ahead's alternating buffers (tape_formats/read_ahead.py): a block too big for
the span, stored as is, is handed out without a copy and stays intact until the next-but-one
block is decoded; compressed blocks, span blocks and damage read as before."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tape_formats.cartridge import CorruptRecord, RecordKind, TapeCartridge
from tape_formats.media import MEDIA

BLOCK = 256 * 1024
TEXT = b"2026-12-03 host backup[4000]: wrote block ok\n"


@pytest.fixture
def big_blocks(tmp_path: Path):
    """A cartridge of 256 KiB blocks: 0-3 stored as is (random), 4-8 compressed (text)."""
    p = tmp_path / "B00001L8.vtape"
    TapeCartridge.create(p, "B00001L8", MEDIA["LTO-8"], capacity=64 << 20)
    rnd = random.Random(3)
    text = (TEXT * (BLOCK // len(TEXT) + 1))[:BLOCK]
    blocks = [rnd.randbytes(BLOCK) for _ in range(4)] + [text[i:] + text[:i] for i in range(5)]
    c = TapeCartridge.open(p)
    for b in blocks:
        c.write_block(b)
    c.sync()
    c.rewind()
    yield c, blocks
    c.close()


def test_a_stored_block_read_ahead_is_handed_out_without_a_copy(big_blocks) -> None:
    c, blocks = big_blocks
    views = []
    for i in range(3):
        c.read_ahead()
        buf = bytearray(BLOCK)
        r = c.read_block(buf, own=True)
        assert r.kind == RecordKind.DATA and bytes(r.data) == blocks[i]
        assert buf == bytearray(BLOCK)  # the read-ahead's buffer itself: nothing copied
        views.append(r.data)
        c.read_ahead()  # the next block decoded: this one's view is still intact
        assert bytes(views[i]) == blocks[i]
    assert bytes(views[2]) == blocks[2]  # (block 1's buffer now holds block 3)


def test_without_own_a_read_gets_its_own_copy(big_blocks) -> None:
    c, blocks = big_blocks
    c.read_ahead()
    first = c.read_block().data
    for _ in range(3):
        c.read_ahead()
        c.read_block()
    assert first == blocks[0]


def test_every_block_reads_back_through_and_without_the_read_ahead(big_blocks) -> None:
    c, blocks = big_blocks
    assert [bytes(c.read_block(bytearray(BLOCK), own=True).data) for _ in blocks] == blocks
    c.rewind()
    got = []
    for _ in blocks:
        c.read_ahead()
        got.append(bytes(c.read_block(bytearray(BLOCK), own=True).data))
    assert got == blocks


@pytest.mark.parametrize("damage", ["flipped byte", "cut short"])
def test_a_damaged_compressed_record_is_still_reported(big_blocks, damage: str) -> None:
    c, blocks = big_blocks
    obj = 5 if damage == "flipped byte" else 8
    off = c.index.offsets[obj] + 64
    with open(c.path, "r+b") as f:
        if damage == "cut short":  # a torn tail the index still lists
            f.truncate(off)
        else:
            f.seek(off)
            byte = f.read(1)
            f.seek(off)
            f.write(bytes([byte[0] ^ 0xFF]))
    c.locate(obj - 1)
    c.read_ahead()
    assert bytes(c.read_block(bytearray(BLOCK), own=True).data) == blocks[obj - 1]
    c.read_ahead()
    assert c._ahead.obj == -1  # nothing cached: the READ meets the damage itself
    with pytest.raises(CorruptRecord):
        c.read_block(bytearray(BLOCK), own=True)



def test_small_blocks_from_the_span_are_copied_out(tmp_path: Path) -> None:
    """A block read through the span is copied into the caller's buffer: the span is
    refilled in place, so a view of it would not last."""
    p = tmp_path / "C00001L8.vtape"
    TapeCartridge.create(p, "C00001L8", MEDIA["LTO-8"], capacity=64 << 20)
    rnd = random.Random(4)
    blocks = [rnd.randbytes(32768) for _ in range(40)]  # 1.25 MiB: the span is refilled
    with TapeCartridge.open(p) as c:
        for b in blocks:
            c.write_block(b)
        c.rewind()
        for b in blocks:
            c.read_ahead()
            buf = bytearray(32768)
            r = c.read_block(buf, own=True)
            c.read_ahead()
            assert bytes(r.data) == b and buf == b
