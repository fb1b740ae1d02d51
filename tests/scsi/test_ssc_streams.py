"""Enough drives streaming for every CPU: big blocks are written at once, not handed to the
buffer.

What must hold: the rule counts drives that wrote within the window only; a block written at
once is on the medium when its WRITE returns GOOD (nothing pending), reads back the same,
and its donated buffer goes back to the transport's spares exactly once.
"""

from __future__ import annotations

import random

from test_ssc import A, read, rewind, wfm, write
from test_ssc_write_behind import BLOCK, two  # noqa: F401 - the fixture

import vtl.scsi.ssc
import vtl.scsi.ssc_streams as streams
from vtl.scsi.base import DonatedBuffer, SpareBuffers, Status
from vtl.scsi.ssc_streams import WriteStreams


def test_enough_drives_within_the_window_make_a_busy_box(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(streams.time, "monotonic", lambda: now[0])
    ws = WriteStreams(enough=1)  # never fewer than two streams
    assert ws.enough == 2
    assert not ws.wrote(1)
    assert not ws.wrote(1)  # one drive alone keeps its write buffer
    assert ws.wrote(2)
    now[0] += streams.STREAM_WINDOW + ws.RECOUNT  # drive 2 went quiet
    assert not ws.wrote(1)
    now[0] += ws.RECOUNT / 2
    assert not ws.wrote(2)  # counted again only once RECOUNT has passed
    now[0] += ws.RECOUNT
    assert ws.wrote(1)


def test_blocks_are_written_at_once_while_enough_drives_stream(two, monkeypatch):  # noqa: F811
    drv = two[0]  # buffered mode
    ws = WriteStreams(enough=2)
    monkeypatch.setattr(vtl.scsi.ssc, "WRITE_STREAMS", ws)
    spare = SpareBuffers(1 << 20, 1 << 20)
    monkeypatch.setattr(vtl.scsi.ssc, "SPARE_BUFFERS", spare)
    rnd = random.Random(5)
    blocks = [rnd.randbytes(BLOCK) for _ in range(3)]
    ws.wrote(-1)  # another drive streams now
    assert write(drv, blocks[0]).status == Status.GOOD  # the general path
    cart = drv._cart
    assert not cart.writes_pending and cart.eod == 1  # on the medium, not in the buffer
    gift = DonatedBuffer(blocks[1])
    cdb = bytes((0x0A, 0, *BLOCK.to_bytes(3, "big"), 0))
    ws.wrote(-1)
    assert drv.stream_write(A, cdb, memoryview(gift))  # the transport's fast path
    assert not cart.writes_pending and cart.eod == 2
    assert spare.take(BLOCK) is gift and spare.kept_bytes == 0  # given back, once
    gift[:] = bytes(BLOCK)  # the transport's next command lands in it
    ws.wrote(-1)
    assert write(drv, blocks[2]).status == Status.GOOD
    assert not cart.writes_pending and cart.eod == 3
    wfm(drv)
    rewind(drv)
    assert [read(drv, BLOCK).d for _ in blocks] == blocks
