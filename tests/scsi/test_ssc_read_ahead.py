"""Read-ahead: a block decoded while the drive is idle must read back exactly as without it.

The cache is an optimisation no initiator may observe, so every test compares a read pass with
read-ahead against the plain one (data, lengths, kinds, counters, errors).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tape_formats.cartridge import CorruptRecord, RecordKind, TapeCartridge
from tape_formats.media import MEDIA
from vtl.library import Library
from vtl.scsi.base import Nexus, SenseKey, Status
from vtl.scsi.ssc import TapeDrive

LTO8 = MEDIA["LTO-8"]
A = Nexus("iqn.a,i,0x1", "iqn.a")


def _blocks() -> list[bytes | None]:
    """Mixed sizes, compressible and not, tiny (stored as is), with filemarks (None)."""
    rnd = random.Random(7)
    out: list[bytes | None] = []
    for i in range(24):
        n = rnd.choice([1, 100, 300, 4096, 65536, 70000])
        if i % 3:
            out.append(rnd.randbytes(n // 2) + bytes(n - n // 2))  # half compressible
        else:
            out.append(rnd.randbytes(n))  # incompressible: stored as is
        if i % 7 == 6:
            out.append(None)
    return out


@pytest.fixture
def cart(tmp_path: Path):
    p = tmp_path / "A00001L8.vtape"
    TapeCartridge.create(p, "A00001L8", LTO8, capacity=64 << 20)
    c = TapeCartridge.open(p)
    for b in _blocks():
        if b is None:
            c.write_filemarks(1, sync=False)
        else:
            c.write_block(b)
    c.sync()
    c.rewind()
    yield c
    c.close()


def _read_all(c: TapeCartridge, *, ahead: bool, buflen: int | None) -> list:
    c.rewind()
    out = []
    while True:
        if ahead:
            c.read_ahead()
            c.read_ahead()  # twice: the second is a no-op on a hit
        buf = bytearray(buflen) if buflen is not None else None
        r = c.read_block(buf)
        out.append((r.kind, r.length, bytes(r.data), c.position))
        if r.kind == RecordKind.EOD:
            return out


@pytest.mark.parametrize("buflen", [None, 1 << 20, 200])
def test_same_data_and_counters_with_read_ahead(cart: TapeCartridge, buflen) -> None:
    c0 = (cart.counters.read_native, cart.counters.read_stored)
    plain = _read_all(cart, ahead=False, buflen=buflen)
    c1 = (cart.counters.read_native, cart.counters.read_stored)
    cached = _read_all(cart, ahead=True, buflen=buflen)
    c2 = (cart.counters.read_native, cart.counters.read_stored)
    assert cached == plain
    assert (c2[0] - c1[0], c2[1] - c1[1]) == (c1[0] - c0[0], c1[1] - c0[1])
    want = [b for b in _blocks() if b is not None]
    got = [d for k, _n, d, _p in plain if k == RecordKind.DATA]
    assert got == [b[:buflen] if buflen else b for b in want]


def test_buffer_none_result_is_a_private_copy(cart: TapeCartridge) -> None:
    cart.read_ahead()
    first = cart.read_block().data
    kept = bytes(first)
    cart.read_ahead()
    cart.read_block()
    assert bytes(first) == kept


def test_read_ahead_at_filemark_and_eod_does_nothing(cart: TapeCartridge) -> None:
    fm = cart.index.filemark_object(0)
    cart.locate(fm)
    cart.read_ahead()
    assert cart._ahead.obj == -1 and cart.position == fm
    assert cart.read_block().kind == RecordKind.FILEMARK
    cart.space_to_eod()
    cart.read_ahead()
    assert cart._ahead.obj == -1
    assert cart.read_block().kind == RecordKind.EOD


@pytest.mark.parametrize("how", ["block", "filemark", "erase"])
def test_no_stale_block_after_a_write(cart: TapeCartridge, how: str) -> None:
    cart.locate(3)
    cart.read_ahead()
    assert cart._ahead.obj == 3
    if how == "block":
        cart.write_block(b"new" * 100)
    elif how == "filemark":
        cart.write_filemarks(1)
    else:
        cart.erase()
    cart.locate(3)
    r = cart.read_block()
    want = {"block": (RecordKind.DATA, b"new" * 100), "filemark": (RecordKind.FILEMARK, b""),
            "erase": (RecordKind.EOD, b"")}[how]
    assert (r.kind, bytes(r.data)) == want


def test_overwrite_same_position_then_append_again(cart: TapeCartridge) -> None:
    """The object number is the same after a cut and rewrite: the cache must not match it."""
    cart.locate(1)
    cart.read_ahead()
    cart.write_block(b"x" * 500)  # object 1 is new now; position 2 == eod
    cart.locate(1)
    assert bytes(cart.read_block().data) == b"x" * 500


def test_locate_elsewhere_reads_the_right_block(cart: TapeCartridge) -> None:
    want = _read_all(cart, ahead=False, buflen=None)
    cart.locate(2)
    cart.read_ahead()
    cart.locate(5)
    r = cart.read_block()
    assert (r.kind, r.length, bytes(r.data)) == want[5][:3]
    cart.locate(2)  # the cached block is still right when we come back to it
    r = cart.read_block()
    assert (r.kind, r.length, bytes(r.data)) == want[2][:3]


def test_corrupt_block_still_raises(cart: TapeCartridge) -> None:
    off = cart.index.offsets[4]
    os.pwrite(cart._fd, b"\xff\xff\xff\xff", off + 40)
    cart.locate(4)
    cart.read_ahead()
    assert cart._ahead.obj == -1 and cart.position == 4
    with pytest.raises(CorruptRecord) as ei:
        cart.read_block(bytearray(1 << 20))
    assert ei.value.position == 4


def test_close_drops_the_cache(cart: TapeCartridge) -> None:
    cart.read_ahead()
    cart.close()
    assert cart._ahead.obj == -1


# ---------------------------------------------------------------- drive level
@pytest.fixture
def drv(tmp_path: Path):
    lib = Library.create(tmp_path / "lib")
    lib.create_cartridge("A00001L8", capacity=16 << 20)
    d = TapeDrive(lib.load("A00001L8", 0))
    d.execute(A, bytes(6))  # swallow the power-on UNIT ATTENTION
    yield d
    lib.close()


def run(d: TapeDrive, *cdb: int, data=None, idle: bool = False):
    r = d.execute(A, bytes(cdb), data)
    out = (r.status, bytes(r.data), bytes(r.sense) if r.sense else b"")
    if idle:
        d.idle()
    return out


def rd(d, n: int, *, fixed=False, sili=False, idle=False):
    return run(d, 0x08, (1 if fixed else 0) | (2 if sili else 0), *n.to_bytes(3, "big"), 0,
               idle=idle)


def wr(d, data: bytes, *, fixed=False, idle=False):
    n = len(data) // d.block_size if fixed else len(data)
    return run(d, 0x0A, 1 if fixed else 0, *n.to_bytes(3, "big"), 0, data=data, idle=idle)


def rewind(d) -> None:
    assert run(d, 0x01, 0, 0, 0, 0, 0)[0] == Status.GOOD


def _variable_pass(d, idle: bool) -> list:
    rewind(d)
    out = [rd(d, n, sili=s, idle=idle) for n, s in
           [(1000, False), (1000, True), (100, False), (65536, False), (65536, False),
            (65536, False), (10, False), (10, False), (10, False), (10, False)]]
    return out


def test_drive_variable_reads_identical(drv: TapeDrive) -> None:
    rnd = random.Random(1)
    for n in (1000, 700, 65536):
        assert wr(drv, rnd.randbytes(n // 2) + bytes(n - n // 2))[0] == Status.GOOD
    assert run(drv, 0x10, 0, 0, 0, 1, 0)[0] == Status.GOOD
    assert wr(drv, rnd.randbytes(65536))[0] == Status.GOOD
    plain = _variable_pass(drv, idle=False)
    cached = _variable_pass(drv, idle=True)
    assert cached == plain
    kinds = [(s, sense[2] & 0xE0 if sense else None) for s, _d, sense in plain]
    # 1000 on 1000; SILI on 700; ILI on 65536; filemark
    assert kinds[:4] == [(Status.GOOD, None), (Status.GOOD, None),
                         (Status.CHECK_CONDITION, 0x20), (Status.CHECK_CONDITION, 0x80)]


def test_drive_fixed_reads_identical(drv: TapeDrive) -> None:
    bd = bytes([0, 0, 0x10, 8, 0, 0, 0, 0, 0, 0, 2, 0])  # block size 512
    assert run(drv, 0x15, 0x10, 0, 0, 12, 0, data=bd)[0] == Status.GOOD
    rnd = random.Random(2)
    data = b"".join(rnd.randbytes(256) + bytes(256) for _ in range(10))
    assert wr(drv, data, fixed=True)[0] == Status.GOOD
    assert run(drv, 0x10, 0, 0, 0, 1, 0)[0] == Status.GOOD

    def fixed_pass(idle: bool) -> list:
        rewind(drv)
        return [rd(drv, n, fixed=True, idle=idle) for n in (3, 3, 3, 3, 1)]

    plain = fixed_pass(False)
    assert plain[0] == (Status.GOOD, data[:1536], b"")
    assert fixed_pass(True) == plain


def test_drive_write_after_idle_is_seen(drv: TapeDrive) -> None:
    for b in (b"a" * 400, b"b" * 400, b"c" * 400):
        wr(drv, b)
    rewind(drv)
    assert rd(drv, 400, idle=True)[1] == b"a" * 400
    assert drv._cart._ahead.obj == 1
    assert wr(drv, b"N" * 300, idle=True)[0] == Status.GOOD  # overwrites object 1
    assert run(drv, 0x2B, 0, 0, 0, 0, 0, 1, 0, 0, 0)[0] == Status.GOOD  # LOCATE(10) to 1
    assert rd(drv, 300)[1] == b"N" * 300


def test_drive_corrupt_block_is_medium_error_with_read_ahead(drv: TapeDrive) -> None:
    for b in (b"q" * 300, b"r" * 300, b"s" * 300):
        wr(drv, b)
    cart = drv._medium()
    os.pwrite(cart._fd, b"\xff\xff\xff\xff", cart.index.offsets[1] + 40)
    rewind(drv)
    assert rd(drv, 300, idle=True)[1] == b"q" * 300
    st, _d, sense = rd(drv, 300, idle=True)
    assert st == Status.CHECK_CONDITION and sense[2] & 0x0F == SenseKey.MEDIUM_ERROR
    assert rd(drv, 300, idle=True)[1] == b"s" * 300


def test_idle_after_other_commands_does_nothing(drv: TapeDrive) -> None:
    wr(drv, b"z" * 400)
    rewind(drv)
    drv.idle()
    assert drv._cart._ahead.obj == -1
    rd(drv, 400)
    run(drv, 0x00, 0, 0, 0, 0, 0)  # TEST UNIT READY clears the streaming flag
    drv.idle()
    assert drv._cart._ahead.obj == -1
