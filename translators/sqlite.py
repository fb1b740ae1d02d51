"""The SQLite translator: consistent snapshots of a live database, full or page-level delta.

Every backup reads the live database file in place, pinned by one read transaction
(:func:`_pin_in_place`) while it is hashed page by page (BLAKE3, 16 bytes a page,
:mod:`translators.block_hashes`; the file's sha256 on a second thread) and its pages (a
baseline) or changed pages (an incremental) are written. In a rollback-journal mode that is
the transaction's SHARED lock (writers wait to commit until the read ends; a hot journal is
rolled back by SQLite first); in WAL mode, a read transaction begun on a WAL wholly
checkpointed into the file (writers go on, into the WAL). The file is read through a
descriptor closed only after that transaction ended: closing any descriptor of a file drops
every POSIX lock the process holds on it, SQLite's included. A baseline runs ``PRAGMA
integrity_check`` and counts the rows inside the same transaction; an incremental does not
(both read every page again; the restore runs integrity_check).

A database that cannot be pinned (WAL mode without write access: no checkpoint; a reader
keeping the checkpoint from finishing; locked longer than the busy timeout) is copied with
SQLite's online backup API (``sqlite3.Connection.backup``, ``step_pages`` pages at a time,
restarted by SQLite when another connection writes between steps, so steady writers can keep
it from finishing) into a temporary file (``TMPDIR``), checked with integrity_check, and
read from there. Then:

* baseline (no usable parent state, or the page size changed): two members,
  ``<name>.ebm-sqlite.json`` (metadata: page size and count, user_version, application_id,
  tables with row counts, the SQLite version, the snapshot's sha256) and ``<name>``, the
  database file itself. The SQLite file format is public and stable, so it is the neutral
  format here: GNU tar extracts a database any SQLite opens, with no EBM involved;
* incremental: the metadata member and ``<name>.ebm-sqlite-delta.NNNNNN`` (NNNNNN counts the
  backups of the chain), a page delta holding only the pages whose hash differs from the
  parent's, plus the new page count (a VACUUM that shrank the file truncates it). Its layout
  is in :mod:`translators.page_delta` and docs/sqlite-page-delta.md.

The state carries the page hashes as one base64 string (4 MiB of hashes for a 1 GB database
with 4 KiB pages; no Python object per page), the page size and count and the snapshot's
sha256, which the next delta names as its parent.

Restore writes ``<target>/<name>`` through a temporary name: the baseline file, then each
delta of the chain in order (each must apply to the file its predecessor made, by sha256),
then checks the sha256 recorded at backup time and ``PRAGMA integrity_check``, and only then
renames it into place, after removing a ``-journal``, ``-wal`` or ``-shm`` file left beside
that name (SQLite would apply it to the restored file). The bytes equal the snapshot of that
backup.

Consolidation (``ebm consolidate``): the chain is restored into a work directory and written
back as a baseline whose state is the last incremental's (same pages, same hashes).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import sqlite3
import stat
import tempfile
import time
import urllib.parse
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tape_formats.archive import ArchiveEntry, EntryData, IndexEntry, PaxWriter

from . import block_hashes
from .base import (
    BackupResult,
    Progress,
    ProgressCallback,
    TranslatorError,
    TranslatorState,
    delete_stale_members,
    file_row,
    stat_source,
)
from .delta_restore import DeltaRebuild, DeltaTranslator
from .page_delta import DeltaError, DeltaHeader, DeltaReader, apply_delta, read_header

CHUNK = 1024 * 1024
SCAN_CHUNK = 4 * CHUNK
BLOCK = 64 * 1024  # bytes hashed whole before their pages; a multiple of every page size
META_SUFFIX = ".ebm-sqlite.json"
DELTA_INFIX = ".ebm-sqlite-delta."
STATE_FORMAT = "ebm-sqlite-state/3"  # /3: page hashes are BLAKE3 (/2: sha256)
SQLITE_MAGIC = b"SQLite format 3\x00"
# A database's companions. Left beside a restored file (a restore over an older copy of the
# database), SQLite would apply them to it on the first open: a hot journal's pages rolled
# "back" into the restored file (seen: "database disk image is malformed"), a WAL's frames
# replayed over it. The restore removes them before the file takes its name.
JOURNAL_SUFFIXES = ("-journal", "-wal", "-shm")
NOT_CHECKED = "not run (in place)"  # an incremental's metadata: integrity_check is the restore's


def _ro_uri(path: str) -> str:
    return "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"


def _describe(conn: sqlite3.Connection, *, checks: bool = True) -> dict:
    """The metadata member's facts. ``checks=False`` (an incremental read in place) leaves
    out what reads every page again, integrity_check and row counts (``null``)."""
    def one(sql: str):
        return conn.execute(sql).fetchone()[0]

    tables = {}
    for (tname,) in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ):
        quoted = '"' + tname.replace('"', '""') + '"'
        tables[tname] = one(f"SELECT count(*) FROM {quoted}") if checks else None
    return {
        "page_size": one("PRAGMA page_size"),
        "page_count": one("PRAGMA page_count"),
        "user_version": one("PRAGMA user_version"),
        "application_id": one("PRAGMA application_id"),
        "integrity_check": one("PRAGMA integrity_check") if checks else NOT_CHECKED,
        "tables": tables,
        "sqlite_version": sqlite3.sqlite_version,
    }


def _connect_uri(path: str) -> str:
    """Read-write where the EBM may write the file (a hot journal is rolled back only by a
    connection that may write; WAL mode needs the checkpoint), read-only elsewhere."""
    uri = _ro_uri(path)
    return uri.replace("?mode=ro", "?mode=rw") if os.access(path, os.W_OK) else uri


@dataclass(slots=True)
class Pinned:
    """A read transaction on ``conn`` in which the live database file is the snapshot, and
    ``fd``, the descriptor the file is read through. :meth:`close` ends the transaction
    before it closes ``fd``: closing a descriptor of the file drops the process's POSIX
    locks on it (SQLite's SHARED lock included), so ``fd`` may not go while they must hold."""

    conn: sqlite3.Connection
    fd: int

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            os.close(self.fd)


def _begin_read(conn: sqlite3.Connection) -> None:
    """Begin a read transaction and make it take its locks (a deferred BEGIN takes none)."""
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()


def _begin_on_backfilled_wal(conn: sqlite3.Connection, uri: str, busy_timeout: float) -> None:
    """Begin ``conn``'s read transaction on a WAL that is wholly copied into the database
    file, so that it reads that file alone (see :func:`_pin_in_place`).

    A second connection holds the write lock (``BEGIN IMMEDIATE``: no commit can slip in)
    while a PASSIVE checkpoint copies every frame back and the read begins; a busy writer is
    only waited for, never raced. A PASSIVE checkpoint gives up at once when another one
    runs (a writer's automatic checkpoint after its last commit): it is retried until
    ``busy_timeout``, as is one that a reader still on an older snapshot keeps from
    finishing; OperationalError then."""
    gate = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout)
    try:
        gate.execute("BEGIN IMMEDIATE")
        deadline = time.monotonic() + busy_timeout
        while True:
            busy, frames, backfilled = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not busy and frames == backfilled:
                break
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError("the WAL checkpoint cannot finish (another "
                                               "checkpoint, or a reader on an older snapshot)")
            time.sleep(0.01)
        _begin_read(conn)
    finally:
        gate.close()  # rolls back: writers go on, into the WAL


