"""SPC-4 common commands of ScsiModel, driven with raw CDB bytes."""

from __future__ import annotations

import pytest

from vtl.scsi.base import Nexus, ResetKind, SenseKey, Status
from vtl.scsi.identities import changer_identity, drive_identity
from vtl.scsi.pages import LogPage, ModePage, counter
from vtl.scsi.spc import PR_WRITE, Request, ScsiModel, command, descriptor_sense

A = Nexus("iqn.a,i,0x1", "iqn.a")
B = Nexus("iqn.b,i,0x1", "iqn.b")


class Dummy(ScsiModel):
    PERIPHERAL_TYPE = 0x01

    def __init__(self) -> None:
        super().__init__(drive_identity("IBM-TD8"), "1013000123")
        self.changes: list[tuple[bytes, bytes]] = []
        self.add_mode_page(
            ModePage(0x0F, bytes([0xC0, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]),
                     bytes([0xC0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                     on_change=lambda o, n: self.changes.append((o, n)))
        )
        self.add_mode_page(ModePage(0x1C, bytes(10), subpage=0x01))
        self.counter = 5
        self.add_log_page(LogPage(0x0C, lambda: [counter(0, self.counter), counter(1, 7)],
                                  reset=self._reset_counter))
        self.prevented: list[bool] = []

    def _reset_counter(self) -> None:
        self.counter = 0

    def on_prevent_changed(self, prevented: bool) -> None:
        self.prevented.append(prevented)

    @command(0xC0, "VENDOR WRITE", "c0 01 ff 00 00 00", pr=PR_WRITE)
    def vendor(self, req: Request) -> bytes:
        return b"ok"

    @command(0xC1, "CRASH", "c1 00 00 00 00 00")
    def crash(self, req: Request) -> None:
        raise RuntimeError("boom")


def run(dev, cdb, data=None, nexus=A):
    return dev.execute(nexus, bytes(cdb), data)


def sense_of(r):
    s = r.sense or bytes(r.data)  # REQUEST SENSE returns sense as data
    return s[2] & 0x0F, s[12], s[13]


@pytest.fixture
def dev():
    d = Dummy()
    # Consume the power-on UA for A and B.
    for nx in (A, B):
        r = run(d, [0, 0, 0, 0, 0, 0], nexus=nx)
        assert r.status == Status.CHECK_CONDITION and sense_of(r) == (6, 0x29, 0x00)
    return d


def test_power_on_ua_once_then_good():
    d = Dummy()
    r = run(d, [0x00] * 6)
    assert sense_of(r) == (SenseKey.UNIT_ATTENTION, 0x29, 0)
    assert run(d, [0x00] * 6).status == Status.GOOD


def test_inquiry_exempt_from_ua_and_standard_data():
    d = Dummy()
    r = run(d, [0x12, 0, 0, 0, 96, 0])
    assert r.status == Status.GOOD
    data = bytes(r.data)
    assert data[0] == 0x01 and data[1] == 0x80 and data[2] == 0x06 and data[3] == 0x12
    assert data[4] == 91
    assert data[8:16] == b"IBM     " and data[16:32] == b"ULT3580-TD8     "
    assert data[32:36] == b"K4K1"
    # UA still pending for other commands.
    assert sense_of(run(d, [0] * 6))[0] == SenseKey.UNIT_ATTENTION


def test_inquiry_truncated_and_padded_cdb():
    d = Dummy()
    r = d.execute(A, bytes([0x12, 0, 0, 0, 5, 0]) + bytes(10))  # iSCSI pads CDBs to 16
    assert r.status == Status.GOOD and len(r.data) == 5


def test_inquiry_vpd_pages(dev):
    r = run(dev, [0x12, 1, 0x00, 0, 255, 0])
    assert bytes(r.data) == bytes([0x01, 0x00, 0, 3, 0x00, 0x80, 0x83])
    r = run(dev, [0x12, 1, 0x80, 0, 255, 0])
    assert bytes(r.data)[4:] == b"1013000123"
    r = run(dev, [0x12, 1, 0x83, 0, 255, 0])
    d = bytes(r.data)
    assert d[1] == 0x83
    assert int.from_bytes(d[2:4], "big") == len(d) - 4
    # first designator: T10 vendor id, ASCII
    assert d[4] == 0x02 and d[5] == 0x01 and d[8:16] == b"IBM     "
    # second: NAA 5 binary
    off = 4 + 4 + d[7]
    assert d[off] == 0x01 and d[off + 1] == 0x03 and d[off + 3] == 8 and d[off + 4] >> 4 == 5


def test_inquiry_bad_fields(dev):
    r = run(dev, [0x12, 1, 0x99, 0, 255, 0])
    assert sense_of(r) == (5, 0x24, 0) and r.sense[15] & 0xC0 == 0xC0 and r.sense[17] == 2
    r = run(dev, [0x12, 0, 0x80, 0, 255, 0])  # page code without EVPD
    assert sense_of(r) == (5, 0x24, 0)
    r = run(dev, [0x12, 2, 0, 0, 255, 0])  # CMDDT
    assert sense_of(r) == (5, 0x24, 0) and r.sense[17] == 1 and r.sense[15] == 0xC9


def test_unsupported_opcode_and_short_cdb(dev):
    r = run(dev, [0xFE, 0, 0, 0, 0, 0])
    assert sense_of(r) == (5, 0x20, 0)
    r = run(dev, [0x12, 0, 0])
    assert sense_of(r) == (5, 0x24, 0)
    r = dev.execute(A, b"")
    assert sense_of(r) == (5, 0x20, 0)


def test_reserved_bit_rejected_with_field_pointer(dev):
    r = run(dev, [0x00, 0x02, 0, 0, 0, 0])
    assert sense_of(r) == (5, 0x24, 0)
    assert r.sense[15] == 0xC0 | 0x08 | 1 and r.sense[16:18] == b"\x00\x01"
    # NACA in control byte is not supported
    r = run(dev, [0x00, 0, 0, 0, 0, 0x04])
    assert sense_of(r) == (5, 0x24, 0) and r.sense[17] == 5


def test_internal_error_is_hardware_error(dev):
    r = run(dev, [0xC1, 0, 0, 0, 0, 0])
    assert sense_of(r) == (SenseKey.HARDWARE_ERROR, 0x44, 0)


def test_request_sense_returns_and_clears(dev):
    run(dev, [0xFE, 0, 0, 0, 0, 0])
    r = run(dev, [0x03, 0, 0, 0, 18, 0])
    assert r.status == Status.GOOD and sense_of(r) == (5, 0x20, 0)
    r = run(dev, [0x03, 0, 0, 0, 18, 0])
    assert sense_of(r) == (0, 0, 0)
    # descriptor format
    run(dev, [0xFE, 0, 0, 0, 0, 0])
    r = run(dev, [0x03, 1, 0, 0, 252, 0])
    d = bytes(r.data)
    assert d[0] == 0x72 and d[1] == 5 and d[2] == 0x20


def test_request_sense_reports_ua():
    d = Dummy()
    r = run(d, [0x03, 0, 0, 0, 18, 0])
    assert r.status == Status.GOOD and sense_of(r) == (6, 0x29, 0)
    assert run(d, [0] * 6).status == Status.GOOD


def test_descriptor_sense_conversion():
    from vtl.scsi.base import fixed_sense

    fixed = fixed_sense(SenseKey.NO_SENSE, 0, 1, information=5, filemark=True, ili=True)
    d = descriptor_sense(fixed)
    assert d[:4] == bytes([0x72, 0, 0, 1])
    assert d[8:12] == bytes([0, 0x0A, 0x80, 0]) and int.from_bytes(d[12:20], "big") == 5
    assert d[20:24] == bytes([0x04, 0x02, 0, 0xA0])


def test_report_luns(dev):
    dev.luns = [0, 3]
    r = run(dev, [0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0])
    d = bytes(r.data)
    assert d[:4] == (16).to_bytes(4, "big") and d[8:10] == b"\x00\x00" and d[16:18] == b"\x00\x03"
    r = run(dev, [0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0])
    assert sense_of(r) == (5, 0x24, 0)


def test_mode_sense6_all_pages(dev):
    r = run(dev, [0x1A, 0, 0x3F, 0, 255, 0])
    d = bytes(r.data)
    assert d[0] == len(d) - 1 and d[3] == 0
    assert d[4] == 0x0F and d[5] == 14
    # subpage 1C/01 only with subpage FF
    assert 0x5C not in d[4:]
    r = run(dev, [0x1A, 0, 0x3F, 0xFF, 255, 0])
    d = bytes(r.data)
    assert d[4 + 16] == 0x40 | 0x1C and d[4 + 17] == 0x01 and d[4 + 19] == 10


def test_mode_sense_pc_and_unknown(dev):
    r = run(dev, [0x1A, 0, 0x40 | 0x0F, 0, 255, 0])  # changeable
    assert bytes(r.data)[6:8] == bytes([0xC0, 0x80])
    r = run(dev, [0x1A, 0, 0xC0 | 0x0F, 0, 255, 0])  # saved: not supported
    assert sense_of(r) == (5, 0x39, 0)
    r = run(dev, [0x1A, 0, 0x22, 0, 255, 0])
    assert sense_of(r) == (5, 0x24, 0)
    r = run(dev, [0x5A, 0, 0x0F, 0, 0, 0, 0, 0, 255, 0])
    d = bytes(r.data)
    assert int.from_bytes(d[:2], "big") == len(d) - 2 and d[8] == 0x0F


def test_mode_select_changes_and_ua(dev):
    page = bytes([0x0F, 14, 0x40, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])
    r = run(dev, [0x15, 0x10, 0, 0, 4 + len(page), 0], bytes(4) + page)
    assert r.status == Status.GOOD, r.sense
    assert dev.mode_page(0x0F).current[0] == 0x40 and dev.changes
    r = run(dev, [0x1A, 0, 0x0F, 0, 255, 0], nexus=B)
    assert sense_of(r) == (6, 0x2A, 0x01)
    assert run(dev, [0x1A, 0, 0x0F, 0, 255, 0], nexus=A).status == Status.GOOD


def test_mode_select_rejects_unchangeable(dev):
    page = bytes([0x0F, 14, 0xC0, 0x80, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0])
    r = run(dev, [0x15, 0x10, 0, 0, 4 + len(page), 0], bytes(4) + page)
    assert sense_of(r) == (5, 0x26, 0) and r.sense[15] & 0x40 == 0
    assert int.from_bytes(r.sense[16:18], "big") == 4 + 2 + 5
    bad_len = bytes([0x0F, 12]) + bytes(12)
    r = run(dev, [0x15, 0x10, 0, 0, 4 + len(bad_len), 0], bytes(4) + bad_len)
    assert sense_of(r) == (5, 0x26, 0)
    r = run(dev, [0x15, 0x10, 0, 0, 3, 0], bytes(3))
    assert sense_of(r) == (5, 0x1A, 0)
    r = run(dev, [0x15, 0x10, 0, 0, 20, 0], bytes(4))  # fewer bytes than promised
    assert sense_of(r) == (5, 0x1A, 0)
    unknown = bytes([0x05, 2, 0, 0])
    r = run(dev, [0x15, 0x10, 0, 0, 8, 0], bytes(4) + unknown)
    assert sense_of(r) == (5, 0x26, 0)
    r = run(dev, [0x15, 0x11, 0, 0, 4 + 16, 0], bytes(4) + page)  # SP: not savable
    assert sense_of(r) == (5, 0x24, 0)
    assert run(dev, [0x15, 0x10, 0, 0, 0, 0]).status == Status.GOOD


def test_log_sense(dev):
    r = run(dev, [0x4D, 0, 0x00, 0, 0, 0, 0, 0, 255, 0])
    assert bytes(r.data) == bytes([0, 0, 0, 2, 0x00, 0x0C])
    r = run(dev, [0x4D, 0, 0x00, 0xFF, 0, 0, 0, 0, 255, 0])
    assert bytes(r.data)[4:] == bytes([0, 0, 0x0C, 0, 0, 0xFF])
    r = run(dev, [0x4D, 0, 0x4C, 0, 0, 0, 0, 0, 255, 0])
    d = bytes(r.data)
    assert d[0] & 0x3F == 0x0C and int.from_bytes(d[2:4], "big") == 24
    assert int.from_bytes(d[8:16], "big") == 5
    r = run(dev, [0x4D, 0, 0x4C, 0, 0, 0, 1, 0, 255, 0])  # parameter pointer 1
    assert int.from_bytes(bytes(r.data)[2:4], "big") == 12
    r = run(dev, [0x4D, 0, 0x4C, 0, 0, 0, 9, 0, 255, 0])
    assert sense_of(r) == (5, 0x24, 0)
    r = run(dev, [0x4D, 0, 0x4D, 0, 0, 0, 0, 0, 255, 0])
    assert sense_of(r) == (5, 0x24, 0)
    # LOG SELECT PCR resets
    assert run(dev, [0x4C, 0x02, 0xC0, 0, 0, 0, 0, 0, 0, 0]).status == Status.GOOD
    assert dev.counter == 0
    r = run(dev, [0x4C, 0, 0xC0, 0, 0, 0, 0, 0, 8, 0], bytes([0x0C, 0, 0, 4, 0, 0, 0, 0]))
    assert sense_of(r) == (5, 0x26, 0)


def test_reserve6_conflicts(dev):
    assert run(dev, [0x16, 0, 0, 0, 0, 0]).status == Status.GOOD
    assert run(dev, [0xC0, 0, 0, 0, 0, 0], nexus=B).status == Status.RESERVATION_CONFLICT
    assert run(dev, [0x12, 0, 0, 0, 36, 0], nexus=B).status == Status.GOOD
    assert run(dev, [0x16, 0, 0, 0, 0, 0], nexus=B).status == Status.RESERVATION_CONFLICT
    assert run(dev, [0x17, 0, 0, 0, 0, 0], nexus=B).status == Status.GOOD  # no-op
    assert run(dev, [0xC0, 0, 0, 0, 0, 0], nexus=A).status == Status.GOOD
    assert run(dev, [0x17, 0, 0, 0, 0, 0]).status == Status.GOOD
    assert run(dev, [0xC0, 0, 0, 0, 0, 0], nexus=B).status == Status.GOOD
    run(dev, [0x16, 0, 0, 0, 0, 0])
    dev.nexus_lost(A)
    assert run(dev, [0xC0, 0, 0, 0, 0, 0], nexus=B).status == Status.GOOD


def pr_out(dev, sa, key, sa_key, typ=0, nexus=A, plen=24):
    params = key.to_bytes(8, "big") + sa_key.to_bytes(8, "big") + bytes(8)
    return run(dev, [0x5F, sa, typ, 0, 0, 0, 0, 0, plen, 0], params, nexus=nexus)


def pr_in(dev, sa, nexus=A):
    return bytes(run(dev, [0x5E, sa, 0, 0, 0, 0, 0, 1, 0, 0], nexus=nexus).data)


def test_persistent_reservations(dev):
    assert pr_out(dev, 0, 0, 0xAA).status == Status.GOOD
    assert pr_out(dev, 0, 0, 0xBB, nexus=B).status == Status.GOOD
    keys = pr_in(dev, 0)
    assert int.from_bytes(keys[4:8], "big") == 16
    assert {keys[8:16], keys[16:24]} == {(0xAA).to_bytes(8, "big"), (0xBB).to_bytes(8, "big")}
    # wrong key -> conflict
    assert pr_out(dev, 0, 0x11, 0xCC).status == Status.RESERVATION_CONFLICT
    # reserve write exclusive by A
    assert pr_out(dev, 1, 0xAA, 0, typ=1).status == Status.GOOD
    res = pr_in(dev, 1)
    assert res[8:16] == (0xAA).to_bytes(8, "big") and res[21] == 0x01
    # B cannot write, can read (WE); A can write
    assert run(dev, [0xC0, 0, 0, 0, 0, 0], nexus=B).status == Status.RESERVATION_CONFLICT
    assert run(dev, [0x1A, 0, 0x0F, 0, 255, 0], nexus=B).status == Status.GOOD
    assert run(dev, [0xC0, 0, 0, 0, 0, 0], nexus=A).status == Status.GOOD
    # RESERVE(6) under a PR is a conflict
    assert run(dev, [0x16, 0, 0, 0, 0, 0]).status == Status.RESERVATION_CONFLICT
    # B reserving conflicts
    assert pr_out(dev, 1, 0xBB, 0, typ=1, nexus=B).status == Status.RESERVATION_CONFLICT
    # release with wrong type
    r = pr_out(dev, 2, 0xAA, 0, typ=3)
    assert sense_of(r) == (5, 0x26, 0x04)
    # B preempts A
    assert pr_out(dev, 4, 0xBB, 0xAA, typ=3, nexus=B).status == Status.GOOD
    r = run(dev, [0x00] * 6, nexus=A)
    assert sense_of(r) == (6, 0x2A, 0x05)
    assert run(dev, [0x1A, 0, 0x0F, 0, 255, 0], nexus=A).status == Status.RESERVATION_CONFLICT
    res = pr_in(dev, 1)
    assert res[8:16] == (0xBB).to_bytes(8, "big") and res[21] == 0x03
    # A registers again and clears everything? only a registrant may clear
    assert pr_out(dev, 3, 0xAA, 0).status == Status.RESERVATION_CONFLICT
    assert pr_out(dev, 6, 0, 0xA1).status == Status.GOOD  # register and ignore
    assert pr_out(dev, 3, 0xA1, 0).status == Status.GOOD
    r = run(dev, [0x00] * 6, nexus=B)
    assert sense_of(r) == (6, 0x2A, 0x03)
    assert pr_in(dev, 1)[4:8] == bytes(4)
    assert run(dev, [0xC0, 0, 0, 0, 0, 0], nexus=B).status == Status.GOOD


def test_pr_registrants_only_and_param_errors(dev):
    pr_out(dev, 0, 0, 1)
    pr_out(dev, 0, 0, 2, nexus=B)
    assert pr_out(dev, 1, 1, 0, typ=5).status == Status.GOOD
    assert run(dev, [0xC0, 0, 0, 0, 0, 0], nexus=B).status == Status.GOOD  # registrant
    # holder unregisters -> released, UA to B
    assert pr_out(dev, 0, 1, 0).status == Status.GOOD
    assert sense_of(run(dev, [0] * 6, nexus=B)) == (6, 0x2A, 0x04)
    assert pr_out(dev, 0, 2, 3, nexus=B, plen=23).status == Status.CHECK_CONDITION
    r = pr_out(dev, 1, 2, 0, typ=2, nexus=B)
    assert sense_of(r) == (5, 0x24, 0)
    r = pr_out(dev, 4, 2, 0, typ=1, nexus=B)  # preempt key 0 without AR reservation
    assert sense_of(r) == (5, 0x26, 0)
    r = run(dev, [0x5E, 7, 0, 0, 0, 0, 0, 1, 0, 0])
    assert sense_of(r) == (5, 0x24, 0)
    caps = pr_in(dev, 2)
    assert caps[1] == 8 and caps[4] & 0x08


def test_prevent_allow(dev):
    assert run(dev, [0x1E, 0, 0, 0, 1, 0]).status == Status.GOOD
    assert dev.prevent_removal and dev.prevented == [True]
    run(dev, [0x1E, 0, 0, 0, 1, 0], nexus=B)
    run(dev, [0x1E, 0, 0, 0, 0, 0])
    assert dev.prevent_removal
    dev.nexus_lost(B)
    assert not dev.prevent_removal and dev.prevented == [True, False]
    r = run(dev, [0x1E, 0, 0, 0, 2, 0])
    assert sense_of(r) == (5, 0x24, 0)


def test_reset_queues_ua_and_clears_reserve(dev):
    run(dev, [0x16, 0, 0, 0, 0, 0])
    dev.reset(ResetKind.LUN_RESET)
    r = run(dev, [0] * 6, nexus=B)
    assert sense_of(r) == (6, 0x29, 0x03)
    assert run(dev, [0xC0, 0, 0, 0, 0, 0], nexus=B).status == Status.GOOD


def test_report_supported_opcodes(dev):
    r = run(dev, [0xA3, 0x0C, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0])
    d = bytes(r.data)
    n = int.from_bytes(d[:4], "big")
    assert n == len(d) - 4 and n % 8 == 0
    entries = {(d[i], int.from_bytes(d[i + 2 : i + 4], "big")) for i in range(4, len(d), 8)}
    assert (0x12, 0) in entries and (0x5F, 5) in entries and (0xA3, 0x0C) in entries
    # one command
    r = run(dev, [0xA3, 0x0C, 0x01, 0x12, 0, 0, 0, 0, 1, 0, 0, 0])
    assert bytes(r.data) == bytes([0, 3, 0, 6, 0x12, 0x01, 0xFF, 0xFF, 0xFF, 0x00])
    r = run(dev, [0xA3, 0x0C, 0x02, 0x5E, 0, 1, 0, 0, 1, 0, 0, 0])
    assert bytes(r.data)[:6] == bytes([0, 3, 0, 10, 0x5E, 0x01])
    r = run(dev, [0xA3, 0x0C, 0x01, 0x5E, 0, 0, 0, 0, 1, 0, 0, 0])
    assert sense_of(r) == (5, 0x24, 0)
    r = run(dev, [0xA3, 0x0C, 0x01, 0xEE, 0, 0, 0, 0, 1, 0, 0, 0])
    assert bytes(r.data)[1] == 0x01
    # with timeouts
    r = run(dev, [0xA3, 0x0C, 0x80, 0, 0, 0, 0, 0, 0x10, 0, 0, 0])
    d = bytes(r.data)
    assert (len(d) - 4) % 20 == 0 and d[4 + 5] & 0x02
    # unknown MAINTENANCE IN service action
    r = run(dev, [0xA3, 0x05, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0])
    assert sense_of(r) == (5, 0x24, 0)


def test_identities_lookup():
    assert changer_identity().product == "3573-TL"
    assert changer_identity("stk-l700").vendor == "STK"
    assert drive_identity("ULT3580-TD5").write_media[0] == "LTO-5"
    assert drive_identity("HP-LTO8").product == "Ultrium 8-SCSI"
    assert drive_identity("IBM-ULT3580-TD5").generation == 5
    assert drive_identity("HP-Ultrium 8-SCSI").vendor == "HP"
    assert changer_identity("IBM-3573-TL").product == "3573-TL"
    with pytest.raises(ValueError, match="emulated models"):
        drive_identity("nope")


def test_model_table_lists_every_identity():
    from vtl.scsi.identities import CHANGERS, DRIVES, model_table

    rows = model_table()
    assert len(rows) == len(DRIVES) + len(CHANGERS)
    assert {r["product"] for r in rows} >= {"ULT3580-TD8", "3573-TL", "L700", "Ultrium 8-SCSI"}
    assert [r["name"] for r in rows if r["default"]] == ["IBM-TD8", "IBM-3573-TL"]


def test_reservations_state_machine_directly():
    from vtl.scsi import reservations as r

    told: list[tuple] = []
    pr = r.PersistentReservations(lambda ua, nx: told.append((ua, nx)))
    assert pr.register(A, 0, 1, ignore_existing=False)
    assert pr.register(B, 0, 2, ignore_existing=False)
    assert pr.reserve(A, 1, 0, r.WRITE_EXCLUSIVE)
    assert pr.conflicts(B, r.WRITE) and not pr.conflicts(B, r.READ)
    # preempting one's own key changes the type and keeps the registration
    assert pr.preempt(A, 1, 1, 0, r.EXCLUSIVE_ACCESS)
    assert pr.keys == {A: 1, B: 2} and pr.reservation.type == r.EXCLUSIVE_ACCESS
    assert pr.conflicts(B, r.READ) and not pr.conflicts(A, r.WRITE)
    assert told and told[-1][1] == B  # B learns the reservation changed
    # all-registrants: everyone registered is a holder; preempt with key 0 takes it alone
    assert pr.release(A, 1, 0, r.EXCLUSIVE_ACCESS)
    assert pr.reserve(B, 2, 0, r.EXCLUSIVE_ACCESS_AR)
    assert not pr.conflicts(A, r.WRITE)
    assert pr.preempt(A, 1, 0, 0, r.WRITE_EXCLUSIVE)
    assert pr.keys == {A: 1} and pr.reservation.holder == A
    assert pr.read_reservation()[8:16] == (1).to_bytes(8, "big")
    gen = pr.generation
    assert not pr.clear(B, 2)  # not registered any more
    assert pr.clear(A, 1) and not pr.active and pr.generation == gen + 1


def test_mode_select10_and_subpage(dev):
    page = bytes([0x0F, 14, 0x40, 0x80, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])
    hdr = bytes(8)
    r = run(dev, [0x55, 0x10, 0, 0, 0, 0, 0, 0, 8 + len(page), 0], hdr + page)
    assert r.status == Status.GOOD and dev.mode_page(0x0F).current[0] == 0x40
    # a subpage-format page (0x1C/0x01) round-trips through MODE SENSE(10) and MODE SELECT(10)
    d = bytes(run(dev, [0x5A, 0x08, 0x1C, 0x01, 0, 0, 0, 0, 255, 0]).data)
    sub = d[8:]
    assert sub[0] == 0x5C and sub[1] == 0x01 and int.from_bytes(sub[2:4], "big") == 10
    r = run(dev, [0x55, 0x10, 0, 0, 0, 0, 0, 0, 8 + len(sub), 0], hdr + sub)
    assert r.status == Status.GOOD
    # truncated subpage header
    r = run(dev, [0x55, 0x10, 0, 0, 0, 0, 0, 0, 8 + 3, 0], hdr + sub[:3])
    assert sense_of(r) == (5, 0x1A, 0)


def test_log_select_parameter_list_and_sp(dev):
    assert sense_of(run(dev, [0x4C, 0x01, 0xC0, 0, 0, 0, 0, 0, 0, 0])) == (5, 0x24, 0)  # SP
    assert sense_of(run(dev, [0x4C, 0x02, 0xC0, 0, 0, 0, 0, 0, 4, 0], bytes(4))) == (5, 0x24, 0)
    r = run(dev, [0x4C, 0, 0xC0, 0, 0, 0, 0, 0, 6, 0], bytes([0x0C, 0, 0, 9, 0, 0]))
    assert sense_of(r) == (5, 0x1A, 0)  # page length runs past the list
    dev.counter = 9
    assert run(dev, [0x4C, 0, 0xC0 | 0x0C, 0, 0, 0, 0, 0, 0, 0]).status == Status.GOOD
    assert dev.counter == 0  # PC=3 with no list: reset that page to defaults


def test_report_luns_well_known_only(dev):
    d = bytes(run(dev, [0xA0, 0, 1, 0, 0, 0, 0, 0, 0, 64, 0, 0]).data)
    assert d[:4] == bytes(4) and len(d) == 8
    assert sense_of(run(dev, [0xA0, 0, 9, 0, 0, 0, 0, 0, 0, 64, 0, 0])) == (5, 0x24, 0)


def test_release6_under_persistent_reservation(dev):
    params = (0).to_bytes(8, "big") + (5).to_bytes(8, "big") + bytes(8)
    assert run(dev, [0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0], params).status == Status.GOOD
    params = (5).to_bytes(8, "big") + bytes(16)
    assert run(dev, [0x5F, 1, 1, 0, 0, 0, 0, 0, 24, 0], params).status == Status.GOOD
    assert run(dev, [0x17, 0, 0, 0, 0, 0], nexus=B).status == Status.RESERVATION_CONFLICT
    # APTPL and SPEC_I_PT are refused, not silently ignored
    bad = (5).to_bytes(8, "big") + bytes(12) + bytes([0x01, 0, 0, 0])
    assert sense_of(run(dev, [0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0], bad)) == (5, 0x26, 0)
    bad = (5).to_bytes(8, "big") + bytes(12) + bytes([0x08, 0, 0, 0])
    assert sense_of(run(dev, [0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0], bad)) == (5, 0x26, 0)
