"""Read-only `ebm` commands never create or migrate the backup catalog (issue 10, item 2), and a
catalog damaged where only an EBM query reaches gives one line, exit 1 (item 3).

Unchanged means the file's bytes and mtime: list, ls, show, dataset/pool/schedule list open it
``mode=ro``. verify and restore mount cartridges, which the media catalog records (as any
cartridge move), so for them the EBM tables are checked to be neither created nor migrated.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from ebm_helpers import OLD_POOL_TABLES, barcodes, make_library, write_tree

from ebm.cli import app
from ebm.controller import BackupRequest
from vtl import CATALOG_NAME
from vtl.config import LibraryConfig
from vtl.library import Library

LOOKING = (["list"], ["list", "--all"], ["show", "ds"], ["ls", "ds"], ["ls", "ds", "--positions"],
           ["dataset", "list"], ["pool", "list"], ["schedule", "list"], ["--json", "list"])


def _settle(catalog: Path) -> tuple[bytes, int]:
    """Fold the WAL into the file (as a clean close does) and return its bytes and mtime."""
    con = sqlite3.connect(catalog)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return catalog.read_bytes(), catalog.stat().st_mtime_ns


def _tables(catalog: Path) -> set[str]:
    con = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    finally:
        con.close()


def _columns(catalog: Path, table: str) -> set[str]:
    con = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    try:
        return {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
    finally:
        con.close()


def _run(root: Path, *args: str) -> None:
    app(["--root", str(root), *args], prog_name="ebm")


def _make_old(catalog: Path) -> None:
    """Put the EBM tables back as an older EBM left them: its own pool tables, and file rows
    without ``linkname``."""
    con = sqlite3.connect(catalog)
    con.executescript(OLD_POOL_TABLES + """
        INSERT INTO ebm_pools VALUES ('pool', 1.0), ('olden', 2.0);
        INSERT INTO ebm_pool_media SELECT m.barcode, c.pool, m.state, m.append_at, m.busy,
            m.recycled FROM ebm_media m JOIN cartridges c USING (barcode);
        UPDATE ebm_pool_media SET pool = 'olden' WHERE barcode = 'E00002L8';
        DROP TABLE ebm_media;
        ALTER TABLE ebm_files DROP COLUMN linkname;
    """)
    con.close()


def test_looking_at_an_old_catalog_changes_nothing(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    root, src = tmp_path / "lib", tmp_path / "src"
    ebm = make_library(root, barcodes(2))
    write_tree(src, {"a.txt": b"alpha", "d/b.bin": os.urandom(3000)})
    ebm.backup(BackupRequest(dataset="ds", source=src, pool="pool"))
    ebm.close()
    _run(root, "schedule", "add", "ds", "daily at 03:00")
    catalog = root / CATALOG_NAME
    _make_old(catalog)
    before = _settle(catalog)
    capsys.readouterr()
    for args in LOOKING:
        _run(root, *args)
        assert _settle(catalog) == before, args
    out = capsys.readouterr().out
    assert "d/b.bin" in out and "olden" in out and "daily at 03:00" in out
    for args in (["verify", "ds"], ["restore", "ds", "--to", str(tmp_path / "to")]):
        _run(root, *args)  # mounts cartridges: the media catalog changes, the EBM's does not
        assert "ebm_pool_media" in _tables(catalog) and "ebm_media" not in _tables(catalog)
        assert "linkname" not in _columns(catalog, "ebm_files")
    assert (tmp_path / "to" / "d" / "b.bin").read_bytes() == (src / "d" / "b.bin").read_bytes()
    _run(root, "pool", "create", "new")  # a command that changes state migrates
    assert "ebm_media" in _tables(catalog) and "ebm_pool_media" not in _tables(catalog)
    assert "linkname" in _columns(catalog, "ebm_files")


def test_a_library_without_ebm_tables_has_no_backups_yet(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "lib"
    lib = Library.create(root, LibraryConfig(drives=1, slots=4, mailslots=1))
    lib.create_cartridges(barcodes(1), capacity=1 << 20)
    lib.close()
    catalog = root / CATALOG_NAME
    before = _settle(catalog)
    capsys.readouterr()
    for args in (["list"], ["dataset", "list"], ["schedule", "list"], ["verify"]):
        _run(root, *args)
        assert capsys.readouterr().out.strip() == "no EBM backups yet", args
        assert _settle(catalog) == before, args
    _run(root, "--json", "list")
    assert capsys.readouterr().out.strip() == "[]"
    _run(root, "pool", "list")  # the library's pools, no EBM cartridges in them
    assert "Scratch" in capsys.readouterr().out
    for args in (["show", "1"], ["ls", "some-uuid"], ["verify", "1"]):
        with pytest.raises(SystemExit) as exc:
            _run(root, *args)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and "no EBM backups yet" in err[0], err
    assert _settle(catalog) == before
    assert not {t for t in _tables(catalog) if t.startswith("ebm_")}


def test_a_page_only_an_ebm_query_reads_is_damage_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, src = tmp_path / "lib", tmp_path / "src"
    ebm = make_library(root, barcodes(1))
    write_tree(src, {f"f{i:03d}": b"x" * i for i in range(50)})
    ebm.backup(BackupRequest(dataset="ds", source=src, pool="pool"))
    ebm.close()
    catalog = root / CATALOG_NAME
    _settle(catalog)
    con = sqlite3.connect(catalog)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    (rootpage,) = con.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = 'ebm_files'").fetchone()
    con.close()
    with open(catalog, "r+b") as f:  # the file index's root page: garbage
        f.seek((rootpage - 1) * page_size)
        f.write(b"\xa5" * page_size)
    _run(root, "list")  # the backups table is intact
    capsys.readouterr()
    for args in (["ls", "ds"], ["restore", "ds", "--to", str(tmp_path / "to")]):
        with pytest.raises(SystemExit) as exc:
            _run(root, *args)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 1 and len(err) == 1, err
        assert str(catalog) in err[0] and "damaged" in err[0] and "vtl catalog" in err[0], err
