"""Both CLIs start fast: ``--help`` imports none of the heavy modules (crypto, compression,
construct, rich tables, translators, sqlite-utils, the library or the iSCSI target), and runs
in well under a second even on a busy CI machine (the goal is 0.3 s); a listing (``vtl
cartridge list``, ``ebm list``) loads the library and rich, but no tape, crypto or
compression code."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

HEAVY = ("cryptography", "zstandard", "construct", "rich.table", "rich.progress", "translators",
         "sqlite_utils", "vtl.library", "vtl.iscsi", "tape_formats.cartridge", "ebm.manager")
# What a listing needs neither: it reads the catalog and prints a table.
HEAVY_FOR_LISTS = ("cryptography", "zstandard", "construct", "crc32c", "rich.progress",
                   "translators", "sqlite_utils", "vtl.iscsi", "tape_formats.cartridge")
BOUND_S = 1.0  # generous: CI machines are shared and noisy

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
    assert heavy_in(loaded_modules("vtl", "--root", root, "cartridge", "list"),
                    HEAVY_FOR_LISTS) == []
    assert heavy_in(loaded_modules("ebm", "--root", root, "list"), HEAVY_FOR_LISTS) == []


@pytest.mark.parametrize("cli", ["vtl", "ebm"])
def test_help_is_fast(cli: str) -> None:
    exe = str(Path(sys.executable).with_name(cli))
    best = min(_wall(exe, "--help") for _ in range(3))
    assert best < BOUND_S, f"{cli} --help took {best:.2f} s"


def _wall(*argv: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, capture_output=True, timeout=60, check=True)
    return time.perf_counter() - t0
