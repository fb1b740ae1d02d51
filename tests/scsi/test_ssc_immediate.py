"""REWIND, LOAD UNLOAD and ERASE with IMMED: GOOD at once, the work after it, nobody waits.

While the work runs (here made slow on purpose), every nexus is answered at once: NOT READY
04/07 (operation in progress), REQUEST SENSE carrying it, BUSY for INQUIRY, RESERVATION
CONFLICT where a reservation says so. A failure of the work is a deferred error for the nexus
that asked, and only for it.
"""

from __future__ import annotations

import errno
import threading
import time

import pytest

from vtl.scsi.base import Nexus, Status
from vtl.scsi.ssc import TapeDrive

A = Nexus("iqn.a,i,0x1", "iqn.a")
B = Nexus("iqn.b,i,0x1", "iqn.b")
IN_PROGRESS = (2, 0x04, 0x07)
QUICK = 0.2  # seconds: an answer while the work runs must come well within this
SLOW = 0.6  # seconds the work takes here


def code(res) -> tuple[int, int, int]:
    s = res.sense
    return s[2] & 0x0F, s[12], s[13]


@pytest.fixture
def drv(fast_library):
    lib = fast_library("I00001L8", capacity=4 << 20)
    d = TapeDrive(lib.load("I00001L8", 0))
    for nx in (A, B):
        d.execute(nx, bytes(6))  # the power-on unit attentions
    assert d.execute(A, bytes([0x0A, 0, 0, 0, 4, 0]), b"data").status == Status.GOOD
    yield d
    d._immediate.wait()


def _slow(cart, name: str, gate: threading.Event, fail: bool = False) -> None:
    """Make ``cart.<name>`` take SLOW seconds (or until ``gate``), then run (or fail)."""
    real = getattr(cart, name)

    def slow(*a, **k):
        gate.wait(SLOW)
        if fail:
            raise OSError(errno.EIO, "disk on fire")
        return real(*a, **k)

    setattr(cart, name, slow)


def _timed(drv, nexus, cdb: bytes):
    t0 = time.monotonic()
    res = drv.execute(nexus, cdb)
    return res, time.monotonic() - t0


def test_immediate_rewind_answers_everyone_while_it_runs(drv):
    gate = threading.Event()
    _slow(drv._cart, "rewind", gate)
    res, took = _timed(drv, A, bytes([0x01, 1, 0, 0, 0, 0]))
    assert res.status == Status.GOOD and took < QUICK
    res, took = _timed(drv, B, bytes(6))  # TEST UNIT READY from another initiator
    assert res.status == Status.CHECK_CONDITION and code(res) == IN_PROGRESS and took < QUICK
    res, took = _timed(drv, A, bytes([0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0]))  # READ POSITION
    assert code(res) == IN_PROGRESS and took < QUICK
    res, took = _timed(drv, B, bytes([0x03, 0, 0, 0, 18, 0]))  # REQUEST SENSE
    assert res.status == Status.GOOD and took < QUICK
    assert (res.data[2] & 0x0F, res.data[12], res.data[13]) == IN_PROGRESS
    res, took = _timed(drv, B, bytes([0x12, 0, 0, 0, 36, 0]))  # INQUIRY
    assert res.status == Status.BUSY and took < QUICK
    gate.set()
    drv._immediate.wait()
    assert drv.execute(B, bytes(6)).status == Status.GOOD
    d = drv.execute(A, bytes([0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0])).data
    assert int.from_bytes(d[4:8], "big") == 0 and d[0] & 0x80  # at BOP


def test_without_immed_the_command_does_the_work_first(drv):
    gate = threading.Event()
    _slow(drv._cart, "rewind", gate)
    gate.set()
    assert drv.execute(A, bytes([0x01, 0, 0, 0, 0, 0])).status == Status.GOOD
    assert not drv._immediate.running


def test_reservation_conflict_comes_before_in_progress(drv):
    assert drv.execute(A, bytes([0x16, 0, 0, 0, 0, 0])).status == Status.GOOD  # RESERVE(6)
    gate = threading.Event()
    _slow(drv._cart, "rewind", gate)
    assert drv.execute(A, bytes([0x01, 1, 0, 0, 0, 0])).status == Status.GOOD
    res, took = _timed(drv, B, bytes([0x08, 0, 0, 0, 4, 0]))  # READ from the other one
    assert res.status == Status.RESERVATION_CONFLICT and took < QUICK
    gate.set()


def test_failed_immediate_work_is_a_deferred_error_for_its_nexus(drv):
    gate = threading.Event()
    gate.set()
    _slow(drv._cart, "rewind", gate, fail=True)
    assert drv.execute(A, bytes([0x01, 1, 0, 0, 0, 0])).status == Status.GOOD
    drv._immediate.wait()
    assert drv.execute(B, bytes(6)).status == Status.GOOD  # not B's command
    res = drv.execute(A, bytes(6))
    assert res.status == Status.CHECK_CONDITION and res.sense[0] & 0x7F == 0x71  # deferred
    assert res.sense[2] & 0x0F == 3  # MEDIUM ERROR, never end of medium
    assert drv.execute(A, bytes(6)).status == Status.GOOD  # told once


def test_immediate_unload_and_erase(drv):
    gate = threading.Event()
    gate.set()
    assert drv.execute(A, bytes([0x01, 0, 0, 0, 0, 0])).status == Status.GOOD
    assert drv.execute(A, bytes([0x19, 0x03, 0, 0, 0, 0])).status == Status.GOOD  # IMMED LONG
    drv._immediate.wait()
    assert drv._cart.eod == 0
    assert drv.execute(A, bytes([0x1B, 1, 0, 0, 0, 0])).status == Status.GOOD  # unload IMMED
    drv._immediate.wait()
    res = drv.execute(A, bytes(6))
    assert code(res) == (2, 0x3A, 0)  # no medium: unloaded
    assert drv.execute(A, bytes([0x1B, 1, 0, 0, 1, 0])).status == Status.GOOD  # load IMMED
    drv._immediate.wait()
    assert code(drv.execute(A, bytes(6))) == (6, 0x28, 0)  # not ready -> ready
    assert drv.execute(A, bytes(6)).status == Status.GOOD


def test_erase_refuses_write_protect_at_once_even_with_immed(drv):
    drv._cart.set_write_protect(True)
    res = drv.execute(A, bytes([0x19, 0x03, 0, 0, 0, 0]))
    assert code(res) == (7, 0x27, 0) and not drv._immediate.running