def _require_intact(what: str, meta: dict) -> None:
    if meta["integrity_check"] not in ("ok", NOT_CHECKED):
        raise TranslatorError(f"{what} fails integrity_check: {meta['integrity_check']}")


def _pin_in_place(source: str, busy_timeout: float = 5.0) -> Pinned | None:
    """A read transaction in which the database file itself is the snapshot, or None.

    Rollback-journal modes (DELETE, TRUNCATE, PERSIST, MEMORY, OFF): the transaction's SHARED
    lock on the file keeps every writer from committing (a commit needs the EXCLUSIVE lock;
    writers wait in their busy handler) until it ends; beginning it, SQLite rolls back a hot
    journal a crashed writer left. WAL mode: a read transaction begun when every WAL frame is
    already in the database file takes WAL read-lock 0 and reads that file alone, and while
    it holds that lock no checkpoint may write into the file (a checkpointer needs read-lock
    0 exclusively), so the file's bytes stay the snapshot however much others commit
    meanwhile (into the WAL): :func:`_begin_on_backfilled_wal`. None (the caller then copies
    a snapshot with the backup API) for a WAL database we may not write (the write lock and
    the checkpoint), a reader keeping the checkpoint from finishing, a lock not granted
    within ``busy_timeout``, a switch of journal mode, or a file replaced under its name
    meanwhile."""
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    conn = None
    try:
        uri = _connect_uri(source)
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout)
        if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            _begin_on_backfilled_wal(conn, uri, busy_timeout)
        else:
            _begin_read(conn)
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                raise sqlite3.OperationalError("switched to WAL mode meanwhile")
        st, ours = os.stat(source), os.fstat(fd)
        if (st.st_dev, st.st_ino) != (ours.st_dev, ours.st_ino):
            raise sqlite3.OperationalError("replaced meanwhile")
        return Pinned(conn, fd)
    except (sqlite3.Error, OSError):
        if conn is not None:
            conn.close()
        os.close(fd)
        return None


