"""The settings a restored data directory starts with, so that PostgreSQL recovers to exactly
the chosen point and then opens for writes.

The restore puts every WAL segment the point needs into ``pg_wal`` itself, so recovery never
has to reach back to tape; ``restore_command`` is still required for a targeted recovery
(``recovery.signal``), and ``false`` tells the server "not in the archive, use pg_wal". The
copy must not archive into the original dataset's spool (its new timeline would mix with the
live server's WAL there), so ``archive_mode`` is switched off: an admin who takes the
restored server into service sets up archiving for it anew.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

AUTO_CONF = "postgresql.auto.conf"


def recovery_settings(target_time: float | None, target_lsn: str | None) -> list[str]:
    lines = ["# Added by `ebm restore`: the WAL this point needs is already in pg_wal.",
             "restore_command = 'false'",
             "archive_mode = 'off'"]
    if target_time is not None:
        stamp = dt.datetime.fromtimestamp(target_time, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        lines.append(f"recovery_target_time = '{stamp}'")
    if target_lsn is not None:
        lines.append(f"recovery_target_lsn = '{target_lsn}'")
    if target_time is not None or target_lsn is not None:
        lines += ["recovery_target_inclusive = on", "recovery_target_action = 'promote'"]
    return lines


def prepare(datadir: Path, target_time: float | None, target_lsn: str | None) -> None:
    """recovery.signal plus the settings appended to postgresql.auto.conf (later lines win)."""
    conf = datadir / AUTO_CONF
    with open(conf, "a") as f:
        f.write("\n" + "\n".join(recovery_settings(target_time, target_lsn)) + "\n")
    (datadir / "recovery.signal").write_bytes(b"")
    st = (datadir / "PG_VERSION").stat()
    if os.geteuid() == 0:
        for path in (datadir, datadir / AUTO_CONF, datadir / "recovery.signal"):
            os.chown(path, st.st_uid, st.st_gid)  # the directory itself is not a member
    os.chmod(datadir / "recovery.signal", 0o600)
    os.chmod(datadir, 0o700)  # the server refuses a group- or world-readable data directory
