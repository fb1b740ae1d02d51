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
4. ``pgbench -T`` writes WAL, then an EBM incremental archives it (MB/s of WAL);
5. ``ebm restore`` of the latest point, and PostgreSQL's recovery on it until it promotes.

Ratios are EBM / peer (below 1 is faster). Goal: baseline within 1.2x of pg_basebackup.

Usage::

    .venv/bin/python bench/bench_postgresql.py                # scale 20, ~300 MB
    .venv/bin/python bench/bench_postgresql.py --scale 60     # ~900 MB
"""

from __future__ import annotations

import argparse
import os
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


def timed(what: str, fn) -> float:
    t0 = time.monotonic()
    fn()
    secs = time.monotonic() - t0
    print(f"  {what}: {secs:.2f} s", flush=True)
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=20, help="pgbench scale (15 MB per unit)")
    ap.add_argument("--wal-seconds", type=int, default=20, help="pgbench -T for the WAL step")
    ap.add_argument("--no-compress", action="store_true", help="EBM without drive compression")
    args = ap.parse_args()

    from ebm_helpers import barcodes, make_library
    from pg_cluster import PgCluster, free_port

    from ebm.controller import BackupRequest
    from ebm.manager import load_translator
    from ebm.points import resolve_point
    from ebm.restore import restore

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
                            pool="pool", compress=not args.no_compress)
        load_translator("postgresql").canonical_source(pg.source())  # imports done up front:
        import psycopg  # noqa: F401  # one-time process cost, not the backup's
        results: dict[str, float] = {}
        results["ebm"] = timed("EBM baseline", lambda: ebm.backup(req, retries=0))
        base = ebm.catalog.backups("pg")[-1]
        bb_dir = work / "basebackup"
        results["pg_basebackup"] = timed("pg_basebackup -Ft -X fetch", lambda: subprocess.run(
            [str(pg.bin / "pg_basebackup"), *conn, "-D", str(bb_dir), "-Ft", "-X", "fetch",
             "-c", "fast"], check=True, capture_output=True))
        dump = work / "pgbench.dump"
        results["pg_dump"] = timed("pg_dump -Fc", lambda: subprocess.run(
            [str(pg.bin / "pg_dump"), *conn, "-Fc", "-f", str(dump), "postgres"],
            check=True, capture_output=True))
        lsn0 = pg.sql("SELECT pg_current_wal_lsn()")
        print(f"pgbench -T {args.wal_seconds} (writing WAL) ...", flush=True)
        subprocess.run([pgbench, *conn, "-T", str(args.wal_seconds), "-c", "2", "postgres"],
                       check=True, capture_output=True)
        wal = int(pg.sql(f"SELECT pg_current_wal_lsn() - '{lsn0}'::pg_lsn"))
        results["wal"] = timed(f"EBM incremental ({wal / 1e6:.0f} MB of WAL)",
                               lambda: ebm.backup(BackupRequest(dataset="pg"), retries=0))
        target = pg.dir / "restored"

        def do_restore() -> None:
            b, options = resolve_point(ebm.catalog, "pg", load_translator("postgresql"))
            restore(ebm.catalog, ebm.library, load_translator, b, target, options=options)

        results["restore"] = timed("EBM restore (latest)", do_restore)

        port = free_port()

        def recover() -> None:
            pg.start(target, port=port)
            while pg.sql("SELECT pg_is_in_recovery()", port=port) != "f":
                time.sleep(0.1)

        results["recovery"] = timed("PostgreSQL recovery to promotion", recover)
        pg.stop_server(target)
        print()
        print(f"stored: EBM baseline {base.size / 1e6:.0f} MB (pax stream), "
              f"pg_basebackup {du(bb_dir) / 1e6:.0f} MB, pg_dump -Fc {dump.stat().st_size / 1e6:.0f} MB")
        print(f"baseline: EBM {results['ebm']:.2f} s / pg_basebackup {results['pg_basebackup']:.2f} s"
              f" = {results['ebm'] / results['pg_basebackup']:.2f}x (goal <= 1.2x)")
        print(f"baseline: EBM {results['ebm']:.2f} s / pg_dump -Fc {results['pg_dump']:.2f} s"
              f" = {results['ebm'] / results['pg_dump']:.2f}x")
        print(f"WAL archive: {wal / 1e6:.0f} MB in {results['wal']:.2f} s "
              f"= {wal / 1e6 / results['wal']:.0f} MB/s")
        print(f"PITR restore: {results['restore']:.2f} s restore + {results['recovery']:.2f} s "
              "recovery")
        ebm.close()
        shutil.rmtree(work, ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    main()
