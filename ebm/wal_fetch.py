"""``ebm wal-fetch``: one archived WAL file from tape, for PostgreSQL's ``restore_command``.

A point-in-time restore (``ebm restore DATASET@TIME``) writes the base backup and sets
``restore_command`` to :func:`fetch_command` plus ``%f %p``. PostgreSQL then asks for each WAL
file it replays by name; this module finds it among the ``wal/`` members of the chain of the
restored backup (the catalog's index, no tape scan), reads that one member from tape through
a drive of the library (its sha256 checked against the index as it is read) and writes it
to ``%p`` through a temporary name, fsynced, so the server never sees half a segment.

The answer follows ``restore_command``'s contract: exit 0 when the file is there; exit 1
when the chain has no such file (the normal end of the archive: PostgreSQL then looks in
``pg_wal`` and ends recovery); and any other failure (catalog, tape, damaged data) exits
:data:`EXIT_FATAL`, above 125, which PostgreSQL takes as "abort recovery" instead of "end of
the archive" (a damaged segment must never promote a server that is missing commits).

What it must not do: write to the catalog, or read more of the tape than the one member.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ebm.catalog import Backup, Catalog, CatalogError, FileRow

if TYPE_CHECKING:
    from tape_formats.archive import EntryData
    from vtl.library import Library

WAL_PREFIX = "wal/"  # translators.pg: where an incremental puts its segments
EXIT_NOT_IN_CHAIN = 1
EXIT_FATAL = 126
CHUNK = 1 << 20


class WalFetchError(Exception):
    """A WAL file cannot be fetched; one line (restore_command must then stop recovery)."""


class WalNotInChain(WalFetchError):
    """The chain holds no WAL file of that name (restore_command's "not found")."""


def ebm_program() -> list[str]:
    """This installation's ``ebm``: the script next to the running interpreter, else
    ``python -m ebm``."""
    script = Path(sys.prefix) / "bin" / "ebm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ebm"]


def fetch_command(catalog_root: Path, backup: Backup,
                  program: list[str] | None = None) -> list[str]:
    """The argv (without ``%f %p``) that fetches WAL of ``backup``'s chain: ``program``
    (default :func:`ebm_program`) on the same catalog. A catalog directory of a remote
    library is named by ``--catalog`` (it remembers the library); a local library by
    ``--root``."""
    root = Path(catalog_root).absolute()
    argv = list(program or ebm_program())
    from ebm.remote.ebm_host import REMOTE_CONFIG

    where = "--catalog" if (root / REMOTE_CONFIG).exists() else "--root"
    return [*argv, where, str(root), "wal-fetch", backup.uuid]


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


def fetch(catalog: Catalog, library: Library, backup: Backup, name: str, dest: Path,
          secret: bytes | None = None) -> int:
    """Write WAL file ``name`` of ``backup``'s chain to ``dest``; return its size."""
    owner, row = locate(catalog, backup, name)
    from ebm.drive_session import DriveSession, ReadMedia
    from ebm.mover import MoverError
    from ebm.restore import RestoreError, RestoreStats, cipher_for, read_rows

    tmp = dest.with_name(f".{dest.name}.ebm-partial")
    session = DriveSession(library, f"ebm-wal-fetch:{backup.uuid}")
    try:
        stats = RestoreStats([owner.uuid])
        for _entry, data in read_rows(catalog, owner, [row], ReadMedia(session),
                                      cipher_for(owner, secret), stats):
            _write(data, tmp)
            if not data.verified:
                raise WalFetchError(f"{name}: its sha256 was not checked (no index digest)")
        os.replace(tmp, dest)
        dirfd = os.open(dest.parent, os.O_RDONLY)  # the rename is durable before exit 0
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except (MoverError, RestoreError) as e:
        raise WalFetchError(str(e)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with contextlib.suppress(Exception):
            session.close()
    return row.size


def _write(data: EntryData, tmp: Path) -> None:
    with open(tmp, "wb") as out:
        while chunk := data.read(CHUNK):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())

