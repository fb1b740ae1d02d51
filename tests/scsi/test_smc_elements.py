"""Byte-level tests of the pure SMC builders: element status data, CDB parsers, mode pages."""

from __future__ import annotations

import pytest

from vtl.scsi.base import CheckCondition, SenseKey
from vtl.scsi.smc_cdb import (
    parse_exchange_medium,
    parse_initialize_element_status,
    parse_initialize_element_status_with_range,
    parse_move_medium,
    parse_position_to_element,
)
from vtl.scsi.smc_elements import (
    ElementState,
    ElementTypeCode,
    MediumType,
    parse_read_element_status,
    read_element_status,
)
from vtl.scsi.smc_pages import (
    ElementRange,
    device_capabilities_page,
    element_address_assignment_page,
    transport_geometry_page,
)

T = ElementTypeCode

ELEMENTS = [
    ElementState(T.MEDIUM_TRANSPORT, 1),
    ElementState(T.IMPORT_EXPORT, 16, full=True, barcode="IMP001L8", impexp=True,
                 medium_type=MediumType.DATA),
    ElementState(T.IMPORT_EXPORT, 17),
    ElementState(T.DATA_TRANSFER, 256, full=True, barcode="A00003L8", source=1026,
                 device_id=b"VTLD000001", medium_type=MediumType.DATA),
    ElementState(T.DATA_TRANSFER, 257, device_id=b"VTLD000002"),
    ElementState(T.STORAGE, 1024, full=True, barcode="A00001L8", source=1024,
                 medium_type=MediumType.DATA),
    ElementState(T.STORAGE, 1025),
    ElementState(T.STORAGE, 1026),
]


def res_cdb(type_code=0, voltag=False, start=0, count=0xFFFF, alloc=0xFFFF, dvcid=False,
            curdata=False) -> bytes:
    cdb = bytearray(12)
    cdb[0] = 0xB8
    cdb[1] = type_code | (0x10 if voltag else 0)
    cdb[2:4] = start.to_bytes(2, "big")
    cdb[4:6] = count.to_bytes(2, "big")
    cdb[6] = (1 if dvcid else 0) | (2 if curdata else 0)
    cdb[7:10] = alloc.to_bytes(3, "big")
    return bytes(cdb)


def run(**kw) -> bytes:
    cdb = res_cdb(**kw)
    return read_element_status(ELEMENTS, parse_read_element_status(cdb))


def parse_report(data: bytes):
    """Walk a report the way mtx does; returns header fields and (type, desc_len, [desc])."""
    first = int.from_bytes(data[0:2], "big")
    n = int.from_bytes(data[2:4], "big")
    total = int.from_bytes(data[5:8], "big")
    pages = []
    p = 8
    while p < len(data):
        type_code, flags = data[p], data[p + 1]
        dlen = int.from_bytes(data[p + 2 : p + 4], "big")
        blen = int.from_bytes(data[p + 5 : p + 8], "big")
        body = data[p + 8 : p + 8 + blen]
        pages.append((type_code, flags, dlen, [body[i : i + dlen] for i in range(0, blen, dlen)]))
        p += 8 + blen
    return first, n, total, pages


def test_all_elements_no_voltag():
    data = run()
    first, n, total, pages = parse_report(data)
    assert first == 1 and n == 8 and total == len(data) - 8
    assert [pg[0] for pg in pages] == [1, 3, 4, 2]
    for _t, flags, dlen, descs in pages:
        assert flags == 0 and dlen == 12
        assert all(len(d) == 12 for d in descs)
    mt = pages[0][3][0]
    assert mt == bytes.fromhex("0001 00 00 0000 000000 00 0000".replace(" ", ""))


def test_descriptor_flags_per_type():
    _, _, _, pages = parse_report(run(voltag=True))
    ie_full, ie_empty = pages[1][3]
    assert ie_full[2] == 0x01 | 0x02 | 0x08 | 0x10 | 0x20  # full impexp access exenab inenab
    assert ie_empty[2] == 0x08 | 0x10 | 0x20
    dt_full, dt_empty = pages[2][3]
    assert dt_full[2] == 0x09 and dt_full[9] == 0x80 | 1
    assert dt_full[10:12] == (1026).to_bytes(2, "big")
    assert dt_empty[2] == 0x08 and dt_empty[9] == 0 and dt_empty[10:12] == b"\0\0"
    st = pages[3][3]
    assert st[0][2] == 0x09 and st[1][2] == 0x08


def test_voltag_is_space_padded_barcode():
    _, _, _, pages = parse_report(run(voltag=True))
    for _t, flags, dlen, _d in pages:
        assert flags == 0x80 and dlen == 48
    slot = pages[3][3][0]
    assert slot[12:44] == b"A00001L8".ljust(32, b" ")
    assert slot[44:48] == b"\0\0\0\0"
    assert pages[3][3][1][12:48] == bytes(36)  # empty element: no volume tag


def test_dvcid_only_on_data_transfer_elements():
    _, _, _, pages = parse_report(run(voltag=True, dvcid=True))
    dlens = {t: dlen for t, _f, dlen, _d in pages}
    assert dlens[1] == dlens[2] == dlens[3] == 48
    assert dlens[4] == 48 + 4 + 12
    d = pages[2][3][1]
    assert d[48:52] == bytes((2, 0, 0, 12))
    assert d[52:64] == b"VTLD000002  "
    _, _, _, pages = parse_report(run(type_code=4, dvcid=True))
    assert pages[0][2] == 12 + 4 + 12 and pages[0][3][0][16:26] == b"VTLD000001"


