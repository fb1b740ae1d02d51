#!/usr/bin/env python3
"""Wake-ups of an idle `vtl serve`: four drives, each having written (and read back) a few
blocks, so every cartridge has its write buffer and threads, then nobody connected.

Counts, over ``--seconds`` (default 10), the context switches of every thread of the server
(``/proc/PID/task/*/status``: a thread that sleeps in a wait without a timeout makes none)
and, when ``perf`` may trace the process, its futex/epoll_wait/poll system calls ("not
counted" there: no thread of the server ran at all).

Usage (from the repository root):
    .venv/bin/python bench/bench_idle.py                   # variable mode, 64 KiB blocks
    .venv/bin/python bench/bench_idle.py --fixed 512       # fixed 512-byte blocks (lazy runs)
    .venv/bin/python bench/bench_idle.py --vtl-src DIR     # another checkout (A/B)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_drive as bd

SYSCALLS = ("futex", "epoll_wait", "poll")


def switches(pid: int) -> dict[str, int]:
    """Context switches so far (voluntary and not) of each thread of ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            lines = (task / "status").read_text().splitlines()
        except OSError:  # the thread ended
            continue
        out[task.name] = sum(int(s.split()[1]) for s in lines if "ctxt_switches" in s)
    return out


def perf_syscalls(pid: int, seconds: float) -> dict[str, str]:
    """The server's system calls while idle, or an empty dict without perf."""
    events = ",".join(f"syscalls:sys_enter_{s}" for s in SYSCALLS)
    if shutil.which("perf") is None:
        time.sleep(seconds)
        return {}
    res = subprocess.run(["perf", "stat", "-x,", "-e", events, "-p", str(pid), "--", "sleep",
                          str(seconds)], capture_output=True, text=True)
    rows = [line.split(",") for line in res.stderr.splitlines() if line.count(",") > 2]
    return {r[2].split("sys_enter_")[-1]: r[0] for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--drives", type=int, default=4)
    ap.add_argument("--fixed", type=int, default=None, metavar="BYTES",
                    help="fixed-block mode with blocks of BYTES (as mt setblk)")
    ap.add_argument("--vtl-src", type=Path, default=None)
    args = ap.parse_args()
    bd.FIXED_BLOCK = args.fixed
    bd.build_client()
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        target = bd.VtlTarget(Path(tmp), None, None, src=args.vtl_src, drives=args.drives)
        with bd.running(target):
            for i in range(args.drives):
                for phase in ("write", "read"):
                    r = bd._client(target.portal, target.iqn, 1 + i, 65536, 32, False, 60,
                                   phase)
                    if not r["ok"]:
                        raise SystemExit(f"drive {i}: {phase} failed: {r['errors']}")
            time.sleep(2)  # the last session's teardown
            pid = target.server_pid
            assert pid is not None
            before = switches(pid)
            calls = perf_syscalls(pid, args.seconds)
            after = switches(pid)
    rates = sorted(round((n - before.get(tid, n)) / args.seconds, 1)
                   for tid, n in after.items())
    print(json.dumps({"threads": len(after), "switches_per_s": round(sum(rates), 1),
                      "per_thread": rates, "syscalls": calls}))


if __name__ == "__main__":
    main()
