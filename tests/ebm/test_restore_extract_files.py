"""A whole restore creates runs of plain files in C (``_paxfast.Extractor``, on threads of its
own, through ``_WholeStream.extract_files``; ``_paxfast.extract_files`` in one call); everything
else, and every failure, goes through the filesystem translator's Python path. Both must give the same tree, byte for byte, with the
same modes, times and (as root) owners, and the same errors."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import pytest
from ebm_helpers import barcodes, make_library, manifest, write_tree

from ebm import restore as restore_mod
from ebm.controller import BackupRequest
from ebm.manager import load_translator
from ebm.restore import RestoreError, restore
from tape_formats.archive import ArchiveEntry, PaxWriter, _paxfast

pytestmark = pytest.mark.skipif(not hasattr(_paxfast, "extract_files"),
                                reason="_paxfast built without libcrypto")


def _tree(src: Path) -> None:
    files = {f"d{i % 3}/f{i:03d}": os.urandom(i * 37) for i in range(90)}
    files.update({"top": b"at the root", "empty": b"", "d1/sub/deep": b"x" * 700,
                  "big": os.urandom(300_000),  # wider than the reader's refill mark
                  "d2/" + "n" * 120: b"long name", "d2/caf\xc3\xa9": b"not ASCII"})
    write_tree(src, files)
    os.setxattr(src / "d0/f003", "user.note", b"kept")
    os.link(src / "d1/f004", src / "d1/hard")
    (src / "d2/sym").symlink_to("f002")
    os.chmod(src / "d0/f006", 0o4751)
    os.chmod(src / "d1/f007", 0o400)
    os.utime(src / "d2/f005", ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    os.utime(src / "d0/f009", ns=(1_600_000_000_000_000_000, 1_500_000_000_000_000_000))
    if os.geteuid() == 0:
        os.chown(src / "d1/f010", 1234, 5678)


def _full(tmp_path: Path):
    ebm = make_library(tmp_path / "lib", barcodes(2))
    src = tmp_path / "src"
    _tree(src)
    return ebm, src, ebm.backup(BackupRequest(dataset="ds", source=src, pool="pool"))


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the files the C path took."""
    made: list[int] = []
    real = restore_mod._extractor

    class Counting:
        def __init__(self) -> None:
            self.x = real()

        def submit(self, *args):
            used, files, nbytes = self.x.submit(*args)
            made.append(files)
            return used, files, nbytes

        def settle(self, wait: bool = True):
            return self.x.settle(wait)

        def close(self) -> None:
            self.x.close()

    monkeypatch.setattr(restore_mod, "_extractor", Counting)
    return made


