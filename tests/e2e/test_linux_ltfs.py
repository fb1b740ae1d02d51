"""IBM's LTFS formats, mounts and checks a cartridge through Linux sg in the guest.

`mkltfs` is the strictest client of an LTO drive (docs/ltfs.md): it checks the identity,
takes drive dumps, needs pages 0x10/0x01 and 0x0A/0xF0, log page 0x17, the IBM medium type,
partitions (MODE SELECT 0x11, FORMAT MEDIUM), LOCATE across partitions and attributes per
partition. The issue's proof, against `vtl serve`: `mkltfs` formats ("Medium formatted
successfully", two partitions), `ltfs` mounts it, files copied in read back identical, it
unmounts, `ltfsck` finds the volume consistent, and a read-only remount shows the same files.
LTFS is built from the tarball in ../shared/third_party on first use (cached); the test skips
where it cannot be built.
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
step mount 'insmod /lib/modules/extra-fuse.ko; mkdir -p /mnt/ltfs && ltfs -o devname=$(readlink -f $TAPESG) /mnt/ltfs 2>&1 | tail -3; mount | grep /mnt/ltfs'
step copy_in 'head -c 3000000 /dev/urandom > /tmp/f1 && echo hello > /tmp/f2 && mkdir /mnt/ltfs/d && cp /tmp/f1 /tmp/f2 /mnt/ltfs/d/ && cd /mnt/ltfs/d && sha256sum f1 f2 && cd /tmp && sha256sum f1 f2'
step umount 'umount /mnt/ltfs; i=0; while pidof ltfs >/dev/null && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done; ! pidof ltfs'
step ltfsck 'ltfsck $(readlink -f $TAPESG) 2>&1 | grep -v "LTFS30252I\|LTFS3023[45]I"'
step remount_ro 'ltfs -o devname=$(readlink -f $TAPESG) -o ro /mnt/ltfs 2>&1 | tail -1; cd /mnt/ltfs/d && sha256sum f1 f2 && cd /tmp && umount /mnt/ltfs'
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
    assert "/mnt/ltfs type fuse" in steps.ok("mount"), steps.log
    sums = steps.ok("copy_in").split()
    assert len(sums) == 8 and sums[0:4] == sums[4:8], steps.log  # on LTFS == in /tmp
    steps.ok("umount")
    assert "Volume is consistent" in steps.ok("ltfsck"), steps.log
    assert steps.ok("remount_ro").split()[-4:] == sums[4:8], steps.log
    assert (root / "cartridges" / f"{BARCODE}.vtape.p1").exists()  # the second partition
