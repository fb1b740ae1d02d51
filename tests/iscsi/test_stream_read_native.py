"""The drive's streaming READ(6) in C (vtl/_fastpath.c, "The drive's streaming READ(6)":
TapeDrive.stream_read's usual case with no Python frame) must be invisible: one command
sequence against three copies of one tape - C transport and C drive, the pure-Python fast
paths (stream_paths.ReferencePaths with TapeDrive.stream_read), and no fast path at all - gets
byte-identical answers (data, status, sense) and the same READ POSITION after every command.

The tape holds small and big blocks, random (stored as is) and text (compressed), single
filemarks and a run of them, two damaged records (payload and header CRC) and end of data;
the reads ask for the block's length, fewer bytes and more (ILI), with SILI, past filemarks
and end of data; an injected read error appears and goes away; logical block protection is
switched on and off, a second initiator reserves the drive, the position jumps (LOCATE).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cartridge_io import mixed_objects, write_objects
from iscsi_support import READ_POSITION, RawInitiator, lbp_select, read6, two_sessions

from tape_formats.cartridge import TapeCartridge
from tape_formats.records import RECORD_HEADER_SIZE
from vtl import faults
from vtl.config import LibraryConfig
from vtl.iscsi import stream_paths
from vtl.iscsi.pdu import Op
from vtl.library import Library
from vtl.scsi.devices import build_device_set

native = stream_paths.native
pytestmark = pytest.mark.skipif(native is None or not hasattr(native, "drive_reads"),
                                reason="vtl._fastpath is not built (or off)")

BARCODE = "N00001L8"
TEXT = b"2026-12-04T19:00:00 host backup[4000]: wrote block 000042 ok\n" * 2000
SIZES = [10240, 32768, 64512, 65536, 300, 10240, 131072, 200000, 1, 10240]
OBJECTS = 74  # 70 blocks and 4 filemarks


def _tape() -> list[bytes | int]:
    """Blocks (random or text) and filemark counts (ints)."""
    return mixed_objects(21, 70, SIZES, TEXT, {15: 1, 40: 3})  # a filemark, a run of three


def _damage(path: Path, off: int, at: int) -> None:
    """Flip one byte ``at`` bytes into the record at ``off``: its CRC no longer checks."""
    with open(path, "r+b") as f:
        f.seek(off + at)
        b = f.read(1)
        f.seek(off + at)
        f.write(bytes([b[0] ^ 1]))


def _run(root: Path, mode: str) -> tuple[list[list[bytes]], int]:
    """The sequence against a fresh copy of the tape; (answers, READs the C drive served)."""
    lib = Library.create(root, LibraryConfig(drives=1, slots=4, mailslots=1))
    lib.create_cartridge(BARCODE, capacity=64 << 20)
    path = lib.cartridge_path(BARCODE)
    c = TapeCartridge.open(path)
    data_recs = write_objects(c, _tape())
    offsets = [c.index.offsets[r] for r in (data_recs[9], data_recs[30])]
    c.close()
    _damage(path, offsets[0], RECORD_HEADER_SIZE + 5)  # the payload's CRC fails
    _damage(path, offsets[1], 9)  # the record header's CRC fails
    lib.load(BARCODE, 0)
    devices = dict(build_device_set(lib).luns)
    drive = devices[1]
    if mode == "general":
        drive.stream_read = drive.stream_write = None  # the transport finds no fast path
    answers: list[list[bytes]] = []
    rnd = random.Random(5)
    before = native.drive_reads()
    try:
        paths = stream_paths.ReferencePaths if mode == "python" else native
        with two_sessions(devices, paths=paths) as (a, b):

            def cmd(ini: RawInitiator, cdb: bytes, **kw) -> None:
                answers.append(ini.answers(ini.scsi(cdb, lun=1, **kw)))

            cmd(a, bytes(6))  # TEST UNIT READY: the power-on UA
            cmd(b, bytes(6))
            cmd(a, bytes([0x01, 0, 0, 0, 0, 0]))  # REWIND
            protected = False
            for step in range(700):
                cart = drive._cart  # the same state in every run: peeking changes nothing
                n = cart.next_data_length() if cart is not None else 0
                if n <= 0:
                    n = rnd.choice(SIZES)
                roll = rnd.random()
                if cart is not None and cart.at_eod and rnd.random() < 0.7:
                    roll = 0.9  # jump back: a few BLANK CHECKs are enough
                if protected:  # the block and its 4 bytes of protection information
                    cmd(a, read6(n + 4), read=n + 4)
                elif roll < 0.7:
                    cmd(a, read6(n), read=n)  # the streaming case
                elif roll < 0.74:
                    cmd(a, read6(n, 0x02), read=n)  # SILI
                elif roll < 0.77:
                    cmd(a, read6(n + 100), read=n + 100)  # longer: ILI, positive residue
                elif roll < 0.80:
                    cmd(a, read6(n + 100, 0x02), read=n + 100)  # longer with SILI: good
                elif roll < 0.83 and n > 1:
                    cmd(a, read6(n - 1), read=n - 1)  # shorter: ILI, negative residue
                elif roll < 0.85:
                    cmd(a, read6(n), read=n + 8)  # EDTL other than the CDB's length
                elif roll < 0.86:
                    cmd(b, bytes([0x16, 0, 0, 0, 0, 0]))  # B: RESERVE(6): A conflicts
                elif roll < 0.90:
                    cmd(b, bytes([0x17, 0, 0, 0, 0, 0]))  # B: RELEASE(6)
                elif roll < 0.94:
                    obj = rnd.randrange(OBJECTS + 3)
                    cmd(a, bytes([0x2B, 0, 0]) + obj.to_bytes(4, "big") + bytes(3))  # LOCATE
                elif roll < 0.95:
                    cmd(a, bytes([0x03, 0, 0, 0, 18, 0]), read=18)  # REQUEST SENSE
                elif roll < 0.96:  # LOG SENSE, sequential access: the bytes read counters
                    cmd(a, bytes([0x4D, 0, 0x4C, 0, 0, 0, 0, 1, 0, 0]), read=256)
                else:
                    what = rnd.random()
                    if what < 0.3:  # an injected read error a few blocks on, then gone
                        if cart is not None:
                            at = cart.position + rnd.randrange(1, 4)
                            faults.inject_media_error(lib.root, BARCODE, at, 0, {faults.READ})
                    else:
                        faults.clear_media_errors(lib.root, BARCODE)
                    cmd(a, bytes(6))  # TEST UNIT READY: a command off the data path reads it
                if step % 97 == 96 or (protected and step % 97 == 12):
                    protected = not protected  # LBP on for a while, then off
                    sel, page = lbp_select(protected)
                    cmd(a, sel, write=page, immediate_data=len(page))
                cmd(a, READ_POSITION, read=20)
    finally:
        lib.close()
    return answers, native.drive_reads() - before


@pytest.fixture(scope="module")
def general(tmp_path_factory: pytest.TempPathFactory) -> list[list[bytes]]:
    return _run(tmp_path_factory.mktemp("general"), "general")[0]


@pytest.mark.parametrize("mode", ["c", "python"])
def test_c_drive_read_answers_as_python_and_general(tmp_path: Path, general: list[list[bytes]],
                                                    mode: str) -> None:
    answers, served = _run(tmp_path / mode, mode)
    assert len(answers) == len(general)
    for i, (x, y) in enumerate(zip(answers, general, strict=True)):
        assert x == y, f"answer {i} differs"
    if mode == "c":
        assert served > 150, served  # most plain READs were the C drive's
    else:
        assert served == 0
    sense = [x[-1][50:] for x in general if x[-1][0] & 0x3F == Op.SCSI_RSP and len(x[-1]) > 50]
    keys = {(s[2] & 0x0F, s[2] & 0xE0) for s in sense if len(s) > 2}
    # the sequence met filemarks, ILI, end of data and medium errors
    assert {(0, 0x80), (0, 0x20), (8, 0), (3, 0)} <= keys, keys
