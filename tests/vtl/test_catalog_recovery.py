"""A lost or damaged catalog (issue 10, items 2 and 3): read-only commands refuse it with one
line and change no file, `vtl catalog rebuild` gets cartridges and EBM backups back from the
cartridge files alone, `vtl catalog restore` puts a rotating backup copy back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ebm_helpers import barcodes, make_library, manifest, run_cli, write_tree

from ebm.catalog import Catalog
from ebm.controller import BackupRequest
from vtl import catalog_backup
from vtl.library import Library

VTL = [str(Path(sys.executable).with_name("vtl"))]
BARCODES = barcodes(3)


def vtl(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*VTL, "--root", str(root), *args], capture_output=True, text=True,
                          timeout=120)


def files_state(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of the library: mtime and bytes (what a command must not change)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def library(tmp_path: Path) -> tuple[Path, Path]:
    """A library with three cartridges and two EBM backups (full + incremental), and their
    source tree."""
    root, src = tmp_path / "lib", tmp_path / "src"
    ebm = make_library(root, BARCODES)
    write_tree(src, {"a.txt": b"alpha\n", "d/b.bin": os.urandom(50_000)})
    ebm.backup(BackupRequest(dataset="home", source=src, pool="pool"))
    (src / "c.txt").write_bytes(b"gamma\n")
    ebm.backup(BackupRequest(dataset="home"))
    ebm.close()
    lib = Library.open(root)
    lib.back_up_catalog()  # as `vtl catalog backup`; what comes after is in the journal only
    lib.move_medium(lib.find(BARCODES[2]).address, lib.resolve("slot:6"))
    lib.close()
    return root, src


def _listing(root: Path) -> list[tuple]:
    lib = Library.open(root, readonly=True)
    try:
        return [(r["barcode"], lib.element_name(r["address"]), r["blocks"], r["used_bytes"],
                 r["files"], r["state"], r["worm"]) for r in lib.catalog.cartridges()]
    finally:
        lib.close()


def _backups(root: Path) -> list[str]:
    r = run_cli(root, "--json", "list")
    assert r.returncode == 0, r.stderr
    import json

    return sorted(b["uuid"] for b in json.loads(r.stdout))


def damage(root: Path, how: str) -> None:
    cat = root / "catalog.sqlite"
    for side in (cat.with_name("catalog.sqlite-wal"), cat.with_name("catalog.sqlite-shm")):
        side.unlink(missing_ok=True)
    if how == "deleted":
        cat.unlink()
    elif how == "truncated":
        cat.write_bytes(b"")
    elif how == "malformed":  # a good header over garbage pages
        cat.write_bytes(cat.read_bytes()[:100] + os.urandom(cat.stat().st_size - 100))
    else:
        cat.write_bytes(os.urandom(20_000))


WHY = {"deleted": "is missing", "truncated": "is damaged (empty file)",
       "garbage": "is damaged (file is not a database)",
       "malformed": "is damaged (database disk image is malformed)"}


@pytest.mark.parametrize("how", ["deleted", "truncated", "garbage", "malformed"])
def test_read_only_commands_refuse_a_damaged_catalog(library, how: str) -> None:
    root, _src = library
    damage(root, how)
    before = files_state(root)
    for cmd in (vtl, run_cli):
        args = [("status",), ("cartridge", "list")] if cmd is vtl else [("list",)]
        for a in args:
            r = cmd(root, *a)
            assert r.returncode == 1, (a, r.stdout, r.stderr)
            assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
            assert r.stderr.startswith(f"error: media catalog {root / 'catalog.sqlite'} "
                                       f"{WHY[how]}"), r.stderr
            assert "`vtl catalog restore`" in r.stderr and "`vtl catalog rebuild`" in r.stderr
    # a state-changing command refuses too: nothing creates a new catalog over the old one
    r = vtl(root, "cartridge", "create", "N00001L8")
    assert r.returncode == 1 and WHY[how] in r.stderr
    assert files_state(root) == before


@pytest.mark.parametrize("how", ["deleted", "garbage"])
def test_rebuild_from_the_cartridges_alone(library, tmp_path: Path, how: str) -> None:
    root, src = library
    listing, backups = _listing(root), _backups(root)
    damage(root, how)
    r = vtl(root, "catalog", "rebuild")
    assert r.returncode == 0, r.stderr
    assert "3 cartridge(s), 2 backup(s)" in r.stdout
    assert _listing(root) == listing  # places from the last backup copy, usage from tape
    assert _backups(root) == backups
    # the EBM's blank pool member is the EBM's again, in its pool
    ebm = Catalog.for_root(root)
    try:
        assert [(m["barcode"], m["pool"]) for m in ebm.pool_media()] == [
            (bc, "pool") for bc in BARCODES]
    finally:
        ebm.close()
    r = run_cli(root, "restore", "home", "--to", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    assert manifest(tmp_path / "r") == manifest(src)
    # a healthy catalog is not rebuilt by accident
    r = vtl(root, "catalog", "rebuild")
    assert r.returncode == 2 and "healthy" in r.stderr and r.stderr.count("\n") == 1


def test_rebuild_with_no_hint_puts_cartridges_in_slots(library) -> None:
    """Without a copy and the placement journal, cartridges go to the slots in order."""
    root, _src = library
    listing = _listing(root)
    damage(root, "truncated")
    shutil.rmtree(catalog_backup.backup_dir(root))
    assert vtl(root, "catalog", "rebuild").returncode == 0
    places = {row[0]: row[1] for row in _listing(root)}
    assert places == dict(zip(BARCODES, ["slot:1", "slot:2", "slot:3"], strict=True))
    assert [row[2:] for row in _listing(root)] == [row[2:] for row in listing]
    assert len(_backups(root)) == 2


def test_restore_the_backup_copy(library, tmp_path: Path) -> None:
    root, src = library
    listing, backups = _listing(root), _backups(root)
    assert catalog_backup.copies(root)  # the state-changing commands left one
    # a backup written after the newest copy is found on tape by the restore
    copy_time = catalog_backup.copies(root)[0]
    (src / "e.txt").write_bytes(b"epsilon\n")
    r = run_cli(root, "backup", "home")
    assert r.returncode == 0, r.stderr
    for copy in catalog_backup.copies(root):
        if copy != copy_time:
            copy.unlink()
    damage(root, "garbage")
    r = vtl(root, "catalog", "restore")
    assert r.returncode == 0, r.stderr
    assert "restored the catalog from" in r.stdout
    assert len(_backups(root)) == len(backups) + 1
    assert [row[0:2] for row in _listing(root)] == [row[0:2] for row in listing]
    assert list(root.glob("catalog.sqlite.damaged-*"))  # the damaged file is kept
    r = run_cli(root, "restore", "home", "--to", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    assert manifest(tmp_path / "r") == manifest(src)


def test_restore_without_a_copy_is_one_line(library) -> None:
    root, _src = library
    for copy in catalog_backup.copies(root):
        copy.unlink()
    damage(root, "truncated")
    r = vtl(root, "catalog", "restore")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "no backup copy" in r.stderr and "vtl catalog rebuild" in r.stderr


def test_copies_rotate(library, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _src = library
    lib = Library.open(root)
    try:
        for _ in range(catalog_backup.KEEP + 2):
            lib.back_up_catalog()
    finally:
        lib.close()
    assert len(catalog_backup.copies(root)) == catalog_backup.KEEP
    r = vtl(root, "catalog", "check")
    assert r.returncode == 0 and "is whole" in r.stdout
