#!/usr/bin/env python3
"""Lease traffic of several gateways on one bucket (vtl/leases.py) against a real single-node
Ceph radosgw started here: what one renewal costs, against an unconditional PUT of the same
object in the same run, and so how many held cartridges one gateway's keeper thread can
renew within a TTL.

Rows: an unconditional PUT (the peer), a renewal (``PUT`` with ``If-Match``), a take and a
release of a free lease, and one keeper round over ``--leases`` held leases (``LeaseKeeper.renew_all``:
``RENEW_THREADS`` PUTs at a time). Ceph runs on the same box, so these are the store's and
boto3's costs without network latency: add the round trip of a real network per request.

Usage::

    .venv/bin/python bench/bench_leases.py                  # 300 requests, 200 leases
    .venv/bin/python bench/bench_leases.py --requests 1000 --leases 1000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests" / "support"))


def timed(n: int, step) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        step(i)
        out.append(time.perf_counter() - t0)
    return out


def row(name: str, times: list[float], peer: float | None) -> float:
    med = statistics.median(times)
    p95 = sorted(times)[int(len(times) * 0.95) - 1]
    ratio = f"{med / peer:5.2f}x" if peer else "  1.00x"
    print(f"{name:<34} {med * 1e3:8.2f} ms {p95 * 1e3:8.2f} ms   {ratio}")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--leases", type=int, default=200)
    ap.add_argument("--ttl", type=int, default=60)
    args = ap.parse_args()

    from ceph_cluster import running

    from vtl.leases import RENEW_THREADS, LeaseKeeper, LeaseStore, remember

    with tempfile.TemporaryDirectory(prefix="bench-leases-") as tmp, \
            running(Path(tmp) / "ceph") as cluster:
        client = cluster.client()
        client.create_bucket(Bucket="bench")
        store = LeaseStore(client, "bench", "p", "gw-a", args.ttl)
        n = args.requests
        print(f"{'operation':<34} {'median':>11} {'p95':>11}   vs PUT")
        body = b'{"gateway": "gw-a", "expires": 0, "ttl": 60}'
        peer = row("PUT, unconditional (peer)", timed(n, lambda i: client.put_object(
            Bucket="bench", Key="p/plain", Body=body)), None)
        lease = [store.take("R00000L8")]

        def renew(_i: int) -> None:
            lease[0] = store.renew(lease[0])

        row("renew (PUT If-Match)", timed(n, renew), peer)
        row("take free + release (3-4 requests)", timed(n // 3, lambda i: store.release(
            store.take(f"T{i:05d}L8"))), peer)

        root = Path(tmp) / "gw"
        (root / "cartridges").mkdir(parents=True)
        for i in range(args.leases):
            bc = f"K{i:05d}L8"
            (root / "cartridges" / f"{bc}.vtape").touch()  # "local": the keeper renews it
            remember(root, store.take(bc))
        keeper = LeaseKeeper(root, store)
        rounds = timed(5, lambda i: keeper.renew_all())
        per = statistics.median(rounds) / args.leases
        print(f"{'keeper round, ' + str(args.leases) + ' leases':<34} "
              f"{statistics.median(rounds):8.2f} s  ({per * 1e3:.2f} ms per lease, "
              f"{per / peer:.2f}x a PUT)")
        budget = args.ttl / 3
        print(f"one keeper ({RENEW_THREADS} threads) renews about {int(budget / per):,} leases per TTL/3 "
              f"({budget:g} s at lease_ttl = {args.ttl}); requests to the store: "
              f"{3 / args.ttl:.3f} PUT/s per held cartridge")


if __name__ == "__main__":
    main()
