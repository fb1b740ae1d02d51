"""Which drives of this process are writing a stream now: when they are twice as many as the
CPUs, big blocks are written on the command's own thread instead of through the write buffer.

The write buffer (tape_formats/write_behind.py) answers a WRITE as soon as the block is
queued and stores it on a thread of its own: one stream then gets a second core for zstd and
the file write while the initiator sends the next block. That hand-off costs CPU of its own
(a wake-up, a context switch and the buffer's bookkeeping per block: about a quarter of the
server's CPU per GB at 256 KiB, bench/README.md). Once twice as many drives stream as there
are CPUs, their command threads keep every core busy already (a stream written at once uses
less than a core: its initiator waits for each block), and the hand-off is pure cost: storing
each block on the thread that received it then leaves more CPU for the streams. Fewer
streams keep the buffer, which lets each of them use more than a core.
"""

from __future__ import annotations

import os
import time

# A drive counts as streaming for this long after its last WRITE.
STREAM_WINDOW = 0.5


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class WriteStreams:
    """The time of each drive's last WRITE; ``wrote`` says whether at least ``enough``
    drives (at least two) wrote within ``STREAM_WINDOW`` seconds, counted again at most
    every ``RECOUNT`` seconds so that a WRITE costs a clock read and a dict store."""

    RECOUNT = 0.05

    def __init__(self, enough: int) -> None:
        self.enough = max(2, enough)
        self._last: dict[int, float] = {}
        self._busy = False
        self._recount_at = 0.0

    def wrote(self, drive: int) -> bool:
        """Note a WRITE on ``drive`` now; True when enough drives stream to write it at once.
        (No lock: a dict store and ``list`` of its values are atomic under the GIL, and a
        count that is a moment old only moves the switch by a block or two.)"""
        now = time.monotonic()
        last = self._last
        last[drive] = now
        if len(last) < self.enough:
            return False
        if now >= self._recount_at:
            self._recount_at = now + self.RECOUNT
            since = now - STREAM_WINDOW
            self._busy = sum(t >= since for t in list(last.values())) >= self.enough
        return self._busy


# One per process: the drives of one process share its CPUs.
WRITE_STREAMS = WriteStreams(2 * _cpus())
