"""Secrets given to a CLI: from a file or the environment, and a warning for the command line.

Every local user can read every process's command line (``ps``, ``/proc/PID/cmdline``), so a
secret passed as an argument is public on the machine. It is still accepted (scripts rely on
it) but each use warns on stderr; the file (first line) and the environment variable are the
quiet ways. One source at a time: an argument and a file together are refused.
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
    return secret


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
