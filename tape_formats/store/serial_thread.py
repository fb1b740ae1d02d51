"""Jobs run one after the other, in the order given, on a thread of their own.

A dedup cartridge's cut (FastCDC, BLAKE3, the index lookup: dedup_medium.py) runs here, so
the thread that writes the cartridge only copies payloads and hands a full buffer over: the
next batch is copied while the last one is cut, and the chunk writer's compress threads get
batches without waiting for a whole cut each time (bench/README.md, bench_dedup.py).

At most ``depth`` jobs wait or run: ``put`` waits for room, which bounds memory (a job holds
a stream buffer). An error of a job is kept and raised by every later ``put`` and ``wait``
(the jobs behind it are dropped): the caller's stream has lost data, so nothing later may
pretend otherwise. The thread starts with the first job and stops at ``close``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

Job = TypeVar("Job")


class SerialThread(Generic[Job]):
    """``run(job)`` for each job ``put``, in order, on one thread."""

    def __init__(self, run: Callable[[Job], None], depth: int, name: str) -> None:
        self._run = run
        self._depth = max(1, depth)
        self._name = name
        lock = threading.Lock()
        self._work = threading.Condition(lock)  # the thread waits here for a job
        self._done = threading.Condition(lock)  # put and wait wait here for a job to end
        self._jobs: deque[Job] = deque()  # waiting, and the one running (the first)
        self._idle = False  # the thread waits for a job
        self._waiting = 0  # threads in put or wait
        self._error: BaseException | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    def put(self, job: Job) -> None:
        """Run ``job`` after those before it; waits while ``depth`` jobs are queued."""
        with self._work:
            while True:
                if self._error is not None:
                    raise self._error
                if len(self._jobs) < self._depth:
                    break
                self._waiting += 1
                try:
                    self._done.wait()
                finally:
                    self._waiting -= 1
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name=self._name)
                self._thread.start()
            elif self._idle:
                self._work.notify()

    def wait(self) -> None:
        """Until every job put has run; raises the error a job met."""
        if self._jobs or self._error is not None:  # (an idle thread: no lock taken)
            with self._work:
                while self._jobs:
                    self._waiting += 1
                    try:
                        self._done.wait()
                    finally:
                        self._waiting -= 1
                if self._error is not None:
                    raise self._error

    def close(self) -> None:
        """Run what was put, stop the thread (an error is left: nobody asks any more)."""
        with self._work:
            self._stopping = True
            thread = self._thread
            self._work.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _loop(self) -> None:
        jobs = self._jobs
        while True:
            with self._work:
                while not jobs:
                    if self._stopping:
                        return
                    self._idle = True
                    self._work.wait()
                    self._idle = False
                job = jobs[0]
                skip = self._error is not None
            if not skip:
                try:
                    self._run(job)
                except BaseException as exc:  # kept for put and wait
                    with self._work:
                        if self._error is None:
                            self._error = exc
            del job
            with self._work:
                jobs.popleft()
                if self._waiting:
                    self._done.notify_all()
