"""SQLite backups read the live database in place, pinned by one read transaction: a writer
process committing all the while (rollback journal: it waits; WAL: it goes on into the WAL)
never reaches the bytes read, the restore equals the file as it was during the read, and a
hot journal a crashed writer left is rolled back before anything is read."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from pax_helpers import entries
from pax_helpers import run_backup as backup

from translators import sqlite as sqlite_translator
from translators.base import apply_chain
from translators.sqlite import SqliteTranslator

# Rewrites every row (so every page) with generation g = 1, 2, ... until told to stop, and
# publishes the last generation committed. A long busy timeout: it waits, never fails.
WRITER = """
import os, sqlite3, sys
db, progress, stop = sys.argv[1:]
conn = sqlite3.connect(db, timeout=60, isolation_level=None)
conn.execute("PRAGMA synchronous=OFF")
g = 0
while not os.path.exists(stop):
    g += 1
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE t SET gen=?", (g,))
    conn.execute("COMMIT")
    with open(progress + ".tmp", "w") as f:
        f.write(str(g))
    os.replace(progress + ".tmp", progress)
conn.close()
"""


def make_db(path, journal: str, rows: int = 400):
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, gen INTEGER, v BLOB)")
    conn.executemany("INSERT INTO t (gen, v) VALUES (0, ?)",
                     [(os.urandom(900),) for _ in range(rows)])
    conn.commit()
    conn.close()


def generation(progress) -> int:
    try:
        return int(progress.read_text())
    except (FileNotFoundError, ValueError):
        return 0


def wait_for(predicate, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def meta_of(archive: bytes) -> dict:
    return next(json.loads(d.read()) for e, d in entries(archive) if e.path.endswith(".json"))


def restored(t, archives, target):
    apply_chain(t, [entries(a) for a in archives], target)
    return target


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_incremental_in_place_while_a_writer_process_commits(tmp_path, monkeypatch, journal):
    db = tmp_path / "app.db"
    make_db(db, journal)
    t = SqliteTranslator()

    def no_copy(*args, **kw):  # the backup API restarts on every commit between its steps
        raise AssertionError("copied through the backup API, not read in place")

    monkeypatch.setattr(t, "_snapshot", no_copy)
    progress, stop = tmp_path / "progress", tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(progress), str(stop)])
    seen = tmp_path / "seen.db"
    real_scan = sqlite_translator.scan_pages

    def scan_then_look(*args, **kw):
        scan = real_scan(*args, **kw)  # its own open/close would drop our locks: must not
        before = generation(progress)
        time.sleep(0.3)  # the writer keeps trying to commit meanwhile
        # The live file as it is now, copied by another process (a close here would drop
        # this process's locks, the very thing under test).
        subprocess.run(["cp", str(db), str(seen)], check=True)
        if journal == "delete":
            assert generation(progress) <= before + 1  # one commit may have been in flight
        return scan

    try:
        wait_for(lambda: generation(progress) >= 3, "the writer's first commits")
        a0, r0 = backup(t, db)  # the baseline too, checked inside its read transaction
        assert meta_of(a0)["integrity_check"] == "ok"
        monkeypatch.setattr(sqlite_translator, "scan_pages", scan_then_look)
        a1, r1 = backup(t, db, r0.state)
        monkeypatch.undo()
        at_backup = generation(progress)
        wait_for(lambda: generation(progress) > at_backup + 2, "the writer to go on")
    finally:
        stop.touch()
        assert writer.wait(60) == 0
    assert meta_of(a1)["integrity_check"] == "not run (in place)"  # not the copy path
    out = restored(t, [a0, a1], tmp_path / "r") / "app.db"
    data = out.read_bytes()
    assert hashlib.sha256(data).hexdigest() == r1.state["sha256"]
    assert data == seen.read_bytes()  # the file did not change while pinned
    with sqlite3.connect(out) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        gens = conn.execute("SELECT DISTINCT gen FROM t").fetchall()
    assert len(gens) == 1 and gens[0][0] >= 3  # one consistent snapshot
    conn.close()


def test_a_hot_journal_is_rolled_back_before_the_read(tmp_path):
    db = tmp_path / "crash.db"
    make_db(db, "delete")
    t = SqliteTranslator()
    a0, r0 = backup(t, db)
    # A writer that dies mid-transaction after spilling pages into the file: a hot journal.
    crash = ("import os, sqlite3, sys\n"
             "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "c.execute('PRAGMA cache_size=2'); c.execute('BEGIN')\n"
             "c.execute('UPDATE t SET gen=99')\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", crash, str(db)], check=True)
    assert (tmp_path / "crash.db-journal").exists()
    a1, r1 = backup(t, db, r0.state)
    assert meta_of(a1)["integrity_check"] == "not run (in place)"
    assert not (tmp_path / "crash.db-journal").exists()
    out = restored(t, [a0, a1], tmp_path / "r") / "crash.db"
    with sqlite3.connect(out) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT DISTINCT gen FROM t").fetchall() == [(0,)]
    conn.close()


def test_wal_pin_holds_when_another_process_closes_its_last_connection(tmp_path, monkeypatch):
    """Another process that commits and closes while the read is pinned must not take the
    database for unused (it would checkpoint into the pinned file and delete the WAL)."""
    db = tmp_path / "w.db"
    make_db(db, "wal")
    t = SqliteTranslator()
    a0, r0 = backup(t, db)
    seen = tmp_path / "seen.db"
    commit_and_close = ("import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n"
                        "c.execute('UPDATE t SET gen=5'); c.commit(); c.close()\n")
    real_scan = sqlite_translator.scan_pages

    def scan_then_commit(*args, **kw):
        scan = real_scan(*args, **kw)
        subprocess.run([sys.executable, "-c", commit_and_close, str(db)], check=True)
        subprocess.run(["cp", str(db), str(seen)], check=True)
        return scan

    monkeypatch.setattr(sqlite_translator, "scan_pages", scan_then_commit)
    a1, r1 = backup(t, db, r0.state)
    monkeypatch.undo()
    out = restored(t, [a0, a1], tmp_path / "r") / "w.db"
    assert out.read_bytes() == seen.read_bytes()
    with sqlite3.connect(out) as conn:
        assert conn.execute("SELECT DISTINCT gen FROM t").fetchall() == [(0,)]
    conn.close()
    with sqlite3.connect(db) as conn:  # the commit itself is kept
        assert conn.execute("SELECT DISTINCT gen FROM t").fetchall() == [(5,)]
    conn.close()
