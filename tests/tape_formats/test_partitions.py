"""Partitions: FORMAT MEDIUM lays a cartridge out as up to four object streams.

Partition 0 is the cartridge file, partition N a cartridge file of its own beside it
(``<file>.pN``), each with its capacity, objects and end of data; the header is flagged
PARTITIONS so a build that does not know them refuses the cartridge; one partition gives the
whole medium back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tape_formats.cartridge import CartridgeError, RecordKind, TapeCartridge
from tape_formats.media import MEDIA
from tape_formats.records import IncompatFeature

MiB = 1 << 20


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "P00001L8.vtape"
    TapeCartridge.create(p, "P00001L8", MEDIA["LTO-8"], capacity=64 * MiB)
    return p


def test_two_partitions_are_two_streams(path: Path) -> None:
    with TapeCartridge.open(path) as c:
        c.write_block(b"old data")
        c.format_partitions([8 * MiB])
        assert c.eod == 0 and c.partition_count == 2 and c.capacity == 8 * MiB
        assert c.format_features & IncompatFeature.PARTITIONS
        p1 = c.partition(1)
        assert p1.capacity == 56 * MiB and p1.eod == 0
        c.write_block(b"index")
        c.write_filemarks(1)
        p1.write_block(b"data 1")
        p1.write_block(b"data 2")
        p1.write_filemarks(1)
    with TapeCartridge.open(path) as c:
        assert c.partition_count == 2 and c.eod == 2
        p1 = c.partition(1)
        assert p1.eod == 3 and bytes(p1.read_block().data) == b"data 1"
        assert c.partition(1) is p1
        with pytest.raises(CartridgeError, match="no partition 2"):
            c.partition(2)
        c.rewind()
        assert bytes(c.read_block().data) == b"index"
        assert c.read_block().kind is RecordKind.FILEMARK


def test_one_partition_gives_the_medium_back(path: Path) -> None:
    with TapeCartridge.open(path) as c:
        c.format_partitions([MiB, 2 * MiB, 3 * MiB])
        assert c.partition_count == 4 and c.partition(3).capacity == 58 * MiB
        assert c.medium_capacity == 64 * MiB
        c.format_partitions([])
        assert c.partition_count == 1 and c.capacity == 64 * MiB
    assert not list(path.parent.glob("*.p[0-9]*"))  # the partition files are gone


def test_sizes_must_fit(path: Path) -> None:
    with TapeCartridge.open(path) as c:
        c.write_block(b"kept")
        with pytest.raises(CartridgeError, match="leave no room"):
            c.format_partitions([32 * MiB, 32 * MiB])
        assert c.eod == 1 and c.partition_count == 1
