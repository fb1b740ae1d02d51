"""`vtl serve` driven by the Linux kernel as the initiator: st, ch and sg with mt, mtx, tar.

One boot runs the whole story a backup admin would: inventory the changer, load a
cartridge, check the drive's status and settings, write a multi-file tar tape, position
with every mt verb and check the block numbers, read everything back bit-identical, unload,
load another cartridge into another drive (fixed-block mode: 64 KiB blocks, then GNU tar's
512-byte blocks read, positioned and overwritten inside runs), and reload the first one to
prove its data survived the unload. Each guest command is a separate step so a failure
names the command, its output and the serial log (dmesg included, with the sense data the
st driver logged).

The library here is a dedup one (issue 16: SSC sees no difference between the stores), unless
VTL_E2E_STORE names another: the rest of the suite runs on the plain store by default, and the
whole suite runs on dedup with VTL_E2E_STORE=dedup.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .checks import (
    TAR_ROUNDTRIP,
    MtxElement,
    check_tar_roundtrip,
    mode_page_bytes,
    mt_status,
    mt_tell,
    mtx_status,
)
from .qemu import Lun, boot
from .targets import VtlServer, serving_vtl, vtl

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("vtl.cli.serve") is None,
        reason="`vtl serve` (vtl/cli/serve.py) has not landed yet",
    ),
]

BARCODES = ("E2E001L8", "E2E002L8")
PROTECTED = "E2E003L8"  # slot 3, write-protected
SMALL = "E2E004L8"  # slot 4, 8 MiB native capacity: reaches end of medium quickly

SETUP = r"""
# LUNs attached in order: changer, drive 0, drive 1 (names made by the guest's /init).
export CH=/dev/e2e/0-sch
export CHSG=/dev/e2e/0-sg
export TAPE=/dev/e2e/1-nst
export TAPESG=/dev/e2e/1-sg
export TAPE1=/dev/e2e/2-nst
# Wait for a drive the way an admin script would: open it through st until it is ready.
# (Not with sg_turs on the sg node: that would consume the UNIT ATTENTION 28/00 that tells
# st a new tape is in, and st would then report an unknown position.)
export WAIT_READY='i=0; until mt -f $DEV status 2>&1 | grep -q ONLINE || [ $i -ge 30 ]; do i=$((i+1)); sleep 1; done'
# A step that opens an empty drive without O_NONBLOCK would wait for a tape (st's design):
# bound each step so one failure cannot eat the whole boot's time.
export E2E_STEP_TIMEOUT=120
"""

SCRIPT = (
    SETUP
    + r"""
step devices 'ls -l /dev/e2e/; for s in /sys/class/scsi_generic/*; do echo "$(basename $s) type=$(cat $s/device/type) $(cat $s/device/vendor) $(cat $s/device/model) $(cat $s/device/rev)"; done'
step inq_changer 'sg_inq $CHSG'
step inq_tape 'sg_inq $TAPESG && sg_inq -p 0x80 $TAPESG'
step mtx_status0 'mtx -f $CHSG status'
step mtx_sch0 'mtx -f $CH status'
step mtx_load 'mtx -f $CHSG load 1 0 && mtx -f $CHSG status'
step ready0 'DEV=$TAPE; eval "$WAIT_READY"; mt -f $TAPE status'
step mode_sense6 'sg_raw -r 12 $TAPESG 1a 00 00 00 0c 00'
step status_again 'mt -f $TAPE status'
step setblk 'mt -f $TAPE setblk 65536 && mt -f $TAPE status && mt -f $TAPE setblk 0 && mt -f $TAPE status'
step comp_on 'mt -f $TAPE compression 1 && sg_modes -p 0x0f $TAPESG'
step comp_off 'mt -f $TAPE compression 0 && sg_modes -p 0x0f $TAPESG'
step comp_on2 'mt -f $TAPE compression 1'
"""
    + TAR_ROUNDTRIP
    + r"""
