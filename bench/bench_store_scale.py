"""How the dedup store's bookkeeping grows with the number of chunks: 1M, 3M, 10M by default.

The store has no chunk index of its own: a chunk's existence is its file's, and the
collector's mark set is built from the recipes (docs/store-format.md). So at each size this
measures what grows: a recipe naming N chunks (write, load, bytes on disk, memory once
loaded), the collector's mark set of N ids (insert and lookup per id, memory), and, at a
size this machine can create files for (``--files``, default 20,000), the cost of asking
the file system whether a chunk exists (a hit and a miss). Figures go to stdout.

    .venv/bin/python bench/bench_store_scale.py                 # 1M, 3M, 10M chunk ids
    .venv/bin/python bench/bench_store_scale.py --sizes 1000000 --files 5000 --dir /var/tmp
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tape_formats.store import recipe as recipes  # noqa: E402
from tape_formats.store.chunk_store import ChunkStore  # noqa: E402

AVG_CHUNK = 32 << 10  # as the dedup medium cuts (tape_formats/store/dedup_medium.py)
BATCH = 30  # chunks per recipe batch: one per 1 MiB cut, as a stream of filemarks makes


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def ids(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(n)]


def recipe_figures(work: Path, chunk_ids: list[bytes]) -> str:
    """Write a recipe naming ``chunk_ids`` (one batch per BATCH chunks), load it back."""
    path = work / "scale.vtape.recipe"
    n = len(chunk_ids)
    t0 = time.perf_counter()
    recipes.write_new(path, "../store", [], [])
    with open(path, "ab") as f:
        for lo in range(0, n, BATCH):
            part = chunk_ids[lo:lo + BATCH]
            f.write(recipes.batch([(lo * AVG_CHUNK, len(part) * AVG_CHUNK)],
                                  [(AVG_CHUNK, c) for c in part]))
    written = time.perf_counter() - t0
    before = rss_mb()
    t0 = time.perf_counter()
    rec = recipes.load(path)
    loaded = time.perf_counter() - t0
    grown = rss_mb() - before
    assert len(rec.ch_ids) == n
    size = path.stat().st_size
    del rec
    path.unlink()
    return (f"recipe: {size / 1e6:7.1f} MB on disk ({size / n:.1f} B/chunk), write "
            f"{written:6.1f} s, load {loaded:6.1f} s ({loaded / n * 1e6:.2f} us/chunk), "
            f"{grown:7.1f} MB in memory loaded")


def mark_set_figures(chunk_ids: list[bytes], ids_mb: float) -> str:
    """The collector's mark set: every referenced id once (``ids_mb``: what the ids took)."""
    n = len(chunk_ids)
    before = rss_mb()
    t0 = time.perf_counter()
    marks = set(chunk_ids)
    built = time.perf_counter() - t0
    grown = rss_mb() - before + ids_mb
    probes = chunk_ids[:: max(1, n // 200_000)] + ids(200_000, 99)
    t0 = time.perf_counter()
    hits = sum(1 for c in probes if c in marks)
    looked = time.perf_counter() - t0
    assert hits >= len(probes) - 200_000
    del marks
    return (f"mark set: insert {built / n * 1e9:5.0f} ns/id, lookup "
            f"{looked / len(probes) * 1e9:5.0f} ns/id, {grown:7.1f} MB with the ids "
            f"({grown * 1e6 / n:.0f} B/id)")


def file_lookup_figures(work: Path, files: int) -> str:
    """Whether a chunk exists, asked of the file system (one file per chunk)."""
    store = ChunkStore.create(work / "store")
    present = ids(files, 7)
    body = b"\x00" + b"x" * 100
    t0 = time.perf_counter()
    for cid in present:
        path = store.path_of(cid)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(body)
    made = time.perf_counter() - t0
    absent = ids(files, 8)
    t0 = time.perf_counter()
    assert all(store.has(c) for c in present)
    hit = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert not any(store.has(c) for c in absent)
    miss = time.perf_counter() - t0
    shutil.rmtree(work / "store")
    return (f"{files} chunk files: create {made / files * 1e6:.0f} us/file, exists? "
            f"hit {hit / files * 1e6:.1f} us, miss {miss / files * 1e6:.1f} us")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,3000000,10000000")
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (a real disk)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.dir))
    try:
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        print(file_lookup_figures(work, args.files), flush=True)
        for n in (int(s) for s in args.sizes.split(",")):
            before = rss_mb()
            chunk_ids = ids(n, n)
            ids_mb = rss_mb() - before
            print(f"{n / 1e6:g}M chunks ({n * AVG_CHUNK / 2**40:.2f} TiB distinct at 32 KiB):",
                  flush=True)
            print("  " + mark_set_figures(chunk_ids, ids_mb), flush=True)
            print("  " + recipe_figures(work, chunk_ids), flush=True)
            del chunk_ids
            gc.collect()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        print(f"peak RSS {peak:.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
