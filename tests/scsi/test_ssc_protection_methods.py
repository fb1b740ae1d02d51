"""Logical block protection method 1, the LTO Reed-Solomon CRC (ECMA-319): the CRC itself
against a published test vector and a byte-wise shift register, and READ/WRITE/VERIFY with
it on drives that offer it (LTO-5 and later), beside CRC32C (LTO-7 and later)."""

from __future__ import annotations

import os

import pytest
from test_ssc import MiB, check, good, read, rewind, run, write

from vtl.scsi.base import Status
from vtl.scsi.identities import drive_identity
from vtl.scsi.reed_solomon_crc import _shift, rs_crc, rs_protection_information
from vtl.scsi.ssc import TapeDrive

# CASTOR's CRCtest (also mhVTL's build check): the primes below 256 in two blocks.
PRIMES_1 = bytes([2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71,
                  73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151,
                  157])
PRIMES_2 = bytes([163, 167, 173, 179, 181, 191, 193, 197, 199, 211, 223, 227, 229, 233, 239,
                  241, 251])


def test_reed_solomon_crc_test_vector() -> None:
    assert rs_crc(PRIMES_1) == 0x733D4DCA
    assert rs_crc(PRIMES_2, seed=rs_crc(PRIMES_1)) == 0x754ED37E
    assert rs_crc(PRIMES_1 + PRIMES_2) == 0x754ED37E
    assert rs_crc(bytes(8)) == 0
    assert rs_protection_information(PRIMES_1) == bytes.fromhex("733D4DCA")  # MSB first


@pytest.mark.parametrize("n", [1, 254, 255, 256, 65279, 65280, 65281, 200_003])
def test_folded_crc_equals_the_shift_register(n: int) -> None:
    data = os.urandom(n)
    assert rs_crc(data) == _shift(0, data)
    assert rs_crc(data[n // 3:], seed=rs_crc(data[:n // 3])) == rs_crc(data)


@pytest.fixture
def lib(fast_library):
    return fast_library("R00001L8", "R00001L6", capacity=64 * MiB)


def _select_lbp(drv, method: int, flags: int = 0xC0) -> Status:
    buf = bytearray(good(drv, 0x5A, 0, 0x0A, 0xF0, 0, 0, 0, 0, 48, 0))
    buf[0:2] = bytes(2)
    buf[20:23] = bytes([method, 4 if method else 0, flags if method else 0])
    return run(drv, 0x55, 0x10, 0, 0, 0, 0, 0, 0, 48, 0, data=bytes(buf))


def test_reed_solomon_on_read_write_and_verify(lib) -> None:
    drv = TapeDrive(lib.load("R00001L8", 0))
    run(drv, 0, 0, 0, 0, 0, 0)
    assert _select_lbp(drv, 1).status == Status.GOOD
    block = os.urandom(70_000)
    pi = rs_crc(block).to_bytes(4, "big")
    assert write(drv, block + pi).status == Status.GOOD
    bad = write(drv, block + pi[::-1])
    assert bad.status == Status.CHECK_CONDITION and bad.s.code == (0x0B, 0x10, 0x01)
    rewind(drv)
    n = len(block) + 4
    assert good(drv, 0x08, 0, *n.to_bytes(3, "big"), 0) == block + pi
    rewind(drv)
    good(drv, 0x13, 0, *n.to_bytes(3, "big"), 0)  # VERIFY(6): the same length as READ
    assert check(drv, 0x13, 0, *n.to_bytes(3, "big"), 0).code == (8, 0, 5)  # EOD after it
    rewind(drv)
    assert _select_lbp(drv, 0).status == Status.GOOD
    assert good(drv, 0x08, 0, *len(block).to_bytes(3, "big"), 0) == block  # stored plain
    assert read(drv, 10).s.code == (8, 0, 5)


def test_fixed_mode_checks_every_block_first(lib) -> None:
    drv = TapeDrive(lib.load("R00001L8", 0))
    run(drv, 0, 0, 0, 0, 0, 0)
    assert _select_lbp(drv, 1).status == Status.GOOD
    drv.block_size = 1028  # 1024 bytes of data and 4 of protection information
    blocks = [os.urandom(1024) for _ in range(3)]
    data = b"".join(b + rs_crc(b).to_bytes(4, "big") for b in blocks)
    assert write(drv, data, fixed=True).status == Status.GOOD
    broken = data[:-1] + bytes([data[-1] ^ 1])
    assert write(drv, broken, fixed=True).s.code == (0x0B, 0x10, 0x01)
    rewind(drv)
    assert good(drv, 0x08, 1, 0, 0, 3, 0) == data


def test_methods_follow_the_generation(lib) -> None:
    td6 = TapeDrive(lib.load("R00001L6", 1), identity=drive_identity("IBM-TD6"))
    run(td6, 0, 0, 0, 0, 0, 0)
    refused = _select_lbp(td6, 2)  # CRC32C came with LTO-7
    assert refused.status == Status.CHECK_CONDITION and refused.s.fp == 20
    assert _select_lbp(td6, 1).status == Status.GOOD
    block = b"LTO-6 " * 100
    assert write(td6, block + rs_protection_information(block)).status == Status.GOOD
    td8 = TapeDrive(lib.load("R00001L8", 0))
    run(td8, 0, 0, 0, 0, 0, 0)
    assert _select_lbp(td8, 2).status == Status.GOOD
    assert _select_lbp(td8, 1).status == Status.GOOD
