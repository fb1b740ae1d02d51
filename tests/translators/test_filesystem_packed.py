"""The C run of plain entries (``_paxfast.pack_files``) against the Python loop it replaces:
and the C walk of a baseline (``_paxfast.scan_dir``) against :meth:`walk`: the same stream
(and stream digest), file index and state, byte for byte, on a tree of the awkward cases
(every kind of entry, xattrs, holes, hard links, long and non-UTF-8 names, a file over the
buffer limit), for a baseline and for the incremental that follows it."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from pathlib import Path

import pytest

import translators.filesystem as fsmod
from tape_formats.archive import PaxWriter
from translators.filesystem import FilesystemTranslator

pytestmark = pytest.mark.skipif(fsmod._pack_files is None,
                                reason="the C extension is not built (or VTL_NO_FASTPATH)")
IS_ROOT = os.geteuid() == 0
SCAN_DIR = fsmod._scan_dir
LISTED: list[int] = []  # directories scan_dir listed (not left to Python)


def counted_scan_dir(path: bytes, prefix: bytes):
    listed = SCAN_DIR(path, prefix)
    LISTED.append(listed is not None)
    return listed


def awkward_tree(src: Path, *, ascii_names: bool) -> None:
    (src / "d" / "sub").mkdir(parents=True)
    for i in range(30):
        (src / "d" / f"plain{i:02d}").write_bytes(bytes([i]) * (i * 37))
    (src / "empty").write_bytes(b"")
    (src / ("long-" * 25)).write_bytes(b"a name over 100 bytes")
    if not ascii_names:  # (scan_dir leaves such a walk to Python)
        (src / "naïve").write_bytes(b"non-ASCII name")
        (src / os.fsdecode(b"raw\xff")).write_bytes(b"a name that is not UTF-8")
    (src / "big").write_bytes(os.urandom(100_000))  # over the buffer limit below
    (src / "xattr").write_bytes(b"x")
    os.setxattr(src / "xattr", "user.k", b"v")
    os.link(src / "d" / "plain03", src / "hard")
    os.symlink("d/plain01", src / "sym")
    os.mkfifo(src / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    sock.close()
    with open(src / "sparse", "wb") as f:
        f.truncate(1 << 20)
        f.seek(4096)
        f.write(b"S" * 4096)
    os.chmod(src / "d" / "plain05", 0o4755)
    if IS_ROOT:
        os.chown(src / "d" / "plain06", 54321, 54321)  # no such user: empty names
        os.chown(src / "d" / "plain07", 1, 1)
    (src / "d" / "whole").write_bytes(b"whole-second mtime")
    os.utime(src / "d" / "whole", ns=(time.time_ns(), 1_600_000_000 * 10**9))
    freeze_atimes(src)


def freeze_atimes(src: Path) -> None:
    """atimes an hour ahead: no read or listing by either run moves them (relatime)."""
    ahead = time.time_ns() + 3600 * 10**9
    for dirpath, dirnames, filenames in os.walk(src):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            os.utime(os.path.join(dirpath, name), ns=(ahead, st.st_mtime_ns), follow_symlinks=False)
    os.utime(src, ns=(ahead, os.stat(src).st_mtime_ns))


def run(src: Path, state, *, packed: bool, monkeypatch) -> tuple[bytes, str, list, bytes, list]:
    monkeypatch.setattr(fsmod, "_pack_files", fsmod._pack_files if packed else None)
    monkeypatch.setattr(fsmod, "_scan_dir", counted_scan_dir if packed else None)
    t = FilesystemTranslator()
    t.buffer_limit = 64 * 1024
    buf = io.BytesIO()
    w = PaxWriter(buf)
    result = t.backup(str(src), state, w)
    w.close()
    return (buf.getvalue(), w.stream_digest(), list(result.entries.rows()), result.state.read(),
            result.warnings)


@pytest.mark.parametrize("ascii_names", [False, True], ids=["python-walk", "c-walk"])
def test_packed_run_matches_the_python_loop(tmp_path, monkeypatch, ascii_names):
    src = tmp_path / "src"
    awkward_tree(src, ascii_names=ascii_names)
    LISTED.clear()
    real = fsmod._pack_files
    done = []
    monkeypatch.setattr(fsmod, "_pack_files",
                        lambda *a: (r := real(*a), done.append(r[6]))[0])
    wrapped = fsmod._pack_files
    fast = run(src, None, packed=True, monkeypatch=monkeypatch)
    assert sum(done) >= 25  # the plain files went through C
    assert all(LISTED) == ascii_names and len(LISTED) >= (3 if ascii_names else 1)
    slow = run(src, None, packed=False, monkeypatch=monkeypatch)
    assert fast == slow

    (src / "d" / "plain02").write_bytes(b"changed")
    (src / "d" / "plain09").unlink()
    (src / "d" / "plain03").write_bytes(b"a changed hard link")  # both names go again
    (src / "d" / "sub" / "new").write_bytes(b"new")  # (atimes stay ahead of these writes)
    monkeypatch.setattr(fsmod, "_pack_files", wrapped)
    fast_inc = run(src, io.BytesIO(fast[3]), packed=True, monkeypatch=monkeypatch)
    slow_inc = run(src, io.BytesIO(slow[3]), packed=False, monkeypatch=monkeypatch)
    assert fast_inc == slow_inc
    paths = [row[0] for row in fast_inc[2]]
    assert {"d/plain02", "d/plain03", "hard", "d/sub/new", "d/plain09"} <= set(paths)
    assert "d/plain01" not in paths


def test_short_runs_reuse_and_grow_the_output_buffers(tmp_path, monkeypatch):
    """pack_files fills the caller's two bytearrays call after call (a run cut every ~1 KB
    here) and grows them for a file bigger than they are: the stream is still the Python
    loop's, byte for byte."""
    src = tmp_path / "src"
    awkward_tree(src, ascii_names=True)
    (src / "d" / "sub" / "f60k").write_bytes(os.urandom(60_000))  # under the 64 KiB limit
    freeze_atimes(src)
    monkeypatch.setattr(fsmod, "PACK_MAX_BYTES", 1000)
    calls = []
    real = fsmod._pack_files
    monkeypatch.setattr(fsmod, "_pack_files", lambda *a: (calls.append(len(a[-2])), real(*a))[1])
    wrapped = fsmod._pack_files
    fast = run(src, None, packed=True, monkeypatch=monkeypatch)
    monkeypatch.setattr(fsmod, "_pack_files", wrapped)
    assert len(calls) > 10 and max(calls) > 60_000  # (the stream buffer's size before each)
    assert fast == run(src, None, packed=False, monkeypatch=monkeypatch)


