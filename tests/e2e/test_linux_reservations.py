"""Two I_T nexuses on one drive, both from the Linux kernel: RESERVE(6) and PERSISTENT RESERVE.

qemu attaches drive 0 twice (two iSCSI sessions with their own ISIDs, two sg devices in the
guest), the way two hosts of a backup cluster share a library drive. The guest's sg driver
and sg3_utils' sg_raw send the reservation commands; the other nexus must get RESERVATION
CONFLICT for what the reservation type forbids, keep what it allows, and learn through a
UNIT ATTENTION (2A/05, registrations preempted) that its registration was taken away.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .qemu import Lun, boot
from .targets import VtlServer, serving_vtl, vtl

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(importlib.util.find_spec("vtl.cli.serve") is None,
                       reason="`vtl serve` has not landed yet"),
]


def _param(key: int, service_action_key: int = 0) -> str:
    """A PERSISTENT RESERVE OUT parameter list (24 bytes) as a printf octal string."""
    raw = key.to_bytes(8, "big") + service_action_key.to_bytes(8, "big") + bytes(8)
    return "".join(f"\\{b:03o}" for b in raw)


READ_POSITION = "34 00 00 00 00 00 00 00 00 00"
WRITE_FILEMARKS_0 = "10 00 00 00 00 00"  # writes nothing, but is a write for reservations
PR_OUT = "5f {sa:02x} {type:02x} 00 00 00 00 00 18 00"

SCRIPT = rf"""
export CHSG=/dev/e2e/0-sg
export A=/dev/e2e/1-sg
export B=/dev/e2e/2-sg
step load 'mtx -f $CHSG load 1 0 && mtx -f $CHSG status'
# Each nexus first takes its UNIT ATTENTIONs (power on, new medium) like an initiator's scan.
step settle 'for d in $A $B; do i=0; until sg_turs $d 2>/dev/null || [ $i -ge 10 ]; do i=$((i+1)); sleep 0.5; done; sg_turs $d; done'
step reserve_a 'sg_raw $A 16 00 00 00 00 00'
step conflict_b 'sg_raw -r 20 $B {READ_POSITION}; echo "rc=$?"'
step holder_a 'sg_raw -r 20 $A {READ_POSITION}'
step release_a 'sg_raw $A 17 00 00 00 00 00'
step free_b 'sg_raw -r 20 $B {READ_POSITION}'
step register 'printf "{_param(0, 0xAA)}" > regA && printf "{_param(0, 0xBB)}" > regB && sg_raw -s 24 -i regA $A {PR_OUT.format(sa=0, type=0)} && sg_raw -s 24 -i regB $B {PR_OUT.format(sa=0, type=0)}'
step read_keys 'sg_raw -r 64 $B 5e 00 00 00 00 00 00 00 40 00'
step pr_reserve_a 'printf "{_param(0xAA)}" > resA && sg_raw -s 24 -i resA $A {PR_OUT.format(sa=1, type=1)}'
step we_write_b 'sg_raw $B {WRITE_FILEMARKS_0}; echo "rc=$?"'
step we_read_b 'sg_raw -r 20 $B {READ_POSITION}'
step we_write_a 'sg_raw $A {WRITE_FILEMARKS_0}'
step preempt_b 'printf "{_param(0xBB, 0xAA)}" > preB && sg_raw -s 24 -i preB $B {PR_OUT.format(sa=4, type=1)}'
step ua_a 'sg_turs -v $A; echo "rc=$?"; sg_turs $A; echo "rc2=$?"'
step lost_a 'sg_raw $A {WRITE_FILEMARKS_0}; echo "rc=$?"'
step holder_b 'sg_raw $B {WRITE_FILEMARKS_0}'
step clear_b 'printf "{_param(0xBB)}" > clrB && sg_raw -s 24 -i clrB $B {PR_OUT.format(sa=3, type=0)}'
step free_a 'sg_raw $A {WRITE_FILEMARKS_0}'
step unload 'mtx -f $CHSG unload 1 0 && mtx -f $CHSG status'
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[VtlServer]:
    root = tmp_path / "lib"
    vtl(root, "init")
    vtl(root, "cartridge", "create", "RES001L8", "--slot", "slot:1")
    with serving_vtl(root, tmp_path) as srv:
        yield srv


def test_two_linux_nexuses_share_a_drive_under_reservations(guest, server):
    changer = next(lu for lu in server.luns if lu.type == "MEDIA_CHANGER")
    drive = next(lu for lu in server.luns if lu.type == "SEQUENTIAL_ACCESS")
    luns = [
        Lun(server.portal, changer.target, changer.lun),
        Lun(server.portal, drive.target, drive.lun),
        Lun(server.portal, drive.target, drive.lun, session=1),  # the same drive, nexus B
    ]
    run = boot(guest, SCRIPT, luns, timeout=300)
    run.context = "--- vtl serve log ---\n" + server.log_text()
    log = run.describe()
    ok = run.ok

    def conflict(name: str) -> None:
        out = run[name].output
        assert re.search(r"reservation conflict", out, re.I), f"{name}: {out}\n{log}"
        assert "rc=0" not in out, f"{name}: {out}\n{log}"

    assert run.done, f"guest did not finish\n{log}"
    assert len(re.findall(r"normal session", server.log_text())) >= 3, log  # 3 nexuses
    ok("load")
    ok("settle")
    # RESERVE(6): the other nexus is locked out until RELEASE(6).
    ok("reserve_a")
    conflict("conflict_b")
    ok("holder_a")
    ok("release_a")
    ok("free_b")
    # PERSISTENT RESERVE, Write Exclusive: both register, A reserves; B may read, not write.
    ok("register")
    # READ KEYS: additional length 16 (two keys), then 0x..AA and 0x..BB (sg_raw's hex dump).
    dump = ok("read_keys")
    assert "00 00 00 10" in dump, log
    assert "00 00 00 00 00 00 00 aa" in dump and "00 00 00 00 00 00 00 bb" in dump, log
    ok("pr_reserve_a")
    conflict("we_write_b")
    ok("we_read_b")
    ok("we_write_a")
    # B preempts A: A learns it through UNIT ATTENTION 2A/05, then may no longer write.
    ok("preempt_b")
    out = run["ua_a"].output
    assert re.search(r"unit attention", out, re.I) and "rc2=0" in out, f"{out}\n{log}"
    assert re.search(r"registrations preempted|asc=0x2a, ascq=0x5|2a/05", out, re.I), (
        f"{out}\n{log}")
    conflict("lost_a")
    ok("holder_b")
    # CLEAR drops every registration and the reservation: A writes again.
    ok("clear_b")
    ok("free_a")
    ok("unload")
    assert "Traceback" not in server.log_text(), log
