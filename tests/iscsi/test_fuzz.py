"""Fuzz the iSCSI target: malformed PDUs, garbage login text, out-of-window CmdSN and random
CDBs against the real changer and drive models. The target must never crash or hang: each bad
connection gets a reject/sense or is closed, and a well-behaved session keeps working."""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iscsi_support import RawInitiator, scsi_status, serving

from vtl.config import LibraryConfig
from vtl.iscsi import pdu
from vtl.iscsi.config import Limits, ServerConfig, TargetConfig
from vtl.iscsi.login import encode_keys
from vtl.iscsi.pdu import ALL_ONES, Op
from vtl.library import Library
from vtl.scsi.devices import build_device_set

IQN = "iqn.2026-11.org.vtl-ebm:fuzz"
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "50")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Iterator[tuple[int, Errors]]:
    root = tmp_path_factory.mktemp("fuzz") / "lib"
    lib = Library.create(root, LibraryConfig(drives=2, slots=4, mailslots=1))
    for i in range(3):
        lib.create_cartridge(f"FUZ00{i}L8", capacity=16 << 20)
    errors = Errors()
    logging.getLogger("vtl.iscsi").addHandler(errors)
    cfg = ServerConfig([TargetConfig(IQN, build_device_set(lib))], portals=[("127.0.0.1", 0)],
                       limits=Limits(nop_interval=0, login_timeout=5))
    try:
        with serving(cfg) as t:
            yield t.port, errors
    finally:
        lib.close()
        logging.getLogger("vtl.iscsi").removeHandler(errors)


@pytest.fixture(scope="module")
def witness(target) -> Iterator[RawInitiator]:
    """The well-behaved session that must keep working throughout."""
    port, _ = target
    ini = RawInitiator(port, isid=b"\x80\0\0\0\xaa\xaa", timeout=10)
    ini.login(target=IQN)
    yield ini
    ini.close()


def still_serving(ini: RawInitiator, errors: Errors) -> None:
    assert ini.nop(b"alive").data == b"alive"
    itt = ini.scsi(bytes([0x12, 0, 0, 0, 36, 0]), lun=1, read=36)
    rsp, data = ini.collect(itt)
    assert scsi_status(rsp) == 0 and data[0] == 0x01
    assert not errors.records, [r.getMessage() for r in errors.records]


def drain(sock: socket.socket, seconds: float = 0.1) -> bytes:
    """Read whatever the target answers until it goes quiet or closes (never blocks long)."""
    sock.settimeout(seconds)
    out = bytearray()
    try:
        while len(out) < 1 << 20:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ConnectionError, OSError):
        pass
    return bytes(out)


def answers_are_wellformed(raw: bytes, digests: bool = False) -> None:
    """Every complete PDU the target sent has a target opcode, sane lengths and (when
    negotiated) correct digests."""
    pos = 0
    while pos + 48 <= len(raw):
        h = pdu.parse_bhs(raw[pos:pos + 48])
        assert h.opcode in {int(o) for o in Op if o >= 0x20}, hex(h.opcode)
        assert h.total_ahs_len == 0
        if digests and pos + 52 <= len(raw):
            assert raw[pos + 48:pos + 52] == pdu.digest_bytes(raw[pos:pos + 48])
        seg = h.dsl + pdu.pad_len(h.dsl)
        pos += 48 + (4 if digests else 0) + seg + (4 if digests and h.dsl else 0)


opcodes = st.one_of(st.sampled_from([int(o) for o in Op]), st.integers(0, 0x3F))


@st.composite
def bhs(draw) -> bytes:
    raw = bytearray(draw(st.binary(min_size=48, max_size=48)))
    raw[0] = draw(opcodes) | (0x40 if draw(st.booleans()) else 0)
    raw[4] = draw(st.sampled_from([0, 0, 0, 1, 255]))
    dsl = draw(st.sampled_from([0, 0, 1, 7, 48, 512, 300000, 0xFFFFFF]))
    raw[5:8] = dsl.to_bytes(3, "big")
    return bytes(raw)


@FUZZ
@given(header=bhs(), payload=st.binary(max_size=600), logged_in=st.booleans(),
       digests=st.sampled_from([None, "good", "bad"]))
