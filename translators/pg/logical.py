"""The logical export: the source database as schema SQL and one CSV per table, all from one
snapshot, so ``ebm restore --as csv`` hands back plain files any tool reads and a fresh
cluster of any version is ``psql -f load.sql`` away.

How it stays consistent: a REPEATABLE READ, READ ONLY transaction exports its snapshot
(``pg_export_snapshot()``); ``pg_dump --snapshot`` writes the schema from that snapshot (in
two sections, so that ``load.sql`` creates tables, loads rows, then adds indexes and foreign
keys) and every table's rows come through ``COPY ... TO STDOUT (FORMAT csv, HEADER)`` in the
same transaction. The export covers the database the source connects to.

Members (all under ``logical/``): ``schema-pre.sql``, ``tables/<schema>.<table>.csv`` (names
percent-encoded), ``schema-post.sql``, ``load.sql``. Rows are staged in a temporary file
per table because a pax header needs the size before the data.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable

from tape_formats.archive import ArchiveEntry, IndexEntry, PaxWriter
from translators.base import TranslatorError, file_row

from .server import _psycopg
from .source import PgSource

PREFIX = "logical/"
_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2
"""


def csv_member(schema: str, table: str) -> str:
    return f"tables/{urllib.parse.quote(schema, safe='')}.{urllib.parse.quote(table, safe='')}.csv"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def load_script(tables: list[tuple[str, str]]) -> str:
    lines = ["-- Load this logical export into an empty database, from this directory:",
             "--   psql -v ON_ERROR_STOP=1 -d DBNAME -f load.sql",
             "\\i schema-pre.sql"]
    for schema, table in tables:
        path = csv_member(schema, table).replace("'", "''")
        lines.append(f"\\copy {_ident(schema)}.{_ident(table)} FROM '{path}' "
                     "WITH (FORMAT csv, HEADER)")
    lines.append("\\i schema-post.sql")
    return "\n".join(lines) + "\n"


def _pg_dump(tool: str, src: PgSource, snapshot: str, section: str) -> bytes:
    proc = subprocess.run([tool, "-d", src.conninfo, f"--snapshot={snapshot}",
                           f"--section={section}", "--no-password"], capture_output=True,
                          env={**os.environ, "LC_ALL": "C"})
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise TranslatorError(f"pg_dump failed: {msg[-1] if msg else proc.returncode}")
    return proc.stdout


def export(pg_dump: str, src: PgSource, writer: PaxWriter,
           progress: Callable[[int, str], None] | None = None) -> list[IndexEntry]:
    """Write the logical members; returns their index rows."""
    psycopg = _psycopg()
    sql = psycopg.sql
    rows: list[IndexEntry] = []
    now = time.time_ns()

    def add(name: str, data, size: int) -> None:
        entry = ArchiveEntry(path=PREFIX + name, kind="file", size=size, mode=0o644,
                             mtime_ns=now)
        rows.append(file_row(entry, writer.add(entry, data)))

    try:
        conn = psycopg.connect(src.conninfo, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise TranslatorError(f"cannot connect to PostgreSQL at {src.where()}: {exc}") from None
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        tables = [(s, t) for s, t in conn.execute(_TABLES).fetchall()]
        pre = _pg_dump(pg_dump, src, snapshot, "pre-data")
        add("schema-pre.sql", pre, len(pre))
        done = 0
        for schema, table in tables:
            with tempfile.TemporaryFile(prefix="ebm-pg-csv-") as tmp:
                query = sql.SQL("COPY {}.{} TO STDOUT (FORMAT csv, HEADER)").format(
                    sql.Identifier(schema), sql.Identifier(table))
                with conn.cursor().copy(query) as copy:
                    for chunk in copy:
                        tmp.write(chunk)
                size = tmp.tell()
                tmp.seek(0)
                add(csv_member(schema, table), tmp, size)
                done += size
                if progress is not None:
                    progress(done, f"{schema}.{table}")
        post = _pg_dump(pg_dump, src, snapshot, "post-data")
        add("schema-post.sql", post, len(post))
        script = load_script(tables).encode()
        add("load.sql", script, len(script))
        conn.rollback()
    except psycopg.Error as exc:
        raise TranslatorError(f"logical export failed: {str(exc).strip().splitlines()[0]}") from None
    finally:
        conn.close()
    return rows