def _sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(slots=True)
class PageScan:
    """One pass over a snapshot: its sha256, every page's hash, every 64 KiB block's hash, the
    pages that differ from the parent's hashes (all of them without a parent)."""

    sha256: str
    hashes: bytearray
    blocks: bytearray = field(default_factory=bytearray)
    changed: array = field(default_factory=lambda: array("I"))


@dataclass(slots=True)
class ParentHashes:
    """What the parent's state says of its snapshot: page hashes, and (states since block
    hashes were added) the 64 KiB blocks' hashes; ``blocks`` None hashes every page."""

    pages: bytes
    blocks: bytes | None = None


def scan_pages(fd: int, page_size: int, parent: ParentHashes | None, pages: int | None = None,
               name: str = "database") -> PageScan:
    """Hash the open file ``fd`` (its first ``pages`` pages, or all of it) in 4 MiB preads
    (memory stays flat whatever the size; the descriptor is the caller's, never closed here:
    see :class:`Pinned`). Each 64 KiB block is hashed whole first (BLAKE3 over 64 KiB costs
    about a third of sixteen 4 KiB calls): a block equal to the parent's keeps the parent's
    page hashes, only the pages of the other blocks are hashed one by one. The file's sha256
    runs on a second thread (hashlib lets go of the GIL for large buffers) while this one
    hashes the same chunk, and the next chunk is read while the sha256 of the last one
    finishes."""
    whole = hashlib.sha256()
    scan = PageScan("", bytearray())
    bufs = (bytearray(SCAN_CHUNK), bytearray(SCAN_CHUNK))  # a multiple of BLOCK and any page
    left = pages * page_size if pages is not None else None
    pgno = 0
    offset = 0
    with ThreadPoolExecutor(1, thread_name_prefix="ebm-sqlite-sha256") as pool:
        pending = None
        for turn in itertools.count():
            view = memoryview(bufs[turn % 2])
            n = os.preadv(fd, [view if left is None else view[:min(left, SCAN_CHUNK)]], offset)
            if pending is not None:
                pending.result()  # the other buffer is free again
            if not n:
                break
            offset += n
            if left is not None:
                left -= n
            pending = pool.submit(whole.update, view[:n])
            pgno = _hash_blocks(view[:n - n % page_size], page_size, pgno, parent, scan)
    if pages is not None and pgno != pages:
        raise TranslatorError(f"{name} holds {pgno} pages, the database says {pages}")
    scan.sha256 = whole.hexdigest()
    return scan


