"""vtl/iscsi/recv_spin.py: the short wait on the CPU for a stream's next command. The C call
returns what arrived within the spin, 0 when the peer closed and -1 when nothing came; the
policy lets at most its slots spin at once and backs off after a spin that found nothing.
(tests/iscsi/test_stream_paths.py runs the whole command sequence with the spin on.)"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from vtl.iscsi import recv_spin
from vtl.iscsi.recv_spin import SKIP_AFTER_MISS, RecvSpin

native = recv_spin._native
needs_c = pytest.mark.skipif(native is None, reason="vtl._fastpath is not built (or off)")


@needs_c
def test_recv_spin_returns_what_arrives_and_minus_one_when_nothing_does() -> None:
    a, b = socket.socketpair()
    with a, b:
        buf = bytearray(48)
        t0 = time.monotonic()
        assert native.recv_spin(a.fileno(), buf, 2_000_000) == -1  # 2 ms, nothing sent
        assert time.monotonic() - t0 >= 0.002
        b.sendall(b"x" * 60)
        assert native.recv_spin(a.fileno(), buf, 1_000_000) == 48
        assert bytes(buf) == b"x" * 48
        assert a.recv(100) == b"x" * 12  # the rest stays in the socket
        sender = threading.Timer(0.01, b.sendall, (b"late",))
        sender.start()
        assert native.recv_spin(a.fileno(), buf, 2_000_000_000) == 4  # found within the spin
        sender.join()
        b.close()
        assert native.recv_spin(a.fileno(), buf, 1_000_000) == 0  # the peer closed
    with pytest.raises(OSError):
        native.recv_spin(a.fileno(), buf, 1_000_000)  # closed: EBADF
    with pytest.raises(BufferError):
        native.recv_spin(1, b"read-only", 1)


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._bhs_view = memoryview(bytearray(48))
        self._spin_skip = 0


@needs_c
def test_policy_backs_off_after_a_miss_and_spins_in_its_slots_only() -> None:
    a, b = socket.socketpair()
    with a, b:
        policy = RecvSpin(1_000_000, slots=1)
        conn = _Conn(a)
        assert policy.recv_header(conn) == -1  # a miss ...
        assert conn._spin_skip == SKIP_AFTER_MISS
        b.sendall(bytes(48))
        for _ in range(SKIP_AFTER_MISS):  # ... and no spin for the next chances
            assert policy.recv_header(conn) == -1
        assert policy.recv_header(conn) == 48
        b.sendall(bytes(48))
        with policy._slots[0]:  # another connection spins: none left for this one
            assert policy.recv_header(conn) == -1
        assert conn._spin_skip == 0  # not a miss
        assert policy.recv_header(conn) == 48


def test_off_without_the_extension_or_at_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(recv_spin.SPIN_ENV, "0")
    assert recv_spin._spin_ns() == 0
    monkeypatch.setenv(recv_spin.SPIN_ENV, "junk")
    monkeypatch.setattr(recv_spin, "_native", None)
    assert recv_spin._spin_ns() == 0
    assert not RecvSpin(0, 1).on
