"""SQLite and stream translators: real SQLite under concurrent writes, real GNU tar, pipes."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import threading

import pytest
from pax_helpers import run_backup

from tape_formats.archive import PaxReader
from translators.base import TranslatorError, load_translator
from translators.sqlite import SqliteTranslator
from translators.stream import StreamTranslator


def _backup_pipe(t, data, state=None):
    """Back up ``data`` as it arrives through a pipe (size unknown: the translator makes parts)."""
    r, w = os.pipe()

    def feed():
        with os.fdopen(w, "wb") as f:
            f.write(data)

    th = threading.Thread(target=feed)
    th.start()
    try:
        return run_backup(t, f"/proc/self/fd/{r}", state)
    finally:
        th.join()
        os.close(r)


def make_db(path, rows=2000):
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT, blob BLOB)")
    conn.executemany("INSERT INTO t (payload, blob) VALUES (?, ?)",
                     [(f"row {i}", os.urandom(50)) for i in range(rows)])
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    return conn


def test_sqlite_snapshot_of_a_live_database_restores_consistently(tmp_path):
    db = tmp_path / "app.db"
    conn = make_db(db)
    stop = threading.Event()
    writes = []

    def writer():
        w = sqlite3.connect(db, timeout=10)
        i = 0
        while not stop.is_set():
            with w:
                w.execute("INSERT INTO t (payload, blob) VALUES (?, ?)", (f"live {i}", b"x"))
                w.execute("UPDATE t SET payload = ? WHERE id = 1", (f"v{i}",))
            writes.append(i)
            i += 1
        w.close()

    th = threading.Thread(target=writer)
    th.start()
    try:
        archive, result = run_backup(SqliteTranslator(), db)
    finally:
        stop.set()
        th.join()
    conn.close()
    assert [e.path for e in result.entries] == ["app.db.ebm-sqlite.json", "app.db"]
    out = tmp_path / "out"
    stats = SqliteTranslator().restore(PaxReader(io.BytesIO(archive), expected=result.entries), out)
    assert stats.files == 1
    # The real sqlite3 client reads the restored database.
    res = subprocess.run(["sqlite3", str(out / "app.db"), "PRAGMA integrity_check; PRAGMA user_version;"
                          " SELECT count(*) FROM t; SELECT payload FROM t WHERE id = 1;"],
                         capture_output=True, text=True, check=True)
    ok, version, count, payload = res.stdout.splitlines()
    assert ok == "ok" and version == "7"
    # A transaction-consistent snapshot: row 1's version matches the number of live inserts.
    live = int(count) - 2000
    assert payload == ("row 0" if live == 0 else f"v{live - 1}")


def test_sqlite_archive_extracts_with_gnu_tar(tmp_path):
    db = tmp_path / "plain.db"
    make_db(db, rows=10).close()
    archive, _ = run_backup(SqliteTranslator(), db)
    (tmp_path / "a.tar").write_bytes(archive)
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "a.tar"), "-C", str(out)], check=True)
    res = subprocess.run(["sqlite3", str(out / "plain.db"), "SELECT count(*) FROM t"],
                         capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "10"


def test_sqlite_refuses_bad_sources_and_damaged_restores(tmp_path):
    t = load_translator("sqlite")
    with pytest.raises(TranslatorError, match="does not exist"):
        t.validate_source(str(tmp_path / "none.db"))
    (tmp_path / "text.db").write_text("hello")
    with pytest.raises(TranslatorError, match="not an SQLite 3 database"):
        t.validate_source(str(tmp_path / "text.db"))
    db = tmp_path / "d.db"
    make_db(db, rows=50).close()
    archive, result = run_backup(t, db)
    row = next(e for e in result.entries if e.path == "d.db")
    bad = bytearray(archive)
    bad[row.data_offset + 3000] ^= 0x55
    with pytest.raises(TranslatorError, match="sha256"):
        t.restore(PaxReader(io.BytesIO(bytes(bad))), tmp_path / "out")
    assert not (tmp_path / "out" / "d.db").exists()


def test_stream_of_a_regular_file(tmp_path):
    src = tmp_path / "dump.sql"
    data = os.urandom(300_000)
    src.write_bytes(data)
    archive, result = run_backup(load_translator("stream"), src)
    assert [e.path for e in result.entries] == ["dump.sql"]
    out = tmp_path / "out"
    StreamTranslator().restore(PaxReader(io.BytesIO(archive), expected=result.entries), out)
    assert (out / "dump.sql").read_bytes() == data


def test_stream_from_a_pipe_in_parts_joins_back_and_tar_concatenates(tmp_path):
    t = StreamTranslator()
    t.part_size = 100_000
    data = os.urandom(345_678)
    archive, result = _backup_pipe(t, data)
    assert len(result.entries) == 4
    assert result.state["size"] == len(data)
    out = tmp_path / "out"
    t.restore(PaxReader(io.BytesIO(archive), expected=result.entries), out)
    name = result.state["name"]
    assert (out / name).read_bytes() == data
    # Without the EBM: tar -xO concatenates the parts in order.
    res = subprocess.run(["tar", "-xOf", "-"], input=archive, capture_output=True, check=True)
    assert res.stdout == data


def test_stream_rejects_directories(tmp_path):
    with pytest.raises(TranslatorError, match="is a directory"):
        StreamTranslator().validate_source(str(tmp_path))


def test_stream_chain_never_mixes_in_stale_parts(tmp_path):
    """If the manager chains complete copies anyway, the older copy's extra parts are deleted."""
    t = StreamTranslator()
    t.part_size = 1000
    first, second = os.urandom(4500), os.urandom(1500)
    a0, r0 = _backup_pipe(t, first)
    a1, r1 = _backup_pipe(t, second, r0.state)
    name = r0.state["name"]
    assert sorted(e.path for e in r1.entries if e.deleted) == [f"{name}.part{i:06d}" for i in (2, 3, 4)]
    from translators.base import apply_chain

    out = tmp_path / "chain"
    apply_chain(t, [PaxReader(io.BytesIO(a)) for a in (a0, a1)], out)
    assert (out / name).read_bytes() == second
    # The final view of the chain (what the EBM restores): only the second copy's parts.
    view = {}
    for i, r in enumerate((r0, r1)):
        for row in r.entries:
            if row.deleted:
                view.pop(row.path, None)
            else:
                view[row.path] = i
    assert set(view.values()) == {1}
