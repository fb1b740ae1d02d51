"""A real, throwaway PostgreSQL cluster for the tests and the bench (never a mock).

``initdb`` (once per process, then copied) + ``pg_ctl`` from Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``) in
a fresh directory (under /dev/shm when there is one, else /tmp), listening on a free port of 127.0.0.1 and on a unix socket in
that directory. initdb refuses to run as root, so under root the server runs as the
``postgres`` user that the Debian package creates (else ``nobody``) and the directory is
chowned to it; as any other user it runs as that user. ``stop()`` (or leaving the ``with``
block) stops the server with ``-m immediate`` and removes the directory, even after a failure.

Test clusters use 1 MiB WAL segments (``initdb --wal-segsize=1``) so that switching and
archiving segments stays quick (the bench passes ``segment_mb=16``, the default), and ``fsync=off`` (a test server is thrown away anyway).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import site
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

PASSWORD = "ebm-test-secret"


def pg_bindir() -> Path | None:
    """The newest installed server's bin directory, or None when PostgreSQL is missing."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def scratch_dir() -> str | None:
    """Where clusters live: /dev/shm when there is one (a tmpfs: a busy disk shared with other
    jobs makes initdb, copies and checkpoints take seconds there), else the default temp dir."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> str | None:
    """Whom the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists")


_TEMPLATES: dict[int, Path] = {}


def _template(cluster: PgCluster) -> Path:
    """An initdb'd data directory per segment size, made once per process and copied for
    each cluster: initdb costs seconds, a copy a fraction of one (the clusters then share a
    system identifier, which nothing here relies on being unique)."""
    found = _TEMPLATES.get(cluster.segment_mb)
    if found is not None:
        return found
    base = Path(tempfile.mkdtemp(prefix="ebm-pg-template-", dir=scratch_dir()))
    atexit.register(shutil.rmtree, base, True)
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    cluster.own(base)
    data = base / "data"
    cluster.as_server([str(cluster.bin / "initdb"), "-D", str(data), "-U", "postgres",
                       f"--wal-segsize={cluster.segment_mb}", "--auth-local=trust",
                       "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-N", "-E", "UTF8",
                       "--locale=C"])
    _TEMPLATES[cluster.segment_mb] = data
    return data


class PgCluster:
    """One cluster: ``start()``, ``sql()``, ``conninfo``, ``stop()``."""

    def __init__(self, *, archive: bool = True, settings: dict[str, str] | None = None,
                 base: Path | None = None, segment_mb: int = 1) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries are not installed")
        self.bin = bindir
        self.user = _server_user()
        self.dir = Path(tempfile.mkdtemp(prefix="ebm-pg-", dir=base or scratch_dir()))
        self.data = self.dir / "data"
        self.spool = self.dir / "wal-spool"
        self.port = free_port()
        self.segment_mb = segment_mb
        self.settings = {"archive_mode": "on" if archive else "off", "fsync": "off",
                         "listen_addresses": "'127.0.0.1'", "port": str(self.port),
                         "unix_socket_directories": f"'{self.dir}'", "max_wal_senders": "4",
                         "wal_level": "replica", "shared_buffers": "32MB",
                         "full_page_writes": "on", **(settings or {})}
        self.running = False

    # -- running things as the server's user ------------------------------------------------
    def as_server(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)

    def own(self, path: Path) -> None:
        """Give ``path`` (and what is under it) to the server's user."""
        if self.user is not None:
            subprocess.run(["chown", "-R", f"{self.user}:", str(path)], check=True)

    # -- life cycle --------------------------------------------------------------------------
    def init(self) -> PgCluster:
        self.spool.mkdir()
        self.own(self.dir)
        template = _template(self)
        subprocess.run(["cp", "-a", str(template), str(self.data)], check=True)  # owner kept
        with open(self.data / "postgresql.conf", "a") as f:
            for k, v in self.settings.items():
                f.write(f"{k} = {v}\n")
        return self

    def start(self, data: Path | None = None, port: int | None = None) -> None:
        data = data or self.data
        opts = "" if port is None else f"-c port={port}"
        log = self.dir / f"{data.name}.log"
        try:
            self.as_server([str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                            "-t", "60", "-o", opts, "start"])
        except subprocess.CalledProcessError as exc:
            tail = log.read_text(errors="replace").strip().splitlines()[-8:] if log.exists() else []
            tail += [exc.stdout.strip(), exc.stderr.strip()]
            raise RuntimeError(f"PostgreSQL did not start on {data}:\n" + "\n".join(tail)) from None
        if data == self.data:
            self.running = True

    def stop_server(self, data: Path | None = None) -> None:
        data = data or self.data
        with contextlib.suppress(subprocess.CalledProcessError):
            self.as_server([str(self.bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                            "stop"])
        if data == self.data:
            self.running = False

    def stop(self) -> None:
        for pid_file in self.dir.glob("**/postmaster.pid"):
            self.stop_server(pid_file.parent)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        try:
            self.init().start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fetch_program(self) -> list[str]:
        """How the server's user runs this checkout's restore_command program
        (:func:`ebm.wal_fetch.fetch_program`): the venv's own interpreter, unless that user
        cannot execute it (a venv made from a Python under /root, while the server runs as
        ``postgres``); then the system ``python3`` of the same version with the venv's
        packages on ``PYTHONPATH``."""
        from ebm.wal_fetch import fetch_program

        program = fetch_program()
        if self.user is None or subprocess.run(
                ["runuser", "-u", self.user, "--", sys.executable, "-c", "pass"],
                capture_output=True).returncode == 0:
            return program
        system = shutil.which("python3", path="/usr/bin:/bin")
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        if system is None or subprocess.run(
                [system, "-c", f"import sys; assert sys.version[:{len(version)}] == '{version}'"],
                capture_output=True).returncode != 0:
            raise RuntimeError(f"the server's user {self.user} cannot run {sys.executable} "
                               f"and there is no system python{version}")
        paths = [str(Path(__file__).resolve().parents[2]), *site.getsitepackages()]
        return ["env", "PYTHONPATH=" + ":".join(paths), system, *program[1:]]

    # -- talking to it -----------------------------------------------------------------------
    @property
    def conninfo(self) -> str:
        """The unix-socket connection (trust) that the EBM's source string builds on."""
        return f"host={self.dir} port={self.port} user=postgres dbname=postgres"

    def source(self, **ebm_keys: str) -> str:
        """An EBM source string: the conninfo plus the EBM's own keys (wal_spool by default)."""
        keys = {"ebm_wal_spool": str(self.spool), **ebm_keys}
        return self.conninfo + "".join(f" {k}={v}" for k, v in keys.items())

    def sql(self, query: str, port: int | None = None) -> str:
        """Run ``query`` through psql (one transaction per statement); unaligned output."""
        out = subprocess.run([str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v",
                              "ON_ERROR_STOP=1", "-h", str(self.dir), "-p",
                              str(port or self.port), "-U", "postgres", "-d", "postgres",
                              "-c", query], check=True, capture_output=True, text=True)
        return out.stdout.strip()
