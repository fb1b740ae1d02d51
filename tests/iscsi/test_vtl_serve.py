"""`vtl serve` as a subprocess against real clients: libiscsi tools and a raw initiator
driving the real changer and drive models (load, write, filemark, rewind, read back)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from iscsi_support import RawInitiator, pattern, scsi_status, sense_of
from served_library import Served, free_port, start, vtl

pytestmark = pytest.mark.e2e

IQN = "iqn.2026-11.org.vtl-ebm:servetest"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def libdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve") / "lib"
    vtl(root, "init", "--drives", "2", "--slots", "6", "--mailslots", "1", "--iqn", IQN)
    vtl(root, "cartridge", "create", "SRV001L8-SRV003L8", "--capacity", "64MiB")
    return root


@pytest.fixture(scope="module")
def served(libdir: Path) -> Iterator[Served]:
    s = start(libdir)
    yield s
    assert s.stop() == 0
    assert "Traceback" not in s.stderr()


def tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


def test_banner_shows_target_and_lun_layout(served: Served):
    b = served.banner
    assert f"target: {IQN}" in b and f"portal: {served.portal}" in b
    assert "LUN 0: changer, IBM 3573-TL" in b
    assert "LUN 1: drive 0 (element 256), IBM ULT3580-TD8" in b
    assert "LUN 2: drive 1 (element 257)" in b


def test_iscsi_ls_and_inq_see_changer_and_drives(served: Served):
    r = tool("iscsi-ls", "-s", f"iscsi://{served.portal}/")
    assert r.returncode == 0, r.stderr
    assert f"Target:{IQN} Portal:{served.portal},1" in r.stdout
    assert "Lun:0    Type:MEDIA_CHANGER" in r.stdout
    assert "Lun:1    Type:SEQUENTIAL_ACCESS" in r.stdout
    assert "Lun:2    Type:SEQUENTIAL_ACCESS" in r.stdout
    r = tool("iscsi-inq", f"iscsi://{served.portal}/{IQN}/0")
    assert r.returncode == 0, r.stderr
    assert "Peripheral Device Type:MEDIA_CHANGER" in r.stdout
    assert "Vendor:IBM" in r.stdout and "Product:3573-TL" in r.stdout
    r = tool("iscsi-inq", f"iscsi://{served.portal}/{IQN}/2")
    assert "Peripheral Device Type:SEQUENTIAL_ACCESS" in r.stdout
    assert "Product:ULT3580-TD8" in r.stdout
    r = tool("iscsi-inq", "-e", "1", "-c", "0", f"iscsi://{served.portal}/{IQN}/1")
    assert r.returncode == 0 and "SUPPORTED_VPD_PAGES" in r.stdout, r.stderr


def test_second_server_refused(served: Served):
    r = vtl(served.root, "serve", "--portal", f"127.0.0.1:{free_port()}", check=False)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "already serving" in lines[0], r.stderr
    assert str(served.proc.pid) in lines[0]


def _until_good(ini: RawInitiator, cdb: bytes, lun: int) -> None:
    for _ in range(10):
        rsp, _ = ini.collect(ini.scsi(cdb, lun=lun))
        if scsi_status(rsp) == 0:
            return
        assert sense_of(rsp)[2] & 0xF in (2, 6), sense_of(rsp).hex()  # NOT READY / UA
        time.sleep(0.1)
    raise AssertionError("device never became ready")


def test_load_write_read_back_through_real_models(served: Served):
    ini = RawInitiator(served.port, timeout=20)
    ini.login({"MaxRecvDataSegmentLength": "262144"}, target=IQN)
    # MOVE MEDIUM slot 1 (1024) -> drive 0 (256) on the changer.
    move = bytes([0xA5, 0, 0, 1, 0x04, 0x00, 0x01, 0x00, 0, 0, 0, 0])
    _until_good(ini, bytes(6), 0)
    rsp, _ = ini.collect(ini.scsi(move, lun=0))
    assert scsi_status(rsp) == 0, sense_of(rsp).hex()
    _until_good(ini, bytes(6), 1)
    blocks = [pattern(262144), pattern(65536)[::-1], pattern(1 << 20)]
    for b in blocks:
        rsp = ini.write(bytes([0x0A, 0]) + len(b).to_bytes(3, "big") + b"\0", b, lun=1)
        assert scsi_status(rsp) == 0, sense_of(rsp).hex()
    rsp, _ = ini.collect(ini.scsi(bytes([0x10, 0, 0, 0, 1, 0]), lun=1))  # WRITE FILEMARKS 1
    assert scsi_status(rsp) == 0
    rsp, _ = ini.collect(ini.scsi(bytes([0x01, 0, 0, 0, 0, 0]), lun=1))  # REWIND
    assert scsi_status(rsp) == 0
    for b in blocks:
        n = 1 << 20
        itt = ini.scsi(bytes([0x08, 0]) + n.to_bytes(3, "big") + b"\0", lun=1, read=n)
        rsp, data = ini.collect(itt)
        # Variable mode, a shorter block than asked: CHECK CONDITION with ILI unless exact.
        assert data == b
        if len(b) < n:
            assert scsi_status(rsp) == 2 and sense_of(rsp)[2] & 0x20
        else:
            assert scsi_status(rsp) == 0
    # Reading on hits the filemark.
    itt = ini.scsi(bytes([0x08, 0, 0, 0x10, 0, 0]), lun=1, read=4096)
    rsp, data = ini.collect(itt)
    assert scsi_status(rsp) == 2 and sense_of(rsp)[2] & 0x80 and data == b""
    assert ini.logout().hdr.b2 == 0
    ini.close()


def test_chap_acl_and_sigterm_clean_stop(tmp_path: Path):
    root = tmp_path / "lib"
    vtl(root, "init", "--drives", "1", "--slots", "2", "--iqn", IQN)
    vtl(root, "cartridge", "create", "CHP001L8", "--capacity", "64MiB")
    r = vtl(root, "serve", "--portal", "127.0.0.1:99999", check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "invalid portal" in r.stderr
    v6 = _has_ipv6_loopback()
    v6_port = free_port()
    extra = ["--portal", f"[::1]:{v6_port}"] if v6 else []
    s = start(root, *extra, "--chap-user", "backup", "--chap-secret", "backup-secret-1",
              "--mutual-chap-user", "vtl", "--mutual-chap-secret", "vtl-secret-0002",
              "--allow-initiator", "iqn.2026-11.org.example:host1")
    try:
        assert "auth: CHAP + mutual CHAP" in s.banner
        host1 = ["-i", "iqn.2026-11.org.example:host1"]
        url = f"{s.portal}/{IQN}/0"
        r = tool("iscsi-inq", *host1, f"iscsi://{url}")
        assert r.returncode != 0 and "Authentication failure" in r.stderr
        r = tool("iscsi-inq", f"iscsi://backup%backup-secret-1@{url}")
        assert r.returncode != 0 and "Authorization failure" in r.stderr
        r = tool("iscsi-inq", *host1, f"iscsi://backup%backup-secret-1@{url}"
                 "?target_user=vtl&target_password=vtl-secret-0002")
        assert r.returncode == 0 and "MEDIA_CHANGER" in r.stdout, r.stderr
        if v6:
            assert f"[::1]:{v6_port}" in s.banner
            r = tool("iscsi-ls", "-s", *host1, f"iscsi://backup%backup-secret-1@[::1]:{v6_port}/")
            assert r.returncode == 0 and "MEDIA_CHANGER" in r.stdout, r.stderr
        # A logged-in session is open when SIGTERM arrives: still a clean exit 0.
        ini = RawInitiator(s.port)
        with pytest.raises(Exception):  # noqa: B017 - CHAP is required, plain login refused
            ini.login(target=IQN)
        ini.close()
    finally:
        code = s.stop()
    assert code == 0
    err = s.stderr()
    assert "Traceback" not in err and "stopped" in err
    assert not (root / "serve.lock").read_text().strip()  # pid cleared on exit
    # The library is usable again right away.
    s2 = start(root)
    assert s2.stop() == 0


def test_reserve_conflict_between_sessions_and_release_on_logout(served: Served):
    """Two initiators on drive 1: RESERVE(6) by one gives the other RESERVATION CONFLICT;
    the holder's logout is an I_T nexus loss, which frees the drive."""
    a = RawInitiator(served.port, name="iqn.2026-11.org.example:host-a", timeout=20)
    b = RawInitiator(served.port, name="iqn.2026-11.org.example:host-b", timeout=20)
    a.login(target=IQN)
    b.login(target=IQN)
    for ini in (a, b):  # consume the power-on UNIT ATTENTION (the drive may be empty)
        for _ in range(3):
            ini.collect(ini.scsi(bytes(6), lun=2))
    rsp, _ = a.collect(a.scsi(bytes([0x16, 0, 0, 0, 0, 0]), lun=2))  # RESERVE(6)
    assert scsi_status(rsp) == 0, sense_of(rsp).hex()
    rsp, _ = b.collect(b.scsi(bytes([0x16, 0, 0, 0, 0, 0]), lun=2))
    assert scsi_status(rsp) == 0x18  # RESERVATION CONFLICT
    assert a.logout().hdr.b2 == 0
    a.close()
    deadline = time.monotonic() + 5
    while True:
        rsp, _ = b.collect(b.scsi(bytes([0x16, 0, 0, 0, 0, 0]), lun=2))
        if scsi_status(rsp) == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert scsi_status(rsp) == 0
    rsp, _ = b.collect(b.scsi(bytes([0x17, 0, 0, 0, 0, 0]), lun=2))  # RELEASE(6)
    assert scsi_status(rsp) == 0
    b.logout()
    b.close()