def test_c_and_python_paths_restore_the_same_tree(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ebm, src, b = _full(tmp_path)
    made = _counting(monkeypatch)
    st = restore(ebm.catalog, ebm.library, load_translator, b, tmp_path / "fast")
    assert sum(made) >= 80  # the plain files; the rest went through Python
    assert st.entries == b.nfiles
    monkeypatch.undo()
    monkeypatch.setenv("VTL_NO_FASTPATH", "1")  # every entry through the translator's Python
    restore(ebm.catalog, ebm.library, load_translator, b, tmp_path / "slow")
    atimes = {os.stat(tmp_path / d / "d2/f005").st_atime_ns for d in ("fast", "slow")}
    assert atimes == {1_600_000_000_123_456_789}  # before the manifests read the files
    fast, slow = manifest(tmp_path / "fast"), manifest(tmp_path / "slow")
    assert fast == slow == manifest(src)
    assert fast["d0/f006"][1] == 0o4751 and fast["d2/f005"][4] == 1_500_000_000_987_654_321
    if os.geteuid() == 0:
        assert fast["d1/f010"][2:4] == (1234, 5678)
    ebm.close()


def test_an_existing_file_is_replaced_through_python(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ebm, src, b = _full(tmp_path)
    made = _counting(monkeypatch)
    out = tmp_path / "out"
    write_tree(out, {"d0/f012": b"old content", "d1/f013/inside": b"a directory in the way"})
    restore(ebm.catalog, ebm.library, load_translator, b, out, into_existing=True)
    assert manifest(out) == manifest(src)
    assert sum(made) >= 80
    ebm.close()


def test_a_damaged_file_in_a_run_is_refused_and_not_left(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ebm, _, b = _full(tmp_path)
    made = _counting(monkeypatch)
    ebm.catalog.db.execute(
        "UPDATE ebm_files SET sha256=? WHERE backup=? AND path="
        "(SELECT id FROM ebm_paths WHERE path='d2/f008')", (b"\x01" * 32, b.id))
    with pytest.raises(RestoreError, match="sha256 mismatch for 'd2/f008'"):
        restore(ebm.catalog, ebm.library, load_translator, b, tmp_path / "out")
    assert not (tmp_path / "out/d2/f008").exists()
    assert (tmp_path / "out/d2/f002").exists() and sum(made) > 0  # the run before it
    ebm.close()


def test_extract_files_stops_at_a_member_that_is_not_plain(tmp_path: Path) -> None:
    out = io.BytesIO()
    w = PaxWriter(out)
    w.add(ArchiveEntry(path="d/a", kind="file", size=3, mode=0o644, mtime_ns=10**18), b"abc")
    w.add(ArchiveEntry(path="d/b", kind="file", size=1, mode=0o644, mtime_ns=10**18,
                       xattrs={"user.x": b"y"}), b"z")
    buf = out.getvalue()
    rows = [(0, "d/a", hashlib.sha256(b"abc").digest()), (1024, "d/b", hashlib.sha256(b"z").digest())]
    (tmp_path / "d").mkdir()
    fd = os.open(tmp_path / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        used, files, nbytes = _paxfast.extract_files(buf, 0, 0, fd, b"d/", rows, 0, False)
        assert (used, files, nbytes) == (1024, 1, 3)  # d/b carries an xattr: Python's
        assert _paxfast.extract_files(buf, 0, 0, fd, b"e/", rows, 0, False) == (0, 0, 0)
    finally:
        os.close(fd)
    assert (tmp_path / "d/a").read_bytes() == b"abc"
    assert oct(os.stat(tmp_path / "d/a").st_mode & 0o7777) == oct(0o644)
    assert not (tmp_path / "d/b").exists()



def _members(tmp_path: Path, names: list[str]) -> tuple[bytes, list[tuple[int, str, bytes]]]:
    out = io.BytesIO()
    w = PaxWriter(out)
    rows = []
    for name in names:
        data = name.encode() * 1000
        rows.append((out.tell(), name, hashlib.sha256(data).digest()))
        w.add(ArchiveEntry(path=name, kind="file", size=len(data), mode=0o640,
                           mtime_ns=10**18), data)
    return out.getvalue(), rows


def _dirfd(path: Path) -> int:
    path.mkdir(exist_ok=True)
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


def test_the_extractor_creates_what_extract_files_would(tmp_path: Path) -> None:
    buf, rows = _members(tmp_path, [f"d/f{i}" for i in range(5)] + ["e/g"])
    x = _paxfast.Extractor(2)
    fd = _dirfd(tmp_path / "d")
    try:
        used, files, nbytes = x.submit(buf, 0, 0, fd, b"d/", rows, 0, False)
    finally:
        os.close(fd)  # the workers hold a descriptor of their own
    assert files == 5 and used == rows[5][0] and nbytes == sum(len(f"d/f{i}") * 1000 for i in range(5))
    fd = _dirfd(tmp_path / "e")
    try:
        assert x.submit(buf, used, used, fd, b"e/", rows, 5, False)[1] == 1
    finally:
        os.close(fd)
    assert x.settle() == []
    x.close()
    for i in range(5):
        assert (tmp_path / f"d/f{i}").read_bytes() == f"d/f{i}".encode() * 1000
        st = os.stat(tmp_path / f"d/f{i}")
        assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o640, 10**18)
    assert (tmp_path / "e/g").read_bytes() == b"e/g" * 1000


def test_the_extractor_hands_back_the_members_it_could_not_create(tmp_path: Path) -> None:
    buf, rows = _members(tmp_path, ["d/a", "d/b", "d/c"])
    rows[1] = (rows[1][0], "d/b", b"\x02" * 32)  # the data does not match: refused
    (tmp_path / "d").mkdir()
    (tmp_path / "d/c").write_bytes(b"in the way")  # exclusive create fails
    x = _paxfast.Extractor(1)
    fd = _dirfd(tmp_path / "d")
    try:
        used, files, _ = x.submit(buf, 0, 0, fd, b"d/", rows, 0, False)
    finally:
        os.close(fd)
    assert (used, files) == (len(buf), 3)  # all three planned and taken
    failed: list = []
    deadline = time.monotonic() + 10
    while len(failed) < 2 and time.monotonic() < deadline:  # without waiting: those done
        failed += x.settle(False)
        time.sleep(0.01)
    assert x.settle() == []
    x.close()
    assert [(off, sha) for _, off, sha in failed] == [(rows[1][0], b"\x02" * 32),
                                                      (rows[2][0], rows[2][2])]
    assert all(member == buf[off:off + len(member)] for member, off, _ in failed)
    assert (tmp_path / "d/a").read_bytes() == b"d/a" * 1000
    assert not (tmp_path / "d/b").exists()  # nothing of a refused file is left
    assert (tmp_path / "d/c").read_bytes() == b"in the way"  # Python decides what to do


def test_a_restore_that_took_files_and_never_settled_them_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ebm, _, b = _full(tmp_path)
    ebm.catalog.db.execute(
        "UPDATE ebm_files SET sha256=? WHERE backup=? AND path="
        "(SELECT id FROM ebm_paths WHERE path='d2/f008')", (b"\x01" * 32, b.id))
    monkeypatch.setattr(restore_mod._WholeStream, "settle_files", lambda self, wait=True: iter(()))
    with pytest.raises(RestoreError, match="1 file.s. could not be created"):
        restore(ebm.catalog, ebm.library, load_translator, b, tmp_path / "out")
    assert not (tmp_path / "out/d2/f008").exists()
    ebm.close()
