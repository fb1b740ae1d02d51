"""The ``vtl`` admin CLI: happy paths, and every bad input gives one line, exit 2, no change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vtl.cli.main import app
from vtl.library import Library

runner = CliRunner()


def vtl(root: Path, *args: str):
    return runner.invoke(app, ["--root", str(root), *args])


def vtl_json(root: Path, *args: str):
    result = vtl(root, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def locations(root: Path) -> dict[str, str]:
    """Barcode -> where ``cartridge list`` says it is (slot:N, drive:N, mailslot:N, vault)."""
    return {c["barcode"]: c["location"] for c in vtl_json(root, "cartridge", "list")}


def snapshot(root: Path) -> tuple:
    """Everything a command could change: catalog rows and cartridge files."""
    if not (root / "catalog.sqlite").exists():
        return (None, sorted(p.name for p in root.rglob("*")) if root.exists() else None)
    lib = Library.open(root)
    try:
        rows = lib.catalog.cartridges()
    finally:
        lib.close()
    files = sorted(
        (p.name, p.stat().st_size) for p in (root / "cartridges").iterdir()
        if p.suffix != ".lock"
    )
    return rows, files


def assert_bad_input(root: Path, *args: str, match: str = "", code: int = 2) -> None:
    before = snapshot(root)
    result = vtl(root, *args)
    assert result.exit_code == code, (args, result.output)
    err = result.stderr
    assert err.startswith("error: "), (args, err)
    assert err.count("\n") == 1, (args, err)
    assert "Traceback" not in result.output
    assert match.lower() in err.lower(), (args, err)
    assert snapshot(root) == before, args


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    r = vtl(root, "init", "--drives", "2", "--slots", "8", "--mailslots", "2")
    assert r.exit_code == 0, r.output
    r = vtl(root, "cartridge", "create", "A00001L8-A00004L8", "--capacity", "64MiB")
    assert r.exit_code == 0, r.output
    return root


# ---- happy paths ---------------------------------------------------------------------------
def test_init_and_status(root: Path) -> None:
    status = vtl_json(root, "status")
    names = [e["element"] for e in status["elements"]]
    assert names[:5] == ["transport", "mailslot:1", "mailslot:2", "drive:0", "drive:1"]
    drives = [e for e in status["elements"] if e["type"] == "data_transfer"]
    assert [d["serial"] for d in drives] == ["VTLD000001", "VTLD000002"]
    human = vtl(root, "status")
    assert human.exit_code == 0 and "A00001L8" in human.stdout and "VTLD000002" in human.stdout


def test_create_variants(root: Path) -> None:
    rows = vtl_json(root, "cartridge", "create", "--count", "2", "--prefix", "B",
                    "--capacity", "1MiB")["cartridges"]
    assert [r["barcode"] for r in rows] == ["B00001L8", "B00002L8"]
    assert rows[0]["capacity"] == 1 << 20
    row = vtl_json(root, "cartridge", "create", "W00001LY", "--capacity", "1MiB",
                   "--vault")["cartridges"][0]
    assert row["worm"] and row["location"] == "vault"
    row = vtl_json(root, "cartridge", "create", "C00001L7", "--worm", "--slot", "slot:8",
                   "--capacity", "1MiB")["cartridges"][0]
    assert row["worm"] and row["media"] == "LTO-7" and row["location"] == "slot:8"
    listing = vtl_json(root, "cartridge", "list")
    assert len(listing) == 8
    # --json and --root also work after the subcommand
    assert json.loads(vtl(root, "cartridge", "list", "--json").stdout) == listing
    late = runner.invoke(app, ["cartridge", "list", "--json", "--root", str(root)])
    assert json.loads(late.stdout) == listing


def test_move_load_unload(root: Path) -> None:
    vtl_json(root, "load", "A00001L8", "0")
    vtl_json(root, "move", "A00002L8", "drive:1")
    vtl_json(root, "move", "1026", "mailslot:1")  # slot:3 by address
    where = locations(root)
    assert where == {"A00001L8": "drive:0", "A00002L8": "drive:1", "A00003L8": "mailslot:1",
                     "A00004L8": "slot:4"}
    vtl_json(root, "unload", "drive:0")
    vtl_json(root, "unload", "1")
    where = locations(root)
    assert where["A00001L8"] == "slot:1" and where["A00002L8"] == "slot:2"


def test_load_into_the_drive_it_is_in(root: Path) -> None:
    """Loading a cartridge into the drive that holds it is not a move (issue 10, item 9)."""
    vtl_json(root, "load", "A00001L8", "0")
    events_before = len(vtl_json(root, "events"))
    result = vtl(root, "load", "A00001L8", "drive:0")
    assert result.exit_code == 0, result.output
    assert result.stdout == "A00001L8 is already in drive:0\n"
    again = vtl_json(root, "load", "A00001L8", "0")
    assert again["from"] == again["to"] == "drive:0" and again["moved"] is False
    assert len(vtl_json(root, "events")) == events_before  # no move was logged
    assert locations(root)["A00001L8"] == "drive:0"


def test_export_vault_import(root: Path) -> None:
    out = vtl_json(root, "cartridge", "export", "A00001L8", "A00002L8")
    assert [e["to"] for e in out["exported"]] == ["mailslot:1", "mailslot:2"]
    assert vtl_json(root, "mailslot", "empty")["barcodes"] == ["A00001L8", "A00002L8"]
    out = vtl_json(root, "cartridge", "import", "A00002L8")
    assert out["imported"][0]["to"] == "mailslot:1"
    vtl_json(root, "move", "mailslot:1", "slot:2")
    where = locations(root)
    assert where["A00001L8"] == "vault" and where["A00002L8"] == "slot:2"


def _write_some(root: Path, barcode: str) -> None:
    lib = Library.open(root)
    try:
        bay = lib.load(barcode, 0)
        cart = bay.mount()
        for _ in range(3):
            cart.write_block(os.urandom(4096))
        cart.write_filemarks(1)
        cart.write_block(b"tail" * 100)
        lib.unload(0)
    finally:
        lib.close()


def test_show_verify_inspect(root: Path) -> None:
    _write_some(root, "A00001L8")
    show = vtl_json(root, "cartridge", "show", "A00001L8")
    assert show["files"] == 2 and show["location"] == "slot:1"
    assert show["tape_files"] == [
        {"file": 0, "first_block": 0, "blocks": 3, "bytes": 3 * 4096},
        {"file": 1, "first_block": 4, "blocks": 1, "bytes": 400},
    ]
    report = vtl_json(root, "cartridge", "verify", "A00001L8")
    assert report["ok"] and report["blocks"] == 4 and report["filemarks"] == 1
    report = vtl_json(root, "cartridge", "verify", "A00001L8", "--rebuild")
    assert report["ok"] and report["index_rebuilt_objects"] == 5
    inspect = vtl_json(root, "cartridge", "inspect", "A00001L8")
    assert inspect["header"]["barcode"] == "A00001L8"
    assert inspect["index"]["objects"] == 5
    assert any(a["name"] == "BARCODE" and a["value"] == "A00001L8" for a in inspect["mam"])
    for args in (("cartridge", "show", "A00001L8"), ("cartridge", "inspect", "A00001L8"),
                 ("cartridge", "verify", "A00001L8"), ("cartridge", "list")):
        r = vtl(root, *args)
        assert r.exit_code == 0, r.output


def test_a_run_of_filemarks_is_one_row(root: Path) -> None:
    """A million filemarks in one WRITE FILEMARKS (as many as the small test cartridge
    holds): show lists their empty files as one entry, inspect counts them without a list."""
    lib = Library.open(root)
    try:
        cart = lib.load("A00001L8", 0).mount()
        cart.write_block(b"a" * 100)
        cart.write_filemarks(1_000_000)
        cart.write_block(b"b" * 10)
        lib.unload(0)
    finally:
        lib.close()
    show = vtl_json(root, "cartridge", "show", "A00001L8")
    assert show["tape_files"] == [
        {"file": 0, "first_block": 0, "blocks": 1, "bytes": 100},
        {"file": 1, "first_block": 2, "blocks": 0, "bytes": 0, "empty_files": 999_999},
        {"file": 1_000_000, "first_block": 1_000_001, "blocks": 1, "bytes": 10},
    ]
    inspect = vtl_json(root, "cartridge", "inspect", "A00001L8")
    assert inspect["index"]["tape_files"] == 1_000_001
    assert inspect["index"]["native_bytes"] == 110
    assert inspect["header"]["format_features"] == "filemark_runs"
    r = vtl(root, "cartridge", "show", "A00001L8")
    assert r.exit_code == 0 and "999999 empty tape files" in r.output


def test_verify_reports_damage(root: Path) -> None:
    _write_some(root, "A00001L8")
    path = root / "cartridges" / "A00001L8.vtape"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    r = vtl(root, "cartridge", "verify", "A00001L8")
    assert r.exit_code == 1 and "FAILED" in r.stdout


def test_erase_protect_worm_delete(root: Path) -> None:
    _write_some(root, "A00001L8")
    vtl_json(root, "cartridge", "erase", "A00001L8", "--yes")
    row = vtl_json(root, "cartridge", "show", "A00001L8")
    assert row["used_bytes"] == 0 and row["state"] == "scratch"
    vtl_json(root, "cartridge", "protect", "A00002L8")
    assert vtl_json(root, "cartridge", "show", "A00002L8")["write_protected"]
    vtl_json(root, "cartridge", "unprotect", "A00002L8")
    vtl_json(root, "cartridge", "worm", "A00003L8")
    assert vtl_json(root, "cartridge", "show", "A00003L8")["worm"]
    vtl_json(root, "cartridge", "delete", "A00004L8")
    assert "A00004L8" not in {c["barcode"] for c in vtl_json(root, "cartridge", "list")}


# ---- bad input -----------------------------------------------------------------------------
def test_missing_library(tmp_path: Path) -> None:
    assert_bad_input(tmp_path / "none", "status", match="no library")
    assert_bad_input(tmp_path / "none", "cartridge", "list", match="no library")


def test_init_refuses_existing_and_bad_options(root: Path, tmp_path: Path) -> None:
    assert_bad_input(root, "init", match="already exists")
    assert_bad_input(tmp_path / "new", "init", "--drives", "0", match="drives")
    assert_bad_input(tmp_path / "new", "init", "--media", "LTO-1", match="media")
    assert_bad_input(tmp_path / "new", "init", "--drive-model", "ACME-X1", match="drive model")
    assert not (tmp_path / "new" / "library.toml").exists()


def test_bad_cartridge_input(root: Path) -> None:
    _write_some(root, "A00002L8")
    assert_bad_input(root, "cartridge", "create", "A00001L8", match="already exists")
    assert_bad_input(root, "cartridge", "create", "A0001L8", match="not an LTO barcode")
    assert_bad_input(root, "cartridge", "create", "CLN001L1", "--worm", match="cleaning")
    assert_bad_input(root, "cartridge", "create", "A00020L8-A00010L8", match="range")
    assert_bad_input(root, "cartridge", "create", "A00010L8-B00020L8", match="range")
    assert_bad_input(root, "cartridge", "create", "A00005L8-A00020L8", match="free slots")
    assert_bad_input(root, "cartridge", "create", "A00003L8-A00006L8", match="already exists")
    assert_bad_input(root, "cartridge", "create", "A00009L8", "--capacity", "lots", match="size")
    assert_bad_input(root, "cartridge", "create", "A00009L8", "--slot", "slot:1",
                     match="occupied")
    assert_bad_input(root, "cartridge", "create", "--count", "2", match="--prefix")
    assert_bad_input(root, "cartridge", "show", "Z00009L8", match="unknown barcode")
    assert_bad_input(root, "cartridge", "show", "nonsense", match="not an LTO barcode")
    assert_bad_input(root, "cartridge", "erase", "A00002L8", match="--yes")
    assert_bad_input(root, "cartridge", "delete", "A00002L8", match="--yes")
    assert_bad_input(root, "cartridge", "worm", "A00002L8", match="blank")
    assert_bad_input(root, "cartridge", "import", "A00001L8", match="already in the library")
    assert_bad_input(root, "cartridge", "export", "A00001L8", "A00001L8", match="twice")
    vtl_json(root, "cartridge", "worm", "A00003L8")
    assert_bad_input(root, "cartridge", "erase", "A00003L8", "--yes", match="WORM")


def test_bad_moves(root: Path) -> None:
    assert_bad_input(root, "move", "slot:1", "slot:2", match="occupied")
    assert_bad_input(root, "move", "slot:7", "slot:8", match="empty")
    assert_bad_input(root, "move", "slot:1", "slot:99", match="no slot 99")
    assert_bad_input(root, "move", "shelf:1", "slot:5", match="bad element")
    assert_bad_input(root, "move", "Z00001L8", "slot:5", match="unknown barcode")
    assert_bad_input(root, "load", "A00001L8", "7", match="drive")
    assert_bad_input(root, "unload", "0", match="empty")
    vtl_json(root, "load", "A00001L8", "0")
    assert_bad_input(root, "load", "A00002L8", "0", match="occupied")
    assert_bad_input(root, "cartridge", "erase", "A00001L8", "--yes", match="drive")
    assert_bad_input(root, "cartridge", "delete", "A00001L8", "--yes", match="drive")
    assert_bad_input(root, "cartridge", "protect", "A00001L8", match="drive")
    assert_bad_input(root, "cartridge", "export", "A00001L8", match="drive")


def test_usage_errors_are_one_line(root: Path) -> None:
    assert_bad_input(root, "frobnicate", match="no such command")
    assert_bad_input(root, "load", "A00001L8", match="missing argument")
    assert_bad_input(root, "status", "--bogus", match="no such option")


def test_console_script_subprocess(root: Path) -> None:
    """The installed entry point: real exit codes, one-line stderr, no traceback."""
    exe = [sys.executable, "-c", "from vtl.cli.main import app; app()"]
    env = {**os.environ, "VTL_ROOT": str(root)}
    ok = subprocess.run([*exe, "--json", "cartridge", "list"], capture_output=True,
                        text=True, env=env, timeout=60)
    assert ok.returncode == 0 and len(json.loads(ok.stdout)) == 4
    bad = subprocess.run([*exe, "cartridge", "show", "Q00001L8"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr == "error: unknown barcode Q00001L8\n"


def test_unexpected_exception_is_one_line(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*_a: object, **_k: object) -> None:
        raise ValueError("something\nunexpected")

    monkeypatch.setattr(Library, "elements", explode)
    result = vtl(root, "status")
    assert result.exit_code == 1
    assert result.stderr == "error: internal error: ValueError: something unexpected\n"


def test_missing_catalog(root: Path) -> None:
    (root / "catalog.sqlite").rename(root / "moved.sqlite")
    result = vtl(root, "status")
    assert result.exit_code == 1 and "catalog.sqlite is missing" in result.stderr  # damage
    assert not (root / "catalog.sqlite").exists()


def test_pools_states_events_config(root: Path) -> None:
    vtl_json(root, "pool", "create", "Offsite", "--retention-days", "30")
    assert_bad_input(root, "pool", "create", "Offsite", match="already exists")
    assert_bad_input(root, "pool", "create", "bad name!", match="bad pool name")
    vtl_json(root, "cartridge", "state", "A00001L8", "archive", "--pool", "Offsite")
    row = vtl_json(root, "cartridge", "show", "A00001L8")
    assert (row["state"], row["pool"]) == ("archive", "Offsite")
    assert_bad_input(root, "cartridge", "state", "A00001L8", "bogus", match="unknown state")
    assert_bad_input(root, "cartridge", "state", "A00001L8", "full", "--pool", "Nope",
                     match="unknown pool")
    pools = {p["name"]: p["cartridges"] for p in vtl_json(root, "pool", "list")}
    assert pools == {"Default": 0, "Offsite": 1, "Scratch": 3}
    actions = [e["action"] for e in vtl_json(root, "events", "--barcode", "A00001L8")]
    assert actions[0] == "state" and "create" in actions
    assert vtl_json(root, "config")["drives"] == 2


def test_status_shows_mounted(root: Path) -> None:
    lib = Library.open(root)
    try:
        lib.load("A00001L8", 1).mount()
        drives = [e for e in vtl_json(root, "status")["elements"] if e["type"] == "data_transfer"]
        assert [d["in_use"] for d in drives] == [False, True]
        assert_bad_input(root, "unload", "1", match="in use by another process")
        show = vtl_json(root, "cartridge", "show", "A00001L8")
        assert show["tape_files"] is None and "in use" in show["tape_files_error"]
    finally:
        lib.close()


def test_verify_compares_catalog_and_rebuild_fixes_it(root: Path) -> None:
    _write_some(root, "A00001L8")
    lib = Library.open(root)
    try:
        lib.catalog.update_cartridge("A00001L8", blocks=1)  # a catalog that lags the tape
    finally:
        lib.close()
    r = vtl(root, "--json", "cartridge", "verify", "A00001L8")
    assert r.exit_code == 1 and "catalog says 1 objects" in r.stdout
    report = vtl_json(root, "cartridge", "verify", "A00001L8", "--rebuild")
    assert report["ok"] and vtl_json(root, "cartridge", "show", "A00001L8")["blocks"] == 5


def test_adopt_orphaned_files(root: Path) -> None:
    _write_some(root, "A00001L8")
    vtl_json(root, "cartridge", "protect", "A00001L8")
    lib = Library.open(root)
    try:  # lose the catalog rows, keep the files (a crash or a lost catalog)
        lib.catalog.delete_cartridge("A00001L8")
        lib.catalog.delete_cartridge("A00002L8")
    finally:
        lib.close()
    assert_bad_input(root, "cartridge", "create", "A00001L8", match="adopt")
    assert_bad_input(root, "cartridge", "adopt", "A00003L8", match="already in the catalog")
    assert_bad_input(root, "cartridge", "adopt", "A00009L8", match="no cartridge file")
    assert_bad_input(root, "cartridge", "adopt", match="--all")
    out = vtl_json(root, "cartridge", "adopt", "--all")
    assert [d["barcode"] for d in out["adopted"]] == ["A00001L8", "A00002L8"]
    row = vtl_json(root, "cartridge", "show", "A00001L8")
    assert row["write_protected"] and row["state"] == "read-only"
    assert row["blocks"] == 5 and row["files"] == 2
    assert row["location"] == "slot:1"
    assert vtl_json(root, "cartridge", "adopt", "--all")["adopted"] == []


def test_damaged_and_missing_cartridge_files(root: Path) -> None:
    path = root / "cartridges" / "A00001L8.vtape"
    with path.open("r+b") as f:
        f.write(b"garbage")
    r = vtl(root, "cartridge", "verify", "A00001L8")
    assert r.exit_code == 1 and "FAILED" in r.stdout and r.stderr == ""
    assert vtl_json(root, "cartridge", "show", "A00001L8")["state"] == "error"
    r = vtl(root, "cartridge", "inspect", "A00001L8")
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    (root / "cartridges" / "A00002L8.vtape").unlink()  # damage: the operation fails (exit 1)
    assert_bad_input(root, "cartridge", "erase", "A00002L8", "--yes", match="missing", code=1)
    assert_bad_input(root, "cartridge", "verify", "A00002L8", match="missing", code=1)
    vtl_json(root, "cartridge", "delete", "A00002L8")  # the catalog row can still go
