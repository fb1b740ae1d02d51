"""TapeCartridge.read_run and append_run_now, the streaming fixed-mode READ/WRITE's runs: all
or nothing. A run that meets anything but plain blocks of its size (a filemark, another
length, end of data, a damaged record) moves and counts nothing; a run that could reach
early warning, or meets a queued write, an overwrite or write protect, writes nothing; and
what they do is what read_blocks/write_blocks do. run_ahead/take_run_ahead: the next run
decoded while the drive is idle, handed out once, at its position only, forgotten when the
tape changes."""

from __future__ import annotations

import random

import pytest

from tape_formats.cartridge import (
    CartridgeError,
    CorruptRecord,
    TapeCartridge,
    WriteProtected,
    rebuild_index,
    verify_cartridge,
)
from tape_formats.media import MEDIA
from tape_formats.records import RECORD_HEADER_SIZE, IncompatFeature, RecordKind, run_native
from vtl.scsi import ssc

native = ssc._wnative

MiB = 1 << 20
BS = 512


@pytest.fixture
def cart(tmp_path):
    p = tmp_path / "R00001L8.vtape"
    TapeCartridge.create(p, "R00001L8", MEDIA["LTO-8"], capacity=4 * MiB)
    c = TapeCartridge.open(p)
    yield c
    c.close()


def _state(c: TapeCartridge) -> tuple:
    return (c.position, c.index.objects, c.index.end, c.counters.read_native,
            c.counters.read_stored, c.counters.written_native, c.counters.written_stored)


def test_read_run_all_or_nothing(cart):
    rng = random.Random(1)
    data = rng.randbytes(20 * BS)
    assert cart.append_run_now(memoryview(data), BS)
    cart.write_block(rng.randbytes(BS + 1))  # another length
    assert cart.append_run_now(memoryview(data[:5 * BS]), BS)
    cart.write_filemarks(1)
    cart.locate(0)
    buf = memoryview(bytearray(20 * BS))
    assert cart.read_run(buf, BS) and bytes(buf) == data
    assert cart.position == 20
    before = _state(cart)
    assert not cart.read_run(memoryview(bytearray(2 * BS)), BS)  # the odd block first
    assert _state(cart) == before
    cart.locate(19)
    assert not cart.read_run(memoryview(bytearray(2 * BS)), BS)  # the odd block second
    assert _state(cart) == (19, *before[1:])
    cart.locate(21)
    assert not cart.read_run(memoryview(bytearray(6 * BS)), BS)  # the filemark sixth
    assert cart.position == 21
    assert cart.read_run(memoryview(bytearray(5 * BS)), BS)
    assert not cart.read_run(memoryview(bytearray(2 * BS)), BS)  # filemark, end of data
    assert cart.position == 26
    cart.locate(24)
    assert cart.read_blocks(memoryview(bytearray(5 * BS)), BS) == 2  # the run's reference


def test_append_run_now_declines_with_nothing_written(cart):
    rng = random.Random(2)
    run = memoryview(rng.randbytes(8 * BS))
    assert cart.append_run_now(run, BS)
    cart.locate(3)  # an overwrite: the general path's
    before = _state(cart)
    assert not cart.append_run_now(run, BS)
    assert _state(cart) == before
    cart.space_to_eod()
    assert not cart.append_run_now(run[: 3 * BS + 1], BS)  # not whole blocks
    cart._flags |= 0x02  # write protected: raised as write_blocks raises it
    with pytest.raises(WriteProtected):
        cart.append_run_now(run, BS)
    cart._flags &= ~0x02
    n = 0
    while cart.append_run_now(run, BS):  # up to early warning, never past it
        n += 1
    assert n > 10
    assert cart.used_bytes + 8 * (RECORD_HEADER_SIZE + BS) >= cart.ew_point
    assert not cart.at_early_warning
    assert cart.write_blocks(run, BS) == 8  # the general way on: still room


