"""The media catalog: one SQLite file that says where every cartridge is and what it holds.

Several processes share it at once (the iSCSI server, the admin CLI, the backup manager), so
it runs in WAL mode with a busy timeout, and every change that must be atomic (a move reads
two elements and writes one row) happens inside ``BEGIN IMMEDIATE``, which takes the write
lock up front instead of failing half-way with SQLITE_BUSY when upgrading a read.

The cartridge table is the single source of truth for placement: ``address`` is the element
address the cartridge sits in, NULL when it is outside the library (the vault). A unique
index on ``address`` makes "two cartridges in one slot" impossible even if two processes race.

Other components (the EBM) add their own tables to this same file through :attr:`db` and
:meth:`transaction`, and version them with :meth:`schema_version` under their own name.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vtl import CATALOG_NAME as CATALOG_NAME  # re-exported: vtl.library names it from here

SCHEMA_COMPONENT = "vtl"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0

# Bareos-like media states. The library sets scratch/append/full from what is on tape; the
# others are set by admins or the backup manager and are left alone by the library.
STATES = (
    "scratch",  # blank, may be labelled and used by anyone
    "append",  # has data, more may be appended
    "full",  # at or past early warning
    "used",  # closed for appending by policy
    "recycle",  # may be overwritten once its retention has passed
    "purged",  # catalog entries pruned, data still on tape
    "error",  # an I/O or checksum error was seen
    "read-only",  # write protected
    "archive",  # kept forever, never recycled
    "disabled",  # not to be used
)
AUTO_STATES = ("scratch", "append", "full")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pools (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    media TEXT,
    retention_days INTEGER,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cartridges (
    barcode TEXT PRIMARY KEY,
    media TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    worm INTEGER NOT NULL DEFAULT 0,
    write_protected INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'scratch',
    pool TEXT REFERENCES pools(name),
    created TEXT NOT NULL,
    path TEXT NOT NULL,
    address INTEGER,            -- element address, NULL = outside the library (vault)
    source_address INTEGER,     -- where the last move came from (SMC source element)
    home_address INTEGER,       -- the storage slot it returns to on unload
    load_count INTEGER NOT NULL DEFAULT 0,
    used_bytes INTEGER NOT NULL DEFAULT 0,
    files INTEGER NOT NULL DEFAULT 0,
    blocks INTEGER NOT NULL DEFAULT 0,
    last_written TEXT,
    last_read TEXT,
    last_mounted TEXT,
    label TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS cartridges_address ON cartridges(address)
    WHERE address IS NOT NULL;
CREATE TABLE IF NOT EXISTS drive_claims (
    drive INTEGER PRIMARY KEY,  -- drive index, 0-based
    owner TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pid_start TEXT,             -- /proc start time, so a reused pid is not taken for alive
    host TEXT NOT NULL,
    since TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    action TEXT NOT NULL,
    barcode TEXT,
    src INTEGER,
    dst INTEGER,
    pid INTEGER,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_barcode ON events(barcode);
"""

DEFAULT_POOLS = (("Scratch", "blank cartridges anyone may take"), ("Default", "general use"))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/pid/stat), None if unknown.

    Stored next to a pid so a claim whose process died and whose pid was reused by an
    unrelated process is still recognised as stale.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    rest = stat[stat.rfind(")") + 2 :].split()
    return rest[19] if len(rest) > 19 else None


