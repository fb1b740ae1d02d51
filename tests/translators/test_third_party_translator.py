"""Extensibility shown: the example translator package (examples/translator-example), pip
installed into a throwaway venv layered over the project's, is found through its entry point
and used by the real `ebm` CLI for baseline, incremental, restore and consolidation; the
project's own environment, where it is not installed, does not know it."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from ebm_helpers import REPO, barcodes, make_library, run_cli

EXAMPLE = REPO / "examples" / "translator-example"


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory) -> Path:
    """A venv that sees the project's packages (a .pth runs site.addsitedir on them) and has
    the example package pip-installed (editable) on top."""
    venv = tmp_path_factory.mktemp("plugin") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    project = sysconfig.get_paths()["purelib"]
    Path(purelib, "ebm-project.pth").write_text(f"import site; site.addsitedir({project!r})\n")
    # No build isolation: setuptools and wheel come from the test extras, so the install
    # needs no network and no fresh build environment per run.
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                        "--no-build-isolation", "--no-deps", "-e", str(EXAMPLE)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.fail(f"pip install of the example translator failed: {r.stderr[-2000:]}")
    return py


def ebm_in(py: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), "-m", "ebm", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=300, cwd=str(REPO))


def test_example_translator_backs_up_and_restores_through_the_ebm(plugin_python, tmp_path):
    root = tmp_path / "lib"
    make_library(root, barcodes(1)).close()
    src = tmp_path / "settings.json"
    doc = {"colour": "blue", "limits": {"cpu": 2, "mem": "1G"}, "a/b": [1, 2, 3]}
    src.write_text(json.dumps(doc))

    r = run_cli(root, "backup", "kv", "--translator", "kvjson", "--source", str(src),
                "--pool", "pool")
    assert r.returncode != 0 and "translator 'kvjson' is not available" in r.stderr, r.stderr

    r = ebm_in(plugin_python, root, "backup", "kv", "--translator", "kvjson", "--source",
               str(src), "--pool", "pool")
    assert r.returncode == 0 and "(full) of kv: 3 entries" in r.stdout, r.stderr
    doc["colour"] = "green"
    del doc["limits"]
    doc["new"] = None
    src.write_text(json.dumps(doc))
    r = ebm_in(plugin_python, root, "backup", "kv")
    assert r.returncode == 0 and "(incr) of kv: 3 entries" in r.stdout, r.stdout + r.stderr

    r = ebm_in(plugin_python, root, "restore", "kv", "--to", str(tmp_path / "r"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r" / "settings.json").read_text()) == doc
    r = ebm_in(plugin_python, root, "consolidate", "kv")
    assert r.returncode == 0 and "consolidated from 2 backups" in r.stdout, r.stderr
    r = ebm_in(plugin_python, root, "restore", "kv", "--to", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "c" / "settings.json").read_text()) == doc
