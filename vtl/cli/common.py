"""What every ``vtl`` command shares: settings, output (rich or JSON), errors, parsers.

Errors: a command raises; :class:`VtlGroup` (the root command's class) turns any exception
into exactly one ``error: ...`` line on stderr and an exit code - 2 for bad input (library,
config and usage errors), 1 for everything else - never a traceback. This is done in the
group's ``main`` rather than in ``Typer.__call__`` so it also holds under typer's CliRunner.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer import Abort

try:  # recent typer vendors its own click: its exceptions and contexts are those
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - older typer runs on the click package
    from click import ClickException, UsageError, get_current_context
    from click.exceptions import NoArgsIsHelpError
from rich.console import Console
from typer.core import TyperGroup

from vtl.config import ConfigError

DEFAULT_ROOT = "./vtl-library"
EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


class CliError(Exception):
    """Bad command-line input detected by the CLI itself (exit 2)."""


@dataclass
class Settings:
    root: Path
    json: bool = False


def settings() -> Settings:
    ctx = get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    if isinstance(obj, Settings):
        return obj
    return Settings(Path(os.environ.get("VTL_ROOT") or DEFAULT_ROOT))


def console() -> Console:
    # Not a terminal (pipes, tests): wide enough that tables do not wrap into mush.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def err_console() -> Console:
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
def open_library() -> Iterator[Any]:
    from vtl.library import Library

    lib = Library.open(settings().root)
    try:
        yield lib
    finally:
        lib.close()


# ---- parsers ------------------------------------------------------------------------------
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``64MiB``, ``64M`` (binary), ``64MB`` (decimal), ``1048576`` -> bytes."""
    m = _SIZE_RE.match(text)
    if not m:
        raise CliError(f"bad size {text!r} (e.g. 64MiB, 1GiB, 500MB, 1048576)")
    number, unit, tail = float(m.group(1)), m.group(2).upper(), m.group(3).lower()
    if not unit and tail:
        raise CliError(f"bad size {text!r} (e.g. 64MiB, 1GiB, 500MB, 1048576)")
    power = " KMGT".index(unit) if unit else 0
    base = 1000 if tail == "b" else 1024
    value = int(number * base**power)
    if value <= 0:
        raise CliError(f"size must be positive, not {text!r}")
    return value


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


_LABEL_RE = re.compile(r"^([A-Z0-9]*?)(\d+)(L[0-9A-Z])$")
MAX_RANGE = 10000


def expand_range(spec: str) -> list[str]:
    """``A00001L8`` -> [it]; ``A00001L8-A00020L8`` -> the 20 labels (same prefix, suffix)."""
    spec = spec.strip().upper()
    if "-" not in spec:
        return [spec]
    first, _, last = spec.partition("-")
    a, b = _LABEL_RE.match(first), _LABEL_RE.match(last)
    if len(first) != 8 or len(last) != 8 or not a or not b:
        raise CliError(f"bad barcode range {spec!r} (e.g. A00001L8-A00020L8)")
    if a.group(1) != b.group(1) or a.group(3) != b.group(3) or len(a.group(2)) != len(b.group(2)):
        raise CliError(f"bad barcode range {spec!r}: both ends need the same prefix and suffix")
    lo, hi = int(a.group(2)), int(b.group(2))
    if lo > hi:
        raise CliError(f"bad barcode range {spec!r}: the first label is after the last")
    if hi - lo + 1 > MAX_RANGE:
        raise CliError(f"barcode range {spec!r} is larger than {MAX_RANGE}")
    width = len(a.group(2))
    return [f"{a.group(1)}{n:0{width}d}{a.group(3)}" for n in range(lo, hi + 1)]


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


# ---- error handling -----------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def _hoist_globals(args: list[str]) -> list[str]:
    """Accept ``--json`` and ``--root DIR`` anywhere (``vtl cartridge list --json``) by
    moving them to the front, where the root command parses them."""
    if "--" in args:
        head, rest = args[: args.index("--")], args[args.index("--"):]
    else:
        head, rest = args, []
    front: list[str] = []
    kept: list[str] = []
    i = 0
    while i < len(head):
        arg = head[i]
        if arg == "--json" or arg.startswith("--root="):
            front.append(arg)
        elif arg == "--root" and i + 1 < len(head):
            front += [arg, head[i + 1]]
            i += 1
        else:
            kept.append(arg)
        i += 1
    return front + kept + rest


def exit_code_for(exc: BaseException) -> int:
    from tape_formats.cartridge import CartridgeError
    from vtl.library import LibraryError

    if isinstance(exc, LibraryError | ConfigError | CliError | UsageError):
        return EXIT_BAD_INPUT
    if isinstance(exc, CartridgeError):
        return EXIT_FAILURE
    return EXIT_FAILURE


def error_message(exc: BaseException) -> str:
    from tape_formats.cartridge import CartridgeError
    from vtl.library import LibraryError

    if isinstance(exc, UsageError):
        msg = exc.format_message()
        if exc.ctx is not None:
            msg += f" (see '{exc.ctx.command_path} --help')"
        return msg
    if isinstance(exc, ClickException):
        return exc.format_message()
    if isinstance(exc, LibraryError | ConfigError | CliError | CartridgeError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{':' if where else ''}{where}"
    return f"internal error: {type(exc).__name__}: {exc}"


def fail(exc: BaseException) -> None:
    sys.stderr.write(f"error: {_one_line(error_message(exc))}\n")
    sys.stderr.flush()
    sys.exit(exit_code_for(exc))


class VtlGroup(TyperGroup):
    """The root command: one-line errors, exit codes, ``--json`` anywhere."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        args = _hoist_globals(list(sys.argv[1:] if args is None else args))
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name or "vtl",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except NoArgsIsHelpError as e:
            sys.stdout.write((e.ctx.get_help() if e.ctx else str(e)) + "\n")
            sys.exit(0)
        except Abort:
            sys.stderr.write("error: aborted\n")
            sys.exit(EXIT_FAILURE)
        except SystemExit:
            raise
        except KeyboardInterrupt:
            sys.stderr.write("error: interrupted\n")
            sys.exit(130)
        except BaseException as e:  # noqa: BLE001 - the last line of defence: no tracebacks
            fail(e)
        sys.exit(rv if isinstance(rv, int) else 0)
