"""Test helpers for the iSCSI target: a tiny device, an in-process target, a raw initiator.

The raw initiator speaks just enough RFC 7143 to drive flows libiscsi's command-line tools do
not expose (R2T with InitialR2T=Yes, task management, NOP-In pings, malformed PDUs).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from vtl.iscsi import pdu, stream_paths
from vtl.iscsi.config import Limits, ServerConfig, TargetConfig
from vtl.iscsi.login import encode_keys, parse_keys
from vtl.iscsi.pdu import ALL_ONES, Op
from vtl.iscsi.target import IscsiTarget
from vtl.scsi.base import (
    DeviceSet,
    Nexus,
    ResetKind,
    ScsiResult,
    SenseKey,
    Status,
    fixed_sense,
)
from vtl.scsi.sense import invalid_opcode

TEST_IQN = "iqn.2026-11.org.vtl-ebm:test"
INITIATOR = "iqn.2026-11.org.vtl-ebm:tester"


class FakeDevice:
    """A minimal SCSI device: INQUIRY, TUR, REQUEST SENSE, a write sink and a read source.

    Vendor opcodes: 0xC0 sleeps cdb[1]*10 ms (to test aborts); 0xC1 returns the length and
    CRC32C of the last write; READ(6)/WRITE(6) use the 24-bit length as a byte count.
    """

    def __init__(self, peripheral_type: int = 1, product: str = "FAKE") -> None:
        self.type = peripheral_type
        self.product = product
        self.last_write = b""
        self.calls: list[bytes] = []
        self.resets: list[ResetKind] = []
        self.lost: list[Nexus] = []
        self.lock = threading.Lock()

    def execute(self, nexus: Nexus, cdb: bytes, data_out=None) -> ScsiResult:
        with self.lock:
            self.calls.append(bytes(cdb))
        op = cdb[0]
        if op == 0x00:
            return ScsiResult()
        if op == 0x12:
            vpd = {0x00: bytes([self.type, 0, 0, 2, 0, 0x80]),
                   0x80: bytes([self.type, 0x80, 0, 8]) + b"FAKE0001"}
            return _inquiry(cdb, self.type, 0x80, self.product, vpd, field_pointer=2)
        if op == 0x03:
            return ScsiResult(data=fixed_sense(SenseKey.NO_SENSE, 0, 0)[: cdb[4]])
        if op == 0x0A:  # WRITE(6): keep the data
            n = int.from_bytes(cdb[2:5], "big")
            got = bytes(data_out or b"")
            if len(got) != n:
                return ScsiResult(Status.CHECK_CONDITION, b"",
                                  fixed_sense(SenseKey.ILLEGAL_REQUEST, 0x24, 0))
            self.last_write = got
            return ScsiResult()
        if op == 0x08:  # READ(6): a deterministic pattern of the asked length
            n = int.from_bytes(cdb[2:5], "big")
            return ScsiResult(data=memoryview(pattern(n)))
        if op == 0xC0:
            time.sleep(cdb[1] / 100)
            return ScsiResult()
        if op == 0xC1:
            return ScsiResult(data=struct.pack(">II", len(self.last_write),
                                               pdu.crc32c(self.last_write)))
        return invalid_opcode().result()

    def reset(self, kind: ResetKind, nexus: Nexus | None = None) -> None:
        self.resets.append(kind)

    def nexus_lost(self, nexus: Nexus) -> None:
        self.lost.append(nexus)


def _inquiry(cdb: bytes, peripheral_type: int, rmb: int, product: str, vpd: dict[int, bytes],
             field_pointer: int | None = None) -> ScsiResult:
    """A fake device's INQUIRY: the standard data (SPC-4, vendor VTLTEST, revision 0001;
    ``rmb`` 0x80 for a removable medium, else 0) or a page of ``vpd``, cut to the allocation
    length; another page: ILLEGAL REQUEST, invalid field in CDB."""
    alloc = int.from_bytes(cdb[3:5], "big")
    if cdb[1] & 1:
        page = vpd.get(cdb[2])
        if page is None:
            return ScsiResult(Status.CHECK_CONDITION, b"", fixed_sense(
                SenseKey.ILLEGAL_REQUEST, 0x24, 0, field_pointer=field_pointer))
        return ScsiResult(data=page[:alloc])
    data = bytearray(36)
    data[0], data[1], data[2], data[3], data[4] = peripheral_type, rmb, 6, 2, 31
    data[8:16] = b"VTLTEST "
    data[16:32] = product.ljust(16).encode()
    data[32:36] = b"0001"
    return ScsiResult(data=bytes(data[:alloc]))


def pattern(n: int) -> bytes:
    block = bytes(range(256)) * 16
    return (block * (n // len(block) + 1))[:n]


@dataclass
class RunningTarget:
    server: IscsiTarget
    loop: asyncio.AbstractEventLoop
    port: int
    devices: dict[int, FakeDevice]

    @property
    def portal(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def running_target(*, luns: int = 2, limits: Limits | None = None, chap=None, mutual=None,
                   allowed: frozenset[str] = frozenset(),
                   devices: dict | None = None) -> Iterator[RunningTarget]:
    """An IscsiTarget on a free 127.0.0.1 port, in its own event-loop thread (default LUNs:
    a fake changer at 0 and ``luns`` fake drives)."""
    if devices is None:
        devices = {0: FakeDevice(8, "CHANGER")}
        for i in range(1, luns + 1):
            devices[i] = FakeDevice(1, f"DRIVE{i}")
    cfg = ServerConfig(
        targets=[TargetConfig(TEST_IQN, DeviceSet(dict(devices)), alias="test",
                              allowed_initiators=allowed)],
        portals=[("127.0.0.1", 0)],
        chap=chap,
        mutual_chap=mutual,
        limits=limits or Limits(),
    )
    with serving(cfg, devices) as t:
        yield t


@contextmanager
def serving(cfg: ServerConfig, devices: dict | None = None) -> Iterator[RunningTarget]:
    """An IscsiTarget for ``cfg`` in its own event-loop thread, on the first portal's port;
    stopped (5 s grace) when the block ends."""
    server = IscsiTarget(cfg)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield RunningTarget(server, loop, server.bound[0][1], devices or {})
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(grace=5), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# ---- a raw initiator -------------------------------------------------------------------------
@dataclass
class Pdu:
    hdr: pdu.Header
    data: bytes

    @property
    def op(self) -> int:
        return self.hdr.opcode


@dataclass
class RawInitiator:
    port: int
    name: str = INITIATOR
    isid: bytes = b"\x80\x00\x00\x00\x00\x01"
    timeout: float = 5.0
    sock: socket.socket = field(init=False)
    cmdsn: int = 1
    expstatsn: int = 0
    itt: int = 0x100
    hd: bool = False
    dd: bool = False
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        self.sock.close()

    def next_itt(self) -> int:
        self.itt += 1
        return self.itt

    # -- framing
    def send(self, bhs: bytes, data: bytes = b"") -> None:
        out = bytearray(bhs)
        if self.hd:
            out += pdu.digest_bytes(bhs)
        if data:
            pad = b"\0" * pdu.pad_len(len(data))
            out += data + pad
            if self.dd:
                out += pdu.digest_bytes(data, pad)
        self.sock.sendall(out)

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed by target")
            buf += chunk
        return bytes(buf)

    def recv(self) -> Pdu:
        bhs = self.recv_exact(48)
        hdr = pdu.parse_bhs(bhs)
        if hdr.total_ahs_len:
            self.recv_exact(hdr.total_ahs_len * 4)
        if self.hd:
            assert self.recv_exact(4) == pdu.digest_bytes(bhs)
        data = b""
        if hdr.dsl:
            raw = self.recv_exact(hdr.dsl + pdu.pad_len(hdr.dsl))
            data = raw[: hdr.dsl]
            if self.dd:
                assert self.recv_exact(4) == pdu.digest_bytes(raw)
        if hdr.opcode in (Op.SCSI_RSP, Op.NOP_IN, Op.TEXT_RSP, Op.TMF_RSP, Op.LOGOUT_RSP,
                          Op.LOGIN_RSP) or (hdr.opcode == Op.DATA_IN and hdr.flags & 1):
            if not (hdr.opcode == Op.NOP_IN and hdr.itt == ALL_ONES):
                self.expstatsn = (hdr.words[1] + 1) & ALL_ONES
        return Pdu(hdr, data)

    # -- login
    def login(self, keys: dict[str, str] | None = None, *, session_type: str = "Normal",
              target: str = TEST_IQN) -> dict[str, str]:
        """Log in without authentication straight into the operational stage."""
        k = {"InitiatorName": self.name, "SessionType": session_type}
        if session_type == "Normal":
            k["TargetName"] = target
        k.update({"HeaderDigest": "None", "DataDigest": "None"})
        k.update(keys or {})
        rsp = self.login_pdu(k, csg=1, nsg=3, transit=True)
        st = rsp.hdr.raw[36] << 8 | rsp.hdr.raw[37]
        if st:
            raise LoginRefused(st)
        got = dict(parse_keys(rsp.data))
        assert rsp.hdr.flags & 0x80, got
        self.params = got
        self.hd = got.get("HeaderDigest") == "CRC32C"
        self.dd = got.get("DataDigest") == "CRC32C"
        return got

    def login_pdu(self, keys: dict[str, str], *, csg: int, nsg: int, transit: bool,
                  tsih: int = 0) -> Pdu:
        data = encode_keys(keys)
        bhs = pdu.encode_layout(
            Op.LOGIN_REQ, immediate=True, dsl=len(data),
            flags=(0x80 if transit else 0) | (csg << 2) | nsg, isid=self.isid, tsih=tsih,
            itt=self.next_itt(), cid=1, cmdsn=self.cmdsn, expstatsn=self.expstatsn,
        )
        self.send(bhs, data)
        return self.recv()

    # -- commands
    def scsi(self, cdb: bytes, *, lun: int = 0, read: int = 0, write: bytes | None = None,
             edtl: int | None = None, immediate_data: int = 0, final: bool = True,
             itt: int | None = None) -> int:
        """Send a SCSI Command (with up to ``immediate_data`` bytes of immediate data)."""
        itt = self.next_itt() if itt is None else itt
        flags = 0x80 if final else 0
        if read:
            flags |= 0x40
        if write is not None:
            flags |= 0x20
        length = edtl if edtl is not None else (read or (len(write) if write else 0))
        data = write[:immediate_data] if write is not None else b""
        bhs = struct.pack(">BBBBI8sIIII16s", Op.SCSI_CMD, flags, 0, 0, len(data),
                          pdu.encode_lun(lun), itt, length, self.cmdsn, self.expstatsn,
                          cdb.ljust(16, b"\0"))
        self.cmdsn = (self.cmdsn + 1) & ALL_ONES
        self.send(bhs, data)
        return itt

    def data_out(self, itt: int, ttt: int, offset: int, data: bytes, datasn: int,
                 final: bool, lun: int = 0) -> None:
        bhs = struct.pack(">BBBBI8sIIIIIIII", Op.DATA_OUT, 0x80 if final else 0, 0, 0,
                          len(data), pdu.encode_lun(lun), itt, ttt, 0, self.expstatsn, 0,
                          datasn, offset, 0)
        self.send(bhs, data)

    def collect(self, itt: int) -> tuple[Pdu, bytes]:
        """Read Data-In until the status arrives; returns the status-bearing PDU and data."""
        data = bytearray()
        while True:
            p = self.recv()
            if p.op == Op.DATA_IN and p.hdr.itt == itt:
                assert p.hdr.words[5] == len(data)
                data += p.data
                if p.hdr.flags & 1:
                    return p, bytes(data)
            elif p.op == Op.SCSI_RSP and p.hdr.itt == itt:
                return p, bytes(data)
            elif p.op == Op.NOP_IN and p.hdr.itt == ALL_ONES:
                self.nop_reply(p)
            else:
                raise AssertionError(f"unexpected PDU 0x{p.op:02x} itt={p.hdr.itt:x}")

    def answers(self, itt: int) -> list[bytes]:
        """Every PDU of one command's answer, header and data, as bytes (to compare two
        runs' answers byte for byte)."""
        out = []
        while True:
            p = self.recv()
            assert p.hdr.itt == itt, f"unexpected PDU 0x{p.op:02x}"
            out.append(bytes(p.hdr.raw) + p.data)
            if p.op == Op.SCSI_RSP or (p.op == Op.DATA_IN and p.hdr.flags & 1):
                return out

    def nop_reply(self, ping: Pdu) -> None:
        bhs = pdu.encode_layout(Op.NOP_OUT, immediate=True, flags=0x80, itt=ALL_ONES,
                                ttt=ping.hdr.words[0], cmdsn=self.cmdsn,
                                expstatsn=self.expstatsn)
        self.send(bhs)

    def write(self, cdb: bytes, payload: bytes, lun: int = 1) -> Pdu:
        """A full write flow honouring the negotiated ImmediateData/InitialR2T/bursts."""
        p = self.params
        immediate = p.get("ImmediateData", "Yes") == "Yes"
        initial_r2t = p.get("InitialR2T", "Yes") == "Yes"
        first_burst = int(p.get("FirstBurstLength", 65536))
        mrdsl = int(p.get("MaxRecvDataSegmentLength", 8192))
        imm = min(len(payload), first_burst, mrdsl) if immediate else 0
        unsol_end = imm if initial_r2t else min(first_burst, len(payload))
        itt = self.scsi(cdb, lun=lun, write=payload, immediate_data=imm,
                        final=unsol_end == imm)
        off = imm
        datasn = 0
        while off < unsol_end:
            n = min(mrdsl, unsol_end - off)
            self.data_out(itt, ALL_ONES, off, payload[off:off + n], datasn,
                          off + n == unsol_end, lun)
            datasn += 1
            off += n
        while True:
            r = self.recv()
            if r.op == Op.R2T:
                ttt, _sn, offset, length = (r.hdr.words[0], r.hdr.words[4], r.hdr.words[5],
                                            r.hdr.words[6])
                sent = 0
                datasn = 0
                while sent < length:
                    n = min(mrdsl, length - sent)
                    o = offset + sent
                    self.data_out(itt, ttt, o, payload[o:o + n], datasn, sent + n == length,
                                  lun)
                    sent += n
                    datasn += 1
            elif r.op == Op.SCSI_RSP and r.hdr.itt == itt:
                return r
            else:
                raise AssertionError(f"unexpected PDU 0x{r.op:02x}")

    def nop(self, payload: bytes = b"") -> Pdu:
        bhs = pdu.encode_layout(Op.NOP_OUT, immediate=True, dsl=len(payload), flags=0x80,
                                itt=self.next_itt(), ttt=ALL_ONES, cmdsn=self.cmdsn,
                                expstatsn=self.expstatsn)
        self.send(bhs, payload)
        return self.recv()

    def logout(self) -> Pdu:
        bhs = pdu.encode_layout(Op.LOGOUT_REQ, immediate=True, flags=0x80,
                                itt=self.next_itt(), cid=1, cmdsn=self.cmdsn,
                                expstatsn=self.expstatsn)
        self.send(bhs)
        return self.recv()


