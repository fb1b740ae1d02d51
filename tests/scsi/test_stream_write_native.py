"""The streaming WRITE(6) in C (vtl/_fastpath_write.c: ``ssc_stream_write`` and
``append_now``) against the reference, TapeDrive.stream_write and TapeCartridge.append_now in
Python: two drives (two cartridges) given the same commands must answer the same and hold the
same bytes from the first record on, the same index, positions and counters, through blocks
stored as they are and compressed (the packer's skip state included), small and big blocks,
buffered and unbuffered mode, filemarks, another initiator's reservation, injected faults,
write protect, the programmable early warning and early warning; and the C append must
decline or hand over every case that is not a plain append, with nothing written."""

from __future__ import annotations

import random

import pytest
from test_ltfs_commands import mode_select10, mode_sense10
from test_ssc import A, B, MiB, good, run, write

from tape_formats.cartridge import TapeCartridge, WriteProtected
from tape_formats.media import MEDIA
from tape_formats.records import DATA_START
from vtl import faults
from vtl.library import Library
from vtl.scsi import ssc
from vtl.scsi.base import DonatedBuffer, Status
from vtl.scsi.ssc import TapeDrive

native = ssc._wnative
pytestmark = pytest.mark.skipif(native is None, reason="vtl._fastpath is not built (or off)")

TEXT = b"2026-12-04 host backup[4000]: wrote block ok\n" * 3000


