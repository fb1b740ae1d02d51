"""The cartridge file format: positioning, data integrity, capacity, WORM, crash recovery."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tape_formats.cartridge import (
    CartridgeInUse,
    CorruptRecord,
    EndOfData,
    EndOfMedium,
    NotACartridge,
    RecordKind,
    TapeCartridge,
    WormOverwrite,
    WriteProtected,
    rebuild_index,
    verify_cartridge,
)
from tape_formats.media import MEDIA
from tape_formats.records import RECORD_HEADER, RECORD_STRUCT, RecordHeader

LTO8 = MEDIA["LTO-8"]


@pytest.fixture
def cart_path(tmp_path: Path) -> Path:
    p = tmp_path / "A00001L8.vtape"
    TapeCartridge.create(p, "A00001L8", LTO8)
    return p


def test_record_struct_matches_construct_declaration() -> None:
    raw = RecordHeader(1, 1, 100, 200, 3, 42, 0xDEADBEEF).pack()
    parsed = RECORD_HEADER.parse(raw)
    assert (parsed.kind, parsed.flags, parsed.stored_len, parsed.native_len) == (1, 1, 100, 200)
    assert (parsed.file_no, parsed.obj, parsed.payload_crc) == (3, 42, 0xDEADBEEF)
    rebuilt = RECORD_HEADER.build(dict(parsed))
    assert rebuilt == raw
    assert RECORD_STRUCT.size == RECORD_HEADER.sizeof()
    assert RecordHeader.unpack(raw) == (1, 1, 100, 200, 3, 42, 0xDEADBEEF)


def test_create_refuses_existing(cart_path: Path) -> None:
    with pytest.raises(Exception, match="already exists"):
        TapeCartridge.create(cart_path, "A00001L8", LTO8)


def test_write_read_filemarks_and_positions(cart_path: Path) -> None:
    with TapeCartridge.open(cart_path) as c:
        blocks = [os.urandom(1000 + i) for i in range(5)]
        for b in blocks[:3]:
            c.write_block(b)
        c.write_filemarks(1)
        for b in blocks[3:]:
            c.write_block(b, compress=False)
        c.write_filemarks(2)
        assert c.eod == 8 and c.files == 3
        c.rewind()
        got = [c.read_block() for _ in range(4)]
        assert [bytes(r.data) for r in got[:3]] == blocks[:3]
        assert got[3].kind is RecordKind.FILEMARK
        assert c.block_number_at(c.position) == (1, 0)
        c.space_to_eod()
        assert c.read_block().kind is RecordKind.EOD
        assert c.position == 8


def test_compression_is_transparent_and_counts_stored_bytes(cart_path: Path) -> None:
    with TapeCartridge.open(cart_path) as c:
        c.write_block(b"a" * 65536)
        assert c.used_bytes < 2000
        c.write_block(os.urandom(65536))  # incompressible: stored as is
        assert c.used_bytes > 65536
        c.rewind()
        assert bytes(c.read_block().data) == b"a" * 65536


def test_short_buffer_reports_full_length(cart_path: Path) -> None:
    with TapeCartridge.open(cart_path) as c:
        c.write_block(b"x" * 5000)
        c.rewind()
        buf = bytearray(100)
        r = c.read_block(memoryview(buf))
        assert r.length == 5000 and len(r.data) == 100 and c.position == 1


def test_space_semantics(cart_path: Path) -> None:
    # layout: B0 B1 FM2 B3 B4 B5 FM6 FM7 B8
    with TapeCartridge.open(cart_path) as c:
        for item in "BBFBBBFFB":
            c.write_block(b"d" * 10) if item == "B" else c.write_filemarks(1)
        c.locate(0)
        r = c.space_blocks(5)
        assert (r.moved, r.stopped, c.position) == (2, RecordKind.FILEMARK, 3)
        r = c.space_blocks(2)
        assert (r.moved, r.stopped, c.position) == (2, None, 5)
        r = c.space_blocks(-5)
        assert (r.moved, r.stopped, c.position) == (2, RecordKind.FILEMARK, 2)
        c.locate(1)
        r = c.space_blocks(-3)
        assert (r.moved, r.stopped, c.position) == (1, "BOP", 0)
        r = c.space_filemarks(2)
        assert (r.moved, c.position) == (2, 7)
        r = c.space_filemarks(5)
        assert (r.moved, r.stopped, c.position) == (1, RecordKind.EOD, 9)
        r = c.space_filemarks(-1)
        assert (r.moved, c.position) == (1, 7)
        r = c.space_filemarks(-5)
        assert (r.moved, r.stopped, c.position) == (2, "BOP", 0)
        c.locate(9)
        r = c.space_blocks(3)
        assert (r.moved, r.stopped) == (0, RecordKind.EOD)
        with pytest.raises(EndOfData):
            c.locate(10)
        assert c.position == 9


def test_overwrite_in_the_middle_discards_the_rest(cart_path: Path) -> None:
    with TapeCartridge.open(cart_path) as c:
        for i in range(10):
            c.write_block(bytes([i]) * 100)
        c.write_filemarks(1)
        c.locate(4)
        c.write_block(b"new")
        assert c.eod == 5 and c.files == 0
    with TapeCartridge.open(cart_path) as c:
        assert c.eod == 5
        c.locate(4)
        assert bytes(c.read_block().data) == b"new"


def test_worm_and_write_protect(tmp_path: Path) -> None:
    p = tmp_path / "W00001LY.vtape"
    TapeCartridge.create(p, "W00001LY", LTO8, worm=True)
    with TapeCartridge.open(p) as c:
        c.write_block(b"keep")
        c.write_filemarks(1)
        c.rewind()
        with pytest.raises(WormOverwrite):
            c.write_block(b"overwrite")
        with pytest.raises(WormOverwrite):
            c.erase()
        c.space_to_eod()
        c.write_block(b"append is fine")
        c.set_write_protect(True)
        with pytest.raises(WriteProtected):
            c.write_block(b"no")
    with TapeCartridge.open(p) as c:
        assert c.write_protected and c.eod == 3


def test_early_warning_and_end_of_medium(tmp_path: Path) -> None:
    p = tmp_path / "S00001L8.vtape"
    TapeCartridge.create(p, "S00001L8", LTO8, capacity=4 << 20)
    with TapeCartridge.open(p) as c:
        block = os.urandom(65536)
        ew_seen = False
        with pytest.raises(EndOfMedium):
            for _ in range(100):
                ew_seen |= c.write_block(block, compress=False).early_warning
        assert ew_seen
        assert c.used_bytes <= 4 << 20


def test_second_writer_is_refused(cart_path: Path) -> None:
    with TapeCartridge.open(cart_path):
        with pytest.raises(CartridgeInUse):
            TapeCartridge.open(cart_path)


def test_not_a_cartridge(tmp_path: Path) -> None:
    p = tmp_path / "junk.vtape"
    p.write_bytes(b"\0" * 1024)
    with pytest.raises(NotACartridge):
        TapeCartridge.open(p)


def test_corruption_is_detected_and_named(cart_path: Path) -> None:
    with TapeCartridge.open(cart_path) as c:
        c.write_block(os.urandom(4096), compress=False)
        c.write_filemarks(1)
    with open(cart_path, "r+b") as f:
        f.seek(512 + 32 + 100)
        f.write(b"\xff\xff")
    report = verify_cartridge(cart_path)
    assert not report.ok and "checksum" in report.errors[0]
    with TapeCartridge.open(cart_path, readonly=True) as c:
        with pytest.raises(CorruptRecord) as exc:
            c.read_block()
        assert exc.value.position == 0


def test_index_rebuild_and_mam(cart_path: Path) -> None:
    with TapeCartridge.open(cart_path) as c:
        for _ in range(50):
            c.write_block(os.urandom(2 << 20), compress=False)
        c.write_filemarks(1)
    (cart_path.parent / (cart_path.name + ".idx")).unlink()
    assert rebuild_index(cart_path) == 51
    with TapeCartridge.open(cart_path) as c:
        assert c.eod == 51 and c.files == 1
        assert c.mam.get_int(0x0003) == 2  # two loads into a drive (rebuild does not count)
        assert c.mam.get_int(0x0220) == 100  # MB written in medium life
        assert c.mam.get(0x0806).rstrip() == b"A00001L8"


def test_tape_files_summary(cart_path: Path) -> None:
    with TapeCartridge.open(cart_path) as c:
        c.write_block(b"a" * 10)
        c.write_block(b"b" * 20)
        c.write_filemarks(1)
        c.write_block(b"c" * 5)
        c.write_filemarks(1)
        assert list(c.tape_files()) == [(0, 0, 2, 30, 1), (1, 3, 1, 5, 1)]


def test_written_data_is_handed_to_the_disk_as_it_streams(cart_path: Path, monkeypatch) -> None:
    """Every WRITEBACK_CHUNK bytes the cartridge starts write-out of what came before (not
    waiting, and on the background sync thread, never the one that appends), so a
    filemark's fsync only has a short tail left; a cut starts it over."""
    import threading

    import tape_formats.writeback_pacing as pacing

    calls: list[tuple[int, int]] = []
    threads: set[threading.Thread] = set()

    def start(fd: int, offset: int, length: int, flags: int) -> int:
        calls.append((offset, length))
        threads.add(threading.current_thread())
        return 0

    monkeypatch.setattr(pacing, "WRITEBACK_CHUNK", 1 << 20)
    monkeypatch.setattr(pacing, "_START_WRITEBACK", start)
    block = os.urandom(256 << 10)
    with TapeCartridge.open(cart_path) as c:

        def write() -> None:
            c.write_block(block, compress=False)
            c._pacer.background.wait()  # the write-out asked for has been started

        for _ in range(10):
            write()
        assert len(calls) == 2  # 4 blocks + headers pass 1 MiB, then 4 more
        assert calls[1][0] == calls[0][0] + calls[0][1]  # contiguous ranges, none twice
        assert calls[0][1] >= 1 << 20
        assert threading.current_thread() not in threads
        c.locate(2)
        write()  # cut back: the range restarts from here
        for _ in range(4):
            write()
        assert calls[-1][0] == c.index.offsets[2]
        c.write_filemarks(1)
    with TapeCartridge.open(cart_path) as c:  # and the data is all there
        assert len(c.index) == 8  # 7 blocks and the filemark
        c.locate(6)
        assert bytes(c.read_block().data) == block
        assert c.read_block().kind == RecordKind.FILEMARK