@contextmanager
def two_sessions(devices: dict, *, paths=None, mrdsl: int = 262144,
                 first_burst: int = 262144) -> Iterator[tuple[RawInitiator, RawInitiator]]:
    """A target serving ``devices``, with sessions A and B (ISIDs ...01 and ...02) logged in
    with immediate data and no initial R2T, as the streaming fast path tests send. ``paths``:
    the fast paths' implementation the sessions take (stream_paths.ReferencePaths or the C
    module; None: the default). Both sessions log out at the block's normal end."""
    with pytest.MonkeyPatch.context() as mp:
        if paths is not None:
            mp.setattr(stream_paths, "paths", paths)
        with running_target(devices=devices) as t:
            a = RawInitiator(t.port, isid=b"\x80\0\0\0\0\x01")
            b = RawInitiator(t.port, isid=b"\x80\0\0\0\0\x02")
            try:
                for ini in (a, b):
                    ini.login({"MaxRecvDataSegmentLength": str(mrdsl), "ImmediateData": "Yes",
                               "InitialR2T": "No", "FirstBurstLength": str(first_burst)})
                yield a, b
                a.logout()
                b.logout()
            finally:
                a.close()
                b.close()


READ_POSITION = bytes([0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0])


def read6(n: int, flags: int = 0) -> bytes:
    """READ(6) of ``n`` bytes (or blocks, with the FIXED bit in ``flags``)."""
    return bytes([0x08, flags]) + n.to_bytes(3, "big") + b"\0"


