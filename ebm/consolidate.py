"""Consolidation (a synthetic full): a new baseline on tape built from the chain already on
tape (baseline + incrementals), without reading the source.

How: the chain's final view is read from tape exactly as a restore reads it (restore.py, so
encryption, seeks and checksums are the restore's), but handed to the translator's
``merge_chain`` instead of ``restore``, which merges it into a private work directory (member
replacement for the filesystem, pages for SQLite, chunks for volumes; translators.base). That
drive session is closed, then an ordinary baseline job (``Ebm.run_job``) runs with the
translator's ``write_merged`` in place of ``backup``: header, pax stream and trailer written
and synced, then recorded in one transaction. The two steps cannot overlap because the chain's cartridges
may be the ones the new baseline is appended to. The new backup is a full (no parent) whose
translator state is the chain's last state, so the next incremental's parent is it, and
retention (``ebm forget``) may then expire the old chain. Work space: the dataset's size, in
``TMPDIR`` or ``workdir``.

Not provided: a PostgreSQL base backup rebuilt from base + WAL (that needs a server replaying
WAL); its chains are consolidated by taking a new base backup. A translator that cannot merge
says so (``supports_consolidation = False``) and is refused first, from the catalog alone,
before a drive is claimed or a cartridge mounted.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ebm.catalog import Backup, CatalogError
from ebm.controller import BackupRequest, RequestError
from ebm.manager import Ebm, JobError, Progress, load_translator
from ebm.restore import RestoreError, restore
from tape_formats.archive import ArchiveEntry, EntryData, PaxWriter
from translators.base import (
    BackupResult,
    ProgressCallback,
    RestoreStats,
    Translator,
    TranslatorError,
    TranslatorState,
)

if TYPE_CHECKING:
    from ebm.remote.drive_encryption import DriveKey


class _MergeRead(Translator):
    """Step 1 seen by restore(): its entries go to ``merge_chain``, not to a restore."""

    def __init__(self, inner: Translator) -> None:
        self.inner = inner
        self.name, self.version = inner.name, inner.version

    def validate_source(self, source: str) -> None:
        return None

    def backup(self, source: str, parent_state: TranslatorState | None, writer: PaxWriter, *,
               progress: ProgressCallback | None = None) -> BackupResult:
        raise TranslatorError("a merge step does not back up")

    def restore(self, entries: Iterable[tuple[ArchiveEntry, EntryData]], target: Path, *,
                select: Callable[[str], bool] | None = None,
                progress: ProgressCallback | None = None) -> RestoreStats:
        self.inner.merge_chain(entries, Path(target), progress=progress)
        return RestoreStats()


class _MergeWrite(_MergeRead):
    """Step 2 seen by the manager: its ``backup`` is ``write_merged`` (the source is not read)."""

    supports_incremental = False

    def __init__(self, inner: Translator, workdir: Path, state: TranslatorState) -> None:
        super().__init__(inner)
        self.workdir, self.state = workdir, state

    def backup(self, source: str, parent_state: TranslatorState | None, writer: PaxWriter, *,
               progress: ProgressCallback | None = None) -> BackupResult:
        return self.inner.write_merged(self.workdir, self.state, writer, progress=progress)


def consolidate(ebm: Ebm, dataset: str, *, passphrase_file: Path | None = None,
                key_file: Path | None = None, compress: bool = True,
                workdir: Path | None = None, progress: Progress | None = None,
                drive_key: DriveKey | None = None) -> Backup:
    """Build and record a new baseline of ``dataset`` from its latest chain; return it.

    ``drive_key``: a chain written with the drive's encryption is read with it, and the new
    baseline is written with it (a dataset keeps its encryption)."""
    from ebm.manager import load_state

    cat = ebm.catalog
    ds = cat.dataset(dataset)
    if ds is None:
        raise RequestError(f"no dataset {dataset!r}")  # an unknown name: refused (exit 2)
    translator = load_translator(ds["translator"])
    if not translator.supports_consolidation:  # from the catalog alone: no drive, no tape
        raise JobError(translator.consolidation_refusal
                       or f"the {translator.name} translator does not consolidate chains")
    last = cat.last_good(dataset)
    if last is None:
        raise JobError(f"dataset {dataset} has no good backup to consolidate")
    try:
        chain = cat.chain(last)
    except CatalogError as e:
        raise JobError(str(e)) from None
    ebm.check_drive_key(chain, drive_key)  # before a drive is touched
    if drive_key is not None:
        ebm.use_drive_key(drive_key)
    if len(chain) == 1:
        raise JobError(f"backup {last.uuid} of {dataset} is already a full: nothing to consolidate")
    state = load_state(cat, last.id)
    if state is None:
        raise JobError(f"backup {last.uuid} has no translator state on record: cannot consolidate")
    req = BackupRequest(dataset=dataset, full=True, compress=compress,
                        passphrase_file=passphrase_file, key_file=key_file)
    req.validate()
    secret = ebm.dataset_secret(ds, req)  # an encrypted dataset stays encrypted
    with tempfile.TemporaryDirectory(prefix="ebm-consolidate-", dir=workdir) as tmp:
        work = Path(tmp) / "merged"
        try:
            restore(cat, ebm.library, lambda _name: _MergeRead(translator), last, work,
                    secret=secret, progress=progress)
        except TranslatorError as e:
            raise JobError(f"consolidation of {dataset} failed: {e}") from None
        except RestoreError as e:
            raise JobError(f"consolidation of {dataset}: {e}") from None
        b = ebm.run_job(ds, ds["pool"], _MergeWrite(translator, work, state), req, secret,
                        progress)
    options = {**b.options, "full_reason": f"consolidated from {len(chain)} backups "
               f"({chain[0].uuid} .. {last.uuid})",
               "consolidated_from": [c.uuid for c in chain]}
    cat.set_backup_options(b.id, options)
    return cat.backup(b.id)
