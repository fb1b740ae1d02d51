#!/usr/bin/env python3
"""Application translators benchmark: SQLite page deltas and volume chunk deltas, through the
EBM onto virtual tape, against the full copy each one's admins make today, in one run.

1. SQLite: a database of ``--sqlite-size`` (default 1 GiB) of 1000-byte rows in journal mode
   ``--journal`` (``wal``, the default, or ``delete``, a rollback journal as most
   applications keep); full copy with ``sqlite3 DB .backup`` (the tool admins use) and an EBM
   baseline; then 1% of the pages rewritten (random rows updated in place) and an EBM
   incremental: its size and time against the full copy.
2. Volume: a sparse-ish image of ``--volume-size`` (default 4 GiB, a quarter of it data in
   64 MiB islands, the rest holes); full copy with ``dd bs=1M | zstd -1 -T0`` and an EBM
   baseline; then 1% of the 1 MiB chunks touched (4 KiB written in each) and an EBM
   incremental: its time against ``dd | zstd``.

Caches are warm (nothing is dropped between runs). The EBM runs in-process through its API,
onto a temporary library's cartridges (zstd compression on, as by default).

    .venv/bin/python bench/bench_translators.py
    .venv/bin/python bench/bench_translators.py --sqlite-size 256M --volume-size 1G   # quick
    .venv/bin/python bench/bench_translators.py --only sqlite --journal delete
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests" / "support")]

from bench_backup import parse_size, run, timed  # noqa: E402

MiB = 1 << 20


def library(work: Path):
    from ebm_helpers import make_library

    return make_library(work / "lib", ["BENCH1L8", "BENCH2L8"], capacity=64 << 30)


def ebm_backup(ebm, dataset: str, source: Path | None = None, translator: str | None = None):
    from ebm.controller import BackupRequest

    req = BackupRequest(dataset=dataset, source=source, translator=translator,
                        pool="pool" if source else None)
    return timed(lambda: ebm.backup(req))


def make_db(path: Path, size: int, journal: str) -> int:
    rng = random.Random(1)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    rows = size // 1000
    for start in range(0, rows, 50_000):
        conn.executemany("INSERT INTO t (v) VALUES (?)",
                         ((rng.randbytes(1000),) for _ in range(min(50_000, rows - start))))
    conn.commit()
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.close()
    return rows


def bench_sqlite(work: Path, size: int, journal: str) -> dict:
    db = work / "app.db"
    t_make, rows = timed(lambda: make_db(db, size, journal))
    out: dict = {"db_bytes": db.stat().st_size, "make_s": t_make}
    copy = work / "copy.db"
    out["copy_s"], _ = timed(lambda: run(["sqlite3", str(db), f".backup '{copy}'"]))
    out["copy_bytes"] = copy.stat().st_size
    copy.unlink()
    ebm = library(work / "sqlite")
    out["base_s"], b0 = ebm_backup(ebm, "db", db, "sqlite")
    out["base_bytes"] = b0.size
    conn = sqlite3.connect(db)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    rng = random.Random(2)
    ids = rng.sample(range(1, rows + 1), max(1, pages // 100))
    conn.executemany("UPDATE t SET v=? WHERE id=?", ((rng.randbytes(1000), i) for i in ids))
    conn.commit()
    conn.close()
    out["pages"], out["rows_updated"] = pages, len(ids)
    out["incr_s"], b1 = ebm_backup(ebm, "db")
    out["incr_bytes"], out["incr_level"] = b1.size, b1.level
    ebm.close()
    return out


def make_image(path: Path, size: int) -> None:
    rng = random.Random(3)
    with open(path, "wb") as f:
        f.truncate(size)
        island = 64 * MiB
        for off in range(0, size - island + 1, 4 * island):  # a quarter of it data
            f.seek(off)
            for _ in range(island // (4 * MiB)):
                f.write(rng.randbytes(4 * MiB))


def bench_volume(work: Path, size: int) -> dict:
    img = work / "disk.img"
    out: dict = {"image_bytes": size}
    out["make_s"], _ = timed(lambda: make_image(img, size))
    out["image_allocated"] = img.stat().st_blocks * 512
    zst = work / "disk.img.zst"
    out["dd_zstd_s"], _ = timed(lambda: run(
        f"dd if='{img}' bs=1M status=none | zstd -1 -T0 -q -o '{zst}'"))
    out["dd_zstd_bytes"] = zst.stat().st_size
    zst.unlink()
    ebm = library(work / "volume")
    out["base_s"], b0 = ebm_backup(ebm, "vol", img, "volume")
    out["base_bytes"] = b0.size
    rng = random.Random(4)
    chunks = size // MiB
    touched = rng.sample(range(chunks), max(1, chunks // 100))
    with open(img, "r+b") as f:
        for c in touched:
            f.seek(c * MiB + rng.randrange(0, MiB - 4096))
            f.write(rng.randbytes(4096))
    out["chunks_touched"] = len(touched)
    out["incr_s"], b1 = ebm_backup(ebm, "vol")
    out["incr_bytes"], out["incr_level"] = b1.size, b1.level
    ebm.close()
    return out


def mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sqlite-size", default="1G")
    ap.add_argument("--volume-size", default="4G")
    ap.add_argument("--only", choices=("sqlite", "volume"))
    ap.add_argument("--journal", choices=("wal", "delete"), default="wal",
                    help="the SQLite database's journal mode")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-translators-", dir=args.workdir) as tmp:
        work = Path(tmp)
        if args.only in (None, "sqlite"):
            (work / "s").mkdir()
            s = bench_sqlite(work / "s", parse_size(args.sqlite_size), args.journal)
            print(f"SQLite {mb(s['db_bytes'])} (journal_mode {args.journal}), {s['pages']} pages, "
                  f"{s['rows_updated']} rows updated (~1% of the pages)")
            print(f"  full copy (sqlite3 .backup): {s['copy_s']:.2f} s, {mb(s['copy_bytes'])}")
            print(f"  EBM baseline:               {s['base_s']:.2f} s, {mb(s['base_bytes'])} on tape")
            print(f"  EBM incremental ({s['incr_level']}):     {s['incr_s']:.2f} s, "
                  f"{mb(s['incr_bytes'])} on tape")
            print(f"  incremental / full copy: size {s['incr_bytes'] / s['copy_bytes']:.4f}, "
                  f"time {s['incr_s'] / s['copy_s']:.2f}")
        if args.only in (None, "volume"):
            (work / "v").mkdir()
            v = bench_volume(work / "v", parse_size(args.volume_size))
            print(f"Volume {mb(v['image_bytes'])} image, {mb(v['image_allocated'])} allocated, "
                  f"{v['chunks_touched']} of its 1 MiB chunks touched (1%)")
            print(f"  full copy (dd | zstd -1 -T0): {v['dd_zstd_s']:.2f} s, {mb(v['dd_zstd_bytes'])}")
            print(f"  EBM baseline:                {v['base_s']:.2f} s, {mb(v['base_bytes'])} on tape")
            print(f"  EBM incremental ({v['incr_level']}):      {v['incr_s']:.2f} s, "
                  f"{mb(v['incr_bytes'])} on tape")
            print(f"  incremental / dd|zstd: time {v['incr_s'] / v['dd_zstd_s']:.2f}, "
                  f"size {v['incr_bytes'] / v['dd_zstd_bytes']:.4f}")


if __name__ == "__main__":
    main()
