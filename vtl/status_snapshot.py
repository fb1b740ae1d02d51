"""One read-only picture of the library for the status page and ``/metrics``: the changer map,
the drives, capacity per pool, the running server's sessions and drive counters (from its
status file, :mod:`vtl.serve_status`), the EBM's recent jobs from the catalog with the live
numbers of the running ones (from their progress files, :mod:`ebm.job_progress`), and the
durations of every finished backup as histogram buckets.

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
# Upper bounds (seconds) of the backup-duration histogram's buckets (and +Inf).
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0)


def _jobs(conn: sqlite3.Connection, root: Path) -> list[dict[str, Any]]:
    """The newest backups, newest first; a running one with its live numbers (``live``:
    bytes, files, rate, percent; None when its process publishes none)."""
    from ebm.job_progress import running_jobs

    jobs = _recent(conn)
    live = running_jobs(root) if any(j["state"] == "running" for j in jobs) else {}
    for j in jobs:
        j["live"] = live.get(j["uuid"]) if j["state"] == "running" else None
    return jobs


def _durations(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Per final state (done, failed): every finished backup's duration, as cumulative
    histogram buckets (``le`` -> count), their sum and count."""
    try:
        rows = conn.execute("SELECT state, finished - started FROM ebm_backups "
                            "WHERE finished IS NOT NULL AND state IN ('done', 'failed')")
        pairs = [(state, max(0.0, float(secs or 0))) for state, secs in rows]
    except sqlite3.OperationalError:  # no EBM tables yet
        pairs = []
    out = {}
    for state in ("done", "failed"):
        secs = [s for st, s in pairs if st == state]
        out[state] = {"buckets": [(le, sum(1 for s in secs if s <= le))
                                  for le in DURATION_BUCKETS],
                      "sum": round(sum(secs), 3), "count": len(secs)}
    return out


def _recent(conn: sqlite3.Connection) -> list[dict[str, Any]]:
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
            "jobs": _jobs(conn, Path(root)), "backup_states": _backup_states(conn),
            "job_durations": _durations(conn),
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
