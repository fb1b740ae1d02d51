"""The filesystem translator: a directory tree to a pax stream and back, exactly.

What is captured: regular files, directories, symlinks, hard links (typeflag '1' to the first
name of the inode in the same archive), FIFOs and device nodes, permission bits incl.
setuid/setgid/sticky, numeric uid/gid (plus names for GNU tar), mtime and atime with
nanoseconds, extended attributes (every namespace the process can read; ``user.*`` at least)
and sparse files (data extents found with SEEK_DATA/SEEK_HOLE, stored as GNU sparse 1.0 so
holes cost nothing on tape and GNU tar recreates them). Sockets are skipped with a warning.
The walk stays on the source's filesystem (mount points below it are recorded as empty dirs).
A source that is a symlink to a directory is that directory. Runs of plain entries (unchanged
ones, and changed regular files with one link, no xattrs, no holes, a short ASCII name) go
through the C extension in one call per run (``_paxfast.pack_files``: open, read between two
fstats, headers, sha256, index and state rows), and a baseline's walk lists and lstats a
directory per C call (``_paxfast.scan_dir``); every other entry is Python's, here. Without
the extension, small files are read ahead by two worker threads in bounded batches. Either way
the archive is written strictly in scan order, and the same bytes.

Incrementals. The state is, per path, ``[inode, size, mtime_ns, ctime_ns, st_mode]`` taken
when the entry was captured, kept as a compressed stream of rows in walk order
(:mod:`translators.filesystem_state`): a backup walks the tree into a spool file merged with
the parent's rows, then writes from the spool, so memory does not grow with the tree. An
entry is included in the next incremental when its path is new or any of those differ (ctime catches chmod, chown, xattr and link-count changes). Every
name of a hard-linked inode is included when any is (they share one inode). Paths of the parent
state that are gone are written as deletion markers (``EBM.deleted`` global records) *before*
any entry (a directory that cannot be listed keeps its old contents: unknown is not gone).
A rename (same inode, new path) is recorded as delete old path + add new path: the
restore has no earlier archive at hand to copy from, and this keeps every incremental
self-contained.

Consistency without snapshots. A regular file is read between two ``fstat`` calls; if size,
mtime or ctime moved, or the read came up short, it is read again (up to ``retries`` times,
a file whose ctime is under ``racy_window_ns`` old is also read a second time and must read
identically, since timestamps move in coarse ticks and miss writes within one tick;
files up to ``buffer_limit`` bytes are buffered so a torn attempt never reaches the stream;
bigger ones are re-appended and the later copy wins, as in tar). A file that never holds
still is kept as its last copy, reported in ``warnings``, flagged ``torn`` in the index and
left out of the state (recorded with mtime -1), so the next incremental takes it again.
Limit: without a snapshot, a copy is what the file held at one instant; if an application was
half-way through rewriting it then (and stayed so across both reads), that instant is what is
archived, as a block-level snapshot would also capture it.

Restore. Paths must be relative without ``..`` (else :class:`UnsafePath`), and no parent of
a restored path may be a symlink (a hostile archive could otherwise write through it).
Existing entries are replaced (a file is unlinked first, so other hard links of the old inode
keep their content); directories are created as needed and their mode/owner/xattrs/mtime set
after their children; parent directories that the archive does not carry get their previous
times back. Ownership is set (numerically) only when running as root. Restore into an empty
directory for an exact tree: what the target already holds and the archive does not mention is
left alone. A hard link is re-linked to its target path, which must have been restored first
(a path-selective restore must select the ``linkname`` row of every selected hard link too);
otherwise it is skipped with a warning.
"""

from __future__ import annotations

import errno
import fnmatch
import grp
import hashlib
import operator
import os
import pwd
import shutil
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from tape_formats.archive import (
    ArchiveCorrupt,
    ArchiveEntry,
    EntryData,
    EntryLocation,
    IndexEntry,
    PackedIndex,
    PaxWriter,
    UnsafePath,
    check_member_path,
)

from .base import (
    BackupResult,
    Progress,
    ProgressCallback,
    RestoreStats,
    Translator,
    TranslatorError,
    TranslatorState,
    stat_source,
)
from .filesystem_state import (
    CHANGED,
    IN_PREV,
    KEPT,
    BadState,
    LiveSpool,
    ScanRecord,
    ScanSpool,
    StateWriter,
    read_state,
    record_at,
    scan_row,
    walk_key,
)

try:  # a run of plain entries, a baseline's directory, in one call each (_paxfast.c), if built
    from tape_formats.archive._paxfast import pack_files as _pack_files  # type: ignore[import-not-found]
    from tape_formats.archive._paxfast import scan_dir as _scan_dir  # type: ignore[import-not-found]
except ImportError:
    _pack_files = _scan_dir = None
if os.environ.get("VTL_NO_FASTPATH"):
    _pack_files = _scan_dir = None
_PACK_PYTHON, _PACK_FULL = 1, 2  # why pack_files stopped: a row for Python, its output is full
PACK_MAX_BYTES = 4 * 1024 * 1024  # stream bytes per pack_files call

_MISSING = object()  # no prefetched result: read the file now
_LARGE = object()  # too big to buffer: stream it
PREFETCH_BATCH = 64  # files per worker job
PREFETCH_BATCH_BYTES = 8 * 1024 * 1024
PREFETCH_WINDOW = 4  # jobs in flight ahead of the writer
PREFETCH_MAX_ENTRIES = 1024  # spooled entries per batch, changed or not
CHUNK = 1024 * 1024
_O_NOATIME = getattr(os, "O_NOATIME", 0)
# An index row as PackedIndex.add takes it (IndexEntry's fields in order), without the object.
_Row = tuple[str, str, int, int, int, int, int, str | None, int, int, bool, str, bool]
_IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@lru_cache(maxsize=4096)
def _uname(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=4096)
def _gname(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


_by_name = operator.attrgetter("name")


_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFIFO: "fifo",
}


def _kind_of(mode: int) -> str | None:
    return _KINDS.get(stat.S_IFMT(mode))


def _state_key(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode]


