"""LUN workers write responses to the socket themselves (Connection._send_direct): with two
LUNs and NOP-Outs pipelined on one connection, the byte stream must stay whole PDUs, every
task's data intact and every StatSN used exactly once."""

from __future__ import annotations

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from iscsi_support import RawInitiator, pattern, running_target  # noqa: E402

from vtl.iscsi import pdu  # noqa: E402
from vtl.iscsi.connection import Connection  # noqa: E402
from vtl.iscsi.pdu import ALL_ONES, Op  # noqa: E402


def read6(n: int) -> bytes:
    return bytes([0x08, 0]) + n.to_bytes(3, "big") + b"\0"


@pytest.mark.parametrize("digests", [False, True])
def test_pipelined_reads_on_two_luns_and_nops_keep_the_stream_whole(digests, monkeypatch):
    direct = []
    real = Connection._send_direct

    def spy(self, task, result):
        sent = real(self, task, result)
        direct.append(sent)
        return sent

    monkeypatch.setattr(Connection, "_send_direct", spy)
    with running_target() as t:
        ini = RawInitiator(t.port)
        keys = {"MaxRecvDataSegmentLength": "16384"}
        if digests:
            keys.update({"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"})
        ini.login(keys)
        n = 200000
        reads: dict[int, bytearray] = {}
        nops: dict[int, bytes] = {}
        for i in range(24):
            itt = ini.scsi(read6(n), lun=1 + i % 2, read=n)
            reads[itt] = bytearray()
            if i % 3 == 0:
                itt = ini.next_itt()
                payload = b"nop%d" % i
                bhs = pdu.encode_layout(Op.NOP_OUT, immediate=True, dsl=len(payload),
                                        flags=0x80, itt=itt, ttt=ALL_ONES, cmdsn=ini.cmdsn,
                                        expstatsn=ini.expstatsn)
                ini.send(bhs, payload)
                nops[itt] = payload
        statsns: list[int] = []
        open_reads = set(reads)
        open_nops = set(nops)
        while open_reads or open_nops:
            p = ini.recv()
            itt = p.hdr.itt
            if p.op == Op.DATA_IN:
                assert p.hdr.words[5] == len(reads[itt])  # in order, nothing torn
                reads[itt] += p.data
                if p.hdr.flags & 1:
                    assert p.hdr.b3 == 0
                    statsns.append(p.hdr.words[1])
                    open_reads.discard(itt)
            elif p.op == Op.NOP_IN:
                assert p.data == nops[itt]
                statsns.append(p.hdr.words[1])
                open_nops.discard(itt)
            else:
                raise AssertionError(f"unexpected PDU 0x{p.op:02x}")
        assert all(bytes(d) == pattern(n) for d in reads.values())
        assert sorted(statsns) == list(range(min(statsns), min(statsns) + len(statsns)))
        assert ini.nop(b"end").data == b"end"
        assert any(direct), "no response went out directly from a LUN worker"
        ini.close()


def test_slow_reader_blocks_the_worker_not_the_loop_and_logout_is_clean():
    """A response bigger than the socket buffers: the worker waits for the initiator to read,
    the loop's own answers (NOP-In) queue behind it, and logout still ends cleanly."""
    with running_target() as t:
        ini = RawInitiator(t.port)
        ini.login({"MaxRecvDataSegmentLength": "262144"})
        n = 8 << 20
        itt = ini.scsi(read6(n), lun=1, read=n)
        nop_itt = ini.next_itt()
        bhs = pdu.encode_layout(Op.NOP_OUT, immediate=True, dsl=4, flags=0x80, itt=nop_itt,
                                ttt=ALL_ONES, cmdsn=ini.cmdsn, expstatsn=ini.expstatsn)
        ini.send(bhs, b"ping")
        time.sleep(0.5)  # the worker is stuck on a full socket meanwhile
        data = bytearray()
        got_nop = False
        while True:
            p = ini.recv()
            if p.op == Op.NOP_IN:
                assert p.hdr.itt == nop_itt and p.data == b"ping"
                got_nop = True
                continue
            assert p.op == Op.DATA_IN and p.hdr.itt == itt
            assert p.hdr.words[5] == len(data)
            data += p.data
            if p.hdr.flags & 1:
                break
        if not got_nop:
            assert ini.recv().data == b"ping"
        assert bytes(data) == pattern(n)
        assert ini.logout().op == Op.LOGOUT_RSP
        ini.close()
