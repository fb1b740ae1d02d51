"""Fixed-block READ/WRITE(6) moved as runs (TapeCartridge.read_blocks/write_blocks) against
the block-by-block path (``ssc.FIXED_RUNS = False``), the reference: the same command
sequences on two libraries must give the same status, sense, data and positions, and leave
the same cartridge file; with multi-block records (``data_runs``: RecordKind.DATA_RUN) the
same answers and positions, and a file that verifies and reads back the same objects."""

from __future__ import annotations

import os
import random

import pytest

from tape_formats.cartridge import verify_cartridge
from tape_formats.records import DATA_START
from vtl.config import STORES, LibraryConfig
from vtl.library import Library
from vtl.scsi import ssc
from vtl.scsi.base import Nexus, Status
from vtl.scsi.ssc import TapeDrive

A = Nexus("iqn.a,i,0x1", "iqn.a")
KiB = 1024
TEXT = b"".join(b"2026-12-04 19:%02d:%02d backup: wrote file /srv/data/%05d.log ok\n"
                % (i // 60 % 60, i % 60, i) for i in range(4000))


class World:
    """A library with one drive, run with fixed-mode runs on or off."""

    def __init__(self, root, runs: bool, store: str, capacity: int, worm: bool = False,
                 data_runs: bool = False):
        self.runs = runs
        self.lib = Library.create(root, LibraryConfig(store=store))
        barcode = "W00001LY" if worm else "F00001L8"
        self.lib.create_cartridge(barcode, capacity=capacity)
        self.drv = TapeDrive(self.lib.load(barcode, 0))
        self.drv._medium().data_runs = data_runs
        self.cmd(0, 0, 0, 0, 0, 0)  # the power-on unit attention

    def cmd(self, *cdb: int, data: bytes | None = None):
        ssc.FIXED_RUNS = self.runs
        try:
            res = self.drv.execute(A, bytes(cdb), data)
        finally:
            ssc.FIXED_RUNS = True
        return res.status, bytes(res.sense or b""), bytes(res.data or b"")

    def position(self):
        return self.cmd(0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    def file_bytes(self) -> bytes:
        cart = self.drv._medium()
        cart.wait_writes()
        return cart.path.read_bytes()[DATA_START:]  # the records (the header has a uuid)


def both(tmp_path, store, capacity=1 << 20, worm=False, data_runs=False):
    return [World(tmp_path / name, runs, store, capacity, worm, data_runs and runs)
            for name, runs in (("runs", True), ("blocks", False))]


def same_tapes(worlds, data_runs: bool) -> None:
    """The same records (runs of blocks off), or (on) the same objects as far as verify and
    an index rebuilt from the records tell, every block read back alike above."""
    if not data_runs:
        assert worlds[0].file_bytes() == worlds[1].file_bytes()
        return
    carts = [w.drv._medium() for w in worlds]
    for c in carts:
        c.sync()
    reports = [verify_cartridge(c.path) for c in carts]
    assert not reports[0].errors and not reports[1].errors
    assert [(r.objects, r.blocks, r.filemarks, r.native_bytes) for r in reports[:1]] == [
        (r.objects, r.blocks, r.filemarks, r.native_bytes) for r in reports[1:]]
    assert [list(c.tape_files()) for c in carts[:1]] == [list(c.tape_files()) for c in carts[1:]]


def same(worlds, *cdb, data=None):
    answers = [w.cmd(*cdb, data=data) for w in worlds]
    assert answers[0] == answers[1], cdb
    assert worlds[0].position() == worlds[1].position(), cdb
    return answers[0]


def setblk(worlds, size: int) -> None:
    same(worlds, 0x15, 0x10, 0, 0, 12, 0, data=bytes([0, 0, 0x10, 8, 0, 0, 0, 0])
         + size.to_bytes(4, "big"))


def compression(worlds, on: bool) -> None:
    page = bytes([0x0F, 14, 0xC0 if on else 0x40, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])
    same(worlds, 0x15, 0x10, 0, 0, 4 + 16, 0, data=bytes(4) + page)


def blocks(rng: random.Random, kind: str, n: int) -> bytes:
    if kind == "random":
        return rng.randbytes(n)
    if kind == "zero":
        return bytes(n)
    start = rng.randrange(len(TEXT))
    return (TEXT * (n // len(TEXT) + 2))[start:start + n]


def wfixed(worlds, bs, data):
    return same(worlds, 0x0A, 1, *(len(data) // bs).to_bytes(3, "big"), 0, data=data)


def rfixed(worlds, count):
    return same(worlds, 0x08, 1, *count.to_bytes(3, "big"), 0)


@pytest.mark.parametrize("data_runs", [False, True])
@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("seed", range(6))
def test_random_sequences_match_block_by_block(tmp_path, store, seed, data_runs):
    """Writes of random, text and zero blocks of several sizes, filemarks, variable blocks
    among them, rewinds, backward spaces and overwrites (inside runs of blocks too), reads
    of every count (across filemarks, wrong lengths, end of data), with compression on and
    off, up to early warning and end of medium."""
    rng = random.Random(seed)
    # Runs of blocks compress better than blocks one by one, so early warning and end of
    # medium come later: equivalence up to them is test_end_of_medium_mid_run's (stored as
    # they are, a run takes the room of its blocks' records).
    worlds = both(tmp_path, store, capacity=1 << 30 if data_runs else 1 << 20,
                  data_runs=data_runs)
    bs = 512
    setblk(worlds, bs)
    for _ in range(120):
        op = rng.choice("wwwwrrrrfvbsmc")
        if op == "w":
            wfixed(worlds, bs, blocks(rng, rng.choice(("random", "text", "zero")),
                                      bs * rng.choice((1, 2, 3, 20, 128, 300))))
        elif op == "r":
            rfixed(worlds, rng.choice((1, 2, 5, 20, 128, 400)))
        elif op == "f":
            same(worlds, 0x10, 1, 0, 0, rng.choice((1, 2)), 0)
        elif op == "v":
            n = rng.choice((bs, bs + 1, 100))
            same(worlds, 0x0A, 0, *n.to_bytes(3, "big"), 0, data=rng.randbytes(n))
        elif op == "b":
            same(worlds, 0x01, 0, 0, 0, 0, 0)
        elif op == "s":
            same(worlds, 0x11, 0, *(-rng.randrange(1, 40)).to_bytes(3, "big", signed=True), 0)
        elif op == "m":
            bs = rng.choice((512, 1024, 4 * KiB))
            setblk(worlds, bs)
        else:
            compression(worlds, rng.random() < 0.5)
    same(worlds, 0x01, 0, 0, 0, 0, 0)
    for _ in range(40):  # everything back, whatever the block size and lengths
        rfixed(worlds, rng.choice((1, 7, 128)))
    if store == "plain":
        same_tapes(worlds, data_runs)


@pytest.mark.parametrize("data_runs", [False, True])
def test_end_of_medium_mid_run(tmp_path, data_runs):
    """A run that reaches early warning, then one that does not fit: the blocks that fit are
    written, VOLUME OVERFLOW says how many did not, as block by block."""
    worlds = both(tmp_path, "plain", capacity=256 * KiB, data_runs=data_runs)
    setblk(worlds, 512)
    compression(worlds, False)
    rng = random.Random(1)
    answers = [wfixed(worlds, 512, rng.randbytes(512 * 128)) for _ in range(5)]
    assert answers[0][0] == Status.GOOD
    assert any(a[0] == Status.CHECK_CONDITION and a[1][2] & 0x0F == 0 for a in answers)
    assert answers[-1][1][2] & 0x0F == 0x0D  # VOLUME OVERFLOW
    same_tapes(worlds, data_runs)


def test_worm_and_write_protect(tmp_path):
    worlds = both(tmp_path, "plain", worm=True)
    setblk(worlds, 512)
    wfixed(worlds, 512, os.urandom(512 * 4))
    same(worlds, 0x01, 0, 0, 0, 0, 0)
    status, sense, _ = wfixed(worlds, 512, os.urandom(512 * 4))  # WORM: no overwrite
    assert status == Status.CHECK_CONDITION and sense[12:14] == bytes([0x30, 0x0C])
    rfixed(worlds, 8)


def test_damaged_block_mid_run(tmp_path):
    """A block that fails its checksum in the middle of a run: the blocks before it as data,
    MEDIUM ERROR with the blocks not read, the tape past the bad block, as block by block."""
    worlds = both(tmp_path, "plain")
    setblk(worlds, 512)
    compression(worlds, False)
    wfixed(worlds, 512, os.urandom(512 * 10))
    for w in worlds:
        cart = w.drv._medium()
        off = cart.index.offsets[5] + 32 + 100
        with open(cart.path, "r+b") as f:
            f.seek(off)
            byte = f.read(1)
            f.seek(off)
            f.write(bytes([byte[0] ^ 0xFF]))
    same(worlds, 0x01, 0, 0, 0, 0, 0)
    status, sense, data = rfixed(worlds, 10)
    assert status == Status.CHECK_CONDITION and sense[2] & 0x0F == 0x03
    assert len(data) == 5 * 512 and int.from_bytes(sense[3:7], "big") == 5
    rfixed(worlds, 10)  # the four after it, then end of data
