"""The mailslot door lock that PREVENT ALLOW MEDIUM REMOVAL sets on the changer (SMC-3 6.9).

An initiator that sends PREVENT to the changer asks that no one takes cartridges out of (or
pushes them into) the import/export elements behind its back. The people who do that are
operators running ``vtl cartridge import/export`` in *another* process, so the lock has to
live where they can see it: a one-row table in the shared media catalog. The row names the
serving process; a row left by a process that died no longer counts (same liveness test as
drive claims), so a crashed server never locks the door for good.

The table is owned by the changer and versioned under the component name ``smc``.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from vtl.catalog import MediaCatalog, now_iso, pid_alive, process_start_time

COMPONENT = "smc"
VERSION = 1

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS smc_mailslot_lock ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " owner TEXT NOT NULL, pid INTEGER NOT NULL, pid_start TEXT, host TEXT NOT NULL,"
    " since TEXT NOT NULL)"
)


def _ensure(catalog: MediaCatalog) -> None:
    with catalog.transaction() as conn:
        if catalog.schema_version(COMPONENT) < VERSION:
            conn.execute(_SCHEMA)
            catalog.set_schema_version(COMPONENT, VERSION)


def set_mailslot_lock(catalog: MediaCatalog, locked: bool, owner: str) -> None:
    """Lock (or unlock) the mailslot door on behalf of this process."""
    _ensure(catalog)
    with catalog.transaction() as conn:
        if locked:
            pid = os.getpid()
            conn.execute(
                "INSERT OR REPLACE INTO smc_mailslot_lock(id, owner, pid, pid_start, host, since)"
                " VALUES (1, ?, ?, ?, ?, ?)",
                (owner, pid, process_start_time(pid), socket.gethostname(), now_iso()),
            )
        else:
            conn.execute("DELETE FROM smc_mailslot_lock WHERE pid = ?", (os.getpid(),))


def mailslot_lock(catalog: MediaCatalog) -> dict[str, Any] | None:
    """The live lock (owner, pid, host, since), or None when the door may be opened.

    For the CLI's import/export: refuse with "mailslots are locked by <owner> (pid N)".
    """
    with catalog.lock:
        if catalog.schema_version(COMPONENT) < VERSION:
            return None
        cur = catalog.conn.execute(
            "SELECT owner, pid, pid_start, host, since FROM smc_mailslot_lock WHERE id = 1"
        )
        row = cur.fetchone()
    if row is None:
        return None
    owner, pid, pid_start, host, since = row
    if not pid_alive(pid, pid_start, host):
        return None
    return {"owner": owner, "pid": pid, "host": host, "since": since}
