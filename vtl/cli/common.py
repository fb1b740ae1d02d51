"""What every ``vtl`` command shares: the global settings, output (rich or JSON), parsers.

Errors: a command raises; the root command (:class:`vtl.cli.group.OneLineErrorsGroup`, shared
with ``ebm``) turns any exception into exactly one ``error: ...`` line on stderr and the exit
code of :mod:`vtl.cli.errors`' policy (2 refused, 1 failed), never a traceback. Sizes and times
are formatted by :mod:`vtl.cli.formatting`, shared with ``ebm`` too.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vtl.cli.errors import CliError
from vtl.config import default_root

try:  # recent typer vendors its own click
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - older typer runs on the click package
    from click import get_current_context

if TYPE_CHECKING:
    from rich.console import Console

@dataclass
class Settings:
    root: Path
    json: bool = False


def settings() -> Settings:
    ctx = get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    if isinstance(obj, Settings):
        return obj
    return Settings(default_root())


def console() -> Console:
    from rich.console import Console  # only when a command prints a table: start-up stays fast

    # Not a terminal (pipes, tests): wide enough that tables do not wrap into mush.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def say(message: str, data: dict[str, Any] | None = None) -> None:
    """Report a finished action: one line for people, ``{"ok": true, ...}`` for scripts."""
    if settings().json:
        emit_json({"ok": True, "message": message, **(data or {})})
    else:
        sys.stdout.write(message + "\n")


@contextmanager
def open_library(*, readonly: bool = False) -> Iterator[Any]:
    """The library at ``--root``; ``readonly`` for commands that only look (the catalog is
    opened ``mode=ro``: never created, migrated or written)."""
    from vtl.library import Library

    lib = Library.open(settings().root, readonly=readonly)
    try:
        yield lib
    finally:
        lib.close()


def notify_server(root: Path) -> str:
    """SIGHUP the running ``vtl serve`` of the library, if any, so it re-reads what the
    command changed (ACLs, injected faults); a sentence for the user."""
    import os
    import signal

    from vtl.serve_status import server_pid

    pid = server_pid(root)
    if pid is None:
        return "takes effect when vtl serve starts"
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as e:
        return f"could not signal vtl serve (pid {pid}): {e.strerror}; restart it"
    return f"applied to the running vtl serve (pid {pid})"


# ---- parsers ------------------------------------------------------------------------------
def drive_index(lib: Any, spec: str) -> int:
    """A drive's 0-based index from ``0``, ``drive:0`` or its element address; one-line
    errors for anything else."""
    from vtl.library import ElementType

    spec = spec.strip()
    if spec.isdigit() and int(spec) < lib.config.drive_base:  # a drive number, not an address
        if int(spec) >= len(lib.drives):
            raise CliError(f"no drive {spec} (drives are 0..{len(lib.drives) - 1})")
        return int(spec)
    address = lib.resolve(spec)
    element = lib.element(address)
    if element.type != ElementType.DATA_TRANSFER:
        raise CliError(f"{spec!r} is not a drive")
    return element.index


MAX_RANGE = 10000


def expand_range(spec: str) -> list[str]:
    """``A00001L8`` -> [it]; ``A00001L8-A00020L8`` -> the 20 labels (same prefix, suffix).
    Labels are read by :mod:`vtl.barcode` (BadBarcode, with the reason, for a bad range)."""
    spec = spec.strip().upper()
    if "-" not in spec:
        return [spec]
    from vtl.barcode import barcode_range

    first, _, last = spec.partition("-")
    labels = barcode_range(first, last)
    if len(labels) > MAX_RANGE:
        raise CliError(f"barcode range {spec!r} is larger than {MAX_RANGE}")
    return labels


def generate_labels(prefix: str, count: int, suffix: str, existing: set[str],
                    start: int | None = None) -> list[str]:
    """``count`` new labels ``<prefix><number><suffix>`` after the highest existing one."""
    prefix = prefix.upper()
    if not re.fullmatch(r"[A-Z0-9]{1,5}", prefix):
        raise CliError(f"bad prefix {prefix!r} (1-5 letters/digits)")
    if not 1 <= count <= MAX_RANGE:
        raise CliError(f"--count must be from 1 to {MAX_RANGE}")
    width = 6 - len(prefix)
    if start is None:
        numbers = [
            int(bc[len(prefix):6]) for bc in existing
            if bc.startswith(prefix) and bc[len(prefix):6].isdigit() and bc[6:] == suffix
        ]
        start = max(numbers, default=0) + 1
    if start < 0 or start + count - 1 >= 10**width:
        raise CliError(f"not enough {width}-digit numbers left after prefix {prefix!r}")
    return [f"{prefix}{n:0{width}d}{suffix}" for n in range(start, start + count)]
