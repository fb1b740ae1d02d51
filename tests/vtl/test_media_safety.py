"""Media and cross-tool safety: generations checked as a real library does, EBM backups under
retention guarded against ``vtl cartridge delete/erase/export``, and a library.toml shrunk
under its cartridges refused."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from served_library import vtl

from vtl.config import CONFIG_NAME


def one_error(r, code: int, *words: str) -> None:
    assert r.returncode == code, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    for w in words:
        assert w in r.stderr


def test_init_media_picks_its_drive_and_refuses_a_mismatch(tmp_path: Path):
    vtl(tmp_path / "a", "init", "--media", "LTO-7", "--drives", "1", "--slots", "4")
    assert 'drive_model = "IBM-ULT3580-TD7"' in (tmp_path / "a" / CONFIG_NAME).read_text()
    r = vtl(tmp_path / "b", "init", "--media", "LTO-9", "--drive-model", "IBM-ULT3580-TD7",
            check=False)
    one_error(r, 2, "LTO-9", "TD7")
    assert not (tmp_path / "b" / CONFIG_NAME).exists()


def test_create_refuses_media_the_drives_cannot_write(tmp_path: Path):
    root = tmp_path / "lib"
    vtl(root, "init", "--media", "LTO-7", "--drives", "1", "--slots", "4")
    for args in (["A00001L9"], ["A00001L7-A00002L7", "--media", "LTO-9"],
                 ["--count", "2", "--prefix", "B", "--media", "LTO-5"]):
        one_error(vtl(root, "cartridge", "create", *args, check=False), 2, "write")
    assert "A0000" not in vtl(root, "cartridge", "list").stdout
    vtl(root, "cartridge", "create", "A00001L6", "--capacity", "1MiB")  # TD7 writes LTO-6


def test_load_refuses_media_the_drives_cannot_read(tmp_path: Path):
    root = tmp_path / "lib"
    vtl(root, "init", "--drives", "1", "--slots", "4")
    vtl(root, "cartridge", "create", "A00001L8", "--capacity", "1MiB")
    toml = root / CONFIG_NAME
    toml.write_text(toml.read_text().replace('"IBM-ULT3580-TD8"', '"IBM-ULT3580-TD7"'))
    one_error(vtl(root, "load", "A00001L8", "0", check=False), 2, "LTO-8", "read LTO-5..LTO-7")
    assert "slot:1" in vtl(root, "cartridge", "show", "A00001L8").stdout


def _backup_on(root: Path, barcode: str, state: str = "done") -> None:
    """An EBM backup with a volume on ``barcode``, straight into the shared catalog."""
    from ebm.catalog import Catalog

    Catalog.for_root(root).close()  # the EBM's tables
    with sqlite3.connect(root / "catalog.sqlite") as db:
        cur = db.execute("INSERT INTO ebm_backups(uuid, dataset, level, translator, started, "
                         "state) VALUES (?, 'home', 'full', 'filesystem', ?, ?)",
                         (f"u-{barcode}-{state}", time.time(), state))
        db.execute("INSERT INTO ebm_backup_volumes(backup, seq, barcode, first_file, "
                   "last_file, first_object, last_object) VALUES (?, 0, ?, 0, 2, 0, 2)",
                   (cur.lastrowid, barcode))


@pytest.mark.parametrize("command", [["cartridge", "delete", "--yes"],
                                     ["cartridge", "erase", "--yes"],
                                     ["cartridge", "export"]])
def test_backups_under_retention_need_force(tmp_path: Path, command: list[str]):
    root = tmp_path / "lib"
    vtl(root, "init", "--drives", "1", "--slots", "4", "--mailslots", "1")
    vtl(root, "cartridge", "create", "A00001L8-A00002L8", "--capacity", "1MiB")
    _backup_on(root, "A00001L8")
    _backup_on(root, "A00002L8", state="expired")  # forgotten: nothing to guard
    r = vtl(root, *command, "A00001L8", check=False)
    one_error(r, 2, "A00001L8 holds 1 EBM backup(s) still under retention", "home #",
              "ebm forget", "--force")
    assert "A00001L8" in vtl(root, "cartridge", "list").stdout
    r = vtl(root, *command, "A00001L8", "--force")
    assert "warning: A00001L8 holds 1 EBM backup(s)" in r.stderr
    if command[1] != "export":  # (the one mailslot is taken now)
        vtl(root, *command, "A00002L8")


def test_shrinking_slots_under_cartridges_is_refused(tmp_path: Path):
    root = tmp_path / "lib"
    vtl(root, "init", "--drives", "1", "--slots", "10", "--mailslots", "1")
    vtl(root, "cartridge", "create", "A00001L8", "--capacity", "1MiB", "--slot", "slot:9")
    toml = root / CONFIG_NAME
    good = toml.read_text()
    toml.write_text(good.replace("\nslots = 10\n", "\nslots = 5\n"))
    for command in (["status"], ["cartridge", "list"]):
        one_error(vtl(root, *command, check=False), 1, "A00001L8", "slots must be at least 9")
    toml.write_text(good.replace("\nslots = 10\n", "\nslots = 9\n"))
    assert "A00001L8" in vtl(root, "status").stdout
