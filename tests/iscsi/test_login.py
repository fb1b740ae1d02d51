"""The login state machine on its own: negotiation rules, CHAP, stage checks."""

from __future__ import annotations

import pytest

from vtl.iscsi import chap
from vtl.iscsi.chap import ChapCredentials
from vtl.iscsi.config import Limits, ServerConfig, TargetConfig
from vtl.iscsi.login import (
    LoginFailed,
    LoginHandler,
    LoginStatus,
    encode_keys,
    parse_keys,
)
from vtl.scsi.base import DeviceSet

IQN = "iqn.2026-11.org.vtl-ebm:unit"
INI = "iqn.2026-11.org.example:ini"
T1_CSG0_NSG1 = 0x81
T1_CSG1_NSG3 = 0x87
T0_CSG0 = 0x00


def server(**kw) -> ServerConfig:
    return ServerConfig([TargetConfig(IQN, DeviceSet({}), alias="unit")], **kw)


def keys(**kv: str) -> bytes:
    return encode_keys(list(kv.items()))


def first(**extra: str) -> bytes:
    return keys(InitiatorName=INI, TargetName=IQN, SessionType="Normal", **extra)


def test_operational_negotiation_functions():
    h = LoginHandler(server(limits=Limits(max_burst_length=1 << 20, first_burst_length=65536)))
    r = h.handle(T1_CSG1_NSG3, first(
        HeaderDigest="CRC32C,None", DataDigest="None", MaxBurstLength="4194304",
        FirstBurstLength="262144", InitialR2T="No", ImmediateData="Yes",
        MaxOutstandingR2T="8", DefaultTime2Wait="0", DefaultTime2Retain="20",
        ErrorRecoveryLevel="2", MaxConnections="4", MaxRecvDataSegmentLength="65536",
        DataPDUInOrder="No", IFMarker="No", OFMarkInt="2048", **{"X-vendor": "1"},
    ))
    got = dict(r.keys)
    assert r.complete and r.transit and r.nsg == 3
    assert got["TargetPortalGroupTag"] == "1" and got["TargetAlias"] == "unit"
    assert got["HeaderDigest"] == "CRC32C" and got["DataDigest"] == "None"
    assert got["MaxBurstLength"] == str(1 << 20)  # min
    assert got["FirstBurstLength"] == "65536"  # min
    assert got["InitialR2T"] == "No" and got["ImmediateData"] == "Yes"
    assert got["MaxOutstandingR2T"] == "4"
    assert got["DefaultTime2Wait"] == "2"  # max
    assert got["DefaultTime2Retain"] == "0"  # min
    assert got["ErrorRecoveryLevel"] == "0" and got["MaxConnections"] == "1"
    assert got["DataPDUInOrder"] == "Yes"  # OR with our Yes
    assert got["IFMarker"] == "No" and got["OFMarkInt"] == "Irrelevant"
    assert got["X-vendor"] == "NotUnderstood"
    assert got["MaxRecvDataSegmentLength"] == str(Limits().max_recv_data_segment_length)
    assert "MaxRecvDataSegmentLength" in got  # ours, declared
    p = h.params
    assert p.header_digest and not p.data_digest and p.max_xmit_dsl == 65536
    assert p.max_burst == 1 << 20 and p.first_burst == 65536 and not p.initial_r2t


def test_out_of_range_values_are_rejected_and_discovery_keys_irrelevant():
    h = LoginHandler(server())
    r = h.handle(T1_CSG1_NSG3, keys(InitiatorName=INI, SessionType="Discovery",
                                    MaxBurstLength="1", InitialR2T="Maybe",
                                    MaxRecvDataSegmentLength="100"))
    got = dict(r.keys)
    assert got["MaxBurstLength"] == "Irrelevant" and got["InitialR2T"] == "Irrelevant"
    assert ("MaxRecvDataSegmentLength", "Reject") in r.keys
    assert "TargetPortalGroupTag" not in got
    h = LoginHandler(server())
    got = dict(h.handle(T1_CSG1_NSG3, first(MaxBurstLength="1", InitialR2T="Maybe")).keys)
    assert got["MaxBurstLength"] == "Reject" and got["InitialR2T"] == "Reject"


@pytest.mark.parametrize("payload,status", [
    (keys(TargetName=IQN), LoginStatus.MISSING_PARAMETER),
    (keys(InitiatorName=INI), LoginStatus.MISSING_PARAMETER),
    (keys(InitiatorName=INI, TargetName="iqn.2026-11.org.example:none"), LoginStatus.NOT_FOUND),
    (keys(InitiatorName=INI, SessionType="Weird"), LoginStatus.SESSION_TYPE_NOT_SUPPORTED),
    (b"garbage-without-equals\0", LoginStatus.INITIATOR_ERROR),
    (b"\xff\xfe=1\0", LoginStatus.INITIATOR_ERROR),
])
def test_login_failures(payload, status):
    with pytest.raises(LoginFailed) as e:
        LoginHandler(server()).handle(T1_CSG1_NSG3, payload)
    assert e.value.status == status


def test_stage_rules():
    h = LoginHandler(server())
    with pytest.raises(LoginFailed):
        h.handle(0x8C | 3, first())  # CSG 3
    h = LoginHandler(server())
    r = h.handle(T1_CSG0_NSG1, first(AuthMethod="None"))
    assert r.transit and r.csg == 0 and r.nsg == 1 and not r.complete
    with pytest.raises(LoginFailed):
        h.handle(T0_CSG0, keys())  # back to security after moving on


