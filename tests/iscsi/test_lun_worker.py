"""A LUN's worker takes its posters in turn: a command waits behind at most one job of each
other poster, not behind everything one busy session queued; a barrier job runs after all
that was posted before it and before anything posted after it."""

from __future__ import annotations

import threading

from vtl.iscsi.lun_worker import LunWorker


def _worker() -> tuple[LunWorker, threading.Event, list[str]]:
    w = LunWorker("t", device=None)  # the jobs here never touch the device
    gate = threading.Event()
    ran: list[str] = []
    w.post("gate", gate.wait)  # holds the thread while the jobs below are posted
    return w, gate, ran


def test_posters_take_turns_each_in_its_own_order():
    w, gate, ran = _worker()
    for i in range(5):
        w.post("busy", ran.append, f"busy{i}")
    w.post("other", ran.append, "other0")
    w.post("other", ran.append, "other1")
    w.post("third", ran.append, "third0")
    gate.set()
    w.shutdown()
    assert ran == ["busy0", "other0", "third0", "busy1", "other1", "busy2", "busy3", "busy4"]


def test_a_barrier_runs_after_what_came_before_and_before_what_comes_after():
    w, gate, ran = _worker()
    for i in range(3):
        w.post("a", ran.append, f"a{i}")
    w.post("b", ran.append, "b0")
    w.post_barrier(ran.append, "barrier")
    w.post("c", ran.append, "c0")
    w.post("a", ran.append, "a3")
    gate.set()
    w.shutdown()
    assert ran == ["a0", "b0", "a1", "a2", "barrier", "c0", "a3"]
