"""``ebm wal-fetch``: archived WAL files from tape, for PostgreSQL's ``restore_command``.

A point-in-time restore (``ebm restore DATASET@TIME``) writes the base backup and sets
``restore_command`` to :func:`fetch_command` plus ``%f %p``. PostgreSQL then asks for each WAL
file it replays by name; this module finds it among the ``wal/`` members of the chain of the
restored backup (the catalog's index, no tape scan), reads that member from tape through a
drive of the library (its sha256 checked against the index as it is read) and writes it to
``%p`` through a temporary name, fsynced, so the server never sees half a segment.

Asked for segment N, it also reads the next segments of the same backup in the same tape
pass (up to ``--prefetch-mb``, default :data:`PREFETCH_MB`) into the prefetch spool
(:mod:`ebm.wal_spool`), from which the next calls are served without a drive, a catalog or
the tape: one drive claim and one LOCATE per batch instead of per segment. restore_command
starts at :mod:`ebm.wal_spool` (a light module), which runs ``ebm wal-fetch`` only when the
file is not in the spool.

The answer follows ``restore_command``'s contract: exit 0 when the file is there; exit 1
when the chain has no such file (the normal end of the archive: PostgreSQL then looks in
``pg_wal`` and ends recovery; the light entry gives the same answer from the spool's
``.chain``); and any other failure (catalog,
tape, damaged data) exits :data:`EXIT_FATAL`, above 125, which PostgreSQL takes as "abort
recovery" instead of "end of the archive" (a damaged segment must never promote a server
that is missing commits). A damaged segment read ahead is dropped, not served: its own call
reads it again and fails then.

What it must not do: write to the catalog, or read more of the tape than the member asked
for and the bounded run of segments after it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ebm.catalog import Backup, Catalog, CatalogError, FileRow
from ebm.wal_spool import WalSpool
from tape_formats.durable import fsync_dir

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tape_formats.archive import ArchiveEntry, EntryData
    from vtl.library import Library

WAL_PREFIX = "wal/"  # translators.pg: where an incremental puts its segments
EXIT_NOT_IN_CHAIN = 1
EXIT_FATAL = 126
CHUNK = 1 << 20
PREFETCH_MB = 256  # read-ahead per tape pass: 16 segments of the default 16 MiB


class WalFetchError(Exception):
    """A WAL file cannot be fetched; one line (restore_command must then stop recovery)."""


class WalNotInChain(WalFetchError):
    """The chain holds no WAL file of that name (restore_command's "not found")."""


def fetch_program() -> list[str]:
    """restore_command's program: ``python -m ebm.wal_spool``, which serves a prefetched
    segment in a Python start-up and otherwise runs ``ebm`` with the same arguments."""
    return [sys.executable, "-m", "ebm.wal_spool"]


def fetch_command(catalog_root: Path, backup: Backup,
                  program: list[str] | None = None) -> list[str]:
    """The argv (without ``%f %p``) that fetches WAL of ``backup``'s chain: ``program``
    (default :func:`fetch_program`; an ``ebm`` works too, without the light start) on the
    same catalog. A catalog directory of a remote
    library is named by ``--catalog`` (it remembers the library); a local library by
    ``--root``."""
    root = Path(catalog_root).absolute()
    argv = list(program or fetch_program())
    from ebm.remote.ebm_host import REMOTE_CONFIG

    where = "--catalog" if (root / REMOTE_CONFIG).exists() else "--root"
    return [*argv, where, str(root), "wal-fetch", backup.uuid]


def fetch_options(catalog_root: Path, catalog: Catalog, backup: Backup,
                  program: list[str] | None = None) -> dict[str, object]:
    """The restore options of a physical restore that fetches WAL from tape: restore_command's
    argv (:func:`fetch_command`) and the chain's WAL names, which the restore leaves in the
    spool, so restore_command answers "not in the chain" without the CLI from the start."""
    return {"wal_fetch": fetch_command(catalog_root, backup, program),
            "wal_chain": chain_names(catalog, backup)}


def _check_name(name: str) -> str:
    """A WAL file name as PostgreSQL asks for one (a segment, a timeline history, a
    ``.partial`` or ``.backup`` file); anything else is not in any chain."""
    from translators.pg.wal import is_history, is_segment

    head = name.split(".", 1)[0]
    if not (is_segment(name) or is_history(name) or (is_segment(head) and "/" not in name)):
        raise WalNotInChain(f"{name!r} is not a WAL file name")
    return name


def locate(catalog: Catalog, backup: Backup, name: str) -> tuple[Backup, FileRow]:
    """The backup of ``backup``'s chain that holds WAL file ``name``, and its index row (the
    newest one, as a restore's final view would pick). Only the catalog is read, so the
    many "not in the archive" questions of a recovery cost no drive and no tape module."""
    member = WAL_PREFIX + _check_name(name)
    try:
        chain = catalog.chain(backup)
    except CatalogError as e:
        raise WalFetchError(str(e)) from None
    for b in reversed(chain):
        row = catalog.file(b.id, member)
        if row is not None:
            if row.deleted or row.kind != "file":
                break
            return b, row
    raise WalNotInChain(f"{name} is not in the chain of backup {backup.uuid}")


def chain_names(catalog: Catalog, backup: Backup) -> list[str]:
    """The WAL file names of ``backup``'s chain as a restore's final view has them."""
    final: dict[str, bool] = {}
    for b in reversed(catalog.chain(backup)):
        for r in catalog.files(b.id, WAL_PREFIX + "*"):
            final.setdefault(r.path[len(WAL_PREFIX):], not r.deleted and r.kind == "file")
    return sorted(name for name, present in final.items() if present)


def fetch(catalog: Catalog, library: Library, backup: Backup, name: str, dest: Path,
          secret: bytes | None = None, spool: WalSpool | None = None,
          prefetch_bytes: int = PREFETCH_MB << 20) -> int:
    """Write WAL file ``name`` of ``backup``'s chain to ``dest``; return its size. With a
    ``spool``, the segments after it in the same backup (up to ``prefetch_bytes``) are read
    in the same pass and left there for the next calls."""
    owner, row = locate(catalog, backup, name)
    ahead = _following(catalog, backup, owner, row, name, prefetch_bytes) if spool else []
    if ahead and not (spool and spool.create()):
        ahead = []  # no spool directory: this one segment only
    if ahead and spool:
        with contextlib.suppress(OSError):  # a cache: without it the CLI answers instead
            spool.write_chain(chain_names(catalog, backup))
    from ebm.drive_session import DriveSession, ReadMedia
    from ebm.mover import MoverError
    from ebm.restore import RestoreError, RestoreStats, cipher_for, read_rows

    tmp = dest.with_name(f".{dest.name}.ebm-partial")
    session = DriveSession(library, f"ebm-wal-fetch:{backup.uuid}")
    spooled: list[str] = []
    stats = RestoreStats([owner.uuid])
    pairs = read_rows(catalog, owner, [row, *ahead], ReadMedia(session),
                      cipher_for(owner, secret), stats)
    try:
        _write(next(pairs)[1], tmp, name)
        os.replace(tmp, dest)
        fsync_dir(str(dest.parent))  # the rename is durable before exit 0
        if spool is not None:
            _read_ahead(pairs, ahead, spool, spooled)
    except (MoverError, RestoreError) as e:
        raise WalFetchError(str(e)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with contextlib.suppress(Exception):
            pairs.close()  # the tape reader, before the drive goes
        with contextlib.suppress(Exception):
            session.close()
    return row.size


def _following(catalog: Catalog, backup: Backup, owner: Backup, row: FileRow, name: str,
               budget: int) -> list[FileRow]:
    """The rows of the segments after ``name`` that the chain takes from the same backup,
    further on the same tape, up to ``budget`` bytes (the run stops at the first that is
    not)."""
    from translators.pg.wal import is_segment, segment_name, split_name

    if not is_segment(name) or row.size <= 0 or (row.size & (row.size - 1)):
        return []
    tli, segno = split_name(name, row.size)
    rows: list[FileRow] = []
    last = row
    for k in range(1, budget // row.size + 1):
        try:
            b, nxt = locate(catalog, backup, segment_name(tli, segno + k, row.size))
        except WalNotInChain:
            break
        if b.id != owner.id or nxt.header_offset <= last.header_offset:
            break
        rows.append(nxt)
        last = nxt
    return rows


def _read_ahead(pairs: Iterator[tuple[ArchiveEntry, EntryData]], ahead: list[FileRow],
                spool: WalSpool, spooled: list[str]) -> None:
    """Write the read-ahead segments into the spool and publish them. A failure here only
    ends the read-ahead (the segment asked for is already handed over): whatever is not
    published is read from tape again by its own call, which then reports the damage."""
    try:
        for r, (_entry, data) in zip(ahead, pairs, strict=False):
            seg = r.path[len(WAL_PREFIX):]
            _write(data, Path(spool.part(seg)), seg)
            spooled.append(seg)
        spool.publish(spooled)
    except Exception:  # the read-ahead is a cache: its loss costs a tape read, no more
        for seg in spooled:
            with contextlib.suppress(OSError):
                os.unlink(spool.part(seg))


def _write(data: EntryData, tmp: Path, name: str) -> None:
    with open(tmp, "wb") as out:
        while chunk := data.read(CHUNK):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if not data.verified:
        raise WalFetchError(f"{name}: its sha256 was not checked (no index digest)")
