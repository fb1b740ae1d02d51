"""Weekly fulls of the same tree on a plain and on a dedup store: space and throughput.

The legacy pattern a dedup VTL is bought for: GNU tar writes a full backup of the same tree
onto a new cartridge every "week", with a few percent of the files changed in between. The
tree is built from real files of this machine (``/usr/lib``, ``/usr/share``: binaries,
libraries, sources, text) up to ``--size``; between weeks ``--change`` of the files are
modified (a random range overwritten; one in three also grows or shrinks, shifting the rest
of the tar; ``--data random``: the same names and sizes filled with random bytes, as
compressed or encrypted data). Each week's tar (``tar -b 512``: 256 KiB blocks; ``--block-kib 10`` for GNU tar's default) is written to a new cartridge
of each store, through ``queue_block`` as a drive in buffered mode does, ended by a filemark
(fsync), then read back and compared. Printed per week and store: MB/s written and read,
and the process's CPU seconds (all threads) per GB for each, which a busy box moves less,
with the cores that makes (CPU seconds over wall seconds: below the peer's, the store's
threads waited, on each other or on a box too busy to run them);
at the end, logical bytes against bytes on disk.

With ``--ebm`` the EBM backs up the same tree each week too, as a forced full (a native
backup whose admin never takes incrementals: the worst case for space), onto a plain and a
dedup library: the same questions (space against one full, MB/s of the tree) for the
native path, whose pax stream is not GNU tar's.

    .venv/bin/python bench/bench_dedup.py                       # 640 MiB tree, 4 weeks, 2%
    .venv/bin/python bench/bench_dedup.py --ebm                 # and the EBM's weekly fulls
    .venv/bin/python bench/bench_dedup.py --size 1G --weeks 4 --change 0.02 --dir /var/tmp
    .venv/bin/python bench/bench_dedup.py --size 200M --block-kib 10 --dir /var/tmp  # GNU tar -b 20
    .venv/bin/python bench/bench_dedup.py --weeks 1 --threads --dir /var/tmp  # who waits on what
    .venv/bin/python bench/bench_dedup.py --data random --dir /var/tmp  # incompressible files
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_write_behind import size_arg  # noqa: E402
from thread_times import ThreadTimes  # noqa: E402

from tape_formats.cartridge import RecordKind, TapeCartridge  # noqa: E402
from tape_formats.media import MEDIA  # noqa: E402
from tape_formats.store.chunk_store import ChunkStore  # noqa: E402
from tape_formats.store.gc import stats  # noqa: E402

BLOCK = 256 << 10
SOURCES = ("/usr/lib", "/usr/share")


def build_tree(dst: Path, size: int, rng: random.Random | None = None) -> list[Path]:
    """Copy regular files from SOURCES into ``dst`` until ``size`` bytes (sorted walk); with
    ``rng``, files of the same names and sizes filled with its random bytes instead
    (incompressible: what compressed or encrypted backups send)."""
    files, total = [], 0
    for src in SOURCES:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            for name in sorted(filenames):
                f = Path(dirpath) / name
                try:
                    if not f.is_file() or f.is_symlink() or f.stat().st_size > 64 << 20:
                        continue
                    out = dst / f.relative_to("/")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    if rng is None:
                        shutil.copyfile(f, out)
                    else:
                        out.write_bytes(rng.randbytes(f.stat().st_size))
                except OSError:
                    continue
                files.append(out)
                total += out.stat().st_size
                if total >= size:
                    return files
    return files


def change_files(files: list[Path], fraction: float, rng: random.Random) -> int:
    """Modify ``fraction`` of the files; returns how many."""
    picked = rng.sample(files, max(1, int(len(files) * fraction)))
    for f in picked:
        data = bytearray(f.read_bytes())
        at = rng.randrange(0, len(data) + 1)
        n = rng.randrange(1, 4096)
        data[at:at + n] = rng.randbytes(n)
        if rng.random() < 1 / 3:  # grow or shrink: everything after it in the tar shifts
            if rng.random() < 0.5:
                data += rng.randbytes(rng.randrange(1, 20000))
            else:
                del data[len(data) // 2:]
        f.write_bytes(data)
    return len(picked)


def make_tar(tree: Path, out: Path) -> None:
    subprocess.run(["tar", "-b", str(BLOCK // 512), "-cf", str(out), "-C", str(tree), "."],
                   check=True)


def write(cart_path: Path, tar: Path) -> tuple[float, float]:
    """Wall and process CPU seconds (all threads) to stream the tar onto the cartridge,
    through the final filemark's fsync."""
    with open(tar, "rb") as f:
        blocks = iter(lambda: f.read(BLOCK), b"")
        t0, c0 = time.perf_counter(), time.process_time()
        with TapeCartridge.open(cart_path) as cart:
            for b in blocks:
                if not cart.queue_block(b):
                    cart.write_block(b)
            cart.flush_writes()
            cart.write_filemarks(1)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return elapsed, cpu