def test_run_ahead_is_taken_once_and_forgotten_when_the_tape_changes(cart):
    rng = random.Random(3)
    data = rng.randbytes(40 * BS)
    assert cart.append_run_now(memoryview(data), BS)
    cart.locate(0)
    cart.run_ahead(20, BS)
    before = _state(cart)
    assert cart.take_run_ahead(10 * BS, BS) is None  # another count: not this run
    assert cart.take_run_ahead(20 * BS, 2 * BS) is None  # another size
    assert _state(cart) == before
    got = cart.take_run_ahead(20 * BS, BS)
    assert bytes(got) == data[: 20 * BS] and cart.position == 20
    assert cart.counters.read_native == before[3] + 20 * BS
    assert cart.take_run_ahead(20 * BS, BS) is None  # taken once
    cart.run_ahead(20, BS)  # the next run; the one handed out stays as it was
    assert bytes(got) == data[: 20 * BS]
    cart.locate(21)
    assert cart.take_run_ahead(20 * BS, BS) is None  # not at the position
    cart.locate(20)
    assert bytes(cart.take_run_ahead(20 * BS, BS)) == data[20 * BS:]
    cart.locate(30)
    cart.run_ahead(10, BS)
    cart.locate(39)
    cart.write_block(rng.randbytes(BS))  # the tape changes: the run is forgotten
    cart.locate(30)
    assert cart.take_run_ahead(10 * BS, BS) is None
    cart.run_ahead(20, BS)  # past end of data: nothing held
    assert cart.take_run_ahead(20 * BS, BS) is None
    cart.run_ahead(5, BS)
    if native is not None:  # the C append forgets it too
        cart.space_to_eod()
        assert native.append_now(cart, rng.randbytes(BS), True)
        cart.locate(30)
        assert cart.take_run_ahead(5 * BS, BS) is None


# -- multi-block records (RecordKind.DATA_RUN) against one record per block ---------------

TEXT = b"".join(b"%05d 2026-12-05 amanda dumped /srv/b/%d.tar\n" % (i, i * 3)
                for i in range(20000))


