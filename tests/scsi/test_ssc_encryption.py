"""SSC-4 tape data encryption through raw CDBs: what stenc sends, and reads without the key.

SECURITY PROTOCOL OUT (0xB5) with the set data encryption page gives the drive a key; blocks
written then are stored encrypted; SECURITY PROTOCOL IN (0xA2) reports capabilities, status
and the next block's encryption; a read without the key, or with another, is DATA PROTECT
74/01 or 74/03 and moves past the block, as on an LTO drive.
"""

from __future__ import annotations

import pytest
from test_ssc import A, B, MiB, check, good, pos, read, rewind, wfm, write

from vtl.library import Library
from vtl.scsi.base import Status
from vtl.scsi.ssc import TapeDrive

KEY = bytes(range(1, 33))
OTHER = bytes(32)


def spin(drv, page: int, alloc: int = 8192, protocol: int = 0x20, nexus=A) -> bytes:
    return good(drv, 0xA2, protocol, *page.to_bytes(2, "big"), 0, 0,
                *alloc.to_bytes(4, "big"), 0, 0, nexus=nexus)


def sde_page(enc: int, dec: int, key: bytes = b"", kad: bytes = b"", scope: int = 2,
             ckod: bool = False) -> bytes:
    """A set data encryption page as stenc builds it (CEEM 01b, scope all I_T nexus)."""
    body = bytearray(16)
    body[0] = scope << 5
    body[1] = 0x40 | (0x04 if ckod else 0)
    body[2], body[3], body[4] = enc, dec, 1 if key else 0
    body[14:16] = len(key).to_bytes(2, "big")
    body += key
    if kad:
        body += bytes([0, 0]) + len(kad).to_bytes(2, "big") + kad
    return (0x0010).to_bytes(2, "big") + len(body).to_bytes(2, "big") + bytes(body)


def spout_cdb(length: int, page: int = 0x0010, protocol: int = 0x20) -> tuple[int, ...]:
    return (0xB5, protocol, *page.to_bytes(2, "big"), 0, 0, *length.to_bytes(4, "big"), 0, 0)


def set_key(drv, enc: int = 2, dec: int = 3, key: bytes = KEY, kad: bytes = b"", **kw):
    page = sde_page(enc, dec, key, kad, **kw)
    good(drv, *spout_cdb(len(page)), data=page)


@pytest.fixture
def lib(fast_library):
    return fast_library("A00001L8", "A00002L8", capacity=4 * MiB)


@pytest.fixture
def drv(lib: Library):
    d = TapeDrive(lib.load("A00001L8", 0))
    check(d, 0, 0, 0, 0, 0, 0)  # power-on UA
    check(d, 0, 0, 0, 0, 0, 0, nexus=B)
    return d


def test_supported_pages_and_capabilities(drv) -> None:
    pages = spin(drv, 0x0000)
    listed = [int.from_bytes(pages[i:i + 2], "big") for i in range(4, len(pages), 2)]
    assert listed == [0x0000, 0x0001, 0x0010, 0x0020, 0x0021]
    assert spin(drv, 0x0000, protocol=0)[8:] == bytes([0x00, 0x20])
    caps = spin(drv, 0x0010)
    desc = caps[20:]
    assert int.from_bytes(caps[2:4], "big") == len(caps) - 4
    assert desc[0] == 1 and int.from_bytes(desc[10:12], "big") == 32
    assert int.from_bytes(desc[20:24], "big") == 0x00010014  # AES-256-GCM-128
    assert len(spin(drv, 0x0010, alloc=8)) == 8


def test_status_follows_the_key(drv) -> None:
    des = spin(drv, 0x0020)
    assert (des[5], des[6], des[7]) == (0, 0, 0) and len(des) == 24
    set_key(drv, kad=b"backup-key-1")
    des = spin(drv, 0x0020, nexus=B)  # every nexus sees the drive's settings
    assert des[4] >> 5 == 2 and (des[5], des[6], des[7]) == (2, 3, 1)
    assert int.from_bytes(des[8:12], "big") == 1  # key instance counter
    assert des[24:] == bytes([0, 0, 0, 12]) + b"backup-key-1"
    set_key(drv, enc=0, dec=0, key=b"")  # stenc -e off
    des = spin(drv, 0x0020)
    assert (des[5], des[6], des[7]) == (0, 0, 0) and int.from_bytes(des[8:12], "big") == 2


