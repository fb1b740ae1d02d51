"""The translator plugin interface: how the EBM talks to one kind of application.

A translator converts a dataset (a directory tree, a database, a byte stream ...) to the
neutral archive format (a pax stream written through :class:`PaxWriter`) and back, without
needing the application at restore time. The EBM never looks inside a dataset; it only:

1. ``load_translator(name)`` - finds the class through the entry point group
   ``ebm.translators`` (``[project.entry-points."ebm.translators"] name = "pkg.mod:Class"``),
   importing the module only now, so a third-party package can ship a translator;
2. ``canonical_source(source)`` - how the catalog spells the source (default: the absolute
   path); ``validate_source(source)`` - refuses a bad request up front with :class:`TranslatorError`
   (one-line message, shown to the admin as is);
3. ``backup(source, parent_state, writer, progress=...)`` - writes entries (and, for
   incrementals, deletion markers) to the writer and returns a :class:`BackupResult`: the file
   index (:class:`IndexEntry` rows with stream offsets and sha256), warnings, and the new
   ``state`` (JSON-serialisable, or ``bytes`` or a binary file in the translator's own
   encoding, kept as they are and handed back as a binary file: see
   ``ebm.manager.encode_state``) that the EBM stores in its catalog and hands back as
   ``parent_state`` for the next incremental. ``parent_state=None`` means a baseline. The EBM
   closes the writer (end-of-archive blocks) after ``backup`` returns;
4. ``restore(entries, target, select=...)`` - consumes ``(ArchiveEntry, EntryData)`` pairs
   (from :class:`PaxReader`) into ``target``. A whole backup's ``entries`` also offer
   ``extract_files(dirfd, prefix, owner) -> (files, bytes)``: the plain regular files that
   come next in one directory, taken in one C call and created by threads behind the reading,
   and ``settle_files(wait=True)``, which waits until they all exist (with ``wait`` false:
   does not wait) and yields the entries of those that failed, to restore the ordinary way (the filesystem translator calls both, settling
   before anything that may touch those files and at the end; others just iterate). A
   translator that takes files and never settles them fails the restore.

Chain semantics (``apply_chain``): to restore backup N of a chain, restore the baseline and
then every incremental up to N, in order, into the same (initially empty) target. Each
incremental's deletion markers are applied when met (they come first in the stream), entries
replace what is there, and directory metadata is applied after the children. The result is
exactly the tree as it was at backup N.

Translators with ``supports_incremental = False`` (stream) always write a complete
copy: the manager should make baselines for them. If it passes a ``parent_state`` anyway, the
copy also records as deleted the parent's members it no longer has (``delete_stale_members``),
so the chain still restores exactly.

Translators whose incrementals are deltas of one object (sqlite pages, volume chunks) name
each delta member uniquely within the chain (``NAME.ebm-sqlite-delta.000003``), so the final
view keeps every delta, and their ``restore`` applies them in the order met. ``restore`` must
also accept one call per archive of the chain (``apply_chain``): it continues from what an
earlier call left in ``target``.

Restoring to a point (optional; ``ebm/points.py``): a translator that keeps a log of changes
(postgresql's WAL) has ``choose_point(states, when, lsn, form) -> (index, options)``, which
picks among the dataset's good backups (their states, oldest first) the one whose chain
reaches the point, and ``restore_paths(options)``, the members that form needs; ``restore``
then gets ``options=`` (e.g. ``{"form": "physical", "target_time": ...}``). ``ebm restore
DATASET@TIME``, ``--lsn`` and ``--as`` go through them.

Consolidation (``ebm consolidate DATASET``, a synthetic full) runs in two steps, because the
cartridges holding the chain may be the ones the new baseline is appended to:

5. ``merge_chain(entries, workdir)`` - consumes the chain's entries exactly as ``restore``
   would get them (final view, chain order) into a private work directory;
6. ``write_merged(workdir, state, writer)`` - writes a baseline from that directory and
   returns its :class:`BackupResult`; ``state`` is the chain's last state, and the returned
   state is what the next incremental compares against (the data did not change, so it is
   normally the same state).

A translator that cannot merge its chain (postgresql: a base backup rebuilt from base + WAL
needs a server replaying the WAL) says so with ``supports_consolidation = False`` and a
``consolidation_refusal`` telling the admin what to do instead; ``ebm consolidate`` then
refuses before it claims a drive or mounts a cartridge.

The defaults (:mod:`translators.merge`) spool the final view and copy it back: right for any
translator whose members replace each other by path (filesystem, stream). A translator with
deltas overrides both: sqlite and volume derive from
:class:`translators.delta_restore.DeltaTranslator`, whose ``restore`` rebuilds each file from
its baseline and deltas and whose ``merge_chain`` is that restore into ``workdir``; their
``write_merged`` writes the merged file as a baseline.

Writing a translator (docs/writing-a-translator.md has a worked example package):

- subclass :class:`Translator`, set ``name``, ``version`` and ``supports_incremental`` (and
  ``supports_consolidation = False`` with a ``consolidation_refusal`` if chains cannot merge);
- ``backup`` writes members with ``writer.add(ArchiveEntry(...), data)`` (data: bytes, or an
  object with ``readinto``/``read`` giving exactly ``entry.data_size`` bytes, so big members
  stream) and returns one :class:`IndexEntry` per member (``file_row`` builds a file's), plus
  a JSON-serialisable ``state`` that lets the next incremental find what changed without
  reading tape; ``level_hint="incremental"`` only when the stream needs its parent;
- member paths are relative, without ``..`` (``check_member_path``); GNU tar must be able to
  list and extract them, and a reader without the EBM should be able to use what it gets;
- ``restore`` writes under ``target`` through temporary names and renames into place only
  after checking what it wrote (a sha256 recorded at backup time), so a failed restore leaves
  no half-written result; every failure is a one-line :class:`TranslatorError`;
- register it: ``[project.entry-points."ebm.translators"] NAME = "package.module:Class"``,
  then ``ebm backup DATASET --translator NAME --source ... --pool ...``.

Progress: ``progress(Progress)`` is called from the backup/restore thread at most every
~0.1 s and once at the end; it must be cheap and must not raise.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from tape_formats.archive import (
    ArchiveEntry,
    EntryData,
    EntryLocation,
    IndexEntry,
    PackedIndex,
    PaxWriter,
)

ENTRY_POINT_GROUP = "ebm.translators"

# Used only when the package metadata does not (yet) list an entry point of that name, e.g. a
# source checkout whose editable install predates the entry point.
_BUILTIN = {
    "filesystem": "translators.filesystem:FilesystemTranslator",
    "postgresql": "translators.postgresql:PostgresqlTranslator",
    "sqlite": "translators.sqlite:SqliteTranslator",
    "stream": "translators.stream:StreamTranslator",
    "volume": "translators.volume:VolumeTranslator",
}

TranslatorState = dict[str, Any]


class TranslatorError(Exception):
    """A translator refused or failed; the message is one line fit for an admin."""


@dataclass(slots=True)
class Progress:
    phase: str  # "scan", "backup", "restore"
    entries_done: int = 0
    entries_total: int | None = None
    bytes_done: int = 0
    bytes_total: int | None = None
    path: str = ""


ProgressCallback = Callable[[Progress], None]


@dataclass(slots=True)
class BackupResult:
    state: TranslatorState
    entries: list[IndexEntry] | PackedIndex  # PackedIndex: a big index without a row object each
    warnings: list[str] = field(default_factory=list)
    level_hint: str = "baseline"  # "baseline" or "incremental": what was actually written


@dataclass(slots=True)
class RestoreStats:
    entries: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    others: int = 0
    deleted: int = 0
    bytes: int = 0
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)

    def merge(self, other: RestoreStats) -> None:
        for name in ("entries", "files", "dirs", "symlinks", "hardlinks", "others", "deleted",
                     "bytes", "skipped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.warnings.extend(other.warnings)


class Translator(ABC):
    """One application's converter to and from the archive format (see the module doc)."""

    name: ClassVar[str]
    version: ClassVar[str]
    supports_incremental: ClassVar[bool] = True
    # False: ``ebm consolidate`` refuses the dataset at once, from the catalog alone (no drive
    # claimed, no cartridge mounted), with ``consolidation_refusal`` as its one-line message.
    supports_consolidation: ClassVar[bool] = True
    consolidation_refusal: ClassVar[str] = ""

    @abstractmethod
    def validate_source(self, source: str) -> None:
        """Raise TranslatorError (one line) if ``source`` cannot be backed up."""

    def canonical_source(self, source: str) -> str:
        """The source as the catalog stores and compares it. By default a path, made absolute;
        a translator whose source is something else (a connection string) gives its own
        spelling, or raises TranslatorError for a malformed one."""
        return str(Path(source).resolve())

    @abstractmethod
    def backup(self, source: str, parent_state: TranslatorState | None, writer: PaxWriter, *,
               progress: ProgressCallback | None = None) -> BackupResult:
        """Write the dataset (or its changes since ``parent_state``) to ``writer``."""

    @abstractmethod
    def restore(self, entries: Iterable[tuple[ArchiveEntry, EntryData]], target: Path, *,
                select: Callable[[str], bool] | None = None,
                progress: ProgressCallback | None = None) -> RestoreStats:
        """Recreate the archived entries under ``target``."""

    def merge_chain(self, entries: Iterable[tuple[ArchiveEntry, EntryData]], workdir: Path, *,
                    progress: ProgressCallback | None = None) -> None:
        """Consolidation step 1: the chain's entries (as ``restore`` gets them) into ``workdir``.
        Default: spool them as one pax file (member replacement, see the module doc)."""
        from .merge import spool_view

        spool_view(entries, Path(workdir), progress)

    def write_merged(self, workdir: Path, state: TranslatorState, writer: PaxWriter, *,
                     progress: ProgressCallback | None = None) -> BackupResult:
        """Consolidation step 2: a baseline from ``workdir`` into ``writer``. Default: copy the
        spool back, keeping the chain's last ``state``."""
        from .merge import write_spool

        return write_spool(Path(workdir), state, writer, progress)