def _stable(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (b.st_size, b.st_mtime_ns, b.st_ctime_ns)


def read_xattrs(target: str | int, *, follow: bool = False) -> dict[str, bytes]:
    """All readable extended attributes of a path (not followed) or an open fd."""
    try:
        names = os.listxattr(target, follow_symlinks=follow) if isinstance(target, str) else os.listxattr(target)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for name in names:
        try:
            if isinstance(target, str):
                out[name] = os.getxattr(target, name, follow_symlinks=follow)
            else:
                out[name] = os.getxattr(target, name)
        except OSError:
            continue
    return out


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The (offset, length) data extents of an open file, from SEEK_DATA/SEEK_HOLE."""
    extents: list[tuple[int, int]] = []
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                break
            raise
        if start >= size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end - start))
        off = end
    return extents


def _sparse_map(fd: int, st: os.stat_result) -> list[tuple[int, int]] | None:
    """The file's data extents if it has holes, else None (stored densely)."""
    if st.st_size == 0 or st.st_blocks * 512 >= st.st_size:
        return None
    try:
        extents = data_extents(fd, st.st_size)
    except OSError:
        return None
    if extents == [(0, st.st_size)]:
        return None
    return extents


class _ExtentReader:
    """``readinto`` over a file's data extents via pread: what the pax writer streams."""

    def __init__(self, fd: int, extents: list[tuple[int, int]]) -> None:
        self._fd = fd
        self._extents = iter(extents)
        self._off = 0
        self._left = 0

    def readinto(self, b) -> int:
        while self._left == 0:
            nxt = next(self._extents, None)
            if nxt is None:
                return 0
            self._off, self._left = nxt
        view = memoryview(b)[: min(len(b), self._left)]
        n = os.preadv(self._fd, [view], self._off)
        self._off += n
        self._left -= n
        return n


def _hash_extents(fd: int, extents: list[tuple[int, int]]) -> str:
    """sha256 of a file's data extents, read again (the check of a racy streamed file)."""
    digest = hashlib.sha256()
    reader = _ExtentReader(fd, extents)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while n := reader.readinto(view):
        digest.update(view[:n])
    return digest.hexdigest()


def _read_extents(fd: int, extents: list[tuple[int, int]], total: int) -> bytes | bytearray:
    if len(extents) == 1 and extents[0] == (0, total):  # a dense file: one pread, no copy
        data = os.pread(fd, total, 0)
        if len(data) == total or not data:
            return data
    buf = bytearray(total)
    view = memoryview(buf)
    pos = 0
    for off, length in extents:
        end = pos + length
        while pos < end:
            n = os.preadv(fd, [view[pos:end]], off)
            if n == 0:
                return buf[:pos]  # short: the file shrank under us
            pos += n
            off += n
    return buf


class FilesystemTranslator(Translator):
    name = "filesystem"
    version = "1.0"

    retries = 3
    buffer_limit = 4 * CHUNK  # files up to this size are read fully before being written
    racy_window_ns = 1_000_000_000  # files whose ctime is this recent are read twice
    # Test seam: called with the absolute path after each read attempt, before the second fstat.
    _after_read: Callable[[str], None] | None = None
    # Globs of paths not to back up (``ebm backup --exclude``, set by the manager): one without
    # "/" matches a name at any depth, one with "/" the path from the source; an excluded
    # directory is skipped whole.
    exclude: tuple[str, ...] = ()

    def _excluded(self, rel: str, name: str) -> bool:
        for pat in self.exclude:
            pat = pat.strip("/")
            if fnmatch.fnmatchcase(rel if "/" in pat else name, pat):
                return True
        return False

    # ------------------------------------------------------------------ validation
    def validate_source(self, source: str) -> None:
        if not source:
            raise TranslatorError("no source directory given")
        st = stat_source(source)
        if not stat.S_ISDIR(st.st_mode):
            raise TranslatorError(f"source {source} is not a directory")
        if not os.access(source, os.R_OK | os.X_OK):
            raise TranslatorError(f"source {source} is not readable")

    # ------------------------------------------------------------------ scan
    def walk(self, source: str, warnings: list[str],
             unlisted: list[str] | None = None) -> Iterator[tuple[str, os.DirEntry | os.stat_result, os.stat_result]]:
        """Pre-order walk (parents first, names sorted), one lstat per entry (the DirEntry's),
        lazily: only the directories on the current path are held. Directories that cannot be
        listed are appended to ``unlisted`` before the walk goes on past them (their old
        contents are not "deleted")."""
        root_st = os.stat(source)  # a source given as a symlink to a directory is that directory
        yield ".", root_st, root_st
        root_dev = root_st.st_dev
        stack: list[tuple[str, Iterator[os.DirEntry]]] = []

        def listing(abs_dir: str, prefix: str) -> Iterator[os.DirEntry] | None:
            try:
                with os.scandir(abs_dir) as it:
                    return iter(sorted(it, key=_by_name))
            except OSError as exc:
                warnings.append(f"cannot list {prefix or '.'}: {exc.strerror}")
                if unlisted is not None:
                    unlisted.append(prefix.rstrip("/") or ".")
                return None

        items = listing(source, "")
        if items is not None:
            stack.append(("", items))
        while stack:
            prefix, items = stack[-1]
            item = next(items, None)
            if item is None:
                stack.pop()
                continue
            rel = prefix + item.name
            if self.exclude and self._excluded(rel, item.name):
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except OSError as exc:
                warnings.append(f"cannot stat {rel}: {exc.strerror}")
                continue
            yield rel, item, st
            if stat.S_ISDIR(st.st_mode):
                if st.st_dev != root_dev:
                    warnings.append(f"not crossing into the mount point {rel}")
                    continue
                sub = listing(item.path, rel + "/")
                if sub is not None:
                    stack.append((rel + "/", sub))

    def scan(self, source: str, warnings: list[str],
             unlisted: list[str] | None = None) -> list[tuple[str, os.stat_result]]:
        """The whole walk as a list of (path, lstat): for small trees and tools (the backup
        streams the walk instead)."""
        return [(rel, st) for rel, _, st in self.walk(source, warnings, unlisted)]

    def _scan_into(self, source: str, prev: Iterator[tuple[str, list[int]]] | None,
                   spool: ScanSpool, warnings: list[str]) -> tuple[list[tuple[str, int]], int, int]:
        """Pass 1: the walk merged with the parent state (both in walk order) into ``spool``.

        Each entry is flagged CHANGED (new, or any key field differs) and IN_PREV; a parent
        path that the walk did not meet is gone, unless it lies under a directory that could
        not be listed (then its parent row is spooled as KEPT, in its place). Returns the gone
        paths with their parent modes, and the count and bytes of what is to be written."""
        if prev is None and not self.exclude and _scan_dir is not None:
            self._link_changed = {}
            return [], *self._scan_baseline(source, spool, warnings)
        unlisted: list[str] = []
        gone: list[tuple[str, int]] = []
        todo_count = todo_bytes = 0
        link_changed: dict[tuple[int, int], bool] = {}  # (dev, ino) of hard-linked files
        pending = next(prev, None) if prev is not None else None
        pending_key = walk_key(pending[0]) if pending is not None else ""

        def missing(path: str, key: list[int]) -> None:
            if unlisted and path.startswith(tuple("" if d == "." else d + "/" for d in unlisted)):
                spool.add_kept(path, key)
            else:
                gone.append((path, key[4]))

        for rel, _, st in self.walk(source, warnings, unlisted):
            flags = CHANGED
            prev_mode = 0
            if prev is not None:
                k = walk_key(rel)
                while pending is not None and pending_key < k:
                    missing(*pending)
                    pending = next(prev, None)
                    pending_key = walk_key(pending[0]) if pending is not None else ""
                if pending is not None and pending[0] == rel:
                    p = pending[1]
                    prev_mode = p[4]
                    flags = IN_PREV
                    if (p[2] != st.st_mtime_ns or p[3] != st.st_ctime_ns or p[0] != st.st_ino
                            or p[1] != st.st_size or p[4] != st.st_mode):
                        flags |= CHANGED
                    pending = next(prev, None)
                    pending_key = walk_key(pending[0]) if pending is not None else ""
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    link_changed[key] = link_changed.get(key, False) or bool(flags & CHANGED)
            spool.add(rel, st, flags, prev_mode)
            if flags & CHANGED:
                todo_count += 1
                if stat.S_ISREG(st.st_mode):
                    todo_bytes += st.st_size
        while pending is not None:
            missing(*pending)
            pending = next(prev, None)  # type: ignore[arg-type]
        self._link_changed = link_changed
        return gone, todo_count, todo_bytes

    def _scan_baseline(self, source: str, spool: ScanSpool,
                       warnings: list[str]) -> tuple[int, int]:
        """Pass 1 of a baseline without excludes (:meth:`_scan_live` into ``spool``): the
        count and bytes of what is to be written (everything)."""
        prog = Progress("scan", 0, 1, 0, 0)
        self._scan_live(source, spool, warnings, prog)
        return prog.entries_total or 0, prog.bytes_total or 0

    # ------------------------------------------------------------------ backup
    def backup(self, source: str, parent_state: TranslatorState | None, writer: PaxWriter, *,
               progress: ProgressCallback | None = None) -> BackupResult:
        self.validate_source(source)
        prev = None
        if parent_state is not None:
            try:
                prev = read_state(parent_state)
            except BadState as exc:
                raise TranslatorError(str(exc)) from None
        warnings: list[str] = []
        # rows on disk past a few MiB: memory stays flat; the catalog may insert them early
        index = PackedIndex(spill=True, sink=getattr(writer, "index_sink", None))
        if (prev is None and not self.exclude and _scan_dir is not None
                and _pack_files is not None and self._after_read is None):
            return self._backup_live(source, writer, warnings, index, progress)
        spool = ScanSpool()
        try:
            try:
                gone, todo_count, todo_bytes = self._scan_into(source, prev, spool, warnings)
            except BadState as exc:
                raise TranslatorError(str(exc)) from None
            if gone:  # deletion markers come before any entry
                off = writer.add_deletions([p for p, _ in gone])
                for p, mode in gone:
                    index.append(IndexEntry(path=p, kind=_kind_of(mode) or "file", deleted=True,
                                            header_offset=off, data_offset=off))
            del gone
            prog = Progress("backup", 0, todo_count, 0, todo_bytes)
            state = StateWriter()
            vanished: list[tuple[str, int]] = []
            self._write_entries(source, spool, writer, warnings, vanished, index, state, prog,
                                progress)
        finally:
            spool.close()
        return self._finish_backup(writer, index, state, warnings, vanished, prog, progress,
                                   "baseline" if prev is None else "incremental")

    def _finish_backup(self, writer: PaxWriter, index: PackedIndex, state: StateWriter,
                       warnings: list[str], vanished: list[tuple[str, int]], prog: Progress,
                       progress: ProgressCallback | None, level_hint: str) -> BackupResult:
        if vanished:
            gone_now = [(p, mode) for p, mode in vanished if mode]
            if gone_now:
                off = writer.add_deletions([p for p, _ in gone_now])
                index += [IndexEntry(path=p, kind=_kind_of(mode) or "file", deleted=True,
                                     header_offset=off, data_offset=off) for p, mode in gone_now]
            warnings.append(f"{len(vanished)} entries vanished during the backup (first: {vanished[0][0]})")
        if progress is not None:
            progress(prog)
        return BackupResult(state=state.finish(), entries=index, warnings=warnings,
                            level_hint=level_hint)

    def _backup_live(self, source: str, writer: PaxWriter, warnings: list[str],
                     index: PackedIndex, progress: ProgressCallback | None) -> BackupResult:
        """A baseline without excludes: the walk (:meth:`_scan_live`, on a thread of its own)
        and the writing pass at once, the pass reading the spool behind the walk. The same
        stream, index, state and warnings as the scan first and the pass after (the walk's
        warnings first); the progress totals grow while the walk runs."""
        spool = LiveSpool()
        prog = Progress("backup", 0, 1, 0, 0)
        walk_warnings: list[str] = []

        def walk() -> None:
            try:
                self._scan_live(source, spool, walk_warnings, prog)
            except BaseException as exc:
                spool.finish(exc)
            else:
                spool.finish()

        self._link_changed = {}
        state = StateWriter()
        vanished: list[tuple[str, int]] = []
        scanner = threading.Thread(target=walk, name="fs-scan", daemon=True)
        scanner.start()
        try:
            self._write_entries(source, spool, writer, warnings, vanished, index, state, prog,
                                progress)
        finally:
            spool.cancel()
            scanner.join()
            spool.close()
        warnings[:0] = walk_warnings
        return self._finish_backup(writer, index, state, warnings, vanished, prog, progress,
                                   "baseline")

    def _scan_live(self, source: str, spool: LiveSpool | ScanSpool, warnings: list[str],
                   prog: Progress) -> None:
        """:meth:`walk`'s rows for a baseline, a directory per C call (``scan_dir``), or per
        Python listing (:meth:`_list_dir`) where the C leaves one to Python (a name that is not
        ASCII, a listing or lstat failing): the same rows, order and warnings as the walk.
        Counts the entries and file bytes into ``prog``'s totals as it goes."""
        root_st = os.stat(source)
        spool.add_packed(scan_row(".", root_st, CHANGED))
        # per directory being spooled: its path, its rows' prefix, its rows, its subdirectories
        # still to enter (last first) and how much of its rows is spooled
        stack: list[tuple[bytes, bytes, bytes, list, int]] = []

        def enter(abs_dir: bytes, prefix: bytes) -> None:
            listed = _scan_dir(abs_dir, prefix)
            if listed is None:
                listed = self._list_dir(abs_dir, prefix, warnings)
                if listed is None:
                    return
            rows, subdirs, n, file_bytes = listed
            prog.entries_total = (prog.entries_total or 0) + n
            prog.bytes_total = (prog.bytes_total or 0) + file_bytes
            stack.append((abs_dir, prefix, rows, subdirs[::-1], 0))

        enter(os.fsencode(source), b"")
        while stack and not spool.cancelled:
            abs_dir, prefix, rows, subdirs, done = stack[-1]
            if not subdirs:
                spool.add_packed(rows[done:])
                stack.pop()
                continue
            end, name, dev = subdirs.pop()
            spool.add_packed(rows[done:end])  # up to and including the subdirectory's row
            stack[-1] = (abs_dir, prefix, rows, subdirs, end)
            if dev != root_st.st_dev:
                warnings.append(f"not crossing into the mount point {os.fsdecode(prefix + name)}")
                continue
            enter(abs_dir + b"/" + name, prefix + name + b"/")

    @staticmethod
    def _list_dir(abs_dir: bytes, prefix: bytes,
                  warnings: list[str]) -> tuple[bytes, list, int, int] | None:
        """One directory as :meth:`walk` lists it, in ``scan_dir``'s return shape (its rows,
        (end of row, name, st_dev) of each subdirectory, count, file bytes); None (and the
        walk's warning) when it cannot be listed."""
        rel_prefix = os.fsdecode(prefix)
        try:
            with os.scandir(os.fsdecode(abs_dir)) as it:
                items = sorted(it, key=_by_name)
        except OSError as exc:
            warnings.append(f"cannot list {rel_prefix or '.'}: {exc.strerror}")
            return None
        rows: list[bytes] = []
        subdirs: list[tuple[int, bytes, int]] = []
        end = file_bytes = 0
        for item in items:
            rel = rel_prefix + item.name
            try:
                st = item.stat(follow_symlinks=False)
            except OSError as exc:
                warnings.append(f"cannot stat {rel}: {exc.strerror}")
                continue
            row = scan_row(rel, st, CHANGED)
            rows.append(row)
            end += len(row)
            if stat.S_ISREG(st.st_mode):
                file_bytes += st.st_size
            elif stat.S_ISDIR(st.st_mode):
                subdirs.append((end, os.fsencode(item.name), st.st_dev))
        return b"".join(rows), subdirs, len(rows), file_bytes

    def _write_entries(self, source: str, spool: ScanSpool, writer: PaxWriter,
                       warnings: list[str], vanished: list[tuple[str, int]], index: PackedIndex,
                       state: StateWriter, prog: Progress, progress: ProgressCallback | None) -> None:
        """Pass 2, the writer thread: every spooled entry in walk order. A changed one is
        archived and its key taken from what was read; an unchanged or kept one carries its
        key over into the new state. Runs of plain entries go through the C extension in one
        call each (:meth:`_write_packed`); otherwise small files come read ahead by the
        prefetcher."""
        out = _Pass(self, source, writer, warnings, vanished, index, state, prog, progress)
        if _pack_files is not None and self._after_read is None:
            self._write_packed(out, spool)
            return
        prefetch = _Prefetcher(self, source, spool, self._link_changed)
        try:
            for rec, prefetched in prefetch:
                out.entry(rec, prefetched)
        finally:
            prefetch.close()

    def _write_packed(self, out: _Pass, spool: ScanSpool) -> None:
        """The spool's raw rows through ``_paxfast.pack_files``: it does every entry that
        needs no decision of Python's (see its comment) and stops at the next one, which
        :meth:`_Pass.entry` does (read inline: no prefetch), then the C goes on. The stream,
        the index and the state come out byte for byte as the Python loop makes them."""
        root_fd = os.open(out.source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        unames: dict[int, bytes] = {}
        gnames: dict[int, bytes] = {}
        links = any(self._link_changed.values())
        stream, feed = bytearray(), bytearray()  # pack_files' output buffers, reused
        try:
            rest = b""
            for chunk in spool.chunks():
                data = rest + chunk if rest else chunk
                pos = 0
                while True:
                    (pos, stop, stream_len, feed_len, rows, keys, files, nbytes,
                     nkeys) = _pack_files(data, pos, root_fd, out.writer.offset, unames, gnames,
                                          self.buffer_limit, self.racy_window_ns, links,
                                          PACK_MAX_BYTES, stream, feed)
                    if stream_len:  # the writer copies them: the next call may refill them
                        with memoryview(stream) as sv, memoryview(feed) as fv:
                            out.writer.add_prebuilt(sv[:stream_len], fv[:feed_len])
                    if files:
                        out.index.add_files(rows, files, nbytes)
                        out.prog.entries_done += files
                        out.prog.bytes_done += nbytes
                    out.state.add_packed(keys, nkeys)
                    if stop == _PACK_FULL:
                        out.report(None)
                        continue
                    found = record_at(data, pos) if stop == _PACK_PYTHON else None
                    if found is None:
                        break
                    rec, pos = found
                    out.entry(rec, _MISSING)
                    unames.setdefault(rec.st_uid, _uname(rec.st_uid).encode("utf-8", "surrogateescape"))
                    gnames.setdefault(rec.st_gid, _gname(rec.st_gid).encode("utf-8", "surrogateescape"))
                rest = data[pos:]
            if rest:
                raise TranslatorError("the scan spool ends inside a row")
        finally:
            os.close(root_fd)

    def _common(self, rel: str, kind: str, st: os.stat_result) -> ArchiveEntry:
        return ArchiveEntry(
            path=rel, kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,  # type: ignore[arg-type]
            uname=_uname(st.st_uid), gname=_gname(st.st_gid), mtime_ns=st.st_mtime_ns,
            atime_ns=st.st_atime_ns,
        )

    def _backup_other(self, abs_path: str, rel: str, kind: str, st: os.stat_result,
                      writer: PaxWriter) -> tuple[_Row, list[int]]:
        entry = self._common(rel, kind, st)
        if kind == "symlink":
            entry.linkname = os.readlink(abs_path)
        elif kind in ("chardev", "blockdev"):
            entry.devmajor, entry.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        entry.xattrs = read_xattrs(abs_path)
        loc = writer.add(entry, None)
        row = (rel, kind, 0, st.st_mtime_ns, entry.mode, st.st_uid, st.st_gid, None,
               loc.header_offset, loc.data_offset, False, entry.linkname, False)
        return row, _state_key(st)

    @staticmethod
    def _open_file(abs_path: str) -> int | None:
        """Open for reading without following a symlink swapped in; None if it is gone."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            return os.open(abs_path, flags | _O_NOATIME)
        except PermissionError:
            return os.open(abs_path, flags)  # O_NOATIME needs ownership; fine without it
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR):
                return None
            raise

    def _file_entry(self, fd: int, rel: str, st0: os.stat_result) -> tuple[ArchiveEntry, list[tuple[int, int]]]:
        entry = self._common(rel, "file", st0)
        entry.size = st0.st_size
        entry.sparse_map = _sparse_map(fd, st0)
        entry.xattrs = read_xattrs(fd)
        extents = entry.sparse_map if entry.sparse_map is not None else [(0, st0.st_size)]
        return entry, extents

    def _racy(self, st: os.stat_result) -> bool:
        """True if the inode changed so recently that its timestamps cannot prove a read clean
        (file timestamps advance in coarse clock ticks; same idea as git's "racy" entries)."""
        return time.time_ns() - st.st_ctime_ns < self.racy_window_ns

    def _read_small(self, fd: int, rel: str, abs_path: str):
        """Read a file of up to ``buffer_limit`` stored bytes between two fstats, retrying
        while it changes. Returns (entry, data, st0, ok), None if it is no longer a regular
        file, or _LARGE if it has grown past the buffer limit (the caller streams it)."""
        for attempt in range(self.retries + 1):
            st0 = os.fstat(fd)
            if not stat.S_ISREG(st0.st_mode):
                return None
            entry, extents = self._file_entry(fd, rel, st0)
            want = entry.data_size
            if want > self.buffer_limit:
                return _LARGE
            buf = _read_extents(fd, extents, want)
            if self._after_read is not None:
                self._after_read(abs_path)
            st1 = os.fstat(fd)
            ok = len(buf) == want and _stable(st0, st1)
            if ok and self._racy(st0):
                # Changed very recently: a write in the same timestamp tick (or one still in
                # flight) would not move ctime, so only a second, identical read vouches for it.
                ok = _read_extents(fd, extents, want) == buf and _stable(st0, os.fstat(fd))
            if ok or attempt == self.retries:
                return entry, buf, st0, ok
            time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _prefetch(self, items: list[tuple[str, str]]) -> list:
        """Worker-thread job: read a batch of small files (syscalls release the GIL, so this
        overlaps file I/O with header building in the writer thread)."""
        out: list = []
        for abs_path, rel in items:
            try:
                fd = self._open_file(abs_path)
                if fd is None:
                    out.append(None)
                    continue
                try:
                    out.append(self._read_small(fd, rel, abs_path))
                finally:
                    os.close(fd)
            except OSError as exc:
                out.append(exc)
        return out

    def _backup_file(self, abs_path: str, rel: str, st_scan: os.stat_result, writer: PaxWriter,
                     links: dict[tuple[int, int], str], warnings: list[str],
                     prefetched=_MISSING) -> tuple[_Row, list[int]] | None:
        """Capture one regular file consistently; None if it vanished or stopped being one."""
        if st_scan.st_nlink > 1:
            first = links.get((st_scan.st_dev, st_scan.st_ino))
            if first is not None:
                entry = self._common(rel, "hardlink", st_scan)
                entry.linkname = first
                loc = writer.add(entry, None)
                row = (rel, "hardlink", 0, st_scan.st_mtime_ns, entry.mode, st_scan.st_uid,
                       st_scan.st_gid, None, loc.header_offset, loc.data_offset, False, first,
                       False)
                return row, _state_key(st_scan)
        res = prefetched
        if isinstance(res, BaseException):
            raise res
        if res is _MISSING or res is _LARGE:
            fd = self._open_file(abs_path)
            if fd is None:
                return None
            try:
                res = self._read_small(fd, rel, abs_path) if res is _MISSING else _LARGE
                if res is _LARGE:
                    res = self._stream_large(fd, rel, abs_path, writer)
            finally:
                os.close(fd)
        if res is None:
            return None
        entry, payload, st0, ok = res
        loc = payload if isinstance(payload, EntryLocation) else writer.add(entry, payload)
        torn = not ok
        if st0.st_nlink > 1:
            links[(st0.st_dev, st0.st_ino)] = rel
        if torn:
            warnings.append(f"{rel} kept changing while being read ({self.retries + 1} attempts); "
                            "its archived copy may be inconsistent")
        row = (rel, "file", st0.st_size, st0.st_mtime_ns, entry.mode, st0.st_uid, st0.st_gid,
               loc.sha256, loc.header_offset, loc.data_offset, False, "", torn)
        key = _state_key(st0)
        if torn:
            key[2] = -1  # never matches: the next incremental takes the file again
        return row, key

    def _stream_large(self, fd: int, rel: str, abs_path: str, writer: PaxWriter):
        """Stream a big file into the writer; a torn copy is followed by a fresh one (the
        later copy wins on extraction, as in tar). Returns (entry, location, st0, ok)."""
        for attempt in range(self.retries + 1):
            st0 = os.fstat(fd)
            if not stat.S_ISREG(st0.st_mode):
                return None
            entry, extents = self._file_entry(fd, rel, st0)
            loc = writer.add(entry, _ExtentReader(fd, extents))
            if self._after_read is not None:
                self._after_read(abs_path)
            st1 = os.fstat(fd)
            ok = not loc.short and _stable(st0, st1)
            if ok and self._racy(st0):
                ok = _hash_extents(fd, extents) == loc.sha256 and _stable(st0, os.fstat(fd))
            if ok or attempt == self.retries:
                return entry, loc, st0, ok
            time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ restore
    def restore(self, entries: Iterable[tuple[ArchiveEntry, EntryData]], target: Path, *,
                select: Callable[[str], bool] | None = None,
                progress: ProgressCallback | None = None) -> RestoreStats:
        return _Restorer(Path(target), select, progress).run(entries)


class _Pass:
    """One writing pass: where entries go and what is reported (``_write_entries``)."""

    def __init__(self, t: FilesystemTranslator, source: str, writer: PaxWriter,
                 warnings: list[str], vanished: list[tuple[str, int]], index: PackedIndex,
                 state: StateWriter, prog: Progress, progress: ProgressCallback | None) -> None:
        self.t, self.source, self.writer, self.warnings = t, source, writer, warnings
        self.vanished, self.index, self.state = vanished, index, state
        self.prog, self.progress = prog, progress
        self.links: dict[tuple[int, int], str] = {}  # (dev, ino) -> first name archived
        self.last_report = 0.0

    def report(self, rel: str | None) -> None:
        """Progress to the callback, at most every 0.1 s."""
        if self.progress is not None and time.monotonic() - self.last_report > 0.1:
            self.last_report = time.monotonic()
            if rel is not None:
                self.prog.path = rel
            self.progress(self.prog)

    def entry(self, rec: ScanRecord, prefetched: object) -> None:
        """One spooled entry: archived (and its row indexed) or its key carried over."""
        rel = rec.rel
        if not _to_write(rec, self.t._link_changed):
            self.state.add(rel, [rec.st_ino, rec.st_size, rec.st_mtime_ns, rec.st_ctime_ns,
                                 rec.st_mode])
            return
        abs_path = self.source if rel == "." else os.path.join(self.source, rel)
        kind = _kind_of(rec.st_mode)
        if kind is None:
            self.warnings.append(f"skipped socket or unknown file type {rel}")
            return
        try:
            if kind == "file":
                result = self.t._backup_file(abs_path, rel, rec, self.writer, self.links,  # type: ignore[arg-type]
                                             self.warnings, prefetched)
                if result is None:
                    self.vanished.append((rel, rec.prev_mode))
                    return
                row, key = result
                self.prog.bytes_done += row[2]
            else:
                row, key = self.t._backup_other(abs_path, rel, kind, rec, self.writer)  # type: ignore[arg-type]
        except FileNotFoundError:
            self.vanished.append((rel, rec.prev_mode))
            return
        except PermissionError as exc:
            self.warnings.append(f"cannot read {rel}: {exc.strerror}")
            return
        self.index.add(*row)
        self.state.add(rel, key)
        self.prog.entries_done += 1
        self.report(rel)


def _to_write(rec: ScanRecord, link_changed: dict[tuple[int, int], bool] | None) -> bool:
    """Whether a spooled entry is archived: changed, or a name of a hard-linked inode of
    which some name changed (every name is re-sent then, they share one inode)."""
    if rec.flags & CHANGED:
        return True
    if rec.flags & KEPT or not link_changed or rec.st_nlink < 2 or stat.S_ISDIR(rec.st_mode):
        return False
    return link_changed.get((rec.st_dev, rec.st_ino), False)


class _Prefetcher:
    """The spooled entries in walk order, with small files read ahead in worker threads.

    The entries come in batches (bounded in count and bytes); up to ``PREFETCH_WINDOW``
    batches ahead of the writer are being read. Only regular files that will be stored with
    their data (not the later names of a hard-link group) and that fit the translator's
    buffer are prefetched; the writer takes the results strictly in walk order, so the
    archive is identical to a sequential run. A walk that fits one batch is read inline.
    """

    def __init__(self, translator: FilesystemTranslator, source: str,
                 records: Iterable[ScanRecord],
                 link_changed: dict[tuple[int, int], bool] | None, workers: int = 2) -> None:
        self.t = translator
        self.source = source
        self.records = iter(records)
        self.link_changed = link_changed
        self.seen: set[tuple[int, int]] = set()  # hard-linked inodes already planned
        self.window: deque[list] = deque()  # [batch, wanted positions, future or None]
        for _ in range(PREFETCH_WINDOW + 1):
            if not self._plan():
                break
        self.pool = None
        if len(self.window) > 1:
            self.pool = ThreadPoolExecutor(max_workers=workers)
            for item in self.window:
                self._submit(item)

    def _plan(self) -> bool:
        """Append the next batch to the window; False at the end of the spool."""
        batch: list[ScanRecord] = []
        wanted: list[int] = []
        nbytes = 0
        limit = self.t.buffer_limit
        for rec in self.records:
            batch.append(rec)
            if (stat.S_ISREG(rec.st_mode) and rec.st_size <= limit
                    and _to_write(rec, self.link_changed)):
                if rec.st_nlink > 1:
                    key = (rec.st_dev, rec.st_ino)
                    if key in self.seen:
                        continue
                    self.seen.add(key)
                wanted.append(len(batch) - 1)
                nbytes += rec.st_size
            if (len(wanted) >= PREFETCH_BATCH or nbytes >= PREFETCH_BATCH_BYTES
                    or len(batch) >= PREFETCH_MAX_ENTRIES):
                break
        if not batch:
            return False
        self.window.append([batch, wanted, None])
        return True

    def _submit(self, item: list) -> None:
        batch, wanted = item[0], item[1]
        if wanted and self.pool is not None:
            jobs = [(os.path.join(self.source, batch[i].rel), batch[i].rel) for i in wanted]
            item[2] = self.pool.submit(self.t._prefetch, jobs)

    def __iter__(self) -> Iterator[tuple[ScanRecord, object]]:
        while self.window:
            batch, wanted, future = self.window.popleft()
            if self._plan() and self.pool is not None:
                self._submit(self.window[-1])
            results: list = [_MISSING] * len(batch)
            if future is not None:
                for pos, res in zip(wanted, future.result(), strict=True):
                    results[pos] = res
            del future
            yield from zip(batch, results, strict=True)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


class _Restorer:
    """One restore of one archive into a target directory (see the module doc)."""

    def __init__(self, target: Path, select: Callable[[str], bool] | None,
                 progress: ProgressCallback | None) -> None:
        self.target = str(target)
        self.select = select
        self.progress = progress
        self.stats = RestoreStats()
        self.dir_entries: list[ArchiveEntry] = []
        self.seen_dirs: set[str] = set()
        self.saved_times: dict[str, tuple[int, int]] = {}
        self.safe_dirs: set[str] = {"."}
        self.buffer = memoryview(bytearray(CHUNK))  # one copy buffer for every file
        self.run_dir: tuple[str, int] | None = None  # the directory extract_files creates in
        # the stream's settle_files: waits for the files extract_files handed to threads
        self.settle_fn: Callable[[bool], Iterable[tuple[ArchiveEntry, EntryData]]] | None = None

    def abs(self, rel: str) -> str:
        return self.target if rel == "." else os.path.join(self.target, rel)

    def warn(self, msg: str) -> None:
        if len(self.stats.warnings) < 1000:
            self.stats.warnings.append(msg)

    # -- safety -----------------------------------------------------------------------
    def ensure_parents(self, rel: str, *, create: bool = True) -> bool:
        """Make sure every parent of ``rel`` is a real directory inside the target.

        With ``create=False`` (deletions) nothing is made: returns False when a parent is
        missing or is not a real directory, i.e. there is nothing to delete.
        """
        if rel == ".":
            return True
        parts = rel.split("/")[:-1]
        cur = "."
        for part in parts:
            cur = part if cur == "." else cur + "/" + part
            if cur in self.safe_dirs:
                continue
            path = self.abs(cur)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    return False
                self.remember_parent_times(cur)
                os.mkdir(path, 0o700)
                self.safe_dirs.add(cur)
                continue
            if not create and not stat.S_ISDIR(st.st_mode):
                return False
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePath(f"refusing to restore {rel!r}: its parent {cur!r} is a symlink")
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePath(f"refusing to restore {rel!r}: its parent {cur!r} is not a directory")
            self.safe_dirs.add(cur)
        return True

    def remember_parent_times(self, rel: str) -> None:
        """Before changing a directory the archive does not carry, note its times."""
        if rel != ".":
            self.remember_dir_times(rel.rsplit("/", 1)[0] if "/" in rel else ".")

    def remember_dir_times(self, parent: str) -> None:
        if parent in self.seen_dirs or parent in self.saved_times:
            return
        try:
            st = os.lstat(self.abs(parent))
        except FileNotFoundError:
            return
        self.saved_times[parent] = (st.st_atime_ns, st.st_mtime_ns)

    def remove(self, rel: str) -> bool:
        if rel == ".":
            raise UnsafePath("refusing to replace the restore target itself")
        path = self.abs(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        self.settle()  # a file still being created may be this one or below it
        if stat.S_ISDIR(st.st_mode):
            self.close_run_dir()  # it may be this directory or one below it
            shutil.rmtree(path)
            inside = rel + "/"
            self.safe_dirs = {d for d in self.safe_dirs if d != rel and not d.startswith(inside)}
            # Times noted for this directory (or below) must not land on what replaces it.
            self.saved_times = {d: t for d, t in self.saved_times.items()
                                if d != rel and not d.startswith(inside)}
        else:
            os.unlink(path)
        return True

    # -- main loop --------------------------------------------------------------------
    def run(self, entries: Iterable[tuple[ArchiveEntry, EntryData]]) -> RestoreStats:
        os.makedirs(self.target, exist_ok=True)
        # whole streams offer runs of plain small files in one call (ebm/restore.py)
        extract = getattr(entries, "extract_files", None) if self.select is None else None
        self.settle_fn = getattr(entries, "settle_files", None) if extract is not None else None
        try:
            return self.run_entries(entries, extract)
        finally:
            self.close_run_dir()

    def run_entries(self, entries: Iterable[tuple[ArchiveEntry, EntryData]],
                    extract: Callable[[int, bytes, bool], tuple[int, int]] | None,
                    ) -> RestoreStats:
        prog = Progress("restore")
        last = 0.0
        for entry, data in entries:
            rel = check_member_path(entry.path)
            if self.select is not None and not self.select(rel):
                self.stats.skipped += 1
                continue
            if entry.deleted:
                if self.ensure_parents(rel, create=False):
                    self.remember_parent_times(rel)
                    if self.remove(rel):
                        self.stats.deleted += 1
                continue
            self.ensure_parents(rel)
            self.remember_parent_times(rel)
            self.stats.entries += 1
            kind = entry.kind
            if rel == "." and kind != "dir":
                raise UnsafePath(f"refusing an archive whose root is a {kind}, not a directory")
            if kind == "dir":
                self.restore_dir(rel, entry)
            elif kind == "file":
                self.restore_file(rel, entry, data)
            elif kind == "symlink":
                self.restore_symlink(rel, entry)
            elif kind == "hardlink":
                self.restore_hardlink(rel, entry)
            else:
                self.restore_special(rel, entry)
            if extract is not None and kind in ("dir", "file"):
                self.extract_run(extract, rel if kind == "dir" else rel.rpartition("/")[0] or ".")
            prog.entries_done = self.stats.entries
            prog.bytes_done = self.stats.bytes
            if self.progress is not None and time.monotonic() - last > 0.1:
                last = time.monotonic()
                prog.path = rel
                self.progress(prog)
        self.finish_dirs()
        if self.progress is not None:
            self.progress(prog)
        return self.stats

    def extract_run(self, extract: Callable[[int, bytes, bool], tuple[int, int]],
                    rel_dir: str) -> None:
        """The plain regular files that come next in the stream directly inside ``rel_dir``
        (a directory checked safe), created by the stream's ``extract_files`` in one call:
        what restore_file does for each, without a Python object per file. The first
        member it does not take comes out of the iteration as usual."""
        if rel_dir not in self.safe_dirs:
            return
        if self.run_dir is None or self.run_dir[0] != rel_dir:
            self.close_run_dir()
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            self.run_dir = (rel_dir, os.open(self.abs(rel_dir), flags))
        self.remember_dir_times(rel_dir)
        prefix = b"" if rel_dir == "." else os.fsencode(rel_dir) + b"/"
        files, nbytes = extract(self.run_dir[1], prefix, _IS_ROOT)
        self.stats.entries += files
        self.stats.files += files
        self.stats.bytes += nbytes
        self.settle(wait=False)  # the files that failed so far: a damaged one stops us now

    def settle(self, wait: bool = True) -> None:
        """Wait until the files ``extract_files`` took are all created (before anything that
        may touch them: a removal, a hard link to one, the directories' times); the ones
        that failed are restored here the ordinary way, which raises what went wrong. Not
        ``wait``: only the failures known so far."""
        if self.settle_fn is None:
            return
        for entry, data in self.settle_fn(wait):
            self.stats.files -= 1  # counted by extract_run, again by restore_file
            self.stats.bytes -= entry.size
            self.restore_file(check_member_path(entry.path), entry, data)

    def close_run_dir(self) -> None:
        if self.run_dir is not None:
            os.close(self.run_dir[1])
            self.run_dir = None

    def restore_dir(self, rel: str, entry: ArchiveEntry) -> None:
        path = self.abs(rel)
        try:
            st = os.lstat(path)
            is_dir = stat.S_ISDIR(st.st_mode)
        except FileNotFoundError:
            is_dir = False
            st = None
        if not is_dir:
            if st is not None:
                self.remove(rel)
            os.mkdir(path, 0o700)
        self.safe_dirs.add(rel)
        self.seen_dirs.add(rel)
        self.saved_times.pop(rel, None)
        self.dir_entries.append(entry)
        self.stats.dirs += 1

    def restore_file(self, rel: str, entry: ArchiveEntry, data: EntryData) -> None:
        path = self.abs(rel)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:  # into an empty target nothing is there: no lstat before the create
            fd = os.open(path, flags, 0o600)
        except FileExistsError:  # whatever it is (a symlink too), it is replaced
            self.remove(rel)
            fd = os.open(path, flags, 0o600)
        try:
            view = self.buffer
            extents = entry.sparse_map if entry.sparse_map is not None else [(0, entry.size)]
            for off, length in extents:
                left = length
                while left:
                    n = data.readinto(view[: min(CHUNK, left)])
                    if not n:
                        raise ArchiveCorrupt(f"archive data of {rel!r} ends early")
                    os.pwrite(fd, view[:n], off)
                    off += n
                    left -= n
            if data.remaining:
                data.read()  # verify the digest over everything stored
            if entry.sparse_map is not None:
                os.ftruncate(fd, entry.size)
            self.apply_meta(fd, entry, is_fd=True)
        except BaseException:
            os.close(fd)
            fd = -1
            try:
                os.unlink(path)  # never leave a damaged or half-written file behind
            except OSError:
                pass
            raise
        finally:
            if fd >= 0:
                os.close(fd)
        self.stats.files += 1
        self.stats.bytes += entry.data_size

    def restore_symlink(self, rel: str, entry: ArchiveEntry) -> None:
        path = self.abs(rel)
        self.remove(rel)
        os.symlink(entry.linkname, path)
        self.apply_meta(path, entry, is_fd=False)
        self.stats.symlinks += 1

    def restore_hardlink(self, rel: str, entry: ArchiveEntry) -> None:
        src_rel = check_member_path(entry.linkname)
        self.settle()  # the link's target may still be being created
        self.ensure_parents(src_rel)
        src = self.abs(src_rel)
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            self.warn(f"hard link {rel} -> {src_rel}: target not restored (select it too)")
            return
        if stat.S_ISDIR(st.st_mode):
            raise UnsafePath(f"refusing hard link {rel!r} to a directory")
        self.remove(rel)
        os.link(src, self.abs(rel), follow_symlinks=False)
        self.stats.hardlinks += 1

    def restore_special(self, rel: str, entry: ArchiveEntry) -> None:
        path = self.abs(rel)
        self.remove(rel)
        try:
            if entry.kind == "fifo":
                os.mkfifo(path, 0o600)
            else:
                kind = stat.S_IFCHR if entry.kind == "chardev" else stat.S_IFBLK
                os.mknod(path, kind | 0o600, os.makedev(entry.devmajor, entry.devminor))
        except PermissionError:
            self.warn(f"cannot create device node {rel} (needs root)")
            return
        self.apply_meta(path, entry, is_fd=False)
        self.stats.others += 1

    # -- metadata ---------------------------------------------------------------------
    def apply_meta(self, target: str | int, entry: ArchiveEntry, *, is_fd: bool,
                   sync_xattrs: bool = False) -> None:
        link = entry.kind == "symlink"
        follow = not link
        if _IS_ROOT:
            try:
                os.chown(target, entry.uid, entry.gid, follow_symlinks=follow) if not is_fd else os.fchown(target, entry.uid, entry.gid)  # type: ignore[arg-type]
            except OSError as exc:
                self.warn(f"cannot chown {entry.path}: {exc.strerror}")
        if not link:
            os.chmod(target, entry.mode)
        if sync_xattrs:
            for name in read_xattrs(target) if isinstance(target, int) else read_xattrs(target, follow=follow):
                if name not in entry.xattrs:
                    try:
                        os.removexattr(target, name, follow_symlinks=follow) if not is_fd else os.removexattr(target, name)
                    except OSError:
                        pass
        for name, value in entry.xattrs.items():
            try:
                if is_fd:
                    os.setxattr(target, name, value)
                else:
                    os.setxattr(target, name, value, follow_symlinks=follow)
            except OSError as exc:
                self.warn(f"cannot set xattr {name} on {entry.path}: {exc.strerror}")
        atime = entry.atime_ns if entry.atime_ns is not None else entry.mtime_ns
        if is_fd:
            os.utime(target, ns=(atime, entry.mtime_ns))
        else:
            os.utime(target, ns=(atime, entry.mtime_ns), follow_symlinks=follow)

    def finish_dirs(self) -> None:
        """Directory metadata after all children, deepest first; then untouched parents' times."""
        self.settle()
        for entry in sorted(self.dir_entries, key=lambda e: -1 if e.path == "." else e.path.count("/"), reverse=True):
            path = self.abs(entry.path)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue  # replaced later in the archive (maybe by a symlink): never follow it
            self.apply_meta(path, entry, is_fd=False, sync_xattrs=True)
        for rel in sorted(self.saved_times, key=lambda p: -1 if p == "." else p.count("/"), reverse=True):
            atime, mtime = self.saved_times[rel]
            try:
                os.utime(self.abs(rel), ns=(atime, mtime), follow_symlinks=False)
            except OSError:
                pass


# ---------------------------------------------------------------------- manifest
def tree_manifest(root: str | os.PathLike) -> dict[str, tuple]:
    """A comparable description of a tree: what an exact restore must reproduce.

    Per path (``"."`` for the root): kind, permission bits, uid, gid, mtime_ns, and per kind:
    files - size, sha256, the data-extent map when the file is sparse; symlinks - target;
    devices - rdev; all - sorted xattrs; plus a hard-link group id (the group's first path).
    """
    root = os.fspath(root)
    out: dict[str, tuple] = {}
    groups: dict[tuple[int, int], str] = {}
    for rel, st in FilesystemTranslator().scan(root, []):
        path = root if rel == "." else os.path.join(root, rel)
        kind = _kind_of(st.st_mode) or "other"
        extra: tuple = ()
        if kind == "file":
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
                holes = _sparse_map(f.fileno(), st)
            extra = (st.st_size, digest, tuple(holes) if holes is not None else None)
            link_group = None
            if st.st_nlink > 1:
                link_group = groups.setdefault((st.st_dev, st.st_ino), rel)
            extra += (link_group,)
        elif kind == "symlink":
            extra = (os.readlink(path),)
        elif kind in ("chardev", "blockdev"):
            extra = (st.st_rdev,)
        xattrs = tuple(sorted(read_xattrs(path).items()))
        out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, extra, xattrs)
    return out
