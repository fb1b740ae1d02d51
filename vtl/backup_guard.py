"""Whether a cartridge still holds EBM backups under retention, so that the library's own
commands (``vtl cartridge delete``, ``erase``, ``export``) do not destroy or send away what
the backup manager still counts on.

A backup is under retention while its state is ``done``: ``ebm forget`` (its rules and the
pool's ``retention_days``, :mod:`ebm.retention`) is what expires backups, and it returns a
cartridge none of whose backups is still done to scratch. The EBM's tables live in the same
catalog file; a library without the EBM simply has none (nothing is guarded then).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from vtl.cli.formatting import iso_time
from vtl.errors import LibraryError


class BackupsUnderRetention(LibraryError):
    """The cartridge holds backups the EBM still keeps (refused without ``--force``)."""


def live_backups(conn: sqlite3.Connection, barcode: str) -> list[dict[str, Any]]:
    """The done EBM backups with a volume on ``barcode``, newest first."""
    try:
        rows = conn.execute(
            "SELECT DISTINCT b.id, b.dataset, b.started FROM ebm_backups b "
            "JOIN ebm_backup_volumes v ON v.backup = b.id "
            "WHERE v.barcode = ? AND b.state = 'done' ORDER BY b.started DESC",
            (barcode,)).fetchall()
    except sqlite3.OperationalError:  # no EBM tables in this catalog
        return []
    return [{"id": r[0], "dataset": r[1], "started": r[2]} for r in rows]


def describe(backups: list[dict[str, Any]], most: int = 3) -> str:
    shown = ", ".join(
        f"{b['dataset']} #{b['id']} of {iso_time(b['started'])}"
        for b in backups[:most])
    return shown + (f" and {len(backups) - most} more" if len(backups) > most else "")


def check(conn: sqlite3.Connection, barcode: str, action: str, force: bool) -> str | None:
    """Refuse ``action`` on a cartridge with backups under retention unless ``force``; with
    ``force``, the warning to print (None when there is nothing to warn about)."""
    backups = live_backups(conn, barcode)
    if not backups:
        return None
    what = (f"{barcode} holds {len(backups)} EBM backup(s) still under retention "
            f"({describe(backups)})")
    if not force:
        raise BackupsUnderRetention(
            f"{what}; expire them first ('ebm forget') or {action} anyway with --force")
    return f"warning: {what}; {action} anyway (--force)"
