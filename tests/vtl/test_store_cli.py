"""``vtl init --store dedup``, ``vtl store stats`` and ``vtl store gc``."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from vtl.cli.main import app
from vtl.library import Library

runner = CliRunner()


def vtl(root: Path, *args: str):
    return runner.invoke(app, ["--root", str(root), *args])


def test_a_dedup_library_stores_a_second_copy_once(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    assert vtl(root, "init", "--store", "dedup", "--drives", "1", "--slots", "4").exit_code == 0
    assert vtl(root, "cartridge", "create", "A00001L8-A00002L8", "--capacity", "64MiB"
               ).exit_code == 0
    data = bytes(range(256)) * 4096 + b"tail"
    lib = Library.open(root)
    try:
        for barcode in ("A00001L8", "A00002L8"):
            lib.load(barcode, 0)
            cart = lib.drives[0].mount()
            for i in range(8):
                cart.write_block(data[i:] + bytes([i]))
            cart.write_filemarks(1)
            lib.unload(0)
    finally:
        lib.close()
    r = vtl(root, "--json", "store", "stats")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["cartridges"] == 2 and s["dedup_ratio"] > 1.9 and s["total_ratio"] > 2
    assert vtl(root, "cartridge", "erase", "A00002L8", "--yes").exit_code == 0
    r = vtl(root, "--json", "store", "gc")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["chunks_freed"] == 0  # A00001L8 still holds the same data
    assert vtl(root, "cartridge", "delete", "A00001L8", "--yes").exit_code == 0
    assert json.loads(vtl(root, "--json", "store", "gc").stdout)["chunks_freed"] > 0


def test_store_commands_refuse_a_plain_library(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    assert vtl(root, "init", "--drives", "1", "--slots", "2").exit_code == 0
    r = vtl(root, "store", "stats")
    assert r.exit_code == 2 and "plain" in r.output


def test_an_unknown_store_is_refused(tmp_path: Path) -> None:
    r = vtl(tmp_path / "lib", "init", "--store", "tape")
    assert r.exit_code == 2 and "unknown store" in r.output
    assert not (tmp_path / "lib" / "library.toml").exists()
