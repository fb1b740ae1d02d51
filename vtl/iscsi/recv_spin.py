"""A short wait on the CPU for a stream's next command, instead of a sleep in ``recv``.

With one command outstanding (Linux st, libiscsi), the initiator sends its next READ or WRITE
within tens of microseconds of the answer. A connection that blocks in ``recv`` for it sleeps
and is woken once per command: a context switch, and when the initiator runs on another CPU a
cross-CPU wake-up (an IPI, and a halted vCPU's exit and entry under KVM), which on this
project's 2-vCPU machine doubles the server's CPU per GB of small reads (bench/README.md, "The
64 KiB read slow mode"). So after a command answered on a streaming fast path
(stream_paths.py), the connection can poll its socket for up to ``VTL_SPIN_US`` microseconds
(e.g. 50; unset or 0: never, the default until a quiet machine shows it pays) with the GIL
released, yielding the CPU between tries so an initiator waiting for this very CPU runs, then
blocks in ``recv`` as before.

Bounded so it cannot eat the CPUs: at most CPUs - 1 connections spin at once (one on two
CPUs), and a connection whose spin found nothing skips the next ``SKIP_AFTER_MISS`` chances,
so an idle or slow initiator costs one spin now and then. Only with the C extension
(``vtl._fastpath.recv_spin``): the pure-Python fallback blocks as it always did.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

from vtl.native import optional_extension

SPIN_ENV = "VTL_SPIN_US"
SKIP_AFTER_MISS = 64

_native = optional_extension("vtl._fastpath")


def _spin_ns() -> int:
    try:
        us = int(os.environ.get(SPIN_ENV, "0"))
    except ValueError:
        us = 0
    return max(0, us) * 1000 if _native is not None else 0


class _Spinning(Protocol):
    sock: object
    _bhs_view: memoryview
    _spin_skip: int


class RecvSpin:
    """The spin policy shared by every connection of the process."""

    def __init__(self, spin_ns: int, slots: int) -> None:
        self.ns = spin_ns
        self.on = spin_ns > 0
        self._slots = [threading.Lock() for _ in range(max(1, slots))]

    def recv_header(self, conn: _Spinning) -> int:
        """``recv`` into the connection's header buffer if bytes come within the spin: the
        count (0: the peer closed), or -1 (no spin now, or nothing came: block as usual)."""
        if conn._spin_skip:
            conn._spin_skip -= 1
            return -1
        for slot in self._slots:
            if slot.acquire(False):
                break
        else:
            return -1
        try:
            got = _native.recv_spin(conn.sock.fileno(), conn._bhs_view, self.ns)
        finally:
            slot.release()
        if got < 0:
            conn._spin_skip = SKIP_AFTER_MISS
        return got


SPIN = RecvSpin(_spin_ns(), (os.cpu_count() or 1) - 1)
