"""A short wait on the CPU for a stream's next command (60 us by default; ``VTL_SPIN_US``).

With one command outstanding (Linux st, the bench's libiscsi client) a connection's thread
sleeps in ``recv`` after each answer and the initiator's next command wakes it. When the
initiator runs on another vCPU that wake-up crosses vCPUs: 40-90 us on the 2-vCPU VMs this
project is measured on, against 40-60 us of CPU for a whole 10 KiB READ (bench/README.md,
"Where a small command's wall time goes"). Polling the socket for a few tens of microseconds
instead of sleeping spares it, at the price of the CPU the poll burns. So the thread spins
only (a) after a small streamed READ(6)/WRITE(6) (up to SPIN_MAX_BYTES: above it the
transfer, not the wake-up, is the cost), (b) when the initiator's last packet came from
another CPU (``SO_INCOMING_CPU``, checked in C: on the same CPU it would wait for the spin
to end), (c) while the CPU is otherwise idle: at most CPUs - 1 connections spin at once, a
spin ends as soon as a ``sched_yield`` between its tries ran another thread, and a spin that
found nothing skips the next SKIP_AFTER_MISS chances.

On by default (60 us) since the quiet-box A/B (bench/README.md, 2026-12-04 23:27-23:31, same
tgt figures in both runs): 10 KiB / 32 KiB / 64,512 B random READ 1.23x / 1.24x / 1.24x tgt
without it, 2.27x / 1.90x / 1.83x with it; on a busy box it almost never spins (the yield
rule). ``VTL_SPIN_US=0`` turns it off. The call is ``vtl._fastpath.recv_spin`` (vtl/_fastpath_spin.c); without the
extension the spin stays off.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Protocol

from vtl.native import optional_extension

log = logging.getLogger("vtl.iscsi")

SPIN_ENV = "VTL_SPIN_US"
SPIN_MAX_BYTES = 64 * 1024  # the largest command (EDTL) after which a connection spins
SKIP_AFTER_MISS = 8  # chances left out after a spin that found nothing

_native = optional_extension("vtl._fastpath", "recv_spin")


class _Spinner(Protocol):
    """What the spin needs of a connection (vtl/iscsi/framing.py's PduFraming)."""

    sock: object
    _bhs_view: memoryview
    _spin_skip: int


class RecvSpin:
    """The policy: how long a spin lasts, how many connections may spin at once."""

    def __init__(self, ns: int, slots: int) -> None:
        self.ns = ns
        self.on = ns > 0 and _native is not None
        self._slots = threading.BoundedSemaphore(max(1, slots))

    def recv_header(self, conn: _Spinner) -> int:
        """Receive the start of the next PDU into ``conn._bhs_view`` by spinning: the bytes
        received (0: the peer closed), or -1 when the caller must block in ``recv`` as
        usual (not spun, or nothing came in time)."""
        if conn._spin_skip:
            conn._spin_skip -= 1
            return -1
        if not self._slots.acquire(blocking=False):
            return -1
        try:
            got = _native.recv_spin(conn.sock.fileno(), conn._bhs_view, self.ns, True)
        finally:
            self._slots.release()
        if got == -1:
            conn._spin_skip = SKIP_AFTER_MISS
        return max(got, -1)


DEFAULT_SPIN_US = 60


def _spin_ns() -> int:
    """``VTL_SPIN_US`` in nanoseconds: DEFAULT_SPIN_US when unset, 0 (off) when zero or not a
    number."""
    text = os.environ.get(SPIN_ENV, "")
    if not text:
        return DEFAULT_SPIN_US * 1000
    try:
        us = int(text)
    except ValueError:
        log.warning("%s=%r is not a number of microseconds: no spin", SPIN_ENV, text)
        return 0
    return max(0, us) * 1000


SPIN = RecvSpin(_spin_ns(), (os.cpu_count() or 1) - 1)