def test_encrypted_write_and_reads_with_and_without_the_key(drv, lib: Library) -> None:
    set_key(drv, kad=b"k1")
    assert write(drv, b"secret " * 100).status == Status.GOOD
    wfm(drv)
    set_key(drv, enc=0, dec=3, key=KEY)  # stop encrypting, keep decrypting
    assert write(drv, b"plain").status == Status.GOOD
    wfm(drv)
    raw = (lib.root / "cartridges" / "A00001L8.vtape").read_bytes()
    assert b"secret secret" not in raw and KEY not in raw
    rewind(drv)
    nbes = spin(drv, 0x0021)
    assert nbes[12] & 0x0F == 5 and nbes[13] == 1  # encrypted, able to decrypt
    assert good(drv, 0x08, 0, 0, 0x02, 0xBC, 0) == b"secret " * 100
    assert spin(drv, 0x0021)[12] & 0x0F == 2  # a filemark: not a logical block

    set_key(drv, enc=0, dec=0, key=b"")  # no key
    rewind(drv)
    nbes = spin(drv, 0x0021)
    assert nbes[12] & 0x0F == 6 and nbes[16:] == bytes([0, 0, 0, 2]) + b"k1"
    s = check(drv, 0x08, 0, 0, 0x02, 0xBC, 0)
    assert s.code == (7, 0x74, 0x01) and s.info == 700
    assert pos(drv) == 1  # moved past the block
    read(drv, 10)  # the filemark
    assert spin(drv, 0x0021)[12] & 0x0F == 3  # a plain block
    assert good(drv, 0x08, 0, 0, 0, 5, 0) == b"plain"

    set_key(drv, dec=3, key=OTHER)  # another key
    rewind(drv)
    assert check(drv, 0x08, 0, 0, 0x02, 0xBC, 0).code == (7, 0x74, 0x03)
    set_key(drv, dec=2)  # the right key, decrypt only: a plain block is refused
    rewind(drv)
    assert good(drv, 0x08, 0, 0, 0x02, 0xBC, 0) == b"secret " * 100
    read(drv, 10)
    assert check(drv, 0x08, 0, 0, 0, 5, 0).code == (7, 0x74, 0x02)


def test_the_key_is_never_stored_and_ckod_clears_it(drv, lib: Library) -> None:
    set_key(drv, ckod=True)
    write(drv, b"x" * 1000)
    wfm(drv)
    lib.unload(0)
    for f in (lib.root / "cartridges").iterdir():
        assert KEY not in f.read_bytes()
    drv2 = TapeDrive(lib.load("A00001L8", 1))
    check(drv2, 0, 0, 0, 0, 0, 0)
    assert check(drv2, 0x08, 0, 0, 0x03, 0xE8, 0).code == (7, 0x74, 0x01)
    lib.unload(1)
    lib.load("A00002L8", 0)
    check(drv, 0, 0, 0, 0, 0, 0)  # medium changed UA
    assert spin(drv, 0x0020)[5:8] == bytes(3)  # CKOD: the key went with the cartridge


@pytest.mark.parametrize(("page", "where"), [
    (sde_page(1, 0, KEY), (0x26, 6)),  # external encryption: not offered
    (sde_page(2, 1, KEY), (0x26, 7)),  # raw decryption: not offered
    (sde_page(2, 3, KEY[:16]), (0x26, 18)),  # not a 256-bit key
    (sde_page(2, 3, KEY, kad=b"k" * 40), (0x26, 54)),  # a KAD too long
    (sde_page(2, 3, KEY, scope=5), (0x26, 4)),
])
def test_bad_pages_are_refused(drv, page: bytes, where: tuple[int, int]) -> None:
    s = check(drv, *spout_cdb(len(page)), data=page)
    assert (s.asc, s.fp) == where and s.key == 5
    assert spin(drv, 0x0020)[5:8] == bytes(3)  # nothing changed


def test_bad_cdbs_are_refused(drv) -> None:
    assert check(drv, 0xA2, 0x21, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0).fp == 1  # protocol
    assert check(drv, 0xA2, 0x20, 0, 0x30, 0, 0, 0, 0, 1, 0, 0, 0).fp == 2  # page
    assert check(drv, 0xA2, 0x20, 0, 0x20, 0x80, 0, 0, 0, 1, 0, 0, 0).fp == 4  # INC_512
    page = sde_page(2, 3, KEY)
    assert check(drv, *spout_cdb(len(page), page=0x11), data=page).fp == 2
    s = check(drv, *spout_cdb(10), data=page[:10])
    assert s.code == (5, 0x1A, 0)
