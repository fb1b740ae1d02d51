"""SSC tape drive model on a real library, driven with raw CDB bytes."""

from __future__ import annotations

import errno
import os

import pytest

from tape_formats.store.medium import recipe_path
from vtl.config import STORES, LibraryConfig
from vtl.library import Library
from vtl.scsi.base import Nexus, SenseKey, Status
from vtl.scsi.ssc import TapeDrive

A = Nexus("iqn.a,i,0x1", "iqn.a")
B = Nexus("iqn.b,i,0x1", "iqn.b")
MiB = 1 << 20


class Sense:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.key = raw[2] & 0x0F
        self.asc, self.ascq = raw[12], raw[13]
        self.fm = bool(raw[2] & 0x80)
        self.eom = bool(raw[2] & 0x40)
        self.ili = bool(raw[2] & 0x20)
        self.info = int.from_bytes(raw[3:7], "big", signed=True) if raw[0] & 0x80 else None
        self.fp = int.from_bytes(raw[16:18], "big") if raw[15] & 0x80 else None

    @property
    def code(self):
        return (self.key, self.asc, self.ascq)


class R:
    def __init__(self, res) -> None:
        self.status = res.status
        self.s = Sense(res.sense) if res.sense else None
        self.d = bytes(res.data)


def run(drv, *cdb, data=None, nexus=A):
    return R(drv.execute(nexus, bytes(cdb), data))


def good(drv, *cdb, data=None, nexus=A):
    r = run(drv, *cdb, data=data, nexus=nexus)
    assert r.status == Status.GOOD, r.s.code if r.s else r
    return r.d


def check(drv, *cdb, data=None, nexus=A) -> Sense:
    r = run(drv, *cdb, data=data, nexus=nexus)
    assert r.status == Status.CHECK_CONDITION, r
    r.s.data = r.d
    return r.s


def write(drv, data: bytes, fixed=False):
    n = len(data) // drv.block_size if fixed else len(data)
    return run(drv, 0x0A, 1 if fixed else 0, *n.to_bytes(3, "big"), 0, data=data)


def read(drv, n: int, fixed=False, sili=False):
    return run(drv, 0x08, (1 if fixed else 0) | (2 if sili else 0), *n.to_bytes(3, "big"), 0)


def wfm(drv, n=1, immed=False):
    return good(drv, 0x10, 1 if immed else 0, *n.to_bytes(3, "big"), 0)


def space(drv, code, count):
    return run(drv, 0x11, code, *count.to_bytes(3, "big", signed=True), 0)


def rewind(drv):
    good(drv, 0x01, 0, 0, 0, 0, 0)


