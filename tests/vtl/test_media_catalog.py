"""The media catalog: schema, WAL, transactions, claims with stale-pid detection, events."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from vtl.catalog import SCHEMA_VERSION, MediaCatalog, pid_alive, process_start_time


def _row(barcode: str, address: int | None) -> dict:
    return {"barcode": barcode, "media": "LTO-8", "capacity": 1 << 20,
            "path": f"cartridges/{barcode}.vtape", "address": address}


def test_schema_wal_and_version(tmp_path: Path) -> None:
    cat = MediaCatalog(tmp_path / "c.sqlite", create=True)
    assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert cat.schema_version("vtl") == SCHEMA_VERSION
    assert {"cartridges", "pools", "drive_claims", "events", "schema_versions"} <= {
        r[0] for r in cat.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert [p["name"] for p in cat.pools()] == ["Default", "Scratch"]
    cat.set_schema_version("ebm", 3)  # other components version their own tables
    cat.close()
    cat = MediaCatalog(tmp_path / "c.sqlite")  # reopening migrates nothing twice
    assert cat.schema_version("ebm") == 3 and len(cat.pools()) == 2
    cat.close()


def test_a_schema_2_catalog_gains_native_bytes_and_archived_to(tmp_path: Path) -> None:
    cat = MediaCatalog(tmp_path / "c.sqlite", create=True)
    cat.insert_cartridge(_row("A00001L8", None))
    cols = [r[1] for r in cat.conn.execute("PRAGMA table_info(cartridges)")]
    assert cols[-2:] == ["native_bytes", "archived_to"]
    with cat.transaction() as conn:  # the table as schema 2 made it: neither column
        conn.execute(f"CREATE TABLE old AS SELECT {', '.join(cols[:-2])} FROM cartridges")
        conn.execute("DROP TABLE cartridges")
        conn.execute("ALTER TABLE old RENAME TO cartridges")
    cat.set_schema_version("vtl", 2)
    cat.close()
    cat = MediaCatalog(tmp_path / "c.sqlite")
    assert cat.schema_version("vtl") == SCHEMA_VERSION == 4
    assert cat.cartridge("A00001L8")["native_bytes"] is None  # counted at its next unmount
    assert cat.cartridge("A00001L8")["archived_to"] is None  # local
    cat.close()


def test_unique_address_and_rollback(tmp_path: Path) -> None:
    cat = MediaCatalog(tmp_path / "c.sqlite", create=True)
    cat.insert_cartridge(_row("A00001L8", 1024))
    cat.insert_cartridge(_row("A00002L8", None))
    cat.insert_cartridge(_row("A00003L8", None))  # many cartridges may sit in the vault
    with pytest.raises(sqlite3.IntegrityError):
        cat.insert_cartridge(_row("A00004L8", 1024))
    with pytest.raises(RuntimeError):
        with cat.transaction():
            cat.update_cartridge("A00002L8", address=1025)
            cat.log("move", "A00002L8", dst=1025)
            raise RuntimeError("boom")
    assert cat.cartridge("A00002L8")["address"] is None
    assert cat.events("A00002L8") == []
    assert set(cat.placement()) == {1024}


def test_data_version_sees_other_connections(tmp_path: Path) -> None:
    a = MediaCatalog(tmp_path / "c.sqlite", create=True)
    b = MediaCatalog(tmp_path / "c.sqlite")
    v = a.data_version()
    a.insert_cartridge(_row("A00001L8", 1024))
    assert a.data_version() == v  # own commits do not count
    v2 = b.data_version()
    a.update_cartridge("A00001L8", address=1025)
    assert b.data_version() != v2
    assert b.cartridge("A00001L8")["address"] == 1025


def test_claims_and_stale_pids(tmp_path: Path) -> None:
    cat = MediaCatalog(tmp_path / "c.sqlite", create=True)
    cat.claim(0, "me")
    assert cat.claims()[0]["owner"] == "me"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    with cat.transaction() as conn:
        conn.execute(
            "INSERT INTO drive_claims(drive, owner, pid, pid_start, host, since) "
            "VALUES (1, 'ghost', ?, NULL, ?, 'x')",
            (pid, socket.gethostname()),
        )
    assert set(cat.claims()) == {0}  # the dead one is dropped
    assert cat.conn.execute("SELECT count(*) FROM drive_claims").fetchone()[0] == 1
    me = os.getpid()
    assert pid_alive(me, process_start_time(me), socket.gethostname())
    assert not pid_alive(me, "0", socket.gethostname())  # pid reused
    cat.release(0)
    assert cat.claims() == {}


def test_a_second_open_keeps_this_process_locks_on_the_catalog(tmp_path):
    """Opening the catalog again in a process that has it open must not drop that process's
    SQLite locks (closing any descriptor of a file drops them all): else another process
    takes the catalog for unused, resets its WAL, and this process reads it as malformed."""
    path = tmp_path / "catalog.sqlite"
    MediaCatalog(path, create=True).close()
    first, second = MediaCatalog(path), MediaCatalog(path)
    probe = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\ntry:\n"
             "    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 510, 0x40000002)\n"
             "    print('got it')\nexcept OSError:\n    print('refused')")
    out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "refused"  # SQLite's shared-lock bytes are still held here
    second.close()
    first.close()
