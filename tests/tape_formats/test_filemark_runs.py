"""Runs of filemarks: WRITE FILEMARKS with a count of N is one FILEMARK_RUN record of N objects.

Positions, SPACE, LOCATE, reads and overwrites must treat a run exactly as N filemark records
(as the reference list below does), reopening must give the same tape from the sidecar and
from the records alone, and the file and its index must not grow with N.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tape_formats.cartridge import (
    EndOfMedium,
    RecordKind,
    TapeCartridge,
    rebuild_index,
    verify_cartridge,
)
from tape_formats.index import PositionIndex
from tape_formats.media import MEDIA
from tape_formats.records import RECORD_HEADER_SIZE, RecordHeader

LTO8 = MEDIA["LTO-8"]
FM = None  # a filemark in the reference list


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "R00001L8.vtape"
    TapeCartridge.create(p, "R00001L8", LTO8, capacity=1 << 30)
    return p


def _objects(cart: TapeCartridge) -> list[bytes | None]:
    """Every object from BOP, read one by one (the slow, obvious way)."""
    cart.rewind()
    out: list[bytes | None] = []
    while True:
        r = cart.read_block()
        if r.kind is RecordKind.EOD:
            return out
        out.append(FM if r.kind is RecordKind.FILEMARK else bytes(r.data))


def _write(cart: TapeCartridge, objs: list[bytes | None | int]) -> list[bytes | None]:
    """Write blocks (bytes) and filemark counts (int); the expected object list."""
    want: list[bytes | None] = []
    for o in objs:
        if isinstance(o, int):
            cart.write_filemarks(o, sync=False)
            want += [FM] * o
        else:
            cart.write_block(o)
            want.append(o)
    return want


def test_a_run_is_one_record_of_many_objects(path: Path) -> None:
    with TapeCartridge.open(path) as c:
        want = _write(c, [b"a" * 100, 1_000_000, b"b" * 50, 1, b"c"])
        assert c.eod == len(want) == 1_000_004
        assert c.index.records == 5 and c.files == 1_000_001
    size = path.stat().st_size
    assert size < 1024 and PositionIndex.sidecar(path).stat().st_size < 1024
    report = verify_cartridge(path)
    assert report.ok and (report.objects, report.filemarks, report.blocks) == (1_000_004,
                                                                                 1_000_001, 3)
    with TapeCartridge.open(path) as c:
        assert c.eod == 1_000_004 and c.used_bytes > 1_000_000 * RECORD_HEADER_SIZE
        c.locate(500_000)
        assert c.read_block().kind is RecordKind.FILEMARK and c.position == 500_001
        c.locate(1_000_001)
        assert bytes(c.read_block().data) == b"b" * 50
        assert c.read_block().kind is RecordKind.FILEMARK
        assert bytes(c.read_block().data) == b"c"
        assert c.read_block().kind is RecordKind.EOD
        assert c.block_number_at(1_000_001) == (1_000_000, 0)
        assert c.block_number_at(700) == (699, 0)
        assert c.file_start(1) == 2 and c.file_start(1_000_000) == 1_000_001
        assert c.file_start(1_000_001) == 1_000_003 and c.file_start(1_000_002) is None
        # the run's 999 999 empty files are one entry: the listing does not grow with it
        assert list(c.tape_files()) == [
            (0, 0, 1, 100, 1), (1, 2, 0, 0, 999_999),
            (1_000_000, 1_000_001, 1, 50, 1), (1_000_001, 1_000_003, 1, 1, 1)]


def test_space_into_and_over_a_run(path: Path) -> None:
    with TapeCartridge.open(path) as c:
        _write(c, [b"x", 10, b"y", b"z", 3])  # x F*10 y z F F F: objects 0..15, EOD 16
        c.rewind()
        r = c.space_filemarks(4)
        assert (r.moved, r.stopped, c.position) == (4, None, 5)
        assert c.filemarks_before(c.position) == 4
        r = c.space_blocks(3)  # a filemark right here: stops past it
        assert (r.moved, r.stopped, c.position) == (0, RecordKind.FILEMARK, 6)
        r = c.space_filemarks(-2)  # back onto the BOP side of the filemark at 4
        assert (r.moved, r.stopped, c.position) == (2, None, 4)
        r = c.space_blocks(-2)  # the filemark at 3 stops it
        assert (r.moved, r.stopped, c.position) == (0, RecordKind.FILEMARK, 3)
        c.locate(11)  # y
        r = c.space_blocks(-1)  # back over the last filemark of the run
        assert (r.moved, r.stopped, c.position) == (0, RecordKind.FILEMARK, 10)
        r = c.space_filemarks(4)  # the run's last filemark, then the three after z
        assert (r.moved, r.stopped, c.position) == (4, None, 16)
        c.locate(8)
        r = c.space_filemarks(100)
        assert (r.moved, r.stopped, c.position) == (6, RecordKind.EOD, 16)
        r = c.space_filemarks(-100)
        assert (r.moved, r.stopped, c.position) == (13, "BOP", 0)


@pytest.mark.parametrize("at, kept_records", [(1, 2), (2, 3), (3, 3), (9, 3), (11, 3)])
def test_writing_inside_a_run_cuts_it_there(path: Path, at: int, kept_records: int) -> None:
    """SSC: writing at a position discards everything from it on; the run keeps the
    filemarks before the position (a FILEMARK when one is left, nothing when none)."""
    with TapeCartridge.open(path) as c:
        want = _write(c, [b"x", 10, b"tail"])  # x F*10 tail: EOD 12
        c.locate(at)
        c.write_block(b"new")
        want = want[:at] + [b"new"]
        assert c.eod == at + 1 and c.index.records == kept_records
        assert _objects(c) == want
    for how in ("sidecar", "records"):
        if how == "records":
            rebuild_index(path)
        assert verify_cartridge(path).ok
        with TapeCartridge.open(path) as c:
            assert _objects(c) == want, how
            assert c.files == want.count(FM)


def test_filemarks_inside_a_run_are_cut_too(path: Path) -> None:
    with TapeCartridge.open(path) as c:
        _write(c, [b"x", 10])
        c.locate(4)
        c.write_filemarks(2)  # three of the run stay, two new ones follow
        assert c.eod == 6 and c.index.records == 3
        assert _objects(c) == [b"x"] + [FM] * 5
        c.locate(3)
        c.erase()
        assert _objects(c) == [b"x", FM, FM]
    with TapeCartridge.open(path) as c:
        assert _objects(c) == [b"x", FM, FM]
        raw = c.index.offsets[1]
    head = RecordHeader.unpack(path.read_bytes()[raw:raw + RECORD_HEADER_SIZE])
    assert head is not None and head.kind == RecordKind.FILEMARK_RUN and head.native_len == 2


def test_only_the_filemarks_that_fit_are_written(tmp_path: Path) -> None:
    p = tmp_path / "S00001L8.vtape"
    TapeCartridge.create(p, "S00001L8", LTO8, capacity=100 * RECORD_HEADER_SIZE)
    with TapeCartridge.open(p) as c:
        c.write_filemarks(40)
        with pytest.raises(EndOfMedium):
            c.write_filemarks(1_000)
        assert c.eod == 100 and c.remaining_bytes == 0
        with pytest.raises(EndOfMedium):
            c.write_filemarks(1)
        assert c.eod == 100


def test_random_sequences_match_a_list_of_filemarks(path: Path) -> None:
    """Random writes, runs, locates and overwrites against the obvious list, reopened."""
    rnd = random.Random(5)
    for _round in range(6):
        with TapeCartridge.open(path) as c:
            c.rewind()
            c.erase()
            want: list[bytes | None] = []
            for _ in range(40):
                roll = rnd.random()
                if roll < 0.3 and want:
                    c.locate(rnd.randrange(len(want) + 1))
                    continue
                p = c.position
                if roll < 0.65:
                    block = rnd.randbytes(rnd.randrange(1, 40))
                    c.write_block(block)
                    want = want[:p] + [block]
                else:
                    n = rnd.choice([1, 2, 3, 7, 50])
                    c.write_filemarks(n, sync=False)
                    want = want[:p] + [FM] * n
                assert c.eod == len(want) and c.position == p + (1 if roll < 0.65 else n)
            fms = [i for i, o in enumerate(want) if o is FM]
            for probe in range(len(want) + 1):
                assert c.filemarks_before(probe) == sum(1 for i in fms if i < probe)
            assert _objects(c) == want
        with TapeCartridge.open(path) as c:
            assert _objects(c) == want
