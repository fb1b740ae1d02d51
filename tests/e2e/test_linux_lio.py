"""The library through the kernel's LIO target, proved with Debian's kernel under qemu.

The guest chroots into this machine's root (tests/e2e/hostroot.py), loads configfs,
target_core_mod, target_core_user and tcm_loop, starts ``vtl lio handler`` and runs ``vtl lio
export --fabric loopback``: tcm_loop makes the exported LUNs local SCSI devices, so the
guest's own ch, st and sg drivers (with the real mtx, mt-st, GNU tar and sg3_utils) drive
the changer and the drives through LIO and the TCMU ring. Then: a second export changes
nothing, the handler is killed and restarted under a loaded drive (the tape still answers),
the same devices through the kernel's iSCSI target on 127.0.0.1 (libiscsi's iscsi-ls and
iscsi-inq with CHAP; refused without the secret), rtslib's saveconfig/restore (what
``targetcli saveconfig`` and ``target.service`` do) brings
the devices back with the running handler re-attaching, and unexport leaves no configfs
debris.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from .checks import TAR_ROUNDTRIP, check_tar_roundtrip, mt_status, mtx_status
from .hostroot import boot_hostroot, build_hostroot_guest
from .qemu import qemu_available

pytestmark = pytest.mark.e2e

VTL = Path(sys.executable).with_name("vtl")
CONFIGFS = "/sys/kernel/config/target"

SCRIPT = r"""
V="VTL --root /tmp/lib"
CFG=CONFIGFS
start_handler() { setsid $V lio handler >>/tmp/handler.log 2>&1 </dev/null & echo $! >/tmp/handler.pid; }
step init "$V init --drives 2 --slots 6 --mailslots 1 >/dev/null && $V cartridge create A00001L8-A00002L8 --capacity 64MiB >/dev/null && echo ok"
start_handler
step export "for i in \$(seq 120); do grep -q ready /tmp/handler.log && break; sleep 1; done; $V lio export --fabric loopback && $V lio status"
step devices "for i in \$(seq 120); do [ -e /dev/sch0 ] && [ -e /dev/nst1 ] && break; sleep 1; done; for d in /sys/bus/scsi/devices/*:*:*:*; do echo \$(basename \$d) type=\$(cat \$d/type) \$(cat \$d/model); done"
step again "$V lio export --fabric loopback && ls $CFG/loopback $CFG/core"
step timeouts "cat $CFG/core/user_*/*/attrib/cmd_time_out"
step inquiry "sg_inq /dev/sch0 && sg_inq /dev/nst0"
step mtx_load "mtx -f /dev/sch0 status && mtx -f /dev/sch0 load 1 0 && mtx -f /dev/sch0 status"
TAPE=/dev/$(basename $(ls -d /sys/bus/scsi/devices/*:1/scsi_tape/nst[0-9] | head -1))
export TAPE
step status0 "echo tape \$TAPE; mt -f \$TAPE status"
""" + TAR_ROUNDTRIP + r"""
step restart "kill -9 \$(cat /tmp/handler.pid); sleep 1; (setsid $V lio handler >>/tmp/handler.log 2>&1 </dev/null &); for i in \$(seq 120); do [ \$(grep -c ready /tmp/handler.log) -ge 2 ] && break; sleep 1; done; mt -f \$TAPE status || mt -f \$TAPE status; mt -f \$TAPE rewind && tar -tf \$TAPE -b 128"
step unload "mtx -f /dev/sch0 unload 1 0 && mtx -f /dev/sch0 status"
IQN=iqn.2026-01.org.vtl-ebm:vtl
step iscsi "ip link set lo up && echo lio-chap-secret-1 >/tmp/secret && $V lio export --portal 127.0.0.1:3260 --chap-user vtluser --chap-secret-file /tmp/secret && iscsi-ls iscsi://vtluser%lio-chap-secret-1@127.0.0.1 && iscsi-inq iscsi://vtluser%lio-chap-secret-1@127.0.0.1/$IQN/0 && iscsi-inq iscsi://vtluser%lio-chap-secret-1@127.0.0.1/$IQN/2"
step iscsi_nochap "iscsi-inq iscsi://127.0.0.1/$IQN/1; iscsi-inq iscsi://vtluser%wrong-secret-12@127.0.0.1/$IQN/1"
step saveconfig "PY -c 'import rtslib; rtslib.RTSRoot().save_to_file(\"/tmp/saveconfig.json\")' && cat /tmp/saveconfig.json"
step restore "$V lio unexport >/dev/null && ! ls /dev/sch0 2>/dev/null && PY -c 'import rtslib; print(rtslib.RTSRoot().restore_from_file(\"/tmp/saveconfig.json\"))' && for i in \$(seq 120); do [ -e /dev/sch0 ] && [ -e /dev/nst1 ] && break; sleep 1; done; mtx -f /dev/sch0 status || mtx -f /dev/sch0 status"
step unexport "$V lio unexport && ls -A $CFG/core $CFG/loopback; $V lio status"
step handler_log "cat /tmp/handler.log"
"""


@pytest.fixture(scope="module")
def hostroot_guest():
    reason = qemu_available()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("rtslib")
    if not VTL.exists():
        pytest.skip(f"no {VTL}: the guest runs the project's venv")
    return build_hostroot_guest()


def test_lio_tcm_loop_changer_and_drive(hostroot_guest):
    script = SCRIPT.replace("VTL", str(VTL)).replace("CONFIGFS", CONFIGFS).replace(
        "PY", sys.executable)
    run = boot_hostroot(hostroot_guest, script, timeout=420)
    assert run.done, f"guest did not finish\n{run.describe()}"
    run.ok("init")
    exported = run.ok("export").splitlines()
    assert "  backstores/user/vtl-drive1: LUN 2 drive1, cmd_time_out 3600 s" in exported, (
        run.describe())
    devices = sorted(run.ok("devices").split("\n"))
    assert [re.sub(r"^\S+:", "", d) for d in devices if d] == [
        "0 type=8 3573-TL", "1 type=1 ULT3580-TD8", "2 type=1 ULT3580-TD8"], run.describe()
    again = run.ok("again")  # the same objects, nothing added
    assert again.splitlines()[:5] == exported[:5], run.describe()
    assert re.findall(r"\buser_\d\b", again) == ["user_0", "user_1", "user_2"], run.describe()
    assert len(re.findall(r"naa\.\w+", again.split("target/loopback:")[1])) == 1, run.describe()
    assert run.ok("timeouts").split() == ["3600"] * 3, run.describe()
    inq = run.ok("inquiry")
    assert "3573-TL" in inq and "ULT3580-TD8" in inq, run.describe()
    loaded = mtx_status(run.ok("mtx_load"))
    assert loaded.drives[0].full and loaded.drives[0].tag == "A00001L8", run.describe()
    st = mt_status(run.ok("status0"))
    assert (st.file, st.block) == (0, 0) and "ONLINE" in st.flags, run.describe()
    check_tar_roundtrip(run)
    assert sorted(run.ok("restart").split()[-4:]) == ["a/", "a/f1", "a/f2", "a/f3"], run.describe()
    assert not mtx_status(run.ok("unload")).drives[0].full, run.describe()
    iscsi = run.ok("iscsi")  # the kernel's iSCSI target, LUN 0 changer, 1..2 drives, CHAP
    assert "iscsi/iqn.2026-01.org.vtl-ebm:vtl tpg 1: 3 LUNs, 127.0.0.1:3260" in iscsi, (
        run.describe())
    # iscsi-inq, not iscsi-ls -s: INQUIRY passes the UNIT ATTENTION (3F/0E, REPORTED LUNS
    # DATA HAS CHANGED) that LIO itself queues for a new initiator; iscsi-ls's TEST UNIT READY
    # stops at it.
    assert "Target:iqn.2026-01.org.vtl-ebm:vtl Portal:127.0.0.1:3260,1" in iscsi, run.describe()
    assert "Peripheral Device Type:MEDIA_CHANGER" in iscsi, run.describe()
    assert "Product:3573-TL" in iscsi and "Product:ULT3580-TD8" in iscsi, run.describe()
    refused = run["iscsi_nochap"].output
    assert "ULT3580" not in refused and refused.lower().count("fail") >= 2, run.describe()
    saved = json.loads(run.ok("saveconfig"))
    users = [so for so in saved["storage_objects"] if so["plugin"] == "user"]
    assert sorted(so["name"] for so in users) == ["vtl-changer", "vtl-drive0", "vtl-drive1"]
    assert {so["attributes"]["cmd_time_out"] for so in users} == {3600}, run.describe()
    restored = mtx_status(run.ok("restore"))  # targetcli restoreconfig's path: the handler
    assert restored.slots[1].tag == "A00001L8", run.describe()  # re-attached by itself
    gone = run.ok("unexport")
    listing = gone.split("library 'vtl' in LIO")[0].split("/sys/kernel/config/target/core:")[1]
    assert "user_" not in listing and "naa." not in listing, run.describe()
    assert gone.count(", absent") == 3, run.describe()
