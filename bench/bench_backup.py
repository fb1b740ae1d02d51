#!/usr/bin/env python3
"""Backup benchmark: the EBM (onto virtual tape) vs restic vs ``tar | zstd``, in one run.

Same generated tree for all three (half random bytes, half compressible text, sizes spread
around the mean), same machine, same moment:

1. full backup of the tree;
2. 1% of the files rewritten (new content, new mtime), then an incremental backup
   (EBM incremental, restic's next snapshot, GNU tar ``--listed-incremental``);
3. an incremental with nothing changed (the scan cost: goal < 2 s for 50k files);
4. single-file restore of one file from the full backup (EBM LOCATEs to its blocks and
   reports how many tape blocks it read; tar must decompress the stream up to the file);
5. full restore of the full backup into an empty directory;
6. with ``--concurrent``: two `ebm backup` commands (two datasets, two trees of that shape)
   into one library of two drives, one after the other and both at once (alternating, best
   of two each); the ratio of the wall times (goal <= 0.7: the second drive is worth having).

Peak resident memory: each tool runs in its own process (the EBM in a fresh interpreter that
runs this script with ``--child``); the EBM child reports its own ``VmHWM`` (after the full
backup, printed too, and at the end), the other tools' peaks come from ``wait4``, which on
Linux is at least this script's own peak when it spawned them (the path list of the tree:
~75 B a file; ~15 MB at 200,000 files), so theirs are upper bounds. CPU seconds (user +
system, all threads and child processes) of the full backup and the full restore are printed
beside the wall times: on a shared machine they move less with the load than the wall times
do.

Usage::

    .venv/bin/python bench/bench_backup.py                 # 500 MB in 20k files (~1-2 min)
    .venv/bin/python bench/bench_backup.py --size 2G --files 50000   # the issue's reference size
    .venv/bin/python bench/bench_backup.py --size 100M --files 5000 --keep  # quick, keep tmp
    .venv/bin/python bench/bench_backup.py --small        # 200,000 files of ~100 B in 400 dirs
    .venv/bin/python bench/bench_backup.py --small --files 50000   # the same shape, fewer files
    .venv/bin/python bench/bench_backup.py --small --files 2000000 --only ebm --backup-only
        # peak RSS at 2M files: full backup and no-change incremental only
    .venv/bin/python bench/bench_backup.py --concurrent   # and two backups at once
    .venv/bin/python bench/bench_backup.py --small --files 50000 --only '' --concurrent
        # only the two concurrent backups (two trees of 50,000 small files)

Every tool's tree and restored copies stay until the end (deleting them between tools slowed
the next tool's file creation: ``settle_deletions``), so ``--tmp`` needs room for all of
them at once (~7 GB of 4 KiB blocks for ``--small``).

The EBM runs through its API in a child interpreter (the CLI adds only Python start-up). restic runs with
a throwaway password in a local repository; ``tar | zstd`` uses ``zstd -T0 -1``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
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


def generate(root: Path, total: int, nfiles: int, seed: int = 1, ndirs: int | None = None) -> list[str]:
    """Half random, half compressible files in ``ndirs`` directories (default: a few hundred,
    each with 7 subdirectories); sizes spread exponentially around the mean.

    Written a directory at a time through its descriptor (``os.open`` with ``dir_fd``), file
    ``i`` in directory ``i % ndirs``: millions of small files in a few minutes, not tens."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
             for _ in range(2000)]
    mean = max(1, total // nfiles)
    flat = ndirs is not None
    ndirs = ndirs or max(1, nfiles // 100)
    text_pool = b" ".join(rng.choice(words) for _ in range(400_000))
    rnd_pool = os.urandom(8 << 20)
    paths = [""] * nfiles
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    expo, randrange, lam = rng.expovariate, rng.randrange, 1 / mean
    os.makedirs(root, exist_ok=True)
    for d in range(ndirs):
        subdirs = [f"d{d:04d}"] if flat else [f"d{d:04d}/s{k}" for k in range(7)]
        fds = []
        for sub in subdirs:
            os.makedirs(root / sub, exist_ok=True)
            fds.append(os.open(root / sub, os.O_RDONLY | os.O_DIRECTORY))
        try:
            for i in range(d, nfiles, ndirs):
                k = 0 if flat else (i // ndirs) % 7
                size = min(max(0, int(expo(lam))), 64 * mean)
                name = f"f{i:07d}.{'bin' if i % 2 else 'txt'}"
                pool = rnd_pool if i % 2 else text_pool
                if size <= len(pool):
                    off = randrange(0, max(1, len(pool) - size))
                    data = pool[off:off + size]
                else:
                    data = (pool * (size // len(pool) + 1))[:size]
                fd = os.open(name, flags, 0o644, dir_fd=fds[k])
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                paths[i] = f"{subdirs[k]}/{name}"
        finally:
            for fd in fds:
                os.close(fd)
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


def settle_deletions() -> None:
    """Write out earlier deletions before the first tree is made. Why: on an ext4 without a
    journal (this machine's root) a new file skips every inode of its group freed in the
    last 60 s, or 360 s while the inode table block is dirty (``recently_deleted`` in the
    kernel's inode allocator), so creating files soon after a mass deletion costs several
    times the CPU. ``sync`` shortens the window, but creating files in those blocks dirties
    them again: the bench deletes nothing until the end."""
    os.sync()


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


PEAK_RSS = {"kb": 0}  # the largest peak RSS of any command run() waited for
CPU = {"s": 0.0}  # user + system seconds of the commands run() waited for (and their children)


def self_cpu() -> float:
    """User + system seconds of this process so far, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_timed(fn, cpu=self_cpu) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds, result) of one phase."""
    c0, t0 = cpu(), time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, cpu() - c0, r


def run(cmd: list[str] | str, **kw) -> subprocess.CompletedProcess:
    """Run a command to the end; its peak RSS (from wait4) raises PEAK_RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, shell=isinstance(cmd, str), **kw)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        PEAK_RSS["kb"] = max(PEAK_RSS["kb"], usage.ru_maxrss)
        CPU["s"] += usage.ru_utime + usage.ru_stime
        out.seek(0)
        err.seek(0)
        r = subprocess.CompletedProcess(cmd, proc.returncode, out.read().decode(errors="replace"),
                                        err.read().decode(errors="replace"))
    if r.returncode != 0:
        raise SystemExit(f"error: {cmd if isinstance(cmd, str) else ' '.join(cmd)} failed: "
                         f"{r.stderr.strip()[-300:]}")
    return r


def run_ebm_child(work: Path, src: Path, probe: str, change_seed_paths: Path) -> dict:
    """The EBM phases in a fresh interpreter, so its peak RSS is its own."""
    before = PEAK_RSS["kb"]
    PEAK_RSS["kb"] = 0
    r = run([sys.executable, __file__, "--child", str(work), str(src), probe, str(change_seed_paths)]
            + (["--backup-only"] if BACKUP_ONLY["on"] else []))
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["peak_rss_kb"] = out.pop("own_peak_kb")  # not wait4's: see own_peak_kb
    PEAK_RSS["kb"] = before
    return out


def own_peak_kb() -> int:
    """This process's own peak RSS (``VmHWM``). Why not ``ru_maxrss``: on exec Linux carries
    the spawning process's peak over into the child's, so a child started by this bench
    (which holds the tree's path list: ~75 B a file) would report at least that."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


BACKUP_ONLY = {"on": False}  # --backup-only: full backup and no-change incremental only


def child_cpu() -> float:
    return CPU["s"]


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
    out["full_s"], out["full_cpu"], b_full = cpu_timed(lambda: ebm.backup(
        BackupRequest(dataset="bench", source=src, pool="bench")))
    out["full_rss_kb"] = own_peak_kb()
    out["noop_incr_s"], out["noop_incr_cpu"], _ = cpu_timed(
        lambda: ebm.backup(BackupRequest(dataset="bench")))
    out["stored_bytes"] = du(root / "cartridges")
    if BACKUP_ONLY["on"]:
        ebm.close()
        out["own_peak_kb"] = own_peak_kb()
        return out
    change()
    out["incr_s"], out["incr_cpu"], b_inc = cpu_timed(lambda: ebm.backup(BackupRequest(dataset="bench")))
    out["stored_bytes"] = du(root / "cartridges")
    target = work / "ebm-restore"
    out["restore1_s"], _, st = cpu_timed(lambda: restore(ebm.catalog, ebm.library, load_translator,
                                                          b_full, target, [probe]))
    out["restore1_blocks"] = st.blocks_read
    out["total_blocks"] = b_full.blocks
    out["restore_s"], out["restore_cpu"], _ = cpu_timed(lambda: restore(
        ebm.catalog, ebm.library, load_translator, b_full, work / "ebm-restore-full"))
    ebm.close()
    out["own_peak_kb"] = own_peak_kb()
    return out


REPO = Path(__file__).resolve().parent.parent


def concurrent_library(root: Path) -> None:
    """A library of two drives and one pool of four cartridges: two jobs each get a drive
    and a cartridge of their own, as two `ebm backup` commands started together would."""
    from ebm.catalog import Catalog
    from vtl.config import LibraryConfig
    from vtl.library import Library

    barcodes = [f"CONC{i}0L8" for i in range(1, 5)]
    lib = Library.create(root, LibraryConfig(drives=2, slots=8, mailslots=2))
    lib.create_cartridges(barcodes)
    lib.close()
    cat = Catalog.for_root(root)
    cat.create_pool("conc")
    cat.add_to_pool("conc", *barcodes)
    cat.close()


def ebm_backup_cmd(root: Path, dataset: str, src: Path) -> list[str]:
    """`ebm backup` as a user runs it (``python -m ebm`` from this checkout)."""
    return [sys.executable, "-m", "ebm", "--root", str(root), "backup", dataset,
            "--source", str(src), "--pool", "conc"]


def wait_all(procs: list[subprocess.Popen]) -> tuple[int, float]:
    """Wait for every process; (largest peak RSS in KiB, CPU seconds of them all)."""
    rss, cpu = 0, 0.0
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"error: {' '.join(proc.args)} failed (exit {proc.returncode})")
        rss, cpu = max(rss, usage.ru_maxrss), cpu + usage.ru_utime + usage.ru_stime
    return rss, cpu


def bench_concurrent(work: Path, trees: list[Path], rounds: int = 2) -> dict:
    """Full backups of two trees into one library: one after the other, and both at once,
    each run on a fresh library (so every run writes the same baselines). The modes
    alternate (sequential, concurrent, concurrent, sequential, ...) and each keeps its best
    wall time: on a shared machine the load drifts between runs. Wall, CPU, peak RSS."""
    out: dict = {}
    order = [("sequential", "concurrent")[(i + i // 2) % 2] for i in range(2 * rounds)]
    for n, mode in enumerate(order):
        root = work / f"lib-{mode}-{n}"
        concurrent_library(root)
        cmds = [ebm_backup_cmd(root, f"tree{i}", src) for i, src in enumerate(trees)]
        t0 = time.perf_counter()
        rss, cpu = 0, 0.0
        if mode == "sequential":
            for cmd in cmds:
                r, c = wait_all([subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL)])
                rss, cpu = max(rss, r), cpu + c
        else:
            rss, cpu = wait_all([subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL)
                                 for cmd in cmds])
        wall = time.perf_counter() - t0
        out.setdefault(f"{mode}_runs_s", []).append(wall)
        if wall <= min(out[f"{mode}_runs_s"]):
            out[f"{mode}_s"], out[f"{mode}_cpu"], out[f"{mode}_rss_kb"] = wall, cpu, rss
        shutil.rmtree(root)
    out["ratio"] = out["concurrent_s"] / out["sequential_s"]
    return out


def report_concurrent(c: dict) -> None:
    print("\ntwo EBM full backups on two drives of one library (`ebm backup`, two datasets):")
    for mode in ("sequential", "concurrent"):
        runs = ", ".join(f"{t:.1f}" for t in c[f"{mode}_runs_s"])
        print(f"  {mode:11} {c[f'{mode}_s']:8.2f} s wall (best of {runs})  "
              f"{c[f'{mode}_cpu']:8.2f} s CPU  peak RSS {c[f'{mode}_rss_kb'] / 1024:.0f} MB")
    print(f"  concurrent / sequential: {c['ratio']:.2f} (goal <= 0.70)")


def bench_restic(work: Path, src: Path, change, probe: str) -> dict:
    repo = work / "restic-repo"
    env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(repo),
           "RESTIC_CACHE_DIR": str(work / "restic-cache")}
    run(["restic", "init", "-q"], env=env)
    out: dict = {}
    out["full_s"], out["full_cpu"], _ = cpu_timed(
        lambda: run(["restic", "backup", "-q", "."], env=env, cwd=src), child_cpu)
    out["noop_incr_s"], out["noop_incr_cpu"], _ = cpu_timed(
        lambda: run(["restic", "backup", "-q", "."], env=env, cwd=src), child_cpu)
    out["stored_bytes"] = du(repo)
    if BACKUP_ONLY["on"]:
        return out
    change()
    out["incr_s"], out["incr_cpu"], _ = cpu_timed(
        lambda: run(["restic", "backup", "-q", "."], env=env, cwd=src), child_cpu)
    out["stored_bytes"] = du(repo)
    snaps = json.loads(run(["restic", "snapshots", "--json"], env=env).stdout)
    first = snaps[0]["short_id"]
    out["restore1_s"], _, _ = cpu_timed(lambda: run(
        ["restic", "restore", "-q", first, "--target", str(work / "restic-restore"),
         "--include", f"/{probe}"], env=env), child_cpu)
    out["restore_s"], out["restore_cpu"], _ = cpu_timed(lambda: run(
        ["restic", "restore", "-q", first, "--target", str(work / "restic-restore-full")], env=env),
        child_cpu)
    return out


def bench_tar(work: Path, src: Path, change, probe: str) -> dict:
    d = work / "tar"
    d.mkdir()
    out: dict = {}
    snar = d / "snar"
    out["full_s"], out["full_cpu"], _ = cpu_timed(lambda: run(
        f"tar -C {src} --listed-incremental={snar} -cf - . | zstd -q -T0 -1 -o {d}/full.tar.zst"),
        child_cpu)
    shutil.copy(snar, d / "snar1")
    out["noop_incr_s"], out["noop_incr_cpu"], _ = cpu_timed(lambda: run(
        f"tar -C {src} --listed-incremental={d}/snar1 -cf - . | zstd -q -T0 -1 -o {d}/noop.tar.zst"),
        child_cpu)
    out["stored_bytes"] = (d / "full.tar.zst").stat().st_size
    if BACKUP_ONLY["on"]:
        return out
    change()
    out["incr_s"], out["incr_cpu"], _ = cpu_timed(lambda: run(
        f"tar -C {src} --listed-incremental={snar} -cf - . | zstd -q -T0 -1 -o {d}/incr.tar.zst"),
        child_cpu)
    out["stored_bytes"] = (d / "full.tar.zst").stat().st_size + (d / "incr.tar.zst").stat().st_size
    (d / "restore").mkdir()
    out["restore1_s"], _, _ = cpu_timed(lambda: run(
        f"zstd -dc {d}/full.tar.zst | tar -C {d}/restore -xf - ./{probe}"), child_cpu)
    (d / "restore-full").mkdir()
    out["restore_s"], out["restore_cpu"], _ = cpu_timed(lambda: run(
        f"zstd -dc {d}/full.tar.zst | tar -C {d}/restore-full -xf -"), child_cpu)
    return out


def child_main(argv: list[str]) -> None:
    """``--child WORK SRC PROBE PATHS_FILE``: the EBM phases, result as one JSON line."""
    work, src, probe, paths_file = Path(argv[0]), Path(argv[1]), argv[2], Path(argv[3])
    BACKUP_ONLY["on"] = "--backup-only" in argv[4:]

    def change() -> list[str]:
        return change_one_percent(src, paths_file.read_text().splitlines())

    print(json.dumps(bench_ebm(work, src, change, probe)))


def tool_run(tool: str, work: Path, src: Path, paths: list[str], probe: str) -> dict:
    """One tool's phases on its own copy of the tree, with its peak RSS."""
    if tool == "ebm":
        paths_file = work / "paths.txt"
        paths_file.write_text("\n".join(paths))
        return run_ebm_child(work, src, probe, paths_file)
    PEAK_RSS["kb"] = 0
    fn = {"restic": bench_restic, "tar": bench_tar}[tool]
    out = fn(work, src, lambda: change_one_percent(src, paths), probe)
    out["peak_rss_kb"] = PEAK_RSS["kb"]
    return out


def report(results: dict[str, dict], tools: list[str], total: int, nfiles: int) -> None:
    print(f"tree: {total / 1e6:.0f} MB, {nfiles} files; 1% = {max(1, nfiles // 100)} files changed")
    print(f"{'':24}" + "".join(f"{t:>14}" for t in tools))
    rows = [("full backup (s)", "full_s"), ("  CPU user+sys (s)", "full_cpu"),
            ("1% incremental (s)", "incr_s"), ("no-change incr (s)", "noop_incr_s"),
            ("single-file restore (s)", "restore1_s"), ("full restore (s)", "restore_s"),
            ("  CPU user+sys (s)", "restore_cpu")]
    for label, key in rows:
        if all(key in results[t] for t in tools):
            print(f"{label:24}" + "".join(f"{results[t][key]:>14.2f}" for t in tools))
    print(f"{'stored (MB)':24}" + "".join(f"{results[t]['stored_bytes'] / 1e6:>14.1f}" for t in tools))
    print(f"{'peak RSS (MB)':24}" + "".join(f"{results[t]['peak_rss_kb'] / 1024:>14.0f}" for t in tools))
    if "ebm" not in results:
        return
    e = results["ebm"]
    print(f"\nEBM full throughput: {total / e['full_s'] / 1e6:.0f} MB/s, "
          f"{nfiles / e['full_s']:.0f} files/s; peak RSS during the full backup "
          f"{e['full_rss_kb'] / 1024:.0f} MB"
          + (f"; single-file restore read {e['restore1_blocks']} of {e['total_blocks']} tape blocks"
             if "restore1_blocks" in e else ""))
    for other in ("restic", "tar"):
        if other in results:
            o = results[other]
            pairs = [("full", "full_s"), ("full CPU", "full_cpu"), ("incremental", "incr_s"),
                     ("no-change", "noop_incr_s"), ("single-file restore", "restore1_s"),
                     ("full restore", "restore_s"), ("full restore CPU", "restore_cpu")]
            parts = [f"{label} {e[k] / o[k]:.2f}" for label, k in pairs if k in e and k in o and o[k]]
            print(f"EBM / {other}: " + ", ".join(parts)
                  + f"; peak RSS {e['peak_rss_kb'] / max(1, o['peak_rss_kb']):.2f} (<1: EBM better)")


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default=None, help="total tree size (default 500M; --small: files x 100 B)")
    ap.add_argument("--files", type=int, default=None, help="number of files (default 20000; --small: 200000)")
    ap.add_argument("--dirs", type=int, default=None,
                    help="directories holding the files (default: files/100, 7 subdirs each; --small: files/500)")
    ap.add_argument("--small", action="store_true",
                    help="many small files: 200,000 of ~100 bytes in 400 directories")
    ap.add_argument("--tmp", default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--only", default="ebm,restic,tar", help="which tools to run")
    ap.add_argument("--backup-only", action="store_true",
                    help="full backup and no-change incremental only (RSS at millions of files)")
    ap.add_argument("--concurrent", action="store_true",
                    help="also: two EBM full backups of two such trees on two drives, one "
                         "after the other and at once (--only '' for this alone)")
    args = ap.parse_args()
    BACKUP_ONLY["on"] = args.backup_only
    nfiles = args.files or (200_000 if args.small else 20_000)
    total = parse_size(args.size) if args.size else (nfiles * 100 if args.small else parse_size("500M"))
    ndirs = args.dirs or (max(1, nfiles // 500) if args.small else None)
    if args.tmp:
        Path(args.tmp).mkdir(parents=True, exist_ok=True)  # the README's commands name new folders
    work = Path(tempfile.mkdtemp(prefix="ebm-bench-", dir=args.tmp))
    tools = [t for t in args.only.split(",") if t]
    settle_deletions()  # those of an earlier run too
    try:
        print(f"generating {total / 1e6:.0f} MB in {nfiles} files under {work} ...", flush=True)
        results: dict[str, dict] = {}
        for tool in tools:
            # a fresh identical tree per tool, so each sees the same full/changed states
            src = work / f"src-{tool}"
            t, paths = timed(lambda src=src: generate(src, total, nfiles, ndirs=ndirs))
            probe = paths[len(paths) // 2]
            print(f"  tree for {tool}: {t:.1f}s; running {tool} ...", flush=True)
            results[tool] = tool_run(tool, work, src, paths, probe)
            # Each tool's tree and restored copies stay until the end (the work directory
            # goes then): deleted here, they slowed the next tool's file creation for
            # minutes, sync or not (see settle_deletions).
        if args.concurrent:
            trees = [work / f"src-conc{i}" for i in range(2)]
            t, _ = timed(lambda: [generate(src, total, nfiles, seed=1 + 2 * i, ndirs=ndirs)
                                  for i, src in enumerate(trees)])
            print(f"  two trees for the concurrent backups: {t:.1f}s; running ...", flush=True)
            results["concurrent"] = bench_concurrent(work, trees)
            for src in trees:
                shutil.rmtree(src)
        print()
        if tools:
            report(results, tools, total, nfiles)
        if args.concurrent:
            report_concurrent(results["concurrent"])
        print(json.dumps(results))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
