"""Interop: the EBM's initiator and SSC client against Debian's tgt (tgtd, --bstype ssc).

tgt is an independent target: it negotiates differently (InitialR2T=Yes, so every write
goes through R2T and Data-Out) and implements a smaller SSC (no LOCATE, no persistent
reservations, READ POSITION short form only). Blocks, filemarks, SPACE and REWIND must
work the same; what tgt lacks must come back as one clean ScsiError.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ebm.remote.initiator import Initiator
from ebm.remote.scsi_client import SPACE_FILEMARKS, Kind, ScsiError, TapeDevice

pytestmark = pytest.mark.skipif(shutil.which("tgtd") is None or os.geteuid() != 0,
                                reason="needs Debian's tgt and root")


@pytest.fixture
def tgt(tmp_path: Path):
    from e2e.targets import start_tgt  # tests/ is on sys.path (its conftest)

    target = start_tgt(tmp_path, "iqn.2026-11.org.vtl-ebm:tgt-interop")
    try:
        target.add_tape(1, tmp_path / "tape.img", "TGT001L8", size_mb=64)
        yield target
    finally:
        for args in (("--op", "update", "--mode", "sys", "--name", "State", "-v", "offline"),
                     ("--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", "1",
                      "--force"), ("--op", "delete", "--mode", "system")):
            subprocess.run(["tgtadm", "-C", str(target.control_port), *args],
                           capture_output=True, timeout=30)
        try:
            target.proc.wait(10)
        except subprocess.TimeoutExpired:
            target.proc.kill()
            target.proc.wait()


def test_blocks_filemarks_space_against_tgt(tgt):
    host, port = tgt.portal.split(":")
    with Initiator(host, int(port), tgt.iqn, header_digest=True, data_digest=True) as ini:
        assert ini._conn.params.initial_r2t  # tgt: data only after R2T
        tape = TapeDevice(ini, 1, "tgt drive")
        assert tape.inquiry()[0] == 1
        tape.test_unit_ready()
        blocks = [os.urandom(262144), os.urandom(1000), os.urandom(65536 + 7)]
        for b in blocks[:2]:
            assert tape.write(b) is False
        tape.write_filemarks(1)
        tape.write(blocks[2])
        tape.write_filemarks(1)
        tape.rewind()
        assert [tape.read(1 << 20).data for _ in range(2)] == blocks[:2]
        assert tape.read(1 << 20).kind == Kind.FILEMARK
        assert tape.read(1 << 20).data == blocks[2]
        tape.rewind()
        assert tape.space(SPACE_FILEMARKS, 1) is None
        assert tape.read(1 << 20).data == blocks[2]
        with pytest.raises(ScsiError, match="LOCATE"):
            tape.locate(0)  # tgt has no LOCATE: a clean error, not a hang
        with pytest.raises(ScsiError, match="PERSISTENT RESERVE"):
            tape.register(0x1234)