def _blocks(rng: random.Random, n: int) -> bytes:
    roll = rng.random()
    if roll < 0.4:
        return rng.randbytes(n)
    if roll < 0.5:
        return bytes(n)
    at = rng.randrange(len(TEXT) - n) if n < len(TEXT) else 0
    return (TEXT * (n // len(TEXT) + 1))[at:at + n]


def _pair(tmp_path, capacity=1 << 30):
    carts = []
    for name in ("P00001L8", "Q00001L8"):
        p = tmp_path / f"{name}.vtape"
        TapeCartridge.create(p, name, MEDIA["LTO-8"], capacity=capacity)
        carts.append(TapeCartridge.open(p))
    carts[0].data_runs, carts[1].data_runs = False, True
    return carts


def _do(cart: TapeCartridge, op: str, arg, read_ahead) -> tuple:
    """One operation; what it returned or raised, and where the tape is after it."""
    try:
        if op == "w":
            size, data = arg
            out = cart.write_blocks(memoryview(data), size)
        elif op == "v":
            out = cart.write_block(arg).early_warning
        elif op == "f":
            out = cart.write_filemarks(arg, sync=False).early_warning
        elif op == "l":
            out = cart.locate(min(arg, cart.eod))
        elif op == "s":
            r = cart.space_blocks(arg)
            out = (r.moved, r.stopped)
        elif op == "S":
            r = cart.space_filemarks(arg)
            out = (r.moved, r.stopped)
        elif op == "r":
            if arg[1]:
                read_ahead(cart)
            r = cart.read_block(bytearray(arg[0]) if arg[0] else None)
            out = (r.kind, r.length, bytes(r.data))
        elif op == "R":
            size, count = arg
            buf = memoryview(bytearray(size * count))
            n = cart.read_blocks(buf, size)
            out = (n, bytes(buf[: n * size]))
        elif op == "A":  # the streaming READ's run: decoded ahead, then taken whole
            size, count = arg
            cart.run_ahead(count, size)
            got = cart.take_run_ahead(count * size, size)
            if got is None:
                buf = memoryview(bytearray(size * count))
                out = ("run", cart.read_run(buf, size), bytes(buf))
            else:
                out = ("ahead", bytes(got))
        elif op == "n":
            p = cart.position
            out = (cart.next_data_length(), cart.object_kind(p),
                   cart.block_length(p) if p < cart.eod else None, cart.block_number_at(p))
        elif op == "e":
            out = cart.erase()
        else:
            out = cart.rewind()
    except CartridgeError as exc:
        out = (type(exc).__name__, getattr(exc, "position", None))
    return out, cart.position, cart.eod, cart.files, cart.counters.read_native, \
        cart.counters.written_native


def _summary(cart: TapeCartridge) -> tuple:
    cart.sync()
    rep = verify_cartridge(cart.path)
    assert not rep.errors, rep.errors
    return (rep.objects, rep.blocks, rep.filemarks, rep.native_bytes, cart.eod,
            list(cart.tape_files()))


def _everything(cart: TapeCartridge) -> list:
    cart.rewind()
    out = []
    while True:
        r = cart.read_block()
        if r.kind == RecordKind.EOD:
            return out
        out.append((r.kind, bytes(r.data)))


@pytest.mark.parametrize("seed", range(8))
def test_data_runs_read_and_space_as_records_of_one_block(tmp_path, seed):
    """The same operations on a cartridge with one record per block and on one with runs of
    blocks (switched off and on midway: old records and runs on one tape): the same results,
    positions, counts and errors; writes, filemarks and erases inside runs (after LOCATE or
    SPACE back) cut them as they cut records; the same objects after close, reopen from the
    index and an index rebuilt from the records, and in verify."""
    rng = random.Random(seed)
    carts = _pair(tmp_path)
    from vtl.scsi.ssc import read_ahead as c_read_ahead
    read_aheads = [TapeCartridge.read_ahead, c_read_ahead]
    try:
        size = 512
        for step in range(300):
            op = rng.choice("wwwwvfllssSrrrRRAAnmeb" if step % 97 else "e")
            if op == "m":
                size = rng.choice((512, 512, 1024, 4096, 10240, 100 * 1024))
                carts[1].data_runs = rng.random() < 0.85
                continue
            arg = None
            if op == "w":
                arg = (size, _blocks(rng, size * rng.choice((1, 2, 3, 20, 255, 256, 600))))
            elif op == "v":
                arg = _blocks(rng, rng.choice((100, size, size + 1)))
            elif op == "f":
                arg = rng.choice((0, 1, 1, 3))
            elif op == "l":
                arg = rng.randrange(carts[0].eod + 2)
            elif op in "sS":
                arg = rng.choice((-300, -40, -3, -1, 1, 2, 5, 40, 300))
            elif op == "r":
                arg = (rng.choice((0, size, size - 1, size + 7)), rng.random() < 0.5)
            elif op in "RA":
                arg = (size, rng.choice((1, 2, 7, 20, 128, 300)))
            ra = rng.choice(read_aheads)
            answers = [_do(c, op, arg, ra) for c in carts]
            assert answers[0] == answers[1], (step, op, arg)
        carts[1].data_runs = True
        for c in carts:  # the tape ends with runs, whatever the sequence cut
            c._packer._skip = 0  # (compressing again: not skipping after random blocks)
            c.space_to_eod()
            c.write_blocks(memoryview(TEXT[: 700 * BS]), BS)
            c.write_filemarks(1)
            c.write_blocks(memoryview(TEXT[: 3 * 4096]), 4096)
        assert carts[1].format_features & IncompatFeature.DATA_RUNS
        assert carts[1].index.records < carts[0].index.records
        assert _summary(carts[0]) == _summary(carts[1])
        assert _everything(carts[0]) == _everything(carts[1])
        paths = [c.path for c in carts]
    finally:
        for c in carts:
            c.close()
    for how in ("sidecar", "rebuilt"):
        if how == "rebuilt":
            for p in paths:
                assert rebuild_index(p) > 0
        carts = [TapeCartridge.open(p) for p in paths]
        try:
            assert _summary(carts[0]) == _summary(carts[1])
            assert _everything(carts[0]) == _everything(carts[1])
        finally:
            for c in carts:
                c.close()


def test_a_torn_run_is_cut_off_whole(tmp_path):
    """A crash in the middle of a run record: reopening cuts the record off (its blocks
    are gone together, as a torn record's one block is) and keeps everything before."""
    p = tmp_path / "T00001L8.vtape"
    TapeCartridge.create(p, "T00001L8", MEDIA["LTO-8"], capacity=1 << 30)
    rng = random.Random(5)
    first, second = _blocks(rng, 300 * BS), TEXT[: 100 * BS]
    with TapeCartridge.open(p) as c:
        c.data_runs = True
        assert c.write_blocks(memoryview(first), BS) == 300
        c.write_filemarks(1)
        last = c.index.records
        assert c.write_blocks(memoryview(second), BS) == 100
        assert c.index.records == last + 1
        cut = c.index.offsets[last] + 40
    with open(p, "r+b") as f:
        f.truncate(cut)
    with TapeCartridge.open(p) as c:
        assert c.eod == 301 and c.index.end == cut - 40
        assert _everything(c) == [(RecordKind.DATA, first[i * BS:(i + 1) * BS])
                                  for i in range(300)] + [(RecordKind.FILEMARK, b"")]
    assert not verify_cartridge(p).errors


def test_a_damaged_run_fails_each_of_its_blocks(tmp_path):
    p = tmp_path / "D00001L8.vtape"
    TapeCartridge.create(p, "D00001L8", MEDIA["LTO-8"], capacity=1 << 30)
    data = TEXT[: 20 * BS]
    with TapeCartridge.open(p) as c:
        c.data_runs = True
        c.write_blocks(memoryview(data), BS)
        c.write_blocks(memoryview(data), BS)
        off = c.index.offsets[0] + RECORD_HEADER_SIZE + 10
    with open(p, "r+b") as f:
        f.seek(off)
        f.write(b"\xff")
    with TapeCartridge.open(p, readonly=True) as c:
        for obj in (0, 7, 19):
            c.locate(obj)
            with pytest.raises(CorruptRecord) as err:
                c.read_block()
            assert err.value.position == obj and c.position == obj
        c.locate(0)
        assert c.read_blocks(memoryview(bytearray(40 * BS)), BS) == 0
        c.locate(20)
        assert bytes(c.read_block().data) == data[:BS]
    assert verify_cartridge(p).errors == ["object 0: checksum mismatch"]


def test_a_run_stored_as_is_reads(tmp_path):
    """This build writes runs only when they shrink, but a run whose payload is the blocks
    as they are (flags 0) is as readable: by block, by run, after a cut inside it, in verify."""
    p = tmp_path / "S00001L8.vtape"
    TapeCartridge.create(p, "S00001L8", MEDIA["LTO-8"], capacity=1 << 30)
    data = random.Random(9).randbytes(30 * BS)
    with TapeCartridge.open(p) as c:
        c._require(IncompatFeature.DATA_RUNS)
        c._append(RecordKind.DATA_RUN, data, run_native(30, BS), 0)
        c.write_filemarks(1)
        assert c.eod == 31 and c.index.records == 2
        c.locate(29)
        assert bytes(c.read_block().data) == data[29 * BS:]
        c.locate(4)
        buf = memoryview(bytearray(10 * BS))
        assert c.read_blocks(buf, BS) == 10 and bytes(buf) == data[4 * BS : 14 * BS]
        c.locate(20)
        c.write_filemarks(1)  # a cut inside it: 20 blocks kept
    rep = verify_cartridge(p)
    assert not rep.errors and (rep.blocks, rep.filemarks) == (20, 1)
    with TapeCartridge.open(p) as c:
        buf = memoryview(bytearray(25 * BS))
        assert c.read_blocks(buf, BS) == 20 and bytes(buf[: 20 * BS]) == data[: 20 * BS]
        assert c.read_block().kind == RecordKind.FILEMARK