def _hash_blocks(view: memoryview, page_size: int, pgno: int, parent: ParentHashes | None,
                 scan: PageScan) -> int:
    """Hash the whole pages of ``view`` (page ``pgno`` + 1 on, BLOCK-aligned) into ``scan``;
    return the next page's index."""
    hl = block_hashes.HASH_LEN
    page_hash = block_hashes.page_hash
    for boff in range(0, len(view), BLOCK):
        block = view[boff:boff + BLOCK]
        digest = page_hash(block)
        npages = len(block) // page_size
        b, p, q = len(scan.blocks), pgno * hl, (pgno + npages) * hl
        scan.blocks += digest
        if (parent is not None and parent.blocks is not None
                and parent.blocks[b:b + hl] == digest and len(parent.pages) >= q):
            scan.hashes += parent.pages[p:q]  # the same bytes: the same page hashes
            pgno += npages
            continue
        for off in range(0, len(block), page_size):
            digest = page_hash(block[off:off + page_size])
            scan.hashes += digest
            p = pgno * hl
            if parent is None or parent.pages[p:p + hl] != digest:
                scan.changed.append(pgno + 1)
            pgno += 1
    return pgno


def _parent_hashes(parent_state: TranslatorState | None, name: str,
                   page_size: int) -> ParentHashes | None:
    """The parent's hashes if a delta against it is possible (same database name and page
    size, a state of this format), else None: then this backup is a baseline."""
    if not isinstance(parent_state, dict) or parent_state.get("format") != STATE_FORMAT:
        return None
    if parent_state.get("name") != name or parent_state.get("page_size") != page_size:
        return None
    pages = block_hashes.decode(parent_state.get("hashes"))
    if pages is None:
        return None
    return ParentHashes(pages, block_hashes.decode(parent_state.get("block_hashes")))


def delta_member(name: str, seq: int) -> str:
    return f"{name}{DELTA_INFIX}{seq:06d}"


def _split_member(path: str) -> tuple[str, bool]:
    """(database name, whether it is the metadata member) of an archive member."""
    if path.endswith(META_SUFFIX):
        return path[: -len(META_SUFFIX)], True
    base, infix, seq = path.rpartition(DELTA_INFIX)
    return (base if infix and seq.isdigit() else path), False


class _Rebuild(DeltaRebuild):
    """One database: the baseline file, then each page delta, chained by sha256."""

    def apply(self, path: str, entry: ArchiveEntry, data: EntryData) -> int:
        if path == self.name:
            return self._write_full(data)
        if self.digest is None and self.final.is_file():
            self._resume()
        if self.digest is None:
            raise TranslatorError(f"page delta {path!r} without the database it applies to")
        try:
            header = read_header(data)
            if header.parent_sha256.hex() != self.digest:
                raise TranslatorError(f"page delta {path!r} does not apply to the database "
                                      "restored so far (chain out of order or damaged)")
            fd = os.open(self.tmp, os.O_RDWR | os.O_CLOEXEC)
            try:
                apply_delta(header, data, fd)
            finally:
                os.close(fd)
        except DeltaError as exc:
            raise TranslatorError(f"{path}: {exc}") from None
        self.digest = header.sha256.hex()
        return header.body_size()

    def _write_full(self, data: EntryData) -> int:
        digest = hashlib.sha256()
        n = 0
        with open(self.tmp, "wb") as out:
            while chunk := data.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                n += len(chunk)
        self.digest = digest.hexdigest()
        return n

    def _resume(self) -> None:
        """Continue from the database an earlier restore call left in the target (what
        ``apply_chain`` does: one call per archive of the chain)."""
        shutil.copyfile(self.final, self.tmp)
        self.digest = _sha256_file(self.tmp)

    def finish(self) -> None:
        if self.meta is None:  # e.g. `ebm restore --path NAME`: the deltas may be missing too
            raise TranslatorError(
                f"{self.name}: its metadata member {self.name}{META_SUFFIX} was not among the "
                f"restored members; select '{self.name}*' so that every page delta comes too")
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        actual = _sha256_file(self.tmp)
        if actual != self.digest or self.meta.get("sha256") not in (None, actual):
            raise TranslatorError(f"restored database {self.name} does not match its recorded sha256")
        _check_integrity(self.tmp, self.name)
        if self.entry is not None:
            os.chmod(self.tmp, self.entry.mode)
            os.utime(self.tmp, ns=(self.entry.mtime_ns, self.entry.mtime_ns))
        for suffix in JOURNAL_SUFFIXES:  # they belong to the file replaced: see the constant
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.final}{suffix}")
        os.replace(self.tmp, self.final)


