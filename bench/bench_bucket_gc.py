#!/usr/bin/env python3
"""The bucket's chunk collector (``vtl store gc --bucket``, vtl/bucket_gc.py) against a real
single-node Ceph radosgw started here: how long a collection takes per chunk object, against
a bare listing of the same objects (the peer: what any collector must at least do).

It puts ``--chunks`` small chunk objects under ``p/chunks/`` (8 threads), a reference list
naming every other one, then times one LIST of all of them (the peer) and one collection
with grace 0 (list, marks, deleting the unnamed half). Ceph runs on the same box: no network
latency, and the machine's other jobs share its two cores (the load average is printed).

Usage::

    .venv/bin/python bench/bench_bucket_gc.py                 # 10,000 chunk objects
    .venv/bin/python bench/bench_bucket_gc.py --chunks 50000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests" / "support"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=10_000)
    args = ap.parse_args()

    from ceph_cluster import running

    from vtl.bucket_gc import collect, put_references

    with tempfile.TemporaryDirectory(prefix="bench-bucket-gc-") as tmp, \
            running(Path(tmp) / "ceph") as cluster:
        client = cluster.client()
        client.create_bucket(Bucket="bench")
        ids = [os.urandom(32) for _ in range(args.chunks)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda cid: client.put_object(
                Bucket="bench", Key=f"p/chunks/{cid.hex()}", Body=b"\0" + cid * 4), ids))
        put = time.perf_counter() - t0
        put_references(client, "bench", "p", "bench", ids[::2])
        print(f"load average {os.getloadavg()[0]:.1f}; {args.chunks:,} chunk objects put in "
              f"{put:.1f} s ({put / args.chunks * 1e3:.2f} ms each, 8 threads)")

        t0 = time.perf_counter()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket="bench",
                                                                  Prefix="p/chunks/")
        listed = sum(len(page.get("Contents", [])) for page in pages)
        peer = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = collect(client, "bench", "p", "bench", grace=0)
        took = time.perf_counter() - t0
        assert listed == args.chunks and r.chunks_deleted == args.chunks - len(ids[::2])
        print(f"{'LIST of every chunk object (peer)':<36} {peer:7.2f} s  "
              f"{peer / listed * 1e6:7.1f} us per object   1.00x")
        print(f"{'collection, half of them deleted':<36} {took:7.2f} s  "
              f"{took / listed * 1e6:7.1f} us per object  {took / peer:5.2f}x "
              f"({r.chunks_deleted:,} deleted, {r.chunks_kept:,} kept)")
        print(f"load average {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
