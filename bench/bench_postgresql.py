#!/usr/bin/env python3
"""PostgreSQL benchmark: the EBM's physical baseline against ``pg_basebackup -Ft`` to local
disk and ``pg_dump -Fc``, then WAL archiving and a point-in-time restore, in one run.

A throwaway cluster on local disk (tests/support/pg_cluster.py: Debian's PostgreSQL, 16 MiB
WAL segments; the cartridges and pg_basebackup's and pg_dump's files go to the same disk)
gets a pgbench database (``--scale 20`` is about 300 MB on disk). Then, each timed:

1. EBM baseline onto a virtual cartridge (in-process API with its modules already imported,
   drive compression on, as ``ebm backup`` does by default; ``--no-compress`` turns it off);
2. ``pg_basebackup -D DIR -Ft -X fetch -c fast`` (a base.tar on local disk, fsynced);
3. ``pg_dump -Fc`` of the pgbench database to a file;
4. ``pgbench`` writes WAL (``--wal-seconds``, or with ``--wal-mb N`` until N MB of WAL are
   written), then an EBM incremental archives it (MB/s of WAL, CPU s per GB), against ``cp``
   of the same archived segments to a directory on the same disk plus ``sync`` (wall and CPU
   ratios);
5. point-in-time restore of the latest point, both ways: ``ebm restore`` (the base backup)
   then PostgreSQL's recovery until it promotes, fetching each segment from tape through
   ``ebm wal-fetch`` (its restore_command); and ``--wal-local`` (every segment put into
   pg_wal by the restore, recovery reads them there).

Ratios are EBM / peer (below 1 is faster). Goal: baseline within 1.2x of pg_basebackup.
Each step also prints its CPU seconds (this process and the tools it waited for, user +
system; the server's own processes are not counted, for either side): on a loaded machine
they move less than the wall times do. The EBM reads the base backup itself (replication
protocol, PostgreSQL 15+), so its CPU is the whole client side, as pg_basebackup's is; the
report gives the difference per GB ("the EBM adds"): hashing, compression, the cartridge.

Usage::

    .venv/bin/python bench/bench_postgresql.py                # scale 20, ~300 MB
    .venv/bin/python bench/bench_postgresql.py --scale 60     # ~900 MB
    .venv/bin/python bench/bench_postgresql.py --wal-mb 1024  # 1 GB of WAL archived
    .venv/bin/python bench/bench_postgresql.py --baseline-only --repeat 3  # best of 3

``--repeat N`` runs the two baselines N times, alternating which goes first, and keeps the
best of each (the load average is printed after each pair).
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


CPU: dict[str, float] = {}  # CPU seconds of the last timed() step, and the best per baseline


def cpu_seconds() -> float:
    """User + system seconds of this process (all threads) and the children it waited for."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(what: str, fn) -> float:
    c0, t0 = cpu_seconds(), time.monotonic()
    fn()
    secs = time.monotonic() - t0
    CPU["last"] = cpu_seconds() - c0
    print(f"  {what}: {secs:.2f} s, CPU {CPU['last']:.2f} s", flush=True)
    return secs