def stat_source(source: str, noun: str = "source") -> os.stat_result:
    """``os.stat(source)``, with the failures every ``validate_source`` must report turned into
    one-line :class:`TranslatorError` messages (``noun`` names the thing: "database" ...)."""
    try:
        return os.stat(source)
    except FileNotFoundError:
        raise TranslatorError(f"{noun} {source} does not exist") from None
    except OSError as exc:
        raise TranslatorError(f"cannot stat {noun} {source}: {exc.strerror}") from None


def file_row(entry: ArchiveEntry, loc: EntryLocation, *, torn: bool = False) -> IndexEntry:
    """The index row of a regular-file member just written: its metadata as archived, where
    the writer put it and the sha256 of its bytes, so every translator's rows agree."""
    return IndexEntry(path=entry.path, kind="file", size=entry.size, mtime_ns=entry.mtime_ns,
                      mode=entry.mode, uid=entry.uid, gid=entry.gid, sha256=loc.sha256,
                      header_offset=loc.header_offset, data_offset=loc.data_offset, torn=torn)


class PieceReader:
    """``readinto`` over a member's bytes made piece by piece, so a member never sits in
    memory whole (what the pax writer streams): ``_next_piece`` gives the next piece (a
    memoryview, maybe of a buffer the next call fills again), None at the end."""

    _pending: memoryview = memoryview(b"")

    def _next_piece(self) -> memoryview | None:
        raise NotImplementedError

    def readinto(self, b) -> int:
        out = memoryview(b)
        done = 0
        while done < len(out):
            if not self._pending:
                piece = self._next_piece()
                if piece is None:
                    break
                self._pending = piece
            n = min(len(out) - done, len(self._pending))
            out[done:done + n] = self._pending[:n]
            self._pending = self._pending[n:]
            done += n
        return done


