"""One convention for both CLIs (``vtl`` and ``ebm``): one ``error: ...`` line, exit 2 when the
request is refused (bad arguments, unknown names, no library at --root), exit 1 when a valid
operation fails (damage, a failed verification); the policy is stated in both ``--help``s."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vtl.cli.errors import EXIT_FAILED, EXIT_USAGE, CliError, OperationFailed, exit_code_for

BIN = Path(sys.executable).parent


def run(cli: str, root: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / cli), "--root", str(root), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def assert_one_line(r: subprocess.CompletedProcess, code: int, match: str = "") -> None:
    assert r.returncode == code, (r.args, r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert match.lower() in r.stderr.lower(), r.stderr


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("codes") / "lib"
    for args in (("init", "--drives", "1", "--slots", "4", "--mailslots", "1"),
                 ("cartridge", "create", "A00001L8-A00002L8", "--capacity", "16MiB")):
        r = run("vtl", root, *args)
        assert r.returncode == 0, r.stderr
    return root


@pytest.mark.parametrize("cli", ["vtl", "ebm"])
def test_help_states_the_exit_code_policy(cli: str, tmp_path: Path) -> None:
    r = run(cli, tmp_path, "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "Exit status: 0 done; 2 refused" in text and "1 the operation failed" in text


@pytest.mark.parametrize("args, match", [
    (("vtl", "frobnicate"), "no such command"),
    (("ebm", "frobnicate"), "no such command"),
    (("vtl", "status", "--bogus"), "no such option"),
    (("ebm", "list", "--bogus"), "no such option"),
    (("vtl", "cartridge", "show", "nonsense"), "not an LTO barcode"),
    (("vtl", "cartridge", "show", "Z00009L8"), "unknown barcode"),
    (("vtl", "move", "slot:1", "slot:2"), "occupied"),
    (("ebm", "pool", "add", "nopool", "A00001L8"), "no pool"),
    (("ebm", "show", "99"), "no backup"),
    (("ebm", "restore", "nosuch", "--to", "/nonexistent/r"), "no backup or dataset"),
    (("ebm", "list", "nosuch"), "no dataset"),
    (("ebm", "forget"), "--keep"),
])
def test_refused_requests_exit_2(lib: Path, args: tuple[str, ...], match: str) -> None:
    assert_one_line(run(args[0], lib, *args[1:]), EXIT_USAGE, match)


@pytest.mark.parametrize("cli", ["vtl", "ebm"])
def test_no_library_at_root_is_refused_alike(cli: str, tmp_path: Path) -> None:
    """The same condition gives the same exit code from both commands (it used to be 2 from
    vtl and 1 from ebm)."""
    command = "status" if cli == "vtl" else "list"
    assert_one_line(run(cli, tmp_path / "none", command), EXIT_USAGE, "no library")


def test_failed_operations_exit_1(tmp_path: Path) -> None:
    """(ebm's: tests/ebm/test_failures.py, e.g. a wrong passphrase, a missing cartridge.)"""
    root = tmp_path / "lib"
    assert run("vtl", root, "init", "--drives", "1", "--slots", "4").returncode == 0
    assert run("vtl", root, "cartridge", "create", "A00001L8", "--capacity", "16MiB"
               ).returncode == 0
    (root / "cartridges" / "A00001L8.vtape").unlink()  # damage, not a bad command line
    assert_one_line(run("vtl", root, "cartridge", "verify", "A00001L8"), EXIT_FAILED, "missing")
    (root / "library.toml").write_text("drives = [\n")
    assert_one_line(run("vtl", root, "status"), EXIT_FAILED, "library.toml")


def test_policy_table() -> None:
    """The classes map as documented; unexpected errors count as failures."""
    from ebm.catalog import CatalogError
    from ebm.controller import RequestError
    from ebm.crypto import WrongKey
    from ebm.manager import JobError
    from ebm.restore import RestoreError, UnknownBackup
    from tape_formats.cartridge import WriteProtected
    from vtl.config import ConfigError, ConfigFileError
    from vtl.errors import CartridgeMissing, CatalogDamaged, DestinationFull, UnknownBarcode

    refused = [CliError("x"), UnknownBarcode("x"), DestinationFull("x"), ConfigError("x"),
               RequestError("x"), CatalogError("x"), UnknownBackup("x")]
    failed = [OperationFailed("x"), CartridgeMissing("x"), CatalogDamaged("x"), ConfigFileError("x"),
              JobError("x"), RestoreError("x"), WrongKey("x"), WriteProtected("x"),
              OSError(5, "I/O error"), RuntimeError("boom")]
    assert [exit_code_for(e) for e in refused] == [EXIT_USAGE] * len(refused)
    assert [exit_code_for(e) for e in failed] == [EXIT_FAILED] * len(failed)
