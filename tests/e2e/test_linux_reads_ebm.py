"""A real client reads an EBM backup: Linux st over iSCSI (`vtl serve`), mt, dd and GNU tar.

The issue's promise: an unencrypted backup is plain pax on tape, so years later, without the
EBM, `mt fsf 1; dd if=/dev/nst0 bs=256k | tar -x` restores it. The EBM writes a baseline and
an incremental onto one cartridge; the Linux guest loads it with mtx, reads the plain-text
header, lists and extracts both data tape files with dd | tar, and the sha256s must match.
Uses the e2e helper's guest harness (tests/e2e), unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import pytest
from ebm_helpers import run_cli, write_tree

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(importlib.util.find_spec("vtl.cli.serve") is None,
                       reason="`vtl serve` has not landed"),
]

BARCODE = "EBM001L8"

SCRIPT = r"""
export CHSG=/dev/e2e/0-sg
export TAPE=/dev/e2e/1-nst
export E2E_STEP_TIMEOUT=120
step load 'mtx -f $CHSG load 1 0 && i=0; until mt -f $TAPE status 2>&1 | grep -q ONLINE || [ $i -ge 30 ]; do i=$((i+1)); sleep 1; done; mt -f $TAPE status'
step header 'mt -f $TAPE rewind && dd if=$TAPE bs=262144 count=1 2>/dev/null | head -c 1500'
step list 'mt -f $TAPE rewind && mt -f $TAPE fsf 1 && dd if=$TAPE bs=262144 2>/dev/null | tar -tvf -'
step extract 'mkdir -p /tmp/x && cd /tmp/x && mt -f $TAPE rewind && mt -f $TAPE fsf 1 && dd if=$TAPE bs=262144 2>/dev/null | tar -xf - && find . -type f | sort | xargs sha256sum'
step incr 'mt -f $TAPE rewind && mt -f $TAPE fsf 4 && dd if=$TAPE bs=262144 2>/dev/null | tar -tvf -'
"""


def test_gnu_tar_on_linux_st_reads_ebm_backups(guest, tmp_path: Path) -> None:
    from e2e.qemu import boot
    from e2e.targets import start_vtl, stop, vtl

    root = tmp_path / "lib"
    vtl(root, "init")
    vtl(root, "cartridge", "create", BARCODE, "--slot", "slot:1")
    assert run_cli(root, "pool", "create", "p").returncode == 0
    assert run_cli(root, "pool", "add", "p", BARCODE).returncode == 0
    src = tmp_path / "src"
    write_tree(src, {f"docs/f{i}.bin": os.urandom(150_000 + i * 1000) for i in range(6)}
               | {"readme.txt": b"hello from the EBM\n"})
    r = run_cli(root, "backup", "home", "--source", str(src), "--pool", "p")
    assert r.returncode == 0, r.stderr
    (src / "later.txt").write_bytes(b"added by the incremental\n")
    r = run_cli(root, "backup", "home")
    assert r.returncode == 0, r.stderr

    srv = start_vtl(root, tmp_path)
    try:
        run = boot(guest, SCRIPT, srv.guest_luns(), timeout=420)
    finally:
        stop(srv.proc, timeout=30)
    log = run.describe()

    def ok(name: str) -> str:
        s = run[name]
        assert s.rc == 0, f"guest step {name!r} exited {s.rc}:\n{s.output}\n{log}"
        return s.output

    assert run.done, log
    ok("load")
    assert "EBM BACKUP HEADER" in ok("header") and "home" in ok("header"), log
    listing = ok("list")
    assert "docs/f5.bin" in listing and "readme.txt" in listing, log
    sums = {}
    for line in ok("extract").splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].removeprefix("./")] = parts[0]
    want = {p.relative_to(src).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in src.rglob("*") if p.is_file() and p.name != "later.txt"}
    assert sums == want, log
    assert "later.txt" in ok("incr"), log  # the incremental is the next backup's data file
