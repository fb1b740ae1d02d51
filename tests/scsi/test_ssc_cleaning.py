"""Cleaning on the tape drive model: wear past library.toml's [cleaning] threshold raises
TapeAlert 21/20 and 00/17, a cleaning cartridge answers NOT READY 30/03 while it cleans,
resets the wear, counts down, and once worn out gives MEDIUM ERROR 30/03 and TapeAlert 22."""

from __future__ import annotations

import pytest
from test_ssc import MiB, check, good, run

from vtl import cleaning
from vtl.config import CleaningConfig, LibraryConfig
from vtl.library import Library
from vtl.scsi.ssc import TapeDrive


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(cleaning, "monotonic", c)
    return c


def _library(root, **policy) -> Library:
    config = LibraryConfig(drives=2, slots=6, mailslots=1, cleaning=CleaningConfig(**policy))
    lib = Library.create(root, config)
    lib.create_cartridges(["A00001L8", "A00002L8"], capacity=64 * MiB)
    lib.create_cartridge("CLN001L1", cycles=2)
    return lib


@pytest.fixture
def lib(fast_dir, clock):
    lib = _library(fast_dir / "lib", after_loads=2, seconds=5)
    yield lib
    lib.close()


def tapealert(drv) -> set[int]:
    page = good(drv, 0x4D, 0, 0x40 | 0x2E, 0, 0, 0, 0, 0x01, 0x44, 0)
    return {int.from_bytes(page[4 + 5 * i:6 + 5 * i], "big") for i in range(64)
            if page[4 + 5 * i + 4]}


def settle(drv) -> None:
    """TEST UNIT READY until the UNIT ATTENTION of a cartridge change is told."""
    for _ in range(3):
        r = run(drv, 0, 0, 0, 0, 0, 0)
        if r.s is None or r.s.key != 6:
            return


def swap(lib: Library, drv, barcode: str) -> None:
    if lib.drives[0].barcode is not None:
        lib.unload(0)
    lib.load(barcode, 0)
    assert check(drv, 0, 0, 0, 0, 0, 0).code[0] == 6  # 28/00: the medium changed


def test_wear_asks_for_cleaning_and_a_cleaning_cartridge_cleans(lib, clock) -> None:
    drv = TapeDrive(lib.load("A00001L8", 0))
    run(drv, 0, 0, 0, 0, 0, 0)
    good(drv, 0, 0, 0, 0, 0, 0)  # the first load: not due yet
    assert tapealert(drv) == set()
    swap(lib, drv, "A00002L8")
    good(drv, 0, 0, 0, 0, 0, 0)  # the second load since the last cleaning: due
    assert tapealert(drv) == {21}
    assert tapealert(drv) == {21}, "a lasting condition is raised again after a read"
    assert good(drv, 0x03, 0, 0, 0, 18, 0)[12:14] == b"\x00\x17"  # CLEANING REQUESTED
    page = good(drv, 0x4D, 0, 0x40 | 0x0C, 0, 0, 0, 0, 0x01, 0x00, 0)
    assert page[-5:-1] == b"\x01\x00\x00\x01" and page[-1] == 1  # 0x0100 cleaning required
    swap(lib, drv, "A00001L8")
    good(drv, 0, 0, 0, 0, 0, 0)  # the mount counts the load
    swap(lib, drv, "A00002L8")
    good(drv, 0, 0, 0, 0, 0, 0)
    assert tapealert(drv) == {20, 21}  # twice the threshold: CLEAN NOW too

    swap(lib, drv, "CLN001L1")
    assert check(drv, 0, 0, 0, 0, 0, 0).code == (2, 0x30, 0x03)  # cleaning
    assert check(drv, 0x08, 0, 0, 0, 1, 0).code == (2, 0x30, 0x03)
    assert tapealert(drv) == {11}  # cleaning media; the drive no longer asks
    assert cleaning.read_usage(lib.root)[0].loads == 0
    assert cleaning.read_usage(lib.root)[0].cleanings == 1
    clock.now += 5
    assert check(drv, 0, 0, 0, 0, 0, 0).code == (2, 0x3A, 0x00)  # done, unloaded
    assert check(drv, 0, 0, 0, 0, 0, 0).code == (2, 0x3A, 0x00)
    assert not lib.in_use("CLN001L1")
    assert lib.drives[0].barcode == "CLN001L1"  # in the drive until the changer takes it


def test_worn_out_cleaning_cartridge(lib, clock) -> None:
    drv = TapeDrive(lib.load("CLN001L1", 0))
    run(drv, 0, 0, 0, 0, 0, 0)
    assert check(drv, 0, 0, 0, 0, 0, 0).code == (2, 0x30, 0x03)  # the first cleaning
    clock.now += 5
    assert check(drv, 0, 0, 0, 0, 0, 0).code == (2, 0x3A, 0x00)
    assert check(drv, 0x1B, 0, 0, 0, 1, 0).code == (2, 0x30, 0x03)  # LOAD: the second one
    clock.now += 5
    assert check(drv, 0, 0, 0, 0, 0, 0).code == (2, 0x3A, 0x00)
    assert check(drv, 0x1B, 0, 0, 0, 1, 0).code == (3, 0x30, 0x03)  # worn out: no cleaning
    assert check(drv, 0, 0, 0, 0, 0, 0).code == (2, 0x3A, 0x00)
    assert cleaning.read_usage(lib.root)[0].cleanings == 2
    swap(lib, drv, "A00001L8")
    good(drv, 0, 0, 0, 0, 0, 0)
    assert tapealert(drv) == {22}, "a drive flag outlives the cartridge change (11 does not)"
    assert tapealert(drv) == set()  # cleared once read


def test_hours_loaded_count_per_drive(fast_dir, clock) -> None:
    lib = _library(fast_dir / "lib", after_hours=1, drives={1: {"after_hours": 3}})
    try:
        d0 = TapeDrive(lib.load("A00001L8", 0))
        d1 = TapeDrive(lib.load("A00002L8", 1))
        for d in (d0, d1):
            run(d, 0, 0, 0, 0, 0, 0)
            good(d, 0, 0, 0, 0, 0, 0)
        clock.now += 2 * 3600
        lib.unload(0)
        lib.unload(1)
        lib.load("A00001L8", 0)
        lib.load("A00002L8", 1)
        settle(d0)
        settle(d1)
        assert tapealert(d0) == {20, 21} and tapealert(d1) == set()
        assert cleaning.read_usage(lib.root)[1].loaded_seconds == 2 * 3600
    finally:
        lib.close()