def pos(drv) -> int:
    d = good(drv, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return int.from_bytes(d[4:8], "big")


@pytest.fixture(params=STORES)
def lib(fast_dir, request):
    """Every test runs on a plain and on a dedup library: SSC must not see the store."""
    lib = Library.create(fast_dir / "lib", LibraryConfig(store=request.param))
    lib.create_cartridge("A00001L8", capacity=4 * MiB)
    lib.create_cartridge("A00002L8", capacity=4 * MiB)
    lib.create_cartridge("W00001LY", capacity=4 * MiB)
    yield lib
    lib.close()


@pytest.fixture
def drv(lib):
    bay = lib.load("A00001L8", 0)
    d = TapeDrive(bay)
    for nx in (A, B):
        s = check(d, 0, 0, 0, 0, 0, 0, nexus=nx)
        assert s.code == (6, 0x29, 0)
    return d


def test_no_medium_not_ready(lib):
    d = TapeDrive(lib.drives[1])
    check(d, 0, 0, 0, 0, 0, 0)
    assert check(d, 0, 0, 0, 0, 0, 0).code == (SenseKey.NOT_READY, 0x3A, 0)
    assert check(d, 0x08, 0, 0, 0, 1, 0).code == (2, 0x3A, 0)
    # REQUEST SENSE reports the not-ready state
    r = good(d, 0x03, 0, 0, 0, 18, 0)
    assert Sense(r).code == (2, 0x3A, 0)
    # INQUIRY works without medium
    inq = good(d, 0x12, 0, 0, 0, 96, 0)
    assert inq[0] == 0x01 and inq[16:32] == b"ULT3580-TD8     "


def test_inquiry_vpd(drv):
    assert good(drv, 0x12, 1, 0, 0, 255, 0)[4:] == bytes([0x00, 0x80, 0x83, 0xB0, 0xB1])
    assert good(drv, 0x12, 1, 0xB1, 0, 255, 0)[4:].strip() == drv.serial.encode()
    assert good(drv, 0x12, 1, 0xB0, 0, 255, 0)[4] & 1
    assert good(drv, 0x12, 1, 0x80, 0, 255, 0)[4:] == drv.serial.encode()


def test_read_block_limits(drv):
    assert good(drv, 0x05, 0, 0, 0, 0, 0) == bytes([0, 0x80, 0, 0, 0, 1])
    d = good(drv, 0x05, 1, 0, 0, 0, 0)
    assert len(d) == 20 and int.from_bytes(d[12:20], "big") > 0
    assert check(drv, 0x05, 2, 0, 0, 0, 0).code == (5, 0x24, 0)


def test_variable_write_read_ili_filemark_eod(drv):
    blocks = [b"a" * 100, b"b" * 300, b"c" * 50]
    for b in blocks:
        assert write(drv, b).status == Status.GOOD
    wfm(drv)
    assert write(drv, b"after").status == Status.GOOD
    wfm(drv, 0)  # flush only
    rewind(drv)
    assert good(drv, 0x08, 0, 0, 0, 100, 0) == blocks[0]
    # short block read (requested 400, block 300): ILI, INFORMATION = +100, data = 300 bytes
    s = check(drv, 0x08, 0, 0, 1, 0x90, 0)
    assert s.code == (0, 0, 0) and s.ili and s.info == 100 and s.data == blocks[1]
    # overlength (requested 20, block 50): ILI, INFORMATION = -30, data truncated
    s = check(drv, 0x08, 0, 0, 0, 20, 0)
    assert s.ili and s.info == -30 and s.data == b"c" * 20
    # filemark: NO SENSE 00/01 FILEMARK, residue = requested length
    s = check(drv, 0x08, 0, 0, 0, 64, 0)
    assert s.code == (0, 0, 1) and s.fm and s.info == 64 and not s.data
    # past the filemark: SILI suppresses ILI for a short block
    assert read(drv, 100, sili=True).d == b"after"
    # EOD: BLANK CHECK 00/05, residue = requested
    s = check(drv, 0x08, 0, 0, 0, 10, 0)
    assert s.code == (SenseKey.BLANK_CHECK, 0, 5) and s.info == 10
    assert pos(drv) == 5
    # zero-length read is a no-op
    assert good(drv, 0x08, 0, 0, 0, 0, 0) == b""


def test_fixed_mode(drv):
    # mt setblk 512: MODE SELECT(6) with header + one block descriptor
    good(drv, 0x15, 0x10, 0, 0, 12, 0, data=bytes([0, 0, 0x10, 8, 0, 0, 0, 0, 0, 0, 2, 0]))
    d = good(drv, 0x1A, 0, 0, 0, 12, 0)
    assert d[3] == 8 and int.from_bytes(d[9:12], "big") == 512 and d[4] == 0x5E
    assert drv.block_size == 512
    data = os.urandom(3 * 512)
    assert write(drv, data, fixed=True).status == Status.GOOD
    wfm(drv)
    good(drv, 0x0A, 0, 0, 0, 100, 0, data=b"x" * 100)  # a variable block in fixed mode
    rewind(drv)
    assert pos(drv) == 0
    # read 4 fixed blocks: three then the filemark -> FILEMARK, residue 1 block
    s = check(drv, 0x08, 1, 0, 0, 4, 0)
    assert s.fm and s.info == 1 and s.data == data
    # wrong-length block in fixed mode: ILI, residue counts the bad block
    s = check(drv, 0x08, 1, 0, 0, 2, 0)
    assert s.ili and s.info == 2 and s.data == b""
    # fixed EOD
    s = check(drv, 0x08, 1, 0, 0, 2, 0)
    assert s.key == SenseKey.BLANK_CHECK and s.info == 2
    # SILI with FIXED is invalid
    assert check(drv, 0x08, 3, 0, 0, 1, 0).code == (5, 0x24, 0)
    # back to variable mode
    good(drv, 0x15, 0x10, 0, 0, 12, 0, data=bytes([0, 0, 0x10, 8] + [0] * 8))
    assert drv.block_size == 0
    s = check(drv, 0x08, 1, 0, 0, 1, 0)
    assert s.code == (5, 0x24, 0) and s.fp == 1
    s = check(drv, 0x0A, 1, 0, 0, 1, 0, data=b"x")
    assert s.code == (5, 0x24, 0)


def test_block_size_limits(drv):
    bd = bytes([0, 0, 0x10, 8, 0, 0, 0, 0, 0, 0x90, 0, 0])  # 9 MiB
    s = check(drv, 0x15, 0x10, 0, 0, 12, 0, data=bd)
    assert s.code == (5, 0x26, 0) and s.fp == 9
    bd = bytes([0, 0, 0x10, 8, 0x33, 0, 0, 0, 0, 0, 2, 0])  # bad density
    assert check(drv, 0x15, 0x10, 0, 0, 12, 0, data=bd).code == (5, 0x26, 0)
    s = check(drv, 0x0A, 0, 0x80, 0, 1, 0, data=b"x")  # variable block > 8 MiB
    assert s.code == (5, 0x24, 0)


def make_tape(drv):
    """Objects: 0 b0, 1 b1, 2 FM, 3 b2, 4 b3, 5 b4, 6 FM, 7 b5, EOD=8."""
    for name in (b"b0", b"b1"):
        write(drv, name)
    wfm(drv)
    for name in (b"b2", b"b3", b"b4"):
        write(drv, name)
    wfm(drv)
    write(drv, b"b5")
    rewind(drv)


def test_space_blocks_and_filemarks(drv):
    make_tape(drv)
    # forward 5 blocks from 0: crosses the filemark at 2 after 2 blocks -> residue 3
    s = space(drv, 0, 5).s
    assert s.code == (0, 0, 1) and s.fm and s.info == 3
    assert pos(drv) == 3
    assert space(drv, 0, 2).status == Status.GOOD and pos(drv) == 5
    # backward 4 blocks from 5: hits filemark at 2 after 2 blocks -> residue 2 (SSC: never
    # negative), positioned before the FM
    s = space(drv, 0, -4).s
    assert s.fm and s.info == 2 and pos(drv) == 2
    # backward blocks into BOP
    s = space(drv, 0, -5).s
    assert s.code == (0, 0, 4) and s.eom and s.info == 3 and pos(drv) == 0
    # filemarks forward
    assert space(drv, 1, 1).status == Status.GOOD and pos(drv) == 3
    assert space(drv, 1, 1).status == Status.GOOD and pos(drv) == 7
    s = space(drv, 1, 2).s
    assert s.code == (SenseKey.BLANK_CHECK, 0, 5) and s.info == 2 and pos(drv) == 8
    # filemarks backward: lands on the BOP side of the filemark
    assert space(drv, 1, -1).status == Status.GOOD and pos(drv) == 6
    s = space(drv, 1, -3).s
    assert s.code == (0, 0, 4) and s.eom and s.info == 2 and pos(drv) == 0
    # blocks forward into EOD
    good(drv, 0x2B, 0, 0, 0, 0, 0, 7, 0, 0, 0)
    s = space(drv, 0, 3).s
    assert s.code == (SenseKey.BLANK_CHECK, 0, 5) and s.info == 2
    # EOD code, sequential filemarks unsupported, setmarks unsupported
    rewind(drv)
    assert space(drv, 3, 0).status == Status.GOOD and pos(drv) == 8
    assert space(drv, 2, 1).s.code == (5, 0x24, 0)
    assert space(drv, 4, 1).s.code == (5, 0x24, 0)
    assert space(drv, 0, 0).status == Status.GOOD and pos(drv) == 8


def test_space16(drv):
    make_tape(drv)
    good(drv, 0x91, 1, 0, 0, *(2).to_bytes(8, "big"), 0, 0, 0, 0)
    assert pos(drv) == 7
    r = run(drv, 0x91, 0, 0, 0, *(-3).to_bytes(8, "big", signed=True), 0, 0, 0, 0)
    assert r.s.fm and r.s.info == 3 and pos(drv) == 6
    s = check(drv, 0x91, 0, 0, 0, *(1).to_bytes(8, "big"), 0, 1, 0, 0)
    assert s.code == (5, 0x24, 0) and s.fp == 12
    good(drv, 0x91, 3, 0, 0, *bytes(8), 0, 0, 0, 0)
    assert pos(drv) == 8


def test_locate_and_read_position(drv):
    make_tape(drv)
    d = good(drv, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert len(d) == 20 and d[0] & 0x80  # BOP
    good(drv, 0x2B, 0, 0, 0, 0, 0, 4, 0, 0, 0)
    assert good(drv, 0x08, 0, 0, 0, 2, 0) == b"b3"
    d = good(drv, 0x34, 6, 0, 0, 0, 0, 0, 0, 0, 0)  # long form
    assert len(d) == 32 and d[0] & 0x80 == 0
    assert int.from_bytes(d[8:16], "big") == 5 and int.from_bytes(d[16:24], "big") == 1
    d = good(drv, 0x34, 8, 0, 0, 0, 0, 0, 0, 32, 0)  # extended form
    assert int.from_bytes(d[2:4], "big") == 0x1C and int.from_bytes(d[8:16], "big") == 5
    assert check(drv, 0x34, 3, 0, 0, 0, 0, 0, 0, 0, 0).code == (5, 0x24, 0)
    # LOCATE beyond EOD -> BLANK CHECK, position at EOD
    s = check(drv, 0x2B, 0, 0, 0, 0, 0, 99, 0, 0, 0)
    assert s.code == (SenseKey.BLANK_CHECK, 0, 5) and pos(drv) == 8
    # LOCATE with BT and CP (partition 0)
    good(drv, 0x2B, 0x06, 0, 0, 0, 0, 1, 0, 0, 0)
    assert pos(drv) == 1
    assert check(drv, 0x2B, 0x02, 0, 0, 0, 0, 1, 0, 1, 0).code == (5, 0x24, 0)
    # LOCATE(16) object, file, EOD
    good(drv, 0x92, 0, 0, 0, *(3).to_bytes(8, "big"), 0, 0, 0, 0)
    assert pos(drv) == 3
    good(drv, 0x92, 1 << 3, 0, 0, *(2).to_bytes(8, "big"), 0, 0, 0, 0)
    assert pos(drv) == 7
    good(drv, 0x92, 1 << 3, 0, 0, *(0).to_bytes(8, "big"), 0, 0, 0, 0)
    assert pos(drv) == 0
    s = check(drv, 0x92, 1 << 3, 0, 0, *(5).to_bytes(8, "big"), 0, 0, 0, 0)
    assert s.key == SenseKey.BLANK_CHECK
    good(drv, 0x92, 3 << 3, 0, 0, *bytes(8), 0, 0, 0, 0)
    assert pos(drv) == 8
    assert check(drv, 0x92, 2 << 3, 0, 0, *bytes(8), 0, 0, 0, 0).code == (5, 0x24, 0)


def test_write_in_middle_truncates(drv):
    make_tape(drv)
    good(drv, 0x2B, 0, 0, 0, 0, 0, 1, 0, 0, 0)
    write(drv, b"new")
    s = check(drv, 0x08, 0, 0, 0, 10, 0)
    assert s.key == SenseKey.BLANK_CHECK
    rewind(drv)
    assert check(drv, 0x08, 0, 0, 0, 10, 0).data == b"b0"


def test_erase(drv):
    make_tape(drv)
    good(drv, 0x2B, 0, 0, 0, 0, 0, 3, 0, 0, 0)
    good(drv, 0x19, 1, 0, 0, 0, 0)
    assert check(drv, 0x08, 0, 0, 0, 10, 0).key == SenseKey.BLANK_CHECK
    assert space(drv, 3, 0).status == Status.GOOD and pos(drv) == 3


def test_write_filemarks_immed_and_wsmk(drv):
    write(drv, b"x")
    wfm(drv, 2, immed=True)
    assert pos(drv) == 3
    assert check(drv, 0x10, 2, 0, 0, 1, 0).code == (5, 0x24, 0)  # WSMK


def test_early_warning_and_end_of_medium(drv):
    # compression off (page 0x0F DCE = 0) so random data fills the cartridge predictably
    page = bytes([0x0F, 14, 0x40, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])
    good(drv, 0x15, 0x10, 0, 0, 4 + 16, 0, data=bytes(4) + page)
    assert not drv.compression and drv.mode_page(0x10).current[12] == 0
    block = os.urandom(256 * 1024)
    saw_ew = False
    for _ in range(64):
        r = write(drv, block)
        if r.status == Status.GOOD:
            assert not saw_ew
            continue
        if r.s.key == SenseKey.NO_SENSE:
            assert r.s.code == (0, 0, 2) and r.s.eom and r.s.info == 0
            saw_ew = True
            continue
        assert r.s.code == (SenseKey.VOLUME_OVERFLOW, 0, 2) and r.s.eom
        assert r.s.info == len(block)
        break
    else:
        pytest.fail("never reached end of medium")
    assert saw_ew
    # READ POSITION at EOD past early warning: EOP; reading there: BLANK CHECK with EOM
    assert good(drv, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0)[0] & 0x40
    s = check(drv, 0x08, 0, 0, 0, 1, 0)
    assert s.code == (SenseKey.BLANK_CHECK, 0, 5) and s.eom
    # a filemark still fits: reported with early warning
    r = run(drv, 0x10, 0, 0, 0, 1, 0)
    assert r.status == Status.CHECK_CONDITION and r.s.code == (0, 0, 2) and r.s.eom
    # more filemarks than fit: VOLUME OVERFLOW, residue = the ones not written
    before = pos(drv)
    r = run(drv, 0x10, 1, 0xFF, 0xFF, 0xFF, 0)
    assert r.s.code == (SenseKey.VOLUME_OVERFLOW, 0, 2) and r.s.eom
    assert r.s.info == 0xFFFFFF - (pos(drv) - before) and pos(drv) > before


def test_disk_failure_is_medium_error(drv, monkeypatch):
    cart = drv._medium()

    def fail(*a, **k):
        raise OSError(errno.EIO, "disk on fire")

    monkeypatch.setattr(cart, "write_block", fail)
    s = check(drv, 0x0A, 0, 0, 0, 4, 0, data=b"abcd")
    assert s.code == (SenseKey.MEDIUM_ERROR, 0x0C, 0) and not s.eom and s.info == 4
    flags = good(drv, 0x4D, 0, 0x40 | 0x2E, 0, 0, 0, 0, 1, 0, 0)
    assert flags[4 + 5 * 5 + 4] == 1  # flag 6 (write failure) is parameter index 5


def test_write_protect(drv, lib):
    write(drv, b"x")
    drv._medium().set_write_protect(True)
    rewind(drv)
    s = check(drv, 0x0A, 0, 0, 0, 1, 0, data=b"y")
    assert s.code == (SenseKey.DATA_PROTECT, 0x27, 0)
    assert check(drv, 0x10, 0, 0, 0, 1, 0).code == (7, 0x27, 0)
    assert check(drv, 0x19, 1, 0, 0, 0, 0).code == (7, 0x27, 0)
    d = good(drv, 0x1A, 0, 0x3F, 0, 255, 0)
    assert d[2] & 0x80
    # TapeAlert flag 9 set, cleared by reading the page
    ta = good(drv, 0x4D, 0, 0x40 | 0x2E, 0, 0, 0, 0, 1, 0, 0)
    assert ta[4 + 8 * 5 + 4] == 1
    ta = good(drv, 0x4D, 0, 0x40 | 0x2E, 0, 0, 0, 0, 1, 0, 0)
    assert ta[4 + 8 * 5 + 4] == 0


def test_worm(lib):
    bay = lib.load("W00001LY", 0)
    d = TapeDrive(bay)
    check(d, 0, 0, 0, 0, 0, 0)
    write(d, b"one")
    write(d, b"two")
    wfm(d)
    rewind(d)
    assert good(d, 0x1A, 0, 0, 0, 255, 0)[1] == 0x8C  # an IBM drive: LTO-8 WORM medium type
    assert good(d, 0x1A, 0x08, 0x1D, 0, 255, 0)[4:7] == bytes([0x1D, 30, 0x01])  # WORMM
    s = check(d, 0x0A, 0, 0, 0, 3, 0, data=b"bad")
    assert s.code == (SenseKey.DATA_PROTECT, 0x30, 0x0C)
    assert check(d, 0x10, 0, 0, 0, 1, 0).code == (7, 0x30, 0x0C)
    space(d, 3, 0)
    assert write(d, b"append").status == Status.GOOD


def test_media_change_unit_attention(drv, lib):
    write(drv, b"x")
    lib.unload(0)
    assert check(drv, 0, 0, 0, 0, 0, 0).code == (2, 0x3A, 0)
    lib.load("A00002L8", 0)
    for nx in (A, B):
        assert check(drv, 0, 0, 0, 0, 0, 0, nexus=nx).code == (6, 0x28, 0)
    good(drv, 0, 0, 0, 0, 0, 0)
    assert check(drv, 0x08, 0, 0, 0, 1, 0).key == SenseKey.BLANK_CHECK  # new, empty tape


def test_load_unload_and_prevent(drv, lib):
    write(drv, b"data")
    good(drv, 0x1E, 0, 0, 0, 1, 0)
    assert lib.drives[0].prevent_removal
    s = check(drv, 0x1B, 0, 0, 0, 0, 0)
    assert s.code == (SenseKey.ILLEGAL_REQUEST, 0x53, 0x02)
    good(drv, 0x1E, 0, 0, 0, 0, 0)
    assert not lib.drives[0].prevent_removal
    good(drv, 0x1B, 1, 0, 0, 0, 0)  # unload, IMMED: GOOD at once, the unload after it
    drv._immediate.wait()
    assert check(drv, 0, 0, 0, 0, 0, 0).code == (2, 0x3A, 0)
    assert lib.drives[0].cartridge is None
    good(drv, 0x1B, 0, 0, 0, 1, 0)  # load
    assert check(drv, 0, 0, 0, 0, 0, 0).code == (6, 0x28, 0)  # not ready -> ready
    assert check(drv, 0, 0, 0, 0, 0, 0, nexus=B).code == (6, 0x28, 0)
    good(drv, 0, 0, 0, 0, 0, 0)
    assert pos(drv) == 0 and good(drv, 0x08, 0, 0, 0, 4, 0) == b"data"
    assert check(drv, 0x1B, 0, 0, 0, 5, 0).code == (5, 0x24, 0)  # EOT with LOAD
    good(drv, 0x1B, 0, 0, 0, 3, 0)  # load with retension
    # the changer can move it once unloaded
    good(drv, 0x1B, 0, 0, 0, 0, 0)
    lib.unload(0)


def test_report_density_support(drv):
    d = good(drv, 0x44, 0, 0, 0, 0, 0, 0, 0x10, 0, 0)
    assert int.from_bytes(d[:2], "big") == len(d) - 2 == 2 + 2 * 52
    first, second = d[4:56], d[56:108]
    assert first[0] == 0x5E and first[2] & 0xA1 == 0xA1 and first[24:32] == b"LTO8    "
    assert second[0] == 0x5C and second[2] & 0x80 and not second[2] & 0x20
    d = good(drv, 0x44, 1, 0, 0, 0, 0, 0, 0x10, 0, 0)
    assert len(d) == 4 + 52 and d[4] == 0x5E
    assert check(drv, 0x44, 2, 0, 0, 0, 0, 0, 0x10, 0, 0).code == (5, 0x24, 0)


def test_mode_pages(drv):
    d = good(drv, 0x1A, 0, 0x3F, 0, 255, 0)
    assert d[3] == 8 and d[4] == 0x5E
    codes = []
    off = 12
    while off < len(d):
        codes.append(d[off] & 0x3F)
        off += 2 + d[off + 1]
    assert codes == [0x0A, 0x0F, 0x10, 0x11, 0x1C, 0x1D]
    assert d[2] & 0x70 == 0x10  # buffered mode 1
    # DBD drops the block descriptor
    d = good(drv, 0x1A, 0x08, 0x0F, 0, 255, 0)
    assert d[3] == 0 and d[4] == 0x0F and d[6] & 0x80  # DCE on by default
    # MODE SENSE(10)
    d = good(drv, 0x5A, 0, 0x10, 0, 0, 0, 0, 0, 255, 0)
    assert int.from_bytes(d[6:8], "big") == 8 and d[16] == 0x10
    # medium partition page: up to 3 more partitions on LTO-8 (one now), echo back accepted
    d = good(drv, 0x1A, 0x08, 0x11, 0, 255, 0)
    page = d[4:]
    assert page[2] == 3 and page[3] == 0
    good(drv, 0x15, 0x10, 0, 0, len(d), 0, data=bytes(4) + page)
    bad = bytearray(page)
    bad[3] = 4  # four additional partitions
    assert check(drv, 0x15, 0x10, 0, 0, len(d), 0, data=bytes(4) + bytes(bad)).code == (5, 0x26, 0)
    # SDCA in page 0x10 toggles DCE
    d = good(drv, 0x1A, 0x08, 0x10, 0, 255, 0)
    page = bytearray(d[4:])
    page[2 + 12] = 0
    good(drv, 0x15, 0x10, 0, 0, 4 + len(page), 0, data=bytes(4) + bytes(page))
    assert not drv.compression
    # buffered mode 0 via the header, invalid 2
    good(drv, 0x15, 0x10, 0, 0, 4, 0, data=bytes([0, 0, 0x00, 0]))
    assert drv.buffered_mode == 0
    assert check(drv, 0x15, 0x10, 0, 0, 4, 0, data=bytes([0, 0, 0x20, 0])).code == (5, 0x26, 0)
    # other nexus is told
    assert check(drv, 0, 0, 0, 0, 0, 0, nexus=B).code == (6, 0x2A, 0x01)
    # changeable values
    d = good(drv, 0x1A, 0, 0x40 | 0x0F, 0, 255, 0)
    assert d[2] == 0x70 and d[9:12] == b"\xff\xff\xff" and d[14] == 0x80


def test_log_pages(drv):
    d = good(drv, 0x4D, 0, 0, 0, 0, 0, 0, 0, 255, 0)
    assert d[4:] == bytes([0x00, 0x02, 0x03, 0x0C, 0x17, 0x2E, 0x31])
    write(drv, b"z" * 1000)
    d = good(drv, 0x4D, 0, 0x40 | 0x0C, 0, 0, 0, 0, 1, 0, 0)
    assert int.from_bytes(d[4:6], "big") == 0 and int.from_bytes(d[8:16], "big") == 1000
    rewind(drv)
    read(drv, 1000)
    d = good(drv, 0x4D, 0, 0x40 | 0x0C, 0, 0, 0, 0, 0, 3, 0, 1, 0, 0)[:0] or \
        good(drv, 0x4D, 0, 0x40 | 0x0C, 0, 0, 0, 3, 1, 0, 0)
    assert int.from_bytes(d[4:6], "big") == 3 and int.from_bytes(d[8:16], "big") == 1000
    d = good(drv, 0x4D, 0, 0x40 | 0x2E, 0, 0, 0, 0, 1, 0, 0)
    assert int.from_bytes(d[2:4], "big") == 64 * 5
    d = good(drv, 0x4D, 0, 0x40 | 0x31, 0, 0, 0, 0, 1, 0, 0)
    assert int.from_bytes(d[24:28], "big") == 4  # max capacity partition 0, MiB
    d = good(drv, 0x4D, 0, 0x40 | 0x02, 0, 0, 0, 0, 1, 0, 0)
    assert int.from_bytes(d[2:4], "big") > 0
    good(drv, 0x4C, 2, 0xC0, 0, 0, 0, 0, 0, 0, 0)  # reset all


def test_attributes(drv):
    # WRITE ATTRIBUTE: application vendor (0x0800, ASCII, 8 bytes)
    attr = (0x0800).to_bytes(2, "big") + bytes([0x01]) + (8).to_bytes(2, "big") + b"BAREOS  "
    plist = len(attr).to_bytes(4, "big") + attr
    good(drv, 0x8D, 0, 0, 0, 0, 0, 0, 0, 0, 0, *len(plist).to_bytes(4, "big"), 0, 0, data=plist)
    d = good(drv, 0x8C, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00, 0, 0, 0x10, 0, 0, 0)
    assert int.from_bytes(d[:4], "big") == len(d) - 4
    assert d[4:6] == b"\x08\x00" and d[6] == 0x01 and d[7:9] == b"\x00\x08" and d[9:17] == b"BAREOS  "
    # all attribute values include read-only device attributes
    d = good(drv, 0x8C, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0)
    assert d[4:6] == b"\x00\x00" and d[6] & 0x80
    # attribute list
    d = good(drv, 0x8C, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0)
    ids = [int.from_bytes(d[i : i + 2], "big") for i in range(4, len(d), 2)]
    assert 0x0800 in ids and 0x0001 in ids
    # volume and partition lists
    assert good(drv, 0x8C, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0) == bytes([0, 2, 0, 1])
    assert good(drv, 0x8C, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0) == bytes([0, 2, 0, 1])
    # read-only attribute
    ro = (0x0001).to_bytes(2, "big") + bytes([0]) + (8).to_bytes(2, "big") + bytes(8)
    plist = len(ro).to_bytes(4, "big") + ro
    s = check(drv, 0x8D, 0, 0, 0, 0, 0, 0, 0, 0, 0, *len(plist).to_bytes(4, "big"), 0, 0,
              data=plist)
    assert s.code == (5, 0x26, 0) and s.fp == 4
    # wrong length for a known attribute
    bad = (0x0800).to_bytes(2, "big") + bytes([0x01]) + (3).to_bytes(2, "big") + b"abc"
    plist = len(bad).to_bytes(4, "big") + bad
    s = check(drv, 0x8D, 0, 0, 0, 0, 0, 0, 0, 0, 0, *len(plist).to_bytes(4, "big"), 0, 0,
              data=plist)
    assert s.code == (5, 0x26, 0) and s.fp == 7
    # attributes out of ascending order: nothing changes
    two = (0x0801).to_bytes(2, "big") + bytes([0x01]) + (32).to_bytes(2, "big") + b"x" * 32
    two += (0x0800).to_bytes(2, "big") + bytes([0x01]) + (8).to_bytes(2, "big") + b"OTHER   "
    plist = len(two).to_bytes(4, "big") + two
    s = check(drv, 0x8D, 0, 0, 0, 0, 0, 0, 0, 0, 0, *len(plist).to_bytes(4, "big"), 0, 0,
              data=plist)
    assert s.code == (5, 0x26, 0) and drv._medium().mam.get(0x0801) is None
    # deleting an attribute with length 0
    gone = (0x0800).to_bytes(2, "big") + bytes([0x01]) + (0).to_bytes(2, "big")
    plist = len(gone).to_bytes(4, "big") + gone
    good(drv, 0x8D, 0, 0, 0, 0, 0, 0, 0, 0, 0, *len(plist).to_bytes(4, "big"), 0, 0, data=plist)
    assert drv._medium().mam.get(0x0800) is None
    # other volume number
    s = check(drv, 0x8C, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0)
    assert s.code == (5, 0x24, 0) and s.fp == 5
    # unknown service action
    assert check(drv, 0x8C, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0).code == (5, 0x24, 0)


def test_report_supported_opcodes_lists_ssc(drv):
    d = good(drv, 0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0)
    ops = {d[i] for i in range(4, len(d), 8)}
    assert {0x08, 0x0A, 0x10, 0x11, 0x91, 0x2B, 0x92, 0x34, 0x01, 0x1B, 0x19, 0x05, 0x44,
            0x8C, 0x8D, 0x12, 0x5E} <= ops
    d = good(drv, 0xA3, 0x0C, 1, 0x08, 0, 0, 0, 0, 0x10, 0, 0, 0)
    assert d[:4] == bytes([0, 3, 0, 6]) and d[4:10] == bytes([0x08, 0x03, 0xFF, 0xFF, 0xFF, 0])


def test_malformed_cdbs(drv):
    assert check(drv, 0x08, 0x04, 0, 0, 1, 0).code == (5, 0x24, 0)  # reserved bit
    assert check(drv, 0x0A, 0x02, 0, 0, 1, 0, data=b"x").code == (5, 0x24, 0)
    assert check(drv, 0x01, 0x02, 0, 0, 0, 0).code == (5, 0x24, 0)
    assert check(drv, 0x11, 0x10, 0, 0, 1, 0).code == (5, 0x24, 0)
    assert check(drv, 0x08, 0, 0).code == (5, 0x24, 0)  # truncated
    assert check(drv, 0x0D, 0, 0, 0, 0, 0).code == (5, 0x20, 0)
    # WRITE with fewer Data-Out bytes than the transfer length
    assert check(drv, 0x0A, 0, 0, 0, 9, 0, data=b"x").code == (5, 0x1A, 0)


def test_corrupt_block_is_medium_error(drv):
    write(drv, b"q" * 300)
    write(drv, b"r" * 300)
    wfm(drv)
    cart = drv._medium()
    if recipe_path(cart.path).exists():
        pytest.skip("dedup: payloads live in chunks (test_dedup_store damages one)")
    off = cart.index.offsets[0]
    os.pwrite(cart._fd, b"\xff\xff\xff\xff", off + 40)
    rewind(drv)
    s = check(drv, 0x08, 0, 0, 1, 0x2C, 0)
    assert s.code == (SenseKey.MEDIUM_ERROR, 0x11, 0)
    assert good(drv, 0x08, 0, 0, 1, 0x2C, 0) == b"r" * 300


def test_descriptor_sense_via_control_page(drv):
    d = good(drv, 0x1A, 0x08, 0x0A, 0, 255, 0)
    page = bytearray(d[4:])
    assert page[:2] == b"\x0a\x0a"
    page[2] |= 0x04  # D_SENSE
    good(drv, 0x15, 0x10, 0, 0, 4 + len(page), 0, data=bytes(4) + bytes(page))
    write(drv, b"abc")
    rewind(drv)
    r = drv.execute(A, bytes([0x08, 0, 0, 0, 10, 0]))
    sense = bytes(r.sense)
    assert sense[0] == 0x72 and sense[1:4] == bytes([0, 0, 0])
    # INFORMATION descriptor (residue 7) and stream commands descriptor with ILI
    assert sense[8:12] == bytes([0x00, 0x0A, 0x80, 0]) and int.from_bytes(sense[12:20], "big") == 7
    assert sense[20:24] == bytes([0x04, 0x02, 0, 0x20])
    page[2] &= ~0x04
    good(drv, 0x15, 0x10, 0, 0, 4 + len(page), 0, data=bytes(4) + bytes(page))
    assert bytes(drv.execute(A, bytes([0x08, 0, 0, 0, 10, 0])).sense)[0] == 0xF0


def test_reservations_apply_to_tape_commands(drv):
    def pr_out(sa, key, sa_key, typ=0, nexus=A):
        params = key.to_bytes(8, "big") + sa_key.to_bytes(8, "big") + bytes(8)
        return run(drv, 0x5F, sa, typ, 0, 0, 0, 0, 0, 24, 0, data=params, nexus=nexus)

    assert pr_out(0, 0, 7).status == Status.GOOD
    assert pr_out(1, 7, 0, typ=3).status == Status.GOOD  # exclusive access
    assert run(drv, 0x0A, 0, 0, 0, 1, 0, data=b"x", nexus=B).status == Status.RESERVATION_CONFLICT
    assert run(drv, 0x08, 0, 0, 0, 1, 0, nexus=B).status == Status.RESERVATION_CONFLICT
    assert run(drv, 0x00, 0, 0, 0, 0, 0, nexus=B).status == Status.GOOD  # TUR allowed
    assert run(drv, 0x12, 0, 0, 0, 36, 0, nexus=B).status == Status.GOOD
    assert write(drv, b"mine").status == Status.GOOD
    full = good(drv, 0x5E, 3, 0, 0, 0, 0, 0, 1, 0, 0)
    assert int.from_bytes(full[4:8], "big") == len(full) - 8
    assert full[8:16] == (7).to_bytes(8, "big") and full[20] & 0x01 and full[21] == 0x03
    tid_len = int.from_bytes(full[28:32], "big")
    assert full[32] == 0x05 and full[36 : 36 + 5] == b"iqn.a" and tid_len % 4 == 0
    assert pr_out(3, 7, 0).status == Status.GOOD  # clear
    assert run(drv, 0x08, 0, 0, 0, 4, 0, nexus=B).status != Status.RESERVATION_CONFLICT


def test_transport_designators_in_vpd83(drv):
    tgt = b"iqn.2026-11.org.vtl-ebm:x,t,0x1\0"
    drv.extra_designators.append(bytes((0x53, 0xA8, 0, len(tgt))) + tgt)
    d = good(drv, 0x12, 1, 0x83, 0, 255, 0)
    assert tgt in d


def test_attributes_survive_unload(drv, lib):
    attr = (0x0803).to_bytes(2, "big") + bytes([0x02]) + (160).to_bytes(2, "big") + \
        b"weekly full".ljust(160, b"\0")
    plist = len(attr).to_bytes(4, "big") + attr
    good(drv, 0x8D, 0, 0, 0, 0, 0, 0, 0, 0, 0, *len(plist).to_bytes(4, "big"), 0, 0, data=plist)
    good(drv, 0x1B, 0, 0, 0, 0, 0)  # unload: cartridge closed
    lib.unload(0)
    lib.load("A00001L8", 0)
    check(drv, 0, 0, 0, 0, 0, 0)  # 28/00
    d = good(drv, 0x8C, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x03, 0, 0, 0x10, 0, 0, 0)
    assert d[4:6] == b"\x08\x03" and d[9:20] == b"weekly full"


def test_media_generation_compatibility(lib):
    from vtl.scsi.identities import drive_identity

    lib.create_cartridge("OLD001L5", capacity=4 * MiB)
    lib.create_cartridge("NEW001L9", capacity=4 * MiB)
    # LTO-5 in an LTO-7 drive: readable, not writable
    d = TapeDrive(lib.load("OLD001L5", 0), drive_identity("IBM-ULT3580-TD7"))
    assert d.identity.product == "ULT3580-TD7"
    check(d, 0, 0, 0, 0, 0, 0)
    good(d, 0, 0, 0, 0, 0, 0)
    assert check(d, 0x0A, 0, 0, 0, 1, 0, data=b"x").code == (SenseKey.DATA_PROTECT, 0x30, 0x05)
    assert check(d, 0x08, 0, 0, 0, 1, 0).key == SenseKey.BLANK_CHECK
    assert good(d, 0x1A, 0, 0, 0, 12, 0)[4] == 0x58
    d2 = good(d, 0x44, 1, 0, 0, 0, 0, 0, 0x10, 0, 0)
    assert d2[4] == 0x58 and not d2[6] & 0x80  # WRTOK clear for this medium
    # LTO-9 in an LTO-8 drive: incompatible medium
    d = TapeDrive(lib.load("NEW001L9", 1))
    check(d, 0, 0, 0, 0, 0, 0)
    assert check(d, 0, 0, 0, 0, 0, 0).code == (SenseKey.MEDIUM_ERROR, 0x30, 0x00)


def test_first_command_after_load_elsewhere_sees_unit_attention(lib):
    d = TapeDrive(lib.drives[0])
    check(d, 0, 0, 0, 0, 0, 0)  # power-on UA
    assert check(d, 0, 0, 0, 0, 0, 0).code == (2, 0x3A, 0)
    other = Library.open(lib.root)  # e.g. `vtl load` from another process
    other.load("A00001L8", 0)
    other.close()
    # even a data-path command first reports the media change
    assert check(d, 0x08, 0, 0, 0, 1, 0).code == (6, 0x28, 0)
    assert check(d, 0x08, 0, 0, 0, 1, 0).key == SenseKey.BLANK_CHECK


def test_changer_move_waits_for_running_command(drv, lib):
    import threading

    assert lib.drives[0].io_lock is drv.lock
    write(drv, b"x" * 100)
    moved = threading.Event()
    with drv.lock:  # as if a long READ/WRITE/ERASE were running
        t = threading.Thread(target=lambda: (lib.unload(0), moved.set()))
        t.start()
        assert not moved.wait(0.3)  # the move waits for the drive
        assert lib.drives[0].cartridge is not None
    assert moved.wait(10)
    t.join()
    assert check(drv, 0, 0, 0, 0, 0, 0).code == (2, 0x3A, 0)


def test_data_out_length_hook(drv):
    assert drv.data_out_length(bytes([0x0A, 0, 0, 1, 0, 0])) == 256
    assert drv.data_out_length(bytes([0x0A, 1, 0, 0, 2, 0])) is None  # fixed, no block size
    drv.block_size = 512
    assert drv.data_out_length(bytes([0x0A, 1, 0, 0, 2, 0])) == 1024
    assert drv.data_out_length(bytes([0x15, 0x10, 0, 0, 12, 0])) == 12
    assert drv.data_out_length(bytes([0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0])) == 24
    assert drv.data_out_length(bytes([0x8D] + [0] * 9 + [0, 0, 1, 0, 0, 0])) == 256
    assert drv.data_out_length(bytes([0x08, 0, 0, 1, 0, 0])) is None
    assert drv.data_out_length(b"") is None


def test_verify6(drv):
    write(drv, b"v" * 100)
    wfm(drv)
    rewind(drv)
    r = run(drv, 0x13, 0, 0, 0, 100, 0)
    assert r.status == Status.GOOD and r.d == b""
    s = check(drv, 0x13, 0, 0, 0, 100, 0)
    assert s.fm and s.info == 100 and s.data == b""
    assert check(drv, 0x13, 0, 0, 0, 1, 0).key == SenseKey.BLANK_CHECK
    assert check(drv, 0x13, 0x02, 0, 0, 1, 0).code == (5, 0x24, 0)  # BYTCMP unsupported


def test_lun_reset_restores_mode_defaults_keeps_position(drv):
    from vtl.scsi.base import ResetKind

    write(drv, b"a")
    write(drv, b"b")
    good(drv, 0x15, 0x10, 0, 0, 12, 0, data=bytes([0, 0, 0x10, 8, 0, 0, 0, 0, 0, 0, 2, 0]))
    page = bytes([0x0F, 14, 0x40, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])
    good(drv, 0x15, 0x10, 0, 0, 4 + 16, 0, data=bytes(4) + page)
    good(drv, 0x1E, 0, 0, 0, 1, 0)
    assert drv.block_size == 512 and not drv.compression
    drv.reset(ResetKind.LUN_RESET)
    assert check(drv, 0, 0, 0, 0, 0, 0).code == (6, 0x29, 0x03)
    assert drv.block_size == 0 and drv.compression and not drv.bay.prevent_removal
    assert pos(drv) == 2


def test_disk_read_failure_is_medium_error(drv, monkeypatch):
    write(drv, b"abc")
    rewind(drv)
    cart = drv._medium()

    def fail(*a, **k):
        raise OSError(errno.EIO, "bad sector")

    monkeypatch.setattr(cart, "read_block", fail)
    s = check(drv, 0x08, 0, 0, 0, 3, 0)
    assert s.code == (SenseKey.MEDIUM_ERROR, 0x11, 0) and s.info == 3


def test_cartridge_held_elsewhere_is_becoming_ready(lib):
    lib.load("A00001L8", 0)
    other = Library.open(lib.root)  # stands for another process (the backup manager)
    try:
        other.drives[0].mount()
        d = TapeDrive(lib.drives[0])
        check(d, 0, 0, 0, 0, 0, 0)  # power-on UA
        assert check(d, 0, 0, 0, 0, 0, 0).code == (SenseKey.NOT_READY, 0x04, 0x01)
    finally:
        other.close()
    good(d, 0, 0, 0, 0, 0, 0)  # free again: ready