def test_a_file_changed_after_the_scan_is_left_to_python(tmp_path, monkeypatch):
    """pack_files takes the scan's lstat as the "before" of its read (no fstat of its own
    first) and opens each file from its directory's descriptor: a file that changed after
    the scan (grown, or replaced by another inode of the same size and content) fails the
    check after the read and goes to the Python loop, which archives it as it is now."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(20):
        (src / "d" / f"plain{i:02d}").write_bytes(bytes([65 + i]) * (i * 37 + 1))
    (src / "top").write_bytes(b"a file at the root")
    freeze_atimes(src)
    # (the live walk's rows of a tree this small reach the pass only when the walk returns)
    real_scan = FilesystemTranslator._scan_live

    def scan_then_change(self, *a):
        out = real_scan(self, *a)
        (src / "d" / "plain03").write_bytes(b"grown after the scan")
        os.rename(src / "d" / "plain05", src / "d" / "old05")
        (src / "d" / "plain05").write_bytes(bytes([70]) * (5 * 37 + 1))  # same bytes, new inode
        return out

    monkeypatch.setattr(FilesystemTranslator, "_scan_live", scan_then_change)
    real = fsmod._pack_files
    done = []
    monkeypatch.setattr(fsmod, "_pack_files", lambda *a: (r := real(*a), done.append(r[6]))[0])
    wrapped = fsmod._pack_files
    stream, digest, rows, _state, _warnings = run(src, None, packed=True, monkeypatch=monkeypatch)
    monkeypatch.setattr(fsmod, "_pack_files", wrapped)
    assert sum(done) == 19  # 21 files, two of them Python's
    from tape_formats.archive import PaxReader

    got = {e.path: d.read() for e, d in PaxReader(io.BytesIO(stream)) if e.kind == "file"}
    assert got["d/plain03"] == b"grown after the scan"
    assert got["d/plain05"] == bytes([70]) * (5 * 37 + 1) and got["top"] == b"a file at the root"
    assert got["d/plain07"] == bytes([72]) * (7 * 37 + 1)
    sizes = {row[0]: row[2] for row in rows}
    assert sizes["d/plain03"] == len(b"grown after the scan")


def test_the_walk_beside_the_pass_matches_the_python_loop(tmp_path, monkeypatch):
    """A baseline's walk runs on its own thread while the pass packs the rows behind it
    (LiveSpool): on a tree whose rows span many spool chunks, with a directory the C leaves
    to Python in the middle, the same stream, index, state and warnings as the Python loop."""
    src = tmp_path / "src"
    for d in range(12):
        sub = src / f"d{d:02d}"
        sub.mkdir(parents=True)
        for i in range(300):
            (sub / f"file-with-a-longish-name-{i:04d}").write_bytes(bytes([d]) * (i % 50))
    (src / "d05" / "naïve").write_bytes(b"a name the C leaves to Python")
    (src / "d05" / "deeper").mkdir()
    (src / "d05" / "deeper" / "x").write_bytes(b"x")
    freeze_atimes(src)
    LISTED.clear()
    fast = run(src, None, packed=True, monkeypatch=monkeypatch)
    assert LISTED.count(False) == 1 and len(LISTED) == 14
    assert fast == run(src, None, packed=False, monkeypatch=monkeypatch)
    assert len(fast[2]) == 12 * 301 + 4


def test_a_failing_walk_fails_the_backup(tmp_path, monkeypatch):
    src = tmp_path / "src"
    awkward_tree(src, ascii_names=True)

    def broken(path: bytes, prefix: bytes):
        if prefix:
            raise OSError(5, "the disk is gone")
        return SCAN_DIR(path, prefix)

    monkeypatch.setattr(fsmod, "_scan_dir", broken)
    w = PaxWriter(io.BytesIO())
    with pytest.raises(OSError, match="the disk is gone"):
        FilesystemTranslator().backup(str(src), None, w)


def test_live_spool_hands_rows_over_as_written():
    from translators.filesystem_state import LiveSpool

    spool = LiveSpool()
    rows = [bytes([i % 251]) * (1000 + i) for i in range(600)]  # ~900 KB: several chunks
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(spool.chunks()))
    reader.start()
    for r in rows:
        spool.add_packed(r)
    spool.finish()
    reader.join()
    assert b"".join(got) == b"".join(rows) and len(got) > 2
    spool.close()
    failed = LiveSpool()
    failed.add_packed(b"x" * 10)
    failed.finish(OSError("gone"))
    with pytest.raises(OSError, match="gone"):
        list(failed.chunks())
    failed.close()
