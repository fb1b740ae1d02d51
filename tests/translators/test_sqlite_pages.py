"""SQLite page-level incrementals: deltas carry only changed pages, every point of a chain
restores to the exact bytes of its snapshot (sha256 recorded at backup time), through WAL
mode, VACUUM shrinking the file and a page-size change."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest
from pax_helpers import entries
from pax_helpers import run_backup as backup

from translators import sqlite as sqlite_translator
from translators.base import TranslatorError, apply_chain
from translators.page_delta import HEADER_SIZE
from translators.sqlite import SqliteTranslator, delta_member


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def make_db(path, rows=3000, wal=True):
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(os.urandom(200),) for _ in range(rows)])
    conn.commit()
    return conn


def restore_chain(t, archives, target):
    apply_chain(t, [entries(a) for a in archives], target)
    return target


def check_restored(path, expected_sha):
    assert sha(path) == expected_sha
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_chain_restores_each_point_byte_exact(tmp_path):
    db = tmp_path / "app.db"
    conn = make_db(db)  # WAL mode, writes stay in the WAL: the snapshot must include them
    t = SqliteTranslator()
    a0, r0 = backup(t, db)
    assert r0.level_hint == "baseline"
    pages = r0.state["page_count"]
    conn.execute("UPDATE t SET v=? WHERE id IN (10, 11)", (os.urandom(200),))
    conn.commit()
    a1, r1 = backup(t, db, r0.state)
    assert r1.level_hint == "incremental"
    delta = [e for e in r1.entries if e.path == delta_member("app.db", 1)]
    assert delta and delta[0].size < HEADER_SIZE + 6 * (4 + r0.state["page_size"])
    assert len(a1) < len(a0) / 5
    conn.execute("DELETE FROM t WHERE id > 500")
    conn.commit()
    conn.execute("VACUUM")  # shrinks the file
    a2, r2 = backup(t, db, r1.state)
    assert r2.level_hint == "incremental" and r2.state["page_count"] < pages
    chain = [a0, a1, a2]
    states = [r0.state, r1.state, r2.state]
    for n in range(3):
        out = restore_chain(t, chain[: n + 1], tmp_path / f"r{n}")
        check_restored(out / "app.db", states[n]["sha256"])
    # the EBM's own way: one restore call over the whole chain's members
    one = tmp_path / "one"
    t.restore((pair for a in chain for pair in entries(a)), one)
    check_restored(one / "app.db", r2.state["sha256"])
    assert sorted(os.listdir(one)) == ["app.db"]
    conn.close()


def test_page_size_change_makes_a_baseline(tmp_path):
    db = tmp_path / "p.db"
    conn = make_db(db, rows=500, wal=False)
    t = SqliteTranslator()
    _, r0 = backup(t, db)
    conn.execute("PRAGMA page_size=8192")
    conn.execute("VACUUM")
    conn.close()
    a1, r1 = backup(t, db, r0.state)
    assert r1.level_hint == "baseline" and r1.state["page_size"] == 8192
    out = restore_chain(t, [a1], tmp_path / "r")
    check_restored(out / "p.db", r1.state["sha256"])


def test_delta_refuses_the_wrong_base_and_tar_lists_the_members(tmp_path):
    db = tmp_path / "x.db"
    conn = make_db(db, rows=300)
    t = SqliteTranslator()
    a0, r0 = backup(t, db)
    conn.execute("INSERT INTO t (v) VALUES (x'00')")
    conn.commit()
    a1, r1 = backup(t, db, r0.state)
    conn.execute("INSERT INTO t (v) VALUES (x'01')")
    conn.commit()
    a2, _ = backup(t, db, r1.state)
    with pytest.raises(TranslatorError, match="does not apply"):
        t.restore((p for a in (a0, a2) for p in entries(a)), tmp_path / "bad")
    assert not (tmp_path / "bad" / "x.db").exists()
    with pytest.raises(TranslatorError, match="select 'x.db\\*'"):
        t.restore((p for p in entries(a0) if p[0].path == "x.db"), tmp_path / "nometa")
    with pytest.raises(TranslatorError, match="without the database"):
        t.restore(entries(a1), tmp_path / "alone")
    (tmp_path / "a1.tar").write_bytes(a1)
    names = subprocess.run(["tar", "-tf", str(tmp_path / "a1.tar")], capture_output=True,
                           text=True, check=True).stdout.split()
    assert names == ["x.db.ebm-sqlite.json", "x.db.ebm-sqlite-delta.000001"]
    conn.close()


def test_one_percent_of_the_pages_gives_a_delta_near_one_percent(tmp_path):
    db = tmp_path / "big.db"
    conn = make_db(db, rows=3000, wal=False)  # 200-byte rows: ~170 pages
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(os.urandom(1000),) for _ in range(4000)])
    conn.commit()
    t = SqliteTranslator()
    a0, r0 = backup(t, db)
    pages = r0.state["page_count"]
    rows = conn.execute("SELECT max(id) FROM t").fetchone()[0]
    for i in range(pages // 100):
        conn.execute("UPDATE t SET v=? WHERE id=?", (os.urandom(1000), rows - 40 * i))
    conn.commit()
    a1, r1 = backup(t, db, r0.state)
    size = r0.state["size"]
    assert len(a1) < 0.02 * size, (len(a1), size)  # ~1% of pages + page 1 + metadata
    check_restored(restore_chain(t, [a0, a1], tmp_path / "r") / "big.db", r1.state["sha256"])
    conn.close()


def test_wal_incremental_reads_the_live_file_pinned_against_writers(tmp_path, monkeypatch):
    """A WAL-mode incremental reads the database file in place, inside a read transaction:
    a commit and a checkpoint attempt while it hashes must not reach its bytes."""
    db = tmp_path / "live.db"
    conn = make_db(db)
    t = SqliteTranslator()
    a0, r0 = backup(t, db)
    conn.execute("UPDATE t SET v=? WHERE id=7", (b"before",))
    conn.commit()
    real_scan = sqlite_translator.scan_pages

    def scan_while_writing(*args, **kw):
        conn.execute("UPDATE t SET v=? WHERE id=7", (b"after",))
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # may not write the pinned file
        return real_scan(*args, **kw)

    monkeypatch.setattr(sqlite_translator, "scan_pages", scan_while_writing)
    a1, r1 = backup(t, db, r0.state)
    monkeypatch.undo()
    meta = next(json.loads(d.read()) for e, d in entries(a1) if e.path.endswith(".json"))
    assert meta["kind"] == "delta" and meta["integrity_check"] == "not run (in place)"
    a2, r2 = backup(t, db, r1.state)
    for n, chain, want in ((1, [a0, a1], b"before"), (2, [a0, a1, a2], b"after")):
        out = restore_chain(t, chain, tmp_path / f"r{n}") / "live.db"
        check_restored(out, (r1, r2)[n - 1].state["sha256"])
        with sqlite3.connect(out) as restored:
            assert restored.execute("SELECT v FROM t WHERE id=7").fetchone()[0] == want
    conn.close()


def test_restore_over_an_older_copy_drops_its_hot_journal(tmp_path):
    """A hot journal left beside the name restored to belongs to the file replaced: SQLite
    would roll its pages into the restored database on the first open (malformed)."""
    db = tmp_path / "app.db"
    make_db(db, rows=300, wal=False).close()
    archive, result = backup(SqliteTranslator(), db)
    target = tmp_path / "r"
    target.mkdir()
    make_db(target / "app.db", rows=900, wal=False).close()
    crash = ("import os, sqlite3, sys\n"
             "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "c.execute('PRAGMA cache_size=2'); c.execute('BEGIN')\n"
             "c.execute('DELETE FROM t WHERE id > 10')\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", crash, str(target / "app.db")], check=True)
    assert (target / "app.db-journal").exists()
    restore_chain(SqliteTranslator(), [archive], target)
    assert os.listdir(target) == ["app.db"]
    check_restored(target / "app.db", result.state["sha256"])


def test_block_hashes_skip_unchanged_blocks_and_find_the_same_pages(tmp_path):
    """Pages of a 64 KiB block whose hash equals the parent's keep the parent's page hashes;
    the result equals hashing every page (a parent state without block hashes)."""
    from translators.sqlite import ParentHashes, scan_pages

    path = tmp_path / "f"
    path.write_bytes(os.urandom(70 * 4096))
    fd = os.open(path, os.O_RDWR)
    try:
        base = scan_pages(fd, 4096, None)
        for page in (3, 40, 41):
            os.pwrite(fd, b"changed", page * 4096 + 9)
        os.pwrite(fd, os.urandom(5 * 4096), 70 * 4096)  # grows past a partial block
        by_block = scan_pages(fd, 4096, ParentHashes(bytes(base.hashes), bytes(base.blocks)))
        by_page = scan_pages(fd, 4096, ParentHashes(bytes(base.hashes), None))
    finally:
        os.close(fd)
    assert list(by_block.changed) == [4, 41, 42, 71, 72, 73, 74, 75] == list(by_page.changed)
    assert by_block.hashes == by_page.hashes and by_block.blocks == by_page.blocks
    assert by_block.sha256 == by_page.sha256 == sha(path)
