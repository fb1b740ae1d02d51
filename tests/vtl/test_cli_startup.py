"""Both CLIs start fast, which this checks by what they import, not by timing them (a shared
CI machine's clock says little; ``bench/bench_cli_startup.py`` measures): ``--help`` imports
none of the heavy modules (crypto, compression, construct, rich, croniter, rtslib, the S3
client, translators, sqlite3, the library or the iSCSI target); a listing (``vtl
cartridge list``, ``vtl status``, ``ebm list``) loads the library but no rich (its tables
are plain, vtl.cli.tables), tape, crypto or compression code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("cryptography", "zstandard", "construct", "rich", "croniter", "rtslib", "rtslib_fb",
         "boto3", "botocore", "translators", "sqlite3", "vtl.library",
         "vtl.iscsi", "tape_formats", "ebm.manager", "tomllib")
# What a listing needs neither: it reads the catalog and prints a table.
HEAVY_FOR_LISTS = ("cryptography", "zstandard", "construct", "crc32c", "rich", "croniter",
                   "rtslib", "rtslib_fb", "boto3", "botocore", "translators",
                   "vtl.iscsi", "tape_formats.cartridge")

PROBE = """
import contextlib, io, json, sys
sys.argv = [{cli!r}, *{args!r}]
from {module} import app
with contextlib.redirect_stdout(io.StringIO()):
    try:
        app()
    except SystemExit:
        pass
print(json.dumps(sorted(sys.modules)))
"""


def loaded_modules(cli: str, *args: str) -> set[str]:
    module = "vtl.cli.main" if cli == "vtl" else "ebm.cli"
    code = PROBE.format(cli=cli, args=list(args), module=module)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.splitlines()[-1]))


def heavy_in(loaded: set[str], heavy: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in heavy))


@pytest.mark.parametrize("cli", ["vtl", "ebm"])
def test_help_imports_no_heavy_module(cli: str) -> None:
    assert heavy_in(loaded_modules(cli, "--help"), HEAVY) == []


def test_listings_import_no_tape_crypto_or_compression_code(tmp_path: Path) -> None:
    root = str(tmp_path / "lib")
    vtl = str(Path(sys.executable).with_name("vtl"))
    for args in (["init", "--drives", "1", "--slots", "2"], ["cartridge", "create", "A00001L8"]):
        subprocess.run([vtl, "--root", root, *args], capture_output=True, timeout=60, check=True)
    for listing in (["cartridge", "list"], ["status"], ["pool", "list"], ["events"]):
        assert heavy_in(loaded_modules("vtl", "--root", root, *listing), HEAVY_FOR_LISTS) == []
    for listing in (["list"], ["dataset", "list"], ["schedule", "list"]):
        assert heavy_in(loaded_modules("ebm", "--root", root, *listing), HEAVY_FOR_LISTS) == []
