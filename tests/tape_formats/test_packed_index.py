"""PackedIndex keeps a file index as bytes: every row must come back exactly as appended."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from tape_formats.archive import IndexEntry, PackedIndex
from tape_formats.archive.labels import BackupTrailerInfo, decode_trailer, encode_trailer


def _rows() -> list[IndexEntry]:
    sha = hashlib.sha256(b"x").hexdigest()
    return [
        IndexEntry(path=".", kind="dir", mode=0o755, header_offset=0, data_offset=512),
        IndexEntry(path="a/f", kind="file", size=2**40, mtime_ns=1_700_000_000_123_456_789,
                   mode=0o4755, uid=2**32 - 2, gid=7, sha256=sha, header_offset=1024,
                   data_offset=2048),
        IndexEntry(path="a/\udcff-raw", kind="file", sha256=sha, torn=True),
        IndexEntry(path="a/l", kind="symlink", linkname="../t\u00e9"),
        IndexEntry(path="a/h", kind="hardlink", linkname="a/f"),
        IndexEntry(path="gone", kind="fifo", deleted=True, header_offset=5, data_offset=5),
        IndexEntry(path="n", kind="file", mtime_ns=-1),
        IndexEntry(path='q"uo\\te\n\x01', kind="symlink", linkname='"\t\udc80'),
    ]


def test_rows_round_trip_in_order():
    packed = PackedIndex(_rows()[:3])
    packed += _rows()[3:]
    assert len(packed) == 8
    assert list(packed) == _rows()
    assert list(packed) == _rows()  # re-iterable


def test_rows_with_raw_sha_give_the_digest_bytes():
    packed = PackedIndex(_rows())
    for hexed, raw in zip(packed.rows(), packed.rows(raw_sha=True), strict=True):
        assert raw[7] == (bytes.fromhex(hexed[7]) if hexed[7] else None)
        assert raw[:7] + raw[8:] == hexed[:7] + hexed[8:]


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown index entry kind"):
        PackedIndex().append(IndexEntry(path="x", kind="socket"))


def test_trailer_from_packed_index_equals_from_list():
    u = uuid.uuid4()
    infos = [BackupTrailerInfo.from_index(u, index, stream_bytes=10, stream_digest="00" * 32)
             for index in (_rows(), PackedIndex(_rows()))]
    assert infos[0].file_count == infos[1].file_count == 3
    assert infos[0].deleted_count == infos[1].deleted_count == 1
    assert [getattr(infos[0], f) for f in _COUNTS] == [getattr(infos[1], f) for f in _COUNTS]
    infos[1].finished_ns = infos[0].finished_ns
    encoded = [encode_trailer(i) for i in infos]
    assert encoded[0] == encoded[1]  # the packed rows format the same JSON lines, byte for byte
    assert decode_trailer(encoded[1]).index == _rows()


_COUNTS = ("entry_count", "file_count", "dir_count", "symlink_count", "hardlink_count",
           "other_count", "deleted_count", "torn_count", "data_bytes")


def test_spilled_rows_round_trip_across_read_chunks(monkeypatch):
    """A spilling index writes rows out past SPILL_BYTES and reads them back in chunks that
    cut rows in two: every row comes back, in order, on every iteration."""
    from tape_formats.archive import packed_index

    monkeypatch.setattr(packed_index, "SPILL_BYTES", 300)
    monkeypatch.setattr(packed_index, "_READ_CHUNK", 97)
    rows = _rows() * 40
    packed = PackedIndex(rows, spill=True)
    assert packed._file is not None and len(packed._buf) < 300
    assert len(packed) == len(rows)
    assert list(packed) == rows
    assert list(packed) == rows
    packed.close()
