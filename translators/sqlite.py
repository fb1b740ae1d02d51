"""The SQLite translator: a consistent snapshot of a live database, restorable without the app.

Backup uses SQLite's online backup API (``sqlite3.Connection.backup``) from a read-only
connection, copying ``step_pages`` pages at a time, so writers in other processes are blocked
only for one step and the copy is one transaction-consistent snapshot (SQLite restarts the copy
if another connection writes mid-way). The snapshot goes to a temporary file (``TMPDIR``),
is checked with ``PRAGMA integrity_check`` and archived as two members:

* ``<name>.ebm-sqlite.json`` - metadata: page size and count, user_version, application_id,
  tables with row counts, the SQLite version, the snapshot's sha256;
* ``<name>`` - the database file itself. The SQLite file format is public, stable and
  documented, so it is the neutral format here: GNU tar extracts a database any SQLite (or
  other reader of the format) opens, with no EBM involved.

Restore writes ``<target>/<name>`` through a temporary name, verifies the sha256 and
``PRAGMA integrity_check``, and only then renames it into place. Every backup is complete
(``supports_incremental = False``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path

from tape_formats.archive import ArchiveEntry, EntryData, IndexEntry, PaxWriter, check_member_path

from .base import (
    BackupResult,
    Progress,
    ProgressCallback,
    RestoreStats,
    Translator,
    TranslatorError,
    TranslatorState,
    delete_stale_members,
    file_row,
    stat_source,
)

CHUNK = 1024 * 1024
META_SUFFIX = ".ebm-sqlite.json"
STATE_FORMAT = "ebm-sqlite-state/1"
SQLITE_MAGIC = b"SQLite format 3\x00"


def _ro_uri(path: str) -> str:
    return "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"


def _describe(conn: sqlite3.Connection) -> dict:
    def one(sql: str):
        return conn.execute(sql).fetchone()[0]

    tables = {}
    for (tname,) in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ):
        quoted = '"' + tname.replace('"', '""') + '"'
        tables[tname] = one(f"SELECT count(*) FROM {quoted}")
    return {
        "page_size": one("PRAGMA page_size"),
        "page_count": one("PRAGMA page_count"),
        "user_version": one("PRAGMA user_version"),
        "application_id": one("PRAGMA application_id"),
        "integrity_check": one("PRAGMA integrity_check"),
        "tables": tables,
        "sqlite_version": sqlite3.sqlite_version,
    }


def _sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class SqliteTranslator(Translator):
    name = "sqlite"
    version = "1.0"
    supports_incremental = False
    step_pages = 1024

    def validate_source(self, source: str) -> None:
        if not source:
            raise TranslatorError("no SQLite database given")
        st = stat_source(source, "database")
        if not stat.S_ISREG(st.st_mode):
            raise TranslatorError(f"database {source} is not a regular file")
        try:
            with open(source, "rb") as f:
                magic = f.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise TranslatorError(f"cannot read database {source}: {exc.strerror}") from None
        if magic != SQLITE_MAGIC:
            raise TranslatorError(f"{source} is not an SQLite 3 database")

    def backup(self, source: str, parent_state: TranslatorState | None, writer: PaxWriter, *,
               progress: ProgressCallback | None = None) -> BackupResult:
        self.validate_source(source)
        name = os.path.basename(source)
        st = os.stat(source)
        with tempfile.TemporaryDirectory(prefix="ebm-sqlite-") as tmp:
            snap = os.path.join(tmp, name)
            try:
                src = sqlite3.connect(_ro_uri(source), uri=True)
                try:
                    dst = sqlite3.connect(snap)
                    try:
                        def step(status, remaining, total):
                            if progress is not None:
                                progress(Progress("snapshot", total - remaining, total, 0, None, name))

                        src.backup(dst, pages=self.step_pages, progress=step)
                        meta = _describe(dst)
                    finally:
                        dst.close()
                finally:
                    src.close()
            except sqlite3.Error as exc:
                raise TranslatorError(f"cannot snapshot {source}: {exc}") from None
            if meta["integrity_check"] != "ok":
                raise TranslatorError(f"snapshot of {source} fails integrity_check: {meta['integrity_check']}")
            meta["sha256"] = _sha256_file(snap)
            meta["name"] = name
            meta["source"] = os.path.abspath(source)
            size = os.path.getsize(snap)
            now = time.time_ns()
            rows: list[IndexEntry] = []
            meta_bytes = json.dumps(meta, indent=1, sort_keys=True).encode() + b"\n"
            for path, data, n, mtime in (
                (name + META_SUFFIX, meta_bytes, len(meta_bytes), now),
                (name, None, size, st.st_mtime_ns),
            ):
                entry = ArchiveEntry(path=path, kind="file", size=n, mode=stat.S_IMODE(st.st_mode),
                                     uid=st.st_uid, gid=st.st_gid, mtime_ns=mtime)
                if data is None:
                    with open(snap, "rb", buffering=0) as f:
                        loc = writer.add(entry, f)
                else:
                    loc = writer.add(entry, data)
                rows.append(file_row(entry, loc))
        members = [r.path for r in rows]
        rows += delete_stale_members(parent_state, members, writer)
        if progress is not None:
            progress(Progress("backup", 2, 2, size, size, name))
        state = {"format": STATE_FORMAT, "sha256": meta["sha256"], "size": size, "created_ns": now,
                 "members": members}
        return BackupResult(state=state, entries=rows, warnings=[], level_hint="baseline")

    def restore(self, entries: Iterable[tuple[ArchiveEntry, EntryData]], target: Path, *,
                select: Callable[[str], bool] | None = None,
                progress: ProgressCallback | None = None) -> RestoreStats:
        target = Path(target)
        target.mkdir(parents=True, exist_ok=True)
        stats = RestoreStats()
        metas: dict[str, dict] = {}
        for entry, data in entries:
            if entry.deleted or entry.kind != "file":
                continue
            path = check_member_path(entry.path)
            if "/" in path:
                raise TranslatorError(f"unexpected member {path!r} in an SQLite backup")
            if path.endswith(META_SUFFIX):
                try:
                    metas[path[: -len(META_SUFFIX)]] = json.loads(data.read())
                except ValueError:
                    raise TranslatorError(f"damaged metadata member {path!r}") from None
                continue
            if select is not None and not select(path):
                stats.skipped += 1
                continue
            tmp = target / f".{path}.ebm-partial"
            digest = hashlib.sha256()
            try:
                with open(tmp, "wb") as out:
                    while chunk := data.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        stats.bytes += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                self._check(tmp, path, digest.hexdigest(), metas.get(path))
                os.chmod(tmp, entry.mode)
                os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns))
                os.replace(tmp, target / path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            stats.files += 1
            stats.entries += 1
            if progress is not None:
                progress(Progress("restore", stats.entries, None, stats.bytes, None, path))
        return stats

    @staticmethod
    def _check(tmp: Path, name: str, sha256: str, meta: dict | None) -> None:
        if meta is not None and meta.get("sha256") not in (None, sha256):
            raise TranslatorError(f"restored database {name} does not match its recorded sha256")
        try:
            conn = sqlite3.connect(_ro_uri(str(tmp)), uri=True)
            try:
                result = conn.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise TranslatorError(f"restored database {name} cannot be opened: {exc}") from None
        if result != "ok":
            raise TranslatorError(f"restored database {name} fails integrity_check: {result}")
