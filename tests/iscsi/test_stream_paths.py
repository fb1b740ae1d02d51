"""The streaming fast paths (vtl/iscsi/stream_paths.py, with the drive's
``stream_read``/``stream_write``) must be invisible: the same command sequence, sent to a
drive with the fast paths and to one without them, gets byte-identical answers, PDU headers
included, and leaves the same tape.

The sequence mixes what the fast paths serve (in-order READ(6) of exactly the next block; a
WRITE(6) whose whole block comes as immediate data, in buffered mode) with everything they
must hand back to the general path: unit attentions, another session's RESERVE(6),
filemarks, wrong lengths (ILI), SILI, fixed mode, end of data and end of medium, an expected
length that differs from the CDB's, replies larger than one Data-In PDU, writes that need an
R2T, small blocks, unbuffered mode, immediate commands and out-of-order CmdSN.

Both implementations of the fast paths run it: the C extension (vtl/_fastpath.c) and the
pure-Python reference (stream_paths.ReferencePaths), each against the general path.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from iscsi_support import RawInitiator, read6, two_sessions

from vtl.config import LibraryConfig
from vtl.iscsi import pdu, recv_spin, stream_paths
from vtl.iscsi.pdu import ALL_ONES, Op
from vtl.iscsi.recv_spin import SPIN
from vtl.library import Library
from vtl.scsi.devices import build_device_set
from vtl.scsi.ssc import MIN_BUFFERED_WRITE
from vtl.scsi.ssc_streams import WRITE_STREAMS

SIZES = [65536, 1000, 65536, 300, 131072, 70000, 4096, 65536]
WRITE_SIZES = [1000, 16384, 65536, 100000, 262144, 300000]
MAX_READ = 300000
FIRST_BURST = 262144  # also the target's MaxRecvDataSegmentLength
MRDSL = 65536  # a 131072-byte block needs two Data-In PDUs: never the fast path


def _blocks() -> list[bytes | None]:
    rnd = random.Random(3)
    out: list[bytes | None] = []
    for i, n in enumerate(SIZES * 2):
        out.append(rnd.randbytes(n // 2) + bytes(n - n // 2))
        if i % 5 == 4:
            out.append(None)  # a filemark
    return out


def _script(lib_dir: Path, *, fast: bool) -> tuple[list[list[bytes]], int]:
    """Run the fixed command sequence against a fresh library; (answers, fast-path hits)."""
    lib = Library.create(lib_dir, LibraryConfig(drives=1, slots=4, mailslots=1))
    lib.create_cartridge("S00001L8", capacity=6 << 20)  # small: writes reach EW and EOM
    lib.load("S00001L8", 0)
    devices = dict(build_device_set(lib).luns)
    drive = devices[1]
    hits = {"read": 0, "write": 0, "small write": 0}
    if fast:
        plain_read, plain_write = drive.stream_read, drive.stream_write

        def counting_read(*args):
            data = plain_read(*args)
            hits["read"] += data is not None
            return data

        def counting_write(*args):
            taken = plain_write(*args)
            hits["write"] += taken
            hits["small write"] += taken and len(args[2]) < MIN_BUFFERED_WRITE
            return taken

        drive.stream_read, drive.stream_write = counting_read, counting_write
    else:
        drive.stream_read = drive.stream_write = None  # the transport finds no fast path
    log: list[list[bytes]] = []
    rnd = random.Random(11)
    try:
        with two_sessions(devices, mrdsl=MRDSL, first_burst=FIRST_BURST) as (a, b):

            def cmd(ini: RawInitiator, cdb: bytes, **kw) -> None:
                log.append(ini.answers(ini.scsi(cdb, lun=1, **kw)))

            def write(block: bytes | None) -> None:
                if block is None:
                    cmd(a, bytes([0x10, 0, 0, 0, 1, 0]))
                else:
                    log.append([bytes(a.write(bytes([0x0A, 0]) + len(block).to_bytes(3, "big")
                                              + b"\0", block).hdr.raw)])

            cmd(a, bytes(6))  # TEST UNIT READY: the power-on UA
            cmd(b, bytes(6))
            cmd(a, bytes([0x01, 0, 0, 0, 0, 0]))  # REWIND
            for block in _blocks():
                write(block)
            cmd(a, bytes([0x01, 0, 0, 0, 0, 0]))
            for _ in range(400):
                n = rnd.choice(SIZES)
                cart = drive._cart  # the same state in both runs: peeking changes nothing
                if cart is not None and cart.next_data_length() > 0 and rnd.random() < 0.8:
                    n = cart.next_data_length()  # mostly the length a restore would ask for
                roll = rnd.random()
                if cart is not None and cart.at_eod and rnd.random() < 0.6:
                    roll = 0.7  # rewind: a few BLANK CHECKs are enough
                if roll < 0.55:
                    cmd(a, read6(n), read=n)  # the streaming case, when n is the next block
                elif roll < 0.62:
                    cmd(a, read6(n, 0x02), read=n)  # SILI
                elif roll < 0.66:
                    cmd(a, read6(n + rnd.choice([-7, 9])), read=n)  # EDTL != CDB length
                elif roll < 0.69:
                    cmd(a, read6(1, 0x01), read=n)  # fixed mode with block size 0
                elif roll < 0.72:
                    cmd(a, bytes([0x01, 0, 0, 0, 0, 0]))  # REWIND
                elif roll < 0.75:
                    cmd(a, bytes([0x11, 0]) + (-1 & 0xFFFFFF).to_bytes(3, "big") + b"\0")
                elif roll < 0.76:
                    cmd(b, bytes([0x16, 0, 0, 0, 0, 0]))  # B: RESERVE(6)
                elif roll < 0.82:
                    cmd(b, bytes([0x17, 0, 0, 0, 0, 0]))  # B: RELEASE(6): no UA, A goes on
                elif roll < 0.85:
                    cmd(a, bytes([0x03, 0, 0, 0, 18, 0]), read=18)  # REQUEST SENSE
                elif roll < 0.88:
                    itt = a.next_itt()  # an immediate READ: CmdSN not advanced
                    bhs = pdu.encode_layout(Op.SCSI_CMD, immediate=True, flags=0xC0,
                                            lun=pdu.encode_lun(1), itt=itt, edtl=n,
                                            cmdsn=a.cmdsn, expstatsn=a.expstatsn,
                                            cdb=read6(n).ljust(16, b"\0"))
                    a.send(bhs)
                    log.append(a.answers(itt))
                elif roll < 0.91:
                    itt = a.next_itt()  # CmdSN behind the window: ignored, then a NOP
                    bhs = pdu.encode_layout(Op.SCSI_CMD, flags=0xC0, lun=pdu.encode_lun(1),
                                            itt=itt, edtl=n, cmdsn=(a.cmdsn - 5) & ALL_ONES,
                                            expstatsn=a.expstatsn,
                                            cdb=read6(n).ljust(16, b"\0"))
                    a.send(bhs)
                    log.append([bytes(a.nop(b"after").hdr.raw)])
                elif roll < 0.94:
                    cmd(a, bytes([0x11, 1, 0, 0, 1, 0]))  # SPACE 1 filemark
                else:
                    block = rnd.randbytes(rnd.choice(WRITE_SIZES))
                    way = rnd.random()
                    if way < 0.7 and len(block) <= FIRST_BURST:  # all immediate: fast path
                        cdb = bytes([0x0A, 0]) + len(block).to_bytes(3, "big") + b"\0"
                        cmd(a, cdb, write=block, immediate_data=len(block))
                    elif way < 0.8:
                        write(block)  # the negotiated flow (R2T for the big ones)
                    elif way < 0.9:
                        cmd(a, bytes([0x10, 0, 0, 0, 1, 0]))  # WRITE FILEMARKS
                    else:  # MODE SELECT: buffered mode off or on
                        mode = rnd.choice([0x00, 0x10])
                        cmd(a, bytes([0x15, 0x10, 0, 0, 4, 0]), write=bytes([0, 0, mode, 0]),
                            immediate_data=4)
            cmd(a, bytes([0x11, 3, 0, 0, 0, 0]))  # SPACE to end of data, then write on
            for _ in range(260):  # through early warning to the end of the medium
                block = rnd.randbytes(rnd.choice(WRITE_SIZES) // 2)
                block += bytes(len(block))  # half compressible
                way = rnd.random()
                if way < 0.85 and len(block) <= FIRST_BURST:
                    cdb = bytes([0x0A, 0]) + len(block).to_bytes(3, "big") + b"\0"
                    cmd(a, cdb, write=block, immediate_data=len(block))
                elif way < 0.9:
                    write(block)
                elif way < 0.92:
                    cmd(a, bytes([0x10, 1, 0, 0, 1, 0]))  # WRITE FILEMARKS, IMMED
                elif way < 0.94:
                    cmd(a, bytes([0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0]), read=20)  # READ POSITION
                elif way < 0.96:  # B changes buffered mode: a UA for A
                    mode = rnd.choice([0x00, 0x10])
                    cmd(b, bytes([0x15, 0x10, 0, 0, 4, 0]), write=bytes([0, 0, mode, 0]),
                        immediate_data=4)
                elif way < 0.975:
                    cmd(b, bytes([0x16, 0, 0, 0, 0, 0]))  # B: RESERVE(6)
                else:
                    cmd(b, bytes([0x17, 0, 0, 0, 0, 0]))  # B: RELEASE(6)
            tape_after = []
            cmd(a, bytes([0x01, 0, 0, 0, 0, 0]))  # REWIND: read the whole tape back
            while True:
                itt = a.scsi(read6(MAX_READ, 0x02), lun=1, read=MAX_READ)
                answer = a.answers(itt)
                tape_after.append(answer)
                if len(answer[-1]) > 48 and answer[-1][0] & 0x3F == Op.SCSI_RSP:
                    sense = answer[-1][50:]
                    if sense[2] & 0x0F == 8:  # BLANK CHECK: end of data
                        break
            log.append([b"".join(x) for x in tape_after])
    finally:
        lib.close()
    return log, hits


@pytest.fixture(scope="module")
def general_path(tmp_path_factory: pytest.TempPathFactory) -> list[list[bytes]]:
    """The answers without fast paths (once for both implementations), with big blocks
    buffered however many drives other tests left streaming (as tests/conftest.py does)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(WRITE_STREAMS, "enough", 1 << 30)
        return _script(tmp_path_factory.mktemp("slow"), fast=False)[0]


