"""One exported device behind the small interface a connection needs: a lock and a thread.

A connection runs a command on a LUN through exactly these: ``lock`` (one command at a time
reaches the device), ``device`` (the model, vtl/scsi/base.py), the optional hooks ``idle``
and ``data_out_length`` looked up once, and ``post`` (run a long command on the LUN's own
thread). The target creates one per LUN, shared by all sessions; nothing here knows about
connections or the target, which keeps the import graph a tree.

Fairness: the worker takes jobs from its posters in turn (round robin over the ``key`` each
job is posted with, one job per turn), in arrival order for each poster. With one FIFO an
initiator that queues QueueDepth commands per session puts every other initiator of the LUN
behind all of them; in turn, a command waits behind at most one job of each other poster.
Order across posters is not a promise SCSI makes (commands of different I_T nexuses are
concurrent); ``post_barrier`` is for the jobs that need it (a session's end: what it queued
runs first, and whatever is posted later, a reinstated session's commands included, after).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from vtl.scsi.base import ScsiDevice

log = logging.getLogger("vtl.iscsi")

_Job = tuple[Callable[..., Any], tuple[Any, ...]]


class _Round:
    """Jobs posted between two barriers: a queue per poster and the posters' turn order."""

    __slots__ = ("jobs", "turns")

    def __init__(self) -> None:
        self.jobs: dict[Hashable, deque[_Job]] = {}
        self.turns: deque[Hashable] = deque()  # posters with jobs, each once

    def add(self, key: Hashable, job: _Job) -> None:
        q = self.jobs.get(key)
        if q is None:
            q = self.jobs[key] = deque()
            self.turns.append(key)
        q.append(job)

    def take(self) -> _Job:
        """The next poster's oldest job; that poster goes to the back of the turn order."""
        key = self.turns.popleft()
        q = self.jobs[key]
        job = q.popleft()
        if q:
            self.turns.append(key)
        else:
            del self.jobs[key]
        return job


class LunWorker:
    """One device: the lock that lets one command at a time reach it, and the thread that
    runs its long commands, its posters in turn.

    A bare thread, not a ThreadPoolExecutor: posting a command allocates no Future. The
    SimpleQueue carries one wake-up per job; the jobs themselves wait in ``_rounds``.
    """

    _STOP = object()

    def __init__(self, name: str, device: ScsiDevice) -> None:
        self.device = device
        self.lock = threading.Lock()
        # The optional parts of the device contract (vtl/scsi/base.py), looked up once
        # (``inline_opcodes`` may change with the device's state: read per command).
        self.idle: Callable[[], None] | None = getattr(device, "idle", None)
        self.data_out_length: Callable[[bytes], int | None] | None = getattr(
            device, "data_out_length", None)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._mutex = threading.Lock()  # _rounds
        # _Round (jobs between barriers) or a barrier job, oldest first.
        self._rounds: deque[_Round | _Job] = deque()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"lun-{name}", daemon=True)
        self._thread.start()

    def _next(self) -> _Job:
        with self._mutex:
            head = self._rounds[0]
            if type(head) is not _Round:
                self._rounds.popleft()
                return head
            job = head.take()
            if not head.turns:
                self._rounds.popleft()
            return job

    def _run(self) -> None:
        while True:
            if self._queue.get() is self._STOP:
                return
            fn, args = self._next()
            try:
                fn(*args)
            except Exception:  # keep the LUN alive whatever one job does
                log.exception("LUN worker job failed")

    def post(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` on this LUN's thread, after the jobs ``key`` (the poster, e.g.
        a connection) posted before, in turn with other posters' (RuntimeError once shut
        down)."""
        if self._closed:
            raise RuntimeError("LUN worker is shut down")
        with self._mutex:
            rounds = self._rounds
            last = rounds[-1] if rounds else None
            if type(last) is not _Round:
                last = _Round()
                rounds.append(last)
            last.add(key, (fn, args))
        self._queue.put(None)

    def post_barrier(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` after every job posted so far and before any posted later."""
        if self._closed:
            raise RuntimeError("LUN worker is shut down")
        with self._mutex:
            self._rounds.append((fn, args))
        self._queue.put(None)

    def shutdown(self) -> None:
        """Run what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(self._STOP)
        self._thread.join()
