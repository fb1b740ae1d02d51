"""Packing a block for the tape (tape_formats/block_packing.py): compress when it pays, stop
trying for a while after a run of blocks that do not shrink, and write small blocks at once
(``TapeCartridge.append_now``) only when the answer can be nothing but GOOD."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tape_formats.block_packing import MISSES_BEFORE_SKIP, SKIP_BLOCKS, BlockPacker
from tape_formats.cartridge import TapeCartridge, WriteProtected
from tape_formats.media import MEDIA
from tape_formats.records import FLAG_COMPRESSED, RECORD_HEADER_SIZE

TEXT = b"2026-12-03 host backup[4000]: wrote block ok\n" * 200


def test_incompressible_runs_skip_zstd_and_compressible_data_comes_back() -> None:
    packer = BlockPacker()
    tried = 0
    real = packer._cctx

    class Counting:  # counts the attempts
        def compress(self, data):
            nonlocal tried
            tried += 1
            return real.compress(data)

    packer._cctx = Counting()  # type: ignore[assignment]
    for _ in range(MISSES_BEFORE_SKIP + SKIP_BLOCKS):
        payload, flags, _ = packer.pack(os.urandom(4096), True)
        assert flags == 0 and len(payload) == 4096
    assert tried == MISSES_BEFORE_SKIP  # then SKIP_BLOCKS stored without trying
    # Text after the run: stored as it is until the next try, compressed from then on.
    flags = [packer.pack(TEXT, True)[1] for _ in range(SKIP_BLOCKS + 2)]
    assert flags[0] == FLAG_COMPRESSED  # the skip ran out with the random blocks
    assert all(f == FLAG_COMPRESSED for f in flags)


def test_a_failed_try_skips_again_and_a_compressing_block_resets() -> None:
    packer = BlockPacker()
    for _ in range(MISSES_BEFORE_SKIP):
        packer.pack(os.urandom(4096), True)
    stored = [packer.pack(TEXT, True)[1] for _ in range(SKIP_BLOCKS)]
    assert stored == [0] * SKIP_BLOCKS  # skipped: stored as they are, still readable
    assert packer.pack(TEXT, True)[1] == FLAG_COMPRESSED  # the try: compressed again
    packer.pack(os.urandom(4096), True)
    assert packer.pack(TEXT, True)[1] == FLAG_COMPRESSED  # one miss does not skip


def test_append_now_writes_only_plain_appends_before_early_warning(tmp_path: Path) -> None:
    path = tmp_path / "S00001L8.vtape"
    TapeCartridge.create(path, "S00001L8", MEDIA["LTO-8"], capacity=4 << 20)
    with TapeCartridge.open(path) as c:
        block = os.urandom(10240)
        assert c.append_now(block)
        assert c.append_now(TEXT)
        c.rewind()
        assert not c.append_now(block)  # not at end of data: write_block's way (a cut)
        assert c.eod == 2
        assert c.read_block().data == block
        assert c.read_block().data == TEXT
        while c.append_now(block):  # up to the block that could reach early warning
            pass
        assert not c.at_early_warning
        assert c.used_bytes + RECORD_HEADER_SIZE + len(block) >= c.ew_point
        assert c.write_block(block).early_warning  # the general way reports it
        c.set_write_protect(True)
        with pytest.raises(WriteProtected):
            c.append_now(b"x")
