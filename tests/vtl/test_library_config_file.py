"""A damaged ``library.toml`` is refused with one line naming the file and the problem (exit 1:
the library is damaged, not the command line), never accepted with another layout and never a
traceback or ``internal error``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from vtl.cli.main import app
from vtl.config import ConfigFileError, LibraryConfig

runner = CliRunner()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    r = runner.invoke(app, ["--root", str(root), "init", "--drives", "2", "--slots", "8"])
    assert r.exit_code == 0, r.output
    return root


@pytest.mark.parametrize("content, problem", [
    (b"", "is empty"),
    (b"# nothing but a comment\n\n", "is empty"),
    (b'name = "caf\xe9"\n', "not UTF-8 text (byte 0xe9 at offset 11)"),
    (b"drives = [\n", "not valid TOML"),
    (b"drives = 4\nslots = 8\nmailslots = 1\ndrives = 5\n", "not valid TOML"),
    (b'drives = "four"\nslots = 8\nmailslots = 1\n', "drives must be an integer"),
    (b"drives = 4\nslots = 8\nmailslots = 1\niscsi = 3\n", "must be tables"),
    (b"drives = 4\nslots = 8\nmailslots = 1\n[iscsi]\nportal = 3260\n", "must be a string"),
    (b'name = "x"\n', "drives, slots, mailslots missing"),
])
def test_damaged_library_toml_is_one_line_exit_1(root: Path, content: bytes, problem: str
                                                 ) -> None:
    path = root / "library.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigFileError, match=str(path)):
        LibraryConfig.load(root)
    for args in (["status"], ["cartridge", "list"], ["config"]):
        r = runner.invoke(app, ["--root", str(root), *args])
        assert r.exit_code == 1, (args, r.output)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"error: {path}"), r.stderr
        assert problem in r.stderr, r.stderr
        assert "internal error" not in r.stderr and r.stdout == ""


def test_a_complete_library_toml_still_loads(root: Path) -> None:
    cfg = LibraryConfig.load(root)
    assert (cfg.drives, cfg.slots) == (2, 8)
    r = runner.invoke(app, ["--root", str(root), "config"])
    assert r.exit_code == 0 and "drives = 2" in r.stdout