def lbp_select(on: bool) -> tuple[bytes, bytes]:
    """MODE SELECT(10) of the control data protection page: CRC32C on reads and writes (or
    none); the CDB and its parameter data."""
    page = bytearray(8 + 32)
    page[8:12] = bytes([0x4A, 0xF0, 0, 28])
    page[12:15] = bytes([2, 4, 0xC0]) if on else bytes(3)
    return bytes([0x55, 0x10, 0, 0, 0, 0, 0, 0, len(page), 0]), bytes(page)


class LoginRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"login refused 0x{status:04x}")
        self.status = status


def scsi_status(p: Pdu) -> int:
    return p.hdr.b3


def sense_of(p: Pdu) -> bytes:
    if p.op != Op.SCSI_RSP or not p.data:
        return b""
    n = int.from_bytes(p.data[:2], "big")
    return p.data[2:2 + n]


class FakeDisk:
    """A tiny SBC disk (512-byte blocks) so libiscsi's iscsi-test-cu iSCSI suite, which
    checks CmdSN, DataSN, residuals and task management with block commands, can run against
    the target's protocol layer."""

    BLOCK = 512

    def __init__(self, blocks: int = 2048) -> None:
        self.data = bytearray(blocks * self.BLOCK)
        self.blocks = blocks
        self.resets: list[ResetKind] = []
        self.lost: list[Nexus] = []

    def _rw(self, cdb: bytes) -> tuple[int, int] | None:
        op = cdb[0]
        if op in (0x28, 0x2A, 0x2E):
            return int.from_bytes(cdb[2:6], "big"), int.from_bytes(cdb[7:9], "big")
        if op in (0xA8, 0xAA, 0xAE):
            return int.from_bytes(cdb[2:6], "big"), int.from_bytes(cdb[6:10], "big")
        if op in (0x88, 0x8A, 0x8E):
            return int.from_bytes(cdb[2:10], "big"), int.from_bytes(cdb[10:14], "big")
        return None

    def data_out_length(self, cdb: bytes) -> int | None:
        rw = self._rw(cdb)
        if rw is None or cdb[0] in (0x28, 0xA8, 0x88):
            return None
        return rw[1] * self.BLOCK

    def execute(self, nexus: Nexus, cdb: bytes, data_out=None) -> ScsiResult:
        op = cdb[0]
        if op == 0x00:
            return ScsiResult()
        if op == 0x12:
            return _inquiry(cdb, 0, 0, "FAKEDISK", {0x00: bytes([0, 0, 0, 1, 0])})
        if op == 0x25:
            return ScsiResult(data=struct.pack(">II", self.blocks - 1, self.BLOCK))
        if op == 0x9E and cdb[1] & 0x1F == 0x10:
            alloc = int.from_bytes(cdb[10:14], "big")
            return ScsiResult(data=struct.pack(">QI", self.blocks - 1, self.BLOCK)
                              .ljust(32, b"\0")[:alloc])
        if op == 0xA0:
            return ScsiResult(data=bytes([0, 0, 0, 8, 0, 0, 0, 0]) + bytes(8))
        if op == 0x1A:
            return ScsiResult(data=bytes([3, 0, 0, 0])[: cdb[4]])
        if op == 0x03:
            return ScsiResult(data=fixed_sense(SenseKey.NO_SENSE, 0, 0)[: cdb[4]])
        rw = self._rw(cdb)
        if rw is not None:
            lba, n = rw
            if lba + n > self.blocks:
                return ScsiResult(Status.CHECK_CONDITION, b"",
                                  fixed_sense(SenseKey.ILLEGAL_REQUEST, 0x21, 0))
            start, end = lba * self.BLOCK, (lba + n) * self.BLOCK
            if op in (0x28, 0xA8, 0x88):
                return ScsiResult(data=memoryview(self.data)[start:end])
            got = bytes(data_out or b"")[: end - start]
            self.data[start:start + len(got)] = got
            return ScsiResult()
        return invalid_opcode().result()

    def reset(self, kind: ResetKind, nexus: Nexus | None = None) -> None:
        self.resets.append(kind)

    def nexus_lost(self, nexus: Nexus) -> None:
        self.lost.append(nexus)
