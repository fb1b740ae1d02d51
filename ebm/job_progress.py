"""Live progress of the EBM's running backups, published for the status page and ``/metrics``
(``vtl web``, ``vtl serve --web``: :mod:`vtl.status_snapshot` reads it).

Each running backup keeps one small JSON file, ``<root>/ebm-jobs/<uuid>.json``: its dataset,
level, pid, start, bytes and files done (and their totals when the translator knows them),
and the rate over the last interval. It is rewritten at most every :data:`INTERVAL` seconds
(temp file and rename, so a reader never sees half of one; no fsync: it is a view, not data)
and removed when the job ends, however it ends.

Why files and not a table in the catalog: the EBM, ``vtl serve`` and the admin commands share
the catalog; a write per second per job would take its write lock and grow its WAL for a
number nobody keeps. The page reads the catalog for the job list (recent and running jobs,
durations) and these files for the live numbers. A job killed with SIGKILL leaves its file
behind: a reader shows only files whose process still runs (pid and its kernel start time,
as drive claims do), so a stale file is ignored and the next job in that directory removes it.
Nothing here imports the EBM's heavy modules: the status page loads it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

JOBS_DIR = "ebm-jobs"
INTERVAL = 1.0  # seconds between two rewrites of a job's file


class JobProgress:
    """The publisher of one running job: :meth:`update` from the translator's progress
    callback, :meth:`close` when the job ends."""

    def __init__(self, root: Path, uuid: str, dataset: str, level: str) -> None:
        from vtl.catalog import process_start_time

        self.folder = Path(root) / JOBS_DIR
        self.path = self.folder / f"{uuid}.json"
        pid = os.getpid()
        self.data: dict[str, Any] = {
            "uuid": uuid, "dataset": dataset, "level": level, "pid": pid,
            "pid_start": process_start_time(pid), "host": socket.gethostname(),
            "started": time.time(), "bytes_done": 0, "bytes_total": None, "files_done": 0,
            "files_total": None, "rate": None, "updated": None}
        self._mark = (time.monotonic(), 0)  # (when, bytes_done) at the last rewrite
        try:
            self.folder.mkdir(exist_ok=True)
            _remove_stale(self.folder)
            self._write()
        except OSError:
            self.path = None  # a read-only or full disk: the job runs, unpublished

    def update(self, bytes_done: int, bytes_total: int | None, files_done: int,
               files_total: int | None) -> None:
        """Record the job's counts; rewrite the file when :data:`INTERVAL` has passed."""
        self.data.update(bytes_done=bytes_done, bytes_total=bytes_total,
                         files_done=files_done, files_total=files_total)
        now = time.monotonic()
        then, before = self._mark
        if now - then < INTERVAL or self.path is None:
            return
        self.data["rate"] = round((bytes_done - before) / (now - then), 1)
        self._mark = (now, bytes_done)
        try:
            self._write()
        except OSError:
            pass  # a missed update: the next one tries again

    def close(self) -> None:
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _write(self) -> None:
        assert self.path is not None
        self.data["updated"] = time.time()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data), encoding="utf-8")
        os.replace(tmp, self.path)


def _alive(job: dict[str, Any]) -> bool:
    from vtl.catalog import pid_alive

    try:
        return pid_alive(int(job["pid"]), job.get("pid_start"), job.get("host", ""))
    except (KeyError, TypeError, ValueError):
        return False


def _remove_stale(folder: Path) -> None:
    """Files of jobs whose process is gone (killed with SIGKILL, a crash)."""
    for job, path in _files(folder):
        if job is None or not _alive(job):
            try:
                os.unlink(path)
            except OSError:
                pass


def _files(folder: Path) -> list[tuple[dict[str, Any] | None, Path]]:
    try:
        paths = [p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith(".")]
    except OSError:
        return []
    out: list[tuple[dict[str, Any] | None, Path]] = []
    for path in paths:
        try:
            out.append((json.loads(path.read_text(encoding="utf-8")), path))
        except (OSError, ValueError):
            out.append((None, path))  # removed meanwhile, or not ours
    return out


def running_jobs(root: Path) -> dict[str, dict[str, Any]]:
    """uuid -> the live numbers of each backup running now, with ``percent`` (of the bytes,
    else of the files, when the translator knows the total; else None)."""
    jobs = {}
    for job, _path in _files(Path(root) / JOBS_DIR):
        if job is None or not _alive(job):
            continue
        job["percent"] = _percent(job)
        jobs[job["uuid"]] = job
    return jobs


def _percent(job: dict[str, Any]) -> float | None:
    for done, total in (("bytes_done", "bytes_total"), ("files_done", "files_total")):
        if job.get(total):
            return round(min(100.0, 100.0 * job[done] / job[total]), 1)
    return None
