"""Shell completion for ``vtl`` and ``ebm``: the script each prints, and the completions the
shell gets back when it calls the program with ``_VTL_COMPLETE``/``_EBM_COMPLETE`` set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(program: str, *args: str, env: dict[str, str] | None = None):
    return subprocess.run([str(BIN / program), *args], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("program", ["vtl", "ebm"])
def test_completion_script(program: str):
    r = run(program, "completion", "bash")
    assert r.returncode == 0
    assert f"_{program.upper()}_COMPLETE=complete_bash" in r.stdout
    assert f"complete -o default -F _{program}_completion {program}" in r.stdout
    assert run(program, "completion", "zsh").returncode == 0
    r = run(program, "completion", "tcsh")
    assert r.returncode == 2 and r.stderr.startswith("error: unknown shell")


@pytest.mark.parametrize("program, words, expected", [
    ("vtl", "vtl car", {"cartridge"}),
    ("vtl", "vtl cartridge cr", {"create"}),
    ("vtl", "vtl target acl ", {"list", "add", "remove"}),
    ("ebm", "ebm sch", {"schedule", "scheduler"}),
])
def test_bash_completions(program: str, words: str, expected: set[str]):
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    r = run(program, env={"COMP_WORDS": words, "COMP_CWORD": str(cword),
                          f"_{program.upper()}_COMPLETE": "complete_bash"})
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == expected
