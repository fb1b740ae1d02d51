"""Restore: a whole backup, a point in a chain, or paths/globs, into a directory.

How it reads as little tape as possible: the catalog's file index of every backup in the
chain (baseline, then incrementals oldest first) is folded into the *final view* of the tree
at the chosen point (a later entry replaces an earlier one, a deletion removes the path and
everything under it). Only the entries of that view that match the selection are read, each
by LOCATEing to the block that holds its pax header and reading up to the next entry's header
through a bounded window, so a single-file restore reads that file's blocks and no other.
A whole full backup (no paths, a chain of one) skips the view: its stream is read once, front
to back, each entry checked against the catalog row at its offset (``_restore_whole``).
The translator then turns the pax entries back into the application's own form.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import io
import itertools
import math
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ebm.catalog import Backup, Catalog, CatalogError, FileRow
from ebm.crypto import BlockCipher, CryptoError
from ebm.drive_session import DriveSession, ReadMedia
from ebm.mover import MoverError, TapeReader

if TYPE_CHECKING:  # vtl, the reader and the translators are imported only when a restore runs
    from tape_formats.archive import ArchiveEntry, EntryData
    from translators.base import Translator
    from vtl.library import Library


class RestoreError(Exception):
    """One-line restore failure."""


class UnknownBackup(RestoreError):
    """The backup, dataset or time asked for names nothing (the CLIs exit 2: bad input)."""


class TargetRefused(RestoreError):
    """The restore target is not a directory, or not empty without ``--into-existing``: a
    refused request, nothing changed (the CLIs exit 2)."""


def resolve(catalog: Catalog, spec: str) -> Backup:
    """``ID``, ``UUID`` (or the short prefix ``ebm list`` prints), ``DATASET`` (its latest good
    backup), ``DATASET@TIME`` (the latest good backup started at or before TIME: ISO date/time
    or epoch seconds), ``DATASET@latest``, or ``latest`` (the newest good backup of any
    dataset, unless a dataset is called so)."""
    name, at, when = spec, None, None
    if spec == "latest" and catalog.dataset(spec) is None:
        done = catalog.backups(None, states=["done"])
        if not done:
            raise UnknownBackup(f"no good backup yet{catalog.empty_note}")
        return max(done, key=lambda b: (b.started, b.id))
    if "@" in spec:
        name, _, at = spec.partition("@")
        when = None if at == "latest" else parse_time(at)
    if catalog.dataset(name) is not None:
        done = [b for b in catalog.backups(name, states=["done"])
                if when is None or _started_by(b, when)]
        if not done:
            raise UnknownBackup(f"dataset {name!r} has no good backup"
                                + (f" at or before {at}" if at else ""))
        return done[-1]
    if at is not None:
        raise UnknownBackup(f"no dataset {name!r}")
    try:
        return catalog.backup(spec)
    except CatalogError:
        raise UnknownBackup(f"no backup or dataset {spec!r}{catalog.empty_note}") from None


def _started_by(b: Backup, when: float) -> bool:
    """Whether ``b`` started at or before ``when``. A whole-second ``when`` names its whole
    second: listings print times to the second, so ``home@2026-12-03T15:50:07+00:00``
    copied from ``ebm list`` picks the backup started at 15:50:07.4."""
    return (b.started if when % 1 else math.floor(b.started)) <= when


def parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(text.replace("_", " ")).timestamp()
    except ValueError:
        raise UnknownBackup(f"bad time {text!r} (use ISO like 2026-11-25T14:00 or epoch seconds)") from None


def with_shown_names(patterns: list[str] | None) -> list[str] | None:
    """``patterns`` plus, for each written the way ``ebm ls`` shows a name that is not UTF-8
    (``caf\\xe9``), the name itself, so a path copied from a listing selects that file."""
    if not patterns or not any("\\" in p for p in patterns):
        return patterns
    from tape_formats.archive.entry import parse_printable_path

    return list(dict.fromkeys([*patterns, *(parse_printable_path(p) for p in patterns)]))


def _plain(patterns: list[str] | None) -> list[str] | None:
    """The patterns as plain paths, or None if any is a glob (or there are none)."""
    if not patterns:
        return None
    out = [p.strip("/") for p in patterns]
    if any(not p or p == "." or any(c in p for c in "*?[") for p in out):
        return None
    return out


def final_view(catalog: Catalog, chain: list[Backup],
               patterns: list[str] | None = None) -> dict[str, FileRow]:
    """path -> the row that defines it at the chain's last point (deleted paths absent).

    With plain-path patterns only the rows of those paths, their ancestors (a deleted parent
    deletes them) and their descendants are read from the index, not the whole index."""
    view: dict[str, FileRow] = {}
    plain = _plain(with_shown_names(patterns))
    exact: list[str] = []
    if plain is not None:
        exact.append(".")  # the root: a restore into a new --to gives it its recorded mode
        for p in plain:
            parts = p.split("/")
            exact += ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for b in chain:
        rows = catalog.files(b.id) if plain is None else catalog.files_at(b.id, exact, plain)
        for row in rows:
            if row.deleted:
                view.pop(row.path, None)
                prefix = row.path + "/"
                for p in [p for p in view if p.startswith(prefix)]:
                    del view[p]
            else:
                view[row.path] = row
    return view


def _parent_dirs(view: dict[str, FileRow], selected: list[FileRow],
                 new_target: bool) -> list[FileRow]:
    """The recorded directories above the selected entries (not selected themselves): a path
    restore gives them their mode, owner and times (:func:`_set_dir_metadata`) instead of
    leaving the translator's bare 0700 ``mkdir``; the root ``.`` too when the restore made
    the target directory (one that existed keeps what its owner gave it)."""
    chosen = {r.path for r in selected}
    parents: dict[str, FileRow] = {}
    root = view.get(".")
    if new_target and "." not in chosen and root is not None and root.kind == "dir":
        parents["."] = root
    for r in selected:
        parts = r.path.split("/")[:-1]
        for i in range(len(parts)):
            p = "/".join(parts[: i + 1])
            row = view.get(p)
            if p not in chosen and p not in parents and row is not None and row.kind == "dir":
                parents[p] = row
    return list(parents.values())


def _set_dir_metadata(target: Path, rows: list[FileRow]) -> None:
    """Mode, owner (as root) and times of the restored parent directories, from the catalog
    (no tape read), deepest first so a parent's mtime is set after its children's. A path
    that is not a real directory inside ``target`` is left alone."""
    top = os.path.realpath(target)
    for row in sorted(rows, key=lambda r: -1 if r.path == "." else r.path.count("/"),
                      reverse=True):
        path = os.path.normpath(os.path.join(target, row.path))
        try:
            st = os.lstat(path)
            real = os.path.realpath(path)
            if not stat.S_ISDIR(st.st_mode) or not (real == top or real.startswith(top + os.sep)):
                continue
            if os.geteuid() == 0:
                os.lchown(path, row.uid, row.gid)
            os.chmod(path, stat.S_IMODE(row.mode))
            os.utime(path, ns=(row.mtime_ns, row.mtime_ns), follow_symlinks=False)
        except OSError:
            continue  # best effort, as the translator's own metadata: the data is restored


def matches(path: str, patterns: list[str]) -> bool:
    """A path is selected if a pattern matches it or one of its parent directories."""
    if not patterns:
        return True
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in with_shown_names(patterns) or []:
        pat = pat.strip("/") or "."
        if pat == ".":
            return True
        if any(fnmatch.fnmatchcase(p, pat) for p in prefixes):
            return True
    return False


class _Window:
    """A read-only view of [start, end) of a TapeReader: the pax reader reads ahead in
    1 MiB chunks, and this keeps that read-ahead from touching the next entry's blocks."""

    def __init__(self, reader: TapeReader, start: int, end: int) -> None:
        self.reader, self.pos, self.end = reader, start, end

    def read(self, n: int) -> bytes:
        n = min(n, self.end - self.pos)
        if n <= 0:
            return b""
        self.reader.seek(self.pos)
        data = self.reader.read(n)
        self.pos += len(data)
        return data