def read_back(cart_path: Path, want: str) -> tuple[float, float]:
    """Wall and process CPU seconds to read the cartridge's first file; checks it is the
    tar, byte for byte."""
    h = hashlib.sha256()
    buf = bytearray(BLOCK)
    t0, c0 = time.perf_counter(), time.process_time()
    with TapeCartridge.open(cart_path, readonly=True) as cart:
        while (r := cart.read_block(buf)).kind is RecordKind.DATA:
            h.update(r.data)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert h.hexdigest() == want, f"{cart_path.name} does not read back as written"
    return elapsed, cpu


class EbmLibraries:
    """A plain and a dedup library, one pool each, that take one forced full a week."""

    def __init__(self, work: Path, weeks: int, capacity: int) -> None:
        from ebm.catalog import Catalog
        from vtl.config import LibraryConfig
        from vtl.library import Library

        self.roots = {kind: work / f"ebm-{kind}" for kind in ("plain", "dedup")}
        for kind, root in self.roots.items():
            lib = Library.create(root, LibraryConfig(drives=1, slots=weeks + 2, mailslots=1,
                                                     store=kind))
            barcodes = [f"E{n:05d}L8" for n in range(1, weeks + 1)]
            lib.create_cartridges(barcodes, capacity=capacity)
            lib.close()
            cat = Catalog.for_root(root)
            cat.create_pool("weekly")
            for bc in barcodes:
                cat.add_to_pool("weekly", bc)
            cat.close()
        self.rates: dict[str, list[float]] = {"plain": [], "dedup": []}

    def full(self, kind: str, tree: Path, size: int) -> float:
        """MB/s of one forced full of ``tree`` (``size`` bytes of tar) onto ``kind``."""
        from ebm.controller import BackupRequest
        from ebm.manager import Ebm

        ebm = Ebm(self.roots[kind])
        try:
            t0 = time.perf_counter()
            ebm.backup(BackupRequest(dataset="tree", source=tree, pool="weekly", full=True))
            rate = size / (time.perf_counter() - t0) / 1e6
        finally:
            ebm.close()
        self.rates[kind].append(rate)
        return rate

    def report(self, weeks: int) -> None:
        plain_first = None
        for kind, root in self.roots.items():
            places = [root / "cartridges"] + ([root / "store"] if kind == "dedup" else [])
            on_disk = disk_bytes(places)
            if kind == "plain":
                plain_first = on_disk / weeks  # the fulls are alike: one full's share
            rates = self.rates[kind]
            print(f"EBM {kind} library on disk: {on_disk / 1e6:.2f} MB for {weeks} fulls; "
                  f"{on_disk / plain_first:.2f}x one plain full (the mean); write week 1 "
                  f"{rates[0]:.1f} MB/s, weeks 2-{weeks} "
                  f"{min(rates[1:] or rates):.1f}-{max(rates[1:] or rates):.1f} MB/s")
        p, d = self.rates["plain"], self.rates["dedup"]
        print(f"EBM dedup/plain write throughput: week 1 {d[0] / p[0]:.2f}x, all weeks "
              f"{sum(d) / sum(p):.2f}x")


