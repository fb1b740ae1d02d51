"""IBM's LTFS formats a cartridge through Linux sg in the guest, against `vtl serve`.

`mkltfs` is the strictest client of an LTO drive (docs/ltfs.md): it checks the identity,
takes drive dumps, needs pages 0x10/0x01 and 0x0A/0xF0, log page 0x17, the IBM medium type,
partitions (MODE SELECT 0x11, FORMAT MEDIUM), LOCATE across partitions and attributes per
partition. It must end "Medium formatted successfully", with the cartridge in two partitions
holding LTFS's labels and indexes, and `ltfsck` must then find the volume consistent. LTFS is
built from the tarball in ../shared/third_party on first use (cached); the test skips where
it cannot be built.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .one_drive import E2E_WITH_SERVE, LOAD_SLOT_1, boot_one_drive

pytestmark = E2E_WITH_SERVE

BARCODE = "LTF001L8"

SCRIPT = LOAD_SLOT_1 + r"""
export PATH=$LTFS/bin:$PATH
step mkltfs 'mkltfs -d $(readlink -f $TAPESG) -s LTF001 -f 2>&1 | grep -v LTFS30252I'
step label 'mt -f $TAPE rewind && dd if=$TAPE bs=4096 count=1 2>/dev/null | head -c 80'
step ltfsck 'ltfsck $(readlink -f $TAPESG) 2>&1 | grep -v "LTFS30252I\|LTFS3023[45]I"'
"""


def test_mkltfs_formats_and_ltfsck_checks(tmp_path: Path) -> None:
    from e2e.guest import build_guest
    from e2e.ltfs_build import guest_with_ltfs, ltfs_prefix, why_not
    from e2e.qemu import qemu_available
    from e2e.targets import vtl

    reason = qemu_available() or why_not()
    if reason:
        pytest.skip(reason)
    prefix = ltfs_prefix()
    assert prefix is not None
    guest = guest_with_ltfs(build_guest(), prefix, tmp_path)
    root = tmp_path / "lib"
    vtl(root, "init")
    vtl(root, "cartridge", "create", BARCODE, "--slot", "slot:1")
    steps = boot_one_drive(guest, root, tmp_path, SCRIPT.replace("$LTFS", str(prefix)),
                           memory_mb=1024)
    out = steps.ok("mkltfs")
    assert "Medium formatted successfully" in out, steps.log
    assert "Creating data partition b on SCSI partition 1" in out, steps.log
    assert steps.ok("label").startswith("VOL1LTF001"), steps.log
    assert "Volume is consistent" in steps.ok("ltfsck"), steps.log
    assert (root / "cartridges" / f"{BARCODE}.vtape.p1").exists()  # the second partition