step records 'for d in a b c; do echo "$d $(( $(tar -cf - -b 128 -C src $d | wc -c) / 65536 ))"; done'
step pos_rewind 'mt -f $TAPE rewind && mt -f $TAPE tell'
step pos_fsf2 'mt -f $TAPE fsf 2 && mt -f $TAPE tell && mt -f $TAPE status'
step pos_bsf1 'mt -f $TAPE bsf 1 && mt -f $TAPE tell'
step pos_eod 'mt -f $TAPE eod && mt -f $TAPE tell && mt -f $TAPE status'
step pos_seek 'NA=$(( $(tar -cf - -b 128 -C src a | wc -c) / 65536 )); mt -f $TAPE seek $((NA+1)) && mt -f $TAPE tell && tar -tf $TAPE -b 128'
step pos_fsr 'mt -f $TAPE rewind && mt -f $TAPE fsr 3 && mt -f $TAPE tell && mt -f $TAPE bsr 1 && mt -f $TAPE tell'
step read_big 'mt -f $TAPE rewind && dd if=$TAPE of=big bs=262144 count=1 && wc -c < big'
step read_small 'mt -f $TAPE rewind && dd if=$TAPE of=small bs=1024 count=1'
step append 'mt -f $TAPE eod && tar -cf $TAPE -b 128 -C src a && mt -f $TAPE rewind && mt -f $TAPE fsf 4 && tar -tf $TAPE -b 128'
step logs 'sg_logs $TAPESG; sg_logs -p 0x2e $TAPESG'
step mam 'sg_read_attr $TAPESG'
step unload 'mt -f $TAPE offline; mtx -f $CHSG unload 1 0 && mtx -f $CHSG status'
step load2 'mtx -f $CHSG load 2 1 && DEV=$TAPE1; eval "$WAIT_READY"; mt -f $TAPE1 status'
step fixed 'mt -f $TAPE1 setblk 65536 && dd if=src/c/f3 of=$TAPE1 bs=65536 count=4 && mt -f $TAPE1 tell && mt -f $TAPE1 rewind && dd if=$TAPE1 of=fx bs=65536 count=4 && dd if=src/c/f3 of=fy bs=65536 count=4 && cmp fx fy && mt -f $TAPE1 setblk 0 && echo FIXED-OK'
step fixed512 'mt -f $TAPE1 rewind && mt -f $TAPE1 setblk 512 && tar -cf $TAPE1 -b 20 -C src c && tar -cf c512.tar -b 20 -C src c && echo "SIZE=$(wc -c < c512.tar)" && mt -f $TAPE1 tell && mt -f $TAPE1 rewind && rm -rf o512 && mkdir o512 && tar -xf $TAPE1 -b 20 -C o512 && (cd o512 && grep " c/" ../sums | sha256sum -c) && mt -f $TAPE1 rewind && mt -f $TAPE1 fsr 7 && mt -f $TAPE1 tell && dd if=$TAPE1 of=r7 bs=512 count=3 && dd if=c512.tar of=e7 bs=512 skip=7 count=3 && cmp r7 e7 && mt -f $TAPE1 tell && mt -f $TAPE1 bsr 2 && mt -f $TAPE1 tell && echo FIXED512-READ-OK'
step fixed512_cut 'mt -f $TAPE1 seek 25 && dd if=/dev/urandom of=p4 bs=512 count=4 && dd if=p4 of=$TAPE1 bs=512 count=4 && mt -f $TAPE1 tell && mt -f $TAPE1 rewind && dd if=$TAPE1 of=all bs=512 count=29 && dd if=c512.tar of=h25 bs=512 count=25 && cat h25 p4 | cmp - all && mt -f $TAPE1 eod && mt -f $TAPE1 tell && mt -f $TAPE1 setblk 0 && echo FIXED512-CUT-OK'
step unload2 'mt -f $TAPE1 offline; mtx -f $CHSG unload 2 1 && mtx -f $CHSG transfer 2 10 && mtx -f $CHSG status'
step mailslot 'mtx -f $CHSG transfer 10 41 && mtx -f $CHSG status'
step move_empty 'mtx -f $CHSG transfer 20 21'
step move_full 'mtx -f $CHSG transfer 41 1'
step reload 'mtx -f $CHSG load 1 0 && DEV=$TAPE; eval "$WAIT_READY"; rm -rf out2 && mkdir out2 && mt -f $TAPE rewind && mt -f $TAPE fsf 1 && tar -xf $TAPE -b 128 -C out2 && cd out2 && grep " b/" ../sums | sha256sum -c'
step lock 'mt -f $TAPE lock; mtx -f $CHSG unload 1 0; echo "unload-rc=$?"; mt -f $TAPE unlock'
step tapeinfo 'tapeinfo -f $TAPESG'
step attr_barcode 'sg_read_attr -f 0x806 $TAPESG'
step erase 'mt -f $TAPE rewind && mt -f $TAPE erase && sg_raw -r 64k $TAPESG 08 00 01 00 00 00; echo "read-rc=$?"'
step wprot 'mtx -f $CHSG load 3 1 && DEV=$TAPE1; eval "$WAIT_READY"; mt -f $TAPE1 status; tar -cf $TAPE1 -C src a; echo "tar-rc=$?"; mtx -f $CHSG unload 3 1'
step eom 'mtx -f $CHSG load 4 1 && DEV=$TAPE1; eval "$WAIT_READY"; dd if=/dev/urandom of=$TAPE1 bs=65536 count=400; echo "write-rc=$?"; mt -f $TAPE1 rewind && dd if=$TAPE1 of=/dev/null bs=65536; echo "read-rc=$?"; mtx -f $CHSG unload 4 1'
step host_load 'echo "@@HOST load@@"; i=0; until mtx -f $CHSG status 2>/dev/null | grep -q "Data Transfer Element 1:Full"; do i=$((i+1)); [ $i -ge 90 ] && exit 1; sleep 1; done; mtx -f $CHSG status'
step host_load_st 'mt -f $TAPE1 status'
step host_unload 'mtx -f $CHSG unload 3 1 && mtx -f $CHSG status'
step final_unload 'mt -f $TAPE offline; mtx -f $CHSG unload 1 0 && mtx -f $CHSG status'
step dmesg 'dmesg | grep -vE "^\[ *[0-9.]+\] (ACPI|PCI|pci|clocksource|x86|evm|Freeing|Key type|tsc|Last level|Run /init|  )"| tail -80'
"""
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[VtlServer]:
    root = tmp_path / "lib"
    vtl(root, "init", "--store", os.environ.get("VTL_E2E_STORE", "dedup"))
    for slot, barcode in enumerate(BARCODES, start=1):
        vtl(root, "cartridge", "create", barcode, "--slot", f"slot:{slot}")
    vtl(root, "cartridge", "create", PROTECTED, "--slot", "slot:3")
    vtl(root, "cartridge", "protect", PROTECTED)
    vtl(root, "cartridge", "create", SMALL, "--slot", "slot:4", "--capacity", "8MiB")
    with serving_vtl(root, tmp_path) as srv:
        yield srv


def test_linux_st_ch_against_vtl_serve(guest, server):
    changers = [lu for lu in server.luns if lu.type == "MEDIA_CHANGER"]
    drives = [lu for lu in server.luns if lu.type == "SEQUENTIAL_ACCESS"]
    assert len(changers) == 1 and len(drives) >= 2, f"iscsi-ls found {server.luns}"
    # Drive 1's session negotiates CRC32C header digests (qemu's libiscsi initiator).
    luns = [
        Lun(server.portal, changers[0].target, changers[0].lun),
        Lun(server.portal, drives[0].target, drives[0].lun),
        Lun(server.portal, drives[1].target, drives[1].lun, "header-digest=crc32c"),
    ]
    run = boot(
        guest, SCRIPT, luns, timeout=420,
        host_actions={"load": lambda: vtl(server.root, "load", PROTECTED, "1")},
    )  # fmt: skip
    run.context = "--- vtl serve log ---\n" + server.log_text()
    log = run.describe()
    ok = run.ok

    assert run.done, f"guest did not finish\n{log}"

    # Identity: the emulated IBM library and drives, as INQUIRY shows them to Linux.
    devices = ok("devices")
    assert all(f"{n}-sg" in devices for n in range(3)), log
    assert "0-sch" in devices and "1-nst" in devices and "2-nst" in devices, log
    inq = ok("inq_changer")
    assert "medium changer" in inq and "IBM" in inq and "3573-TL" in inq, log
    inq = ok("inq_tape")
    assert "Peripheral device type: tape" in inq and "ULT3580-TD8" in inq, log
    assert "Unit serial number" in inq, log

    # Inventory with barcodes; loading moves the cartridge into the drive.
    st = mtx_status(ok("mtx_status0"))
    assert len(st.drives) >= 2 and not any(d.full for d in st.drives.values()), log
    assert st.slots[1] == MtxElement(True, BARCODES[0]), log
    assert st.slots[2].full and st.slots[2].tag == BARCODES[1], log
    assert st.import_export, f"no import/export elements\n{log}"
    via_ch = mtx_status(ok("mtx_sch0"))  # the same inventory through the ch driver
    assert (via_ch.drives, via_ch.slots) == (st.drives, st.slots), log
    st = mtx_status(ok("mtx_load"))
    assert st.drives[0].full and st.drives[0].tag == BARCODES[0], log
    assert st.drives[0].source == 1 and not st.slots[1].full, log

    # The drive: online at BOT, variable block mode, LTO-8 density.
    ms = mt_status(ok("ready0"))
    assert {"BOT", "ONLINE"} <= ms.flags and (ms.file, ms.block) == (0, 0), log
    assert ms.block_size == 0 and ms.density == 0x5E, log
    mt_status(ok("status_again"))
    sizes = [int(x) for x in re.findall(r"Tape block size (\d+)", ok("setblk"))]
    assert sizes == [65536, 0], log
    dce_on = mode_page_bytes(ok("comp_on"), "compression")
    dce_off = mode_page_bytes(ok("comp_off"), "compression")
    assert dce_on[0] & 0x3F == 0x0F and dce_on[2] & 0x80, log
    assert not dce_off[2] & 0x80, log
    ok("comp_on2")

    check_tar_roundtrip(run)

    # Positioning: block numbers count data blocks and filemarks (logical objects).
    recs = dict(line.split() for line in ok("records").splitlines() if line.strip())
    na, nb, nc = (int(recs[k]) for k in "abc")
    assert mt_tell(ok("pos_rewind")) == [0], log
    out = ok("pos_fsf2")
    assert mt_tell(out) == [na + nb + 2], log
    assert (mt_status(out).file, mt_status(out).block) == (2, 0), log
    assert mt_tell(ok("pos_bsf1")) == [na + nb + 1], log
    out = ok("pos_eod")
    assert mt_tell(out) == [na + nb + nc + 4], log
    assert "EOD" in mt_status(out).flags, log
    out = ok("pos_seek")
    assert mt_tell(out) == [na + 1] and "b/f1" in out, log
    assert mt_tell(ok("pos_fsr")) == [3, 2], log

    # Variable mode: a big read returns one whole block (ILI residual handled by st); a
    # short read of a bigger block is an error (ENOMEM), as on a real drive.
    assert ok("read_big").split()[-1] == "65536", log
    small = run["read_small"]
    assert small.rc != 0 and "Cannot allocate memory" in small.output, log

    # Appending at EOD makes a new tape file.
    assert "a/f1" in ok("append").split(), log
    ok("logs")
    ok("mam")

    # Unload back to the source slot; second cartridge in the second drive, fixed blocks.
    st = mtx_status(ok("unload"))
    assert not st.drives[0].full and st.slots[1] == MtxElement(True, BARCODES[0]), log
    ms = mt_status(ok("load2"))
    assert {"BOT", "ONLINE"} <= ms.flags, log
    out = ok("fixed")
    assert "FIXED-OK" in out and mt_tell(out) == [5], log
    # 512-byte fixed blocks as GNU tar writes them (-b 20: 20 blocks a WRITE, kept as runs of
    # blocks on the cartridge): read back, positioned inside a run (st's own read-ahead spaces
    # back over what it buffered), and overwritten from the middle of a run.
    out = ok("fixed512")
    blocks = int(re.search(r"SIZE=(\d+)", out).group(1)) // 512
    assert "FIXED512-READ-OK" in out and out.count(": OK") == 3, log
    assert mt_tell(out) == [blocks + 1, 7, 10, 8], log
    out = ok("fixed512_cut")
    assert "FIXED512-CUT-OK" in out and mt_tell(out) == [30, 30], log
    st = mtx_status(ok("unload2"))
    assert st.slots[10].full and st.slots[10].tag == BARCODES[1] and not st.slots[2].full, log

    st = mtx_status(ok("mailslot"))
    assert st.slots[41] == MtxElement(True, BARCODES[1]) and 41 in st.import_export, log
    # Bad moves get the sense mtx decodes: 3B/0E source empty, 3B/0D destination full.
    bad = run["move_empty"]
    assert bad.rc != 0 and "is Empty" in bad.output, log
    bad = run["move_full"]
    assert bad.rc != 0 and "Already Full" in bad.output, log

    # The first cartridge's data survived unload and reload.
    assert ok("reload").count(": OK") == 3, log

    # PREVENT MEDIUM REMOVAL from the drive blocks the changer's move (53/02).
    out = ok("lock")
    assert "unload-rc=1" in out and "Additional Sense Code = 53" in out, log
    assert "Additional Sense Qualifier = 02" in out, log
    serial = re.search(r"Unit serial number: *(\S+)", ok("inq_tape"))
    out = ok("tapeinfo")
    assert serial and f"SerialNumber: '{serial.group(1)}'" in out, log
    assert "Density Code: 0x5e" in out, log
    assert re.search(rf"Barcode: {BARCODES[0]}", ok("attr_barcode")), log
    # After ERASE the tape reads blank: BLANK CHECK, END-OF-DATA DETECTED (00/05).
    out = ok("erase")
    assert "Blank Check" in out and "End-of-data detected" in out, log

    # A write-protected cartridge: st reports WR_PROT and refuses to write.
    out = ok("wprot")
    assert "WR_PROT" in mt_status(out).flags and "tar-rc=0" not in out, log
    # End of medium: st turns EOM into ENOSPC; everything acknowledged reads back.
    out = ok("eom")
    assert "No space left on device" in out and "write-rc=0" not in out, log
    written = int(re.findall(r"(\d+)\+\d+ records out", out)[0])
    read = int(re.findall(r"(\d+)\+\d+ records in", out)[1])
    assert 0 < written < 400 and read == written, log

    # Another process (the CLI) loads a cartridge while the server runs: the changer's
    # inventory follows, and st learns of the new tape through UNIT ATTENTION 28/00.
    st = mtx_status(ok("host_load"))
    assert st.drives[1] == MtxElement(True, PROTECTED, 3), log
    ms = mt_status(ok("host_load_st"))
    assert (ms.file, ms.block) == (0, 0) and {"BOT", "ONLINE"} <= ms.flags, log
    st = mtx_status(ok("host_unload"))
    assert not st.drives[1].full and st.slots[3] == MtxElement(True, PROTECTED), log
    ok("final_unload")
    assert "Traceback" not in server.log_text(), log
    assert "HeaderDigest=CRC32C" in server.log_text(), log