def _check_integrity(path: Path, name: str) -> None:
    """``PRAGMA integrity_check`` on a restored file, opened immutable: a WAL-mode database
    then leaves no -wal/-shm files beside it, and its bytes are never touched."""
    try:
        conn = sqlite3.connect(_ro_uri(str(path)) + "&immutable=1", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise TranslatorError(f"restored database {name} cannot be opened: {exc}") from None
    if result != "ok":
        raise TranslatorError(f"restored database {name} fails integrity_check: {result}")


class SqliteTranslator(DeltaTranslator):
    name = "sqlite"
    version = "2.0"
    supports_incremental = True
    split_member = staticmethod(_split_member)
    rebuild = _Rebuild
    restore_noun = "an SQLite backup"
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

    def _snapshot(self, source: str, snap: str, name: str,
                  progress: ProgressCallback | None) -> dict:
        try:
            src = sqlite3.connect(_connect_uri(source), uri=True)
            try:
                dst = sqlite3.connect(snap)
                try:
                    # A private temporary copy: no journal, no fsync (1 GB synced under a busy
                    # disk cost more than the copy itself).
                    dst.execute("PRAGMA synchronous=OFF")
                    dst.execute("PRAGMA journal_mode=OFF")
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
        _require_intact(f"snapshot of {source}", meta)
        return meta

    @contextlib.contextmanager
    def _image(self, source: str, snap: str, name: str, parent_state: TranslatorState | None,
               progress: ProgressCallback | None) -> Iterator[tuple[int, dict]]:
        """A descriptor of the file to read and its metadata. The live file itself wherever a
        read transaction pins it until the caller is done (:func:`_pin_in_place`): no copy.
        An incremental runs no checks there (they would read every page again; the restore
        runs integrity_check); a baseline runs integrity_check and counts the rows inside
        that same transaction, on the very snapshot it stores. Else a copy through the
        backup API."""
        delta = (isinstance(parent_state, dict) and parent_state.get("format") == STATE_FORMAT
                 and parent_state.get("name") == name)
        pin = _pin_in_place(source)
        try:
            if pin is not None:
                try:
                    meta = _describe(pin.conn, checks=not delta)
                    if delta and meta["page_size"] != parent_state.get("page_size"):  # type: ignore[union-attr]
                        meta = _describe(pin.conn)  # every page differs: a checked baseline
                except sqlite3.Error as exc:
                    raise TranslatorError(f"cannot read {source}: {exc}") from None
                _require_intact(f"database {source}", meta)
                yield pin.fd, meta
                return
            meta = self._snapshot(source, snap, name, progress)
            fd = os.open(snap, os.O_RDONLY | os.O_CLOEXEC)
            try:
                yield fd, meta
            finally:
                os.close(fd)
        finally:
            if pin is not None:
                pin.close()

    def backup(self, source: str, parent_state: TranslatorState | None, writer: PaxWriter, *,
               progress: ProgressCallback | None = None) -> BackupResult:
        self.validate_source(source)
        name = os.path.basename(source)
        st = os.stat(source)
        with tempfile.TemporaryDirectory(prefix="ebm-sqlite-") as tmp, \
                self._image(source, os.path.join(tmp, name), name, parent_state,
                            progress) as (fd, meta):
            meta["name"] = name
            meta["source"] = os.path.abspath(source)
            parent = _parent_hashes(parent_state, name, meta["page_size"])
            scan = scan_pages(fd, meta["page_size"], parent, meta["page_count"], name)
            meta["sha256"] = scan.sha256
            base = {"page_size": meta["page_size"], "page_count": meta["page_count"],
                    "sha256": scan.sha256, "hashes": block_hashes.encode(scan.hashes),
                    "block_hashes": block_hashes.encode(scan.blocks)}
            if parent is None:
                rows, size = self._write_full(fd, meta, st, writer)
                seq, level = 0, "baseline"
            else:
                seq = int(parent_state.get("seq", 0)) + 1  # type: ignore[union-attr]
                rows, size = self._write_delta(fd, meta, st, writer, scan,
                                               parent_state["sha256"], seq)  # type: ignore[index]
                level = "incremental"
        members = [r.path for r in rows]
        if level == "baseline":
            rows += delete_stale_members(parent_state, members, writer)
        if progress is not None:
            progress(Progress("backup", len(members), len(members), size, size, name))
        state = {"format": STATE_FORMAT, "name": name, "size": size, "created_ns": time.time_ns(),
                 "seq": seq, "members": members, **base}
        return BackupResult(state=state, entries=rows, warnings=[], level_hint=level)

    @staticmethod
    def _meta_row(meta: dict, st: os.stat_result, writer: PaxWriter) -> IndexEntry:
        data = json.dumps(meta, indent=1, sort_keys=True).encode() + b"\n"
        entry = ArchiveEntry(path=meta["name"] + META_SUFFIX, kind="file", size=len(data),
                             mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                             mtime_ns=time.time_ns())
        return file_row(entry, writer.add(entry, data))

    def _write_full(self, fd: int, meta: dict, st: os.stat_result,
                    writer: PaxWriter) -> tuple[list[IndexEntry], int]:
        """Metadata member, then the database file (open as ``fd``, left open) as it is: a
        baseline."""
        meta = {**meta, "kind": "baseline"}
        rows = [self._meta_row(meta, st, writer)]
        size = meta["page_count"] * meta["page_size"]
        entry = ArchiveEntry(path=meta["name"], kind="file", size=size,
                             mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                             mtime_ns=st.st_mtime_ns)
        os.lseek(fd, 0, os.SEEK_SET)
        with open(fd, "rb", buffering=0, closefd=False) as f:
            rows.append(file_row(entry, writer.add(entry, f)))
        return rows, size

    def _write_delta(self, fd: int, meta: dict, st: os.stat_result, writer: PaxWriter,
                     scan: PageScan, parent_sha256: str, seq: int) -> tuple[list[IndexEntry], int]:
        """Metadata member, then the pages that changed since the parent (read from ``fd``):
        an incremental."""
        header = DeltaHeader(meta["page_size"], meta["page_count"], len(scan.changed),
                             bytes.fromhex(parent_sha256), bytes.fromhex(scan.sha256))
        meta = {**meta, "kind": "delta", "pages_changed": len(scan.changed),
                "parent_sha256": parent_sha256, "delta_member": delta_member(meta["name"], seq)}
        rows = [self._meta_row(meta, st, writer)]
        size = header.body_size()
        entry = ArchiveEntry(path=meta["delta_member"], kind="file", size=size,
                             mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                             mtime_ns=st.st_mtime_ns)
        try:
            loc = writer.add(entry, DeltaReader(header, fd, scan.changed))
        except DeltaError as exc:
            raise TranslatorError(str(exc)) from None
        rows.append(file_row(entry, loc, torn=loc.short))
        return rows, size

    # ------------------------------------------------------------------ consolidation
    def write_merged(self, workdir: Path, state: TranslatorState, writer: PaxWriter, *,
                     progress: ProgressCallback | None = None) -> BackupResult:
        """The merged database written as a baseline; the state (page hashes included) is the
        last incremental's, since the bytes are the same."""
        if not isinstance(state, dict) or state.get("format") not in (STATE_FORMAT,
                                                                      "ebm-sqlite-state/2"):
            raise TranslatorError("the chain's last state is not an SQLite page state")
        name = state["name"]
        db = Path(workdir) / name
        sha = _sha256_file(db)
        if sha != state["sha256"]:
            raise TranslatorError(f"merged database {name} does not match the chain's sha256")
        conn = sqlite3.connect(_ro_uri(str(db)) + "&immutable=1", uri=True)
        try:
            meta = _describe(conn)
        finally:
            conn.close()
        meta.update(name=name, sha256=sha, consolidated=True)
        fd = os.open(db, os.O_RDONLY | os.O_CLOEXEC)
        try:
            rows, size = self._write_full(fd, meta, os.fstat(fd), writer)
        finally:
            os.close(fd)
        new_state = {**state, "members": [r.path for r in rows], "size": size,
                     "created_ns": time.time_ns()}
        return BackupResult(state=new_state, entries=rows, level_hint="baseline")
