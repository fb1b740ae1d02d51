"""Incompatible format features: a cartridge says in its header what a reader must know.

A build that reads only version 1 (blocks and single filemarks) must refuse a cartridge with a
run of filemarks instead of taking the run for a damaged tail and cutting it off; a cartridge
without such features stays version 1 so those builds keep reading it.
"""

from __future__ import annotations

import os
from pathlib import Path

import crc32c
import pytest

from tape_formats import cartridge, records
from tape_formats.cartridge import NotACartridge, TapeCartridge, verify_cartridge
from tape_formats.media import MEDIA
from tape_formats.records import (
    CARTRIDGE_HEADER_BODY,
    FORMAT_VERSION,
    FORMAT_VERSION_FEATURES,
    HEADER_SIZE,
    IncompatFeature,
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "F00001L8.vtape"
    TapeCartridge.create(p, "F00001L8", MEDIA["LTO-8"], capacity=1 << 30)
    return p


def _header(path: Path):
    return CARTRIDGE_HEADER_BODY.parse(path.read_bytes()[:HEADER_SIZE])


def _patch_header(path: Path, **changes: int) -> None:
    """Rewrite the header as another build would have written it (CRC kept valid)."""
    raw = bytearray(path.read_bytes()[:HEADER_SIZE])
    fields = dict(CARTRIDGE_HEADER_BODY.parse(raw))
    fields.pop("_io", None)
    fields.update(changes)
    body = CARTRIDGE_HEADER_BODY.build(fields).ljust(HEADER_SIZE - 4, b"\0")
    with open(path, "r+b") as f:
        f.write(body + crc32c.crc32c(body).to_bytes(4, "little"))


def test_plain_cartridges_stay_version_1(path: Path) -> None:
    with TapeCartridge.open(path) as c:
        c.write_block(b"x" * 100)
        c.write_filemarks(1)
        assert c.format_features == IncompatFeature(0)
    hdr = _header(path)
    assert hdr.version == FORMAT_VERSION and hdr.incompat == 0


def test_the_first_run_flags_the_cartridge(path: Path) -> None:
    with TapeCartridge.open(path) as c:
        c.write_block(b"x" * 100)
        c.write_filemarks(5)
        assert c.format_features == IncompatFeature.FILEMARK_RUNS
    hdr = _header(path)
    assert hdr.version == FORMAT_VERSION_FEATURES
    assert hdr.incompat == IncompatFeature.FILEMARK_RUNS
    with TapeCartridge.open(path) as c:  # this build reads it
        assert c.eod == 6 and c.files == 5
    assert verify_cartridge(path).ok


def test_runs_written_before_the_flag_are_flagged_at_open(path: Path) -> None:
    with TapeCartridge.open(path) as c:
        c.write_filemarks(3)
    _patch_header(path, version=FORMAT_VERSION, incompat=0)  # as the unflagged build left it
    with TapeCartridge.open(path, readonly=True) as c:
        assert c.eod == 3  # read-only opens leave the file alone
    assert _header(path).version == FORMAT_VERSION
    with TapeCartridge.open(path) as c:
        assert c.eod == 3
    assert _header(path).incompat == IncompatFeature.FILEMARK_RUNS


def test_unknown_features_are_refused_untouched(path: Path) -> None:
    with TapeCartridge.open(path) as c:
        c.write_block(b"y" * 10)
    _patch_header(path, version=FORMAT_VERSION_FEATURES, incompat=0x80)
    before = path.read_bytes()
    with pytest.raises(NotACartridge, match="newer vtl"):
        TapeCartridge.open(path)
    assert path.read_bytes() == before


def test_a_version_1_only_reader_refuses_a_flagged_cartridge(path: Path) -> None:
    """What an older build checks (version == 1) fails once a run is written."""
    with TapeCartridge.open(path) as c:
        c.write_filemarks(2)
    assert _header(path).version != 1
    assert os.path.getsize(path) > HEADER_SIZE


def test_the_first_run_of_blocks_flags_the_cartridge(path: Path) -> None:
    """Runs of blocks on: single blocks and filemarks leave the cartridge at version 1; the
    first DATA_RUN record sets DATA_RUNS. A build that knows every bit but this one (the
    builds before it) refuses the cartridge untouched instead of cutting the run off."""
    with TapeCartridge.open(path) as c:
        c.data_runs = True
        c.write_block(b"x" * 512)
        assert c.write_blocks(memoryview(b"y" * 512), 512) == 1  # one block: a record
        c.write_filemarks(1)
        assert c.format_features == IncompatFeature(0)
        assert c.write_blocks(memoryview(b"z" * 512 * 10), 512) == 10
        assert c.format_features == IncompatFeature.DATA_RUNS
    hdr = _header(path)
    assert hdr.version == FORMAT_VERSION_FEATURES and hdr.incompat == IncompatFeature.DATA_RUNS
    with TapeCartridge.open(path) as c:  # this build reads it, and keeps the flag as it is
        assert c.eod == 13 and c.format_features == IncompatFeature.DATA_RUNS
    assert verify_cartridge(path).ok
    before = path.read_bytes()
    with pytest.MonkeyPatch.context() as mp:  # an older build's known bits
        mp.setattr(records, "KNOWN_INCOMPAT", records.KNOWN_INCOMPAT & ~IncompatFeature.DATA_RUNS)
        mp.setattr(cartridge, "KNOWN_INCOMPAT", records.KNOWN_INCOMPAT)
        with pytest.raises(NotACartridge, match="newer vtl"):
            TapeCartridge.open(path)
    assert path.read_bytes() == before


def test_old_cartridges_read_and_append_with_runs_on(path: Path) -> None:
    """One record per block written before, runs of blocks appended after: both read."""
    old = bytes(range(256)) * 2 * 30
    with TapeCartridge.open(path) as c:
        c.data_runs = False  # as builds before runs of blocks wrote them
        assert c.write_blocks(memoryview(old), 512) == 30
    with TapeCartridge.open(path) as c:
        c.data_runs = True
        c.space_to_eod()
        assert c.write_blocks(memoryview(old[::-1]), 512) == 30
        assert c.index.records == 31
        c.rewind()
        buf = memoryview(bytearray(60 * 512))
        assert c.read_blocks(buf, 512) == 60
        assert bytes(buf) == old + old[::-1]
