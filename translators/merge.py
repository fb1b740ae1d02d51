"""The default consolidation merge: member replacement, for translators whose chain semantics
are those of translators.base (a later member of the same path replaces an earlier one, a
deletion marker removes it): the filesystem and stream translators, and any third-party one
that does not override ``merge_chain``/``write_merged``.

Why it is only a copy: the EBM already folds the chain into its *final view* (restore.py), so
the entries it hands to ``merge_chain`` are exactly the dataset at the chain's last point,
each once, in chain order (a hard link after the file it names). Step 1 spools them into one
pax file in the work directory (the chain's cartridges may be the very ones the new baseline
is appended to, so reading and writing cannot overlap); step 2 copies that spool into the new
backup's stream and makes the index rows. Nothing is converted, so nothing is lost: sparse
maps, xattrs, ownership, nanosecond times and hard links travel as the pax records they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tape_formats.archive import ArchiveEntry, EntryData, IndexEntry, PaxReader, PaxWriter

from .base import BackupResult, Progress, ProgressCallback, TranslatorState, file_row

SPOOL = "chain.pax"


def spool_view(entries: Iterable[tuple[ArchiveEntry, EntryData]], workdir: Path,
               progress: ProgressCallback | None = None) -> None:
    """Step 1: the chain's final view, as handed over, into ``workdir/chain.pax``."""
    workdir.mkdir(parents=True, exist_ok=True)
    done = 0
    with open(workdir / SPOOL, "wb") as f, PaxWriter(f) as w:
        for entry, data in entries:
            if entry.deleted:
                continue
            w.add(entry, data)
            done += entry.data_size
            if progress is not None:
                progress(Progress("merge", 0, None, done, None, entry.path))


def write_spool(workdir: Path, state: TranslatorState, writer: PaxWriter,
                progress: ProgressCallback | None = None) -> BackupResult:
    """Step 2: the spool copied into the new baseline; the state is the chain's last one (the
    data is what the source held then, so the next incremental compares against that)."""
    rows: list[IndexEntry] = []
    done = 0
    with open(workdir / SPOOL, "rb") as f:
        for entry, data in PaxReader(f):
            loc = writer.add(entry, data)
            if entry.kind == "file":
                rows.append(file_row(entry, loc))
            else:
                rows.append(IndexEntry(path=entry.path, kind=entry.kind, mtime_ns=entry.mtime_ns,
                                       mode=entry.mode, uid=entry.uid, gid=entry.gid,
                                       header_offset=loc.header_offset,
                                       data_offset=loc.data_offset, linkname=entry.linkname))
            done += entry.data_size
            if progress is not None:
                progress(Progress("backup", len(rows), None, done, None, entry.path))
    return BackupResult(state=state, entries=rows, level_hint="baseline")
