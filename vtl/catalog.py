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

Only ``vtl init`` and a rebuild create the file; a command that only looks opens it
``mode=ro`` (nothing created, migrated or written), and a missing, empty or foreign file is
:class:`~vtl.errors.CatalogDamaged`, whose one line names the file and the two ways back
(``vtl catalog restore``/``rebuild``, :mod:`vtl.catalog_recovery`). ``open_since`` marks a
cartridge a drive has open; one left set by a crash is reconciled by
:meth:`vtl.library.Library.reconcile`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vtl import CATALOG_NAME as CATALOG_NAME  # re-exported: vtl.library names it from here
from vtl.errors import CatalogDamaged, LibraryError

SCHEMA_COMPONENT = "vtl"
# 2: cartridges.open_since; 3: cartridges.native_bytes; 4: cartridges.archived_to
SCHEMA_VERSION = 4
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
    "cleaning",  # a cleaning cartridge (vtl.cleaning): never written, never in a pool
)
AUTO_STATES = ("scratch", "append", "full")
# Events that put a cartridge somewhere (dst; None = the vault) or take it away.
PLACEMENT_ACTIONS = frozenset({"create", "adopt", "move", "import", "vault", "delete"})

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
    label TEXT,
    open_since TEXT,            -- set while a drive has it open, left set by a crash
    native_bytes INTEGER,       -- data bytes written, before compression (NULL: not yet counted)
    archived_to TEXT            -- s3://... while the cartridge lives only in the object store
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


SQLITE_MAGIC = b"SQLite format 3\x00"


def damaged_message(path: Path, why: str) -> str:
    """The one line a user sees for a missing or damaged catalog: which file, and what to do."""
    return (
        f"media catalog {path} is {why}; restore the backup copy with `vtl catalog restore`"
        " or rebuild it from the cartridges with `vtl catalog rebuild`"
    )


# path -> a descriptor on the catalog file that this process never closes (see below).
_HEADER_FDS: dict[str, int] = {}


def _read_header(path: Path) -> bytes:
    """The file's first bytes, read through a descriptor that stays open.

    Why never closed: closing *any* descriptor of a file drops every POSIX lock this process
    holds on it, including the SQLite connections' own (SQLite cannot know). A process that
    already had the catalog open (an EBM whose backup catalog is open when its library opens
    the same file) then held no lock, and another process closing its last connection took
    the catalog for unused, checkpointed and reset the WAL under it: the catalog read as
    malformed after a few such processes (seen with `ebm wal-fetch` runs beside an open EBM).
    """
    key = os.path.abspath(path)
    fd = _HEADER_FDS.get(key)
    st = os.stat(key)  # FileNotFoundError: missing
    if fd is None or os.fstat(fd).st_ino != st.st_ino:  # first time, or the file was replaced
        fd = os.open(key, os.O_RDONLY | os.O_CLOEXEC)
        _HEADER_FDS[key] = fd  # the replaced file's descriptor stays open too, for its locks
    return os.pread(fd, len(SQLITE_MAGIC), 0)


def check_catalog_file(path: Path) -> None:
    """Refuse a catalog file that is missing, empty or not SQLite, before anything opens it
    (SQLite would silently start a new, empty database over a missing or 0-byte file)."""
    path = Path(path)
    try:
        head = _read_header(path)
    except FileNotFoundError:
        raise CatalogDamaged(damaged_message(path, "missing")) from None
    except OSError as e:
        raise CatalogDamaged(damaged_message(path, f"unreadable ({e.strerror or e})")) from None
    if not head:
        raise CatalogDamaged(damaged_message(path, "damaged (empty file)"))
    if head != SQLITE_MAGIC:
        raise CatalogDamaged(damaged_message(path, "damaged (file is not a database)"))


