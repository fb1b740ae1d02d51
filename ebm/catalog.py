"""The backup catalog: EBM tables living in the library's own catalog file (``CATALOG_NAME``).

Why the same file: a cartridge's place in the library and the backups on it change together
(recycling a cartridge must drop the backups that lived on it), and one file is one thing to
back up and one WAL to reason about. All EBM tables are prefixed ``ebm_`` so they never clash
with the media catalog's.

Layout (Bareos-like, kept compact because the file index dominates the size):

- ``ebm_datasets``: a named thing to back up (translator, source, pool, options).
- ``ebm_backups``: one row per backup job: uuid, level (full/incr), parent, times, size,
  state (running/done/failed/expired), the pid that runs it (so a crashed job is detected).
- ``ebm_backup_volumes``: JobMedia-like extents: for each cartridge a backup touches, the
  first/last tape file and logical object, and which stream blocks of the data tape file
  live there (``first_block``..``last_block`` starting at object ``data_object``).
- ``ebm_paths`` + ``ebm_files``: the per-file index with normalised paths. A file's tape
  position is stored as the stream offsets of its pax header and data; the block number is
  ``offset // block_size`` and the volume row that holds that block gives cartridge, tape file
  and logical object, so no per-file row repeats the cartridge. A path (or link target) that
  is valid UTF-8 is stored as TEXT; a Linux name that is not (its bytes, which Python carries
  as ``surrogateescape`` str) is stored as a BLOB of those exact bytes, so the index is
  lossless and the two forms never collide. Globs compare ``CAST(path AS TEXT)``, which
  matches both.
- ``ebm_states``: the translator's opaque state after each backup (the parent state of the
  next incremental).
- pools are the library's own: the media catalog's ``pools`` table (name, description,
  media, ``retention_days``) and ``cartridges.pool`` say which pools exist and which pool a
  cartridge is in, for ``vtl`` and the EBM alike (one pool notion). ``ebm_media`` holds only
  what the EBM adds for a cartridge handed to it (``ebm pool add``): its write state
  (scratch/append/full/read-only/error), ``busy`` (the backup writing it) and ``append_at``,
  the logical object right after the last *good* backup on it, so a torn tail left by a
  crashed job is simply overwritten next time. A pool's ``retention_days`` is enforced by
  ``ebm.retention``. Catalogs from before (``ebm_pools`` + ``ebm_pool_media`` with its own
  pool column, mirrored into ``pools``) are migrated when a writer opens them.
- ``ebm_schedules``: "daily at 03:00" style schedules run by ``ebm scheduler``.

Only a command that changes state opens the catalog as a writer (``Catalog(path)``), and only
a writer creates the EBM tables or migrates an older layout. A command that only looks
(``ebm list``, ``show``, ``ls``, ``verify``, ``restore`` ...) opens it ``readonly`` (SQLite
``mode=ro``): the file is never written, missing tables are stood in for by empty TEMP
tables (``has_tables`` says there are no EBM backups yet) and an older layout by TEMP views
that read it as the current one. A "malformed"/"not a database" error met in any query is
:class:`vtl.errors.CatalogDamaged`, the same one line ``vtl`` gives (exit 1).
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import sqlite3
import tempfile
import threading
import time
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from vtl import CATALOG_NAME

if TYPE_CHECKING:  # not imported at run time: the CLI's start-up stays light
    from tape_formats.archive.packed_index import PackedIndex
from vtl.barcode import is_cleaning_label

BLOCK_SIZE = 256 * 1024
_FILE_BATCH = 10_000  # file index rows per INSERT batch
_BLOB_CHUNK = 1 << 20  # translator state bytes per incremental blob read or write
POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # as `vtl pool create` takes

SCHEMA = """
CREATE TABLE IF NOT EXISTS ebm_media (
    barcode TEXT PRIMARY KEY,
    state TEXT NOT NULL DEFAULT 'scratch',
    append_at INTEGER NOT NULL DEFAULT 0,
    busy INTEGER,
    recycled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ebm_datasets (
    name TEXT PRIMARY KEY,
    translator TEXT NOT NULL,
    source TEXT NOT NULL,
    pool TEXT,
    options TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ebm_backups (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    dataset TEXT NOT NULL,
    level TEXT NOT NULL,
    parent INTEGER,
    translator TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    size INTEGER NOT NULL DEFAULT 0,
    nfiles INTEGER NOT NULL DEFAULT 0,
    blocks INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    state TEXT NOT NULL,
    pid INTEGER,
    options TEXT NOT NULL DEFAULT '{}',
    error TEXT
);
CREATE INDEX IF NOT EXISTS ebm_backups_dataset ON ebm_backups(dataset, started);
CREATE TABLE IF NOT EXISTS ebm_backup_volumes (
    backup INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    barcode TEXT NOT NULL,
    first_file INTEGER NOT NULL,
    last_file INTEGER NOT NULL,
    first_object INTEGER NOT NULL,
    last_object INTEGER NOT NULL,
    data_object INTEGER,
    first_block INTEGER,
    last_block INTEGER,
    PRIMARY KEY (backup, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ebm_backup_volumes_barcode ON ebm_backup_volumes(barcode);
CREATE TABLE IF NOT EXISTS ebm_paths (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS ebm_files (
    backup INTEGER NOT NULL,
    path INTEGER NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    sha256 BLOB,
    header_offset INTEGER NOT NULL,
    data_offset INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    linkname TEXT,
    PRIMARY KEY (backup, path)
) WITHOUT ROWID;
-- Where each entry's pax header lies on tape: cartridge, tape file, block within that tape
-- file, byte within the block, and the logical object to LOCATE to (256 KiB blocks).
CREATE VIEW IF NOT EXISTS ebm_file_positions AS
    SELECT f.backup AS backup, p.path AS path, v.barcode AS barcode,
           v.first_file + 1 AS tape_file,
           f.header_offset / 262144 - v.first_block AS block_in_file,
           f.header_offset % 262144 AS byte_in_block,
           v.data_object + (f.header_offset / 262144 - v.first_block) AS object
    FROM ebm_files f JOIN ebm_paths p ON p.id = f.path
    JOIN ebm_backup_volumes v ON v.backup = f.backup
         AND f.header_offset / 262144 BETWEEN v.first_block AND v.last_block
    WHERE f.header_offset >= 0;
CREATE TABLE IF NOT EXISTS ebm_states (
    backup INTEGER PRIMARY KEY,
    state BLOB
);
CREATE TABLE IF NOT EXISTS ebm_schedules (
    id INTEGER PRIMARY KEY,
    dataset TEXT NOT NULL,
    spec TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    next_run REAL NOT NULL,
    last_run REAL,
    last_result TEXT
);
"""


class CatalogError(Exception):
    """A one-line catalog problem fit for ``error: ...``."""


def _damage(path: Path, error: sqlite3.DatabaseError) -> Exception | None:
    """The one-line :class:`~vtl.errors.CatalogDamaged` for an error that means the file is
    broken (a corrupt page, not a database), else None (a constraint, a lock, our own bug)."""
    if isinstance(error, sqlite3.IntegrityError | sqlite3.ProgrammingError
                  | sqlite3.InterfaceError):
        return None
    text = str(error)
    if type(error) is sqlite3.DatabaseError or "malformed" in text or "disk I/O" in text:
        from vtl.catalog import damaged_message
        from vtl.errors import CatalogDamaged

        return CatalogDamaged(damaged_message(path, f"damaged ({text})"))
    return None


def _guarded(method: Any) -> Any:
    """``method`` of a cursor or connection, with a corrupt page met in it raised as
    :class:`~vtl.errors.CatalogDamaged` (other sqlite errors unchanged)."""
    def run(self: Any, *args: Any) -> Any:
        try:
            return method(self, *args)
        except sqlite3.DatabaseError as e:
            damage = _damage(self.catalog_path, e)
            if damage is None:
                raise
            raise damage from None
    return run


class _GuardedCursor(sqlite3.Cursor):
    """A cursor whose statements and reads (a corrupt page may be met mid-result) turn
    damage into CatalogDamaged."""

    catalog_path: Path
    execute = _guarded(sqlite3.Cursor.execute)
    executemany = _guarded(sqlite3.Cursor.executemany)
    fetchone = _guarded(sqlite3.Cursor.fetchone)
    fetchmany = _guarded(sqlite3.Cursor.fetchmany)
    fetchall = _guarded(sqlite3.Cursor.fetchall)
    __next__ = _guarded(sqlite3.Cursor.__next__)


class _GuardedConnection(sqlite3.Connection):
    """The catalog's connection: every statement runs on a :class:`_GuardedCursor`, so no
    EBM query can end in a ``sqlite3.DatabaseError`` traceback on a damaged file."""

    catalog_path: Path
    executescript = _guarded(sqlite3.Connection.executescript)

    def cursor(self, factory: Any = _GuardedCursor) -> Any:  # type: ignore[override]
        cur = super().cursor(factory)
        cur.catalog_path = self.catalog_path
        return cur

    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # type: ignore[override]
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:  # type: ignore[override]
        return self.cursor().executemany(sql, parameters)


_SCHEMA_OBJECT = re.compile(r"CREATE (TABLE|VIEW|INDEX) IF NOT EXISTS (\w+)")


@dataclass(slots=True)
class Backup:
    id: int
    uuid: str
    dataset: str
    level: str
    parent: int | None
    translator: str
    started: float
    finished: float | None
    size: int
    nfiles: int
    blocks: int
    sha256: str | None
    state: str
    pid: int | None
    options: dict[str, Any]
    error: str | None

    @property
    def encrypted(self) -> bool:
        return bool(self.options.get("crypto"))

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__slots__}
        d["options"] = {k: v for k, v in self.options.items() if k != "crypto"}
        d["encrypted"] = self.encrypted
        return d


@dataclass(slots=True)
class Volume:
    backup: int
    seq: int
    barcode: str
    first_file: int
    last_file: int
    first_object: int
    last_object: int
    data_object: int | None
    first_block: int | None
    last_block: int | None


@dataclass(slots=True)
class FileRow:
    path: str
    kind: str
    size: int
    mtime_ns: int
    mode: int
    uid: int
    gid: int
    sha256: bytes | None
    header_offset: int
    data_offset: int
    deleted: bool
    backup: int = 0
    linkname: str | None = None  # hard link / symlink target (None in pre-linkname catalogs)


def _pool_created() -> str:
    """Now, as the library's pools table records it (UTC ISO 8601, seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def _to_db(path: str) -> str | bytes:
    """``path`` as the catalog stores it: TEXT if it is UTF-8, else a BLOB of its bytes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape")
    return path


def _from_db(value: str | bytes | None) -> str | None:
    """The inverse of :func:`_to_db` (a BLOB back to its ``surrogateescape`` str)."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _row_batches(backup_id: int, files: Iterable[FileRow] | PackedIndex) -> Iterator[list[tuple]]:
    """The ``ebm_files`` parameters of ``files``, ``_FILE_BATCH`` rows at a time, built in
    Python (the reference for ``PackedIndex.catalog_batches``). A :class:`PackedIndex` is read
    as plain tuples, without an object per row."""
    if hasattr(files, "rows"):  # a PackedIndex
        rows: Iterator[tuple] = (
            (backup_id, _to_db(path), kind, size, mtime, mode, uid, gid, sha, hoff, doff,
             int(deleted), _to_db(link) if link else None)
            for (path, kind, size, mtime, mode, uid, gid, sha, hoff, doff, deleted, link,
                 _torn) in files.rows(raw_sha=True))
    else:
        rows = ((backup_id, _to_db(f.path), f.kind, f.size, f.mtime_ns, f.mode, f.uid, f.gid,
                 f.sha256, f.header_offset, f.data_offset, int(f.deleted),
                 _to_db(f.linkname) if f.linkname else None) for f in files)
    while batch := list(itertools.islice(rows, _FILE_BATCH)):
        yield batch


def _file_row(r: sqlite3.Row) -> FileRow:
    d = dict(r)
    return FileRow(**{**d, "path": _from_db(d["path"]), "linkname": _from_db(d["linkname"]),
                      "deleted": bool(d["deleted"])})


_GLOB = "CAST(p.path AS TEXT) GLOB CAST(? AS TEXT)"  # TEXT and BLOB paths alike


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/pid/stat (after the command name, which may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def proc_start(pid: int) -> str | None:
    """The process's kernel start time: with the pid it names a process even after pid reuse."""
    st = _proc_stat(pid)
    return st[19] if st and len(st) > 19 else None


def _pid_alive(pid: int, start: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    st = _proc_stat(pid)
    if st is None:
        return True
    if st[0] == "Z":  # a zombie is dead for our purposes (a killed child not yet reaped)
        return False
    return start is None or len(st) <= 19 or st[19] == start  # else: the pid was reused


class Catalog:
    """The EBM tables over one sqlite connection (autocommit; explicit transactions).

    ``readonly=True`` is for commands that only look (see the module docstring): nothing is
    created, migrated or written, and :attr:`has_tables` is False when the file holds no EBM
    tables yet.
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.has_tables = True
        # check_same_thread=False: the mover's writer thread reserves the next cartridge when a
        # backup spans; the producer thread does not touch the catalog meanwhile.
        uri = f"file:{quote(str(self.path.absolute()))}" + ("?mode=ro" if readonly else "")
        self.db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None,
                                  check_same_thread=False, factory=_GuardedConnection)
        self.db.catalog_path = self.path
        self.db.row_factory = sqlite3.Row
        if readonly:
            self.db.execute("PRAGMA busy_timeout=30000")
            self._stand_in()
            return
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a catalog written by an older EBM up to date (SCHEMA only creates tables).

        ``ebm_files.linkname``: a hard link's target (and a symlink's), so a path restore
        can bring the target's data along; rows written before it have NULL there.
        ``ebm_pools``/``ebm_pool_media``: the EBM's own pool table and membership column,
        folded into the library's ``pools`` and ``cartridges.pool``."""
        self._merge_old_pools()
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(ebm_files)")}
        if "linkname" not in cols:
            try:
                self.db.execute("ALTER TABLE ebm_files ADD COLUMN linkname TEXT")
            except sqlite3.OperationalError as e:  # another process added it just now
                if "duplicate column" not in str(e):
                    raise

    def _stand_in(self) -> None:
        """Read-only: make an older or table-less file read as the current layout, with TEMP
        objects only (they live in this connection, never in the file)."""
        main = {r[0] for r in self.q(
            "SELECT name FROM main.sqlite_master WHERE type IN ('table', 'view')")}
        self.has_tables = "ebm_backups" in main
        old_pools = "ebm_pool_media" in main
        if old_pools and "ebm_media" not in main:
            main.add("ebm_media")
            self.db.execute("CREATE TEMP VIEW ebm_media AS SELECT barcode, state, append_at, "
                            "busy, recycled FROM main.ebm_pool_media")
        if old_pools:  # membership and pool names as the migration will merge them
            cols = [r[1] for r in self.q("PRAGMA main.table_info(cartridges)")]
            picked = ", ".join("coalesce(m.pool, c.pool) AS pool" if c == "pool" else f"c.{c}"
                               for c in cols)
            self.db.execute(f"CREATE TEMP VIEW cartridges AS SELECT {picked} FROM "
                            "main.cartridges c LEFT JOIN main.ebm_pool_media m "
                            "ON m.barcode = c.barcode")
            if "ebm_pools" in main:
                self.db.execute(
                    "CREATE TEMP VIEW pools AS SELECT name, description, media, "
                    "retention_days, created FROM main.pools UNION ALL SELECT name, "
                    "'EBM backup pool', NULL, NULL, "
                    "strftime('%Y-%m-%dT%H:%M:%S+00:00', created, 'unixepoch') "
                    "FROM main.ebm_pools WHERE name NOT IN (SELECT name FROM main.pools)")
        if "ebm_files" in main and "linkname" not in {
                r[1] for r in self.q("PRAGMA main.table_info(ebm_files)")}:
            main.add("ebm_files")
            self.db.execute("CREATE TEMP VIEW ebm_files AS SELECT *, NULL AS linkname "
                            "FROM main.ebm_files")
        for statement in SCHEMA.split(";"):
            found = _SCHEMA_OBJECT.search(statement)
            if found and found[1] != "INDEX" and found[2] not in main:
                self.db.execute(statement.replace("CREATE ", "CREATE TEMP ", 1))

    def _merge_old_pools(self) -> None:
        if not self.q("SELECT 1 FROM sqlite_master WHERE name='ebm_pool_media'"):
            return  # the common case: no write lock taken
        with self.tx():
            if not self.q("SELECT 1 FROM sqlite_master WHERE name='ebm_pool_media'"):
                return  # already merged (possibly by another process just now)
            self.db.execute(
                "INSERT OR IGNORE INTO pools(name, description, created) "
                "SELECT name, 'EBM backup pool', ? FROM ebm_pools", (_pool_created(),))
            self.db.execute(
                "UPDATE cartridges SET pool = (SELECT m.pool FROM ebm_pool_media m "
                "WHERE m.barcode = cartridges.barcode) "
                "WHERE barcode IN (SELECT barcode FROM ebm_pool_media)")
            self.db.execute(
                "INSERT OR IGNORE INTO ebm_media(barcode, state, append_at, busy, recycled) "
                "SELECT barcode, state, append_at, busy, recycled FROM ebm_pool_media")
            self.db.execute("DROP TABLE ebm_pool_media")
            self.db.execute("DROP TABLE IF EXISTS ebm_pools")

    @property
    def empty_note(self) -> str:
        """What "not found" messages add when the file holds no EBM tables yet."""
        return "" if self.has_tables else " (no EBM backups yet)"

    @classmethod
    def for_root(cls, root: Path, *, readonly: bool = False) -> Catalog:
        return cls(Path(root) / CATALOG_NAME, readonly=readonly)

    def close(self) -> None:
        self.db.close()

    # -- transactions ---------------------------------------------------------------------
    def tx(self) -> _Tx:
        return _Tx(self.db)

    def q(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, tuple(args)).fetchall()

    # -- pools (the library's pools table; ebm_media for the EBM's write state) -----------
    def create_pool(self, name: str, description: str = "EBM backup pool", *,
                    retention_days: int | None = None) -> None:
        """A new pool in the library's ``pools`` table (``vtl pool list`` shows it too)."""
        if not POOL_NAME.fullmatch(name or ""):
            raise CatalogError(f"bad pool name {name!r} (letters, digits, . _ -)")
        if retention_days is not None and retention_days < 0:
            raise CatalogError("the retention in days must not be negative")
        try:
            self.db.execute(
                "INSERT INTO pools(name, description, retention_days, created) VALUES (?,?,?,?)",
                (name, description, retention_days, _pool_created()))
        except sqlite3.IntegrityError:
            raise CatalogError(f"pool {name!r} already exists") from None

    def pools(self) -> list[str]:
        return [r["name"] for r in self.q("SELECT name FROM pools ORDER BY name")]

    def pool(self, name: str) -> sqlite3.Row | None:
        rows = self.q("SELECT * FROM pools WHERE name=?", (name,))
        return rows[0] if rows else None

    def require_pool(self, name: str) -> None:
        if self.pool(name) is None:
            raise CatalogError(f"no pool named {name!r} (create it with `ebm pool create`)")

    def add_to_pool(self, pool: str, *barcodes: str) -> None:
        """Hand library cartridges to the EBM as members of ``pool`` (their pool in the
        library's catalog changes too: that is the one place membership is kept). All or
        none: one unknown or already handed-over cartridge refuses the lot."""
        self.require_pool(pool)
        with self.tx():
            for barcode in barcodes:
                cart = self.db.execute("SELECT pool FROM cartridges WHERE barcode=?",
                                       (barcode,)).fetchone()
                if cart is None:
                    raise CatalogError(f"no cartridge {barcode} in the library "
                                       "(create it with `vtl cartridge create`)")
                if is_cleaning_label(barcode):
                    raise CatalogError(f"{barcode} is a cleaning cartridge: it holds no data")
                if self.db.execute("SELECT 1 FROM ebm_media WHERE barcode=?", (barcode,)).fetchone():
                    raise CatalogError(f"cartridge {barcode} is already in pool {cart['pool']!r}")
                self.db.execute("UPDATE cartridges SET pool=? WHERE barcode=?", (pool, barcode))
                self.db.execute("INSERT INTO ebm_media(barcode) VALUES (?)", (barcode,))

    _MEDIA = "SELECT m.*, c.pool AS pool FROM ebm_media m LEFT JOIN cartridges c USING (barcode)"

    def pool_media(self, pool: str | None = None) -> list[sqlite3.Row]:
        """The EBM's cartridges (with their pool), of one pool or all."""
        if pool is None:
            return self.q(f"{self._MEDIA} ORDER BY c.pool, m.barcode")
        return self.q(f"{self._MEDIA} WHERE c.pool=? ORDER BY m.barcode", (pool,))

    def reserve_media(self, pool: str, backup_id: int, exclude: Iterable[str] = ()) -> sqlite3.Row | None:
        """Pick and mark busy the cartridge to write next: an appendable one first (fills
        cartridges before opening new ones), else a scratch one. Atomic across processes."""
        excl = list(exclude)
        with self.tx():
            marks = ",".join("?" * len(excl)) or "''"
            row = self.db.execute(
                f"""{self._MEDIA} WHERE c.pool=? AND m.busy IS NULL
                    AND m.state IN ('append','scratch') AND m.barcode NOT IN ({marks})
                    ORDER BY m.state='scratch', m.barcode LIMIT 1""",
                (pool, *excl),
            ).fetchone()
            if row is None:
                return None
            self.db.execute("UPDATE ebm_media SET busy=? WHERE barcode=?", (backup_id, row["barcode"]))
        return row

    def release_media(self, barcode: str, *, append_at: int | None = None,
                      state: str | None = None) -> None:
        sets, args = ["busy=NULL"], []
        if append_at is not None:
            sets.append("append_at=?")
            args.append(append_at)
        if state is not None:
            sets.append("state=?")
            args.append(state)
        self.db.execute(
            f"UPDATE ebm_media SET {', '.join(sets)} WHERE barcode=?", (*args, barcode)
        )

    def media(self, barcode: str) -> sqlite3.Row | None:
        rows = self.q(f"{self._MEDIA} WHERE m.barcode=?", (barcode,))
        return rows[0] if rows else None

    # -- datasets -------------------------------------------------------------------------
    def add_dataset(self, name: str, translator: str, source: str, pool: str | None,
                    options: dict[str, Any] | None = None) -> None:
        if not name or "@" in name or "/" in name or name.isdigit():
            raise CatalogError(f"bad dataset name {name!r} (no '@' or '/', not all digits)")
        try:
            self.db.execute(
                "INSERT INTO ebm_datasets VALUES (?, ?, ?, ?, ?, ?)",
                (name, translator, source, pool, json.dumps(options or {}), time.time()),
            )
        except sqlite3.IntegrityError:
            raise CatalogError(f"dataset {name!r} already exists") from None

    def dataset(self, name: str) -> sqlite3.Row | None:
        rows = self.q("SELECT * FROM ebm_datasets WHERE name=?", (name,))
        return rows[0] if rows else None

    def set_dataset_options(self, name: str, options: dict[str, Any]) -> None:
        self.db.execute("UPDATE ebm_datasets SET options=? WHERE name=?",
                        (json.dumps(options), name))

    def datasets(self) -> list[sqlite3.Row]:
        return self.q("SELECT * FROM ebm_datasets ORDER BY name")

    # -- backups --------------------------------------------------------------------------
    def begin_backup(self, dataset: str, level: str, parent: int | None, translator: str,
                     options: dict[str, Any], uuid: str | None = None) -> Backup:
        u = uuid or str(uuidlib.uuid4())
        options = {**options, "pid_start": proc_start(os.getpid())}
        cur = self.db.execute(
            """INSERT INTO ebm_backups(uuid, dataset, level, parent, translator, started, state,
               pid, options) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)""",
            (u, dataset, level, parent, translator, time.time(), os.getpid(), json.dumps(options)),
        )
        return self.backup(cur.lastrowid)

    def set_backup_options(self, backup_id: int, options: dict[str, Any]) -> None:
        self.db.execute("UPDATE ebm_backups SET options=? WHERE id=?", (json.dumps(options), backup_id))

    def _row_to_backup(self, r: sqlite3.Row) -> Backup:
        d = dict(r)
        d["options"] = json.loads(d["options"] or "{}")
        return Backup(**d)

    def backup(self, ident: int | str) -> Backup:
        """A backup by catalog id or by uuid (or a prefix of at least 4 characters).

        A string of digits may be either: the short uuid `ebm list` shows is 8 hex digits,
        about 2% of which are all decimal, while catalog ids stay short. So a digit string
        shorter than 8 is an id first and a uuid prefix second; 8 digits or more the reverse.
        """
        if isinstance(ident, int):
            rows = self._backup_rows_by_id(ident)
        elif ident.isdigit() and len(ident) < 8:
            rows = self._backup_rows_by_id(int(ident)) or self._backup_rows_by_uuid(ident)
        elif ident.isdigit():
            rows = self._backup_rows_by_uuid(ident) or self._backup_rows_by_id(int(ident))
        else:
            rows = self._backup_rows_by_uuid(ident)
        if not rows:
            raise CatalogError(f"no backup {ident!r}{self.empty_note}")
        return self._row_to_backup(rows[0])

    def _backup_rows_by_id(self, backup_id: int) -> list[sqlite3.Row]:
        return self.q("SELECT * FROM ebm_backups WHERE id=?", (backup_id,))

    def _backup_rows_by_uuid(self, ident: str) -> list[sqlite3.Row]:
        if len(ident) < 4:  # too short to be a uuid prefix anyone means
            return self.q("SELECT * FROM ebm_backups WHERE uuid=?", (ident,))
        rows = self.q("SELECT * FROM ebm_backups WHERE uuid=? OR uuid LIKE ?",
                      (ident, f"{ident}%"))
        if len(rows) > 1:
            raise CatalogError(f"backup id {ident!r} is ambiguous")
        return rows

    def backups(self, dataset: str | None = None, states: Iterable[str] | None = None) -> list[Backup]:
        sql, args = "SELECT * FROM ebm_backups WHERE 1", []
        if dataset is not None:
            sql += " AND dataset=?"
            args.append(dataset)
        if states is not None:
            st = list(states)
            sql += f" AND state IN ({','.join('?' * len(st))})"
            args += st
        return [self._row_to_backup(r) for r in self.q(sql + " ORDER BY started, id", args)]

    def last_good(self, dataset: str) -> Backup | None:
        rows = self.q(
            "SELECT * FROM ebm_backups WHERE dataset=? AND state='done' ORDER BY started DESC, id DESC LIMIT 1",
            (dataset,),
        )
        return self._row_to_backup(rows[0]) if rows else None

    def chain(self, backup: Backup) -> list[Backup]:
        """The baseline and incrementals, oldest first, that restore ``backup``'s point."""
        out = [backup]
        seen = {backup.id}
        while out[-1].parent is not None:
            parent = self.backup(out[-1].parent)
            if parent.id in seen:
                raise CatalogError(f"backup chain of {backup.uuid} loops")
            seen.add(parent.id)
            out.append(parent)
        if out[-1].level != "full":
            raise CatalogError(f"backup {backup.uuid} has no baseline in its chain")
        return list(reversed(out))

    def finish_backup(self, backup_id: int, *, size: int, nfiles: int, blocks: int, sha256: str,
                      volumes: list[Volume], files: Iterable[FileRow] | PackedIndex,
                      state: bytes | str | IO[bytes] | None,
                      media_updates: list[tuple[str, int, str]], level: str | None = None,
                      parent: int | None = None, staged: int = 0) -> None:
        """Record a durable backup in one transaction: extents, file index, translator state,
        the cartridges' new append points, and state=done. Called only after the trailer's
        filemark is synced, so the catalog never claims more than the tape holds.

        ``staged``: the bytes of ``files`` (a PackedIndex) whose rows an
        :class:`IndexStager` has inserted already (only the rest go in here); -1 when a
        stager inserted rows that are not ``files``' (they are dropped first)."""
        with self.tx():
            for v in volumes:
                self.db.execute(
                    "INSERT OR REPLACE INTO ebm_backup_volumes VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (backup_id, v.seq, v.barcode, v.first_file, v.last_file, v.first_object,
                     v.last_object, v.data_object, v.first_block, v.last_block),
                )
            if staged < 0:
                self.db.execute("DELETE FROM ebm_files WHERE backup=?", (backup_id,))
            self._insert_files(backup_id, files, max(staged, 0))
            if state is not None:
                self._store_state(backup_id, state)
            for barcode, append_at, mstate in media_updates:
                self.db.execute(
                    "UPDATE ebm_media SET append_at=?, state=?, busy=NULL WHERE barcode=?",
                    (append_at, mstate, barcode),
                )
            self.db.execute(
                """UPDATE ebm_backups SET state='done', finished=?, size=?, nfiles=?, blocks=?,
                   sha256=?, error=NULL WHERE id=?""",
                (time.time(), size, nfiles, blocks, sha256, backup_id),
            )
            if level is not None:  # what was really written (a translator may fall back to full)
                self.db.execute("UPDATE ebm_backups SET level=?, parent=? WHERE id=?",
                                (level, parent, backup_id))

    def _store_state(self, backup_id: int, state: bytes | str | IO[bytes]) -> None:
        """A state given as a file goes in a chunk at a time (SQLite's incremental blob I/O
        into a zeroblob of its size): a state of millions of paths is never held whole."""
        if not hasattr(state, "read"):
            self.db.execute("INSERT OR REPLACE INTO ebm_states VALUES (?, ?)", (backup_id, state))
            return
        size = state.seek(0, 2)
        state.seek(0)
        self.db.execute("INSERT OR REPLACE INTO ebm_states VALUES (?, zeroblob(?))",
                        (backup_id, size))
        with self.db.blobopen("ebm_states", "state", backup_id) as blob:
            while chunk := state.read(_BLOB_CHUNK):
                blob.write(chunk)

    def state_file(self, backup_id: int) -> IO[bytes] | None:
        """A backup's translator state copied into an unlinked temporary file (at offset 0), a
        chunk at a time; None if none is on record. For states too big to hold (the
        filesystem translator's at millions of paths); the copy ends the read at once, so
        no read transaction stays open for the length of a backup."""
        rows = self.q("SELECT typeof(state) FROM ebm_states WHERE backup=?", (backup_id,))
        if not rows or rows[0][0] == "null":
            return None
        out = tempfile.TemporaryFile(prefix="ebm-parent-state-")
        try:
            with self.db.blobopen("ebm_states", "state", backup_id, readonly=True) as blob:
                while chunk := blob.read(_BLOB_CHUNK):
                    out.write(chunk)
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return out

    def state_head(self, backup_id: int, n: int = 8) -> tuple[str, bytes] | None:
        """(SQLite type, first ``n`` bytes) of a backup's state: lets the manager pick how to
        read it without loading it. None if none is on record."""
        rows = self.q("SELECT typeof(state), CAST(substr(state, 1, ?) AS BLOB) FROM ebm_states "
                      "WHERE backup=?", (n, backup_id))
        if not rows or rows[0][0] == "null":
            return None
        return rows[0][0], bytes(rows[0][1])

    def _insert_files(self, backup_id: int, files: Iterable[FileRow] | PackedIndex,
                      start: int = 0) -> None:
        """Insert the file index in batches, so memory does not grow with the file count: the
        batch's new paths first, then its rows, each finding its path id by a lookup in the
        same statement (no id map in Python). A :class:`PackedIndex` hands over its rows as
        ready parameter tuples decoded in C when the extension is built (no Python per row:
        that was ~40% of the insert at 200,000 files), else as plain tuples."""
        batches = (files.catalog_batches(backup_id, start)
                   if hasattr(files, "catalog_batches") else None)
        if batches is None:
            if start:
                raise CatalogError("a staged index needs the C extension's catalog rows")
            batches = ((batch, [(r[1],) for r in batch])
                       for batch in _row_batches(backup_id, files))
        for batch, paths in batches:
            _insert_batch(self.db, batch, paths)

    def fail_backup(self, backup_id: int, error: str) -> None:
        from tape_formats.archive.entry import printable_path  # a name in it may not be UTF-8

        with self.tx():
            cur = self.db.execute(
                "UPDATE ebm_backups SET state='failed', finished=?, error=? WHERE id=? AND state='running'",
                (time.time(), printable_path(error)[:500], backup_id),
            )
            if cur.rowcount == 1:  # rows an IndexStager inserted while it ran
                self.db.execute("DELETE FROM ebm_files WHERE backup=?", (backup_id,))
            self.db.execute("UPDATE ebm_media SET busy=NULL WHERE busy=?", (backup_id,))

    def reap_dead_jobs(self) -> list[tuple[int, list[str]]]:
        """Mark running jobs whose process is gone as failed and free their cartridges.

        Why: a SIGKILLed backup cannot clean up after itself; the next process must. Returns
        (job, cartridges it held) for the jobs *this* call reaped (the UPDATE is conditional,
        so two processes never both reap one job), so the caller can erase the torn tails.
        """
        dead = [
            r["id"] for r in self.q("SELECT id, pid, options FROM ebm_backups WHERE state='running'")
            if r["pid"] is None
            or not _pid_alive(r["pid"], json.loads(r["options"] or "{}").get("pid_start"))
        ]
        out = []
        for bid in dead:
            with self.tx():
                held = [r[0] for r in self.db.execute(
                    "SELECT barcode FROM ebm_media WHERE busy=?", (bid,))]
                cur = self.db.execute(
                    "UPDATE ebm_backups SET state='failed', finished=?, error=? "
                    "WHERE id=? AND state='running'",
                    (time.time(), "the backup process died (killed or crashed)", bid))
                if cur.rowcount != 1:
                    continue
                self.db.execute("DELETE FROM ebm_files WHERE backup=?", (bid,))  # staged rows
                self.db.execute("UPDATE ebm_media SET busy=NULL WHERE busy=?", (bid,))
            out.append((bid, held))
        return out

    def set_state(self, backup_id: int, state: str) -> None:
        self.db.execute("UPDATE ebm_backups SET state=? WHERE id=?", (state, backup_id))

    def volumes(self, backup_id: int) -> list[Volume]:
        return [Volume(**dict(r)) for r in self.q(
            "SELECT * FROM ebm_backup_volumes WHERE backup=? ORDER BY seq", (backup_id,))]

    def translator_state(self, backup_id: int) -> bytes | str | None:
        rows = self.q("SELECT state FROM ebm_states WHERE backup=?", (backup_id,))
        return rows[0][0] if rows else None

    def files(self, backup_id: int, like: str | None = None) -> list[FileRow]:
        sql = """SELECT p.path, f.kind, f.size, f.mtime_ns, f.mode, f.uid, f.gid, f.sha256,
                 f.header_offset, f.data_offset, f.deleted, f.backup, f.linkname
                 FROM ebm_files f JOIN ebm_paths p ON p.id=f.path WHERE f.backup=?"""
        args: list[Any] = [backup_id]
        if like is not None:
            sql += f" AND {_GLOB}"
            args.append(_to_db(like))
        return [_file_row(r) for r in self.q(sql + " ORDER BY f.header_offset", args)]

    def iter_stream_rows(self, backup_id: int) -> Iterator[tuple[int, str, bytes | None]]:
        """(header_offset, path, sha256) of every row of a backup that is not a deletion, in
        stream order, read as it goes (a cursor, not a list, and no FileRow each): what a
        whole-backup restore checks each entry against."""
        cur = self.db.execute(
            """SELECT f.header_offset, p.path, f.sha256
               FROM ebm_files f JOIN ebm_paths p ON p.id=f.path
               WHERE f.backup=? AND f.deleted=0 ORDER BY f.header_offset""", (backup_id,))
        try:
            for offset, path, sha256 in cur:
                yield offset, _from_db(path), sha256
        finally:
            cur.close()

    def files_summary(self, backup_id: int) -> tuple[int, int, int]:
        """(rows that are not deletions, their bytes, how many have no stream offset)."""
        r = self.q("""SELECT count(*), coalesce(sum(size), 0), coalesce(sum(header_offset < 0), 0)
                      FROM ebm_files WHERE backup=? AND deleted=0""", (backup_id,))[0]
        return r[0], r[1], r[2]

    def files_at(self, backup_id: int, exact: list[str], under: list[str]) -> list[FileRow]:
        """Rows whose path is in ``exact`` or below a directory in ``under`` (no glob
        characters in either): what a path restore needs without reading the whole index."""
        conds, args = [], [backup_id]
        if exact:
            conds.append(f"p.path IN ({','.join('?' * len(exact))})")
            args += [_to_db(p) for p in exact]
        for d in under:
            conds.append(_GLOB)
            args.append(_to_db(d + "/*"))
        if not conds:
            return []
        sql = f"""SELECT p.path, f.kind, f.size, f.mtime_ns, f.mode, f.uid, f.gid, f.sha256,
                  f.header_offset, f.data_offset, f.deleted, f.backup, f.linkname
                  FROM ebm_paths p JOIN ebm_files f ON f.path=p.id AND f.backup=?
                  WHERE {' OR '.join(conds)} ORDER BY f.header_offset"""
        return [_file_row(r) for r in self.q(sql, args)]

    def file(self, backup_id: int, path: str) -> FileRow | None:
        """One path's row in one backup (e.g. the file a hard link of that backup names)."""
        rows = self.files_at(backup_id, [path], [])
        return rows[0] if rows else None

    def next_header_offset(self, backup_id: int, offset: int) -> int | None:
        rows = self.q("SELECT min(header_offset) FROM ebm_files WHERE backup=? AND header_offset>?",
                      (backup_id, offset))
        return rows[0][0] if rows else None

    def positions(self, backup_id: int) -> dict[str, tuple[str, int, int, int, int]]:
        """path -> (cartridge, tape file, block in file, byte in block, logical object)."""
        return {_from_db(r[0]): tuple(r[1:]) for r in self.q(
            "SELECT path, barcode, tape_file, block_in_file, byte_in_block, object "
            "FROM ebm_file_positions WHERE backup=?", (backup_id,))}

    def drop_backup_index(self, backup_id: int) -> None:
        """Free an expired backup's index rows (the backup row stays, state=expired)."""
        with self.tx():
            self.db.execute("DELETE FROM ebm_files WHERE backup=?", (backup_id,))
            self.db.execute("DELETE FROM ebm_states WHERE backup=?", (backup_id,))
            self.db.execute("UPDATE ebm_backups SET state='expired' WHERE id=?", (backup_id,))

    def compact(self) -> None:
        """Drop paths no file row uses any more and give the space back."""
        self.db.execute("DELETE FROM ebm_paths WHERE id NOT IN (SELECT DISTINCT path FROM ebm_files)")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.execute("VACUUM")

    # -- schedules ------------------------------------------------------------------------
    def add_schedule(self, dataset: str, spec: str, options: dict[str, Any], next_run: float) -> int:
        cur = self.db.execute(
            "INSERT INTO ebm_schedules(dataset, spec, options, next_run) VALUES (?,?,?,?)",
            (dataset, spec, json.dumps(options), next_run),
        )
        return int(cur.lastrowid or 0)

    def schedules(self) -> list[sqlite3.Row]:
        return self.q("SELECT * FROM ebm_schedules ORDER BY id")

    def remove_schedule(self, sid: int) -> None:
        if self.db.execute("DELETE FROM ebm_schedules WHERE id=?", (sid,)).rowcount == 0:
            raise CatalogError(f"no schedule {sid}")

    def schedule_ran(self, sid: int, next_run: float, result: str) -> None:
        self.db.execute(
            "UPDATE ebm_schedules SET last_run=?, next_run=?, last_result=? WHERE id=?",
            (time.time(), next_run, result, sid),
        )


def _insert_batch(db: sqlite3.Connection, batch: list[tuple], paths: list[tuple]) -> None:
    """A batch of ``ebm_files`` parameters: its new paths first, then its rows, each finding
    its path id by a lookup in the same statement (no id map in Python)."""
    db.executemany("INSERT OR IGNORE INTO ebm_paths(path) VALUES (?)", paths)
    db.executemany(
        "INSERT OR REPLACE INTO ebm_files(backup, path, kind, size, mtime_ns, mode, uid, gid, "
        "sha256, header_offset, data_offset, deleted, linkname) "
        "VALUES (?,(SELECT id FROM ebm_paths WHERE path=?),?,?,?,?,?,?,?,?,?,?,?)", batch)


class IndexStager:
    """Inserts a running backup's file index while the backup is still writing, on its own
    thread and connection: the PackedIndex hands it each ~MiB of finished rows (it is the
    index's ``sink``), and :meth:`Catalog.finish_backup` then inserts only the rest.

    Why: at 200,000 small files the insert was ~2 s of CPU after the tape was done, on one
    core of two. Each chunk goes in through SQLite's C API with the GIL released for the
    whole chunk (``packed_index.stage_rows``): the sqlite3 module's executemany, which takes
    the GIL back for every row, made the first version of this class (7eb9d26) fight the
    writing pass for the GIL and cost ~2 s more CPU than it saved. What stays true: the backup is state='running'
    until ``finish_backup`` commits (and only 'done' backups are listed, restored, chained),
    so its staged rows are reachable through no finished backup; a failed backup's rows go
    in ``fail_backup``, a crashed one's when ``reap_dead_jobs`` marks it failed. Each chunk
    is its own short transaction (the write lock is never held across the backup, so the
    mover's cartridge reservations and other jobs go on), on a connection of its own
    committed with ``synchronous=NORMAL``: the final commit's WAL sync makes them durable with the rest.
    A failed insert stops the staging (``error``); ``close`` says how many bytes made it,
    always a prefix of the index, and ``finish_backup`` inserts from there."""

    def __init__(self, path: Path, backup_id: int) -> None:
        self.path = Path(path)
        self.backup_id = backup_id
        self.error: BaseException | None = None
        self.inserted = 0  # bytes of packed rows committed
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=4)  # memory stays flat
        self._thread = threading.Thread(target=self._run, name=f"ebm-index-{backup_id}",
                                        daemon=True)
        self._thread.start()

    def __call__(self, chunk: bytes) -> None:
        """The PackedIndex's sink: queue a chunk of whole rows (waits while 4 are queued)."""
        if self.error is None:
            self._q.put(chunk)

    def _run(self) -> None:
        from tape_formats.archive import packed_index

        while (chunk := self._q.get()) is not None:
            if self.error is not None:
                continue  # drained: close() still ends the loop
            try:
                packed_index.stage_rows(str(self.path), self.backup_id, chunk)
                self.inserted += len(chunk)
            except BaseException as e:  # finish_backup inserts the rest itself
                self.error = e

    def close(self) -> int:
        """Wait for the queued chunks; the bytes of rows inserted (a prefix of the index)."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        return self.inserted


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT/ROLLBACK: takes the write lock up front so two processes
    reserving cartridges can never both read the same free one."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
