"""``vtl drive tapealert``, ``vtl changer tapealert``, ``vtl cartridge inject-error`` and
``vtl drive status`` through the real CLI: what they save for a running server, and one
line with exit 2 for every bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_vtl_cli import vtl, vtl_json

from vtl import faults


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    assert vtl(root, "init", "--drives", "2", "--slots", "4", "--mailslots", "1").exit_code == 0
    assert vtl(root, "cartridge", "create", "A00001L8", "--capacity", "64MiB").exit_code == 0
    return root


def refused(root: Path, *args: str, match: str) -> None:
    r = vtl(root, *args)
    assert r.exit_code == 2, (args, r.output)
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert match in r.stderr, r.stderr


def test_tapealert_injection(root: Path) -> None:
    out = vtl_json(root, "drive", "tapealert", "drive:1", "clean-now", "3")
    assert out["flags"] == [3, 20] and "when vtl serve starts" in out["message"]
    vtl_json(root, "changer", "tapealert", "library-door")
    table = faults.FaultTable(root)
    assert table.raised("drive1") == (1, frozenset({3, 20}))
    assert table.raised("changer") == (1, frozenset({16}))
    vtl_json(root, "drive", "tapealert", "1", "--clear")
    assert faults.FaultTable(root).raised("drive1") == (2, frozenset())
    refused(root, "drive", "tapealert", "0", "no-such-flag", match="unknown TapeAlert flag")
    refused(root, "drive", "tapealert", "0", "65", match="unknown TapeAlert flag")
    refused(root, "drive", "tapealert", "7", "3", match="no drive 7")
    refused(root, "drive", "tapealert", "0", match="at least one")
    refused(root, "drive", "tapealert", "0", "3", "--clear", match="--clear takes no flags")
    refused(root, "changer", "tapealert", "hard-error", match="unknown TapeAlert flag")
    refused(root.parent / "none", "drive", "tapealert", "0", "3", match="no library")


def test_media_error_injection(root: Path) -> None:
    vtl_json(root, "cartridge", "inject-error", "A00001L8", "--block", "5", "--read")
    vtl_json(root, "cartridge", "inject-error", "a00001l8", "--block", "7", "--partition", "1")
    errors = faults.FaultTable(root).media_errors("A00001L8")
    assert errors == {(0, 5): {"read"}, (1, 7): {"read", "write"}}
    assert vtl_json(root, "cartridge", "inject-error", "A00001L8", "--block", "5",
                    "--clear")["cleared"] == 1
    assert vtl_json(root, "cartridge", "inject-error", "A00001L8", "--clear")["cleared"] == 1
    assert faults.FaultTable(root).media_errors("A00001L8") == {}
    refused(root, "cartridge", "inject-error", "Z00001L8", "--block", "1",
            match="unknown barcode")
    refused(root, "cartridge", "inject-error", "A00001L8", match="--block")
    refused(root, "cartridge", "inject-error", "A00001L8", "--block", "-1", match="--block")
    refused(root, "cartridge", "inject-error", "A00001L8", "--block", "1", "--partition", "4",
            match="--partition")
    refused(root, "cartridge", "inject-error", "A00001L8", "--clear", "--read",
            match="--clear")


def test_drive_status(root: Path) -> None:
    rows = vtl_json(root, "drive", "status")
    assert [r["drive"] for r in rows] == [0, 1]
    assert rows[0]["loads"] == 0 and rows[0]["cleaning_due"] is False
    assert "never" in vtl(root, "drive", "status").stdout
