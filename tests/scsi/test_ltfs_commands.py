"""What IBM's LTFS asks of an IBM LTO drive before it formats or mounts, as raw CDBs
(/work/shared/third_party/ltfs-scsi.md): the drive dump after a UNIT ATTENTION, the device
configuration extension and control data protection pages, volume statistics, logical block
protection with CRC32C, and the HPE identity LTFS requires of LTO-8/9 HP drives."""

from __future__ import annotations

import os

import crc32c
import pytest
from test_ssc import MiB, check, good, read, rewind, run, write

from vtl.library import Library
from vtl.scsi.base import Status
from vtl.scsi.identities import drive_identity
from vtl.scsi.ssc import TapeDrive


@pytest.fixture
def lib(fast_library):
    return fast_library("L00001L8", capacity=64 * MiB)


@pytest.fixture
def drv(lib: Library):
    return TapeDrive(lib.load("L00001L8", 0))


def mode_sense10(drv, page: int, subpage: int = 0, alloc: int = 48) -> bytes:
    return good(drv, 0x5A, 0, page, subpage, 0, 0, 0, *alloc.to_bytes(2, "big"), 0)


def mode_select10(drv, buf: bytes) -> None:
    buf = bytes(2) + buf[2:]  # header bytes 0-1 zeroed, as LTFS sends it
    good(drv, 0x55, 0x10, 0, 0, 0, 0, 0, *len(buf).to_bytes(2, "big"), 0, data=buf)


def test_the_drive_dump_after_the_power_on_attention(drv) -> None:
    assert check(drv, 0xA3, 0x0C, 0x80, 0, 0, 0, 0, 0, 0x10, 0, 0, 0).code == (6, 0x29, 0)
    diag = bytes([0x80, 0, 0, 4, 0x01, 0x60, 0, 0])  # page 0x80, diagnostic 0x0160
    good(drv, 0x1D, 0x10, 0, 0, 8, 0, data=diag)
    desc = good(drv, 0x3C, 0x03, 1, 0, 0, 0, 0, 0, 4, 0)
    size = int.from_bytes(desc[1:4], "big")
    assert size % 4 == 0 and size > 0
    dump = good(drv, 0x3C, 0x02, 1, 0, 0, 0, *size.to_bytes(3, "big"), 0)
    assert len(dump) == size and b"ULT3580-TD8" in dump and b"L00001L8" in dump
    assert good(drv, 0x3C, 0x02, 1, 0, 0, 8, 0, 0, 4, 0) == dump[8:12]  # by offset
    good(drv, 0x1D, 0x04, 0, 0, 0, 0)  # the default self-test passes
    assert check(drv, 0x3C, 0x0A, 1, 0, 0, 0, 0, 0, 4, 0).fp == 1  # mode
    assert check(drv, 0x3C, 0x02, 7, 0, 0, 0, 0, 0, 4, 0).fp == 2  # buffer id
    bad = bytes([0x81, 0, 0, 4, 0x01, 0x60, 0, 0])
    assert check(drv, 0x1D, 0x10, 0, 0, 8, 0, data=bad).code == (5, 0x26, 0)


def test_device_configuration_extension(drv) -> None:
    run(drv, 0, 0, 0, 0, 0, 0)
    buf = mode_sense10(drv, 0x10, 0x01)
    assert len(buf) == 48 and buf[16] == 0x50 and buf[17] == 0x01  # SPF, page 0x10/0x01
    assert int.from_bytes(buf[18:20], "big") == 28 and buf[21] & 0x0F == 0  # overwrite mode
    new = bytearray(buf)
    new[22:24] = (100).to_bytes(2, "big")  # PEWS, as LTFS sets it
    mode_select10(drv, bytes(new))
    assert mode_sense10(drv, 0x10, 0x01)[22:24] == (100).to_bytes(2, "big")
    new[21] = 1  # append-only mode: not changeable
    buf = bytes(2) + bytes(new[2:])
    assert run(drv, 0x55, 0x10, 0, 0, 0, 0, 0, 0, 48, 0, data=buf).status == \
        Status.CHECK_CONDITION


def test_volume_statistics_per_partition(drv) -> None:
    run(drv, 0, 0, 0, 0, 0, 0)
    write(drv, os.urandom(MiB))  # incompressible: 1 MiB of the medium
    page = good(drv, 0x4D, 0x00, 0x40 | 0x17, 0, 0, 0, 0, 0xFF, 0xFF, 0)
    params, off = {}, 4
    while off < len(page):
        code, n = int.from_bytes(page[off:off + 2], "big"), page[off + 3]
        params[code] = page[off + 4:off + 4 + n]
        off += 4 + n
    native, remaining = params[0x0202], params[0x0204]
    assert native[:4] == bytes([7, 0, 0, 0]) and int.from_bytes(native[4:8], "big") == 64
    assert int.from_bytes(remaining[4:8], "big") == 62  # 1 MiB and its records used
    assert len(params[0x0203]) == 8