def test_malformed_pdus(target, witness, header, payload, logged_in, digests):
    port, errors = target
    ini = RawInitiator(port, isid=b"\x80\0\0\0\x01\x02", timeout=5)
    try:
        if logged_in:
            keys = {"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"} if digests else {}
            ini.login(keys, target=IQN)
        if logged_in and digests:
            hd = pdu.digest_bytes(header) if digests == "good" else b"\0\0\0\0"
            ini.sock.sendall(header + hd + payload)
        else:
            ini.sock.sendall(header + payload)
        answers_are_wellformed(drain(ini.sock), digests=bool(logged_in and digests))
    finally:
        ini.close()
    still_serving(witness, errors)


@FUZZ
@given(text=st.one_of(
    st.binary(max_size=400),
    st.lists(st.tuples(st.sampled_from(["InitiatorName", "TargetName", "SessionType",
                                         "AuthMethod", "HeaderDigest", "MaxBurstLength",
                                         "CHAP_A", "CHAP_R", "X-foo", "MaxConnections",
                                         "FirstBurstLength", "ErrorRecoveryLevel"]),
                       st.text(max_size=30)), max_size=8)
    .map(lambda kv: encode_keys([(k, v.replace("\0", "")) for k, v in kv]))),
    flags=st.integers(0, 255))
def test_garbage_login(target, witness, text, flags):
    port, errors = target
    ini = RawInitiator(port, isid=b"\x80\0\0\0\x01\x03", timeout=5)
    try:
        head = pdu.encode_layout(Op.LOGIN_REQ, immediate=True, dsl=len(text), flags=flags,
                                 isid=ini.isid, itt=1, cid=1, cmdsn=1)
        ini.send(head, text)
        answers_are_wellformed(drain(ini.sock))
    finally:
        ini.close()
    still_serving(witness, errors)


@FUZZ
@given(cdb=st.binary(min_size=6, max_size=16), lun=st.integers(0, 4),
       read=st.sampled_from([0, 0, 18, 512, 65536]), cmdsn_skew=st.sampled_from([0, 0, 0, 40,
                                                                                -5, 1 << 31]))
def test_random_cdbs_and_cmdsn(target, witness, cdb, lun, read, cmdsn_skew):
    port, errors = target
    ini = witness
    if cdb[0] in (0x04, 0x19, 0x91, 0x2C):  # FORMAT MEDIUM / ERASE(6)/(16) / long ops: skip
        cdb = b"\x00" + cdb[1:]
    if cmdsn_skew:
        good = ini.cmdsn
        ini.cmdsn = (good + cmdsn_skew) & ALL_ONES
        ini.scsi(cdb, lun=lun, read=read)  # outside the window: silently ignored
        ini.cmdsn = good
    itt = ini.scsi(cdb, lun=lun, read=read)
    rsp, data = ini.collect(itt)
    assert rsp.hdr.itt == itt
    assert len(data) <= read
    if scsi_status(rsp) == 2:
        n = struct.unpack(">H", rsp.data[:2])[0]
        assert n >= 8 and rsp.data[2] & 0x7F in (0x70, 0x71, 0x72, 0x73)
    still_serving(witness, errors)


def test_write_without_data_and_huge_lengths(target, witness):
    port, errors = target
    ini = RawInitiator(port, isid=b"\x80\0\0\0\x01\x04", timeout=5)
    ini.login(target=IQN)
    # A WRITE(6) that announces 1 MiB but never sends it: the target waits (R2T), the
    # connection is dropped by us, nothing leaks into other sessions.
    ini.scsi(bytes([0x0A, 0, 0x10, 0, 0, 0]), lun=1, write=b"", edtl=1 << 20)
    r2t = ini.recv()
    assert r2t.op == Op.R2T
    ini.close()
    # An Expected Data Transfer Length beyond what the target buffers: refused with sense.
    ini = RawInitiator(port, isid=b"\x80\0\0\0\x01\x05", timeout=5)
    ini.login(target=IQN)
    itt = ini.scsi(bytes([0x0A, 1, 0, 0, 1, 0]), lun=1, write=b"", edtl=0xFFFFFFF0)
    rsp, _ = ini.collect(itt)
    assert scsi_status(rsp) == 2
    ini.close()
    still_serving(witness, errors)
