"""The settings a restored data directory starts with, so that PostgreSQL recovers to exactly
the chosen point and then opens for writes.

WAL comes from tape: ``restore_command`` is the EBM's ``ebm wal-fetch BACKUP %f %p``
(:mod:`ebm.wal_fetch`, started through :mod:`ebm.wal_spool`, which serves the segments it read
ahead), which the server runs, as its own OS user, for each WAL file it replays; that user must be able to open the library (or the restore is made with
``--wal-local``). With ``--wal-local`` the restore has put every segment the point needs into
``pg_wal`` itself, and ``restore_command = 'false'`` (still required for a targeted recovery)
tells the server "not in the archive, use pg_wal". The copy must not archive into the
original dataset's spool (its new timeline would mix with the live server's WAL there), so
``archive_mode`` is switched off: an admin who takes the restored server into service sets up
archiving for it anew.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
from pathlib import Path

from ebm.wal_spool import CHAIN, SPOOL_DIR, WalSpool

AUTO_CONF = "postgresql.auto.conf"


def restore_command(fetch: list[str] | None) -> str:
    """The shell command line, quoted for the shell and then for a configuration file."""
    if not fetch:
        return "false"
    return " ".join(map(shlex.quote, fetch)) + " %f %p"


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def recovery_settings(target_time: float | None, target_lsn: str | None,
                      fetch: list[str] | None = None) -> list[str]:
    where = ("`ebm wal-fetch` reads the WAL this point needs from tape." if fetch else
             "the WAL this point needs is already in pg_wal.")
    lines = [f"# Added by `ebm restore`: {where}",
             f"restore_command = {_conf_quote(restore_command(fetch))}",
             "archive_mode = 'off'"]
    if fetch:  # wal-fetch's read-ahead spool goes once recovery is over (ebm.wal_spool)
        lines.append(f"recovery_end_command = 'rm -rf pg_wal/{SPOOL_DIR}'")
    if target_time is not None:
        stamp = dt.datetime.fromtimestamp(target_time, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        lines.append(f"recovery_target_time = '{stamp}'")
    if target_lsn is not None:
        lines.append(f"recovery_target_lsn = '{target_lsn}'")
    if target_time is not None or target_lsn is not None:
        lines += ["recovery_target_inclusive = on", "recovery_target_action = 'promote'"]
    return lines


def prepare(datadir: Path, target_time: float | None, target_lsn: str | None,
            fetch: list[str] | None = None, chain: list[str] | None = None) -> None:
    """recovery.signal plus the settings appended to postgresql.auto.conf (later lines win);
    with ``chain`` (the WAL names restore_command can fetch), the spool's list of them."""
    conf = datadir / AUTO_CONF
    with open(conf, "a") as f:
        f.write("\n" + "\n".join(recovery_settings(target_time, target_lsn, fetch)) + "\n")
    (datadir / "recovery.signal").write_bytes(b"")
    st = (datadir / "PG_VERSION").stat()
    if os.geteuid() == 0:
        for path in (datadir, datadir / AUTO_CONF, datadir / "recovery.signal"):
            os.chown(path, st.st_uid, st.st_gid)  # the directory itself is not a member
    os.chmod(datadir / "recovery.signal", 0o600)
    if fetch and chain is not None:
        _seed_spool(datadir, fetch[fetch.index("wal-fetch") + 1], chain, st)
    os.chmod(datadir, 0o700)  # the server refuses a group- or world-readable data directory


def _seed_spool(datadir: Path, uuid: str, chain: list[str], owner: os.stat_result) -> None:
    """The spool's list of the chain's WAL names (ebm.wal_spool), so restore_command answers
    the server's first "is there a history file / an earlier segment" questions itself. Owned
    by the server's user, who fills the spool later."""
    spool = WalSpool(str(datadir / "pg_wal" / SPOOL_DIR), uuid)
    if not spool.create():
        return  # only a cache: the CLI answers instead
    spool.write_chain(chain)
    if os.geteuid() == 0:
        for path in (spool.root, spool.path, os.path.join(spool.path, CHAIN)):
            os.chown(path, owner.st_uid, owner.st_gid)
