"""A library is private: its directory 0700 and every file 0600 (or 2750/0640 for a group named
at ``vtl init --group``), whichever command created the file and whatever the caller's umask;
secrets come from files or the environment, and one on the command line draws a warning."""

from __future__ import annotations

import grp
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(cli: str, root: Path, *args: str, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(BIN / cli), "--root", str(root), *args], capture_output=True,
                       text=True, timeout=120, env={**os.environ, **(env or {})},
                       preexec_fn=lambda: os.umask(0o022))  # a typical, permissive caller
    if check:
        assert r.returncode == 0, (args, r.stderr)
    return r


def build_library(root: Path, tmp_path: Path, *init_args: str) -> None:
    """What creates files: init, cartridges, an EBM backup (index and MAM sidecars), a backup
    copy of the catalog."""
    run("vtl", root, "init", "--drives", "1", "--slots", "4", *init_args)
    run("vtl", root, "cartridge", "create", "A00001L8-A00002L8", "--capacity", "16MiB")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("secret data")
    run("ebm", root, "pool", "create", "p")
    run("ebm", root, "pool", "add", "p", "A00001L8")
    run("ebm", root, "backup", "ds", "--source", str(src), "--pool", "p")
    run("vtl", root, "catalog", "backup")


def modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode) | (root.stat().st_mode & stat.S_ISGID)}
    for p in root.rglob("*"):
        st = p.lstat()
        out[str(p.relative_to(root))] = stat.S_IMODE(st.st_mode)
    return out


def test_private_library(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    build_library(root, tmp_path)
    found = modes(root)
    names = set(found)
    assert {"library.toml", "catalog.sqlite", "cartridges/A00001L8.vtape"} <= names, names
    assert len([n for n in names if n.startswith("cartridges/A00001L8.")]) > 1  # sidecars too
    assert any("catalog" in n and n != "catalog.sqlite" for n in names), names  # its copy
    wrong = {n: oct(m) for n, m in found.items()
             if m != (0o700 if (root / n).is_dir() else 0o600)}
    assert wrong == {}


def _other_group() -> grp.struct_group:
    mine = os.getgroups() if os.geteuid() else [g.gr_gid for g in grp.getgrall()]
    candidates = [g for g in grp.getgrall() if g.gr_gid in mine and g.gr_gid != os.getegid()]
    if not candidates:
        pytest.skip("no second group to share the library with")
    return candidates[0]


def test_library_shared_with_a_group(tmp_path: Path) -> None:
    group = _other_group()
    root = tmp_path / "lib"
    build_library(root, tmp_path, "--group", group.gr_name)
    found = modes(root)
    wrong = {n: oct(m) for n, m in found.items()
             if m != ((0o2750 if n == "." else 0o750) if (root / n).is_dir() else 0o640)
             and not (n != "." and (root / n).is_dir() and m == 0o2750)}
    assert wrong == {}
    groups = {p.stat().st_gid for p in [root, *root.rglob("*")]}
    assert groups == {group.gr_gid}


def test_a_library_from_before_gets_private_files_from_now_on(tmp_path: Path) -> None:
    """A library created before this (a 0755 directory, not made for a group) is not taken
    for a shared one: what is created in it now is private."""
    root = tmp_path / "lib"
    run("vtl", root, "init", "--drives", "1", "--slots", "2")
    os.chmod(root, 0o755)
    run("vtl", root, "cartridge", "create", "A00001L8", "--capacity", "16MiB")
    assert stat.S_IMODE((root / "cartridges" / "A00001L8.vtape").stat().st_mode) == 0o600


def test_init_refuses_an_unknown_group(tmp_path: Path) -> None:
    r = run("vtl", tmp_path / "lib", "init", "--group", "no-such-group-xyz", check=False)
    assert r.returncode == 2 and r.stderr == "error: unknown group 'no-such-group-xyz'\n"
    assert not (tmp_path / "lib").exists()


# ---- secrets ---------------------------------------------------------------------------------
SECRET = "chap-secret-0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_banner(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """Start ``vtl serve``, read its banner up to "ready", stop it: (banner, stderr)."""
    cmd = [str(BIN / "vtl"), "--root", str(root), "serve", "--portal",
           f"127.0.0.1:{free_port()}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (line := proc.stdout.readline()):
        lines.append(line)
        if line.strip() == "ready":
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    return "".join(lines), err


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("secrets") / "lib"
    run("vtl", root, "init", "--drives", "1", "--slots", "2")
    return root


def test_chap_secret_from_a_file_or_the_environment_is_quiet(lib: Path, tmp_path: Path) -> None:
    secret_file = tmp_path / "chap"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)  # one others may read gets a warning
    banner, err = serve_banner(lib, "--chap-user", "u", "--chap-secret-file", str(secret_file))
    assert "auth: CHAP" in banner and "warning" not in err, err
    banner, err = serve_banner(lib, "--chap-user", "u", env={"VTL_CHAP_SECRET": SECRET})
    assert "auth: CHAP" in banner and "warning" not in err, err


def test_chap_secret_on_the_command_line_warns(lib: Path) -> None:
    r = run("vtl", lib, "serve", "--chap-user", "u", "--chap-secret", SECRET, "--portal", "bad:x",
            check=False)
    lines = r.stderr.splitlines()
    assert lines[0].startswith("warning: --chap-secret on the command line is visible")
    assert "--chap-secret-file or $VTL_CHAP_SECRET" in lines[0]
    assert lines[1:] == ["error: invalid portal 'bad:x' (expected HOST:PORT or [IPV6]:PORT)"]


def test_bad_secret_sources_are_refused(lib: Path, tmp_path: Path) -> None:
    r = run("vtl", lib, "serve", "--chap-user", "u", "--chap-secret-file", str(tmp_path / "no"),
            check=False)
    assert r.returncode == 2 and r.stderr.startswith("error: cannot read chap secret file")
    (tmp_path / "f").write_text(SECRET)
    r = run("vtl", lib, "serve", "--chap-secret", SECRET, "--chap-secret-file",
            str(tmp_path / "f"), check=False)
    assert r.returncode == 2 and "not both" in r.stderr


def test_ebm_passphrase_from_the_environment(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    run("vtl", root, "init", "--drives", "1", "--slots", "2")
    run("vtl", root, "cartridge", "create", "A00001L8", "--capacity", "16MiB")
    run("ebm", root, "pool", "create", "p")
    run("ebm", root, "pool", "add", "p", "A00001L8")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("hello")
    env = {"EBM_PASSPHRASE": "correct horse battery"}
    run("ebm", root, "backup", "ds", "--source", str(src), "--pool", "p", "--encrypt", env=env)
    r = run("ebm", root, "restore", "ds", "--to", str(tmp_path / "r"), check=False)
    assert r.returncode != 0 and "encrypted" in r.stderr  # no key, no restore
    run("ebm", root, "restore", "ds", "--to", str(tmp_path / "r"), env=env)
    assert (tmp_path / "r" / "f.txt").read_text() == "hello"


def test_in_process_callers_keep_their_umask(tmp_path: Path) -> None:
    """The CLIs set a private umask while they run, and give the caller's back."""
    from typer.testing import CliRunner

    from vtl.cli.main import app

    before = os.umask(0o022)
    try:
        r = CliRunner().invoke(app, ["--root", str(tmp_path / "lib"), "init", "--slots", "2"])
        assert r.exit_code == 0, r.output
        assert stat.S_IMODE((tmp_path / "lib" / "library.toml").stat().st_mode) == 0o600
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)
