"""Running as a service: the systemd units ``vtl service install`` writes, the journal's log
format, ``--version``, and the units, docs and LICENSE inside the sdist and the wheel."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from vtl import logs
from vtl.service import UNITS, install, render

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, **kw)


def test_units_point_at_the_installed_programs():
    for name in UNITS:
        text = render(name)
        assert "@BINDIR@" not in text and "@DOCDIR@" not in text
        assert "/usr/local/bin" not in text
    serve = render("vtl-serve.service")
    assert f"ExecStart={BIN}/vtl serve $VTL_SERVE_ARGS" in serve
    assert "EnvironmentFile=-/etc/vtl/vtl.env" in serve and "StateDirectory=vtl" in serve
    assert f"ExecStart={BIN}/ebm scheduler --once" in render("ebm-scheduler.service")


def test_install_writes_units_and_a_private_env_file_it_never_overwrites(tmp_path):
    files = install(tmp_path)
    assert [f.path.name for f in files] == [*UNITS, "vtl.env"]
    env = tmp_path / "etc/vtl/vtl.env"
    assert env.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "etc/vtl").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "etc/systemd/system/vtl-serve.service").stat().st_mode & 0o777 == 0o644
    assert "VTL_ROOT=/var/lib/vtl" in env.read_text()
    env.write_text("VTL_CHAP_SECRET=mine-and-only-mine\n")
    again = install(tmp_path)
    assert again[-1].written is False
    assert env.read_text() == "VTL_CHAP_SECRET=mine-and-only-mine\n"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_installed_units_pass_systemd_analyze_verify(tmp_path):
    r = run(str(BIN / "vtl"), "service", "install", "--prefix", str(tmp_path))
    assert r.returncode == 0, r.stderr
    units = tmp_path / "etc/systemd/system"
    r = run("systemd-analyze", "verify", *(f"./{u}" for u in UNITS), cwd=units)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not executable" not in r.stderr


def test_install_refuses_a_bindir_without_vtl_and_ebm(tmp_path):
    r = run(str(BIN / "vtl"), "service", "install", "--prefix", str(tmp_path / "p"),
            "--bindir", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "--bindir" in r.stderr
    assert not (tmp_path / "p").exists()


def test_service_show_names_an_unknown_unit(tmp_path):
    r = run(str(BIN / "vtl"), "service", "show", "nope.service")
    assert r.returncode == 2 and "unknown unit" in r.stderr


@pytest.mark.parametrize("program", ["vtl", "ebm"])
def test_version(program):
    from vtl.cli.version import package_version

    r = run(str(BIN / program), "--version")
    assert r.returncode == 0
    assert r.stdout == f"{program} {package_version()}\n"
    assert package_version() != "unknown"


def _log_through(tmp_path: Path, journal_stream: str | None) -> str:
    """Log one warning with stderr redirected to a file, $JOURNAL_STREAM as given."""
    code = (
        "import logging, os, sys\n"
        "from vtl import logs\n"
        "st = os.fstat(2)\n"
        "if os.environ.get('JOURNAL_STREAM') == 'match':\n"
        "    os.environ['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'\n"
        "logs.configure(logging.INFO)\n"
        "logging.getLogger('vtl.serve').warning('drive 0 lost its cartridge')\n"
    )
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)
    if journal_stream:
        env["JOURNAL_STREAM"] = journal_stream
    err = tmp_path / "stderr"
    with open(err, "w") as f:
        subprocess.run([sys.executable, "-c", code], stderr=f, env=env, check=True, timeout=30)
    return err.read_text()


def test_journal_lines_have_a_priority_and_no_timestamp(tmp_path):
    assert _log_through(tmp_path, "match") == "<4>vtl.serve: drive 0 lost its cartridge\n"


def test_terminal_lines_keep_their_timestamp(tmp_path):
    line = _log_through(tmp_path, None)
    assert line.endswith(" WARNING vtl.serve: drive 0 lost its cartridge\n")
    assert line[:4].isdigit()  # 2026-...
    # A JOURNAL_STREAM inherited from elsewhere (not our stderr) does not count.
    assert not _log_through(tmp_path, "1:2").startswith("<")


def test_journal_formatter_keeps_a_traceback_on_one_line():
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("vtl", logging.ERROR, __file__, 1, "failed", None,
                                   sys.exc_info())
    line = logs.JournalFormatter().format(record)
    assert line.startswith("<3>vtl: failed Traceback") and "\n" not in line


def test_sdist_and_wheel_carry_units_docs_and_license(tmp_path):
    """As a release is built: the sdist, then the wheel from it (python -m build)."""
    r = run(sys.executable, "-m", "build", "-q", "--outdir", str(tmp_path), str(REPO))
    if r.returncode != 0 and "Could not find a version" in r.stdout + r.stderr:
        pytest.skip("no package index for the build backend")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (sdist,) = tmp_path.glob("*.tar.gz")
    (wheel,) = tmp_path.glob("*.whl")
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    with zipfile.ZipFile(wheel) as whl:
        in_wheel = set(whl.namelist())
    for unit in ("vtl-serve.service.in", "ebm-scheduler.service.in", "ebm-scheduler.timer"):
        assert f"vtl/systemd/{unit}" in in_sdist and f"vtl/systemd/{unit}" in in_wheel
    assert {"LICENSE", "README.md", "docs/cartridge-format.md"} <= in_sdist
    doc = next(n for n in in_wheel if n.endswith(".data/data/share/doc/vtl-ebm/README.md"))
    doc = doc.rsplit("/", 1)[0]
    assert {f"{doc}/README.md", f"{doc}/LICENSE", f"{doc}/ebm/README.md",
            f"{doc}/writing-a-translator.md"} <= in_wheel
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in in_wheel)
