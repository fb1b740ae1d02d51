"""Rotating backup copies of the catalog file, and putting one back.

The catalog (media catalog and the EBM's backup catalog, one SQLite file) is copied with
SQLite's online backup API, which gives a consistent snapshot while other processes keep
using the file, to ``<root>/catalog-backups/catalog-<UTC time>.sqlite`` (to the microsecond, so names sort
by age). A copy is taken
when a process that changed the catalog closes it, at most every :data:`MIN_INTERVAL_S`
seconds (and always when there is none yet), and at ``vtl serve`` start and stop; the newest
:data:`KEEP` copies are kept. :func:`restore_copy` puts one back over a missing or damaged
catalog, keeping the damaged file beside it; what changed on the cartridges since the copy
was taken is then reconciled by the caller (:mod:`vtl.catalog_recovery`).

Between copies, every placement event (create, move, import, vault, delete) is also appended
to ``placements.jsonl`` beside them, so a rebuild puts cartridges where they were last seen
even when the newest copy is minutes old; taking a copy trims what it already holds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from tape_formats.durable import fsync_dir
from vtl import CATALOG_NAME
from vtl.catalog import MediaCatalog, now_iso
from vtl.errors import CatalogDamaged, LibraryError

BACKUP_DIR = "catalog-backups"
PLACEMENT_JOURNAL = "placements.jsonl"
KEEP = 3
MIN_INTERVAL_S = 300.0


def backup_dir(root: Path) -> Path:
    return Path(root) / BACKUP_DIR


def copies(root: Path) -> list[Path]:
    """Rotating backup copies of the catalog file, and putting one back.

The catalog (media catalog and the EBM's backup catalog, one SQLite file) is copied with
SQLite's online backup API, which gives a consistent snapshot while other processes keep
using the file, to ``<root>/catalog-backups/catalog-<UTC time to the microsecond>.sqlite``
(names sort by age). A copy is taken when a process that changed the catalog closes it, at
most every :data:`MIN_INTERVAL_S` seconds (and always when there is none yet), at ``vtl
serve`` start and stop, and by ``vtl catalog backup``; the newest :data:`KEEP` copies are
kept. :func:`restore_copy` puts one back over a missing or damaged catalog, keeping the
damaged file beside it; what changed on the cartridges since the copy was taken is then
reconciled by the caller (:mod:`vtl.catalog_recovery`).

Between copies, every placement event (create, move, import, vault, delete) is also appended
to ``placements.jsonl`` beside them, so a rebuild puts cartridges where they were last seen
even when the newest copy is minutes old; taking a copy trims what it already holds.
"""
    folder = backup_dir(root)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("catalog-*.sqlite"), key=lambda p: p.name, reverse=True)


def note_placement(root: Path, event: dict[str, Any]) -> None:
    """Append a placement event (create, move, import, vault, delete...) to the journal
    beside the copies, so a rebuild knows where cartridges went after the newest copy.
    A hint, not a record: best effort, no fsync, never fails the move."""
    folder = backup_dir(root)
    try:
        folder.mkdir(exist_ok=True)  # mode from the umask (vtl.access)
        with open(folder / PLACEMENT_JOURNAL, "a", encoding="utf-8") as f:
            f.write(json.dumps(event, sort_keys=True) + "\n")
    except OSError:
        pass


def placements_since(root: Path, since: str = "") -> list[dict[str, Any]]:
    """Journal events at or after ISO time ``since``, oldest first (unreadable lines skipped)."""
    try:
        text = (backup_dir(root) / PLACEMENT_JOURNAL).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and str(event.get("time", "")) >= since:
            events.append(event)
    return events


def _trim_journal(root: Path, since: str) -> None:
    """Drop journal events a copy taken at ``since`` already holds."""
    path = backup_dir(root) / PLACEMENT_JOURNAL
    if not path.exists():
        return
    keep = placements_since(root, since)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in keep))
    os.replace(tmp, path)


def take_copy(catalog: MediaCatalog, root: Path) -> Path:
    """Copy the open catalog to a new file in the backup folder (durable before it is named
    a copy), then drop all but the newest :data:`KEEP`."""
    folder = backup_dir(root)
    folder.mkdir(exist_ok=True)  # mode from the umask (vtl.access)
    started = now_iso()
    ns = time.time_ns()
    while True:  # names sort by time: catalog-20261203T130920.123456.sqlite
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 10**9))
        final = folder / f"catalog-{stamp}.{ns // 1000 % 10**6:06d}.sqlite"
        if not final.exists():
            break
        ns += 1000
    tmp = final.with_suffix(".tmp")
    dest = sqlite3.connect(str(tmp))
    try:
        with catalog.lock:
            catalog.conn.backup(dest)
        dest.execute("PRAGMA journal_mode = DELETE")  # a self-contained file, no -wal beside it
    finally:
        dest.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(folder)
    _trim_journal(root, started)
    for old in copies(root)[KEEP:]:
        old.unlink(missing_ok=True)
    return final


def maybe_take_copy(catalog: MediaCatalog, root: Path, min_interval: float = MIN_INTERVAL_S
                    ) -> Path | None:
    """A copy unless the newest is younger than ``min_interval`` seconds."""
    have = copies(root)
    if min_interval > 0 and have and time.time() - have[0].stat().st_mtime < min_interval:
        return None
    return take_copy(catalog, root)


def check_copy(path: Path) -> None:
    """A copy must be a whole, readable media catalog (integrity_check), or CatalogDamaged."""
    cat = MediaCatalog(path, readonly=True)
    try:
        with cat.lock:
            result = cat.conn.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise CatalogDamaged(f"backup copy {path} is damaged ({e})") from None
    finally:
        cat.close()
    if result != "ok":
        raise CatalogDamaged(f"backup copy {path} is damaged ({result})")


def restore_copy(root: Path, source: Path | None = None) -> tuple[Path, Path | None]:
    """Put a backup copy (the newest good one, or ``source``) in place of the catalog.

    The current catalog, if any, is renamed ``catalog.sqlite.damaged-<time>`` rather than
    deleted, and its -wal/-shm files go with it (a WAL of another database must never be
    replayed into the copy). Returns (the copy used, where the old file went)."""
    root = Path(root)
    candidates = [Path(source)] if source is not None else copies(root)
    if not candidates:
        raise LibraryError(
            f"no backup copy of the catalog in {backup_dir(root)}; rebuild it from the"
            " cartridges with `vtl catalog rebuild`"
        )
    errors = []
    for copy in candidates:
        try:
            check_copy(copy)
        except CatalogDamaged as e:
            errors.append(str(e))
            continue
        return copy, _install(root, copy)
    raise CatalogDamaged("; ".join(errors))


def set_aside(root: Path) -> Path | None:
    """Rename the current catalog (and its -wal/-shm) out of the way; None if there is none."""
    live = Path(root) / CATALOG_NAME
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = None
    if live.exists():
        aside = live.with_name(f"{CATALOG_NAME}.damaged-{stamp}")
        os.replace(live, aside)
    for suffix in ("-wal", "-shm"):
        side = live.with_name(CATALOG_NAME + suffix)
        if side.exists():
            if aside is not None:
                os.replace(side, aside.with_name(aside.name + suffix))
            else:
                side.unlink()
    return aside


def _install(root: Path, copy: Path) -> Path | None:
    live = Path(root) / CATALOG_NAME
    tmp = live.with_name(CATALOG_NAME + ".restoring")
    with open(copy, "rb") as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    aside = set_aside(root)
    os.replace(tmp, live)
    fsync_dir(live.parent)
    return aside