def _lbp(drv, on: bool) -> None:
    buf = bytearray(mode_sense10(drv, 0x0A, 0xF0))
    assert buf[16] == 0x4A and buf[17] == 0xF0
    buf[20:23] = bytes([2, 4, 0xC0]) if on else bytes(3)  # CRC32C, 4 bytes, LBP_W|LBP_R
    mode_select10(drv, bytes(buf))


def test_logical_block_protection_crc32c(drv) -> None:
    run(drv, 0, 0, 0, 0, 0, 0)
    _lbp(drv, True)
    block = b"ltfs index " * 50
    pi = crc32c.crc32c(block).to_bytes(4, "little")
    assert write(drv, block + pi).status == Status.GOOD
    bad = write(drv, block + bytes(4))
    assert bad.status == Status.CHECK_CONDITION and bad.s.code == (0x0B, 0x10, 0x01)
    rewind(drv)
    n = len(block) + 4
    assert good(drv, 0x08, 0x02, *(n + 100).to_bytes(3, "big"), 0) == block + pi  # SILI
    rewind(drv)
    _lbp(drv, False)
    assert good(drv, 0x08, 0, *len(block).to_bytes(3, "big"), 0) == block  # stored plain
    assert read(drv, 10).s.code == (8, 0, 5)  # end of data after the one block
    buf = bytearray(mode_sense10(drv, 0x0A, 0xF0))
    buf[20:23] = bytes([3, 4, 0xC0])  # no such method
    sel = bytes(2) + bytes(buf[2:])
    assert run(drv, 0x55, 0x10, 0, 0, 0, 0, 0, 0, 48, 0, data=sel).s.fp == 20


def test_hpe_identity_for_ltfs() -> None:
    assert drive_identity("HPE-LTO8").vendor == "HPE"
    assert drive_identity("HPE-LTO8").product == "Ultrium 8-SCSI"
    assert drive_identity("HPE-LTO9").write_media == ("LTO-9", "LTO-8")
    assert drive_identity("HP-LTO8").vendor == "HP"  # as it was
    assert drive_identity("Ultrium 8-SCSI").name == "HP-LTO8"


def test_ltfs_front_sequence(drv) -> None:
    """mkltfs's open/load/set-up part, in its order (ltfs-scsi.md section 3)."""
    good(drv, 0x12, 0, 0, 0, 255, 0)
    good(drv, 0x12, 1, 0x80, 0, 255, 0)
    run(drv, 0xA3, 0x0C, 0x80, 0, 0, 0, 0, 0, 0x10, 0, 0, 0)  # UA first, tolerated
    rsoc = good(drv, 0xA3, 0x0C, 0x80, 0, 0, 0, 0, 0, 0x10, 0, 0, 0)
    assert (len(rsoc) - 4) % 20 == 0
    assert {0x1D, 0x3C, 0xA2, 0xB5} <= {rsoc[4 + i] for i in range(0, len(rsoc) - 4, 20)}
    good(drv, 0, 0, 0, 0, 0, 0)
    good(drv, 0x05, 0, 0, 0, 0, 0)
    good(drv, 0x1B, 0, 0, 0, 1, 0)
    pos = good(drv, 0x34, 0x06, 0, 0, 0, 0, 0, 0, 0, 0)
    assert len(pos) == 32 and pos[0] & 0x80
    assert len(mode_sense10(drv, 0x3F, 0, 255)) > 16
    _lbp(drv, False)
    good(drv, 0x4D, 0, 0x40 | 0x17, 0, 0, 0, 0, 0xFF, 0xFF, 0)
    mode_sense10(drv, 0x10, 0, 32)
    buf = mode_sense10(drv, 0x10, 0x01)
    mode_select10(drv, buf)
    assert run(drv, 0x5A, 0, 0x11, 0, 0, 0, 0, 0, 28, 0).status == Status.GOOD


def test_medium_type_and_attributes_as_ltfs_reads_them(drv) -> None:
    run(drv, 0, 0, 0, 0, 0, 0)
    assert mode_sense10(drv, 0x3F, 0, 255)[2] == 0x88  # IBM's code for an LTO-8 data cartridge
    # an attribute the cartridge does not hold (LTFS's volume lock 0x1623): 24/00
    s = check(drv, 0x8C, 0, 0, 0, 0, 0, 0, 0, 0x16, 0x23, 0, 0, 0, 0x10, 0, 0)
    assert s.code == (5, 0x24, 0) and s.fp == 8
    # LTFS counts the 4-byte header in PARAMETER DATA LENGTH; IBM drives take that
    attr = (0x0800).to_bytes(2, "big") + bytes([1]) + (8).to_bytes(2, "big") + b"IBM     "
    data = (len(attr) + 4).to_bytes(4, "big") + attr
    good(drv, 0x8D, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, *len(data).to_bytes(4, "big"), 0, 0,
         data=data)
    got = good(drv, 0x8C, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00, 0, 0, 0, 0x20, 0, 0)
    assert got[4:6] == b"\x08\x00" and got[9:17] == b"IBM     "
