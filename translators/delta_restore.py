"""Restoring files that a chain carries as a baseline member plus delta members (sqlite pages,
volume chunks): the loop over the chain's members, and the temporary-name discipline.

Each backup of such a chain holds, per file NAME, a metadata member and one data member (the
whole file in a baseline, a delta in an incremental). :func:`restore_deltas` groups the
members by NAME, hands each file's members in order to its :class:`DeltaRebuild` (the
translator's subclass says how a member applies), and finishes every file only after the last
member: checked, then renamed into place. On any error every temporary file is removed, so a
failed restore leaves no half-written file under its real name. :class:`DeltaTranslator`
gives such a translator its ``restore`` and its consolidation merge (a restore into the work
directory: the merged file is exactly the restored one).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

from tape_formats.archive import ArchiveEntry, EntryData, check_member_path

from .base import Progress, ProgressCallback, RestoreStats, Translator, TranslatorError


class DeltaRebuild(ABC):
    """One file being rebuilt under ``.NAME.ebm-partial`` in the target."""

    def __init__(self, target: Path, name: str) -> None:
        self.final = target / name
        self.tmp = target / f".{name}.ebm-partial"
        self.name = name
        self.meta: dict | None = None  # the last metadata member met
        self.entry: ArchiveEntry | None = None  # the last data member applied
        # What the file is after the last member applied (a sha256, a chunk digest): the next
        # delta names it as its parent. None: no data member yet, nothing to finish.
        self.digest: str | None = None

    @abstractmethod
    def apply(self, path: str, entry: ArchiveEntry, data: EntryData) -> int:
        """Apply one data member (baseline or delta), set ``digest``; return the bytes read."""

    @abstractmethod
    def finish(self) -> None:
        """Check the rebuilt file against what was recorded at backup time, rename it."""

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


def restore_deltas(entries: Iterable[tuple[ArchiveEntry, EntryData]], target: Path, *,
                   noun: str, split: Callable[[str], tuple[str, bool]],
                   new: Callable[[Path, str], DeltaRebuild],
                   select: Callable[[str], bool] | None = None,
                   progress: ProgressCallback | None = None) -> RestoreStats:
    """Rebuild every file of ``entries`` under ``target``. ``split(path)`` gives a member's
    file NAME and whether it is the metadata member; ``noun`` names the backup kind in errors."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    stats = RestoreStats()
    pending: dict[str, DeltaRebuild] = {}
    try:
        for entry, data in entries:
            if entry.deleted or entry.kind != "file":
                continue
            path = check_member_path(entry.path)
            if "/" in path:
                raise TranslatorError(f"unexpected member {path!r} in {noun}")
            name, is_meta = split(path)
            if select is not None and not select(name):
                stats.skipped += 1
                continue
            rb = pending.get(name)
            if rb is None:
                rb = pending[name] = new(target, name)
            if is_meta:
                try:
                    rb.meta = json.loads(data.read())
                except ValueError:
                    raise TranslatorError(f"damaged metadata member {path!r}") from None
                continue
            stats.bytes += rb.apply(path, entry, data)
            rb.entry = entry
            stats.entries += 1
            if progress is not None:
                progress(Progress("restore", stats.entries, None, stats.bytes, None, path))
        for rb in pending.values():
            if rb.digest is not None:
                rb.finish()
                stats.files += 1
    finally:
        for rb in pending.values():
            rb.discard()
    return stats


class DeltaTranslator(Translator):
    """A translator whose chains are a baseline file plus delta members (sqlite, volume)."""

    restore_noun: ClassVar[str]  # "an SQLite backup": names the backup kind in errors
    rebuild: ClassVar[Callable[[Path, str], DeltaRebuild]]

    @staticmethod
    @abstractmethod
    def split_member(path: str) -> tuple[str, bool]:
        """(file NAME, whether it is the metadata member) of an archive member."""

    def restore(self, entries: Iterable[tuple[ArchiveEntry, EntryData]], target: Path, *,
                select: Callable[[str], bool] | None = None,
                progress: ProgressCallback | None = None) -> RestoreStats:
        return restore_deltas(entries, target, noun=self.restore_noun, split=self.split_member,
                              new=type(self).rebuild, select=select, progress=progress)

    def merge_chain(self, entries: Iterable[tuple[ArchiveEntry, EntryData]], workdir: Path, *,
                    progress: ProgressCallback | None = None) -> None:
        """The chain merged: exactly a restore, with all of its checks."""
        self.restore(entries, workdir, progress=progress)