def test_acl():
    cfg = ServerConfig([TargetConfig(IQN, DeviceSet({}), allowed_initiators=frozenset({"x"}))])
    with pytest.raises(LoginFailed) as e:
        LoginHandler(cfg).handle(T1_CSG1_NSG3, first())
    assert e.value.status == LoginStatus.AUTHORIZATION_FAILURE


def chap_login(cfg: ServerConfig, secret: str, mutual: tuple[int, bytes] | None = None):
    h = LoginHandler(cfg)
    r = h.handle(T1_CSG0_NSG1, first(AuthMethod="CHAP,None"))
    assert dict(r.keys)["AuthMethod"] == "CHAP" and not r.transit
    r = h.handle(T1_CSG0_NSG1, keys(CHAP_A="7,5"))
    got = dict(r.keys)
    assert got["CHAP_A"] == "5" and not r.transit
    ident = int(got["CHAP_I"])
    challenge = chap.decode_binary(got["CHAP_C"])
    answer = {"CHAP_N": "alice",
              "CHAP_R": chap.encode_binary(chap.response(ident, secret, challenge))}
    if mutual is not None:
        answer["CHAP_I"] = str(mutual[0])
        answer["CHAP_C"] = chap.encode_binary(mutual[1])
    return h, h.handle(T1_CSG0_NSG1, encode_keys(answer)), challenge


def test_chap_and_mutual_chap():
    cfg = server(chap=ChapCredentials("alice", "alice-secret-1"),
                 mutual_chap=ChapCredentials("target", "target-secret"))
    _, r, _ = chap_login(cfg, "alice-secret-1")
    assert r.transit and r.nsg == 1 and dict(r.keys) == {}
    c = b"0123456789abcdef"
    _, r, _ = chap_login(cfg, "alice-secret-1", mutual=(42, c))
    got = dict(r.keys)
    assert got["CHAP_N"] == "target"
    assert chap.decode_binary(got["CHAP_R"]) == chap.response(42, "target-secret", c)
    with pytest.raises(LoginFailed) as e:
        chap_login(cfg, "wrong-secret")
    assert e.value.status == LoginStatus.AUTH_FAILURE


def test_chap_refuses_reflection_none_and_skipping():
    cfg = server(chap=ChapCredentials("alice", "alice-secret-1"),
                 mutual_chap=ChapCredentials("target", "target-secret"))
    h = LoginHandler(cfg)
    h.handle(T1_CSG0_NSG1, first(AuthMethod="CHAP"))
    got = dict(h.handle(T1_CSG0_NSG1, keys(CHAP_A="5")).keys)
    ident, challenge = int(got["CHAP_I"]), chap.decode_binary(got["CHAP_C"])
    with pytest.raises(LoginFailed):  # the target's own challenge sent back
        h.handle(T1_CSG0_NSG1, encode_keys({
            "CHAP_N": "alice",
            "CHAP_R": chap.encode_binary(chap.response(ident, "alice-secret-1", challenge)),
            "CHAP_I": "1", "CHAP_C": chap.encode_binary(challenge)}))
    with pytest.raises(LoginFailed):
        LoginHandler(cfg).handle(T1_CSG0_NSG1, first(AuthMethod="None"))
    with pytest.raises(LoginFailed):
        LoginHandler(cfg).handle(T1_CSG1_NSG3, first())


def test_binary_encodings():
    assert chap.decode_binary("0x0a0B") == b"\x0a\x0b"
    assert chap.decode_binary("0bAAEC") == b"\x00\x01\x02"
    for bad in ("", "12", "0xZZ", "0b!!", "0x"):
        with pytest.raises(chap.ChapError):
            chap.decode_binary(bad)


def test_key_text_round_trip():
    pairs = [("A", "1"), ("B", "x,y"), ("C", "")]
    assert parse_keys(encode_keys(pairs)) == pairs


def test_login_pdus_by_struct_match_their_construct_layouts():
    """The event loop parses Login Requests and builds Login Responses with struct; the
    construct layouts in pdu.py stay the reference."""
    from vtl.iscsi import pdu
    from vtl.iscsi.pdu import Op

    req = pdu.encode_layout(Op.LOGIN_REQ, immediate=True, dsl=300, flags=0x87, version_max=0,
                            version_min=0, isid=b"\x80\x01\x02\x03\x04\x05", tsih=0x1234,
                            itt=0xDEADBEEF, cid=7, cmdsn=0xFFFFFFFE, expstatsn=42)
    want = pdu.decode_layout(req)
    got = pdu.parse_login_request(req)
    for name in got._fields:
        assert getattr(got, name) == getattr(want, name), name
    fields = dict(flags=0x81, isid=b"\x40\0\0\0\x10\x02", tsih=0xBEEF, itt=0x01020304,
                  statsn=0xFFFFFFFF, expcmdsn=5, maxcmdsn=36, status_class=2,
                  status_detail=3)
    assert pdu.login_response(dsl=70000, **fields) == pdu.encode_layout(
        Op.LOGIN_RSP, dsl=70000, version_max=0, version_active=0, **fields)
