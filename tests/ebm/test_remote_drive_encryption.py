"""The drive's own encryption on the remote path: `ebm ... --drive-key-file` against `vtl serve`.

The EBM hands the served drive a key (SECURITY PROTOCOL OUT), the cartridge file then holds
no plaintext, restore with the key gives the tree back, restore without it is refused in one
line, the drive holds no key after the job (data encryption status page), and a read the
drive refuses (DATA PROTECT 74/01) is named as such by verify. A drive
without the capability is refused before anything moves (a stub transport).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ebm_helpers import REPO, manifest, write_tree
from served_library import Served, start, vtl

from ebm.catalog import Catalog
from ebm.manager import Ebm
from ebm.remote.drive_encryption import (
    DriveEncryptionError,
    aes_algorithm,
    encryption_status,
    read_drive_key,
)
from ebm.remote.ebm_host import RemoteSpec
from ebm.remote.initiator import STATUS_CHECK_CONDITION, ScsiResult
from ebm.remote.scsi_client import TapeDevice
from ebm.verify import verify_backup

IQN = "iqn.2026-12.org.vtl-ebm:drive-encryption"
MARKER = b"PLAINTEXT-MARKER-drive-encryption-0123456789"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("lib")
    vtl(root, "init", "--drives", "1", "--slots", "4", "--iqn", IQN)
    vtl(root, "cartridge", "create", "E00001L8", "--capacity", "8MiB")
    vtl(root, "cartridge", "create", "E00002L8", "--capacity", "8MiB")
    s = start(root)
    yield s
    s.stop()


def ebm(served: Served, catalog: Path, *args: str, check: bool = True
        ) -> subprocess.CompletedProcess:
    url = f"iscsi://127.0.0.1:{served.port}/{IQN}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "ebm", "--library", url, "--catalog",
                        str(catalog), *args], capture_output=True, text=True, timeout=120,
                       env=env, cwd=str(REPO))
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_backup_with_the_drives_encryption(served: Served, tmp_path: Path):
    src, cat = tmp_path / "src", tmp_path / "catalog"
    write_tree(src, {"secret.txt": MARKER * 200, "sub/more.txt": MARKER + b"\n"})
    key = tmp_path / "drive.key"
    key.write_text(os.urandom(32).hex() + "\n")
    ebm(served, cat, "pool", "create", "enc")
    ebm(served, cat, "pool", "add", "enc", "E00001L8")
    ebm(served, cat, "backup", "docs", "--source", str(src), "--pool", "enc",
        "--no-compress", "--drive-key-file", str(key))

    tapes = [p for p in served.root.rglob("*") if p.is_file() and "E00001L8" in p.name]
    assert tapes and all(MARKER not in p.read_bytes() for p in tapes)
    catalog = (cat / "catalog.sqlite").read_bytes()
    drive_key = read_drive_key(key)
    assert drive_key.signature.encode() in catalog  # the key's signature, never the key
    assert drive_key.key not in catalog and key.read_text().strip().encode() not in catalog

    ok = ebm(served, cat, "restore", "docs", "--to", str(tmp_path / "out"),
             "--drive-key-file", str(key))
    assert ok.returncode == 0
    assert manifest(tmp_path / "out") == manifest(src)

    refused = ebm(served, cat, "restore", "docs", "--to", str(tmp_path / "none"), check=False)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "drive's encryption" in lines[0] and "--drive-key-file" in lines[0]
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())

    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    wrong = ebm(served, cat, "verify", "docs", "--drive-key-file", str(other), check=False)
    assert wrong.returncode == 2 and "is not the key" in wrong.stderr

    spec = RemoteSpec.from_options(f"iscsi://127.0.0.1:{served.port}/{IQN}")
    lib = spec.open_library()
    try:
        assert encryption_status(lib.bays[0].tape) == (0, 0)  # the key left the drive
    finally:
        lib.close()

    # past the catalog's check (a rebuilt catalog has no signature): the drive's refusal
    with contextlib.closing(Ebm(cat, remote=spec)) as api:
        b = api.catalog.backups("docs", states=["done"])[-1]
        result = verify_backup(api.catalog, api.library, b, None)
    assert not result.ok and "cannot decrypt it (it holds no key)" in result.problems[0]


def test_schedule_consolidate_and_rebuild_take_the_drives_key(served: Served, tmp_path: Path):
    """The drive's key reaches every job that reads or writes: a schedule keeps the key
    file's path (never the key), a synthetic full reads and writes with it, and a catalog
    rebuilt from the tapes reads them with it and still asks for it afterwards."""
    src, cat = tmp_path / "src", tmp_path / "catalog"
    write_tree(src, {"a.txt": MARKER * 50, "b/c.txt": b"first\n"})
    key = tmp_path / "drive.key"
    key.write_bytes(os.urandom(32))
    ebm(served, cat, "pool", "create", "sched")
    ebm(served, cat, "pool", "add", "sched", "E00002L8")
    ebm(served, cat, "backup", "app", "--source", str(src), "--pool", "sched",
        "--drive-key-file", str(key))

    refused = ebm(served, cat, "schedule", "add", "app", "hourly", check=False)
    assert refused.returncode == 2 and "give --drive-key-file" in refused.stderr
    ebm(served, cat, "schedule", "add", "app", "hourly", "--drive-key-file", str(key))
    assert key.read_bytes() not in (cat / "catalog.sqlite").read_bytes()
    (src / "b" / "c.txt").write_bytes(b"second, scheduled\n")
    c = Catalog.for_root(cat)
    c.db.execute("UPDATE ebm_schedules SET next_run=?", (time.time() - 1,))
    c.close()
    ebm(served, cat, "scheduler", "--once")
    c = Catalog.for_root(cat)
    assert c.schedules()[0]["last_result"] == "ok"
    done = c.backups("app", states=["done"])
    assert [b.level for b in done] == ["full", "incr"]
    assert all(b.options["drive_encryption"]["key_signature"] == read_drive_key(key).signature
               for b in done)
    c.close()

    no_key = ebm(served, cat, "consolidate", "app", check=False)
    assert no_key.returncode == 2 and "--drive-key-file" in no_key.stderr
    full = json.loads(ebm(served, cat, "--json", "consolidate", "app", "--drive-key-file",
                          str(key)).stdout)
    assert full["level"] == "full" and full["options"]["drive_encryption"]
    assert all(MARKER not in p.read_bytes()
               for p in served.root.rglob("*") if p.is_file() and "E00002L8" in p.name)

    rebuilt = tmp_path / "rebuilt"
    r = json.loads(ebm(served, rebuilt, "--json", "catalog", "rebuild", "--barcode",
                       "E00002L8", "--drive-key-file", str(key)).stdout)
    assert len(r["backups"]) == 3, r
    asks = ebm(served, rebuilt, "restore", full["uuid"], "--to", str(tmp_path / "x"),
               check=False)
    assert asks.returncode == 2 and "drive's encryption" in asks.stderr
    ebm(served, rebuilt, "restore", full["uuid"], "--to", str(tmp_path / "out"),
        "--drive-key-file", str(key))
    assert manifest(tmp_path / "out") == manifest(src)


class _NoSecurityProtocol:
    """A drive that answers SECURITY PROTOCOL IN with ILLEGAL REQUEST, INVALID OPCODE."""

    def execute(self, lun, cdb, *, data_out=None, read_len=0, timeout=None, retry=None):
        sense = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00])
        return ScsiResult(STATUS_CHECK_CONDITION, b"", sense)


def test_a_drive_without_encryption_is_refused():
    with pytest.raises(DriveEncryptionError, match="does not offer data encryption"):
        aes_algorithm(TapeDevice(_NoSecurityProtocol(), 1, "drive 0"))


def test_a_key_file_that_is_no_key(tmp_path: Path):
    bad = tmp_path / "k"
    bad.write_text("not a key\n")
    with pytest.raises(DriveEncryptionError, match="holds no AES-256 key"):
        read_drive_key(bad)
