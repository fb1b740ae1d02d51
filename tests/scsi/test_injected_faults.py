"""Faults injected for testing backup software (vtl.faults), as the device models answer
them: TapeAlert flags raised once on a drive or the changer (LOG SENSE 0x2E), and media
errors at a block that READ, VERIFY and WRITE meet as MEDIUM ERROR until cleared."""

from __future__ import annotations

import os

import pytest
from test_ssc import MiB, check, good, read, rewind, run, write

from vtl import faults
from vtl.scsi.base import Status
from vtl.scsi.smc import MediumChanger
from vtl.scsi.ssc import TapeDrive


@pytest.fixture
def lib(fast_library):
    return fast_library("F00001L8", capacity=64 * MiB)


@pytest.fixture
def drv(lib):
    d = TapeDrive(lib.load("F00001L8", 0))
    run(d, 0, 0, 0, 0, 0, 0)
    return d


def flags(dev) -> set[int]:
    page = good(dev, 0x4D, 0, 0x40 | 0x2E, 0, 0, 0, 0, 0x01, 0x44, 0) if isinstance(
        dev, TapeDrive) else bytes(dev.execute(None, bytes([0x4D, 0, 0x6E, 0, 0, 0, 0, 1, 0x44,
                                                            0])).data)
    assert len(page) == 4 + 64 * 5
    return {int.from_bytes(page[4 + 5 * i:6 + 5 * i], "big") for i in range(64)
            if page[8 + 5 * i]}


def test_flag_names_follow_the_tapealert_tables() -> None:
    assert faults.DRIVE_FLAGS["clean-now"] == 20
    assert faults.DRIVE_FLAGS["diagnostics-required"] == 39
    assert faults.DRIVE_FLAGS["worm-medium-overwrite-attempted"] == 60
    assert faults.CHANGER_FLAGS["library-door"] == 16
    assert faults.CHANGER_FLAGS["unreadable-bar-code-labels"] == 32
    assert faults.parse_flag("Hard_Error", faults.DRIVE_FLAGS) == 3
    assert faults.parse_flag("64", faults.DRIVE_FLAGS) == 64
    for bad in ("0", "65", "library-door"):
        with pytest.raises(faults.BadFault):
            faults.parse_flag(bad, faults.DRIVE_FLAGS)


def test_an_injected_flag_is_raised_once(lib, drv) -> None:
    faults.raise_tapealert(lib.root, "drive0", {3, 20})
    good(drv, 0, 0, 0, 0, 0, 0)
    assert flags(drv) == {3, 20}
    assert flags(drv) == set()  # cleared by the read, not raised again
    faults.raise_tapealert(lib.root, "drive0", {3})  # the same flag again: raised again
    good(drv, 0, 0, 0, 0, 0, 0)
    assert flags(drv) == {3}
    faults.raise_tapealert(lib.root, "drive1", {5})  # another drive's
    faults.raise_tapealert(lib.root, "drive0", {7})
    faults.clear_tapealert(lib.root, "drive0")  # withdrawn before the drive looked
    good(drv, 0, 0, 0, 0, 0, 0)
    assert flags(drv) == set()


def test_changer_log_pages(lib) -> None:
    changer = MediumChanger(lib)
    changer.execute(None, bytes(6))  # the power-on UNIT ATTENTION
    supported = bytes(changer.execute(None, bytes([0x4D, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0])).data)
    assert supported[4:] == bytes([0x00, 0x2E])
    assert flags(changer) == set()
    faults.raise_tapealert(lib.root, faults.CHANGER, {16, 17})
    assert flags(changer) == {16, 17}
    assert flags(changer) == set()


def test_injected_read_error_until_cleared(lib, drv) -> None:
    blocks = [os.urandom(1000 + i) for i in range(4)]
    for b in blocks:
        assert write(drv, b).status == Status.GOOD
    faults.inject_media_error(lib.root, "F00001L8", 2, 0, {faults.READ})
    rewind(drv)
    assert read(drv, 1000).d == blocks[0]
    assert read(drv, 1001).d == blocks[1]
    bad = read(drv, 1002)
    assert bad.s.code == (3, 0x11, 0) and bad.s.info == 1002
    assert read(drv, 1003).d == blocks[3]  # the drive stepped past the bad block
    assert {3, 4, 5} <= flags(drv)
    good(drv, 0x2B, 0, 0, 0, 0, 0, 2, 0, 0, 0)  # LOCATE 2
    assert check(drv, 0x13, 0, 0, 0x03, 0xEA, 0).code == (3, 0x11, 0)  # VERIFY meets it too
    assert faults.clear_media_errors(lib.root, "F00001L8") == 1
    good(drv, 0x2B, 0, 0, 0, 0, 0, 2, 0, 0, 0)
    assert read(drv, 1002).d == blocks[2]


def test_injected_write_error(lib, drv) -> None:
    faults.inject_media_error(lib.root, "F00001L8", 1, 0, {faults.WRITE})
    good(drv, 0, 0, 0, 0, 0, 0)  # a command off the data path notices the file
    big = os.urandom(64 * 1024)  # big enough for the write buffer, were it not for the fault
    assert write(drv, big).status == Status.GOOD
    bad = write(drv, big)
    assert bad.s.code == (3, 0x0C, 0) and not bad.s.eom
    assert {3, 4, 6} <= flags(drv)
    rewind(drv)
    assert read(drv, len(big)).d == big
    assert read(drv, 10).s.code == (8, 0, 5)  # nothing was written at block 1
    drv.block_size = 512
    assert faults.clear_media_errors(lib.root, "F00001L8", 1) == 1
    faults.inject_media_error(lib.root, "F00001L8", 2, 0, {faults.WRITE})
    good(drv, 0x2B, 0, 0, 0, 0, 0, 1, 0, 0, 0)
    bad = write(drv, bytes(512 * 3), fixed=True)  # blocks 1, 2, 3: fails at the second
    assert bad.s.code == (3, 0x0C, 0) and bad.s.info == 2