class MediaCatalog:
    """The catalog file, opened by one process. Thread safe: one connection behind an RLock.

    Three ways to open it: ``create=True`` makes a new file (``vtl init``, a rebuild); the
    default opens an existing one for a process that changes state and brings its schema up
    to date; ``readonly=True`` (SQLite ``mode=ro``) is for commands that only look, and never
    creates, migrates or writes anything. A missing, empty or foreign file, and a "not a
    database"/"malformed" error met later, is :class:`CatalogDamaged`: one line saying what
    to do.
    """

    def __init__(self, path: Path, *, create: bool = False, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.lock = threading.RLock()
        # called with each placement event (see log()); the library keeps a journal with it
        self.placement_hook: Callable[[dict[str, Any]], None] | None = None
        if not create or self.path.exists():
            check_catalog_file(self.path)
        uri = f"file:{quote(str(self.path.absolute()))}" + ("?mode=ro" if readonly else "")
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S,
                                   check_same_thread=False, isolation_level=None)
        except sqlite3.Error as e:
            raise CatalogDamaged(damaged_message(self.path, f"unreadable ({e})")) from None
        conn.row_factory = None
        self.conn = conn
        try:
            with self.lock:
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                if readonly:
                    self._check_schema()
                    return
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"cannot switch {self.path} to WAL ({mode})")
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA foreign_keys = ON")
                if not create:
                    self._check_schema()
                self._migrate()
        except sqlite3.DatabaseError as e:
            conn.close()
            raise self.damaged(e) from None
        except BaseException:
            conn.close()
            raise

    def damaged(self, error: sqlite3.DatabaseError) -> LibraryError:
        """A sqlite error that means the file is broken, as CatalogDamaged; "locked" and the
        like as a plain one-line LibraryError."""
        text = str(error)
        if isinstance(error, sqlite3.OperationalError) and (
            "locked" in text or "busy" in text or "readonly" in text
        ):
            return LibraryError(f"media catalog {self.path}: {text}")
        return CatalogDamaged(damaged_message(self.path, f"damaged ({text})"))

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn "file is not a database"/"malformed" met mid-way into CatalogDamaged (a
        constraint violation or a programming error passes unchanged)."""
        try:
            yield
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.DatabaseError as e:
            text = str(e)
            if type(e) is sqlite3.DatabaseError or "malformed" in text or "disk I/O" in text:
                raise self.damaged(e) from None
            raise

    def _check_schema(self) -> None:
        """An existing file must hold a media catalog (not some other SQLite database)."""
        tables = {r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"schema_versions", "cartridges", "pools", "events"} <= tables or (
            self.schema_version(SCHEMA_COMPONENT) == 0
        ):
            raise CatalogDamaged(damaged_message(self.path, "damaged (no media catalog in it)"))

    # ---- schema ---------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self.transaction():
            # statement by statement: executescript() would COMMIT the open transaction
            have = self.schema_version(SCHEMA_COMPONENT) if self._has_versions() else 0
            if have > SCHEMA_VERSION:
                raise LibraryError(
                    f"{self.path} has catalog schema {have}, newer than this program"
                    f" ({SCHEMA_VERSION})"
                )
            if 0 < have < 2:  # before CREATE TABLE IF NOT EXISTS, which would skip the column
                self.conn.execute("ALTER TABLE cartridges ADD COLUMN open_since TEXT")
            if 0 < have < 3:  # counted at each cartridge's next unmount (Library.cartridge_stats)
                self.conn.execute("ALTER TABLE cartridges ADD COLUMN native_bytes INTEGER")
            if 0 < have < 4:
                self.conn.execute("ALTER TABLE cartridges ADD COLUMN archived_to TEXT")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)
            if have == 0:
                for name, desc in DEFAULT_POOLS:
                    self.conn.execute(
                        "INSERT OR IGNORE INTO pools(name, description, created) VALUES (?,?,?)",
                        (name, desc, now_iso()),
                    )
            if have < SCHEMA_VERSION:
                self.set_schema_version(SCHEMA_COMPONENT, SCHEMA_VERSION)
            # future: `if 0 < have < 5: ALTER TABLE ...` steps go above, in order.

    def _has_versions(self) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_versions'"
        ).fetchone() is not None

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
            with self._guard():
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
        with self.lock, self._guard():
            return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    # ---- queries --------------------------------------------------------------------------
    def _rows(self, sql: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        with self.lock, self._guard():
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

    def left_open(self) -> list[dict[str, Any]]:
        """Cartridges a drive opened and no unmount closed: in use now, or left by a crash."""
        return self._rows("SELECT * FROM cartridges WHERE open_since IS NOT NULL ORDER BY barcode")

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
        when = now_iso()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO events(time, action, barcode, src, dst, pid, detail) "
                "VALUES (?,?,?,?,?,?,?)",
                (when, action, barcode, src, dst, os.getpid(), detail),
            )
        if self.placement_hook is not None and barcode and action in PLACEMENT_ACTIONS:
            self.placement_hook({"time": when, "action": action, "barcode": barcode,
                                 "src": src, "dst": dst})

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
        if stale and not self.readonly:
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
