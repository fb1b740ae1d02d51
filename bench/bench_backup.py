#!/usr/bin/env python3
"""Backup benchmark: the EBM (onto virtual tape) vs restic vs ``tar | zstd``, in one run.

Same generated tree for all three (half random bytes, half compressible text, sizes spread
around the mean), same machine, same moment:

1. full backup of the tree;
2. 1% of the files rewritten (new content, new mtime), then an incremental backup
   (EBM incremental, restic's next snapshot, GNU tar ``--listed-incremental``);
3. an incremental with nothing changed (the scan cost: goal < 2 s for 50k files);
4. single-file restore of one file from the full backup (EBM LOCATEs to its blocks and
   reports how many tape blocks it read; tar must decompress the stream up to the file).

Usage::

    .venv/bin/python bench/bench_backup.py                 # 500 MB in 20k files (~1-2 min)
    .venv/bin/python bench/bench_backup.py --size 2G --files 50000   # the issue's reference size
    .venv/bin/python bench/bench_backup.py --size 100M --files 5000 --keep  # quick, keep tmp

The EBM runs in-process through its API (the CLI adds only Python start-up). restic runs with
a throwaway password in a local repository; ``tar | zstd`` uses ``zstd -T0 -1``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    text = text.strip().upper().rstrip("B")
    if text and text[-1] in UNITS:
        return int(float(text[:-1]) * UNITS[text[-1]])
    return int(text)


def generate(root: Path, total: int, nfiles: int, seed: int = 1) -> list[str]:
    """Half random, half compressible files in a few hundred directories."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
             for _ in range(2000)]
    mean = max(1, total // nfiles)
    ndirs = max(1, nfiles // 100)
    paths = []
    text_pool = b" ".join(rng.choice(words) for _ in range(400_000))
    rnd_pool = os.urandom(8 << 20)
    for i in range(nfiles):
        d = root / f"d{i % ndirs:04d}" / f"s{(i // ndirs) % 7}"
        d.mkdir(parents=True, exist_ok=True)
        size = max(0, int(rng.expovariate(1 / mean)))
        size = min(size, 64 * mean)
        p = d / f"f{i:06d}.{'bin' if i % 2 else 'txt'}"
        pool = rnd_pool if i % 2 else text_pool
        off = rng.randrange(0, max(1, len(pool) - size)) if size < len(pool) else 0
        data = pool[off:off + size] if size <= len(pool) else (pool * (size // len(pool) + 1))[:size]
        p.write_bytes(data)
        paths.append(str(p.relative_to(root)))
    return paths


def change_one_percent(root: Path, paths: list[str], seed: int = 2) -> list[str]:
    rng = random.Random(seed)
    chosen = rng.sample(paths, max(1, len(paths) // 100))
    for rel in chosen:
        p = root / rel
        data = bytearray(p.read_bytes() or b"x")
        data[rng.randrange(len(data))] ^= 0xFF
        p.write_bytes(bytes(data) + b"changed")
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    return chosen


def du(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def run(cmd: list[str] | str, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, shell=isinstance(cmd, str), **kw)
    if r.returncode != 0:
        raise SystemExit(f"error: {cmd if isinstance(cmd, str) else ' '.join(cmd)} failed: "
                         f"{r.stderr.strip()[-300:]}")
    return r


def bench_ebm(work: Path, src: Path, change, probe: str) -> dict:
    from ebm.catalog import Catalog
    from ebm.controller import BackupRequest
    from ebm.manager import Ebm, load_translator
    from ebm.restore import restore
    from vtl.config import LibraryConfig
    from vtl.library import Library

    root = work / "ebm-lib"
    lib = Library.create(root, LibraryConfig(drives=2, slots=8, mailslots=2))
    lib.create_cartridges(["BENCH1L8", "BENCH2L8"])
    lib.close()
    cat = Catalog.for_root(root)
    cat.create_pool("bench")
    cat.add_to_pool("bench", "BENCH1L8")
    cat.add_to_pool("bench", "BENCH2L8")
    cat.close()
    ebm = Ebm(root)
    out: dict = {}
    out["full_s"], b_full = timed(lambda: ebm.backup(
        BackupRequest(dataset="bench", source=src, pool="bench")))
    out["noop_incr_s"], _ = timed(lambda: ebm.backup(BackupRequest(dataset="bench")))
    change()
    out["incr_s"], b_inc = timed(lambda: ebm.backup(BackupRequest(dataset="bench")))
    out["stored_bytes"] = du(root / "cartridges")
    target = work / "ebm-restore"
    out["restore1_s"], st = timed(lambda: restore(ebm.catalog, ebm.library, load_translator,
                                                   b_full, target, [probe]))
    out["restore1_blocks"] = st.blocks_read
    out["total_blocks"] = b_full.blocks
    ebm.close()
    return out


def bench_restic(work: Path, src: Path, change, probe: str) -> dict:
    repo = work / "restic-repo"
    env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(repo),
           "RESTIC_CACHE_DIR": str(work / "restic-cache")}
    run(["restic", "init", "-q"], env=env)
    out: dict = {}
    out["full_s"], _ = timed(lambda: run(["restic", "backup", "-q", "."], env=env, cwd=src))
    out["noop_incr_s"], _ = timed(lambda: run(["restic", "backup", "-q", "."], env=env, cwd=src))
    change()
    out["incr_s"], _ = timed(lambda: run(["restic", "backup", "-q", "."], env=env, cwd=src))
    out["stored_bytes"] = du(repo)
    snaps = json.loads(run(["restic", "snapshots", "--json"], env=env).stdout)
    first = snaps[0]["short_id"]
    out["restore1_s"], _ = timed(lambda: run(
        ["restic", "restore", "-q", first, "--target", str(work / "restic-restore"),
         "--include", f"/{probe}"], env=env))
    return out


def bench_tar(work: Path, src: Path, change, probe: str) -> dict:
    d = work / "tar"
    d.mkdir()
    out: dict = {}
    snar = d / "snar"
    out["full_s"], _ = timed(lambda: run(
        f"tar -C {src} --listed-incremental={snar} -cf - . | zstd -q -T0 -1 -o {d}/full.tar.zst"))
    shutil.copy(snar, d / "snar1")
    out["noop_incr_s"], _ = timed(lambda: run(
        f"tar -C {src} --listed-incremental={d}/snar1 -cf - . | zstd -q -T0 -1 -o {d}/noop.tar.zst"))
    change()
    out["incr_s"], _ = timed(lambda: run(
        f"tar -C {src} --listed-incremental={snar} -cf - . | zstd -q -T0 -1 -o {d}/incr.tar.zst"))
    out["stored_bytes"] = (d / "full.tar.zst").stat().st_size + (d / "incr.tar.zst").stat().st_size
    (d / "restore").mkdir()
    out["restore1_s"], _ = timed(lambda: run(
        f"zstd -dc {d}/full.tar.zst | tar -C {d}/restore -xf - ./{probe}"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="500M", help="total tree size (e.g. 500M, 2G)")
    ap.add_argument("--files", type=int, default=20000, help="number of files")
    ap.add_argument("--tmp", default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--only", default="ebm,restic,tar", help="which tools to run")
    args = ap.parse_args()
    total = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="ebm-bench-", dir=args.tmp))
    tools = args.only.split(",")
    try:
        print(f"generating {total / 1e6:.0f} MB in {args.files} files under {work} ...", flush=True)
        results: dict[str, dict] = {}
        for tool in tools:
            # a fresh identical tree per tool, so each sees the same full/changed states
            src = work / f"src-{tool}"
            t, paths = timed(lambda src=src: generate(src, total, args.files))
            probe = paths[len(paths) // 2]
            print(f"  tree for {tool}: {t:.1f}s; running {tool} ...", flush=True)
            fn = {"ebm": bench_ebm, "restic": bench_restic, "tar": bench_tar}[tool]
            results[tool] = fn(work, src, lambda src=src, paths=paths: change_one_percent(src, paths), probe)
            shutil.rmtree(src)
        size_real = total
        print()
        print(f"tree: {size_real / 1e6:.0f} MB, {args.files} files; 1% = {max(1, args.files // 100)} files changed")
        hdr = f"{'':24}" + "".join(f"{t:>14}" for t in tools)
        print(hdr)
        rows = [("full backup (s)", "full_s"), ("1% incremental (s)", "incr_s"),
                ("no-change incr (s)", "noop_incr_s"), ("single-file restore (s)", "restore1_s")]
        for label, key in rows:
            print(f"{label:24}" + "".join(f"{results[t][key]:>14.2f}" for t in tools))
        print(f"{'stored (MB)':24}" + "".join(f"{results[t]['stored_bytes'] / 1e6:>14.1f}" for t in tools))
        if "ebm" in results:
            e = results["ebm"]
            print(f"\nEBM full throughput: {total / e['full_s'] / 1e6:.0f} MB/s; single-file restore read "
                  f"{e['restore1_blocks']} of {e['total_blocks']} tape blocks")
            for other in ("restic", "tar"):
                if other in results:
                    o = results[other]
                    print(f"EBM vs {other}: full {o['full_s'] / e['full_s']:.2f}x faster, "
                          f"incremental {o['incr_s'] / e['incr_s']:.2f}x, "
                          f"single-file restore {o['restore1_s'] / e['restore1_s']:.2f}x "
                          "(>1 means the EBM is faster)")
        print(json.dumps(results))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
