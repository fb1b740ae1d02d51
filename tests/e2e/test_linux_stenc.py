"""stenc (SSC-4 tape data encryption) from a Linux guest against `vtl serve`.

The issue's proof: stenc sets a key, data written through st is stored encrypted (the
cartridge file on the host holds no plaintext), reads back with the key, and without the key
the read fails as on a real drive (DATA PROTECT 74/01: st reports EIO); stenc --detail shows
the drive's and the volume's encryption status. Skipped when stenc (Debian package stenc) is
not installed, since the guest copies the host's binary.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(importlib.util.find_spec("vtl.cli.serve") is None,
                       reason="`vtl serve` has not landed"),
    pytest.mark.skipif(shutil.which("stenc") is None, reason="stenc is not installed"),
]

BARCODE = "ENC001L8"
KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
MARKER = "PLAINTEXT-MARKER-that-must-not-reach-the-disk"

SCRIPT = r"""
export CHSG=/dev/e2e/0-sg
export TAPE=/dev/e2e/1-nst
export E2E_STEP_TIMEOUT=120
printf '%s\nvtl-e2e-key\n' "$KEY" > /tmp/key
i=0; while [ $i -lt 400 ]; do echo "$MARKER $i"; i=$((i+1)); done > /tmp/plain
step load 'mtx -f $CHSG load 1 0 && i=0; until mt -f $TAPE status 2>&1 | grep -q ONLINE || [ $i -ge 30 ]; do i=$((i+1)); sleep 1; done; mt -f $TAPE status'
step detail0 'stenc -f $TAPE --detail'
step key_on 'stenc -f $TAPE -e mixed -k /tmp/key -a 1 && stenc -f $TAPE --detail'
step write 'mt -f $TAPE rewind && dd if=/tmp/plain of=$TAPE bs=4096 conv=sync && mt -f $TAPE weof 1'
step read_key 'mt -f $TAPE rewind && stenc -f $TAPE --detail && dd if=$TAPE of=/tmp/back bs=4096 && head -c $(wc -c < /tmp/plain) /tmp/back | cmp - /tmp/plain && echo SAME'
step key_off 'stenc -f $TAPE -e off -a 1 && stenc -f $TAPE --detail'
step read_nokey 'mt -f $TAPE rewind && dd if=$TAPE of=/tmp/out bs=4096; echo "dd-rc=$?"; dmesg | tail -5'
"""


def test_stenc_sets_a_key_and_reads_need_it(tmp_path: Path) -> None:
    from e2e.guest import build_guest
    from e2e.qemu import Lun, boot, qemu_available
    from e2e.targets import start_vtl, stop, vtl

    reason = qemu_available()
    if reason:
        pytest.skip(reason)
    guest = build_guest()
    root = tmp_path / "lib"
    vtl(root, "init")
    vtl(root, "cartridge", "create", BARCODE, "--slot", "slot:1")
    script = SCRIPT.replace("$KEY", KEY).replace("$MARKER", MARKER)
    srv = start_vtl(root, tmp_path)
    try:
        changer = next(lu for lu in srv.luns if lu.type == "MEDIA_CHANGER")
        drive = next(lu for lu in srv.luns if lu.type == "SEQUENTIAL_ACCESS")
        luns = [Lun(srv.portal, changer.target, changer.lun),
                Lun(srv.portal, drive.target, drive.lun)]
        run = boot(guest, script, luns, timeout=300)
    finally:
        stop(srv.proc, timeout=30)
    log = run.describe()

    def ok(name: str) -> str:
        s = run[name]
        assert s.rc == 0, f"guest step {name!r} exited {s.rc}:\n{s.output}\n{log}"
        return s.output

    assert run.done, log
    ok("load")
    assert "Not encrypting" in ok("detail0"), log
    assert "Encrypting" in ok("key_on") and "vtl-e2e-key" in ok("key_on"), log
    ok("write")
    read = ok("read_key")
    assert "Encrypted and able to decrypt" in read and "SAME" in read, log
    assert "Not encrypting" in ok("key_off"), log
    nokey = ok("read_nokey")
    assert "dd-rc=0" not in nokey and "Unable to decrypt data" in nokey, log
    data = (root / "cartridges" / f"{BARCODE}.vtape").read_bytes()
    assert MARKER.encode() not in data and bytes.fromhex(KEY) not in data
