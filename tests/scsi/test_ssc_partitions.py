"""Partitions through raw CDBs, in the order IBM's LTFS formats and uses a cartridge:
MODE SELECT 0x11 with two partitions, FORMAT MEDIUM, LOCATE(16) with CP, writes and reads
in each partition, READ POSITION with the partition, LOG SENSE 0x17 per partition, and
READ/WRITE ATTRIBUTE per partition (volume coherency 0x080C)."""

from __future__ import annotations

import pytest
from test_ssc import check, good, read, run, wfm, write

from vtl.library import Library
from vtl.scsi.base import Status
from vtl.scsi.identities import drive_identity
from vtl.scsi.ssc import TapeDrive

MiB = 1 << 20
REST = b"\xff\xff"


@pytest.fixture
def lib(fast_library):
    return fast_library("P00001L8")  # a full-size LTO-8 cartridge (the file stays small)


@pytest.fixture
def drv(lib: Library):
    d = TapeDrive(lib.load("P00001L8", 0))
    run(d, 0, 0, 0, 0, 0, 0)  # the power-on attention
    return d


def ltfs_partition(drv, additional: int, p0: bytes = b"\x00\x01", p1: bytes = REST,
                   more: bytes = b"") -> None:
    """What LTFS's tape_format sends: MODE SENSE 0x11 (28 bytes), the layout, MODE SELECT
    (longer when the page is), FORMAT MEDIUM format 1."""
    buf = bytearray(good(drv, 0x5A, 0, 0x11, 0, 0, 0, 0, 0, 28, 0)) + bytes(4)
    buf[0:2] = bytes(2)
    buf[19] = additional
    buf[20] = 0x20 | (buf[20] & 0x1F)
    buf[22] = 0x09
    buf[24:26], buf[26:28] = p0, p1
    buf[28:28 + len(more)] = more  # partitions 2 and 3, past LTFS's 28 bytes
    length = 28 + max(buf[17] - 0x0A, 0)
    good(drv, 0x55, 0x10, 0, 0, 0, 0, 0, 0, length, 0, data=bytes(buf[:length]))
    good(drv, 0x04, 0, 0x01, 0, 0, 0)


def locate(drv, partition: int, block: int):
    return run(drv, 0x92, 0x02, 0, partition, *block.to_bytes(8, "big"), 0, 0, 0, 0)


def position(drv) -> tuple[int, int]:
    d = good(drv, 0x34, 0x06, 0, 0, 0, 0, 0, 0, 0, 0)
    return int.from_bytes(d[4:8], "big"), int.from_bytes(d[8:16], "big")


def volume_stats(drv) -> dict[int, list[int]]:
    page = good(drv, 0x4D, 0, 0x40 | 0x17, 0, 0, 0, 0, 0xFF, 0xFF, 0)
    out, off = {}, 4
    while off < len(page):
        code, n = int.from_bytes(page[off:off + 2], "big"), page[off + 3]
        value = page[off + 4:off + 4 + n]
        if code in (0x0202, 0x0203, 0x0204):
            out[code] = [int.from_bytes(value[i + 4:i + 8], "big") for i in range(0, n, 8)]
        off += 4 + n
    return out


def write_attr(drv, partition: int, value: bytes) -> None:
    attr = (0x080C).to_bytes(2, "big") + bytes([0]) + len(value).to_bytes(2, "big") + value
    data = len(attr).to_bytes(4, "big") + attr
    good(drv, 0x8D, 0x01, 0, 0, 0, 0, 0, partition, 0, 0, *len(data).to_bytes(4, "big"), 0, 0,
         data=data)


def read_attr(drv, partition: int) -> bytes:
    d = good(drv, 0x8C, 0, 0, 0, 0, 0, 0, partition, 0x08, 0x0C, 0, 0, 0x01, 0, 0, 0)
    return d[4 + 5:4 + 5 + int.from_bytes(d[7:9], "big")]


