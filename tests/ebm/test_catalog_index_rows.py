"""The catalog's file index insert takes a PackedIndex's rows decoded in C
(``PackedIndex.catalog_batches``): they must be exactly the rows the Python reference
(``ebm.catalog._row_batches``) builds, and land in the catalog the same way."""

from __future__ import annotations

import hashlib

import pytest

from ebm.catalog import Catalog, _row_batches
from tape_formats.archive import IndexEntry, PackedIndex, packed_index

pytestmark = pytest.mark.skipif(packed_index._index_rows is None,
                                reason="the C extension is not built")


def _rows() -> list[IndexEntry]:
    """One row of each shape the catalog stores differently: kinds, with and without a
    sha256, deleted, link names, names that are not UTF-8 (BLOBs)."""
    sha = hashlib.sha256(b"x").hexdigest()
    shapes = [  # path, kind, sha256, linkname, deleted
        (".", "dir", None, "", False),
        ("a/f", "file", sha, "", False),
        ("a/\udcff-raw", "file", sha, "", False),
        ("a/l", "symlink", None, "../t\u00e9", False),
        ("a/h", "hardlink", None, "a/\udc80f", False),
        ("gone", "fifo", None, "", True),
        ("n\u00e9\udced\udca0\udc80", "file", None, "", False),  # an encoded surrogate
    ]
    return [IndexEntry(path=p, kind=k, size=2**40 + i, mtime_ns=-i, mode=0o4755, uid=2**32 - 2,
                       gid=i, sha256=s, header_offset=1024 * i, data_offset=1024 * i + 512,
                       deleted=d, linkname=link, torn=i == 2)
            for i, (p, k, s, link, d) in enumerate(shapes)]


def _c_rows(index: PackedIndex, backup: int) -> list[tuple]:
    out = []
    for rows, paths in index.catalog_batches(backup):
        assert paths == [(r[1],) for r in rows]
        out += rows
    return out


def test_c_rows_equal_the_python_reference():
    index = PackedIndex(_rows())
    want = [r for batch in _row_batches(7, index) for r in batch]
    got = _c_rows(index, 7)
    assert got == want
    assert [type(r[1]) for r in got] == [type(r[1]) for r in want]  # TEXT vs BLOB kept
    assert [i for i, r in enumerate(got) if isinstance(r[1], bytes)] == [2, 6]
    assert isinstance(got[4][12], bytes)


def test_c_rows_across_spilled_chunks(monkeypatch):
    monkeypatch.setattr(packed_index, "SPILL_BYTES", 200)
    monkeypatch.setattr(packed_index, "_READ_CHUNK", 97)  # rows cut between reads
    index = PackedIndex(_rows() * 20, spill=True)
    assert index._file is not None
    assert _c_rows(index, 3) == [r for batch in _row_batches(3, index) for r in batch]


def test_catalog_insert_same_with_and_without_c(tmp_path, monkeypatch):
    stored = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(packed_index, "_index_rows", None)
        cat = Catalog(tmp_path / f"{fast}.sqlite")
        with cat.tx():
            cat._insert_files(1, PackedIndex(_rows()))
        stored.append([tuple(r) for r in cat.q(
            "SELECT p.path, f.* FROM ebm_files f JOIN ebm_paths p ON p.id = f.path "
            "ORDER BY f.path")])
        cat.close()
    assert stored[0] == stored[1] and len(stored[0]) == len(_rows())
