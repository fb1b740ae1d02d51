"""The stream's member digest: what the writer records is what a reader recomputes, it moves
with every byte of the stream, and version 1 trailers (plain stream sha256) still decode."""

from __future__ import annotations

import hashlib
import io
import uuid

import pytest

from tape_formats.archive import (
    ArchiveCorrupt,
    ArchiveEntry,
    BackupTrailerInfo,
    IndexEntry,
    PaxReader,
    PaxWriter,
    decode_trailer,
    encode_trailer,
)
from tape_formats.archive.stream_digest import MEMBERS, PLAIN, StreamDigest, StreamDigestBehind

BIG = 10_000 * 256  # more than the writer's and the reader's 1 MiB chunks


class _Short(io.BytesIO):
    """A source that ends before the size its entry announced (the writer pads it)."""


def _stream(digest_behind: bool = False) -> tuple[bytes, PaxWriter, list]:
    out = io.BytesIO()
    w = PaxWriter(out, digest_behind=digest_behind)
    locs = [
        w.add(ArchiveEntry("d", "dir", mode=0o755, mtime_ns=1)),
        w.add(ArchiveEntry("d/small", "file", size=5, mtime_ns=2), b"hello"),
        w.add(ArchiveEntry("d/empty", "file", size=0, mtime_ns=3), b""),
        w.add(ArchiveEntry("d/big", "file", size=BIG, mtime_ns=4), io.BytesIO(bytes(range(256)) * (BIG // 256))),
        w.add(ArchiveEntry("d/" + "long" * 40, "file", size=3, mtime_ns=5, xattrs={"user.a": b"v"}), b"abc"),
        w.add(ArchiveEntry("d/sparse", "file", size=1 << 20, sparse_map=[(4096, 10)], mtime_ns=6),
              b"0123456789"),
        w.add(ArchiveEntry("d/holes", "file", size=8192, sparse_map=[], mtime_ns=7), b""),
        w.add(ArchiveEntry("d/torn", "file", size=1000, mtime_ns=8), _Short(b"x" * 10)),
        w.add(ArchiveEntry("d/h", "hardlink", linkname="d/small")),
        w.add(ArchiveEntry("d/s", "symlink", linkname="small")),
    ]
    w.add_deletions(["gone/a", "gone/b"])
    w.close()
    return out.getvalue(), w, locs


def _reread(stream: bytes) -> str:
    r = PaxReader(io.BytesIO(stream), stream_digest=True)
    for _entry, data in r:
        data.read(7)  # partly read: the reader drains (and hashes) the rest itself
    assert r.digest is not None and r.offset == len(stream)
    return r.digest.hexdigest()


def test_reader_recomputes_the_writers_digest() -> None:
    stream, w, _locs = _stream()
    assert _reread(stream) == w.stream_digest() != hashlib.sha256(stream).hexdigest()


def test_the_digest_hashed_behind_on_a_thread_is_the_same() -> None:
    stream, w, _locs = _stream(digest_behind=True)
    assert _reread(stream) == w.stream_digest() == _stream()[1].stream_digest()


def test_digest_behind_copies_what_it_is_fed_and_keeps_the_order() -> None:
    """The feeder reuses its buffer right after each call (pack_files' feed): the worker must
    hash what was fed, in order, across chunk hand-offs and mid-stream digests."""
    plain, behind = StreamDigest(), StreamDigestBehind()
    buf = bytearray(700_000)
    for i in range(12):
        buf[:] = bytes([i]) * len(buf)
        plain.meta(bytes(buf))
        behind.meta(memoryview(buf))
        plain.member(bytes([i]) * 32)
        behind.member(bytes([i]) * 32)
        if i in (3, 7):
            assert behind.hexdigest() == plain.hexdigest()
    assert behind.hexdigest() == plain.hexdigest()


def test_digest_is_the_stream_with_each_files_data_replaced_by_its_sha256() -> None:
    out = io.BytesIO()
    w = PaxWriter(out)
    locs = [w.add(ArchiveEntry(f"f{i}", "file", size=len(b), mtime_ns=1), b)
            for i, b in enumerate([b"abc", b"x" * 3000, b""])]
    w.close()
    stream = out.getvalue()
    d = StreamDigest()
    pos = 0
    for loc in locs:
        d.meta(stream[pos:loc.data_offset])
        d.member(bytes.fromhex(loc.sha256))
        pos = loc.data_offset + loc.size
    d.meta(stream[pos:])
    assert d.hexdigest() == w.stream_digest()


@pytest.mark.parametrize("where", ["pax record", "padding", "end"])
def test_a_changed_byte_outside_the_data_changes_the_digest(where: str) -> None:
    """Bytes no other check covers (a pax record's value, block padding, the second zero
    block): only the digest sees them change."""
    stream, w, locs = _stream()
    at = {"pax record": stream.index(b"SCHILY.xattr.user.a=v") + 20,
          "padding": locs[1].data_offset + 5 + 10,
          "end": len(stream) - 1}[where]
    bad = bytearray(stream)
    bad[at] ^= 0x01
    assert _reread(bytes(bad)) != w.stream_digest()


def test_a_changed_data_byte_fails_its_member_or_the_digest() -> None:
    stream, w, locs = _stream()
    big = locs[3]
    bad = bytearray(stream)
    bad[big.data_offset + BIG // 2] ^= 0x01
    assert _reread(bytes(bad)) != w.stream_digest()
    expected = {loc.header_offset: loc.sha256 for loc in locs if loc.sha256}
    with pytest.raises(ArchiveCorrupt, match="sha256 mismatch for 'd/big'"):
        for _entry, _data in PaxReader(io.BytesIO(bytes(bad)), expected=expected, stream_digest=True):
            pass


def test_trailer_versions_name_their_digest_kind() -> None:
    index = [IndexEntry(path="a", kind="file", size=1, sha256="ab" * 32, header_offset=0,
                        data_offset=512)]
    new = BackupTrailerInfo.from_index(uuid.uuid4(), index, stream_bytes=2048, stream_digest="cd" * 32)
    got = decode_trailer(encode_trailer(new))
    assert (got.format_version, got.stream_digest_kind) == (2, MEMBERS)
    assert "member-sha256 " + "cd" * 32 in got.text
    old = BackupTrailerInfo.from_index(uuid.uuid4(), index, stream_bytes=2048, stream_digest="ef" * 32)
    old.format_version = 1  # as every trailer before the member digest was written
    got = decode_trailer(encode_trailer(old))
    assert (got.format_version, got.stream_digest_kind, got.stream_digest) == (1, PLAIN, "ef" * 32)
    assert got.index == index