@dataclass
class RestoreStats:
    backups: list[str]
    entries: int = 0
    bytes: int = 0
    blocks_read: int = 0


def cipher_for(backup: Backup, secret: bytes | None) -> BlockCipher | None:
    params = backup.options.get("crypto")
    if not params:
        return None
    if secret is None:
        raise RestoreError(f"backup {backup.uuid} is encrypted: give --passphrase-file or --key-file")
    try:
        return BlockCipher.open(secret, backup.uuid, params)
    except CryptoError as e:
        raise RestoreError(str(e)) from None


def check_target(target: Path, into_existing: bool = False) -> None:
    """One-line refusal of a target that is not a directory, or (unless ``into_existing``)
    one that already holds anything."""
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir():
        raise TargetRefused(f"{target} exists and is not a directory")
    if into_existing:
        return
    with os.scandir(target) as it:
        if next(it, None) is not None:
            raise TargetRefused(
                f"{target} is not empty: restore into an empty directory, or pass "
                "--into-existing to merge (paths the backup holds are replaced, others kept)")


def restore(catalog: Catalog, library: Library, translator_loader: Callable[[str], Translator],
            backup: Backup, target: Path, patterns: list[str] | None = None,
            secret: bytes | None = None,
            progress: Callable[[int, int | None], None] | None = None, *,
            into_existing: bool = False,
            options: dict[str, Any] | None = None) -> RestoreStats:
    """Restore ``backup`` (its point of the chain), or the entries ``patterns`` select, into
    ``target``. A non-empty ``target`` is refused unless ``into_existing``: a restore is meant
    to be exact, and what the directory already holds would silently mix with it.

    ``options`` (from :func:`ebm.points.resolve_point`) go to a translator that restores to
    a point or in another form; it names the members they need (``restore_paths``)."""
    if backup.state != "done":
        raise RestoreError(f"backup {backup.uuid} is {backup.state}, not restorable")
    try:
        chain = catalog.chain(backup)
    except CatalogError as e:
        raise RestoreError(str(e)) from None
    for b in chain:
        if b.state != "done":
            raise RestoreError(f"backup {b.uuid} in the chain is {b.state}; cannot restore {backup.uuid}")
        if b.options.get("index_missing"):
            raise RestoreError(f"backup {b.uuid} has no file index (encrypted trailer): run "
                               "`ebm catalog rebuild` with its key first")
    target = Path(target)
    check_target(target, into_existing)
    ciphers = {b.id: cipher_for(b, secret) for b in chain}  # wrong key: refused before any read
    from translators.base import TranslatorError

    translator = translator_loader(backup.translator)
    if options is not None and not patterns:
        try:
            patterns = translator.restore_paths(options)  # type: ignore[attr-defined]
        except TranslatorError as e:
            raise RestoreError(str(e)) from None
    if not patterns and len(chain) == 1:
        _, total, unplaced = catalog.files_summary(backup.id)
        if not unplaced:
            return _restore_whole(catalog, library, translator, backup, target,
                                  ciphers[backup.id], total, progress, options)
    view = final_view(catalog, chain, patterns)
    selected = [r for p, r in view.items() if matches(p, patterns or [])]
    if patterns and not selected:
        raise RestoreError(f"nothing in backup {backup.uuid} matches {' '.join(patterns)}")
    parents = _parent_dirs(view, selected, not target.exists()) if patterns else []
    total = sum(r.size for r in selected)
    stats = RestoreStats([b.uuid for b in chain])
    target.mkdir(parents=True, exist_ok=True)
    session = DriveSession(library, f"ebm-restore:{backup.uuid}")
    opener = ReadMedia(session)
    try:
        if patterns:
            extra = _link_targets(catalog, chain, selected, opener, ciphers, stats)
            selected += extra
            total += sum(r.size for r in extra)
        by_backup: dict[int, list[FileRow]] = {}
        for r in selected:
            by_backup.setdefault(r.backup, []).append(r)

        def entries() -> Iterator[tuple[ArchiveEntry, EntryData]]:
            done_bytes = 0
            for b in chain:
                rows = sorted(by_backup.get(b.id, []), key=lambda r: r.header_offset)
                if not rows:
                    continue
                yield from read_rows(catalog, b, rows, opener, ciphers[b.id], stats)
                done_bytes += sum(r.size for r in rows)
                if progress:
                    progress(done_bytes, total)

        _run_translator(translator, entries(), target, backup, options)
        _set_dir_metadata(target, parents)
    except MoverError as e:
        raise RestoreError(str(e)) from None
    finally:
        with contextlib.suppress(Exception):
            session.close()
    return stats


