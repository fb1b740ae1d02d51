"""Proves the e2e harness against a reference target: Debian's tgt with its SSC emulation.

If this test fails, the harness (qemu, the guest kernel, the initramfs, the tools) is broken;
if it passes and the `vtl serve` test fails, the fault is in our target or device models.
"""

from __future__ import annotations

import pytest

from .checks import TAR_ROUNDTRIP, check_tar_roundtrip, mt_status
from .qemu import Lun, boot

pytestmark = pytest.mark.e2e

SCRIPT = (
    r"""
export TAPE=/dev/e2e/0-nst
step status0 'mt -f $TAPE status'
step inquiry 'sg_inq /dev/e2e/0-sg'
step setblk 'mt -f $TAPE setblk 65536 && mt -f $TAPE status && mt -f $TAPE setblk 0 && mt -f $TAPE status'
"""
    + TAR_ROUNDTRIP
    + r"""
step dmesg 'dmesg | grep -E "st |st0|sg0" | tail -40'
"""
)


def test_tgt_ssc_tar_roundtrip(guest, tgt, tmp_path):
    tgt.add_tape(1, tmp_path / "tape1", "TGT001L8")
    run = boot(guest, SCRIPT, [Lun(tgt.portal, tgt.iqn, 1)], timeout=400)
    assert run.done, f"guest did not finish\n{run.describe()}"

    st = mt_status(run.ok("status0"))
    assert (st.file, st.block) == (0, 0), run.describe()
    assert {"BOT", "ONLINE"} <= st.flags, run.describe()

    inq = run.ok("inquiry")
    assert "Peripheral device type: tape" in inq and "VIRTUAL-TAPE" in inq, run.describe()

    sizes = [int(x) for x in __import__("re").findall(r"Tape block size (\d+)", run.ok("setblk"))]
    assert sizes == [65536, 0], run.describe()

    check_tar_roundtrip(run)
