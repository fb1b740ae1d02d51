"""Per-initiator ACLs (``vtl target acl``), live sessions (``vtl target sessions``) and ACL
changes applied to a running ``vtl serve`` (SIGHUP): a session that loses access is asked to
log out (Async Message, AsyncEvent 1) and then dropped; one that gains LUNs sees them."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from iscsi_support import LoginRefused, RawInitiator, scsi_status, sense_of
from served_library import start, vtl

from vtl.iscsi.pdu import Op

IQN = "iqn.2026-11.org.vtl-ebm:acltest"
HOST_A = "iqn.2026-11.org.example:host-a"
HOST_B = "iqn.2026-11.org.example:host-b"
HOST_C = "iqn.2026-11.org.example:host-c"


def report_luns(ini: RawInitiator) -> list[int]:
    rsp, data = ini.collect(ini.scsi(bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]), lun=0,
                                     read=256))
    assert scsi_status(rsp) == 0, sense_of(rsp).hex()
    n = int.from_bytes(data[:4], "big") // 8
    return [int.from_bytes(data[8 + 8 * i: 10 + 8 * i], "big") & 0x3FFF for i in range(n)]


def sessions(root: Path) -> list[dict]:
    return json.loads(vtl(root, "target", "sessions", "--json").stdout)


def wait_for(check, seconds: float = 5.0):
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    vtl(root, "init", "--drives", "2", "--slots", "4", "--mailslots", "1", "--iqn", IQN)
    return root


def test_acl_add_list_remove_in_library_toml(root: Path, tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_text("host-a-secret-01\n")
    r = vtl(root, "target", "acl", "add", HOST_A, "--luns", "0-1", "--chap-user", "host-a",
            "--chap-secret-file", str(secret))
    assert "added ACL" in r.stdout and "when vtl serve starts" in r.stdout
    toml = (root / "library.toml").read_text()
    assert f'[acl."{HOST_A}"]' in toml and "luns = [0, 1]" in toml
    rows = json.loads(vtl(root, "target", "acl", "list", "--json").stdout)
    assert rows == [{"initiator": HOST_A, "chap_user": "host-a", "mutual_user": None,
                     "luns": [0, 1]}]
    assert "host-a-secret" not in vtl(root, "target", "acl", "list").stdout
    for bad in (["add", "not-an-iqn"], ["add", HOST_B, "--luns", "x"],
                ["add", HOST_B, "--chap-user", "u"], ["remove", HOST_B]):
        r = vtl(root, "target", "acl", *bad, check=False)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    vtl(root, "target", "acl", "remove", HOST_A)
    assert "no ACLs" in vtl(root, "target", "acl", "list").stdout
    r = vtl(root, "target", "sessions", check=False)
    assert r.returncode == 2 and "no 'vtl serve' is running" in r.stderr


def test_luns_sessions_and_live_changes(root: Path):
    vtl(root, "target", "acl", "add", HOST_A, "--luns", "0,1")
    vtl(root, "target", "acl", "add", HOST_C)
    s = start(root)
    try:
        assert "acls: 2 initiator(s)" in s.banner
        with pytest.raises(LoginRefused):  # no ACL: refused (authorization failure)
            RawInitiator(s.port, name=HOST_B).login(target=IQN)
        a = RawInitiator(s.port, name=HOST_A, timeout=10)
        a.login(target=IQN)
        assert report_luns(a) == [0, 1]
        rsp, _ = a.collect(a.scsi(bytes(6), lun=2))  # drive 1: not this initiator's
        assert scsi_status(rsp) == 2 and sense_of(rsp)[12] == 0x25  # LUN NOT SUPPORTED
        rows = wait_for(lambda: [r for r in sessions(root) if r["commands"] >= 2])
        (row,) = rows
        assert row["initiator"] == HOST_A and row["luns"] == [0, 1]
        assert row["bytes_in"] > 0 and row["bytes_out"] > 0
        assert row["connections"][0]["address"].startswith("127.0.0.1:")
        human = vtl(root, "target", "sessions").stdout
        assert HOST_A in human and "LUNs 0,1" in human
        # More LUNs: applied to the live session at once.
        assert "applied to the running vtl serve" in vtl(
            root, "target", "acl", "add", HOST_A).stdout
        assert wait_for(lambda: sessions(root)[0]["luns"] == [0, 1, 2])
        assert report_luns(a) == [0, 1, 2]
        # Access taken away: an Async Message asks for the logout, then the connection goes.
        vtl(root, "target", "acl", "remove", HOST_A)
        p = a.recv()
        assert p.hdr.opcode == Op.ASYNC and p.hdr.raw[36] == 1  # AsyncEvent 1: logout
        assert a.logout().hdr.b2 == 0
        a.close()
        assert wait_for(lambda: sessions(root) == [])
        with pytest.raises(LoginRefused):
            RawInitiator(s.port, name=HOST_A).login(target=IQN)
        # A broken library.toml on reload keeps the ACLs in force.
        toml = root / "library.toml"
        good = toml.read_text()
        toml.write_text(good + "\n[acl.oops\n")
        s.proc.send_signal(1)
        assert wait_for(lambda: "reload refused" in s.stderr())
        toml.write_text(good)
        c = RawInitiator(s.port, name=HOST_C)
        c.login(target=IQN)
        assert report_luns(c) == [0, 1, 2]
        c.close()
    finally:
        assert s.stop() == 0
    assert "Traceback" not in s.stderr()
    assert not (root / "serve-status.json").exists()


@pytest.mark.e2e
def test_iscsi_ls_with_per_initiator_chap(root: Path, tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_text("host-c-secret-01\n")
    mutual = tmp_path / "mutual"
    mutual.write_text("target-secret-02\n")
    vtl(root, "target", "acl", "add", HOST_C, "--luns", "0,2", "--chap-user", "host-c",
        "--chap-secret-file", str(secret), "--mutual-user", "vtl",
        "--mutual-secret-file", str(mutual))
    s = start(root)
    try:
        def ls(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["iscsi-ls", "-s", *args], capture_output=True, text=True,
                                  timeout=30)

        url = f"{s.portal}/"
        r = ls("-i", HOST_C, f"iscsi://host-c%wrong-secret-00@{url}")
        assert r.returncode != 0
        r = ls("-i", HOST_C, f"iscsi://host-c%host-c-secret-01@{url}"
               "?target_user=vtl&target_password=target-secret-02")
        assert r.returncode == 0, r.stderr
        assert "Lun:0" in r.stdout and "Lun:2" in r.stdout and "Lun:1" not in r.stdout
    finally:
        assert s.stop() == 0


def test_a_secret_file_others_may_read_gets_a_warning(root: Path, tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_text("host-a-secret-01\n")
    secret.chmod(0o644)
    r = vtl(root, "target", "acl", "add", HOST_A, "--chap-user", "a", "--chap-secret-file",
            str(secret))
    assert "warning: chap secret file" in r.stderr and "chmod 600" in r.stderr
    secret.chmod(0o600)
    r = vtl(root, "target", "acl", "add", HOST_A, "--chap-user", "a", "--chap-secret-file",
            str(secret))
    assert r.stderr == ""


def test_a_new_chap_secret_keeps_the_live_session(root: Path, tmp_path: Path):
    """Over the project's own initiator (ebm.remote.initiator, CHAP as RFC 7143 12.1.3): a
    changed secret applies to new logins only; removing the ACL logs the session out."""
    from ebm.remote.initiator import Chap, Initiator, LoginError, TransportError

    def secret_file(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text + "\n")
        path.chmod(0o600)
        return str(path)

    def login(secret: str) -> Initiator:
        return Initiator("127.0.0.1", s.port, IQN, initiator_name=HOST_A,
                         chap_auth=Chap("host-a", secret), reconnect_attempts=0,
                         timeout=10).connect()

    def ready(ini: Initiator) -> bool:
        """TEST UNIT READY on the changer passes (after the UNIT ATTENTION of a new nexus)."""
        for _ in range(3):
            r = ini.execute(0, bytes(6))
            if r.status == 0:
                return True
            assert r.sense[2] & 0x0F == 6, r.sense.hex()
        return False

    def refused(secret: str) -> bool:
        try:
            login(secret).close()
        except LoginError:
            return True
        return False

    vtl(root, "target", "acl", "add", HOST_A, "--chap-user", "host-a", "--chap-secret-file",
        secret_file("old", "host-a-secret-01"))
    vtl(root, "target", "acl", "add", HOST_C)  # with no ACL left, anyone may log in
    s = start(root)
    try:
        live = login("host-a-secret-01")
        assert ready(live)
        assert "applied to the running vtl serve" in vtl(
            root, "target", "acl", "add", HOST_A, "--chap-user", "host-a",
            "--chap-secret-file", secret_file("new", "host-a-secret-02")).stdout
        assert wait_for(lambda: refused("host-a-secret-01"))  # the reload has happened
        fresh = login("host-a-secret-02")
        assert ready(fresh)
        assert ready(live) and live.reconnects == 0
        # the status file is rewritten every second (vtl/serve_status.py): poll, not a snapshot
        assert wait_for(lambda: len(sessions(root)) == 2), sessions(root)
        # The ACL removed: both sessions asked to leave, then their connections closed.
        vtl(root, "target", "acl", "remove", HOST_A)

        def gone(ini: Initiator) -> bool:
            try:
                ini.execute(0, bytes(6), timeout=2)
            except TransportError:
                return True
            return False
        assert wait_for(lambda: gone(live), 10) and wait_for(lambda: gone(fresh), 10)
        assert wait_for(lambda: sessions(root) == [], 10)
        live.close()
        fresh.close()
    finally:
        assert s.stop() == 0
    assert "Traceback" not in s.stderr()
