"""stenc (SSC-4 tape data encryption) from a Linux guest against `vtl serve`.

The issue's proof: stenc sets a key, data written through st is stored encrypted (the
cartridge file on the host holds no plaintext), reads back with the key, and without the key
the read fails as on a real drive (DATA PROTECT 74/01: st reports EIO); stenc --detail shows
the drive's and the volume's encryption status. Skipped when stenc (Debian package stenc) is
not installed, since the guest copies the host's binary.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .one_drive import E2E_WITH_SERVE, LOAD_SLOT_1, boot_one_drive

pytestmark = [
    *E2E_WITH_SERVE,
    pytest.mark.skipif(shutil.which("stenc") is None, reason="stenc is not installed"),
]

BARCODE = "ENC001L8"
KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
MARKER = "PLAINTEXT-MARKER-that-must-not-reach-the-disk"

SCRIPT = LOAD_SLOT_1 + r"""
printf '%s\nvtl-e2e-key\n' "$KEY" > /tmp/key
i=0; while [ $i -lt 400 ]; do echo "$MARKER $i"; i=$((i+1)); done > /tmp/plain
step detail0 'stenc -f $TAPE --detail'
step key_on 'stenc -f $TAPE -e mixed -k /tmp/key -a 1 && stenc -f $TAPE --detail'
step write 'mt -f $TAPE rewind && dd if=/tmp/plain of=$TAPE bs=4096 conv=sync && mt -f $TAPE weof 1'
step read_key 'mt -f $TAPE rewind && stenc -f $TAPE --detail && dd if=$TAPE of=/tmp/back bs=4096 && head -c $(wc -c < /tmp/plain) /tmp/back | cmp - /tmp/plain && echo SAME'
step key_off 'stenc -f $TAPE -e off -a 1 && stenc -f $TAPE --detail'
step read_nokey 'mt -f $TAPE rewind && dd if=$TAPE of=/tmp/out bs=4096; echo "dd-rc=$?"; dmesg | tail -5'
"""


def test_stenc_sets_a_key_and_reads_need_it(guest, tmp_path: Path) -> None:
    from e2e.targets import vtl

    root = tmp_path / "lib"
    vtl(root, "init")
    vtl(root, "cartridge", "create", BARCODE, "--slot", "slot:1")
    script = SCRIPT.replace("$KEY", KEY).replace("$MARKER", MARKER)
    steps = boot_one_drive(guest, root, tmp_path, script, timeout=300)
    log, ok = steps.log, steps.ok
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
