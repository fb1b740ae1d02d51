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

from tape_formats.cartridge import TapeCartridge, WriteProtected
from tape_formats.media import MEDIA
from tape_formats.records import RECORD_HEADER_SIZE
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
