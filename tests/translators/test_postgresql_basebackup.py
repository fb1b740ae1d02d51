"""The base backup read through the replication protocol in the EBM's process against the one
pg_basebackup writes (the path for servers before PostgreSQL 15), on one real cluster: the
same members, a manifest, a label and WAL; tablespaces, a stop midway and a backup the
server cuts off each end cleanly, in one line."""

from __future__ import annotations

import io
import time

import pytest
from pg_cluster import PgCluster, pg_bindir

from tape_formats.archive import PaxReader, PaxWriter
from translators.base import TranslatorError
from translators.pg.basebackup import run_basebackup
from translators.pg.replication import BaseBackupStream
from translators.pg.source import PgSource

pytestmark = pytest.mark.skipif(
    pg_bindir() is None,
    reason="PostgreSQL server binaries missing (scripts/setup.sh installs Debian's postgresql)")


@pytest.fixture(scope="module")
def pg():
    with PgCluster() as cluster:
        cluster.sql("CREATE TABLE t AS SELECT i, md5(i::text) AS h FROM generate_series(1, 20000) i")
        yield cluster


def _members(stream: bytes) -> dict[str, bytes]:
    return {e.path: data.read() for e, data in PaxReader(io.BytesIO(stream)) if e.kind == "file"}


def _take(pg: PgCluster, tool: str | None):
    src = PgSource.parse(pg.source())
    out = io.BytesIO()
    writer = PaxWriter(out)
    bb = run_basebackup(src, writer, 1 << 20, tool=tool)
    writer.close()
    return bb, _members(out.getvalue())


def _shape(members: dict[str, bytes]) -> set[str]:
    """Member names without the WAL ones (each backup has its own segments)."""
    return {p for p in members if not p.startswith("data/pg_wal/")}


def test_protocol_and_pg_basebackup_give_the_same_backup(pg):
    ours, mine = _take(pg, None)
    theirs, tool_members = _take(pg, str(pg_bindir() / "pg_basebackup"))
    assert _shape(mine) == _shape(tool_members)
    assert {"data/backup_label", "data/backup_manifest", "data/global/pg_control",
            "data/tablespace_map"} <= set(mine)
    for bb in (ours, theirs):
        assert bb.segments and 0 < bb.start_lsn < bb.stop_lsn and bb.timeline == 1
        assert "START WAL LOCATION" in bb.label
    assert b'"PostgreSQL-Backup-Manifest-Version"' in mine["data/backup_manifest"]
    rows = {r.path: r for r in ours.rows}
    assert rows["data/backup_manifest"].uid == rows["data/backup_label"].uid
    wal = [p for p in mine if p.startswith("data/pg_wal/0")]
    assert [s.name for s in ours.segments] == [p.rsplit("/", 1)[1] for p in wal]
    # the table's data files came through whole (same sizes both ways)
    sizes = {p: len(b) for p, b in mine.items() if p.startswith("data/base/")}
    assert sizes == {p: len(b) for p, b in tool_members.items() if p.startswith("data/base/")}


def test_tablespaces_are_refused_in_one_line(pg):
    where = pg.dir / "ts"
    where.mkdir()
    pg.own(where)
    pg.sql(f"CREATE TABLESPACE ts LOCATION '{where}'")
    try:
        with pytest.raises(TranslatorError, match="tablespaces outside its data directory"):
            BaseBackupStream(PgSource.parse(pg.source()))
    finally:
        pg.sql("DROP TABLESPACE ts")
    # the refused backup left nothing running on the server: the next one works
    stream = BaseBackupStream(PgSource.parse(pg.source()))
    stream.close()


def test_a_backup_stopped_midway_ends_its_reader_and_the_server_side(pg):
    stream = BaseBackupStream(PgSource.parse(pg.source()))
    assert stream.read(512)  # the read-ahead thread is running, maybe waiting on a full queue
    stream.close()
    assert not stream._thread.is_alive()
    for _ in range(100):  # the server notices the dropped connection and ends the backup
        if pg.sql("SELECT count(*) FROM pg_stat_replication") == "0":
            break
        time.sleep(0.05)
    bb, members = _take(pg, None)
    assert bb.segments and "data/backup_manifest" in members


def test_a_backup_the_server_cuts_off_fails_in_one_line(pg):
    stream = BaseBackupStream(PgSource.parse(pg.source()))
    try:
        assert stream.read(512)
        pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
        one_line = ("^base backup failed.*(server closed the connection unexpectedly"
                    "|terminating connection)[^\\n]*$")  # which one depends on timing
        with pytest.raises(TranslatorError, match=one_line):
            while stream.read(1 << 20):
                pass
    finally:
        stream.close()
