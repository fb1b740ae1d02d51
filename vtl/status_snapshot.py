"""One read-only picture of the library for the status page and ``/metrics``: the changer map,
the drives, capacity per pool, the running server's sessions and drive counters (from its
status file, :mod:`vtl.serve_status`), and the EBM's recent jobs.

It opens the library read-only (the catalog ``mode=ro``) each time: a page view never
changes, locks or backs up anything, and shows what every process committed.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

RECENT_JOBS = 20


def _jobs(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    try:
        rows = conn.execute(
            "SELECT id, uuid, dataset, level, state, started, finished, size, nfiles "
            "FROM ebm_backups ORDER BY started DESC, id DESC LIMIT ?", (RECENT_JOBS,)).fetchall()
    except sqlite3.OperationalError:  # no EBM tables yet
        return []
    keys = ("id", "uuid", "dataset", "level", "state", "started", "finished", "size", "nfiles")
    jobs = [dict(zip(keys, tuple(r), strict=True)) for r in rows]
    for j in jobs:
        end = j["finished"] or (time.time() if j["state"] == "running" else None)
        j["seconds"] = round(end - j["started"], 3) if end else None
    return jobs


def _backup_states(conn: sqlite3.Connection) -> dict[str, int]:
    try:
        return dict(conn.execute("SELECT state, COUNT(*) FROM ebm_backups GROUP BY state"))
    except sqlite3.OperationalError:
        return {}


def _serving(root: Path) -> dict[str, Any] | None:
    from vtl.serve_status import NotServing, read

    try:
        return read(root)
    except NotServing:
        return None


def snapshot(root: Path) -> dict[str, Any]:
    """Everything the page and the metrics show, as plain data."""
    from vtl import CATALOG_NAME
    from vtl.capacity import capacity_totals
    from vtl.cli.main import _element_rows
    from vtl.library import Library

    lib = Library.open(root, readonly=True)
    try:
        elements = _element_rows(lib)
        cartridges = lib.catalog.cartridges()
        conn = lib.catalog.conn
        data = {
            "library": lib.config.name, "changer": lib.config.changer_model,
            "drive_model": lib.config.drive_model, "time": time.time(),
            "elements": elements, "capacity": capacity_totals(cartridges),
            "cartridge_states": _count(c["state"] for c in cartridges),
            "jobs": _jobs(conn), "backup_states": _backup_states(conn),
        }
    finally:
        lib.close(back_up=False)
    try:
        data["catalog_bytes"] = os.path.getsize(Path(root) / CATALOG_NAME)
    except OSError:
        data["catalog_bytes"] = 0
    serving = _serving(Path(root))
    data["serving"] = serving is not None
    data["sessions"] = serving.get("sessions", []) if serving else []
    data["drive_counters"] = serving.get("drives", []) if serving else []
    return data


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out