def _restore_whole(catalog: Catalog, library: Library, translator: Translator, backup: Backup,
                   target: Path, cipher: BlockCipher | None, total: int,
                   progress: Callable[[int, int | None], None] | None,
                   options: dict[str, Any] | None) -> RestoreStats:
    """A whole full backup: its pax stream read once, front to back, with no per-entry LOCATE
    or reader, and no final view held in memory. Each entry is checked against the catalog
    row at its offset (path, sha256; rows streamed in the same order), and every row must be
    met, as the entry-by-entry path checks. Four threads: the tape read (:class:`_ReadAhead`),
    the parsing (this one) and two creating the plain files (``_WholeStream.extract_files``);
    every file is written, or its failure raised, before this returns."""
    stats = RestoreStats([backup.uuid])
    target.mkdir(parents=True, exist_ok=True)
    session = DriveSession(library, f"ebm-restore:{backup.uuid}")
    reader = TapeReader(catalog.volumes(backup.id), ReadMedia(session), backup.size, cipher)
    rows = catalog.iter_stream_rows(backup.id)
    ahead = _ReadAhead(reader)
    entries = None
    try:
        entries = _WholeStream(backup, ahead, rows, stats, total, progress)
        _run_translator(translator, entries, target, backup, options)
        entries.close()
    except MoverError as e:
        raise RestoreError(str(e)) from None
    finally:
        try:
            if entries is not None:  # after an error too: no file written once this returns
                entries.close(check=False)
        finally:
            ahead.close()  # the thread stopped: the reader is this thread's again
        stats.blocks_read += reader.blocks_read
        rows.close()  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            reader.close()
        with contextlib.suppress(Exception):
            session.close()
    return stats


