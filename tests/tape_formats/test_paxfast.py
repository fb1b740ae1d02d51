"""The C extension tape_formats.archive._paxfast gives the bytes of the Python reference.

PaxWriter's Python path is the reference for the headers: every entry is written once with
the extension and once without it, and the two streams (and the locations and digests) must
be identical, for the plain files the extension takes and for the ones it hands back to
Python. The same for the header checksum and the trailer's JSON lines of a packed index.
"""

from __future__ import annotations

import io
import random

import pytest

from tape_formats.archive import (
    ArchiveCorrupt,
    ArchiveEntry,
    ArchiveError,
    IndexEntry,
    PackedIndex,
    PaxReader,
    PaxWriter,
    packed_index,
    pax,
    writer,
)

fast = pytest.importorskip("tape_formats.archive._paxfast", reason="C extension not built")


def _write(entries: list[tuple[ArchiveEntry, bytes]], monkeypatch, use_fast: bool):
    monkeypatch.setattr(writer, "_paxfast", fast if use_fast else None)
    out = io.BytesIO()
    w = PaxWriter(out)
    locs = [w.add(e, data) for e, data in entries]
    w.close()
    return out.getvalue(), locs


def _entries(seed: int, n: int) -> list[tuple[ArchiveEntry, bytes]]:
    rng = random.Random(seed)
    names = ["a", "d/f.txt", "x" * 100, "y" * 101, "z/" * 60 + "long", "caf\u00e9", "n\udcff",
             "sp ace", "q\"uote"]
    out = []
    for i in range(n):
        size = rng.choice([0, 1, 99, 511, 512, 513, 4096, rng.randrange(20000)])
        data = rng.randbytes(size)
        e = ArchiveEntry(
            path=rng.choice(names) + str(i) * rng.randrange(2), kind="file",
            mode=rng.choice([0o644, 0o4755, 0o7777, 0o100644]),
            uid=rng.choice([0, 1000, 2**21 - 1, 2**21, 2**32 - 2]),
            gid=rng.choice([0, 100, 2**21]),
            uname=rng.choice(["", "root", "u" * 32, "u" * 33, "j\u00f6"]),
            gname=rng.choice(["", "wheel"]),
            mtime_ns=rng.choice([0, 1_700_000_000 * 10**9, 1_700_000_000_123_456_789,
                                 1_700_000_000_100_000_000, -5, 8**11 * 10**9 + 7,
                                 rng.randrange(2**62)]),
            atime_ns=rng.choice([None, 0, 1_700_000_000_000_000_001, -3, rng.randrange(2**62)]),
        )
        e.size = size
        if i % 17 == 0:
            e.xattrs = {"user.k": b"v"}
        if i % 19 == 0:
            e.ctime_ns = 1_700_000_000_5
        out.append((e, data))
    return out


def test_fast_headers_equal_the_python_writer(monkeypatch):
    entries = _entries(1, 400)
    taken = sum(fast.file_headers(e.path.encode("utf-8", "surrogateescape"), e.mode, e.uid, e.gid,
                                  e.size, e.mtime_ns, e.atime_ns, e.uname.encode(errors="replace"),
                                  e.gname.encode()) is not None for e, _ in entries)
    assert 20 < taken < 380  # both paths are exercised
    slow, slow_locs = _write(entries, monkeypatch, use_fast=False)
    quick, quick_locs = _write(entries, monkeypatch, use_fast=True)
    assert quick == slow
    assert quick_locs == slow_locs
    back = [(e.path, e.mtime_ns, e.atime_ns, e.uid) for e, _ in PaxReader(io.BytesIO(quick))]
    assert back == [(e.path, e.mtime_ns, e.atime_ns, e.uid) for e, _ in entries]


def test_fast_path_declines_what_it_cannot_build():
    assert fast.file_headers(b"f", 0o644, 0, 0, 1, 0, None, b"", b"") is not None
    for args in [(b"y" * 101, 0o644, 0, 0, 1, 0, None, b"", b""),
                 (b"caf\xc3\xa9", 0o644, 0, 0, 1, 0, None, b"", b""),
                 (b"f", 0o644, 2**21, 0, 1, 0, None, b"", b""),
                 (b"f", 0o644, 0, 0, 8**11, 0, None, b"", b""),
                 (b"f", 0o644, 0, 0, 1, -1, None, b"", b""),
                 (b"f", 0o644, 0, 0, 1, 0, -1, b"", b""),
                 (b"f", 0o644, 0, 0, 1, 0, None, b"u" * 33, b"")]:
        assert fast.file_headers(*args) is None, args