@pytest.mark.parametrize("impl", ["c", "c-spin", "python"])
def test_fast_and_general_paths_answer_identically(
        tmp_path: Path, general_path: list[list[bytes]], impl: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = stream_paths.ReferencePaths if impl == "python" else stream_paths.native
    if chosen is None:
        pytest.skip("vtl._fastpath is not built (or VTL_NO_FASTPATH is set)")
    calls = {"read": 0, "write": 0}
    spins = {"found": 0}
    if impl == "c-spin":  # VTL_SPIN_US (recv_spin.py): a spin for the next command
        native = recv_spin._native

        class Everywhere:  # whichever CPU the test's initiator runs on, however busy the
            @staticmethod  # machine (a spin gives up when a thread wants its CPU); counted
            def recv_spin(fd, buf, ns, other_cpu_only):
                deadline = time.monotonic() + 0.05
                got = native.recv_spin(fd, buf, ns, False)
                while got == -1 and time.monotonic() < deadline:
                    got = native.recv_spin(fd, buf, ns, False)
                spins["found"] += got > 0
                return got

        monkeypatch.setattr(recv_spin, "_native", Everywhere)
        monkeypatch.setattr(SPIN, "ns", 1_000_000)
        monkeypatch.setattr(SPIN, "on", True)

    class Counting:  # the implementation under test, counted: it did run
        @staticmethod
        def stream_read(conn, hb):
            calls["read"] += 1
            return chosen.stream_read(conn, hb)

        @staticmethod
        def stream_write(conn, hb):
            calls["write"] += 1
            return chosen.stream_write(conn, hb)

    monkeypatch.setattr(stream_paths, "paths", Counting)
    fast, hits = _script(tmp_path / "fast", fast=True)
    assert calls["read"] >= hits["read"] and calls["write"] >= hits["write"], calls
    slow = general_path
    assert len(fast) == len(slow)
    for i, (x, y) in enumerate(zip(fast, slow, strict=True)):
        assert x == y, f"answer {i} differs"
    assert hits["read"] > 50 and hits["write"] > 10, hits  # the fast paths did serve
    assert hits["small write"] > 3, hits  # written at once (TapeCartridge.append_now)
    if impl == "c-spin":
        assert spins["found"] > 10, spins  # the next command was found by a spin
