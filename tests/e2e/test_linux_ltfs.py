"""IBM's LTFS formats a cartridge through Linux sg in the guest, against `vtl serve`.

`mkltfs` is the strictest client of an LTO drive (docs/ltfs.md): it checks the identity,
takes drive dumps, needs pages 0x10/0x01 and 0x0A/0xF0, log page 0x17, the IBM medium type,
partitions (MODE SELECT 0x11, FORMAT MEDIUM), LOCATE across partitions and attributes per
partition. It must end "Medium formatted successfully", with the cartridge in two partitions
holding LTFS's labels and indexes, and `ltfsck` must then find the volume consistent. LTFS is built from the tarball in ../shared/third_party
on first use (cached); the test skips where it cannot be built.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(importlib.util.find_spec("vtl.cli.serve") is None,
                       reason="`vtl serve` has not landed"),
]

BARCODE = "LTF001L8"

SCRIPT = r"""
export CHSG=/dev/e2e/0-sg
export TAPE=/dev/e2e/1-nst
export TAPESG=/dev/e2e/1-sg
export E2E_STEP_TIMEOUT=240
export PATH=$LTFS/bin:$PATH
step load 'mtx -f $CHSG load 1 0 && i=0; until mt -f $TAPE status 2>&1 | grep -q ONLINE || [ $i -ge 30 ]; do i=$((i+1)); sleep 1; done; mt -f $TAPE status'
step mkltfs 'mkltfs -d $(readlink -f $TAPESG) -s LTF001 -f 2>&1 | grep -v LTFS30252I'
step label 'mt -f $TAPE rewind && dd if=$TAPE bs=4096 count=1 2>/dev/null | head -c 80'
step ltfsck 'ltfsck $(readlink -f $TAPESG) 2>&1 | grep -v "LTFS30252I\|LTFS3023[45]I"'
"""


def test_mkltfs_formats_and_ltfsck_checks(tmp_path: Path) -> None:
    from e2e.guest import build_guest
    from e2e.ltfs_build import guest_with_ltfs, ltfs_prefix, why_not
    from e2e.qemu import Lun, boot, qemu_available
    from e2e.targets import start_vtl, stop, vtl

    reason = qemu_available() or why_not()
    if reason:
        pytest.skip(reason)
    prefix = ltfs_prefix()
    assert prefix is not None
    guest = guest_with_ltfs(build_guest(), prefix, tmp_path)
    root = tmp_path / "lib"
    vtl(root, "init")
    vtl(root, "cartridge", "create", BARCODE, "--slot", "slot:1")
    srv = start_vtl(root, tmp_path)
    try:
        changer = next(lu for lu in srv.luns if lu.type == "MEDIA_CHANGER")
        drive = next(lu for lu in srv.luns if lu.type == "SEQUENTIAL_ACCESS")
        luns = [Lun(srv.portal, changer.target, changer.lun),
                Lun(srv.portal, drive.target, drive.lun)]
        run = boot(guest, SCRIPT.replace("$LTFS", str(prefix)), luns, timeout=420,
                   memory_mb=1024)
    finally:
        stop(srv.proc, timeout=30)
    log = run.describe()

    def ok(name: str) -> str:
        s = run[name]
        assert s.rc == 0, f"guest step {name!r} exited {s.rc}:\n{s.output}\n{log}"
        return s.output

    assert run.done, log
    ok("load")
    out = ok("mkltfs")
    assert "Medium formatted successfully" in out, log
    assert "Creating data partition b on SCSI partition 1" in out, log
    assert ok("label").startswith("VOL1LTF001"), log
    assert "Volume is consistent" in ok("ltfsck"), log
    carts = root / "cartridges"
    assert (carts / f"{BARCODE}.vtape.p1").exists()  # the second partition