def disk_bytes(paths: list[Path]) -> int:
    """Bytes allocated on disk (an older dedup cartridge's skeleton is sparse)."""
    total = 0
    for p in paths:
        for f in ([p] if p.is_file() else [x for x in p.rglob("*") if x.is_file()]):
            total += f.stat().st_blocks * 512
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=size_arg, default=size_arg("640M"), help="tree size")
    ap.add_argument("--weeks", type=int, default=4)
    ap.add_argument("--change", type=float, default=0.02, help="fraction of files changed")
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (a real disk)")
    ap.add_argument("--block-kib", type=int, default=256,
                    help="tar's block size in KiB (GNU tar's default is 10; Amanda 32)")
    ap.add_argument("--threads", action="store_true",
                    help="per thread of the first week's writes: CPU, run queue, asleep")
    ap.add_argument("--data", choices=("files", "random"), default="files",
                    help="the tree's contents: this machine's files, or random bytes (the "
                    "same names and sizes: incompressible, as compressed or encrypted data)")
    ap.add_argument("--ebm", action="store_true",
                    help="the EBM also takes a full of the tree each week, plain and dedup")
    args = ap.parse_args()
    global BLOCK
    BLOCK = args.block_kib << 10
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)  # the README's commands name new folders
    work = Path(tempfile.mkdtemp(prefix="bench-dedup-", dir=args.dir))
    rng = random.Random(16)
    try:
        tree = work / "tree"
        files = build_tree(tree, args.size, rng if args.data == "random" else None)
        plain_dir, dedup_dir = work / "plain", work / "dedup" / "cartridges"
        plain_dir.mkdir()
        dedup_dir.mkdir(parents=True)
        store = work / "dedup" / "store"
        logical = 0
        rates: dict[str, list[tuple[float, float]]] = {"plain": [], "dedup": []}
        cpu: dict[str, list[tuple[float, float]]] = {"plain": [], "dedup": []}  # s per GB
        ebm = EbmLibraries(work, args.weeks, 4 * args.size + (64 << 20)) if args.ebm else None
        print(f"tree: {len(files)} files ({args.data}); block {BLOCK >> 10} KiB; "
              f"{args.change:.0%} of the files changed each week", flush=True)
        for week in range(1, args.weeks + 1):
            if week > 1:
                change_files(files, args.change, rng)
            tar = work / "week.tar"
            make_tar(tree, tar)
            size = tar.stat().st_size
            logical += size
            want = hashlib.sha256(tar.read_bytes()).hexdigest()
            os.sync()  # the new tar's dirty pages would be written back during the first kind
            barcode = f"W{week:05d}L8"
            line = [f"week {week}: tar {size / 1e6:7.1f} MB"]
            order = ["plain", "dedup"] if week % 2 else ["dedup", "plain"]
            for kind in order:  # alternate who goes first: page cache and disk state
                folder = plain_dir if kind == "plain" else dedup_dir
                path = folder / f"{barcode}.vtape"
                TapeCartridge.create(path, barcode, MEDIA["LTO-8"],
                                     chunk_store=store if kind == "dedup" else None)
                if args.threads and week == 1:  # (the sampling costs ~1% of a core)
                    with ThreadTimes() as times:
                        w, wc = write(path, tar)
                    print(f"  {kind} write, per thread:")
                    times.report(size)
                else:
                    w, wc = write(path, tar)
                r, rc = read_back(path, want)
                rates[kind].append((size / w / 1e6, size / r / 1e6))
                cpu[kind].append((wc / size * 1e9, rc / size * 1e9))
                line.append(f"{kind} write {size / w / 1e6:6.1f} MB/s ({wc / size * 1e9:.2f} "
                            f"CPU s/GB, {wc / w:.2f} cores) read {size / r / 1e6:6.1f} MB/s "
                            f"({rc / size * 1e9:.2f} CPU s/GB, {rc / r:.2f} cores)")
                if ebm is not None:
                    line.append(f"EBM {kind} {ebm.full(kind, tree, size):6.1f} MB/s")
            print(",  ".join(line), flush=True)
            tar.unlink()
        plain = disk_bytes([plain_dir])
        dedup = disk_bytes([dedup_dir, store])
        s = stats(ChunkStore(store), dedup_dir)
        first = rates["plain"][0]
        print(f"logical (tar bytes written): {logical / 1e6:.1f} MB over {args.weeks} weeks")
        print(f"plain store on disk: {plain / 1e6:.1f} MB ({logical / plain:.2f}x, zstd -1 "
              "per block)")
        print(f"dedup store on disk: {dedup / 1e6:.2f} MB ({logical / dedup:.2f}x; dedup "
              f"{s.dedup_ratio:.2f}x, compression {s.compression_ratio:.2f}x; "
              f"{s.chunks} chunks)")
        one_full = logical / args.weeks
        print(f"dedup store against one full's logical size: {dedup / one_full:.2f}x; "
              f"against the first week's plain cartridge: "
              f"{dedup / disk_bytes([plain_dir / 'W00001L8.vtape']):.2f}x")
        for kind in ("plain", "dedup"):
            w = sum(x[0] for x in rates[kind]) / len(rates[kind])
            r = sum(x[1] for x in rates[kind]) / len(rates[kind])
            wc = sum(x[0] for x in cpu[kind]) / len(cpu[kind])
            rc = sum(x[1] for x in cpu[kind]) / len(cpu[kind])
            print(f"{kind}: mean write {w:.1f} MB/s ({wc:.2f} CPU s/GB; first week "
                  f"{cpu[kind][0][0]:.2f}), read {r:.1f} MB/s ({rc:.2f} CPU s/GB)")
        dw = sum(x[0] for x in rates["dedup"]) / sum(x[0] for x in rates["plain"])
        low = min(d[0] / p[0] for d, p in zip(rates["dedup"], rates["plain"], strict=True))
        print(f"dedup/plain write throughput: {dw:.2f}x (first week "
              f"{rates['dedup'][0][0] / first[0]:.2f}x, lowest week {low:.2f}x)")
        dr = sum(x[1] for x in rates["dedup"]) / sum(x[1] for x in rates["plain"])
        print(f"dedup/plain read throughput: {dr:.2f}x (first week "
              f"{rates['dedup'][0][1] / first[1]:.2f}x)")
        if ebm is not None:
            ebm.report(args.weeks)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