def test_each_type_with_start_and_count():
    for type_code, addrs in ((1, [1]), (2, [1024, 1025, 1026]), (3, [16, 17]), (4, [256, 257])):
        first, n, _total, pages = parse_report(run(type_code=type_code))
        assert len(pages) == 1 and pages[0][0] == type_code
        assert [int.from_bytes(d[:2], "big") for d in pages[0][3]] == addrs
        assert first == addrs[0] and n == len(addrs)
    first, n, _t, pages = parse_report(run(type_code=2, start=1025, count=1))
    assert first == 1025 and n == 1 and len(pages[0][3]) == 1
    # A start between elements reports from the next one (mtx's "all elements" walk).
    first, n, _t, pages = parse_report(run(start=18, count=3))
    assert first == 256 and n == 3 and [p[0] for p in pages] == [4, 2]


def test_truncation_keeps_full_counts():
    full = run(voltag=True)
    for alloc in (1, 7, 8, 9, 20, 100, len(full) - 1):
        cut = run(voltag=True, alloc=alloc)
        assert cut == full[:alloc]
    assert run(voltag=True, alloc=8)[5:8] == (len(full) - 8).to_bytes(3, "big")
    assert run(alloc=0) == b""


def test_count_zero_reports_header_only():
    assert run(count=0) == bytes(8)


def test_start_beyond_last_is_invalid_element_address():
    with pytest.raises(CheckCondition) as e:
        run(start=2000)
    assert (e.value.key, e.value.asc, e.value.ascq) == (SenseKey.ILLEGAL_REQUEST, 0x21, 0x01)
    with pytest.raises(CheckCondition) as e:
        run(type_code=1, start=2)
    assert e.value.asc == 0x21


@pytest.mark.parametrize(
    "mutate,byte",
    [(lambda c: c.__setitem__(1, 0x05), 1), (lambda c: c.__setitem__(6, 0x04), 6),
     (lambda c: c.__setitem__(10, 1), 10)],
)
def test_bad_read_element_status_fields(mutate, byte):
    cdb = bytearray(res_cdb())
    mutate(cdb)
    with pytest.raises(CheckCondition) as e:
        parse_read_element_status(bytes(cdb))
    assert e.value.asc == 0x24 and e.value.field_pointer == byte


def test_read_element_status_ignores_obsolete_lun_bits():
    req = parse_read_element_status(bytes([0xB8, 0x20 | 0x10 | 2]) + bytes(10))
    assert req.element_type == T.STORAGE and req.voltag


def test_move_medium_cdb():
    cdb = bytes.fromhex("a5 00 0001 0400 0100 0000 00 80".replace(" ", ""))
    m = parse_move_medium(cdb)
    assert (m.transport, m.source, m.destination, m.invert) == (1, 0x400, 0x100, False)
    with pytest.raises(CheckCondition) as e:
        parse_move_medium(cdb[:8] + b"\x01" + cdb[9:])
    assert e.value.field_pointer == 8
    with pytest.raises(CheckCondition) as e:
        parse_move_medium(cdb[:10] + b"\x02" + cdb[11:])
    assert e.value.field_pointer == 10
    with pytest.raises(CheckCondition):
        parse_move_medium(cdb[:6])


def test_other_cdbs():
    x = parse_exchange_medium(bytes.fromhex("a6 00 0001 0400 0100 0401 03 00".replace(" ", "")))
    assert (x.source, x.first_destination, x.second_destination, x.invert1, x.invert2) == (
        0x400, 0x100, 0x401, True, True)
    p = parse_position_to_element(bytes.fromhex("2b 00 0001 0400 0000 00 00".replace(" ", "")))
    assert (p.transport, p.destination, p.invert) == (1, 0x400, False)
    parse_initialize_element_status(bytes(6))
    with pytest.raises(CheckCondition):
        parse_initialize_element_status(bytes([7, 0, 1, 0, 0, 0]))
    r = parse_initialize_element_status_with_range(
        bytes.fromhex("37 01 0400 0000 0002 00 00".replace(" ", "")))
    assert r.ranged and not r.fast and r.start == 0x400 and r.count == 2
    with pytest.raises(CheckCondition):
        parse_initialize_element_status_with_range(bytes.fromhex("37 04" + "00" * 8))


def test_mode_pages():
    page = element_address_assignment_page(
        ElementRange(1, 1), ElementRange(1024, 40), ElementRange(16, 4), ElementRange(256, 4))
    assert page == bytes.fromhex(
        "1d12 0001 0001 0400 0028 0010 0004 0100 0004 0000".replace(" ", ""))
    assert element_address_assignment_page(
        ElementRange(1, 1), ElementRange(1024, 2), ElementRange(16, 0), ElementRange(256, 1)
    )[10:14] == bytes(4)
    assert transport_geometry_page() == bytes((0x1E, 2, 0, 0))
    caps = device_capabilities_page(
        [T.STORAGE, T.IMPORT_EXPORT, T.DATA_TRANSFER],
        [(s, d) for s in (T.STORAGE, T.IMPORT_EXPORT, T.DATA_TRANSFER)
         for d in (T.STORAGE, T.IMPORT_EXPORT, T.DATA_TRANSFER)],
    )
    assert caps == bytes.fromhex("1f12 0e00 000e0e0e 00000000 00000000 00000000".replace(" ", ""))


def test_type_with_no_elements_reports_empty():
    only = [e for e in ELEMENTS if e.type != T.IMPORT_EXPORT]
    req = parse_read_element_status(res_cdb(type_code=3, voltag=True))
    assert read_element_status(only, req) == bytes(8)
