"""The EBM's iSCSI initiator (ebm.remote.initiator) against the project's own target.

In-process target (tests/support/iscsi_support): negotiation variants (R2T-driven writes,
unsolicited data, digests), CHAP and mutual CHAP, task management, NOP-In answers, and what a
dropped connection does to an idempotent command (retried) and to a WRITE (PositionUncertain).
"""

from __future__ import annotations

import threading
import time

import pytest
from iscsi_support import TEST_IQN, running_target

from ebm.remote.initiator import Chap, Initiator, LoginError, PositionUncertain, TaskAborted
from ebm.remote.iscsi_url import UrlError, parse_url
from ebm.remote.scsi_client import ScsiDevice
from vtl.iscsi import pdu
from vtl.iscsi.chap import ChapCredentials
from vtl.iscsi.config import Limits


def _write6(n: int) -> bytes:
    return bytes([0x0A, 0]) + n.to_bytes(3, "big") + b"\0"


def _check_write(ini: Initiator, payload: bytes, lun: int = 1) -> None:
    res = ini.execute(lun, _write6(len(payload)), data_out=payload)
    assert res.status == 0, res.sense.hex()
    res = ini.execute(lun, bytes([0xC1]) + bytes(5), read_len=8)
    assert res.data == len(payload).to_bytes(4, "big") + pdu.crc32c(payload).to_bytes(4, "big")


@pytest.mark.parametrize("limits,digests", [
    (Limits(), False),
    (Limits(immediate_data=False, initial_r2t=True, max_recv_data_segment_length=8192,
            max_burst_length=65536, first_burst_length=8192), True),
    (Limits(immediate_data=True, initial_r2t=True, first_burst_length=16384), False),
    (Limits(immediate_data=False, initial_r2t=False, first_burst_length=65536,
            max_recv_data_segment_length=16384), True),
])
def test_writes_and_reads_under_each_negotiation(limits: Limits, digests: bool):
    payload = bytes(range(256)) * 1500 + b"tail"  # 384004 bytes: several bursts and R2Ts
    with running_target(limits=limits) as t, Initiator(
            "127.0.0.1", t.port, TEST_IQN, header_digest=digests, data_digest=digests) as ini:
        assert ini._conn.params.header_digest is digests
        _check_write(ini, payload)
        res = ini.execute(1, bytes([0x08, 0]) + (300000).to_bytes(3, "big") + b"\0",
                          read_len=300000)
        assert res.status == 0 and len(res.data) == 300000
        assert ScsiDevice(ini, 0, "changer").inquiry()[0] == 8


def test_chap_and_mutual_chap():
    creds, mutual = ChapCredentials("ebm", "initiator-secret-1"), ChapCredentials("vtl", "target-secret-22")
    with running_target(chap=creds, mutual=mutual) as t:
        with Initiator("127.0.0.1", t.port, TEST_IQN,
                       chap_auth=Chap("ebm", "initiator-secret-1", "vtl", "target-secret-22")) as ini:
            _check_write(ini, b"x" * 1000)
        with Initiator("127.0.0.1", t.port, TEST_IQN,
                       chap_auth=Chap("ebm", "initiator-secret-1")) as ini:  # one-way is fine
            _check_write(ini, b"y" * 10)
        with pytest.raises(LoginError, match="authentication failed"):
            Initiator("127.0.0.1", t.port, TEST_IQN, chap_auth=Chap("ebm", "wrong-secret-123")).connect()
        with pytest.raises(LoginError, match="mutual CHAP"):
            Initiator("127.0.0.1", t.port, TEST_IQN,
                      chap_auth=Chap("ebm", "initiator-secret-1", "vtl", "not-the-target-s")).connect()
        with pytest.raises(LoginError, match="authentication failed"):
            Initiator("127.0.0.1", t.port, TEST_IQN).connect()


def test_abort_task_and_lun_reset():
    with running_target() as t, Initiator("127.0.0.1", t.port, TEST_IQN) as ini:
        done: list[object] = []

        def slow() -> None:
            try:
                done.append(ini.execute(1, bytes([0xC0, 50, 0, 0, 0, 0])))
            except TaskAborted as e:
                done.append(e)

        th = threading.Thread(target=slow)
        th.start()
        deadline = time.monotonic() + 5
        while not ini.pending_itts() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ini.abort_task(1, ini.pending_itts()[0]) in (0, 1)  # complete or already done
        th.join(10)
        assert len(done) == 1  # its status, or TaskAborted: never a hang
        assert ini.lun_reset(1) == 0
        assert t.devices[1].resets
        _check_write(ini, b"after reset")


def test_answers_nop_in_pings_while_idle():
    limits = Limits(nop_interval=0.1, nop_timeout=0.3)
    with running_target(limits=limits) as t, Initiator("127.0.0.1", t.port, TEST_IQN) as ini:
        time.sleep(1.0)  # several pings; unanswered ones would drop the connection
        _check_write(ini, b"still here")
        assert ini.reconnects == 0


def test_dropped_connection_retries_reads_and_reports_writes():
    with running_target() as t, Initiator("127.0.0.1", t.port, TEST_IQN) as ini:
        dev = ScsiDevice(ini, 1, "drive")
        ini.drop_connection()
        assert dev.inquiry()[2] == "DRIVE1"  # idempotent: retried on a new connection
        assert ini.reconnects == 1

        def drop_soon() -> None:
            time.sleep(0.2)
            ini.drop_connection()

        threading.Thread(target=drop_soon).start()
        with pytest.raises(PositionUncertain, match="whether it ran is unknown"):
            ini.execute(1, bytes([0xC0, 100, 0, 0, 0, 0]))  # not idempotent: never resent
        _check_write(ini, b"the session is back")


def test_url_parsing():
    u = parse_url("iscsi://10.0.0.5/iqn.2026-01.org.vtl-ebm:lib/3")
    assert (u.host, u.port, u.iqn, u.lun) == ("10.0.0.5", 3260, "iqn.2026-01.org.vtl-ebm:lib", 3)
    u = parse_url("iscsi://[::1]:13260/iqn.2026-01.org.vtl-ebm:lib")
    assert (u.host, u.port, u.lun) == ("::1", 13260, None)
    assert str(u) == "iscsi://[::1]:13260/iqn.2026-01.org.vtl-ebm:lib"
    for bad in ("iscsi://host", "http://h/iqn.2026-01.x:y", "iscsi://h:0/iqn.2026-01.x:y",
                "iscsi://h/notaniqn", "iscsi://h/iqn.2026-01.x:y/99999"):
        with pytest.raises(UrlError):
            parse_url(bad)


def test_concurrent_commands_wait_for_the_command_window():
    """QueueDepth 1: the target's MaxCmdSN admits one command at a time; four threads'
    commands must each wait for the window instead of overrunning it."""
    with running_target(limits=Limits(queue_depth=1)) as t, \
            Initiator("127.0.0.1", t.port, TEST_IQN, timeout=20) as ini:
        results: list[int] = []

        def run(lun: int) -> None:
            results.append(ini.execute(lun, bytes([0xC0, 5, 0, 0, 0, 0])).status)

        threads = [threading.Thread(target=run, args=(1 + i % 2,)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert results == [0, 0, 0, 0]
