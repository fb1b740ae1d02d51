"""The file index goes into the catalog while a backup still writes (``IndexStager``, fed
by the PackedIndex's ``sink``): the catalog ends with exactly the rows an insert at the end
gives, and a failed or crashed backup leaves none of its rows behind."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from ebm_helpers import barcodes, make_library, write_tree

from ebm.catalog import Catalog, IndexStager
from ebm.controller import BackupRequest
from tape_formats.archive import IndexEntry, PackedIndex, packed_index

pytestmark = pytest.mark.skipif(not packed_index.stageable(),
                                reason="the C extension is not built with SQLite")


def _entries(n: int) -> list[IndexEntry]:
    sha = hashlib.sha256(b"x").hexdigest()
    out = []
    for i in range(n):
        name = f"d{i % 7}/f{i:05d}" + ("-\udcff" if i % 11 == 0 else "")  # some BLOB paths
        out.append(IndexEntry(path=name, kind="file", size=i, mtime_ns=i * 1000, mode=0o644,
                              uid=1, gid=2, sha256=sha, header_offset=1024 * i,
                              data_offset=1024 * i + 512))
    out.append(IndexEntry(path="d1/f00001", kind="file", size=9, mtime_ns=9, mode=0o600,
                          uid=1, gid=2, sha256=None, header_offset=1 << 30,
                          data_offset=(1 << 30) + 512))  # a later row for a path wins
    return out


def _stored(cat: Catalog, backup: int) -> list[tuple]:
    return [tuple(r) for r in cat.q(
        "SELECT p.path, f.* FROM ebm_files f JOIN ebm_paths p ON p.id = f.path "
        "WHERE f.backup=? ORDER BY f.path", (backup,))]


def _finish(cat: Catalog, bid: int, index: PackedIndex, staged: int) -> None:
    cat.finish_backup(bid, size=0, nfiles=len(index), blocks=0, sha256="", volumes=[],
                      files=index, state=None, media_updates=[], staged=staged)


def test_sink_chunks_are_a_prefix_of_whole_rows(monkeypatch):
    monkeypatch.setattr(packed_index, "SINK_BYTES", 300)
    monkeypatch.setattr(packed_index, "SPILL_BYTES", 1000)
    monkeypatch.setattr(packed_index, "_READ_CHUNK", 97)
    chunks: list[bytes] = []
    index = PackedIndex(spill=True, sink=chunks.append)
    index.extend(_entries(200))
    assert index._file is not None and len(chunks) > 3
    assert index.handed_over == sum(map(len, chunks))
    early = [r for c in chunks for r in packed_index._index_rows(c, 5)[0]]
    rest = [r for rows, _ in index.catalog_batches(5, index.handed_over) for r in rows]
    every = [r for rows, _ in index.catalog_batches(5) for r in rows]
    assert early + rest == every and len(every) == 201


def test_staged_rows_end_as_an_insert_at_the_end_would(tmp_path, monkeypatch):
    monkeypatch.setattr(packed_index, "SINK_BYTES", 500)
    stored = []
    for stage in (True, False):
        cat = Catalog(tmp_path / f"{stage}.sqlite")
        bid = cat.begin_backup("ds", "full", None, "filesystem", {}).id
        stager = IndexStager(cat.path, bid) if stage else None
        index = PackedIndex(spill=True, sink=stager)
        index.extend(_entries(300))
        staged = stager.close() if stager else 0
        assert (staged > 0) == stage and staged == index.handed_over
        if stage:  # the backup is not done: listed as running, its rows are not it
            assert cat.backup(bid).state == "running"
        _finish(cat, bid, index, staged)
        assert cat.backup(bid).state == "done"
        stored.append(_stored(cat, bid))
        cat.close()
    assert stored[0] == stored[1] and len(stored[0]) == 300


def test_rows_of_another_index_are_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(packed_index, "SINK_BYTES", 500)
    cat = Catalog(tmp_path / "c.sqlite")
    bid = cat.begin_backup("ds", "full", None, "filesystem", {}).id
    stager = IndexStager(cat.path, bid)
    PackedIndex(sink=stager).extend(_entries(100))
    assert stager.close() > 0
    real = PackedIndex(_entries(3))
    _finish(cat, bid, real, -1)
    assert len(_stored(cat, bid)) == 3  # three paths, one of them twice


def test_failed_and_dead_backups_leave_no_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(packed_index, "SINK_BYTES", 500)
    cat = Catalog(tmp_path / "c.sqlite")
    ids = []
    for _ in range(2):
        bid = cat.begin_backup("ds", "full", None, "filesystem", {}).id
        stager = IndexStager(cat.path, bid)
        PackedIndex(sink=stager).extend(_entries(100))
        assert stager.close() > 0 and _stored(cat, bid)
        ids.append(bid)
    cat.fail_backup(ids[0], "boom")
    assert not _stored(cat, ids[0]) and _stored(cat, ids[1])
    cat.db.execute("UPDATE ebm_backups SET pid=NULL WHERE id=?", (ids[1],))  # its process died
    assert [bid for bid, _ in cat.reap_dead_jobs()] == [ids[1]]
    assert not _stored(cat, ids[1])
    assert cat.q("SELECT count(*) FROM ebm_files")[0][0] == 0


def test_a_stager_that_fails_leaves_the_rest_to_the_finish(tmp_path, monkeypatch):
    monkeypatch.setattr(packed_index, "SINK_BYTES", 500)
    calls = []
    real = packed_index.stage_rows

    def flaky(path, backup, chunk):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise RuntimeError("disk trouble")
        return real(path, backup, chunk)

    monkeypatch.setattr(packed_index, "stage_rows", flaky)
    cat = Catalog(tmp_path / "c.sqlite")
    bid = cat.begin_backup("ds", "full", None, "filesystem", {}).id
    stager = IndexStager(cat.path, bid)
    index = PackedIndex(sink=stager)
    index.extend(_entries(300))
    staged = stager.close()
    assert isinstance(stager.error, RuntimeError) and 0 < staged < index.handed_over
    _finish(cat, bid, index, staged)
    want = Catalog(tmp_path / "w.sqlite")
    wid = want.begin_backup("ds", "full", None, "filesystem", {}).id
    _finish(want, wid, PackedIndex(_entries(300)), 0)
    assert _stored(cat, bid) == _stored(want, wid)


def test_a_filesystem_backup_through_the_stager(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(packed_index, "SINK_BYTES", 2000)
    ebm = make_library(tmp_path / "lib", barcodes(2))
    src = tmp_path / "src"
    files = {f"d{i % 5}/f{i:04d}": os.urandom(i % 300) for i in range(400)}
    write_tree(src, files)
    seen = []
    orig = IndexStager.__call__

    def spy(self, chunk):
        seen.append(len(chunk))
        orig(self, chunk)

    monkeypatch.setattr(IndexStager, "__call__", spy)
    b = ebm.backup(BackupRequest(dataset="ds", source=src, pool="pool"))
    assert b.state == "done" and len(seen) > 3
    rows = {r.path: r for r in ebm.catalog.files(b.id)}
    for rel, data in files.items():
        assert rows[rel].size == len(data)
        assert rows[rel].sha256 == hashlib.sha256(data).digest()
    assert len(rows) == b.nfiles
    ebm.close()


def test_the_c_insert_binds_and_finds_paths_as_the_python_insert(tmp_path):
    """Text or BLOB as index_rows decides (strict UTF-8: no overlong forms, no encoded
    surrogates, nothing past U+10FFFF), and a path already in ebm_paths (an earlier backup's)
    found again, not added twice."""
    names = [b"caf\xc3\xa9", b"\xf0\x9f\x98\x80", b"a\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80",
             b"x\xff", b"tail\xe2\x82", b"nul\x00in"]
    sha = hashlib.sha256(b"y").hexdigest()
    entries = [IndexEntry(path=os.fsdecode(n), kind="symlink" if i % 3 else "file", size=i,
                          mtime_ns=-i, mode=0o644, uid=i, gid=2, sha256=None if i % 2 else sha,
                          header_offset=i, data_offset=i + 1, deleted=i == 4,
                          linkname=os.fsdecode(names[-1 - i]) if i % 3 else "")
               for i, n in enumerate(names)]
    stored = []
    for stage in (True, False):
        cat = Catalog(tmp_path / f"{stage}.sqlite")
        for _ in range(2):  # the second backup's paths are all in ebm_paths already
            bid = cat.begin_backup("ds", "full", None, "filesystem", {}).id
            index = PackedIndex(entries)
            staged = 0
            if stage:
                chunk = b"".join(index._pieces())
                assert packed_index.stage_rows(str(cat.path), bid, chunk) == len(entries)
                staged = len(chunk)
            _finish(cat, bid, index, staged)
            stored.append([r + (type(r[0]).__name__,) for r in _stored(cat, bid)])
        assert cat.q("SELECT count(*) FROM ebm_paths")[0][0] == len(names)
        cat.close()
    assert [r[:1] + r[2:] for r in stored[0]] == [r[:1] + r[2:] for r in stored[2]]
    assert [r[:1] + r[2:] for r in stored[1]] == [r[:1] + r[2:] for r in stored[3]]
    assert {r[-1] for r in stored[0]} == {"str", "bytes"}


def test_a_failed_c_insert_leaves_nothing(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite")
    bid = cat.begin_backup("ds", "full", None, "filesystem", {}).id
    chunk = b"".join(PackedIndex(_entries(50))._pieces())
    with pytest.raises(ValueError):
        packed_index.stage_rows(str(cat.path), bid, chunk[:-1])
    with pytest.raises(RuntimeError, match="catalog insert"):
        packed_index.stage_rows(str(tmp_path / "missing.sqlite"), bid, chunk)
    cat.db.execute("DROP TABLE ebm_paths")  # a statement that cannot be prepared: rolled back
    with pytest.raises(RuntimeError, match="no such table"):
        packed_index.stage_rows(str(cat.path), bid, chunk)
    assert cat.q("SELECT count(*) FROM ebm_files")[0][0] == 0
    cat.close()
