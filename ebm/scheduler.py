"""``ebm scheduler``: run due schedules, parallel backups, one queue for serial steps.

Why subprocesses: each backup runs as its own ``ebm backup`` process, so a crash or a hung
translator takes one job down, drive claims and the dead-pid reaper work exactly as for a
manual run, and parallelism needs no thread safety in the library. Post-backup verification
and catalog compaction are *serial* steps: they go through one FIFO queue and run one at a
time, never two at once, while backups keep running (restic/Borg users complain about
maintenance that locks out backups; here it never does).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ebm.controller import RequestError, next_run

if TYPE_CHECKING:
    from ebm.manager import Ebm


@dataclass
class _Job:
    sid: int
    dataset: str
    proc: subprocess.Popen
    opts: dict[str, Any]


def _cmd(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ebm", "--root", str(root), "--json", *args]


def _key_args(opts: dict[str, Any]) -> list[str]:
    """The key options a schedule passes on (an encrypted dataset refuses a run without):
    the EBM's own key, and the drive's (a path: the key itself is never stored)."""
    args: list[str] = []
    if opts.get("passphrase_file"):
        args += ["--passphrase-file", opts["passphrase_file"]]
    elif opts.get("key_file"):
        args += ["--key-file", opts["key_file"]]
    if opts.get("drive_key_file"):
        args += ["--drive-key-file", opts["drive_key_file"]]
    return args


def run_scheduler(ebm: Ebm, root: Path, *, once: bool, max_jobs: int, interval: float,
                  should_stop: Callable[[], bool], log: Callable[[str], None]) -> list[str]:
    cat = ebm.catalog
    running: list[_Job] = []
    serial: deque[tuple[str, list[str]]] = deque()
    serial_proc: subprocess.Popen | None = None
    ran: list[str] = []
    started_any = False
    while True:
        for _job, held in cat.reap_dead_jobs():
            for barcode in held:
                ebm.erase_torn_tail(barcode)
        now = time.time()
        busy = {j.sid for j in running}
        for s in cat.schedules():
            if len(running) >= max_jobs:
                break
            if s["id"] in busy or s["next_run"] > now:
                continue
            opts = json.loads(s["options"] or "{}")
            args = ["backup", s["dataset"]]
            if opts.get("full"):
                args.append("--full")
            args += _key_args(opts)
            log(f"starting scheduled backup of {s['dataset']} (schedule {s['id']})")
            proc = subprocess.Popen(_cmd(root, *args), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            running.append(_Job(s["id"], s["dataset"], proc, opts))
            started_any = True
        for j in list(running):
            if j.proc.poll() is None:
                continue
            running.remove(j)
            stdout, stderr = j.proc.communicate()
            ok = j.proc.returncode == 0
            result = "ok" if ok else (stderr.strip().splitlines() or ["failed"])[-1][:200]
            try:
                nr = next_run(next(s["spec"] for s in cat.schedules() if s["id"] == j.sid), time.time())
            except (StopIteration, RequestError):
                nr = time.time() + 86400
            cat.schedule_ran(j.sid, nr, result)
            ran.append(f"{j.dataset}: {result}")
            log(f"backup of {j.dataset}: {result}")
            if ok and j.opts.get("verify"):
                try:
                    uuid = json.loads(stdout)["uuid"]
                    vargs = ["verify", uuid]
                    vargs += _key_args(j.opts)
                    serial.append((f"verify {uuid[:8]}", vargs))
                except (ValueError, KeyError):
                    pass
        if serial_proc is not None and serial_proc.poll() is not None:
            serial_proc.communicate()
            log(f"serial step finished: exit {serial_proc.returncode}")
            serial_proc = None
        if serial_proc is None and serial:
            what, args = serial.popleft()
            log(f"serial step: {what}")
            serial_proc = subprocess.Popen(_cmd(root, *args), stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)
        if not running and serial_proc is None and not serial and started_any:
            serial.append(("catalog compaction", ["catalog", "compact"]))
            started_any = False
            continue
        if once and not running and serial_proc is None and not serial:
            return ran
        if should_stop():
            for j in running:
                j.proc.wait()
            return ran
        procs = [j.proc for j in running] + ([serial_proc] if serial_proc else [])
        _wait_any(procs, min(interval, 0.5) if procs else interval if not once else 0.2)


def _wait_any(procs: list[subprocess.Popen], timeout: float) -> None:
    """Sleep up to ``timeout``, but wake within 20 ms of any child exiting.

    Why: the loop used to sleep a fixed half second, so every step of a chain (backup, then
    its verification, then compaction) waited on average a quarter second for nothing; a
    poll() is a cheap waitpid(WNOHANG), while the loop's catalog queries run once per wake.
    """
    end = time.monotonic() + timeout
    while True:
        if any(p.poll() is not None for p in procs):
            return
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(0.02, left))
