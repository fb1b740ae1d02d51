"""A whole full backup restores by reading its stream once, front to back, and still checks
every entry against the catalog: sha256, path at each offset, no row left unmet."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from ebm_helpers import barcodes, make_library, manifest, write_tree

from ebm.controller import BackupRequest
from ebm.manager import load_translator
from ebm.mover import MoverError
from ebm.restore import RestoreError, _ReadAhead, restore


def _full(tmp_path: Path):
    ebm = make_library(tmp_path / "lib", barcodes(2))
    src = tmp_path / "src"
    write_tree(src, {f"d{i % 3}/f{i:03d}": os.urandom(i * 997) for i in range(60)})
    os.link(src / "d0/f003", src / "hard")
    (src / "sym").symlink_to("d1/f001")
    b = ebm.backup(BackupRequest(dataset="ds", source=src, pool="pool"))
    return ebm, src, b


def _restore(ebm, b, target: Path):
    return restore(ebm.catalog, ebm.library, load_translator, b, target)


def _tamper(ebm, b, path: str, sql: str, *args) -> None:
    ebm.catalog.db.execute(
        f"UPDATE ebm_files SET {sql} WHERE backup=? AND path=(SELECT id FROM ebm_paths WHERE path=?)",
        (*args, b.id, path))


def test_whole_backup_reads_each_block_once(tmp_path: Path) -> None:
    ebm, src, b = _full(tmp_path)
    st = _restore(ebm, b, tmp_path / "out")
    assert manifest(tmp_path / "out") == manifest(src)
    assert st.blocks_read == b.blocks
    assert st.entries == b.nfiles
    ebm.close()


def test_whole_restore_refuses_a_wrong_digest(tmp_path: Path) -> None:
    ebm, _, b = _full(tmp_path)
    _tamper(ebm, b, "d1/f007", "sha256=?", b"\x00" * 32)
    with pytest.raises(RestoreError, match="d1/f007"):
        _restore(ebm, b, tmp_path / "out")
    assert not (tmp_path / "out/d1/f007").exists()  # never left half-written
    ebm.close()


def test_whole_restore_refuses_a_row_the_stream_does_not_hold(tmp_path: Path) -> None:
    ebm, _, b = _full(tmp_path)
    _tamper(ebm, b, "d2/f005", "header_offset=header_offset+1")
    with pytest.raises(RestoreError, match="d2/f005.*missing from the tape"):
        _restore(ebm, b, tmp_path / "out")
    ebm.close()


def test_whole_restore_refuses_another_path_at_an_offset(tmp_path: Path) -> None:
    ebm, _, b = _full(tmp_path)
    ebm.catalog.db.execute("UPDATE ebm_paths SET path='d0/other' WHERE path='d0/f009'")
    with pytest.raises(RestoreError, match="found 'd0/f009' where the index says 'd0/other'"):
        _restore(ebm, b, tmp_path / "out")
    ebm.close()


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ebm-restore-read"]


def test_a_failed_whole_restore_stops_its_read_thread(tmp_path: Path) -> None:
    ebm, src, b = _full(tmp_path)
    good = ebm.catalog.file(b.id, "d0/f000").sha256
    _tamper(ebm, b, "d0/f000", "sha256=?", b"\x00" * 32)
    with pytest.raises(RestoreError, match="d0/f000"):
        _restore(ebm, b, tmp_path / "out")
    assert not _reader_threads()
    _tamper(ebm, b, "d0/f000", "sha256=?", good)
    _restore(ebm, b, tmp_path / "again")  # the drive was given back
    assert manifest(tmp_path / "again") == manifest(src)
    ebm.close()


class _Blocks:
    """A TapeReader stand-in: ``n`` chunks of one byte value each, then ``fail`` if given."""

    def __init__(self, n: int, fail: BaseException | None = None) -> None:
        self.n, self.fail, self.calls = n, fail, 0

    def readinto(self, buf: bytearray) -> int:
        self.calls += 1
        if self.calls > self.n:
            if self.fail is not None:
                raise self.fail
            return 0
        buf[:] = bytes([self.calls]) * len(buf)
        return len(buf)


def test_read_ahead_hands_out_the_stream_in_order_then_its_error() -> None:
    ahead = _ReadAhead(_Blocks(3, MoverError("block 3 is corrupt")))  # type: ignore[arg-type]
    got = bytes(ahead.read(10)) + bytes(ahead.read(_ReadAhead.CHUNK))
    assert got == b"\x01" * (10 + _ReadAhead.CHUNK - 10)
    assert bytes(ahead.read(2 * _ReadAhead.CHUNK)) == b"\x02" * _ReadAhead.CHUNK
    assert bytes(ahead.read(5)) == b"\x03" * 5
    ahead.read(_ReadAhead.CHUNK)
    with pytest.raises(MoverError, match="block 3 is corrupt"):
        ahead.read(1)
    assert ahead.read(1) == b""  # nothing after the error
    ahead.close()
    assert not _reader_threads()


def test_read_ahead_stops_when_closed_with_a_full_queue() -> None:
    src = _Blocks(1000)
    ahead = _ReadAhead(src)  # type: ignore[arg-type]
    assert bytes(ahead.read(1)) == b"\x01"
    ahead.close()
    assert not _reader_threads()
    assert src.calls <= _ReadAhead.DEPTH + 3  # bounded: it never ran far ahead
    assert ahead.read(1) == b""
