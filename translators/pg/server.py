"""Talking to the server: connect with one-line errors, the facts a backup records, the
archiving set-up the EBM owns, and the WAL switch that closes a backup's range.

What the EBM configures (and what it leaves to the admin): ``archive_mode`` needs a server
restart, so the admin sets it (``ALTER SYSTEM SET archive_mode = on`` and a restart); with
that on and ``archive_command`` empty, the EBM sets ``archive_command`` to :func:`archive_command`
(``ALTER SYSTEM`` + ``pg_reload_conf()``, superuser) so every finished segment lands in the
dataset's spool. An ``archive_command`` that is someone else's is never overwritten.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from translators.base import TranslatorError

from .source import PgSource
from .wal import parse_lsn

if TYPE_CHECKING:
    import psycopg

ARCHIVE_WAIT_S = 60.0


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise TranslatorError("the postgresql translator needs psycopg 3: "
                              "pip install 'vtl-ebm[postgresql]'") from None
    return psycopg


def connect(src: PgSource, **kw: Any) -> psycopg.Connection:
    """An autocommit connection, or one line saying why there is none."""
    psycopg = _psycopg()
    try:
        return psycopg.connect(src.conninfo, autocommit=True, connect_timeout=10, **kw)
    except psycopg.OperationalError as exc:
        raise TranslatorError(f"cannot connect to PostgreSQL at {src.where()}: "
                              f"{connect_reason(str(exc))}") from None


def connect_reason(msg: str) -> str:
    """The part of a libpq connection error an admin acts on."""
    text = " ".join(msg.split())
    for needle, say in (("password authentication failed", None),
                        ("no password supplied", "no password supplied (use ~/.pgpass or PGPASSFILE)"),
                        ("Connection refused", "server is not running (connection refused)"),
                        ("No such file or directory", "server is not running (no socket)"),
                        ("does not exist", None), ("no pg_hba.conf entry", None)):
        if needle in text:
            if say is not None:
                return say
            start = text.find("FATAL:")
            return text[start + 6:].strip() if start >= 0 else text
    return text.removeprefix("connection failed: ")


@dataclass(frozen=True, slots=True)
class ServerFacts:
    version: int  # server_version_num
    system_identifier: str
    timeline: int
    segment_size: int
    archive_mode: str
    archive_command: str
    is_superuser: bool


def facts(conn: psycopg.Connection) -> ServerFacts:
    row = conn.execute(
        "SELECT current_setting('server_version_num')::int,"
        " (SELECT system_identifier::text FROM pg_control_system()),"
        " ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int,"
        " current_setting('wal_segment_size'), current_setting('archive_mode'),"
        " current_setting('archive_command'), current_setting('is_superuser') = 'on'").fetchone()
    assert row is not None
    size = row[3]
    units = {"kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    seg = int(size[:-2]) * units[size[-2:]] if size[-2:] in units else int(size)
    return ServerFacts(version=row[0], system_identifier=row[1], timeline=row[2],
                       segment_size=seg, archive_mode=row[4], archive_command=row[5],
                       is_superuser=row[6])


def archive_command(spool: Path) -> str:
    """Copy to a temporary name, fsync, rename, fsync the directory: a segment in the spool
    under its own name is always complete. A segment already there (archived again after a
    crash) counts as done only if it is byte-identical, as the PostgreSQL manual asks."""
    s = str(spool)
    return (f"test ! -f '{s}/%f' && cp '%p' '{s}/%f.part' && sync '{s}/%f.part'"
            f" && mv '{s}/%f.part' '{s}/%f' && sync '{s}' || cmp -s '%p' '{s}/%f'")


def ensure_archiving(conn: psycopg.Connection, src: PgSource, info: ServerFacts) -> None:
    """Refuse a server that does not archive; set the EBM's archive_command if none is set."""
    if info.archive_mode not in ("on", "always"):
        raise TranslatorError(
            "WAL archiving is not configured: archive_mode is off (run ALTER SYSTEM SET "
            "archive_mode = on and restart the server; see ebm/README.md)")
    if not src.spool.is_dir():
        raise TranslatorError(f"WAL spool {src.spool} does not exist (create it, writable by "
                              "the server's user)")
    wanted = archive_command(src.spool)
    current = info.archive_command.strip()
    if current == wanted:
        return
    if current not in ("", "(disabled)"):
        raise TranslatorError(f"archive_command is already set to {current!r}; the EBM archives "
                              f"into {src.spool}: clear it (see ebm/README.md)")
    if not info.is_superuser:
        raise TranslatorError("archive_command is empty and the EBM's user may not set it: "
                              f"set archive_command = {wanted!r} (see ebm/README.md)")
    sql = _psycopg().sql
    conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(wanted)))
    conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while conn.execute("SHOW archive_command").fetchone()[0] != wanted:  # type: ignore[index]
        if time.monotonic() > deadline:
            raise TranslatorError("the server did not take the new archive_command (reload)")
        time.sleep(0.05)


def now(conn: psycopg.Connection) -> float:
    """The server's clock (commit timestamps and recovery targets are on it), epoch seconds."""
    return float(conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])  # type: ignore[index]


def switch_wal(conn: psycopg.Connection, info: ServerFacts) -> tuple[float, int, int]:
    """Close the current segment (the server does nothing if it holds no WAL yet).

    Returns (server time just before the switch, the switch LSN, the number of the last
    segment that holds WAL before it). Every commit stamped before that time is in WAL up to
    that segment, once the archiver has copied it (:func:`wait_archived`)."""
    t = now(conn)
    lsn = parse_lsn(conn.execute("SELECT pg_switch_wal()::text").fetchone()[0])  # type: ignore[index]
    return t, lsn, (lsn - 1) // info.segment_size


def wait_archived(conn: psycopg.Connection, spool: Path, name: str,
                  timeout: float = ARCHIVE_WAIT_S) -> None:
    started = time.monotonic()
    while not (spool / name).exists():
        row = conn.execute("SELECT last_archived_wal, last_failed_wal,"
                           " last_failed_time > last_archived_time OR"
                           " (last_archived_time IS NULL AND last_failed_time IS NOT NULL)"
                           " FROM pg_stat_archiver").fetchone()
        assert row is not None
        archived, failed, failing = row
        if archived is not None and archived >= name and not (spool / name).exists():
            raise TranslatorError(f"WAL segment {name} was archived, but not into {spool}: "
                                  "archive_command points elsewhere")
        if failing and failed is not None and failed <= name \
                and time.monotonic() - started > 1.0:
            raise TranslatorError(f"archive_command fails for WAL segment {failed} "
                                  f"(see the server log); cannot collect WAL into {spool}")
        if time.monotonic() - started > timeout:
            raise TranslatorError(f"WAL segment {name} was not archived into {spool} within "
                                  f"{timeout:.0f} s")
        time.sleep(0.05)


def close_quietly(conn: psycopg.Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()