def test_ltfs_formats_two_partitions_and_uses_both(drv, lib: Library) -> None:
    write(drv, b"before the format")
    ltfs_partition(drv, 1)
    page = good(drv, 0x1A, 0x08, 0x11, 0, 255, 0)[4:]
    assert page[2] == 3 and page[3] == 1  # LTO-8: up to 3 more; 1 defined
    stats = volume_stats(drv)
    assert len(stats[0x0202]) == 2 and stats[0x0202][0] < stats[0x0202][1]
    assert sum(stats[0x0202]) == sum(stats[0x0204])  # nothing written yet
    assert position(drv) == (0, 0) and read(drv, 100).s.code == (8, 0, 5)  # erased

    assert locate(drv, 1, 0).status == Status.GOOD and position(drv) == (1, 0)
    for b in (b"VOL1 label", b"data block 1", b"data block 2"):
        assert write(drv, b).status == Status.GOOD
    wfm(drv)
    assert position(drv) == (1, 4)
    assert locate(drv, 0, 0).status == Status.GOOD
    write(drv, b"index")
    wfm(drv)
    write_attr(drv, 1, b"coherency p1".ljust(70, b"\0"))
    write_attr(drv, 0, b"coherency p0".ljust(70, b"\0"))
    assert read_attr(drv, 1).startswith(b"coherency p1")
    assert read_attr(drv, 0).startswith(b"coherency p0")
    assert good(drv, 0x8C, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0) == bytes([0, 2, 0, 2])

    # LTFS appends to the data partition: LOCATE to "block all ones" ends at EOD (00/05)
    s = locate(drv, 1, (1 << 64) - 1).s
    assert s.code == (8, 0, 5) and position(drv) == (1, 4)
    assert good(drv, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0)[1] == 1  # short form: partition
    good(drv, 0x91, 0x01, 0, 0, *(-1).to_bytes(8, "big", signed=True), 0, 0, 0, 0)  # SPACE FM -1
    assert position(drv) == (1, 3)
    good(drv, 0x01, 0, 0, 0, 0, 0)  # REWIND: BOP of partition 0
    assert position(drv) == (0, 0)
    assert good(drv, 0x08, 0, 0, 0, 5, 0) == b"index"
    assert locate(drv, 2, 0).s.fp == 3  # no partition 2

    lib.unload(0)  # the layout and both partitions' data survive the unload
    drv2 = TapeDrive(lib.load("P00001L8", 1))
    run(drv2, 0, 0, 0, 0, 0, 0)
    assert locate(drv2, 1, 1).status == Status.GOOD
    assert good(drv2, 0x08, 0, 0, 0, 12, 0) == b"data block 1"
    assert read_attr(drv2, 1).startswith(b"coherency p1")
    assert len(volume_stats(drv2)[0x0202]) == 2


def test_back_to_one_partition_and_layout_errors(drv) -> None:
    ltfs_partition(drv, 3, b"\x00\x01", b"\x00\x01", b"\x00\x02" + REST)  # four
    assert len(volume_stats(drv)[0x0202]) == 4
    page = good(drv, 0x1A, 0x08, 0x11, 0, 255, 0)  # echoed back: the layout stays
    good(drv, 0x15, 0x10, 0, 0, len(page), 0, data=bytes(4) + page[4:])
    ltfs_partition(drv, 0, REST, b"\x00\x00")  # LTFS's unformat
    assert len(volume_stats(drv)[0x0202]) == 1
    buf = bytearray(good(drv, 0x5A, 0, 0x11, 0, 0, 0, 0, 0, 255, 0))
    buf[0:2] = bytes(2)
    buf[19] = 4  # more than LTO-8 takes
    s = check(drv, 0x55, 0x10, 0, 0, 0, 0, 0, 0, len(buf), 0, data=bytes(buf))
    assert s.code == (5, 0x26, 0) and s.fp == 19
    buf[19], buf[24:26], buf[26:28] = 1, REST, REST  # two partitions both "the rest"
    assert check(drv, 0x55, 0x10, 0, 0, 0, 0, 0, 0, len(buf), 0, data=bytes(buf)).fp == 26
    assert check(drv, 0x04, 0, 0x07, 0, 0, 0).code == (5, 0x24, 0)  # FORMAT field
    good(drv, 0x0B, 0, 0, 0xFF, 0xFF, 0)  # SET CAPACITY: the whole medium
    assert check(drv, 0x0B, 0, 0, 0x80, 0x00, 0).fp == 3


def test_lto5_drive_takes_two_partitions(fast_dir) -> None:
    lib = Library.create(fast_dir / "lib5")
    try:
        lib.create_cartridge("P00001L5")
        d = TapeDrive(lib.load("P00001L5", 0), identity=drive_identity("IBM-TD5"))
        run(d, 0, 0, 0, 0, 0, 0)
        page = good(d, 0x1A, 0x08, 0x11, 0, 255, 0)[4:]
        assert page[1] == 10 and page[2] == 1  # two partition size fields, one more allowed
        ltfs_partition(d, 1)
        assert len(volume_stats(d)[0x0202]) == 2
    finally:
        lib.close()
