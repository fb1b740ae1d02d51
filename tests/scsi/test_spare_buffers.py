"""Data-Out buffers given back once a buffered block is stored, and taken again.

A streaming WRITE's 256 KiB block used to cost a new zeroed buffer per command; the drive now
hands a donated buffer back (``SPARE_BUFFERS.give_back``) once its block is on the medium, and
the transport takes the next one of that size from there. What must hold: a buffer is given
back only after its block is stored (or dropped), exactly once, and only a DonatedBuffer.
"""

from __future__ import annotations

import errno
import threading

import pytest
from test_ssc import read, rewind, wfm, write
from test_ssc_write_behind import BLOCK, two  # noqa: F401 - the fixture

import vtl.scsi.ssc
from tape_formats.write_behind import DeferredWriteError, WriteBehind
from vtl.scsi.base import DonatedBuffer, SpareBuffers, Status


def test_spare_buffers_keep_donated_ones_up_to_their_bound():
    spare = SpareBuffers(keep_bytes=2048, largest=2048)
    a, b = DonatedBuffer(b"a" * 1024), DonatedBuffer(b"b" * 1024)
    spare.give_back(memoryview(a)[:10])  # a view's buffer is what is kept
    spare.give_back(a)  # the same buffer twice is kept once
    spare.give_back(bytearray(1024))  # not donated: the transport's own memory
    spare.give_back(b"x" * 1024)
    spare.give_back(DonatedBuffer(4096))  # larger than ``largest``
    assert spare.kept_bytes == 1024
    spare.give_back(b)
    spare.give_back(DonatedBuffer(1024))  # past keep_bytes: freed, not kept
    assert spare.kept_bytes == 2048
    assert {id(spare.take(1024)), id(spare.take(1024))} == {id(a), id(b)}
    assert spare.kept_bytes == 0
    fresh = spare.take(1024)
    assert type(fresh) is DonatedBuffer and fresh == bytes(1024)  # a new one is zeroed


def test_the_write_buffer_calls_done_once_per_block_stored_or_dropped():
    gate = threading.Event()
    done: list[bytes] = []

    def append(native, packed):
        gate.wait(5)
        if packed == b"bad":
            raise OSError(errno.EIO, "disk on fire")

    wb = WriteBehind(lambda: lambda data, compress: data, append, 1 << 20, "t")
    for item in (b"a", b"bad", b"c"):
        assert wb.put(item, False, 10, lambda: 0, 1 << 30, done.append)
    assert done == []  # nothing stored yet: nothing given back
    gate.set()
    with pytest.raises(DeferredWriteError):
        wb.flush()
    assert done == [b"a", b"bad", b"c"]
    wb.close()


def test_a_donated_block_is_given_back_only_once_on_the_medium(two, monkeypatch):  # noqa: F811
    """The drive hands the buffer back after storing it; whoever writes into it next
    cannot change what the tape holds."""
    drv = two[0]
    spare = SpareBuffers(1 << 20, 1 << 20)
    monkeypatch.setattr(vtl.scsi.ssc, "SPARE_BUFFERS", spare)
    gift = DonatedBuffer(b"C" * BLOCK)
    assert write(drv, memoryview(gift)).status == Status.GOOD
    wfm(drv)  # everything buffered is stored
    assert write(drv, b"E" * BLOCK).status == Status.GOOD  # not donated: a copy is kept
    wfm(drv)
    assert spare.kept_bytes == BLOCK
    again = spare.take(BLOCK)
    assert again is gift
    again[:] = b"D" * BLOCK  # the transport's next command lands in it
    rewind(drv)
    assert read(drv, BLOCK).d == b"C" * BLOCK
