"""Several threads write to one connection: its own thread (inline commands, NOP-In, R2T) and
the LUN workers (long commands). With two LUNs and NOP-Outs pipelined on one connection the
byte stream must stay whole PDUs, every task's data intact and every StatSN used exactly once;
a command that may run inline still waits for a queued one to the same LUN; a long command
does not stop the connection from answering NOP-Outs."""

from __future__ import annotations

import time

import pytest
from iscsi_support import FakeDevice, RawInitiator, pattern, read6, running_target

from vtl.iscsi import pdu
from vtl.iscsi.pdu import ALL_ONES, Op


@pytest.mark.parametrize("digests", [False, True])
def test_pipelined_reads_on_two_luns_and_nops_keep_the_stream_whole(digests):
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


class InlineDevice(FakeDevice):
    """A device that lets the transport run TUR and READ(6) on the connection's thread."""

    inline_opcodes = frozenset({0x00, 0x08})

    def __init__(self) -> None:
        super().__init__(1, "INLINE")
        self.idle_calls = 0
        self.threads: list[str] = []

    def execute(self, nexus, cdb, data_out=None):
        import threading

        self.threads.append(threading.current_thread().name)
        return super().execute(nexus, cdb, data_out)

    def idle(self) -> None:
        self.idle_calls += 1


def test_inline_commands_wait_for_queued_ones_and_nops_are_answered_meanwhile():
    dev = InlineDevice()
    with running_target(devices={0: FakeDevice(8), 1: dev}) as t:
        ini = RawInitiator(t.port)
        ini.login()
        slow = ini.scsi(bytes([0xC0, 40, 0, 0, 0, 0]), lun=1)  # 400 ms on the LUN's worker
        n = 70000
        read = ini.scsi(read6(n), lun=1, read=n)  # may run inline, but must wait
        started = time.monotonic()
        assert ini.nop(b"alive").data == b"alive"  # answered while the slow one runs
        assert time.monotonic() - started < 0.3
        order = []
        data = bytearray()
        while len(order) < 2:
            p = ini.recv()
            if p.op == Op.DATA_IN:
                data += p.data
                if p.hdr.flags & 1:
                    order.append(p.hdr.itt)
            elif p.op == Op.SCSI_RSP:
                order.append(p.hdr.itt)
        assert order == [slow, read] and bytes(data) == pattern(n)
        assert [c[0] for c in dev.calls] == [0xC0, 0x08]
        # Nothing queued any more: TUR and READ run on the connection's own thread, and the
        # device gets an idle() call after each.
        before = dev.idle_calls
        for _ in range(3):
            ini.collect(ini.scsi(read6(4096), lun=1, read=4096))
        deadline = time.monotonic() + 2  # idle() runs right after the response is sent
        while dev.idle_calls < before + 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dev.idle_calls >= before + 3
        assert all(name.startswith("iscsi ") for name in dev.threads[-3:])
        assert dev.threads[0].startswith("lun-")
        ini.close()


def test_pdus_split_across_many_tcp_segments_are_put_back_together():
    """The connection thread reads a header in one recv when it can, and in pieces when the
    initiator trickles it: a command and its immediate data sent a few bytes at a time."""
    with running_target() as t:
        ini = RawInitiator(t.port)
        ini.login()
        payload = pattern(5000)
        itt = ini.next_itt()
        cdb = bytes([0x0A, 0]) + len(payload).to_bytes(3, "big") + b"\0"
        bhs = pdu.encode_layout(Op.SCSI_CMD, flags=0xA0, dsl=len(payload), lun=pdu.encode_lun(1),
                                itt=itt, edtl=len(payload), cmdsn=ini.cmdsn,
                                expstatsn=ini.expstatsn, cdb=cdb.ljust(16, b"\0"))
        ini.cmdsn += 1
        wire = bhs + payload + bytes(-len(payload) & 3)
        pos = 0
        while pos < len(wire):
            step = 7 if pos < 60 else 1000  # the header in 7-byte pieces, then the data
            ini.sock.sendall(wire[pos:pos + step])
            pos += step
            time.sleep(0.002)
        rsp = ini.recv()
        assert rsp.op == Op.SCSI_RSP and rsp.hdr.itt == itt and rsp.hdr.b3 == 0
        assert t.devices[1].last_write == payload
        assert ini.nop(b"still in sync").data == b"still in sync"
        ini.close()


def test_stop_is_not_held_up_by_an_initiator_that_never_reads():
    """A response stuck on a full socket holds the connection's send side; SIGTERM's stop
    must still finish (asking that initiator to log out times out, the close breaks it)."""
    import asyncio

    with running_target() as t:
        ini = RawInitiator(t.port)
        ini.login({"MaxRecvDataSegmentLength": "262144"})
        n = (8 << 20) - 1
        for _ in range(3):  # 24 MiB the initiator never reads: far more than socket buffers
            ini.scsi(read6(n), lun=1, read=n)
        time.sleep(0.5)
        started = time.monotonic()
        asyncio.run_coroutine_threadsafe(t.server.stop(grace=1, logout_wait=1), t.loop).result(30)
        assert time.monotonic() - started < 15
        ini.close()