def report_baselines(results: dict[str, float], ebm_bytes: int, bb_bytes: int,
                     dump_bytes: int) -> None:
    print()
    print(f"stored: EBM baseline {ebm_bytes / 1e6:.0f} MB (pax stream), "
          f"pg_basebackup {bb_bytes / 1e6:.0f} MB, pg_dump -Fc {dump_bytes / 1e6:.0f} MB")
    print(f"baseline: EBM {results['ebm']:.2f} s / pg_basebackup {results['pg_basebackup']:.2f} s"
          f" = {results['ebm'] / results['pg_basebackup']:.2f}x (goal <= 1.2x)")
    print(f"baseline: EBM {results['ebm']:.2f} s / pg_dump -Fc {results['pg_dump']:.2f} s"
          f" = {results['ebm'] / results['pg_dump']:.2f}x")
    ebm_cpu, bb_cpu = CPU["ebm"], CPU["pg_basebackup"]
    ebm_gb, bb_gb = ebm_cpu / (ebm_bytes / 1e9), bb_cpu / (bb_bytes / 1e9)
    print(f"baseline CPU (best): EBM {ebm_cpu:.2f} s = {ebm_gb:.2f} s/GB, "
          f"pg_basebackup {bb_cpu:.2f} s = {bb_gb:.2f} s/GB "
          f"= {ebm_cpu / bb_cpu:.2f}x; the EBM adds {ebm_gb - bb_gb:.2f} s/GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=20, help="pgbench scale (15 MB per unit)")
    ap.add_argument("--wal-seconds", type=int, default=20, help="pgbench -T for the WAL step")
    ap.add_argument("--wal-mb", type=int, default=0,
                    help="instead: run pgbench until this much WAL is written")
    ap.add_argument("--no-compress", action="store_true", help="EBM without drive compression")
    ap.add_argument("--repeat", type=int, default=1,
                    help="baselines: N runs alternating EBM and pg_basebackup, best of N")
    ap.add_argument("--baseline-only", action="store_true",
                    help="stop after the baselines and pg_dump (no WAL, no PITR)")
    args = ap.parse_args()

    from ebm_helpers import barcodes, make_library
    from pg_cluster import PgCluster, free_port

    for module in ("ebm.mover", "ebm.drive_session", "tape_formats.cartridge",
                   "translators.pg.basebackup", "psycopg"):
        importlib.import_module(module)  # the data path's: imported before any timing
    from ebm.controller import BackupRequest
    from ebm.manager import decode_state, load_translator
    from ebm.points import resolve_point
    from ebm.restore import restore
    from ebm.wal_fetch import fetch_options

    with PgCluster(segment_mb=16, base=Path(tempfile.gettempdir()),  # local disk, not tmpfs
                   settings={"shared_buffers": "128MB", "fsync": "on",
                             "max_wal_size": "2GB"}) as pg:
        work = pg.dir / "bench"
        work.mkdir()
        pg.own(work)
        pgbench = str(pg.bin / "pgbench")
        conn = ["-h", str(pg.dir), "-p", str(pg.port), "-U", "postgres"]
        print(f"pgbench -i -s {args.scale} ...", flush=True)
        subprocess.run([pgbench, *conn, "-i", "-q", "-s", str(args.scale), "postgres"],
                       check=True, capture_output=True)
        pg.sql("CHECKPOINT")
        size = int(pg.sql("SELECT sum(pg_database_size(oid)) FROM pg_database"))
        print(f"cluster: {size / 1e6:.0f} MB in databases", flush=True)
        ebm = make_library(work / "lib", barcodes(2), capacity=8 << 30)
        req = BackupRequest(dataset="pg", source=pg.source(), translator="postgresql",
                            pool="pool", compress=not args.no_compress, full=True)
        load_translator("postgresql").canonical_source(pg.source())  # imports done up front
        results: dict[str, float] = {}
        bb_dir = work / "basebackup"

        def basebackup() -> None:
            shutil.rmtree(bb_dir, ignore_errors=True)
            subprocess.run([str(pg.bin / "pg_basebackup"), *conn, "-D", str(bb_dir), "-Ft",
                            "-X", "fetch", "-c", "fast"], check=True, capture_output=True)

        for i in range(args.repeat):  # alternate who goes first, keep the best of each
            pair = [("ebm", "EBM baseline", lambda: ebm.backup(req, retries=0)),
                    ("pg_basebackup", "pg_basebackup -Ft -X fetch", basebackup)]
            for key, label, fn in pair if i % 2 == 0 else pair[::-1]:
                secs = timed(label, fn)
                results[key] = min(results.get(key, secs), secs)
                CPU[key] = min(CPU.get(key, CPU["last"]), CPU["last"])
            print(f"  load average {os.getloadavg()[0]:.1f}", flush=True)
        base = ebm.catalog.backups("pg")[-1]
        dump = work / "pgbench.dump"
        results["pg_dump"] = timed("pg_dump -Fc", lambda: subprocess.run(
            [str(pg.bin / "pg_dump"), *conn, "-Fc", "-f", str(dump), "postgres"],
            check=True, capture_output=True))
        if args.baseline_only:
            report_baselines(results, base.size, du(bb_dir), dump.stat().st_size)
            return
        lsn0 = pg.sql("SELECT pg_current_wal_lsn()")
        wal_sql = f"SELECT pg_current_wal_lsn() - '{lsn0}'::pg_lsn"
        bench_run = [pgbench, *conn, "-c", "2", "postgres"]
        if args.wal_mb:
            print(f"pgbench until {args.wal_mb} MB of WAL ...", flush=True)
            while int(pg.sql(wal_sql)) < args.wal_mb * 1e6:
                subprocess.run([*bench_run, "-T", "5"], check=True, capture_output=True)
        else:
            print(f"pgbench -T {args.wal_seconds} (writing WAL) ...", flush=True)
            subprocess.run([*bench_run, "-T", str(args.wal_seconds)], check=True,
                           capture_output=True)
        wal = int(pg.sql(wal_sql))
        results["wal"] = timed(f"EBM incremental ({wal / 1e6:.0f} MB of WAL)",
                               lambda: ebm.backup(BackupRequest(dataset="pg"), retries=0))
        CPU["wal"] = CPU["last"]
        incr = ebm.catalog.backups("pg")[-1]
        names = [seg["name"] for seg in decode_state(ebm.catalog.translator_state(incr.id))
                 ["segments"]]
        copied = work / "wal-copy"
        copied.mkdir()
        results["cp"] = timed(f"cp of the same {len(names)} segments, synced", lambda: subprocess.run(
            ["sh", "-c", 'cp "$@" && sync', "cp", *(str(pg.spool / n) for n in names),
             str(copied)], check=True))
        CPU["cp"] = CPU["last"]
        seg_bytes = len(names) * pg.segment_mb << 20
        pg.own(work)  # restore_command runs as the server's user and opens the library
        program = pg.fetch_program()

        def pitr(target: Path, fetch: bool) -> None:
            b, options = resolve_point(ebm.catalog, "pg", load_translator("postgresql"))
            if fetch:
                options.update(fetch_options(ebm.root, ebm.catalog, b, program))
            restore(ebm.catalog, ebm.library, load_translator, b, target, options=options)

        port = free_port()

        def recover(target: Path) -> None:
            pg.start(target, port=port)
            while pg.sql("SELECT pg_is_in_recovery()", port=port) != "f":
                time.sleep(0.1)

        ways = (("restore_command", True), ("wal-local", False))
        for how, fetch in ways:
            results[f"restore {how}"] = timed(
                f"EBM restore (latest, {how})",
                lambda t=pg.dir / f"restored-{how}", f=fetch: pitr(t, f))
        # As after `ebm restore`: the EBM's process is gone before the server starts.
        ebm.close()
        for how, _fetch in ways:
            target = pg.dir / f"restored-{how}"
            results[f"recovery {how}"] = timed(f"PostgreSQL recovery to promotion ({how})",
                                               lambda t=target: recover(t))
            pg.stop_server(target)
            shutil.rmtree(target, ignore_errors=True)
        report_baselines(results, base.size, du(bb_dir), dump.stat().st_size)
        print(f"WAL archive: {wal / 1e6:.0f} MB written, {len(names)} segments "
              f"({seg_bytes / 1e6:.0f} MB) in {results['wal']:.2f} s "
              f"= {seg_bytes / 1e6 / results['wal']:.0f} MB/s; cp + sync {results['cp']:.2f} s"
              f"; EBM / cp + sync = {results['wal'] / results['cp']:.2f}x")
        gb = seg_bytes / 1e9
        print(f"WAL archive CPU: EBM {CPU['wal'] / gb:.2f} s/GB, cp + sync "
              f"{CPU['cp'] / gb:.2f} s/GB = {CPU['wal'] / CPU['cp']:.2f}x "
              f"(load average {os.getloadavg()[0]:.1f})")
        for how in ("restore_command", "wal-local"):
            r, c = results[f"restore {how}"], results[f"recovery {how}"]
            print(f"PITR ({how}): {r:.2f} s restore + {c:.2f} s recovery = {r + c:.2f} s")
        shutil.rmtree(work, ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    main()
