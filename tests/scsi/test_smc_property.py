"""Property tests of the changer: random moves against a reference model, random CDB bytes.

The reference is a dict address -> barcode plus the SMC rules for MOVE MEDIUM. Every step
compares the changer's answer (status and ASC/ASCQ) and then the inventory READ ELEMENT STATUS
reports with the model, so a wrong sense code or a lost cartridge shows as the first step
where they differ.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vtl.config import LibraryConfig
from vtl.library import Library
from vtl.scsi.base import Nexus, Status
from vtl.scsi.smc import MediumChanger

A = Nexus("iqn.model,i,0x1", "iqn.model")
TRANSPORT, MAILSLOTS, DRIVES, SLOTS = [1], [16, 17], [256, 257], list(range(1024, 1030))
ADDRESSES = TRANSPORT + MAILSLOTS + DRIVES + SLOTS + [0, 2, 18, 300, 1030, 0xFFFF]
SMC_OPCODES = [0x07, 0x2B, 0x37, 0xA5, 0xA6, 0xB8, 0xE7, 0x1A, 0x5A, 0x1E, 0x00, 0x03, 0x12]


def make(tmp: Path) -> tuple[Library, MediumChanger]:
    lib = Library.create(tmp / "lib", LibraryConfig(drives=2, slots=6, mailslots=2))
    lib.create_cartridges(["M00001L8", "M00002L8", "M00003L8"], capacity=1 << 20)
    dev = MediumChanger(lib)
    dev.execute(A, bytes(6))  # power-on UNIT ATTENTION
    return lib, dev


def inventory(dev: MediumChanger) -> dict[int, str | None]:
    r = dev.execute(A, bytes.fromhex("b8 10 0000 ffff 00 00ffff 00 00".replace(" ", "")))
    assert r.status == Status.GOOD, r.sense.hex()
    data, out, p = bytes(r.data), {}, 8
    assert int.from_bytes(data[5:8], "big") == len(data) - 8
    while p < len(data):
        dlen = int.from_bytes(data[p + 2 : p + 4], "big")
        blen = int.from_bytes(data[p + 5 : p + 8], "big")
        for i in range(p + 8, p + 8 + blen, dlen):
            d = data[i : i + dlen]
            out[int.from_bytes(d[:2], "big")] = d[12:44].decode().strip() if d[2] & 1 else None
        p += 8 + blen
    return out


def expected(model: dict[int, str | None], src: int, dst: int) -> tuple[int, int] | None:
    """(ASC, ASCQ) MOVE MEDIUM must fail with, or None for success (and apply it)."""
    holds = MAILSLOTS + DRIVES + SLOTS
    if src not in holds or dst not in holds:
        return (0x21, 0x01)
    if model[src] is None:
        return (0x3B, 0x0E)
    if src != dst and model[dst] is not None:
        return (0x3B, 0x0D)
    model[dst], model[src] = model[src], (None if src != dst else model[src])
    return None


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moves=st.lists(st.tuples(st.sampled_from(ADDRESSES), st.sampled_from(ADDRESSES)),
                      min_size=1, max_size=25))
def test_random_moves_match_reference(tmp_path_factory, moves):
    lib, dev = make(tmp_path_factory.mktemp("smc"))
    try:
        model = {a: None for a in TRANSPORT + MAILSLOTS + DRIVES + SLOTS}
        model.update({1024: "M00001L8", 1025: "M00002L8", 1026: "M00003L8"})
        assert inventory(dev) == model
        for src, dst in moves:
            cdb = bytes([0xA5, 0, 0, 1]) + src.to_bytes(2, "big") + dst.to_bytes(2, "big") + bytes(4)
            want = expected(model, src, dst)
            r = dev.execute(A, cdb)
            if want is None:
                assert r.status == Status.GOOD, (src, dst, r.sense.hex())
            else:
                assert r.status == Status.CHECK_CONDITION, (src, dst)
                assert (r.sense[2] & 0x0F, r.sense[12], r.sense[13]) == (0x05, *want), (src, dst)
            assert inventory(dev) == model, (src, dst)
    finally:
        lib.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(op=st.sampled_from(SMC_OPCODES), rest=st.binary(min_size=0, max_size=15))
def test_random_cdbs_always_get_a_clean_answer(changer_for_fuzz, op, rest):
    lib, dev = changer_for_fuzz
    r = dev.execute(A, bytes([op]) + rest)
    assert r.status in (Status.GOOD, Status.CHECK_CONDITION), r
    if r.status == Status.CHECK_CONDITION:
        assert len(r.sense) == 18 and r.sense[0] == 0x70
        assert (r.sense[2] & 0x0F) in (0x02, 0x05, 0x06), r.sense.hex()  # never HARDWARE ERROR
    # every cartridge is still somewhere, once
    barcodes = [b for b in inventory(dev).values() if b]
    assert sorted(barcodes) == sorted(set(barcodes)) and len(barcodes) + len(
        [e for e in lib.catalog.cartridges() if e["address"] is None]) == 3


@pytest.fixture(scope="module")
def changer_for_fuzz(tmp_path_factory):
    lib, dev = make(tmp_path_factory.mktemp("fuzz"))
    yield lib, dev
    lib.close()