def _blocks(seed: int, count: int) -> list[bytes]:
    """Random (stored as is, then the packer skips zstd) and text (compressed) runs, small
    and big blocks, one under MIN_COMPRESS."""
    rnd = random.Random(seed)
    sizes = [10240, 32768, 64512, 100, 65536, 262144, 10240, 20000]
    out = []
    for i in range(count):
        n = sizes[i % len(sizes)]
        out.append(TEXT[i:i + n] if (i // 12) % 3 == 2 else rnd.randbytes(n))
    return out


def _cdb(n: int) -> bytes:
    return bytes((0x0A, 0, *n.to_bytes(3, "big"), 0))


class Twin:
    """One library and drive; ``python`` says which stream_write it uses."""

    def __init__(self, root, python: bool, capacity: int) -> None:
        self.lib = Library.create(root)
        self.lib.create_cartridge("A00001L8", capacity=capacity)
        self.drv = TapeDrive(self.lib.load("A00001L8", 0))
        for nx in (A, B):
            run(self.drv, 0, 0, 0, 0, 0, 0, nexus=nx)  # the power-on UA, told
        self.python = python
        self.taken = 0

    def stream(self, data: bytes, nexus=A):
        """What the transport does: the fast path, else the general path (the write buffer
        emptied first: whether a block is still queued decides some paths, and the buffer's
        thread must not make the two drives differ)."""
        buf = DonatedBuffer(data)
        drv = self.drv
        if drv._cart is not None:
            drv._cart.wait_writes()
        call = (lambda *a: TapeDrive.stream_write(drv, *a)) if self.python else drv.stream_write
        if call(nexus, _cdb(len(data)), memoryview(buf)):
            self.taken += 1
            return None
        r = write(drv, data) if nexus is A else run(drv, 0x0A, 0, *len(data).to_bytes(3, "big"),
                                                    0, data=data, nexus=nexus)
        return (int(r.status), r.s.code if r.s else None, r.s.eom if r.s else None)

    def state(self) -> tuple:
        drv = self.drv
        cart = drv._cart
        cart.flush_writes()
        idx = cart.index
        with open(cart.path, "rb") as f:
            f.seek(DATA_START)
            body = f.read()
        return (body, list(idx.offsets), list(idx.meta), idx.objects, idx.end, cart.position,
                cart.counters.written_native, cart.counters.written_stored,
                cart._packer._misses, cart._packer._skip, drv.bytes_written)


class Streams:
    """WRITE_STREAMS pinned: ``busy`` says whether enough drives stream to write at once."""

    busy = False

    def wrote(self, drive: int) -> bool:
        return self.busy


@pytest.fixture(autouse=True)
def streams(monkeypatch) -> Streams:
    s = Streams()
    monkeypatch.setattr(ssc, "WRITE_STREAMS", s)
    return s


@pytest.fixture
def twins(fast_dir):
    pair = [Twin(fast_dir / "ref", True, 64 * MiB), Twin(fast_dir / "nat", False, 64 * MiB)]
    yield pair
    for t in pair:
        t.lib.close()


def _both(twins, fn, where=None) -> list:
    answers = [fn(t) for t in twins]
    assert answers[0] == answers[1], (where, [t.drv._cart.used_bytes for t in twins])
    return answers[0]


def test_same_bytes_and_answers_through_a_mixed_stream(twins, streams) -> None:
    ref, nat = twins
    for step, block in enumerate(_blocks(3, 150)):
        streams.busy = 110 <= step < 130  # four streams on two CPUs: big blocks at once
        if step == 40:
            _both(twins, lambda t: good(t.drv, 0x10, 0, 0, 0, 1, 0))  # a filemark
        if step == 60:
            for t in twins:
                t.drv.buffered_mode = 0  # unbuffered: big blocks are written at once too
        if step == 100:
            for t in twins:
                t.drv.buffered_mode = 1
        _both(twins, lambda t, b=block: t.stream(b))
        assert ref.state() == nat.state(), step
    assert nat.taken == ref.taken > 100


def test_other_initiators_reservation_faults_and_protect(twins) -> None:
    blocks = _blocks(4, 12)
    for b in blocks[:3]:
        _both(twins, lambda t, b=b: t.stream(b))
    _both(twins, lambda t: run(t.drv, 0x16, 0, 0, 0, 0, 0, nexus=B).status)  # RESERVE(6)
    assert _both(twins, lambda t: t.stream(blocks[3])) == (int(Status.RESERVATION_CONFLICT),
                                                           None, None)
    _both(twins, lambda t: run(t.drv, 0x17, 0, 0, 0, 0, 0, nexus=B).status)  # RELEASE(6)
    _both(twins, lambda t: t.stream(blocks[4], nexus=B))  # B speaks: A's next is not plain
    _both(twins, lambda t: t.stream(blocks[5]))
    for t in twins:  # an injected write error at the next block
        t.drv._cart.wait_writes()  # the position after what is queued
        faults.inject_media_error(t.lib.root, "A00001L8", t.drv._cart.position, 0,
                                  {faults.WRITE})
        t.lib.faults.reload()
    assert _both(twins, lambda t: t.stream(blocks[6]))[1] == (3, 0x0C, 0x00)
    for t in twins:
        faults.clear_media_errors(t.lib.root, "A00001L8")
        t.lib.faults.reload()
    _both(twins, lambda t: t.stream(blocks[7]))
    for t in twins:
        t.drv._cart.fence = lambda: "lease lapsed"
    assert _both(twins, lambda t: t.stream(blocks[8]))[1] == (7, 0x27, 0x00)
    for t in twins:
        t.drv._cart.fence = None
    _both(twins, lambda t: t.stream(blocks[9]))
    assert twins[0].state() == twins[1].state()


def test_programmable_early_warning_and_early_warning(fast_dir) -> None:
    twins = [Twin(fast_dir / "ref", True, 16 * MiB), Twin(fast_dir / "nat", False, 16 * MiB)]
    try:
        for t in twins:
            t.drv.buffered_mode = 0
        rnd = random.Random(9)
        page = bytearray(_both(twins, lambda t: mode_sense10(t.drv, 0x10, 0x01)))
        page[22:24] = (4).to_bytes(2, "big")  # 4 MB before early warning: from ~11 MiB
        answers = []
        for i in range(70):
            if i == 20:
                _both(twins, lambda t: mode_select10(t.drv, bytes(page)))
            if i == 50:
                page[22:24] = bytes(2)  # PEWS back to 0: early warning alone
                _both(twins, lambda t: mode_select10(t.drv, bytes(page)))
            block = rnd.randbytes(256 * 1024)
            answers.append(_both(twins, lambda t, b=block: t.stream(b), i))
            assert twins[0].state() == twins[1].state(), i
        seen = {a for a in answers if a is not None}
        assert [a[1] for a in answers if a is not None].count((0, 0, 7)) == 1  # PEW, once
        assert (int(Status.CHECK_CONDITION), (0, 0, 2), True) in seen  # early warning
        assert (int(Status.CHECK_CONDITION), (13, 0, 2), True) in seen  # full: VOLUME OVERFLOW
    finally:
        for t in twins:
            t.lib.close()


def test_c_append_declines_or_hands_over_what_is_not_a_plain_append(tmp_path) -> None:
    p = tmp_path / "A00001L8.vtape"
    TapeCartridge.create(p, "A00001L8", MEDIA["LTO-8"], capacity=4 * MiB)
    c = TapeCartridge.open(p)
    try:
        data = bytes(range(256)) * 40
        assert native.append_now(c, data, True)
        assert native.append_now(c, data, False)
        c.locate(0)  # not at end of data: nothing written
        assert not native.append_now(c, data, True)
        assert c.index.objects == 2
        c.space_to_eod()
        c._flags |= 0x02  # write protected: the Python method's WriteProtected
        with pytest.raises(WriteProtected):
            native.append_now(c, data, True)
        c._flags &= ~0x02
        while native.append_now(c, data, False):  # up to early warning, never past it
            pass
        assert c.used_bytes + 32 + len(data) >= c.ew_point
        assert c.index.objects == c.position
        c.write_block(data)  # the general way past early warning: still the same file
        c.sync()
    finally:
        c.close()
    c = TapeCartridge.open(p)
    try:
        c.locate(0)
        assert c.read_block(bytearray(len(data))).data == data
    finally:
        c.close()
