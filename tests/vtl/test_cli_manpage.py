"""``vtl manpage`` and ``ebm manpage``: roff pages generated from the commands, which man(1)
renders, naming every command and option as ``--help`` does."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("program, command, option", [
    ("vtl", "vtl target acl add", "--chap-secret-file FILE"),
    ("ebm", "ebm backup", "--exclude GLOB"),
])
def test_manpage(program: str, command: str, option: str, tmp_path: Path):
    r = subprocess.run([str(BIN / program), "manpage"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    page = r.stdout
    assert page.startswith(f".TH {program.upper()} 1 ")
    assert f"\\fB{command}\\fR" in page and option in page
    assert "<str>" not in page and "<path>" not in page
    assert ".SH EXIT STATUS" in page
    if shutil.which("man") is None:
        return
    (tmp_path / f"{program}.1").write_text(page)
    shown = subprocess.run(["man", "-l", str(tmp_path / f"{program}.1")], capture_output=True,
                           text=True, timeout=30, env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin"})
    assert shown.returncode == 0 and command in shown.stdout, shown.stderr
