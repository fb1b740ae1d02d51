"""The library through the kernel's LIO target, proved with Debian's kernel under qemu.

The guest chroots into this machine's root (tests/e2e/hostroot.py), loads configfs,
target_core_mod, target_core_user and tcm_loop, starts ``vtl lio handler`` and runs ``vtl lio
export --fabric loopback``: tcm_loop makes the exported LUNs local SCSI devices, so the
guest's own ch, st and sg drivers (with the real mtx, mt-st, GNU tar and sg3_utils) drive
the changer and the drives through LIO and the TCMU ring. Then, in the same boot: a second
export changes nothing; the handler is SIGKILLed while dd streams to a drive after the tar
files' filemarks, and restarted (the drive answers again, every tar file reads back
identical); malformed CDBs through the ring (sg_raw) get CHECK CONDITION with the right
sense; a cartridge written through LIO reads back bit-identical through ``vtl serve`` (the
project's initiator, tests/e2e/tape_io.py) and the reverse; the kernel's iSCSI target
answers libiscsi's iscsi-ls and iscsi-inq with CHAP (refused without the secret), then,
from the host through a forwarded port, with ACLs and mutual CHAP (refused without the
secret, with a wrong target secret, for an initiator not in the ACLs; an ACL mapping LUNs
0-1 shows only those); rtslib's saveconfig/restore (what ``targetcli saveconfig`` and
``target.service`` do) brings the devices back with the running handler re-attaching, and
unexport leaves no configfs debris.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ebm.remote.initiator import Chap, Initiator
from ebm.remote.scsi_client import ScsiDevice

from .checks import TAR_ROUNDTRIP, check_tar_roundtrip, mt_status, mtx_status
from .hostroot import boot_hostroot, build_hostroot_guest
from .qemu import qemu_available
from .targets import E2E_STORE, free_port

pytestmark = pytest.mark.e2e

VTL = Path(sys.executable).with_name("vtl")
TAPE_IO = Path(__file__).with_name("tape_io.py")
CONFIGFS = "/sys/kernel/config/target"
IQN = "iqn.2026-01.org.vtl-ebm:vtl"
HOST_A = "iqn.2026-12.org.vtl-ebm:host-a"  # ACL with every LUN
HOST_B = "iqn.2026-12.org.vtl-ebm:host-b"  # ACL without LUN 2
STRANGER = "iqn.2026-12.org.vtl-ebm:stranger"
CHAP = ("vtluser", "lio-chap-secret-1")
MUTUAL = ("vtltarget", "lio-target-secret-2")

SCRIPT = r"""
V="VTL --root /tmp/lib"
CFG=CONFIGFS
IQN=IQN_NAME
start_handler() { setsid $V lio handler >>/tmp/handler.log 2>&1 </dev/null & echo $! >/tmp/handler.pid; }
cat >/tmp/wait-ready <<'EOF'
for i in $(seq 120); do [ $(grep -c ready /tmp/handler.log) -ge $1 ] && exit 0; sleep 1; done; exit 1
EOF
step init "$V init STORE_OPT--drives 2 --slots 6 --mailslots 1 >/dev/null && $V cartridge create A00001L8-A00003L8 --capacity 64MiB >/dev/null && echo ok"
start_handler
step export "sh /tmp/wait-ready 1; $V lio export --fabric loopback && $V lio status"
step devices "for i in \$(seq 120); do [ -e /dev/sch0 ] && [ -e /dev/nst1 ] && break; sleep 1; done; for d in /sys/bus/scsi/devices/*:*:*:*; do echo \$(basename \$d) type=\$(cat \$d/type) \$(cat \$d/model); done"
step again "$V lio export --fabric loopback && ls $CFG/loopback $CFG/core"
step timeouts "cat $CFG/core/user_*/*/attrib/cmd_time_out"
step inquiry "sg_inq /dev/sch0 && sg_inq /dev/nst0"
step mtx_load "mtx -f /dev/sch0 status && mtx -f /dev/sch0 load 1 0 && mtx -f /dev/sch0 status"
TAPE=/dev/$(basename $(ls -d /sys/bus/scsi/devices/*:1/scsi_tape/nst[0-9] | head -1))
TAPE2=/dev/$(basename $(ls -d /sys/bus/scsi/devices/*:2/scsi_tape/nst[0-9] | head -1))
SG0=/dev/$(basename $(ls -d /sys/bus/scsi/devices/*:0/scsi_generic/sg[0-9]* | head -1))
SG1=/dev/$(basename $(ls -d /sys/bus/scsi/devices/*:1/scsi_generic/sg[0-9]* | head -1))
export TAPE
echo "@@T status0 $(cut -d' ' -f1 /proc/uptime)"
step status0 "echo tape \$TAPE; mt -f \$TAPE status"
""" + TAR_ROUNDTRIP + r"""
# the same cartridges through LIO and through vtl serve, both ways: A00002L8 written here
step lio_write "head -c 1048576 /dev/urandom >/tmp/x0 && head -c 512000 /dev/urandom >/tmp/x1 && mtx -f /dev/sch0 load 2 1 && mt -f $TAPE2 rewind && dd if=/tmp/x0 of=$TAPE2 bs=64k 2>/dev/null && dd if=/tmp/x1 of=$TAPE2 bs=10k 2>/dev/null && mt -f $TAPE2 rewind && mtx -f /dev/sch0 unload 2 1 && sha256sum /tmp/x0 /tmp/x1"
# malformed CDBs through the ring (sg_raw prints the sense); the handler keeps serving
head -c 4096 /dev/zero >/tmp/zeros
cat >/tmp/malformed.sh <<EOF
raw() { echo "== \$1"; shift; sg_raw "\$@" 2>&1; echo "rc=\$?"; }
raw bad_opcode $SG1 02 00 00 00 00 00
raw bad_field -r 255 $SG1 12 00 83 00 ff 00
raw bad_space $SG1 11 07 00 00 01 00
raw short_inquiry -r 4 $SG1 12 00 00 00 04 00
raw short_mode_sense -r 2 $SG1 1a 00 3f 00 02 00
raw short_request_sense -r 3 $SG1 03 00 00 00 03 00
raw short_element_status -r 8 $SG0 b8 10 00 00 ff ff 00 00 00 08 00 00
raw write_fixed_in_variable -s 1024 -i /tmp/zeros $SG1 0a 01 00 00 02 00
raw write_short_data -s 512 -i /tmp/zeros $SG1 0a 00 00 08 00 00
raw write_too_long -s 512 -i /tmp/zeros $SG1 0a 00 ff ff ff 00
echo "== after"; sg_inq $SG1 | grep -i product; mt -f $TAPE status | grep -i 'file number'
EOF
echo "@@T malformed $(cut -d' ' -f1 /proc/uptime)"
step malformed "sh /tmp/malformed.sh"
# SIGKILL mid-stream: dd appends to drive 0 after the tar files' filemarks and the handler
# dies under it one second in (a quiet machine's guest writes the 44 MiB in about 2.6 s); while it is down (dd waits in the ring), vtl serve reads A00002L8 and
# writes A00003L8 on drive 1; then the handler is back and every tar file reads back
echo "@@T kill $(cut -d' ' -f1 /proc/uptime)"
step kill "mt -f \$TAPE eod && (dd if=/dev/urandom of=\$TAPE bs=64k count=700 iflag=fullblock 2>/tmp/dd.err; echo \$? >/tmp/dd.rc) & sleep 1; [ -e /tmp/dd.rc ] || echo writer streaming; kill -9 \$(cat /tmp/handler.pid)"
step serve "head -c 1048576 /dev/urandom >/tmp/y0 && head -c 512000 /dev/urandom >/tmp/y1 && setsid $V serve --portal 127.0.0.1:3261 >/tmp/serve.log 2>&1 </dev/null & echo \$! >/tmp/serve.pid; for i in \$(seq 120); do iscsi-ls iscsi://127.0.0.1:3261 >/dev/null 2>&1 && break; sleep 1; done; PY TAPE_IO iscsi:127.0.0.1:3261/$IQN load A00002L8 1 + read 1 2 + unload 1 + load A00003L8 1 + write 1 65536:/tmp/y0 10240:/tmp/y1 + unload 1; rc=\$?; kill \$(cat /tmp/serve.pid); for i in \$(seq 60); do kill -0 \$(cat /tmp/serve.pid) 2>/dev/null || break; sleep 1; done; exit \$rc"
step restart "setsid $V lio handler >>/tmp/handler.log 2>&1 </dev/null & echo \$! >/tmp/handler.pid; sh /tmp/wait-ready 2; for i in \$(seq 60); do [ -e /tmp/dd.rc ] && break; sleep 1; done; echo writer rc=\$(cat /tmp/dd.rc); cat /tmp/dd.err; mt -f \$TAPE status || mt -f \$TAPE status; mt -f \$TAPE rewind && tar -tf \$TAPE -b 128 && mkdir -p again && for f in 0 1 2; do mt -f \$TAPE asf \$f && tar -xf \$TAPE -b 128 -C again || exit 1; done && cd again && sha256sum -c ../sums"
step unload "mtx -f /dev/sch0 status >/dev/null || true; mtx -f /dev/sch0 unload 1 0 && mtx -f /dev/sch0 status"
step lio_read "mtx -f /dev/sch0 load 3 1 && (mt -f $TAPE2 status >/dev/null || true) && mt -f $TAPE2 rewind && dd if=$TAPE2 of=/tmp/y0.back bs=1M 2>/dev/null && dd if=$TAPE2 of=/tmp/y1.back bs=1M 2>/dev/null && mt -f $TAPE2 rewind && mtx -f /dev/sch0 unload 3 1 && sha256sum /tmp/y0 /tmp/y0.back /tmp/y1 /tmp/y1.back"
echo "@@T iscsi $(cut -d' ' -f1 /proc/uptime)"
# the kernel's iSCSI target with ACLs and mutual CHAP; host-b's ACL loses LUN 2 (configfs,
# as targetcli does it); checked from the host (acl_checks) through the forwarded port
B=$CFG/iscsi/$IQN/tpgt_1/acls/HOST_B
step iscsi "echo lio-chap-secret-1 >/tmp/secret && echo lio-target-secret-2 >/tmp/msecret && chmod 600 /tmp/secret /tmp/msecret && $V lio export --portal 0.0.0.0:3260 --chap-user vtluser --chap-secret-file /tmp/secret --mutual-chap-user vtltarget --mutual-chap-secret-file /tmp/msecret --allow-initiator HOST_A --allow-initiator HOST_B && find $B/lun_2 -maxdepth 1 -type l -exec rm {} + && rmdir $B/lun_2 && ls $CFG/iscsi/$IQN/tpgt_1/acls/* && echo @@HOST acl@@ && python3 /tmp/host-wait.py"
echo "@@T saveconfig $(cut -d' ' -f1 /proc/uptime)"
step saveconfig "PY -c 'import rtslib; rtslib.RTSRoot().save_to_file(\"/tmp/saveconfig.json\")' && cat /tmp/saveconfig.json"
step restore "$V lio unexport >/dev/null && ! ls /dev/sch0 2>/dev/null && PY -c 'import rtslib; print(rtslib.RTSRoot().restore_from_file(\"/tmp/saveconfig.json\"))' && for i in \$(seq 120); do [ -e /dev/sch0 ] && [ -e /dev/nst1 ] && break; sleep 1; done; mtx -f /dev/sch0 status || mtx -f /dev/sch0 status"
step unexport "$V lio unexport && ls -A $CFG/core $CFG/loopback; $V lio status"
echo "@@T end $(cut -d' ' -f1 /proc/uptime)"
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


def _report_luns(port: int, initiator: str) -> list[int] | str:
    chap = Chap(CHAP[0], CHAP[1], MUTUAL[0], MUTUAL[1])
    try:
        with Initiator("127.0.0.1", port, IQN, initiator_name=initiator, chap_auth=chap,
                       timeout=60, reconnect_attempts=0) as session:
            return ScsiDevice(session, 0, "changer").report_luns()
    except Exception as e:  # any failure: shown in the assertion
        return f"{type(e).__name__}: {e}"


def acl_checks(port: int, results: dict[str, object]) -> None:
    """The host's initiators against the guest's kernel iSCSI target (ACLs, mutual CHAP)."""
    url = f"iscsi://{CHAP[0]}%{CHAP[1]}@127.0.0.1:{port}/{IQN}"
    mutual = f"?target_user={MUTUAL[0]}&target_password={MUTUAL[1]}"
    tries = {
        "a_lun0": (HOST_A, f"{url}/0{mutual}"),
        "a_mutual": (HOST_A, f"{url}/1{mutual}"),
        "a_wrong_secret": (HOST_A, f"iscsi://{CHAP[0]}%not-the-secret-4@127.0.0.1:{port}/{IQN}/1"),
        "a_no_secret": (HOST_A, f"iscsi://127.0.0.1:{port}/{IQN}/1"),
        "a_wrong_target_secret": (
            HOST_A, f"{url}/1?target_user={MUTUAL[0]}&target_password=not-the-target-3"),
        "stranger": (STRANGER, f"{url}/1{mutual}"),
        "b_lun1": (HOST_B, f"{url}/1{mutual}"),
        "b_lun2": (HOST_B, f"{url}/2{mutual}"),
    }
    commands = {name: ["iscsi-inq", "-i", initiator, target]
                for name, (initiator, target) in tries.items()}
    commands["discovery"] = ["iscsi-ls", "-i", HOST_A, url.rsplit("/", 1)[0]]
    for name, command in commands.items():
        began = time.monotonic()
        try:
            r = subprocess.run(command, capture_output=True,
                               text=True, timeout=30, stdin=subprocess.DEVNULL)
            results[name] = (r.returncode, r.stdout + r.stderr,
                             round(time.monotonic() - began, 1))
        except subprocess.TimeoutExpired:
            results[name] = (-1, "timed out", 30)
    results["luns_a"] = _report_luns(port, HOST_A)
    results["luns_b"] = _report_luns(port, HOST_B)


def _sha256sums(text: str) -> dict[str, str]:
    """path -> digest from sha256sum's lines in ``text``."""
    return {m.group(2): m.group(1) for m in re.finditer(r"^([0-9a-f]{64})  (\S+)$", text,
                                                        flags=re.M)}


def _sections(text: str) -> dict[str, str]:
    """``== name`` headed parts of a step's output."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^== (\S+)\n(.*?)(?=^== |\Z)", text,
                                                        flags=re.S | re.M)}


@pytest.mark.timeout(720)  # the boot's own bound (600 s) first: its log shows how far it got
def test_lio_tcm_loop_changer_and_drive(hostroot_guest):
    script = SCRIPT.replace("VTL", str(VTL)).replace("CONFIGFS", CONFIGFS).replace(
        "TAPE_IO", str(TAPE_IO)).replace("IQN_NAME", IQN).replace("HOST_A", HOST_A).replace(
        "HOST_B", HOST_B).replace("PY", sys.executable).replace(
        "STORE_OPT", "" if E2E_STORE == "plain" else f"--store {E2E_STORE} ")
    port = free_port()
    host: dict[str, object] = {}
    run = boot_hostroot(hostroot_guest, script, timeout=600, forwards={port: 3260},
                        host_actions={"acl": lambda: acl_checks(port, host)})
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
    sums = _sha256sums(run.ok("lio_write"))  # A00002L8 through LIO, drive 1
    bad = _sections(run.ok("malformed"))
    for name, sense in [("bad_opcode", "Invalid command operation code"),
                        ("bad_field", "Invalid field in cdb"),
                        ("bad_space", "Invalid field in cdb"),
                        ("write_fixed_in_variable", "Invalid field in cdb"),
                        ("write_short_data", "Parameter list length error"),
                        ("write_too_long", "Invalid field in cdb")]:
        assert "Illegal Request" in bad[name] and sense in bad[name], (name, run.describe())
    for name, got in [("short_inquiry", 4), ("short_mode_sense", 2),
                      ("short_request_sense", 3), ("short_element_status", 8)]:
        assert f"Received {got} bytes" in bad[name] and "rc=0" in bad[name], (
            name, run.describe())
    assert "ULT3580" in bad["after"] and "File number" in bad["after"], run.describe()
    assert "writer streaming" in run.ok("kill"), run.describe()
    # LIO -> vtl serve: the same bytes, the same block boundaries; then vtl serve writes
    served = run.ok("serve")
    read = re.findall(r"file (\d) blocks (\d+) sha256 (\w+) end FILEMARK", served)
    assert read == [("0", "16", sums["/tmp/x0"]), ("1", "50", sums["/tmp/x1"])], run.describe()
    restarted = run.ok("restart")  # SIGKILLed under a streaming dd: the tar files all intact
    assert restarted.count(": OK") == 9 and "a/f3" in restarted, run.describe()
    assert not mtx_status(run.ok("unload")).drives[0].full, run.describe()
    sums = _sha256sums(run.ok("lio_read"))  # vtl serve -> LIO
    assert sums["/tmp/y0"] == sums["/tmp/y0.back"], run.describe()
    assert sums["/tmp/y1"] == sums["/tmp/y1.back"], run.describe()
    iscsi = run.ok("iscsi")  # the kernel's iSCSI target, LUN 0 changer, 1..2 drives
    assert "iscsi/iqn.2026-01.org.vtl-ebm:vtl tpg 1: 3 LUNs, 0.0.0.0:3260" in iscsi, (
        run.describe())
    # iscsi-inq, not iscsi-ls -s: INQUIRY passes the UNIT ATTENTION (3F/0E, REPORTED LUNS
    # DATA HAS CHANGED) that LIO itself queues for a new initiator; iscsi-ls's TEST UNIT READY
    # stops at it.
    context = f"host-side results: {host}\n{run.describe()}"
    assert f"Target:{IQN} Portal:10.0.2.15:3260,1" in host["discovery"][1], context
    assert "Peripheral Device Type:MEDIA_CHANGER" in host["a_lun0"][1], context
    assert "Product:3573-TL" in host["a_lun0"][1], context
    for name in ("a_mutual", "b_lun1"):  # mutual CHAP: the target proved its secret
        rc, out, _ = host[name]
        assert rc == 0 and "Product:ULT3580-TD8" in out, (name, context)
    for name in ("a_no_secret", "a_wrong_secret", "a_wrong_target_secret", "stranger"):
        rc, out, _ = host[name]
        assert rc != 0 and "ULT3580" not in out, (name, context)
    assert "ULT3580" not in host["b_lun2"][1], context  # not mapped for host-b
    assert sorted(host["luns_a"]) == [0, 1, 2] and sorted(host["luns_b"]) == [0, 1], context
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