def test_header_sum_equals_the_python_sum():
    rng = random.Random(3)
    blocks = [bytes(512), bytes([255]) * 512, *(rng.randbytes(512) for _ in range(50))]
    for block in blocks:
        assert fast.header_sum(block) == pax._header_sum(block)
    with pytest.raises(ValueError):
        fast.header_sum(b"short")


def test_index_json_equals_the_python_lines(monkeypatch):
    """Names with quotes, control characters, non-UTF-8 bytes and non-ASCII text, every flag,
    read back in chunks that cut rows in two."""
    rows = [IndexEntry(path=".", kind="dir", mode=0o755, header_offset=0, data_offset=512),
            IndexEntry(path="a/f", kind="file", size=2**40, mtime_ns=-1, mode=0o4755,
                       uid=2**32 - 2, gid=7, sha256="ab" * 32, header_offset=1024,
                       data_offset=2048),
            IndexEntry(path="a/\udcff-raw\u00e9\u2028", kind="file", sha256="00" * 32, torn=True),
            IndexEntry(path='q"\\\x00\x01\x1f\x7f\b\f\n\r\t', kind="symlink",
                       linkname='"\t\udc80'),
            IndexEntry(path="gone", kind="fifo", deleted=True, header_offset=5, data_offset=5)]
    monkeypatch.setattr(packed_index, "_READ_CHUNK", 61)
    index = PackedIndex(rows * 7)
    monkeypatch.setattr(packed_index, "_index_json", None)
    python_lines = b"".join(index.json_lines())
    monkeypatch.setattr(packed_index, "_index_json", fast.index_json)
    assert b"".join(index.json_lines()) == python_lines
    assert python_lines.count(b"\n") == len(rows) * 7


def _python_parse(block: bytes, monkeypatch):
    monkeypatch.setattr(pax, "ustar_fields", None)
    try:
        return pax.parse_ustar(block)
    except (ArchiveCorrupt, ArchiveError) as exc:
        return type(exc)
    finally:
        monkeypatch.undo()


def test_ustar_fields_equal_the_python_parse(monkeypatch):
    """Every block the C decoder accepts decodes to Python's fields; it declines the rest
    (old GNU magic, base-256, signed checksums, odd characters), never accepts a bad one."""
    rng = random.Random(5)
    blocks = []
    for _block in range(300):
        name = rng.choice([b"f", b"d/" * 70 + b"x", b"n" * 100,
                           bytes(rng.randrange(1, 256) for _ in range(20))])
        blocks.append(pax.build_ustar(
            name=name, mode=rng.choice([0o644, 0o7777, 2**21]),
            uid=rng.choice([0, 2**21 - 1, 2**22]),
            gid=rng.randrange(2**21), size=rng.choice([0, 1, 8**11 - 1, 8**11, 2**40]),
            mtime=rng.randrange(8**11), typeflag=rng.choice([b"0", b"5", b"x", b"\0"]),
            linkname=rng.choice([b"", b"t" * 100]), uname=b"u" * rng.randrange(33),
            gname=b"g", devmajor=rng.randrange(8), devminor=rng.randrange(8)))
    for block in list(blocks[:100]):
        for _ in range(3):  # corrupted: one byte anywhere, the checksum then fixed or not
            bad = bytearray(block)
            bad[rng.randrange(512)] = rng.choice([0, 32, ord("8"), ord("_"), 0x80, 0xFF, ord("1")])
            blocks.append(bytes(bad))
            fixed = bad[:148] + b"%06o\0 " % (sum(bad[:148]) + 256 + sum(bad[156:])) + bad[156:]
            blocks.append(bytes(fixed))
    gnu = bytearray(blocks[0])
    gnu[257:265] = b"ustar  \0"
    blocks.append(bytes(gnu))
    taken = 0
    for block in blocks:
        fields = fast.ustar_fields(block)
        expected = _python_parse(block, monkeypatch)
        if fields is not None:
            taken += 1
            assert pax.UstarHeader(*fields) == expected, block
    assert taken > 150