class _ReadAhead:
    """The tape side of a whole-stream restore (block reads, checksums, decompression,
    decryption: :class:`TapeReader`) on a thread of its own, up to ``DEPTH`` chunks of
    ``CHUNK`` bytes ahead of the consumer, which meanwhile parses the stream and hands the
    files to the creator threads (``_paxfast.Extractor``; zstd and the pread release the
    GIL while they run). Why: on one thread a large-file restore waited for each block's
    decompression between file writes. A read error is raised in the consumer at
    the point of the stream where it happened; nothing is read past it.

    A ByteSource for :class:`PaxReader`: ``read`` hands out views of buffers never written
    again. Memory: at most ``DEPTH + 2`` chunks (queued, being filled, being consumed)."""

    CHUNK = 1 << 20
    DEPTH = 4

    def __init__(self, reader: TapeReader) -> None:
        from tape_formats.malloc_tuning import keep_freed_memory

        keep_freed_memory()  # (once per process) a chunk comes and goes per MiB read
        self.reader = reader
        self.queue: queue.Queue[memoryview | BaseException | None] = queue.Queue(self.DEPTH)
        self.stopping = threading.Event()
        self.rest: memoryview | None = None  # what is left of the chunk taken last
        self.ended = False
        self.thread = threading.Thread(target=self._run, name="ebm-restore-read", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        item: memoryview | BaseException | None
        while not self.stopping.is_set():
            try:
                buf = bytearray(self.CHUNK)
                n = self.reader.readinto(buf)
                item = memoryview(buf)[:n] if n else None
            except BaseException as e:  # handed to the consumer, which raises it
                item = e
            self.queue.put(item)  # close() empties the queue: a blocked put goes on
            if not isinstance(item, memoryview):
                return

    def read(self, n: int) -> memoryview | bytes:
        if self.ended:
            return b""
        mv = self.rest
        if mv is None:
            item = self.queue.get()
            if not isinstance(item, memoryview):
                self.ended = True
                if item is None:
                    return b""
                raise item
            mv = item
        if len(mv) > n:
            self.rest = mv[n:]
            return mv[:n]
        self.rest = None
        return mv

    def close(self) -> None:
        """Stop the thread and wait for it (it may be blocked on a full queue)."""
        self.stopping.set()
        while self.thread.is_alive():
            with contextlib.suppress(queue.Empty):
                while True:
                    self.queue.get_nowait()
            self.thread.join(0.01)
        self.ended = True
        self.rest = None


_StreamRow = tuple[int, str, bytes | None]  # header_offset, path, sha256 (Catalog.iter_stream_rows)


class _RowDigests(Mapping[int, str]):
    """The sha256 the catalog recorded at each header offset, for PaxReader's ``expected``,
    looked up in increasing offset order only (the stream's): the rows are a cursor, not a
    dict, read a batch ahead (:meth:`ahead`). The path of the row met at each offset is kept
    for the path check."""

    def __init__(self, backup: Backup, rows: Iterator[_StreamRow]) -> None:
        self.backup, self.rows = backup, rows
        self.batch: list[_StreamRow] = []  # rows read from the cursor; batch[at] is the next
        self.at = 0
        self.met: str | None = None

    def ahead(self, n: int) -> tuple[list[_StreamRow], int]:
        """The batch and the index of the next row in it, with ``n`` rows from there on
        (fewer at the end): what ``extract_files`` checks a run of members against."""
        if len(self.batch) - self.at < n:
            self.batch = self.batch[self.at:] + list(itertools.islice(self.rows, n))
            self.at = 0
        return self.batch, self.at

    @property
    def row(self) -> _StreamRow | None:
        batch, at = self.ahead(1)
        return batch[at] if at < len(batch) else None

    def get(self, offset: int, default: Any = None) -> Any:  # type: ignore[override]
        row = self.row
        if row is not None and row[0] < offset:
            raise RestoreError(f"backup {self.backup.uuid}: entry {row[1]!r} is missing "
                               "from the tape")
        self.met = None
        if row is not None and row[0] == offset:
            self.met = row[1]
            self.at += 1
            return row[2].hex() if row[2] else default
        return default

    def __getitem__(self, offset: int) -> str:
        raise KeyError(offset)  # only get() is used, in stream order

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __bool__(self) -> bool:
        return True  # PaxReader takes a falsy mapping for "no digests"


class _WholeStream:
    """The entries of a whole full backup, front to back, each checked against the catalog
    row at its offset; iterated as the translator's ``entries``. Also offers the filesystem
    translator :meth:`extract_files`: a run of plain small files straight from the read
    buffer in one C call."""

    RUN = 1024  # catalog rows handed to one extract_files call

    def __init__(self, backup: Backup, reader: _ReadAhead, rows: Iterator[_StreamRow],
                 stats: RestoreStats, total: int,
                 progress: Callable[[int, int | None], None] | None) -> None:
        from tape_formats.archive.reader import PaxReader

        self.backup, self.stats, self.total, self.progress = backup, stats, total, progress
        self.digests = _RowDigests(backup, rows)
        self.pax = PaxReader(reader, expected=self.digests, require_end=False)
        self.done = self.last = 0
        self.extract = _extractor()
        self.unsettled = 0  # files handed to the extractor since the last settle_files

    def __iter__(self) -> Iterator[tuple[ArchiveEntry, EntryData]]:
        digests = self.digests
        for entry, data in self.pax:
            met = digests.met
            if entry.deleted:
                continue
            if met is not None and entry.path != met:
                raise RestoreError(f"backup {self.backup.uuid}: found {entry.path!r} where the "
                                   f"index says {met!r}")
            self.stats.entries += 1
            self.stats.bytes += entry.size
            yield entry, data
            self.advanced(entry.size)
        if digests.row is not None:
            raise RestoreError(f"backup {self.backup.uuid}: entry {digests.row[1]!r} is "
                               "missing from the tape")
        if self.progress:
            self.progress(self.done, self.total)

    def advanced(self, nbytes: int) -> None:
        self.done += nbytes
        if self.progress and self.done - self.last >= 64 << 20:
            self.last = self.done
            self.progress(self.done, self.total)

    def extract_files(self, dirfd: int, prefix: bytes, owner: bool) -> tuple[int, int]:
        """Create the plain regular files that come next in the stream and sit directly in
        the directory open as ``dirfd`` (``prefix``: its path and ``/``, ``b""`` for the
        root), each checked against its catalog row (path, sha256), with their mode, times
        and, when ``owner``, their owner; stops at the first member that is anything else
        (the iteration yields that one). Returns (files, data bytes); (0, 0) without the
        C extension. The files are created by the extractor's threads, behind the reading:
        they are all there once :meth:`settle_files` returned."""
        extract = self.extract
        if extract is None:
            return 0, 0
        batch, at = self.digests.ahead(self.RUN)

        def take(buf: bytes, pos: int, offset: int) -> tuple[int, tuple[int, int]]:
            used, files, nbytes = extract.submit(buf, pos, offset, dirfd, prefix, batch, at,
                                                 owner)
            return used, (files, nbytes)

        files, nbytes = self.pax.take_members(take)
        self.digests.at += files
        self.stats.entries += files
        self.stats.bytes += nbytes
        self.unsettled += files
        self.advanced(nbytes)
        return files, nbytes

    def settle_files(self, wait: bool = True) -> Iterator[tuple[ArchiveEntry, EntryData]]:
        """Wait until every file :meth:`extract_files` took is created; then the entries of
        those that failed (nothing of them is left on disk), for the translator to restore
        the ordinary way, which reports what went wrong (a damaged member's digest, a file
        in the way, a full disk). Not ``wait``: the failures known so far only, without
        waiting (a translator looks after each run, so a damaged member stops the restore
        soon, not at its end)."""
        from tape_formats.archive.reader import PaxReader

        if self.extract is None:
            return
        if wait:
            self.unsettled = 0
        for member, offset, sha in self.extract.settle(wait):
            self.stats.entries -= 1  # counted again when the translator restores it
            yield from PaxReader(io.BytesIO(member), start_offset=offset,
                                 expected={offset: sha.hex()}, require_end=False)

    def close(self, check: bool = True) -> None:
        """Stop the extractor's threads once every file it took is written. With ``check``,
        raises if a translator took files and did not settle them (their failures would go
        unreported)."""
        if self.extract is None:
            return
        left = self.unsettled
        failed = self.extract.settle()
        self.extract.close()
        if check and left and failed:
            raise RestoreError(f"backup {self.backup.uuid}: {len(failed)} file(s) could not be "
                               "created and were not restored")


EXTRACT_WORKERS = 2  # threads creating the files of a whole restore (_paxfast.Extractor)


def _extractor() -> Any:
    """A ``_paxfast.Extractor`` (tape_formats/archive/_paxfast.c): ``extract_files``' runs
    created by worker threads; None when it is not built or ``VTL_NO_FASTPATH`` is set: then
    every entry takes the translator's own path."""
    if os.environ.get("VTL_NO_FASTPATH"):
        return None
    try:
        from tape_formats.archive._paxfast import Extractor  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Extractor(EXTRACT_WORKERS)


def _run_translator(translator: Translator, entries: Iterable[tuple[ArchiveEntry, EntryData]],
                    target: Path, backup: Backup, options: dict[str, Any] | None) -> None:
    """The translator's restore, its failures as one-line RestoreErrors."""
    from translators.base import TranslatorError

    try:
        if options is None:
            translator.restore(entries, target)
        else:
            translator.restore(entries, target, options=options)  # type: ignore[call-arg]
    except (MoverError, RestoreError):
        raise
    except TranslatorError as e:
        raise RestoreError(f"backup {backup.uuid}: {e}") from None
    except Exception as e:
        name = type(e).__name__
        if name in ("ArchiveCorrupt", "ArchiveError", "UnsafePath"):
            raise RestoreError(f"backup {backup.uuid}: {e}") from None
        raise


def _link_targets(catalog: Catalog, chain: list[Backup], selected: list[FileRow],
                  opener: ReadMedia, ciphers: dict[int, BlockCipher | None],
                  stats: RestoreStats) -> list[FileRow]:
    """The rows a path restore must add so that no selected hard link loses its data.

    Why: in the pax stream a hard link is a header naming an earlier member of the same
    backup, which holds the data; selecting ``b`` (a link to ``a``) alone would restore
    nothing. So the member each selected link names is restored too, from the link's own
    backup (the filesystem translator re-sends a whole link group whenever one member
    changes, so that is where the data is). Catalogs from before ``ebm_files.linkname``
    have no target recorded: then the link's pax header is read from tape to learn it.
    """
    have = {(r.backup, r.path) for r in selected}
    links = [r for r in selected if r.kind == "hardlink"]
    unknown = [r for r in links if not r.linkname]
    targets = {(r.backup, r.path): r.linkname for r in links if r.linkname}
    if unknown:
        peek = RestoreStats([])
        for b in chain:
            rows = sorted((r for r in unknown if r.backup == b.id), key=lambda r: r.header_offset)
            if rows:
                for entry, _data in read_rows(catalog, b, rows, opener, ciphers[b.id], peek):
                    targets[(b.id, entry.path)] = entry.linkname
        stats.blocks_read += peek.blocks_read
    extra: list[FileRow] = []
    for (bid, path), target in targets.items():
        if not target or (bid, target) in have:
            continue
        row = catalog.file(bid, target)
        if row is None or row.deleted:
            b = next(x for x in chain if x.id == bid)
            raise RestoreError(f"backup {b.uuid}: hard link {path!r} names {target!r}, which "
                               "the backup does not hold")
        have.add((bid, target))
        extra.append(row)
    return extra


def read_rows(catalog: Catalog, b: Backup, rows: list[FileRow], opener: ReadMedia,
               cipher: BlockCipher | None, stats: RestoreStats) -> Iterator[tuple[ArchiveEntry, EntryData]]:
    """The pax entries of ``rows`` (one backup's, in tape order), each read by seeking to its
    header and checked against the sha256 the index holds. Also what ``ebm wal-fetch`` reads
    one WAL segment with (:mod:`ebm.wal_fetch`)."""
    from tape_formats.archive.reader import PaxReader

    # Each entry ends where the next one of the same backup begins (or at the stream end).
    if len(rows) > 64:
        starts = sorted({r.header_offset for r in catalog.files(b.id) if r.header_offset >= 0})
        nxt = {s: e for s, e in zip(starts, starts[1:] + [b.size], strict=True)}
    else:
        nxt = {r.header_offset: catalog.next_header_offset(b.id, r.header_offset) or b.size
               for r in rows}
    reader = TapeReader(catalog.volumes(b.id), opener, b.size, cipher)
    try:
        for r in rows:
            end = nxt.get(r.header_offset, b.size)
            win = _Window(reader, r.header_offset, end)
            expected = {r.header_offset: r.sha256.hex()} if r.sha256 else {}
            pr = PaxReader(win, start_offset=r.header_offset, expected=expected, require_end=False)
            got = False
            for entry, data in pr:
                if entry.deleted:
                    continue
                if entry.path != r.path:
                    raise RestoreError(
                        f"backup {b.uuid}: found {entry.path!r} where the index says {r.path!r}")
                got = True
                stats.entries += 1
                stats.bytes += r.size
                yield entry, data
                break
            if not got:
                raise RestoreError(f"backup {b.uuid}: entry {r.path!r} is missing from the tape")
    finally:
        stats.blocks_read += reader.blocks_read
        reader.close()
