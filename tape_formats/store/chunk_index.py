"""Where each chunk of a store is: chunk id -> (pack, offset, stored length), in SQLite.

``<store>/index.sqlite``, one table keyed by the 32-byte id (WITHOUT ROWID: the row is the
key's B-tree entry, about 60 bytes per chunk, so 10 million chunks are ~0.6 GB on disk and
a lookup reads a few pages, not the whole index into memory). WAL journal with
``synchronous=FULL``: a commit is durable when it returns, and readers (other processes,
other cartridges) never wait for a writer. Several writers' commits queue on SQLite's own
lock (``busy_timeout``).

A row exists only once its record is durable in its pack (chunk_store.py commits rows after
the pack's fdatasync), so a chunk the index knows is a chunk that survives a crash: a writer
that finds one needs no flush of its own for it. Duplicates (two writers storing the same
new chunk at once) keep the first row (``INSERT OR IGNORE``); the other copy is dead space
that compaction (gc.py) drops.

A process killed inside a COMMIT, after its frames reached the WAL and before the wal-index
(``-shm``) published them, leaves a transaction *in flight*: the live connections do not see
it, yet the next open that recovers the WAL (after every connection died) replays it, unless
a later write transaction overwrote its frames first. ``settle`` is such a write: after it,
what the live connections see is what any recovery will see (chunk_store.py, ``Hold``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

INDEX_NAME = "index.sqlite"
_LOOKUP_BATCH = 500  # ids per SELECT ... IN (...), under SQLite's variable limit
_PAGE = 20_000  # rows per page of a full listing
# Rows per INSERT (4 variables each: under the 999 of SQLite before 3.32). A statement runs
# with the GIL released once, where ``executemany`` releases and takes it for every row: a
# writer's background flush indexes ~500 rows while its cut and compress threads want the
# GIL (chunk_store.py); 3,700 rows took 7.1-8.3 ms of CPU this way against 8.7-10.4.
_INSERT_BATCH = 200


def _insert(n: int) -> str:
    return "INSERT OR IGNORE INTO chunks VALUES " + ",".join(("(?, ?, ?, ?)",) * n)


class Location(NamedTuple):
    pack: int
    offset: int
    stored: int  # stored bytes (compressed chunk) in the record


class ChunkIndex:
    """The index of one store; one SQLite connection, usable from any thread."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / INDEX_NAME
        self._db = sqlite3.connect(self.path, timeout=120, check_same_thread=False,
                                   isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS chunks (id BLOB PRIMARY KEY, pack INTEGER NOT NULL,"
                " offset INTEGER NOT NULL, stored INTEGER NOT NULL) WITHOUT ROWID")

    def get(self, chunk_id: bytes) -> Location | None:
        with self._lock:
            row = self._db.execute("SELECT pack, offset, stored FROM chunks WHERE id = ?",
                                   (chunk_id,)).fetchone()
        return Location(*row) if row else None

    def lookup(self, ids: Sequence[bytes]) -> dict[bytes, Location]:
        """The locations of those of ``ids`` the index holds."""
        found: dict[bytes, Location] = {}
        unique = list(dict.fromkeys(ids))
        with self._lock:
            for i in range(0, len(unique), _LOOKUP_BATCH):
                part = unique[i:i + _LOOKUP_BATCH]
                marks = ",".join("?" * len(part))
                for cid, pack, offset, stored in self._db.execute(
                        f"SELECT id, pack, offset, stored FROM chunks WHERE id IN ({marks})",
                        part):
                    found[cid] = Location(pack, offset, stored)
        return found

    def add(self, rows: Iterable[tuple[bytes, Location]]) -> None:
        """Record new chunks, durably (one transaction); an id already there keeps its row
        (the first of two in ``rows``). ``_INSERT_BATCH`` rows per INSERT statement."""
        rows = list(rows)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for i in range(0, len(rows), _INSERT_BATCH):
                    part = rows[i:i + _INSERT_BATCH]
                    self._db.execute(_insert(len(part)),
                                     [v for cid, loc in part for v in (cid, *loc)])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def move(self, rows: Iterable[tuple[bytes, int, Location]]) -> None:
        """Point chunks at their new copies (compaction), durably, in one transaction:
        (id, old pack, new location); a row no longer in the old pack is left alone."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "UPDATE chunks SET pack = ?, offset = ?, stored = ? WHERE id = ? AND pack = ?",
                    ((loc.pack, loc.offset, loc.stored, cid, old) for cid, old, loc in rows))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def remove(self, ids: Iterable[bytes]) -> None:
        """Forget chunks (one transaction)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM chunks WHERE id = ?", ((i,) for i in ids))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def settle(self) -> None:
        """Make what the index shows final: one write transaction (a fresh random value in a
        one-row table), whose frames go where those of a transaction left in flight by a
        killed process would be published, so no later recovery of the WAL replays that
        one (its frames past ours no longer chain to a valid commit)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("CREATE TABLE IF NOT EXISTS settled (k INTEGER PRIMARY KEY,"
                                 " nonce BLOB NOT NULL)")
                self._db.execute("INSERT OR REPLACE INTO settled VALUES (0, ?)",
                                 (os.urandom(16),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def rows(self) -> Iterator[tuple[bytes, Location]]:
        """Every chunk the index holds, in id order, a page at a time (10 million rows do
        not fit in memory as Python objects)."""
        after = b""
        while True:
            with self._lock:
                page = self._db.execute(
                    "SELECT id, pack, offset, stored FROM chunks WHERE id > ? ORDER BY id "
                    "LIMIT ?", (after, _PAGE)).fetchall()
            for cid, pack, offset, stored in page:
                yield cid, Location(pack, offset, stored)
            if len(page) < _PAGE:
                return
            after = page[-1][0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
