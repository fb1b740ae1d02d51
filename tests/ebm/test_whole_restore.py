"""A whole full backup restores by reading its stream once, front to back, and still checks
every entry against the catalog: sha256, path at each offset, no row left unmet."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ebm_helpers import barcodes, make_library, manifest, write_tree

from ebm.controller import BackupRequest
from ebm.manager import load_translator
from ebm.restore import RestoreError, restore


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
