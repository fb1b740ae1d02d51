#!/usr/bin/env python3
"""A dedup library whose chunks go to a bucket (``vtl init --store s3://... --cache-size``,
vtl/s3_uploader.py) against the same library without a bucket (the peer), against a real
single-node Ceph radosgw started here.

Each library gets one cartridge written in one session of ``--mib`` MiB of incompressible
256 KiB blocks (a filemark every 16 MiB), through the library API as the drive writes it,
then closed: the S3 library's close waits until the bucket holds every chunk (in pack
objects: tape_formats/store/s3_packs.py), so its figure is *write through to the bucket*.
Then the S3 library reads the cartridge back with the cache evicted (every chunk a miss:
ranged GETs of pack objects, with read-ahead) and once more (hits). Printed: MB/s of each
step and the ratio to the peer, the process's CPU seconds per GB (all its threads:
chunking, hashing, compression, uploads) and Ceph's (monitor, OSD, radosgw), the GETs of
chunk data, the objects the bucket then holds (pack objects, manifests, per-chunk objects
of the older layout), and the load average. Ceph runs on the same box: no network.

Usage::

    .venv/bin/python bench/bench_s3_cache.py --mib 256 --cache-mib 512  # the S3 tier's goal
    .venv/bin/python bench/bench_s3_cache.py --mib 512 --cache-mib 128  # cache < data
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests" / "support"))

BLOCK = 256 << 10
FILE_MIB = 16


def _cpu_of(pids: list[int]) -> float:
    """utime + stime of those processes, seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _vtl(root: Path, *args: str) -> None:
    from typer.testing import CliRunner

    from vtl.cli.main import app

    r = CliRunner().invoke(app, ["--root", str(root), *args])
    if r.exit_code:
        raise SystemExit(f"vtl {' '.join(args)}: {r.output}")


def _write(root: Path, mib: int, blocks: list[bytes]) -> float:
    """Returns when the unload was acknowledged (perf_counter): all durable locally."""
    from vtl.library import Library

    lib = Library.open(root)
    try:
        lib.load("B00001L8", 0)
        cart = lib.drives[0].mount()
        per_file = FILE_MIB * (1 << 20) // BLOCK
        for i in range(mib * (1 << 20) // BLOCK):
            cart.write_block(blocks[i])
            if i % per_file == per_file - 1:
                cart.write_filemarks(1)
        lib.unload(0)
        acknowledged = time.perf_counter()
    finally:
        lib.close()  # the S3 library: waits for the uploader's passes
    return acknowledged


def _read(root: Path) -> tuple[int, int]:
    """(bytes read, GETs of chunk data) of the whole cartridge."""
    from tape_formats.cartridge import RecordKind
    from tape_formats.store.chunk_store import ChunkStore
    from vtl.library import Library

    lib = Library.open(root, readonly=True)
    try:
        cart = lib.open_readonly("B00001L8")
        got = 0
        while (rec := cart.read_block()).kind is not RecordKind.EOD:
            got += len(rec.data) if rec.kind is RecordKind.DATA else 0
        cart.close()
        remote = ChunkStore(root / "store").remote
        return got, remote.gets if remote is not None else 0
    finally:
        lib.close()


def _timed(step, ceph: list[int]):
    c0, w0, t0 = time.process_time(), _cpu_of(ceph), time.perf_counter()
    out = step()
    return out, time.perf_counter() - t0, time.process_time() - c0, _cpu_of(ceph) - w0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=256, help="data written (MiB)")
    ap.add_argument("--cache-mib", type=int, default=64, help="the S3 library's cache (MiB)")
    args = ap.parse_args()

    from ceph_cluster import CephCluster

    blocks = [os.urandom(BLOCK) for _ in range(args.mib * (1 << 20) // BLOCK)]  # no dedup
    gb = args.mib / 1024
    with tempfile.TemporaryDirectory(prefix="bench-s3-cache-") as tmp:
        (Path(tmp) / "ceph").mkdir()
        cluster = CephCluster(Path(tmp) / "ceph", memstore=(args.mib * 2 + 256) << 20).start()
        try:
            _run(args, cluster, Path(tmp), blocks, gb)
        finally:
            cluster.stop()


def _run(args: argparse.Namespace, cluster, tmp: Path, blocks: list[bytes], gb: float) -> None:
    from tape_formats.store.chunk_store import ChunkStore
    from tape_formats.store.s3_cache import CacheState, evict_to

    cluster.client().create_bucket(Bucket="bench")
    os.environ.update(cluster.env())
    ceph = [p.pid for p in cluster.procs]
    local, s3 = tmp / "local", tmp / "s3"
    _vtl(local, "init", "--store", "dedup", "--drives", "1", "--slots", "2")
    _vtl(s3, "init", "--store", "s3://bench/lib", "--cache-size", f"{args.cache_mib}MiB",
         "--drives", "1", "--slots", "2")
    for root in (local, s3):
        _vtl(root, "cartridge", "create", "B00001L8", "--capacity", f"{args.mib * 2}MiB")
    print(f"load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f}; "
          f"{args.mib} MiB in 256 KiB blocks, cache {args.cache_mib} MiB")
    rows = []
    for name, root in (("local dedup (peer)", local), ("write through to Ceph", s3)):
        t0 = time.perf_counter()
        acked, wall, cpu, ceph_cpu = _timed(lambda r=root: _write(r, args.mib, blocks), ceph)
        rows.append((name, wall, cpu, ceph_cpu))
    print(f"the S3 library's unload was acknowledged after {acked - t0:.1f} s "
          f"({args.mib * 1.048576 / (acked - t0):.1f} MB/s, uploads running meanwhile); "
          f"the bucket held everything after {rows[1][1]:.1f} s")
    store = ChunkStore(s3 / "store")
    state = CacheState(s3 / "store")
    local_now = evict_to(store, state, 0).local_bytes  # cold: every chunk a miss
    state.close()
    store.close()
    assert local_now == 0
    (got0, _), wall, cpu, ceph_cpu = _timed(lambda: _read(local), ceph)
    rows.append(("read local dedup (peer)", wall, cpu, ceph_cpu))
    (got, gets), wall, cpu, ceph_cpu = _timed(lambda: _read(s3), ceph)
    rows.append((f"read, cache cold ({gets} GETs)", wall, cpu, ceph_cpu))
    (got2, gets2), wall, cpu, ceph_cpu = _timed(lambda: _read(s3), ceph)
    rows.append((f"read again, cache warm ({gets2} GETs)", wall, cpu, ceph_cpu))
    assert got0 == got == got2 == args.mib << 20
    objects = {}
    for kind in ("packs", "manifests", "chunks"):
        pages = cluster.client().get_paginator("list_objects_v2").paginate(
            Bucket="bench", Prefix=f"lib/{kind}/")
        objects[kind] = sum(len(p.get("Contents", [])) for p in pages)
    print("bucket objects: " + ", ".join(f"{n} under {k}/" for k, n in objects.items()))
    print(f"{'step':40} {'MB/s':>7} {'x peer':>7} {'CPU s/GB':>9} {'Ceph CPU s/GB':>14}")
    for i, (name, wall, cpu, ceph_cpu) in enumerate(rows):
        peer = rows[0 if i < 2 else 2][1]
        print(f"{name:40} {args.mib * 1.048576 / wall:7.1f} {peer / wall:7.2f} "
              f"{cpu / gb:9.2f} {ceph_cpu / gb:14.2f}")
    print(f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
