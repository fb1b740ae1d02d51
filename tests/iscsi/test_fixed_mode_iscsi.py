"""Fixed-block mode over iSCSI, as after `mt setblk 512` (`tar -b 20`: 20 blocks per
command): multi-block WRITE(6)/READ(6) through a real connection (immediate data, R2T for
the big ones, Data-In over several PDUs), with the blocks moved as runs (ssc.FIXED_RUNS; the
streaming fast paths taking the plain commands) and block by block through the general path
(the reference): byte-identical PDUs, the data back as written, and the
conditions a run meets mid-way (a filemark, a block of another length, end of data)."""

from __future__ import annotations

import random
from pathlib import Path

from iscsi_support import RawInitiator, running_target

from vtl.config import LibraryConfig
from vtl.iscsi.pdu import Op
from vtl.library import Library
from vtl.scsi import ssc
from vtl.scsi.devices import build_device_set

BS = 512
TEXT = b"".join(b"%06d /srv/www/site/page-%d.html 200 OK\n" % (i, i * 13) for i in range(3000))


def _session(lib_dir: Path, runs: bool) -> tuple[list[list[bytes]], bytes]:
    """The command sequence against a fresh library; (every answer, what was read back)."""
    lib = Library.create(lib_dir, LibraryConfig(drives=1, slots=4, mailslots=1))
    lib.create_cartridge("X00001L8", capacity=32 << 20)
    lib.load("X00001L8", 0)
    devices = dict(build_device_set(lib).luns)
    if not runs:  # the reference: every command through the general path, block by block
        devices[1].stream_read = devices[1].stream_write = None
    rng = random.Random(5)
    log: list[list[bytes]] = []
    back = bytearray()
    ssc.FIXED_RUNS = runs
    try:
        with running_target(devices=devices) as t:
            a = RawInitiator(t.port, isid=b"\x80\0\0\0\0\x01")
            a.login({"MaxRecvDataSegmentLength": "65536", "ImmediateData": "Yes",
                     "InitialR2T": "No", "FirstBurstLength": "65536"})

            def cmd(cdb: bytes, **kw) -> list[bytes]:
                answer = a.answers(a.scsi(cdb, lun=1, **kw))
                log.append(answer)
                return answer

            def wfixed(data: bytes) -> None:
                cdb = bytes([0x0A, 1]) + (len(data) // BS).to_bytes(3, "big") + b"\0"
                log.append([bytes(a.write(cdb, data).hdr.raw)])

            def rfixed(count: int) -> None:
                for p in cmd(bytes([0x08, 1]) + count.to_bytes(3, "big") + b"\0",
                             read=count * BS):
                    if p[0] & 0x3F == Op.DATA_IN:
                        back.extend(p[48:48 + int.from_bytes(p[5:8], "big")])

            cmd(bytes(6))  # the power-on unit attention
            cmd(bytes([0x15, 0x10, 0, 0, 12, 0]), write=bytes([0, 0, 0x10, 8, 0, 0, 0, 0, 0, 0,
                                                             BS >> 8, 0]), immediate_data=12)
            for i in range(40):  # tar -b 20, and bigger commands that need R2Ts
                count = rng.choice((20, 20, 20, 1, 128, 300))
                kind = rng.random()
                data = (rng.randbytes(count * BS) if kind < 0.4 else bytes(count * BS)
                        if kind < 0.5 else (TEXT * 2)[i * 777:i * 777 + count * BS])
                wfixed(data)
                if i % 13 == 12:
                    cmd(bytes([0x10, 0, 0, 0, 1, 0]))  # a filemark mid-archive
            cmd(bytes([0x0A, 0, 0, 0, 100, 0]), write=bytes(100), immediate_data=100)
            cmd(bytes([0x10, 0, 0, 0, 1, 0]))
            cmd(bytes([0x01, 0, 0, 0, 0, 0]))  # REWIND
            for _ in range(120):  # everything back, across filemarks, ILI and end of data
                rfixed(rng.choice((20, 20, 7, 128, 300)))
    finally:
        ssc.FIXED_RUNS = True
        lib.close()
    return log, bytes(back)


def test_fixed_mode_runs_match_block_by_block(tmp_path):
    runs, back = _session(tmp_path / "runs", True)
    blocks, back_ref = _session(tmp_path / "blocks", False)
    assert back == back_ref and len(back) > 1000 * BS
    assert len(runs) == len(blocks)
    for i, (x, y) in enumerate(zip(runs, blocks, strict=True)):
        assert x == y, i
    senses = [p[-1] for p in runs if p[-1][0] & 0x3F == Op.SCSI_RSP and p[-1][3] == 2]
    assert senses, "no CHECK CONDITION met: the sequence misses the conditions"
