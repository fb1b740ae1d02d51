"""The C header builder (tape_formats.archive._paxfast) writes PaxWriter's bytes exactly.

PaxWriter's Python path is the reference: every entry is written once with the extension and
once without it, and the two streams (and the locations and digests) must be identical, for
the plain files the extension takes and for the ones it hands back to Python.
"""

from __future__ import annotations

import io
import random

import pytest

from tape_formats.archive import ArchiveEntry, PaxReader, PaxWriter, pax, writer

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
