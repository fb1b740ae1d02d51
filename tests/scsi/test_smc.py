"""The SMC medium changer driven with raw CDBs over a real library.

The ``library`` fixture (conftest) is 2 drives (256, 257), 8 slots (1024..1031), 2 mailslots
(16, 17), transport 1, with A00001L8..A00003L8 in slots 1024..1026.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vtl.library import Library
from vtl.scsi.base import Nexus, SenseKey, Status
from vtl.scsi.smc import MediumChanger
from vtl.scsi.smc_lock import mailslot_lock, set_mailslot_lock

A = Nexus("iqn.a,i,0x1", "iqn.a")
B = Nexus("iqn.b,i,0x1", "iqn.b")

MT, MAIL, DRIVE, SLOT = 1, 16, 256, 1024


def run(dev, cdb, nexus=A, data=None):
    return dev.execute(nexus, bytes(cdb), data)


def sense(r):
    assert r.status == Status.CHECK_CONDITION, r
    return r.sense[2] & 0x0F, r.sense[12], r.sense[13]


def ok(r):
    assert r.status == Status.GOOD, (r.status, r.sense.hex())
    return bytes(r.data)


def res(type_code=0, voltag=True, start=0, count=0xFFFF, alloc=0xFFFF, dvcid=False):
    cdb = bytearray(12)
    cdb[0] = 0xB8
    cdb[1] = type_code | (0x10 if voltag else 0)
    cdb[2:4] = start.to_bytes(2, "big")
    cdb[4:6] = count.to_bytes(2, "big")
    cdb[6] = 1 if dvcid else 0
    cdb[7:10] = alloc.to_bytes(3, "big")
    return cdb


def move(src, dst, transport=MT):
    return (bytes([0xA5, 0]) + transport.to_bytes(2, "big") + src.to_bytes(2, "big")
            + dst.to_bytes(2, "big") + bytes(4))


def exchange(src, first, second, transport=MT):
    return (bytes([0xA6, 0]) + transport.to_bytes(2, "big") + src.to_bytes(2, "big")
            + first.to_bytes(2, "big") + second.to_bytes(2, "big") + bytes(2))


def descriptors(data):
    """address -> (type, descriptor bytes), walking pages like mtx does."""
    out = {}
    p = 8
    while p < len(data):
        t = data[p]
        dlen = int.from_bytes(data[p + 2 : p + 4], "big")
        blen = int.from_bytes(data[p + 5 : p + 8], "big")
        for i in range(p + 8, p + 8 + blen, dlen):
            d = data[i : i + dlen]
            out[int.from_bytes(d[:2], "big")] = (t, d)
        p += 8 + blen
    return out


def status(dev, nexus=A):
    """address -> barcode (or None) from a full READ ELEMENT STATUS with volume tags."""
    out = {}
    for addr, (_t, d) in descriptors(ok(run(dev, res(), nexus))).items():
        out[addr] = d[12:44].decode().strip() if d[2] & 1 else None
    return out


@pytest.fixture
def changer(library):
    dev = MediumChanger(library)
    for nx in (A, B):
        run(dev, [0x00] * 6, nx)  # consume the power-on UNIT ATTENTION
        assert ok(run(dev, [0x00] * 6, nx)) == b""
    return dev


# ---------------------------------------------------------------- identity and mode pages
def test_inquiry_is_a_medium_changer(changer):
    data = ok(run(changer, [0x12, 0, 0, 0, 96, 0]))
    assert data[0] == 0x08
    assert data[8:16] == b"IBM     " and data[16:32] == b"3573-TL         "
    serial = ok(run(changer, [0x12, 1, 0x80, 0, 64, 0]))
    assert serial[4:] == changer.library.config.changer_serial.encode()


def test_mode_sense_element_address_assignment_like_mtx(changer):
    # mtx: MODE SENSE(6), DBD, page 0x1D, allocation 136
    data = ok(run(changer, [0x1A, 0x08, 0x1D, 0, 136, 0]))
    assert data[0] == len(data) - 1 and data[3] == 0  # no block descriptors
    page = data[4 + data[3]:]
    assert page == bytes.fromhex(
        "1d12" "0001 0001" "0400 0008" "0010 0002" "0100 0002" "0000".replace(" ", ""))


def test_mode_sense_geometry_capabilities_and_all_pages(changer):
    geo = ok(run(changer, [0x1A, 0x08, 0x1E, 0, 255, 0]))[4:]
    assert geo == bytes((0x1E, 2, 0, 0))
    caps = ok(run(changer, [0x1A, 0x08, 0x1F, 0, 255, 0]))[4:]
    assert caps[:2] == b"\x1f\x12" and caps[2] == 0x0E  # StorST StorIE StorDT
    assert caps[4:8] == bytes((0, 0x0E, 0x0E, 0x0E))  # MT->none, ST/IE/DT -> ST/IE/DT
    assert caps[12:16] == bytes((0, 0x0E, 0x0E, 0x0E))
    all_pages = ok(run(changer, [0x5A, 0x08, 0x3F, 0, 0, 0, 0, 0x10, 0, 0]))
    assert int.from_bytes(all_pages[:2], "big") == len(all_pages) - 2
    body = all_pages[8:]
    codes = []
    while body:
        codes.append(body[0] & 0x3F)
        body = body[2 + body[1]:]
    assert codes == [0x1D, 0x1E, 0x1F]
    changeable = ok(run(changer, [0x1A, 0x08, 0x5D, 0, 255, 0]))[4:]
    assert changeable[:2] == b"\x1d\x12" and changeable[2:] == bytes(18)


# ---------------------------------------------------------------- READ ELEMENT STATUS
def test_read_element_status_all_types(changer):
    data = ok(run(changer, res()))
    assert int.from_bytes(data[0:2], "big") == MT
    assert int.from_bytes(data[2:4], "big") == 1 + 2 + 2 + 8
    assert int.from_bytes(data[5:8], "big") == len(data) - 8
    st = status(changer)
    assert st[1024] == "A00001L8" and st[1025] == "A00002L8" and st[1026] == "A00003L8"
    assert all(st[a] is None for a in (1, 16, 17, 256, 257, *range(1027, 1032)))
    d = descriptors(data)
    assert d[1024][1][2] == 0x09  # full + access
    assert d[1024][1][12:44] == b"A00001L8".ljust(32)
    assert d[1024][1][9] == 0x01  # data medium; never moved, so no source (SVALID 0)


def test_read_element_status_each_type_without_voltag(changer):
    for t, addrs in ((1, [1]), (2, list(range(1024, 1032))), (3, [16, 17]), (4, [256, 257])):
        data = ok(run(changer, res(type_code=t, voltag=False)))
        assert data[8] == t and data[9] == 0
        assert int.from_bytes(data[10:12], "big") == 12
        assert sorted(descriptors(data)) == addrs


def test_dvcid_reports_drive_serials(changer, library):
    data = ok(run(changer, res(type_code=4, dvcid=True)))
    d = descriptors(data)
    for bay in library.drives:
        desc = d[bay.address][1]
        assert desc[48] == 2 and desc[49] == 0  # ASCII, vendor specific
        n = desc[51]
        assert desc[52 : 52 + n].rstrip() == bay.serial.encode()
    data = ok(run(changer, res(type_code=0, voltag=False, dvcid=True)))
    lens = {}
    p = 8
    while p < len(data):
        lens[data[p]] = int.from_bytes(data[p + 2 : p + 4], "big")
        p += 8 + int.from_bytes(data[p + 5 : p + 8], "big")
    assert lens[2] == lens[3] == lens[1] == 12 and lens[4] > 16


def test_drive_descriptor_names_its_lun_and_access(changer, library):
    d = descriptors(ok(run(changer, res(type_code=4))))
    assert d[256][1][6] == 0x10 | 1 and d[257][1][6] == 0x10 | 2  # LU VALID, LUN i+1
    assert d[256][1][2] & 0x08  # ACCESS
    # a drive claimed by another (live) process is out of the robot's reach
    from vtl.catalog import process_start_time

    library.catalog.conn.execute(
        "INSERT INTO drive_claims(drive, owner, pid, pid_start, host, since) "
        "VALUES (1, 'ebm', 1, ?, ?, 'now')", (process_start_time(1), socket.gethostname()))
    d = descriptors(ok(run(changer, res(type_code=4))))
    assert d[256][1][2] & 0x08 and not d[257][1][2] & 0x08
    assert sense(run(changer, move(1024, 257))) == (SenseKey.NOT_READY, 0x04, 0x07)


def test_read_element_status_start_count_and_truncation(changer):
    data = ok(run(changer, res(type_code=2, start=1025, count=2)))
    assert sorted(descriptors(data)) == [1025, 1026]
    full = ok(run(changer, res()))
    for alloc in (8, 16, 100):
        cut = ok(run(changer, res(alloc=alloc)))
        assert cut == full[:alloc]
        # the header still says how much there is, so mtx can retry with enough room
        assert int.from_bytes(cut[5:8], "big") + 8 == len(full)
    assert ok(run(changer, res(alloc=0))) == b""


def test_mtx_all_elements_walk_ends_with_invalid_element_address(changer):
    seen, nxt = [], 0
    while True:
        r = run(changer, res(start=nxt, count=3))
        if r.status != Status.GOOD:
            assert sense(r) == (SenseKey.ILLEGAL_REQUEST, 0x21, 0x01)
            break
        addrs = sorted(descriptors(bytes(r.data)))
        seen += addrs
        nxt = addrs[-1] + 1
    assert seen == [1, 16, 17, 256, 257, *range(1024, 1032)]


# ---------------------------------------------------------------- MOVE MEDIUM
PAIRS = [("ST", "IE"), ("IE", "ST"), ("ST", "DT"), ("DT", "ST"), ("IE", "DT"), ("DT", "IE"),
         ("ST", "ST"), ("DT", "DT"), ("IE", "IE")]


@pytest.mark.parametrize("src_kind,dst_kind", PAIRS)
def test_move_between_element_types(changer, library, src_kind, dst_kind):
    first = {"ST": 1024, "IE": 16, "DT": 256}
    second = {"ST": 1030, "IE": 17, "DT": 257}
    src = first[src_kind]
    dst = second[dst_kind] if src_kind == dst_kind else first[dst_kind]
    if src != 1024:
        ok(run(changer, move(1024, src)))
    ok(run(changer, move(src, dst)))
    st = status(changer)
    assert st[dst] == "A00001L8" and st[src] is None
    d = descriptors(ok(run(changer, res())))[dst][1]
    assert d[9] & 0x80 and int.from_bytes(d[10:12], "big") == src  # SVALID + source
    if dst_kind == "IE":
        assert d[2] & 0x02 == 0  # placed by the robot: IMPEXP clear
    # our own moves raise no UNIT ATTENTION, for us or for others
    assert ok(run(changer, [0] * 6, B)) == b""
    assert library.find("A00001L8").address == dst


def test_move_with_default_transport_address_zero(changer):
    ok(run(changer, move(1024, 256, transport=0)))
    assert status(changer)[256] == "A00001L8"


def test_move_errors(changer):
    assert sense(run(changer, move(1027, 256))) == (SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0E)
    assert sense(run(changer, move(1024, 1025))) == (SenseKey.ILLEGAL_REQUEST, 0x3B, 0x0D)
    assert sense(run(changer, move(1024, 999))) == (SenseKey.ILLEGAL_REQUEST, 0x21, 0x01)
    assert sense(run(changer, move(5000, 1030))) == (SenseKey.ILLEGAL_REQUEST, 0x21, 0x01)
    assert sense(run(changer, move(1024, 1030, transport=2)))[1:] == (0x21, 0x01)
    assert sense(run(changer, move(1024, MT)))[1:] == (0x21, 0x01)
    assert sense(run(changer, move(MT, 1030)))[1:] == (0x21, 0x01)
    r = run(changer, move(1024, 1030)[:10] + b"\x01\x00")  # INVERT: we cannot rotate
    assert sense(r) == (SenseKey.ILLEGAL_REQUEST, 0x24, 0x00)
    assert r.sense[15] & 0xC0 == 0xC0 and r.sense[16:18] == b"\x00\x0a"
    assert status(changer)[1024] == "A00001L8"  # nothing moved


def test_move_out_of_prevented_drive(changer, library):
    ok(run(changer, move(1024, 256)))
    library.drives[0].prevent_removal = True
    assert sense(run(changer, move(256, 1024))) == (SenseKey.ILLEGAL_REQUEST, 0x53, 0x02)
    library.drives[0].prevent_removal = False
    ok(run(changer, move(256, 1024)))


def test_move_of_busy_cartridge_is_not_ready(changer, library_root: Path):
    fd = os.open(library_root / "cartridges" / "A00002L8.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert sense(run(changer, move(1025, 256))) == (SenseKey.NOT_READY, 0x04, 0x07)
    finally:
        os.close(fd)
    ok(run(changer, move(1025, 256)))


def test_mtx_eepos_in_control_byte_is_accepted(changer):
    ok(run(changer, move(1024, 16)[:11] + b"\x40"))


# ---------------------------------------------------------------- EXCHANGE MEDIUM
def test_exchange_medium_to_empty_second_destination(changer):
    ok(run(changer, exchange(1024, 1025, 1030)))
    st = status(changer)
    assert st[1025] == "A00001L8" and st[1030] == "A00002L8" and st[1024] is None


def test_exchange_medium_swap(changer):
    ok(run(changer, move(1024, 256)))
    ok(run(changer, exchange(1025, 256, 1025)))
    st = status(changer)
    assert st[256] == "A00002L8" and st[1025] == "A00001L8"
    d = descriptors(ok(run(changer, res())))
    assert int.from_bytes(d[1025][1][10:12], "big") == 256


def test_exchange_errors(changer):
    assert sense(run(changer, exchange(1027, 1025, 1030)))[1:] == (0x3B, 0x0E)
    assert sense(run(changer, exchange(1024, 1027, 1030)))[1:] == (0x3B, 0x0E)
    assert sense(run(changer, exchange(1024, 1025, 1026)))[1:] == (0x3B, 0x0D)
    assert sense(run(changer, exchange(1024, 1025, 4000)))[1:] == (0x21, 0x01)


# ---------------------------------------------------------------- other SMC commands
def test_initialize_element_status_and_with_range(changer):
    ok(run(changer, [0x07, 0, 0, 0, 0, 0]))
    ok(run(changer, bytes.fromhex("37 00 0000 0000 0000 00 00".replace(" ", ""))))
    ok(run(changer, bytes.fromhex("37 01 0400 0000 0002 00 00".replace(" ", ""))))
    ok(run(changer, bytes.fromhex("e7 01 0100 0000 0001 00 00".replace(" ", ""))))
    r = run(changer, bytes.fromhex("37 01 0300 0000 0001 00 00".replace(" ", "")))
    assert sense(r)[1:] == (0x21, 0x01)
    assert sense(run(changer, [0x07, 0, 1, 0, 0, 0]))[1:] == (0x24, 0x00)


def test_position_to_element(changer):
    ok(run(changer, bytes.fromhex("2b 00 0001 0400 0000 00 00".replace(" ", ""))))
    ok(run(changer, bytes.fromhex("2b 00 0000 0100 0000 00 00".replace(" ", ""))))
    assert sense(run(changer, bytes.fromhex("2b 00 0001 0200 0000 00 00".replace(" ", ""))))[
        1:] == (0x21, 0x01)
    assert sense(run(changer, bytes.fromhex("2b 00 0005 0400 0000 00 00".replace(" ", ""))))[
        1:] == (0x21, 0x01)
    assert sense(run(changer, bytes.fromhex("2b 00 0001 0400 0000 01 00".replace(" ", ""))))[
        1:] == (0x24, 0x00)


def test_prevent_allow_locks_mailslots(changer, library, library_root):
    assert mailslot_lock(library.catalog) is None
    ok(run(changer, [0x1E, 0, 0, 0, 1, 0]))
    assert changer.mailslots_locked
    ok(run(changer, move(1024, 16)))  # the robot may still use the mailslots
    other = Library.open(library_root)  # what the CLI in another process sees
    try:
        lock = mailslot_lock(other.catalog)
        assert lock is not None and lock["pid"] == os.getpid()
        assert lock["owner"] == f"changer {library.config.changer_serial}"
        ok(run(changer, [0x1E, 0, 0, 0, 1, 0], B))
        ok(run(changer, [0x1E, 0, 0, 0, 0, 0]))
        assert mailslot_lock(other.catalog) is not None  # B still prevents
        changer.nexus_lost(B)
        assert mailslot_lock(other.catalog) is None
    finally:
        other.close()
    assert not changer.mailslots_locked


def test_stale_mailslot_lock_of_dead_process_does_not_count(library):
    set_mailslot_lock(library.catalog, True, "changer X")
    library.catalog.conn.execute("UPDATE smc_mailslot_lock SET pid = 2147483646")
    assert mailslot_lock(library.catalog) is None


def test_report_supported_opcodes_lists_smc_commands(changer):
    data = ok(run(changer, bytes.fromhex("a3 0c 00 00 0000 00001000 00 00".replace(" ", ""))))
    ops = {data[i] for i in range(4, len(data), 8)}
    assert {0xB8, 0xA5, 0xA6, 0x07, 0x37, 0x2B, 0x12, 0x1A} <= ops
    one = ok(run(changer, bytes.fromhex("a3 0c 01 b8 0000 00000100 00 00".replace(" ", ""))))
    assert one[1] & 0x07 == 3 and one[4:16] == bytes.fromhex("b8ffffffffff03ffffff0000")


# ---------------------------------------------------------------- malformed CDBs
@pytest.mark.parametrize(
    "cdb,asc,byte",
    [
        (bytes([0x08, 0, 0, 0, 1, 0]), 0x20, 0),  # READ(6): not a changer command
        (bytes([0xFF] + [0] * 11), 0x20, 0),
        (res(type_code=5), 0x24, 1),
        (res(type_code=0xF), 0x24, 1),
        (res()[:6] + b"\x04" + res()[7:], 0x24, 6),  # reserved bit in byte 6
        (res()[:10] + b"\x01" + res()[11:], 0x24, 10),
        (move(1024, 256)[:8] + b"\x01\x00" + move(1024, 256)[10:], 0x24, 8),
        (move(1024, 256)[:1] + b"\x01" + move(1024, 256)[2:], 0x24, 1),
        (res()[:5], 0x24, None),  # short CDB
    ],
)
def test_malformed_cdbs(changer, cdb, asc, byte):
    r = run(changer, cdb)
    assert sense(r)[:2] == (SenseKey.ILLEGAL_REQUEST, asc)
    if byte is not None:
        assert r.sense[15] & 0x80 and int.from_bytes(r.sense[16:18], "big") == byte
    # and the changer still works
    ok(run(changer, res()))


def test_obsolete_lun_bits_are_ignored(changer):
    cdb = res(type_code=2)
    cdb[1] |= 0x20
    assert sorted(descriptors(ok(run(changer, cdb))))[0] == 1024


# ---------------------------------------------------------------- cross-process changes
def test_import_from_another_process_raises_import_export_ua(changer, library, library_root):
    other = Library.open(library_root)
    try:
        other.create_cartridge("B00001L8", capacity=64 << 20, vault=True)
        other.import_cartridge("B00001L8")
    finally:
        other.close()
    for nexus in (A, B):
        r = run(changer, [0] * 6, nexus)
        assert sense(r) == (SenseKey.UNIT_ATTENTION, 0x28, 0x01)
        ok(run(changer, [0] * 6, nexus))
    d = descriptors(ok(run(changer, res(type_code=3))))
    assert d[16][1][2] & 0x03 == 0x03  # full, IMPEXP: put in by an operator
    assert d[16][1][9] & 0x80 == 0  # no source element
    assert d[16][1][12:20] == b"B00001L8"


def test_move_by_another_process_raises_medium_changed_ua(changer, library_root):
    other = Library.open(library_root)
    try:
        other.move_medium(1024, 256)
    finally:
        other.close()
    # INQUIRY does not report it, the next other command does
    ok(run(changer, [0x12, 0, 0, 0, 36, 0]))
    r = run(changer, res())
    assert sense(r) == (SenseKey.UNIT_ATTENTION, 0x28, 0x00)
    assert status(changer)[256] == "A00001L8"


def test_export_to_mailslot_by_another_process(changer, library_root):
    other = Library.open(library_root)
    try:
        other.export_cartridge("A00003L8")
        r = run(changer, [0] * 6)
        pending = {sense(r)[1:]}
        r = run(changer, [0] * 6)
        pending.add(sense(r)[1:])
        assert pending == {(0x28, 0x01), (0x28, 0x00)}  # mailslot filled, slot emptied
        ok(run(changer, [0] * 6))
        st = status(changer)
        assert st[1026] is None and st[16] == "A00003L8"
        d = descriptors(ok(run(changer, res(type_code=3))))[16][1]
        assert d[2] & 0x03 == 0x01  # full, IMPEXP clear: waiting to be taken out
        assert d[9] & 0x80 and int.from_bytes(d[10:12], "big") == 1026
        other.empty_mailslots()  # the operator takes it out
    finally:
        other.close()
    assert sense(run(changer, [0] * 6)) == (SenseKey.UNIT_ATTENTION, 0x28, 0x01)
    assert status(changer)[16] is None


def test_prevent_refuses_import_from_another_process(changer, library, library_root):
    library.create_cartridge("B00002L8", capacity=64 << 20, vault=True)
    script = (
        "import sys\n"
        "from vtl.library import Library, LibraryError\n"
        "lib = Library.open(sys.argv[1])\n"
        "try:\n"
        "    lib.import_cartridge('B00002L8')\n"
        "except LibraryError as e:\n"
        "    print(type(e).__name__, e)\n"
        "    sys.exit(3)\n"
    )
    ok(run(changer, [0x1E, 0, 0, 0, 1, 0]))
    r = subprocess.run([sys.executable, "-c", script, str(library_root)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "MediumRemovalPrevented" in r.stdout, r.stdout + r.stderr
    ok(run(changer, [0x1E, 0, 0, 0, 0, 0]))
    r = subprocess.run([sys.executable, "-c", script, str(library_root)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sense(run(changer, [0] * 6)) == (SenseKey.UNIT_ATTENTION, 0x28, 0x01)
    assert status(changer)[16] == "B00002L8"


def test_changer_without_barcode_reader_refuses_voltag(library):
    import dataclasses

    from vtl.scsi.identities import changer_identity

    ident = dataclasses.replace(changer_identity("STK-L700"), has_barcode_reader=False)
    dev = MediumChanger(library, ident)
    run(dev, [0] * 6)
    assert ok(run(dev, [0x12, 0, 0, 0, 36, 0]))[8:16] == b"STK     "
    r = run(dev, res(voltag=True))
    assert sense(r) == (SenseKey.ILLEGAL_REQUEST, 0x24, 0x00) and r.sense[15] == 0xC8 | 4
    assert descriptors(ok(run(dev, res(voltag=False))))[1024][1][2] & 1
