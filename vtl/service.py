"""Running the library as a systemd service: the unit files we ship and how they get installed.

The units live in ``vtl/systemd/`` (package data, so they are in the wheel and the sdist) as
templates: ``@BINDIR@`` stands for the directory holding the installed ``vtl`` and ``ebm``
(the virtualenv's ``bin/``, found from ``sys.executable``), ``@DOCDIR@`` for where the README
is. Nothing names ``/usr/local/bin``: a unit that points at a program that is not there fails
``systemd-analyze verify``.

Debian-style layout of the service:

- ``/etc/vtl/vtl.env`` (0600, an ``EnvironmentFile``): ``VTL_ROOT``, the CHAP secrets
  (``VTL_CHAP_SECRET``, ``VTL_MUTUAL_CHAP_SECRET``) and extra ``vtl serve`` options
  (``VTL_SERVE_ARGS``); never on a command line, where ``ps`` shows them;
- ``/var/lib/vtl``: the library (``library.toml``, catalog, cartridges), ``StateDirectory``;
- logs: the journal (``vtl serve`` drops its own timestamps when ``$JOURNAL_STREAM`` says
  stderr is the journal, see :mod:`vtl.logs`).

This module renders and writes files; it never runs ``systemctl`` (the admin does, as the
install command prints).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

UNIT_DIR = Path("etc/systemd/system")
ENV_FILE = Path("etc/vtl/vtl.env")
SERVICE_ROOT = "/var/lib/vtl"
UNITS = ("vtl-serve.service", "ebm-scheduler.service", "ebm-scheduler.timer")
_ENV_TEMPLATE = f"""\
# Settings of the vtl-serve and ebm-scheduler services (an EnvironmentFile; keep it 0600).
VTL_ROOT={SERVICE_ROOT}
# CHAP secrets, instead of library.toml or a command line (12 to 255 characters):
#VTL_CHAP_SECRET=
#VTL_MUTUAL_CHAP_SECRET=
# Extra options for `vtl serve`, e.g. --portal 0.0.0.0:3260 --log-level debug
#VTL_SERVE_ARGS=
"""


class ServiceError(Exception):
    """A unit cannot be rendered or installed (one line)."""


@dataclass(frozen=True)
class InstalledFile:
    path: Path
    written: bool  # False: it existed and was kept (the env file is never overwritten)


def default_bindir() -> Path:
    """The directory of the running interpreter: where pip put the ``vtl`` and ``ebm`` scripts."""
    return Path(sys.executable).parent


def default_docdir() -> Path:
    """The README's directory: the wheel's ``share/doc/vtl-ebm``, else the source tree."""
    shared = Path(sys.prefix) / "share" / "doc" / "vtl-ebm"
    if (shared / "README.md").exists():
        return shared
    return Path(__file__).resolve().parents[1]


def _template(name: str) -> str:
    folder = resources.files("vtl") / "systemd"
    for candidate in (f"{name}.in", name):
        item = folder / candidate
        if item.is_file():
            return item.read_text(encoding="utf-8")
    raise ServiceError(f"unknown unit {name!r} (known: {', '.join(UNITS)})")


def render(name: str, bindir: Path | None = None, docdir: Path | None = None) -> str:
    """The unit ``name`` with the real paths filled in."""
    bindir = Path(bindir or default_bindir()).absolute()
    docdir = Path(docdir or default_docdir()).absolute()
    return _template(name).replace("@BINDIR@", str(bindir)).replace("@DOCDIR@", str(docdir))


def check_bindir(bindir: Path) -> None:
    """Refuse a bindir without the programs the units start."""
    for program in ("vtl", "ebm"):
        path = Path(bindir) / program
        if not os.access(path, os.X_OK):
            raise ServiceError(f"{path} is not an executable: give --bindir the directory "
                               "holding the installed vtl and ebm")


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def install(prefix: Path = Path("/"), bindir: Path | None = None) -> list[InstalledFile]:
    """Write the units under ``prefix/etc/systemd/system`` and, if absent, ``prefix/etc/vtl/
    vtl.env`` (0600). An existing env file is kept: it holds the admin's secrets."""
    bindir = Path(bindir or default_bindir()).absolute()
    check_bindir(bindir)
    previous = os.umask(0o022)  # folders made under a packaging prefix: 0755, as /etc's are
    try:
        return _install(Path(prefix), bindir)
    finally:
        os.umask(previous)


def _install(prefix: Path, bindir: Path) -> list[InstalledFile]:
    done = []
    for name in UNITS:
        path = Path(prefix) / UNIT_DIR / name
        _write(path, render(name, bindir), 0o644)
        done.append(InstalledFile(path, True))
    env = Path(prefix) / ENV_FILE
    if env.exists():
        done.append(InstalledFile(env, False))
    else:
        if not env.parent.exists():  # /etc/vtl: secrets inside, as ConfigurationDirectory=
            env.parent.mkdir(parents=True)
            os.chmod(env.parent, 0o700)
        _write(env, _ENV_TEMPLATE, 0o600)
        done.append(InstalledFile(env, True))
    return done
