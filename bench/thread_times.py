"""Per-thread time of this process: on a CPU, waiting for one, or asleep (Linux schedstat).

A pipeline that does not keep its cores busy either waits on itself (a serial stage, the
GIL, a full queue: its threads sleep, *off CPU*) or on a box too busy to run it (its threads
are runnable and wait *on the run queue*). ``/proc/self/task/*/schedstat`` tells the two
apart; it is sampled on a thread of its own because a pool's threads end before the caller
could read them.
"""

from __future__ import annotations

import os
import threading
import time


class ThreadTimes:
    """Samples every thread's schedstat while in a ``with`` block; ``report`` prints them."""

    def __init__(self, period: float = 0.05) -> None:
        self._period = period
        self._stop = threading.Event()
        self._names: dict[int, str] = {}
        self._last: dict[int, tuple[float, float]] = {}  # tid: (on CPU s, run queue s)
        self._thread = threading.Thread(target=self._run, name="thread-times", daemon=True)
        self._wall = 0.0

    def __enter__(self) -> ThreadTimes:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._wall = time.perf_counter() - self._t0

    def _run(self) -> None:
        first: dict[int, tuple[float, float]] = {}
        while True:
            self._names.update({t.native_id: t.name for t in threading.enumerate()
                                if t.native_id is not None})
            for tid in os.listdir("/proc/self/task"):
                try:
                    with open(f"/proc/self/task/{tid}/schedstat") as f:
                        run, wait = (int(x) / 1e9 for x in f.read().split()[:2])
                except OSError:  # the thread ended
                    continue
                first.setdefault(int(tid), (run, wait))
                r0, w0 = first[int(tid)]
                self._last[int(tid)] = (run - r0, wait - w0)
            if self._stop.wait(self._period):
                return

    def report(self, nbytes: int, indent: str = "    ") -> None:
        """One line per thread that ran: CPU s per GB of ``nbytes``, shares of the wall."""
        for tid, (run, wait) in sorted(self._last.items(), key=lambda x: -x[1][0]):
            if run < 0.01 * self._wall or self._names.get(tid) == "thread-times":
                continue
            name = self._names.get(tid, str(tid))[:28]
            print(f"{indent}{name:28s} {run / nbytes * 1e9:5.2f} CPU s/GB; on CPU "
                  f"{run / self._wall:4.0%}, run queue {wait / self._wall:4.0%}, asleep "
                  f"{1 - (run + wait) / self._wall:4.0%}")
