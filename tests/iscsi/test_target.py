"""The iSCSI target against a small in-test device: libiscsi's tools and a raw initiator."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import subprocess
import time

import pytest
from iscsi_support import (
    TEST_IQN,
    LoginRefused,
    RawInitiator,
    pattern,
    read6,
    running_target,
    scsi_status,
    sense_of,
)

from vtl.iscsi import pdu
from vtl.iscsi.chap import ChapCredentials
from vtl.iscsi.config import Limits
from vtl.iscsi.login import parse_keys
from vtl.iscsi.pdu import ALL_ONES, Op
from vtl.scsi.base import ResetKind

CHAP = ChapCredentials("alice", "alice-secret-1")
MUTUAL = ChapCredentials("target", "target-secret-2")


def tool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})


def write6(n: int) -> bytes:
    return bytes([0x0A, 0]) + n.to_bytes(3, "big") + b"\0"



# ---- libiscsi -----------------------------------------------------------------------------
def test_libiscsi_discovery_and_inquiry():
    with running_target(luns=2) as t:
        r = tool("iscsi-ls", "-s", f"iscsi://{t.portal}/")
        assert r.returncode == 0, r.stderr
        assert f"Target:{TEST_IQN} Portal:{t.portal},1" in r.stdout
        assert "Lun:0    Type:MEDIA_CHANGER" in r.stdout
        assert "Lun:2    Type:SEQUENTIAL_ACCESS" in r.stdout
        r = tool("iscsi-inq", f"iscsi://{t.portal}/{TEST_IQN}/1")
        assert r.returncode == 0, r.stderr
        assert "Product:DRIVE1" in r.stdout
        r = tool("iscsi-inq", "-e", "1", "-c", "128", f"iscsi://{t.portal}/{TEST_IQN}/1")
        assert r.returncode == 0 and "FAKE0001" in r.stdout, r.stdout + r.stderr


def test_libiscsi_chap_mutual_chap_and_digest(caplog):
    caplog.set_level(logging.INFO, logger="vtl.iscsi")
    lim = Limits(header_digests=("CRC32C",))
    with running_target(chap=CHAP, mutual=MUTUAL, limits=lim) as t:
        url = f"iscsi://{t.portal}/{TEST_IQN}/0"
        good = f"iscsi://alice%alice-secret-1@{t.portal}/{TEST_IQN}/0"
        r = tool("iscsi-inq", url)
        assert r.returncode != 0 and "Authentication failure" in r.stderr
        r = tool("iscsi-inq", f"iscsi://alice%wrong-secret@{t.portal}/{TEST_IQN}/0")
        assert r.returncode != 0 and "Authentication failure" in r.stderr
        r = tool("iscsi-ls", "-s", f"iscsi://alice%alice-secret-1@{t.portal}/")
        assert r.returncode == 0 and "MEDIA_CHANGER" in r.stdout, r.stderr
        r = tool("iscsi-inq", good + "?target_user=target&target_password=target-secret-2")
        assert r.returncode == 0 and "MEDIA_CHANGER" in r.stdout, r.stderr
        # The initiator checks the target's answer: a wrong expected secret fails.
        r = tool("iscsi-inq", good + "?target_user=target&target_password=not-the-secret")
        assert r.returncode != 0 and "CHAP_R" in r.stderr
        r = tool("iscsi-inq", good + "?header_digest=crc32c")
        assert r.returncode == 0, r.stderr
    assert "HeaderDigest=CRC32C" in caplog.text


def test_acl_refuses_unknown_initiator():
    with running_target(allowed=frozenset({"iqn.2026-11.org.example:allowed"})) as t:
        r = tool("iscsi-inq", f"iscsi://{t.portal}/{TEST_IQN}/0")
        assert r.returncode != 0 and "Authorization failure" in r.stderr
        r = tool("iscsi-inq", "-i", "iqn.2026-11.org.example:allowed",
                 f"iscsi://{t.portal}/{TEST_IQN}/0")
        assert r.returncode == 0, r.stderr
        # Discovery hides targets the initiator may not log in to.
        r = tool("iscsi-ls", f"iscsi://{t.portal}/")
        assert TEST_IQN not in r.stdout
        r = tool("iscsi-ls", "-i", "iqn.2026-11.org.example:allowed", f"iscsi://{t.portal}/")
        assert TEST_IQN in r.stdout


# ---- raw initiator: data movement ---------------------------------------------------------
def test_write_1mib_with_r2t_only():
    with running_target() as t:
        ini = RawInitiator(t.port)
        got = ini.login({"ImmediateData": "No", "InitialR2T": "Yes",
                         "MaxBurstLength": "262144", "MaxRecvDataSegmentLength": "65536"})
        assert got["ImmediateData"] == "No" and got["InitialR2T"] == "Yes"
        payload = pattern(1 << 20)[::-1]
        r2ts = []
        orig = ini.recv

        def spy():
            p = orig()
            if p.op == Op.R2T:
                r2ts.append((p.hdr.words[4], p.hdr.words[5], p.hdr.words[6]))
            return p

        ini.recv = spy
        rsp = ini.write(write6(len(payload)), payload, lun=1)
        assert scsi_status(rsp) == 0
        assert rsp.hdr.words[4] == 4  # ExpDataSN counts the R2Ts
        assert t.devices[1].last_write == payload
        assert [off for _sn, off, _len in r2ts] == [0, 262144, 524288, 786432]
        assert all(length == 262144 for _sn, _off, length in r2ts)
        assert sorted(sn for sn, _o, _l in r2ts) == [0, 1, 2, 3]
        ini.close()


def test_write_with_immediate_and_unsolicited_data():
    with running_target() as t:
        ini = RawInitiator(t.port)
        got = ini.login({"ImmediateData": "Yes", "InitialR2T": "No",
                         "FirstBurstLength": "65536", "MaxBurstLength": "131072"})
        assert got["InitialR2T"] == "No" and got["FirstBurstLength"] == "65536"
        for size in (100, 8192, 65536, 65537, 300000):
            payload = pattern(size)[::-1]
            rsp = ini.write(write6(size), payload, lun=2)
            assert scsi_status(rsp) == 0, size
            assert t.devices[2].last_write == payload, size
        ini.close()


def test_read_bursts_sequences_and_status_in_last_data_in():
    with running_target(limits=Limits(max_burst_length=65536)) as t:
        ini = RawInitiator(t.port)
        ini.login({"MaxRecvDataSegmentLength": "16384", "MaxBurstLength": "65536"})
        n = 300000
        itt = ini.scsi(read6(n), lun=1, read=n)
        pdus = []
        while True:
            p = ini.recv()
            pdus.append(p)
            if p.hdr.flags & 1 or p.op == Op.SCSI_RSP:
                break
        assert all(p.op == Op.DATA_IN and p.hdr.itt == itt for p in pdus)
        assert b"".join(p.data for p in pdus) == pattern(n)
        assert [p.hdr.words[4] for p in pdus] == list(range(len(pdus)))  # DataSN
        assert max(len(p.data) for p in pdus) == 16384
        # F marks the end of each 64 KiB sequence, and the last PDU carries GOOD status.
        finals = [p.hdr.words[5] + len(p.data) for p in pdus if p.hdr.flags & 0x80]
        assert finals == [65536, 131072, 196608, 262144, n]
        last = pdus[-1]
        assert last.hdr.flags & 0x81 == 0x81 and last.hdr.b3 == 0
        ini.close()


def test_residual_underflow_and_overflow():
    with running_target() as t:
        ini = RawInitiator(t.port)
        ini.login()
        itt = ini.scsi(read6(1000), lun=1, read=4096)  # device sends less than expected
        last, data = ini.collect(itt)
        assert len(data) == 1000
        assert last.hdr.flags & pdu.RESIDUAL_UNDERFLOW and last.hdr.words[6] == 3096
        itt = ini.scsi(read6(1000), lun=1, read=512)  # device has more than the buffer
        last, data = ini.collect(itt)
        assert data == pattern(512)
        assert last.hdr.flags & pdu.RESIDUAL_OVERFLOW and last.hdr.words[6] == 488
        ini.close()


def test_check_condition_sense_and_missing_lun():
    with running_target(luns=1) as t:
        ini = RawInitiator(t.port)
        ini.login()
        itt = ini.scsi(bytes([0xE7, 0, 0, 0, 0, 0]), lun=1)
        rsp, _ = ini.collect(itt)
        assert rsp.op == Op.SCSI_RSP and scsi_status(rsp) == 2
        s = sense_of(rsp)
        assert s[2] & 0xF == 5 and s[12] == 0x20
        # A LUN that does not exist: INQUIRY says "not present", others get 25/00.
        itt = ini.scsi(bytes([0x12, 0, 0, 0, 36, 0]), lun=7, read=36)
        _, data = ini.collect(itt)
        assert data[0] == 0x7F
        itt = ini.scsi(bytes(6), lun=7)
        rsp, _ = ini.collect(itt)
        assert sense_of(rsp)[12] == 0x25
        # REPORT LUNS is answered by the target.
        itt = ini.scsi(bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]), lun=0, read=256)
        _, data = ini.collect(itt)
        assert data[:4] == (16).to_bytes(4, "big")
        assert data[8:16] == pdu.encode_lun(0) and data[16:24] == pdu.encode_lun(1)
        ini.close()


def test_data_digest_crc32c_and_digest_error_reject():
    with running_target() as t:
        ini = RawInitiator(t.port)
        got = ini.login({"HeaderDigest": "CRC32C,None", "DataDigest": "CRC32C"})
        assert got["HeaderDigest"] == "CRC32C" and got["DataDigest"] == "CRC32C"
        payload = pattern(40000)
        assert scsi_status(ini.write(write6(len(payload)), payload)) == 0
        itt = ini.scsi(read6(20000), lun=1, read=20000)
        _, data = ini.collect(itt)
        assert data == pattern(20000)
        # A NOP-Out whose data digest is wrong is rejected (reason 2) and the session goes on.
        body = b"ping-data"
        bhs = pdu.encode_layout(Op.NOP_OUT, immediate=True, dsl=len(body), flags=0x80,
                                itt=ini.next_itt(), ttt=ALL_ONES, cmdsn=ini.cmdsn,
                                expstatsn=ini.expstatsn)
        pad = b"\0" * pdu.pad_len(len(body))
        ini.sock.sendall(bhs + pdu.digest_bytes(bhs) + body + pad + b"\xde\xad\xbe\xef")
        rej = ini.recv()
        assert rej.op == Op.REJECT and rej.hdr.b2 == 0x02 and rej.data[:48] == bhs
        assert ini.nop(b"after").data == b"after"
        # A header digest error closes the connection (lengths cannot be trusted at ERL 0).
        ini.sock.sendall(bhs + b"\0\0\0\0")
        with pytest.raises((ConnectionError, OSError)):
            ini.recv()
        ini.close()


# ---- raw initiator: control flows ----------------------------------------------------------
def test_nop_out_echo_and_target_ping_timeout():
    lim = Limits(nop_interval=0.3, nop_timeout=0.6)
    with running_target(limits=lim) as t:
        ini = RawInitiator(t.port)
        ini.login()
        echo = ini.nop(b"hello")
        assert echo.op == Op.NOP_IN and echo.data == b"hello"
        # Idle: the target pings with NOP-In (ITT all ones, a real TTT); we answer once...
        ping = ini.recv()
        assert ping.op == Op.NOP_IN and ping.hdr.itt == ALL_ONES and ping.hdr.words[0] != ALL_ONES
        ini.nop_reply(ping)
        # ...then stay silent: the target drops the connection.
        deadline = time.monotonic() + 5
        with pytest.raises((ConnectionError, OSError)):
            while time.monotonic() < deadline:
                p = ini.recv()
                assert p.op == Op.NOP_IN
        assert time.monotonic() < deadline
        ini.close()


def test_an_idle_target_parks_its_watchdog_and_still_times_out_a_login():
    """With no connection the watchdog waits for one (no timer: an idle server makes no
    wake-up); a connection that then never logs in is still dropped after login_timeout."""
    with running_target(limits=Limits(login_timeout=0.5)) as t:
        time.sleep(0.3)  # the watchdog has found no connection
        assert not t.server._connected.is_set()
        sock = socket.create_connection(("127.0.0.1", t.port), timeout=5)
        opened = time.monotonic()
        try:
            assert sock.recv(1) == b""  # closed by the target, nothing sent
        except ConnectionResetError:
            pass
        finally:
            sock.close()
        assert 0.4 < time.monotonic() - opened < 4


def test_the_status_file_is_rewritten_only_while_someone_is_connected(tmp_path, monkeypatch):
    """``vtl serve``'s status publisher: written at start, then each INTERVAL while a
    connection is open and the status changed; once the last one went, written once more
    (no session) and then left alone: no timer while nobody is connected."""
    from vtl import serve_status
    from vtl.cli.serve import _publish_status

    writes: list[dict] = []
    monkeypatch.setattr(serve_status, "INTERVAL", 0.02)
    monkeypatch.setattr(serve_status, "write", lambda root, data: writes.append(data))

    def settle(check) -> None:
        deadline = time.monotonic() + 5
        while not check() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert check()

    with running_target() as t:
        task = asyncio.run_coroutine_threadsafe(_publish_status(t.server, tmp_path), t.loop)
        try:
            settle(lambda: len(writes) == 1)
            time.sleep(0.2)
            assert len(writes) == 1 and writes[0]["sessions"] == []
            ini = RawInitiator(t.port)
            ini.login()
            settle(lambda: writes[-1]["sessions"])
            ini.close()
            settle(lambda: not writes[-1]["sessions"])
            n = len(writes)
            time.sleep(0.2)
            assert len(writes) == n
        finally:
            task.cancel()


def test_task_management_abort_and_resets():
    with running_target() as t:
        ini = RawInitiator(t.port)
        ini.login()
        slow = ini.scsi(bytes([0xC0, 30, 0, 0, 0, 0]), lun=1)  # runs 300 ms
        queued = ini.scsi(bytes([0xC0, 1, 0, 0, 0, 0]), lun=1)  # waits behind it
        time.sleep(0.05)

        def tmf(function: int, lun: int, ref: int = ALL_ONES) -> int:
            bhs = pdu.encode_layout(Op.TMF_REQ, immediate=True, flags=0x80 | function,
                                    lun=pdu.encode_lun(lun), itt=ini.next_itt(), ref_itt=ref,
                                    cmdsn=ini.cmdsn, expstatsn=ini.expstatsn)
            ini.send(bhs)
            while True:
                p = ini.recv()
                if p.op == Op.TMF_RSP:
                    return p.hdr.b2
                assert p.op == Op.SCSI_RSP and p.hdr.itt == slow, p.op

        assert tmf(1, 1, queued) == 0  # ABORT TASK: the queued command never runs
        assert tmf(1, 1, 0x7777) == 1  # no such task
        rsp, _ = ini.collect(slow)
        assert scsi_status(rsp) == 0
        assert bytes([0xC0, 1, 0, 0, 0, 0]) + bytes(10) not in t.devices[1].calls
        ini.scsi(bytes([0xC0, 20, 0, 0, 0, 0]), lun=2)
        assert tmf(5, 2) == 0  # LUN RESET waits for the running command, sends no status
        assert t.devices[2].resets == [ResetKind.LUN_RESET]
        assert tmf(2, 1) == 0
        assert t.devices[1].resets == [ResetKind.ABORT_TASK_SET]
        assert tmf(6, 0) == 0
        assert all(ResetKind.TARGET_RESET in d.resets for d in t.devices.values())
        assert tmf(5, 9) == 2  # LUN does not exist
        assert tmf(8, 1) == 4  # TASK REASSIGN at ERL 0
        assert ini.nop(b"x").data == b"x"
        ini.close()


def test_logout_and_nexus_lost():
    with running_target() as t:
        ini = RawInitiator(t.port)
        ini.login()
        assert scsi_status(ini.collect(ini.scsi(bytes(6), lun=1))[0]) == 0
        rsp = ini.logout()
        assert rsp.op == Op.LOGOUT_RSP and rsp.hdr.b2 == 0
        with pytest.raises((ConnectionError, OSError)):
            ini.recv()
        deadline = time.monotonic() + 2
        while not t.devices[1].lost and time.monotonic() < deadline:
            time.sleep(0.01)
        (nexus,) = t.devices[1].lost
        assert nexus.initiator == f"{ini.name},i,0x800000000001"
        assert nexus.transport_id == ini.name
        ini.close()


def test_cmdsn_window_and_text_sendtargets():
    with running_target() as t:
        ini = RawInitiator(t.port)
        ini.login()
        good = ini.cmdsn
        ini.cmdsn = (good + 1000) & ALL_ONES  # far outside the window: silently ignored
        ini.scsi(bytes(6), lun=1)
        ini.cmdsn = good
        itt = ini.scsi(bytes(6), lun=1)
        rsp, _ = ini.collect(itt)
        assert rsp.hdr.itt == itt and scsi_status(rsp) == 0
        exp, mx = rsp.hdr.words[2], rsp.hdr.words[3]
        assert exp == ini.cmdsn and (mx - exp) & ALL_ONES == 31
        data = b"SendTargets=All\0"
        bhs = pdu.encode_layout(Op.TEXT_REQ, dsl=len(data), flags=0x80, itt=ini.next_itt(),
                                ttt=ALL_ONES, cmdsn=ini.cmdsn, expstatsn=ini.expstatsn)
        ini.cmdsn += 1
        ini.send(bhs, data)
        p = ini.recv()
        assert p.op == Op.TEXT_RSP
        assert parse_keys(p.data) == [("TargetName", TEST_IQN),
                                      ("TargetAddress", f"{t.portal},1")]
        ini.close()


def test_login_errors():
    with running_target(chap=CHAP) as t:
        ini = RawInitiator(t.port)
        with pytest.raises(LoginRefused) as e:  # skipping security negotiation
            ini.login()
        assert e.value.status == 0x0201
        ini.close()
    with running_target() as t:
        ini = RawInitiator(t.port)
        with pytest.raises(LoginRefused) as e:
            ini.login(target="iqn.2026-11.org.example:nope")
        assert e.value.status == 0x0203
        ini.close()
        ini = RawInitiator(t.port)
        # SCSI command before login: the connection is closed.
        ini.scsi(bytes(6))
        with pytest.raises((ConnectionError, OSError)):
            ini.recv()
        ini.close()


def test_session_reinstatement_and_many_sessions():
    with running_target() as t:
        sessions = []
        for i in range(6):
            ini = RawInitiator(t.port, isid=b"\x80\0\0\0\0" + bytes([i + 1]))
            ini.login()
            sessions.append(ini)
        for i, ini in enumerate(sessions):
            assert ini.nop(bytes([i])).data == bytes([i])
        again = RawInitiator(t.port, isid=sessions[0].isid)
        again.login()
        with pytest.raises((ConnectionError, OSError, socket.timeout)):
            sessions[0].recv()
        assert again.nop(b"z").data == b"z"
        for ini in [*sessions, again]:
            ini.close()


def test_ipv6_portal():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        pytest.skip("no ::1")
    from iscsi_support import FakeDevice, serving

    from vtl.iscsi.config import ServerConfig, TargetConfig
    from vtl.scsi.base import DeviceSet

    cfg = ServerConfig([TargetConfig(TEST_IQN, DeviceSet({0: FakeDevice(8)}))],
                       portals=[("::1", 0)])
    with serving(cfg) as t:
        r = tool("iscsi-ls", "-s", f"iscsi://[::1]:{t.port}/")
        assert r.returncode == 0, r.stderr
        assert f"Portal:[::1]:{t.port},1" in r.stdout and "MEDIA_CHANGER" in r.stdout


def test_single_pdu_fast_paths_match_the_general_encoders():
    lun = pdu.encode_lun(1)
    assert pdu.data_in_good(65536, lun, 7, 9, 10, 41) == pdu.data_in_bhs(
        final=True, status=0, lun=lun, itt=7, statsn=9, expcmdsn=10, maxcmdsn=41, datasn=0,
        offset=0, dsl=65536)
    assert pdu.scsi_rsp_good(5, 1, 2, 3, 4) == pdu.scsi_rsp_bhs(
        status=0, itt=5, statsn=1, expcmdsn=2, maxcmdsn=3, expdatasn=4, dsl=0)


def test_struct_fast_paths_match_construct_layouts():
    bhs = pdu.data_in_bhs(final=True, status=0, lun=pdu.encode_lun(3), itt=7, statsn=9,
                          expcmdsn=10, maxcmdsn=41, datasn=2, offset=4096, dsl=512,
                          residual_flags=pdu.RESIDUAL_UNDERFLOW, residual=100)
    c = pdu.decode_layout(bhs)
    assert (c.flags, c.itt, c.ttt, c.statsn, c.datasn, c.offset, c.residual, c.dsl) == (
        0x83, 7, ALL_ONES, 9, 2, 4096, 100, 512)
    bhs = pdu.scsi_rsp_bhs(status=2, itt=5, statsn=1, expcmdsn=2, maxcmdsn=3, expdatasn=4,
                           dsl=20, residual_flags=pdu.RESIDUAL_OVERFLOW, residual=6)
    c = pdu.decode_layout(bhs)
    assert (c.status, c.itt, c.expdatasn, c.residual, c.flags, c.dsl) == (2, 5, 4, 6, 0x84, 20)
    bhs = pdu.r2t_bhs(lun=bytes(8), itt=1, ttt=2, statsn=3, expcmdsn=4, maxcmdsn=5, r2tsn=6,
                      offset=7, length=8)
    c = pdu.decode_layout(bhs)
    assert (c.ttt, c.r2tsn, c.offset, c.desired_length) == (2, 6, 7, 8)
    h = pdu.parse_bhs(struct.pack(">BBBBI8sIIII16s", 0x41, 0xA1, 0, 0, 0x00ABCDEF,
                                  pdu.encode_lun(300), 1, 2, 3, 4, b"\x12" * 16))
    assert h.immediate and h.opcode == 1 and h.dsl == 0xABCDEF and h.words[:3] == (2, 3, 4)
    assert pdu.decode_lun(h.lun) == 300
    assert pdu.crc32c(b"123456789") == 0xE3069283  # RFC 3385 check value


# ---- libiscsi's own conformance suite ---------------------------------------------------------
CU_TESTS = [
    "iSCSI.iSCSIcmdsn",
    "iSCSI.iSCSIdatasn",
    "iSCSI.iSCSITMF",
    "iSCSI.iSCSIResiduals.Read10Invalid",
    "iSCSI.iSCSIResiduals.Read10Residuals",
    "iSCSI.iSCSIResiduals.Read12Residuals",
    "iSCSI.iSCSIResiduals.Read16Residuals",
]


@pytest.mark.parametrize("name", CU_TESTS)
def test_libiscsi_test_cu_iscsi_suite(name):
    """iscsi-test-cu's iSCSI family (CmdSN window, DataSN checks, task management, read
    residuals) against the target with a tiny SBC disk behind it.

    The write-residual tests are left out: Debian's libiscsi 1.19 expects an overflowing
    write (EDTL shorter than the CDB asks) to be written partially, while this target refuses
    it with INVALID FIELD IN INFORMATION UNIT (FCP-4 option b, accepted by newer libiscsi),
    because a tape must never receive a torn block.
    """
    from iscsi_support import FakeDisk

    with running_target(devices={0: FakeDisk()}) as t:
        r = subprocess.run(["iscsi-test-cu", "-d", "-n", "-t", name,
                            f"iscsi://{t.portal}/{TEST_IQN}/0"],
                           capture_output=True, text=True, timeout=120)
        summary = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("tests")]
        assert summary, r.stdout[-2000:] + r.stderr[-2000:]
        total, ran, passed, failed = summary[0].split()[1:5]
        assert ran == total and failed == "0" and int(passed) > 0, r.stdout[-3000:]


def test_write_buffer_limit_per_connection():
    with running_target(limits=Limits(max_buffered=3 << 20)) as t:
        ini = RawInitiator(t.port)
        ini.login({"ImmediateData": "No", "InitialR2T": "Yes"})
        # Two 1 MiB writes waiting for data fit; a third 2 MiB one gets TASK SET FULL.
        ini.scsi(write6(1 << 20), lun=1, write=b"", edtl=1 << 20)
        ini.scsi(write6(1 << 20), lun=1, write=b"", edtl=1 << 20)
        itt = ini.scsi(write6(2 << 20), lun=1, write=b"", edtl=2 << 20)
        while True:
            p = ini.recv()
            if p.op == Op.SCSI_RSP:
                break
            assert p.op == Op.R2T
        assert p.hdr.itt == itt and scsi_status(p) == 0x28
        ini.close()


def test_shutdown_asks_initiators_to_log_out():
    import asyncio

    with running_target() as t:
        ini = RawInitiator(t.port)
        ini.login()
        stopping = asyncio.run_coroutine_threadsafe(t.server.stop(grace=5, logout_wait=5),
                                                    t.loop)
        p = ini.recv()
        assert p.op == Op.ASYNC and p.hdr.raw[36] == 1  # AsyncEvent 1: please log out
        assert int.from_bytes(p.hdr.raw[42:44], "big") == 5
        rsp = ini.logout()
        assert rsp.op == Op.LOGOUT_RSP and rsp.hdr.b2 == 0
        stopping.result(10)
        ini.close()
