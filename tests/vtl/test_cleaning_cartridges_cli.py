"""Cleaning cartridges through the real ``vtl`` CLI: created from CLNxxxL1 labels with their
cleaning cycles, listed with what is left, never in a pool, refused where data would go,
and kept as cleaning cartridges by a catalog rebuild."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_vtl_cli import assert_bad_input, vtl, vtl_json


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    assert vtl(root, "init", "--drives", "1", "--slots", "6", "--mailslots", "1").exit_code == 0
    return root


def _row(root: Path, barcode: str) -> dict:
    return next(r for r in vtl_json(root, "cartridge", "list") if r["barcode"] == barcode)


def test_create_list_and_refusals(root: Path) -> None:
    out = vtl_json(root, "cartridge", "create", "CLN001L1-CLN002L1", "--cycles", "3")
    assert [c["barcode"] for c in out["cartridges"]] == ["CLN001L1", "CLN002L1"]
    row = _row(root, "CLN001L1")
    assert (row["state"], row["pool"], row["cleanings_left"]) == ("cleaning", None, 3)
    assert row["media"] == "LTO-8" and row["capacity"] == 1 << 20
    assert "3 cleanings left" in vtl(root, "cartridge", "list").stdout
    vtl_json(root, "cartridge", "create", "CLN003LU")  # universal label, default cycles
    assert _row(root, "CLN003LU")["cleanings_left"] == 50
    assert_bad_input(root, "cartridge", "create", "CLN004L1", "--cycles", "0", match="cycles")
    assert_bad_input(root, "cartridge", "create", "CLN004L1", "--capacity", "1MiB",
                     match="cleaning cartridge")
    assert_bad_input(root, "cartridge", "erase", "CLN001L1", "--yes", match="cleaning")
    assert_bad_input(root, "cartridge", "worm", "CLN001L1", match="cleaning")
    assert_bad_input(root, "cartridge", "create", "CLN001L0", match="not an LTO barcode")


def test_load_and_rebuild_keep_it_a_cleaning_cartridge(root: Path) -> None:
    vtl_json(root, "cartridge", "create", "CLN001L1", "--cycles", "5")
    assert vtl_json(root, "load", "CLN001L1", "0")["to"] == "drive:0"
    vtl_json(root, "unload", "0")
    (root / "catalog.sqlite").unlink()
    r = vtl(root, "catalog", "rebuild")
    assert r.exit_code == 0, r.output
    row = _row(root, "CLN001L1")
    assert (row["state"], row["pool"], row["cleanings_left"]) == ("cleaning", None, 5)


def test_the_backup_manager_never_takes_one(root: Path) -> None:
    from ebm.catalog import Catalog, CatalogError

    vtl_json(root, "cartridge", "create", "CLN001L1")
    catalog = Catalog.for_root(root)
    try:
        with pytest.raises(CatalogError, match="cleaning cartridge"):
            catalog.add_to_pool("Default", "CLN001L1")
    finally:
        catalog.close()
