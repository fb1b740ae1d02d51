"""EBM round trips through real cartridges of a temp library: baseline + incrementals with
edits, renames and deletions; every point in the chain restores identical."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ebm_helpers import barcodes, make_library, manifest, write_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebm.controller import BackupRequest
from ebm.manager import load_translator
from ebm.restore import restore


def _backup(ebm, ds: str, src: Path | None = None, **kw):
    req = BackupRequest(dataset=ds, source=src, pool="pool" if src else None, **kw)
    return ebm.backup(req)


def _restore(ebm, backup, target: Path, patterns=None, secret=None):
    return restore(ebm.catalog, ebm.library, load_translator, backup, target, patterns, secret)


def _every_point_restores(ebm, points: list, prefix: Path) -> None:
    """Each (backup, manifest) point restores, into ``prefix`` + its number, to its manifest."""
    for i, (b, want) in enumerate(points):
        target = prefix.with_name(f"{prefix.name}{i}")
        _restore(ebm, b, target)
        assert manifest(target) == want, f"point {i} differs"


def _touch_mtime(path: Path, delta_ns: int = 1_000_000_000) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + delta_ns))


def test_chain_of_incrementals_every_point_restores_identical(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(3))
    src = tmp_path / "src"
    write_tree(src, {f"dir{i // 5}/file{i}.bin": os.urandom(3000 + i * 977) for i in range(20)})
    (src / "link").symlink_to("dir0/file0.bin")
    os.link(src / "dir1/file5.bin", src / "hard5")
    with open(src / "sparse.img", "wb") as f:  # 8 MiB with two small data islands
        f.seek(1 << 20)
        f.write(os.urandom(5000))
        f.seek(6 << 20)
        f.write(b"tail")
    os.setxattr(src / "dir0/file3.bin", "user.note", b"\x00binary\xff")
    os.utime(src / "dir0/file4.bin", ns=(1, 1_700_000_000_123_456_789))
    points = []
    b = _backup(ebm, "ds", src)
    assert b.level == "full" and b.state == "done"
    points.append((b, manifest(src)))

    # 1: edit, add, delete, change an xattr
    (src / "dir0/file1.bin").write_bytes(os.urandom(5000))
    os.setxattr(src / "dir0/file3.bin", "user.note", b"changed")
    (src / "new.txt").write_text("new file")
    (src / "dir2/file10.bin").unlink()
    b = _backup(ebm, "ds")
    assert b.level == "incr" and b.parent == points[0][0].id
    points.append((b, manifest(src)))

    # 2: rename a file and a directory, delete a whole directory
    (src / "dir0/file2.bin").rename(src / "dir0/renamed2.bin")
    (src / "dir1").rename(src / "dir1b")
    shutil.rmtree(src / "dir3")
    b = _backup(ebm, "ds")
    points.append((b, manifest(src)))

    # 3: nothing changed
    b = _backup(ebm, "ds")
    points.append((b, manifest(src)))

    _every_point_restores(ebm, points, tmp_path / "restore")
    ebm.close()


def test_full_flag_forces_baseline_and_restore_by_dataset_at_time(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(2))
    src = tmp_path / "src"
    write_tree(src, {"a": b"one"})
    b1 = _backup(ebm, "ds", src)
    (src / "a").write_bytes(b"two!")
    _touch_mtime(src / "a")
    b2 = _backup(ebm, "ds", full=True)
    assert b2.level == "full" and b2.parent is None
    from ebm.restore import resolve

    assert resolve(ebm.catalog, f"ds@{b1.started + 0.0001}").id == b1.id
    assert resolve(ebm.catalog, "ds").id == b2.id
    _restore(ebm, resolve(ebm.catalog, f"ds@{b1.started + 0.0001}"), tmp_path / "r")
    assert (tmp_path / "r/a").read_bytes() == b"one"
    ebm.close()


def test_spanning_over_tiny_cartridges(tmp_path: Path) -> None:
    """~11 MiB of incompressible data across 4 MiB cartridges: the backup spans 3+ of them,
    records each volume, and restores identical; single files on later volumes restore too."""
    ebm = make_library(tmp_path / "lib", barcodes(5), capacity=4 << 20)
    src = tmp_path / "src"
    write_tree(src, {f"f{i:02d}": os.urandom(400_000) for i in range(28)})
    b = _backup(ebm, "big", src)
    vols = ebm.catalog.volumes(b.id)
    assert len(vols) >= 3
    assert [v.seq for v in vols] == list(range(len(vols)))
    assert vols[0].first_block == 0
    for a, c in zip(vols, vols[1:], strict=False):
        assert c.first_block == a.last_block + 1  # the data tape file continues
    _restore(ebm, b, tmp_path / "r")
    assert manifest(tmp_path / "r") == manifest(src)
    st = _restore(ebm, b, tmp_path / "one", ["f27"])
    assert (tmp_path / "one/f27").read_bytes() == (src / "f27").read_bytes()
    assert st.blocks_read <= 3
    ebm.close()


def test_single_file_restore_reads_only_its_blocks(tmp_path: Path) -> None:
    ebm = make_library(tmp_path / "lib", barcodes(2))
    src = tmp_path / "src"
    write_tree(src, {f"f{i:03d}": os.urandom(100_000) for i in range(100)})  # ~10 MiB, 40 blocks
    b = _backup(ebm, "ds", src)
    assert b.blocks >= 38
    st = _restore(ebm, b, tmp_path / "r", ["f050"])
    assert (tmp_path / "r/f050").read_bytes() == (src / "f050").read_bytes()
    assert not (tmp_path / "r/f049").exists() and not (tmp_path / "r/f051").exists()
    row = next(r for r in ebm.catalog.files(b.id) if r.path == "f050")
    nxt = min(r.header_offset for r in ebm.catalog.files(b.id) if r.header_offset > row.header_offset)
    bs = 256 * 1024
    expect = (nxt - 1) // bs - row.header_offset // bs + 1
    assert st.blocks_read == expect <= 2
    ebm.close()


names = st.text(alphabet="abcdefgh", min_size=1, max_size=4)
trees = st.dictionaries(
    st.lists(names, min_size=1, max_size=3).map("/".join),
    st.binary(max_size=5000), min_size=1, max_size=12)


def _sane(files: dict[str, bytes]) -> dict[str, bytes]:
    """Drop paths that are a prefix directory of another path (a file can't be a dir)."""
    keys = sorted(files)
    return {k: v for k, v in files.items() if not any(o.startswith(k + "/") for o in keys)}


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(base=trees, steps=st.lists(st.tuples(trees, st.integers(0, 3)), min_size=1, max_size=2))
def test_random_trees_every_point_restores(base, steps) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ebm = make_library(tmp / "lib", barcodes(2))
        src = tmp / "src"
        src.mkdir()
        write_tree(src, _sane(base))
        points = [(_backup(ebm, "ds", src), manifest(src))]
        for n, (change, ndel) in enumerate(steps):
            existing = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
            for rel in existing[:ndel]:
                (src / rel).unlink()
            if existing[ndel:ndel + 1]:
                old = src / existing[ndel]
                old.rename(old.with_name(old.name + f"_r{n}"))
            for rel, data in _sane(change).items():
                p = src / rel
                if any(q.exists() and not q.is_dir() for q in list(p.parents)[:-1] if src in q.parents):
                    continue
                if p.is_dir():
                    continue
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
                _touch_mtime(p, n + 1)
            points.append((_backup(ebm, "ds"), manifest(src)))
        _every_point_restores(ebm, points, tmp / "r")
        ebm.close()


def test_path_and_glob_restores_follow_the_chain(tmp_path: Path) -> None:
    import pytest

    from ebm.restore import RestoreError

    ebm = make_library(tmp_path / "lib", barcodes(1))
    src = tmp_path / "src"
    write_tree(src, {"keep/a.txt": b"a1", "keep/b.bin": b"b1", "gone/x.txt": b"x1"})
    b0 = _backup(ebm, "ds", src)
    shutil.rmtree(src / "gone")
    (src / "keep/a.txt").write_bytes(b"a2")
    _touch_mtime(src / "keep/a.txt")
    b1 = _backup(ebm, "ds")
    _restore(ebm, b1, tmp_path / "r1", ["keep/a.txt"])
    assert (tmp_path / "r1/keep/a.txt").read_bytes() == b"a2"
    assert not (tmp_path / "r1/keep/b.bin").exists()
    with pytest.raises(RestoreError, match="nothing in backup"):
        _restore(ebm, b1, tmp_path / "r2", ["gone/x.txt"])  # deleted with its directory
    _restore(ebm, b0, tmp_path / "r3", ["gone/x.txt"])  # but there at the baseline
    assert (tmp_path / "r3/gone/x.txt").read_bytes() == b"x1"
    _restore(ebm, b1, tmp_path / "r4", ["keep/*.bin"])
    assert sorted(p.name for p in (tmp_path / "r4/keep").iterdir()) == ["b.bin"]
    _restore(ebm, b1, tmp_path / "r5", ["keep"])  # a directory brings its contents
    assert (tmp_path / "r5/keep/a.txt").read_bytes() == b"a2"
    assert (tmp_path / "r5/keep/b.bin").read_bytes() == b"b1"
    ebm.close()


def test_gnu_tar_reads_the_data_tape_file(tmp_path: Path) -> None:
    """What `mt fsf 1; dd if=/dev/nst0 bs=256k | tar -x` does, block by block from the
    cartridge: GNU tar lists and extracts an unencrypted backup, even across two cartridges."""
    import subprocess

    from tape_formats.cartridge import RecordKind, TapeCartridge

    ebm = make_library(tmp_path / "lib", barcodes(3), capacity=4 << 20)
    src = tmp_path / "src"
    write_tree(src, {f"d/f{i}": os.urandom(300_000) for i in range(14)} | {"t.txt": b"text"})
    (src / "ln").symlink_to("t.txt")
    b = _backup(ebm, "ds", src)
    vols = ebm.catalog.volumes(b.id)
    assert len(vols) >= 2
    stream = bytearray()
    for v in vols:
        cart = TapeCartridge.open(tmp_path / "lib/cartridges" / f"{v.barcode}.vtape", readonly=True)
        cart.locate(v.first_object)
        assert cart.space_filemarks(1).stopped is None  # past the header tape file
        while True:
            r = cart.read_block()
            if r.kind != RecordKind.DATA:
                break
            stream += r.data
        cart.close()
    listing = subprocess.run(["tar", "-tf", "-"], input=bytes(stream), capture_output=True, check=True)
    names = {n.rstrip("/") for n in listing.stdout.decode().split()}
    assert {"d/f0", "d/f13", "t.txt", "ln"} <= {n.removeprefix("./") for n in names}
    out = tmp_path / "tarout"
    out.mkdir()
    subprocess.run(["tar", "-xf", "-", "-C", str(out)], input=bytes(stream), check=True)
    for i in range(14):
        assert (out / f"d/f{i}").read_bytes() == (src / f"d/f{i}").read_bytes()
    assert os.readlink(out / "ln") == "t.txt"
    ebm.close()


def test_path_restore_of_a_hard_link_brings_its_target(tmp_path: Path) -> None:
    """A hard link's data lives in the member it names: selecting only the link (by path or
    glob) restores that member too, as one inode, from the link's own backup."""
    ebm = make_library(tmp_path / "lib", barcodes(1))
    src = tmp_path / "src"
    data = os.urandom(300_000)
    write_tree(src, {"a/data.bin": data, "c/x.txt": b"x"})
    (src / "b").mkdir()
    os.link(src / "a/data.bin", src / "b/link.bin")
    b0 = _backup(ebm, "ds", src)
    link = next(r for r in ebm.catalog.files(b0.id) if r.kind == "hardlink")
    assert (link.path, link.linkname) == ("b/link.bin", "a/data.bin")

    def check(target: Path, want: bytes) -> None:
        got = target / "b/link.bin"
        assert got.read_bytes() == want
        assert os.stat(got).st_ino == os.stat(target / "a/data.bin").st_ino
        assert not (target / "c").exists()  # nothing else came along

    _restore(ebm, b0, tmp_path / "r1", ["b/link.bin"])
    check(tmp_path / "r1", data)
    _restore(ebm, b0, tmp_path / "r2", ["b/*.bin"])
    check(tmp_path / "r2", data)

    # the group changes: the incremental re-sends both; the link restores its new data
    new = os.urandom(1000)
    with open(src / "a/data.bin", "r+b") as f:
        f.write(new)
    b1 = _backup(ebm, "ds")
    assert b1.level == "incr"
    _restore(ebm, b1, tmp_path / "r3", ["b/link.bin"])
    check(tmp_path / "r3", new + data[len(new):])

    # a catalog from before the linkname column: the target is read from the link's header
    ebm.catalog.db.execute("UPDATE ebm_files SET linkname=NULL")
    _restore(ebm, b0, tmp_path / "r4", ["b/link.*"])
    check(tmp_path / "r4", data)
    ebm.close()
