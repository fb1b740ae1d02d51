"""Secrets given to a CLI: from a file or the environment, and a warning for the command line.

Every local user can read every process's command line (``ps``, ``/proc/PID/cmdline``), so a
secret passed as an argument is public on the machine. It is still accepted (scripts rely on
it) but each use warns on stderr; the file (first line) and the environment variable are the
quiet ways (a file others may read gets a warning: keep it 0600). One source at a time: an
argument and a file together are refused.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from vtl.cli.errors import CliError


def read_secret_file(path: Path, what: str) -> str:
    """The first line of ``path`` (trailing newline dropped); CliError if unusable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise CliError(f"cannot read {what} file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise CliError(f"{what} file {path} is not UTF-8 text") from None
    secret = text.split("\n", 1)[0].rstrip("\r")
    if not secret:
        raise CliError(f"{what} file {path} is empty")
    warn_if_others_read(Path(path), what)
    return secret


def warn_if_others_read(path: Path, what: str) -> None:
    """A secret file others may read is no secret: say so (0600 is the mode to keep it at)."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        sys.stderr.write(f"warning: {what} file {path} is readable by others (mode "
                         f"{mode:04o}); chmod 600 it\n")


def warn_visible(flag: str, alternatives: str) -> None:
    sys.stderr.write(
        f"warning: {flag} on the command line is visible to every local user (ps); "
        f"use {alternatives} instead\n"
    )


def secret_option(flag: str, value: str | None, file: Path | None, env: str) -> str | None:
    """The secret for option ``flag``: from ``--flag VALUE`` (with a warning), ``--flag-file
    FILE`` or ``$env``, in that order; None when none is given."""
    if value is not None and file is not None:
        raise CliError(f"give {flag} or {flag}-file, not both")
    if value is not None:
        warn_visible(flag, f"{flag}-file or ${env}")
        return value
    if file is not None:
        return read_secret_file(file, flag.lstrip("-").replace("-", " "))
    return os.environ.get(env) or None
