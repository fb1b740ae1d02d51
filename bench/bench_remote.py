#!/usr/bin/env python3
"""EBM backup and restore over iSCSI (``ebm --library iscsi://...``) against in-process, same
tree, same run.

Two libraries made alike (2 drives, the same cartridges, one pool). In-process: the EBM
writes through the library API (``Ebm(root)``). Over iSCSI: ``vtl serve`` runs the second
library in its own process on 127.0.0.1 and the EBM drives it through its initiator
(``Ebm(catalog_dir, remote=RemoteSpec(...))``), with the catalog in another directory. Each
path: full backup, full restore; the ratio iSCSI / in-process is printed per row.

Usage::

    .venv/bin/python bench/bench_remote.py                    # 256 MB in 2,000 files
    .venv/bin/python bench/bench_remote.py --size 1G --files 5000 --digests
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_backup import generate, parse_size

IQN = "iqn.2026-01.org.vtl-ebm:vtl"  # a new library's default target name
BARCODES = ["BENCH1L8", "BENCH2L8"]


def make_library(root: Path) -> None:
    from vtl.config import LibraryConfig
    from vtl.library import Library

    lib = Library.create(root, LibraryConfig(drives=2, slots=8, mailslots=2))
    lib.create_cartridges(BARCODES)
    lib.close()


def serve(root: Path) -> tuple[subprocess.Popen, int]:
    vtl = str(Path(sys.executable).with_name("vtl"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([vtl, "--root", str(root), "serve", "--portal", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.strip() == "ready":
            return proc, port
    raise SystemExit("vtl serve did not start")


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def run_path(ebm, src: Path, out: Path) -> dict[str, float]:
    from ebm.controller import BackupRequest
    from ebm.manager import load_translator
    from ebm.restore import restore

    ebm.catalog.create_pool("bench")
    if ebm.remote is not None:
        ebm.library  # noqa: B018 - the changer's barcodes into the local catalog
    ebm.catalog.add_to_pool("bench", *BARCODES)
    backup_s, backup = timed(lambda: ebm.backup(BackupRequest(dataset="bench", source=src,
                                                              pool="bench")))
    restore_s, _ = timed(lambda: restore(ebm.catalog, ebm.library, load_translator, backup, out))
    return {"backup_s": backup_s, "restore_s": restore_s, "bytes": backup.size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="256M")
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--digests", action="store_true", help="CRC32C header and data digests")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    from ebm.manager import Ebm
    from ebm.remote.ebm_host import RemoteSpec

    work = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    proc = None
    try:
        src = work / "src"
        generate(src, parse_size(args.size), args.files)
        make_library(work / "local")
        make_library(work / "served")
        local = Ebm(work / "local")
        results = {"in-process": run_path(local, src, work / "out-local")}
        local.close()
        proc, port = serve(work / "served")
        spec = RemoteSpec.from_options(f"iscsi://127.0.0.1:{port}/{IQN}", digests=args.digests)
        remote = Ebm(work / "catalog", remote=spec)
        results["iscsi"] = run_path(remote, src, work / "out-remote")
        remote.close()
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    mb = results["in-process"]["bytes"] / 1e6
    print(f"tree: {args.size} in {args.files} files ({mb:.0f} MB of pax stream); "
          f"digests {'on' if args.digests else 'off'}")
    print(f"{'':10} {'in-process':>12} {'iSCSI':>12} {'iSCSI/in-process':>18}")
    for row in ("backup_s", "restore_s"):
        a, b = results["in-process"][row], results["iscsi"][row]
        print(f"{row:10} {a:10.2f} s {b:10.2f} s {b / a:17.2f}x   "
              f"({mb / a:.0f} vs {mb / b:.0f} MB/s)")


if __name__ == "__main__":
    main()