def pid_alive(pid: int, start: str | None, host: str) -> bool:
    """Whether the process that made a claim still runs (claims from other hosts: assume yes)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start is not None:
        current = process_start_time(pid)
        if current is not None and current != start:
            return False
    return True


class MediaCatalog:
    """The catalog file, opened by one process. Thread safe: one connection behind an RLock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
        )
        conn.row_factory = None
        self.conn = conn
        with self.lock:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch {self.path} to WAL ({mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()

    @functools.cached_property
    def db(self) -> Any:
        """sqlite-utils over the same connection, made on first use (its import is slow)."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    # ---- schema ---------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self.transaction():
            # statement by statement: executescript() would COMMIT the open transaction
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)
            have = self.schema_version(SCHEMA_COMPONENT)
            if have > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"{self.path} has catalog schema {have}, newer than this program ({SCHEMA_VERSION})"
                )
            if have == 0:
                for name, desc in DEFAULT_POOLS:
                    self.conn.execute(
                        "INSERT OR IGNORE INTO pools(name, description, created) VALUES (?,?,?)",
                        (name, desc, now_iso()),
                    )
                self.set_schema_version(SCHEMA_COMPONENT, SCHEMA_VERSION)
            # future: `if have < 2: ALTER TABLE ...` steps go here, in order.

    def schema_version(self, component: str) -> int:
        """The schema version ``component`` recorded in this file (0 = never created)."""
        row = self.conn.execute(
            "SELECT version FROM schema_versions WHERE component = ?", (component,)
        ).fetchone()
        return int(row[0]) if row else 0

    def set_schema_version(self, component: str, version: int) -> None:
        self.conn.execute(
            "INSERT INTO schema_versions(component, version) VALUES (?, ?) "
            "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
            (component, version),
        )

    # ---- transactions -------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction (nested calls become savepoints); rolls back on error."""
        with self.lock:
            if self.conn.in_transaction:
                name = f"sp{threading.get_ident()}_{time.monotonic_ns()}"
                self.conn.execute(f"SAVEPOINT {name}")
                try:
                    yield self.conn
                except BaseException:
                    self.conn.execute(f"ROLLBACK TO {name}")
                    self.conn.execute(f"RELEASE {name}")
                    raise
                self.conn.execute(f"RELEASE {name}")
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def data_version(self) -> int:
        """Changes whenever *another* connection commits (PRAGMA data_version)."""
        with self.lock:
            return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    # ---- queries --------------------------------------------------------------------------
    def _rows(self, sql: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        with self.lock:
            cur = self.conn.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def cartridge(self, barcode: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM cartridges WHERE barcode = ?", (barcode,))
        return rows[0] if rows else None

    def cartridges(self, *, pool: str | None = None, state: str | None = None) -> list[dict]:
        sql, where, params = "SELECT * FROM cartridges", [], []
        if pool is not None:
            where.append("pool = ?")
            params.append(pool)
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._rows(sql + " ORDER BY barcode", tuple(params))

    def placement(self) -> dict[int, dict[str, Any]]:
        """Every occupied element: address -> its cartridge row (barcode, media, source...)."""
        rows = self._rows(
            "SELECT barcode, media, address, source_address, home_address, worm "
            "FROM cartridges WHERE address IS NOT NULL"
        )
        return {r["address"]: r for r in rows}

    def at(self, address: int) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM cartridges WHERE address = ?", (address,))
        return rows[0] if rows else None

    def pools(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM pools ORDER BY name")

    def events(self, barcode: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if barcode is None:
            return self._rows("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return self._rows(
            "SELECT * FROM events WHERE barcode = ? ORDER BY id DESC LIMIT ?", (barcode, limit)
        )

    # ---- writes (call inside transaction() when several must be atomic) -------------------
    def insert_cartridge(self, row: dict[str, Any]) -> None:
        row = {"created": now_iso(), **row}
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.transaction() as conn:
            conn.execute(f"INSERT INTO cartridges({cols}) VALUES ({marks})", tuple(row.values()))

    def update_cartridge(self, barcode: str, **values: Any) -> None:
        if not values:
            return
        sets = ", ".join(f"{k} = ?" for k in values)
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE cartridges SET {sets} WHERE barcode = ?", (*values.values(), barcode)
            )

    def delete_cartridge(self, barcode: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM cartridges WHERE barcode = ?", (barcode,))

    def set_state(self, barcode: str, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"unknown cartridge state {state!r}")
        self.update_cartridge(barcode, state=state)

    def add_pool(self, name: str, description: str = "", *, media: str | None = None,
                 retention_days: int | None = None) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO pools(name, description, media, retention_days, created) "
                "VALUES (?,?,?,?,?)",
                (name, description, media, retention_days, now_iso()),
            )

    def log(self, action: str, barcode: str | None = None, *, src: int | None = None,
            dst: int | None = None, detail: Any = None) -> None:
        """Append an audit event (who did what to which cartridge, when)."""
        if detail is not None and not isinstance(detail, str):
            detail = json.dumps(detail, sort_keys=True, default=str)
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO events(time, action, barcode, src, dst, pid, detail) "
                "VALUES (?,?,?,?,?,?,?)",
                (now_iso(), action, barcode, src, dst, os.getpid(), detail),
            )

    # ---- drive claims ---------------------------------------------------------------------
    def claims(self) -> dict[int, dict[str, Any]]:
        """Live claims by drive index; stale ones (dead pid) are dropped on the way."""
        rows = self._rows("SELECT * FROM drive_claims")
        live: dict[int, dict[str, Any]] = {}
        stale: list[int] = []
        for r in rows:
            if pid_alive(r["pid"], r["pid_start"], r["host"]):
                live[r["drive"]] = r
            else:
                stale.append(r["drive"])
        if stale:
            with self.transaction() as conn:
                conn.executemany(
                    "DELETE FROM drive_claims WHERE drive = ?", [(d,) for d in stale]
                )
        return live

    def claim(self, drive: int, owner: str) -> None:
        pid = os.getpid()
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO drive_claims(drive, owner, pid, pid_start, host, since) "
                "VALUES (?,?,?,?,?,?)",
                (drive, owner, pid, process_start_time(pid), socket.gethostname(), now_iso()),
            )

    def release(self, drive: int) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM drive_claims WHERE drive = ?", (drive,))
