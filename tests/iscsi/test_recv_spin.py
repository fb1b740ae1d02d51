"""vtl/iscsi/recv_spin.py and vtl._fastpath.recv_spin: the short wait on the CPU for a
stream's next command. The C call returns what arrived within the spin, 0 when the peer
closed, -1 when nothing came and -2 when it did not spin because the peer's last packet came
from this CPU; the policy lets at most its slots spin at once and backs off after a miss.
(tests/iscsi/test_stream_paths.py runs the whole command sequence with the spin on.)"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from vtl.iscsi import recv_spin
from vtl.iscsi.recv_spin import SKIP_AFTER_MISS, RecvSpin

native = recv_spin._native
needs_c = pytest.mark.skipif(native is None, reason="vtl._fastpath is not built (or off)")


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


def _spin_until_data(sock: socket.socket, buf: bytearray) -> int:
    """Spins until bytes come (a spin gives up early when another thread wants the CPU:
    on a busy machine the test's own sender)."""
    deadline = time.monotonic() + 5
    got = -1
    while got < 0 and time.monotonic() < deadline:
        got = native.recv_spin(sock.fileno(), buf, 100_000_000, False)
    return got


@needs_c
def test_recv_spin_returns_what_arrives_and_minus_one_when_nothing_does() -> None:
    a, b = _tcp_pair()
    with a, b:
        buf = bytearray(48)
        t0 = time.monotonic()
        assert native.recv_spin(a.fileno(), buf, 2_000_000, False) == -1  # nothing came
        assert time.monotonic() - t0 < 1  # 2 ms, or less if another thread wanted the CPU
        b.sendall(b"x" * 60)
        assert _spin_until_data(a, buf) == 48 and bytes(buf) == b"x" * 48
        assert a.recv(100) == b"x" * 12  # the rest stays in the socket
        sender = threading.Timer(0.01, b.sendall, (b"late",))
        sender.start()
        assert _spin_until_data(a, buf) == 4  # found by a spin
        sender.join()
        b.close()
        assert native.recv_spin(a.fileno(), buf, 1_000_000, False) == 0  # the peer closed
    with pytest.raises(OSError):
        native.recv_spin(a.fileno(), buf, 1_000_000, False)  # closed: EBADF
    with pytest.raises(BufferError):
        native.recv_spin(1, b"read-only", 1, False)


@needs_c
def test_no_spin_when_the_peer_sent_from_this_cpu() -> None:
    a, b = _tcp_pair()
    old = os.sched_getaffinity(0)
    cpu = min(old)
    try:
        os.sched_setaffinity(0, {cpu})  # this thread sends, and asks, from one CPU
        with a, b:
            b.sendall(b"y" * 48)
            time.sleep(0.01)
            buf = bytearray(48)
            assert native.recv_spin(a.fileno(), buf, 1_000_000_000, True) == -2  # not spun
            assert a.recv(48) == b"y" * 48  # left in the socket
    finally:
        os.sched_setaffinity(0, old)


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._bhs_view = memoryview(bytearray(48))
        self._spin_skip = 0


@needs_c
def test_policy_backs_off_after_a_miss_and_spins_in_its_slots_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class AnyCpu:  # the placement test is above; here the spin must always try
        @staticmethod
        def recv_spin(fd, buf, ns, other_cpu_only):
            return native.recv_spin(fd, buf, ns, False)

    monkeypatch.setattr(recv_spin, "_native", AnyCpu)
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
        assert policy._slots.acquire(blocking=False)  # another connection spins ...
        try:
            assert policy.recv_header(conn) == -1  # ... no slot left for this one
        finally:
            policy._slots.release()
        assert conn._spin_skip == 0  # not a miss
        assert policy.recv_header(conn) == 48


def test_on_by_default_off_without_the_extension_or_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(recv_spin.SPIN_ENV, raising=False)
    assert recv_spin._spin_ns() == recv_spin.DEFAULT_SPIN_US * 1000
    monkeypatch.setenv(recv_spin.SPIN_ENV, "0")
    assert recv_spin._spin_ns() == 0
    monkeypatch.setenv(recv_spin.SPIN_ENV, "junk")
    assert recv_spin._spin_ns() == 0
    monkeypatch.setenv(recv_spin.SPIN_ENV, "60")
    assert recv_spin._spin_ns() == 60_000
    monkeypatch.setattr(recv_spin, "_native", None)
    assert not RecvSpin(60_000, 1).on
    assert not RecvSpin(0, 1).on
