"""The EBM on a host whose library is kernel-attached: `ebm --library /dev/sch..,/dev/nst..`.

Issue 17's second way in: the data mover drives the changer through ``/dev/sch*`` (SG_IO)
and the tape through Linux's st driver (``/dev/nst*``: read/write of one block each, the
MTIOC ioctls for positions), as on a host with a real library on SAS/FC. The full-userland
guest (tests/e2e/hostroot.py: Debian's kernel, this machine's root over 9p, the project's
own venv) gets the changer and a drive of `vtl serve` over iSCSI, and runs the project's
`ebm` there: a baseline and an incremental of a tree made in the guest, verify, a full and a
single-file restore compared with the source. Then, on the library's host, the cartridge
written through st is read back in-process (`ebm catalog rebuild` + restore) and its files
must have the sha256s the guest printed: the two paths write the same tape.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import pytest
from ebm_helpers import run_cli

from .one_drive import E2E_WITH_SERVE

pytestmark = E2E_WITH_SERVE

EBM = Path(sys.executable).with_name("ebm")
BARCODE = "KDV001L8"

SCRIPT = r"""
export E2E_STEP_TIMEOUT=240
CH=$(readlink -f /dev/e2e/0-sch); NST=$(readlink -f /dev/e2e/1-nst)
E="EBM --library $CH,$NST --catalog /tmp/cat"
export CH NST E
step devices 'echo "changer $CH drive $NST"; ls -l $CH $NST'
step tree 'mkdir -p /tmp/src/docs /tmp/src/bin && for i in 1 2 3 4 5 6; do head -c $((150000 + i * 7000)) /dev/urandom > /tmp/src/bin/f$i; done && seq 1 40000 > /tmp/src/docs/numbers.txt && echo hello > /tmp/src/readme.txt'
step pool '$E pool create p && $E pool add p BARCODE && $E pool list'
step backup '$E --json backup home --source /tmp/src --pool p'
step incr 'echo "added later" > /tmp/src/docs/later.txt && head -c 300000 /dev/urandom > /tmp/src/bin/f2 && $E --json backup home'
step verify '$E verify home'
step restore '$E restore home --to /tmp/out && diff -r /tmp/src /tmp/out && echo RESTORED-IDENTICAL'
step single '$E --json restore home --to /tmp/one --path bin/f2 && cmp /tmp/src/bin/f2 /tmp/one/bin/f2 && echo SINGLE-IDENTICAL'
step sums 'cd /tmp/src && find . -type f | sort | xargs sha256sum'
step eject 'mtx -f $CH status'
"""


def test_ebm_over_linux_st_and_ch(tmp_path: Path) -> None:
    from e2e.hostroot import boot_hostroot, build_hostroot_guest
    from e2e.qemu import qemu_available
    from e2e.targets import start_vtl, stop, vtl

    reason = qemu_available()
    if reason:
        pytest.skip(reason)
    if not EBM.exists():
        pytest.skip(f"no {EBM}: the guest runs the project's venv")
    guest = build_hostroot_guest()
    root = tmp_path / "lib"
    vtl(root, "init", "--drives", "1", "--slots", "4")
    vtl(root, "cartridge", "create", BARCODE, "--capacity", "64MiB")
    srv = start_vtl(root, tmp_path)
    try:
        script = SCRIPT.replace("EBM", str(EBM)).replace("BARCODE", BARCODE)
        run = boot_hostroot(guest, script, luns=srv.guest_luns(), timeout=600)
    finally:
        stop(srv.proc, timeout=30)
    log = run.describe()
    assert run.done, log
    for name in ("devices", "tree", "pool", "backup", "incr", "verify"):
        run.ok(name)
    assert "RESTORED-IDENTICAL" in run.ok("restore"), log
    assert "SINGLE-IDENTICAL" in run.ok("single"), log
    sums = dict(reversed(line.split()) for line in run.ok("sums").splitlines()
                if re.fullmatch(r"[0-9a-f]{64}  \S+", line.strip()))
    assert len(sums) == 9, log

    # the library's own host reads what went through st: rebuild, restore in-process
    for args in (["catalog", "rebuild"], ["restore", "home", "--to", str(tmp_path / "local")]):
        r = run_cli(root, *args)
        assert r.returncode == 0, r.stderr
    local = {f"./{p.relative_to(tmp_path / 'local')}": hashlib.sha256(p.read_bytes()).hexdigest()
             for p in (tmp_path / "local").rglob("*") if p.is_file()}
    assert local == sums