def delete_stale_members(parent_state: TranslatorState | None, members: list[str],
                         writer: PaxWriter) -> list[IndexEntry]:
    """For translators that always write a complete copy: record as deleted every member of the
    parent backup (``parent_state["members"]``) that this one no longer has, so a chain restore
    (or the EBM's final view of a chain) never mixes in stale members of an older copy."""
    if not isinstance(parent_state, dict):
        return []
    gone = sorted(set(parent_state.get("members") or []) - set(members))
    if not gone:
        return []
    off = writer.add_deletions(gone)
    return [IndexEntry(path=p, kind="file", deleted=True, header_offset=off, data_offset=off)
            for p in gone]


def apply_chain(translator: Translator,
                archives: Iterable[Iterable[tuple[ArchiveEntry, EntryData]]], target: Path, *,
                select: Callable[[str], bool] | None = None,
                progress: ProgressCallback | None = None) -> RestoreStats:
    """Restore baseline, then each incremental, in order, into ``target`` (see module doc)."""
    total = RestoreStats()
    for archive in archives:
        total.merge(translator.restore(archive, Path(target), select=select, progress=progress))
    return total


def available_translators() -> list[str]:
    names = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names | set(_BUILTIN))


def load_translator(name: str) -> Translator:
    """Import and instantiate the translator registered as ``name`` (lazily, on demand)."""
    eps = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    try:
        if eps:
            cls = eps[0].load()
        elif name in _BUILTIN:
            module, _, attr = _BUILTIN[name].partition(":")
            cls = getattr(importlib.import_module(module), attr)
        else:
            known = ", ".join(available_translators()) or "none"
            raise TranslatorError(f"unknown translator {name!r} (available: {known})")
    except TranslatorError:
        raise
    except Exception as exc:  # a broken third-party plugin must not crash the manager
        raise TranslatorError(f"cannot load translator {name!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Translator)):
        raise TranslatorError(f"translator {name!r} is not a Translator subclass")
    return cls()
