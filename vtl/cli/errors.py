"""One error type and one exit-code policy for both command lines, ``vtl`` and ``ebm``.

The policy, as both ``--help`` epilogs and the README state it:

- exit 0: done;
- exit 2 (:data:`EXIT_USAGE`): the request was refused and nothing changed: bad arguments or
  options, a bad barcode, an unknown name (cartridge, element, pool, dataset, backup), a
  command the library's current state does not allow (a full slot, a WORM cartridge, a drive
  in use), or a ``--root`` that holds no library. Fix the command line and run it again;
- exit 1 (:data:`EXIT_FAILED`): the operation was valid but failed: an I/O error, a damaged
  cartridge, catalog or ``library.toml``, a wrong passphrase, a failed verification, a
  translator that failed, or any unexpected error;
- exit 130: interrupted.

Either way the error is exactly one ``error: ...`` line on stderr, never a traceback; with
``--json`` the same error is also one JSON object on stdout (:func:`write_json_error`).

The domain modules keep their own exception classes (``LibraryError``, ``CatalogError`` ...);
:func:`exit_code_for` maps them here, by class name and module, without importing them, so
that a CLI's start-up does not pay for modules an error could only come from once loaded.
This module imports nothing heavy for the same reason.
"""

from __future__ import annotations

import sys

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EPILOG = (
    "Exit status: 0 done; 2 refused, nothing changed (bad arguments, an unknown name or "
    "barcode, a request the library's state does not allow, no library at --root); "
    "1 the operation failed (I/O error, damaged cartridge, catalog or library.toml, wrong "
    "passphrase, failed verification). Errors are one 'error: ...' line on stderr."
)


class CliError(Exception):
    """A one-line error for the user; ``exit_code`` says which kind (default: refused, 2)."""

    exit_code = EXIT_USAGE


class OperationFailed(CliError):
    """A valid request that could not be carried out (exit 1)."""

    exit_code = EXIT_FAILED


# Domain errors that mean "refused, nothing changed", as (module, class name). Subclasses of
# these count too, except the ones in _FAILED below, which are checked first.
_REFUSED = (
    ("vtl.errors", "LibraryError"),
    ("vtl.config", "ConfigError"),
    ("vtl.access", "UnknownGroup"),
    ("vtl.scsi.identities", "UnknownIdentity"),
    ("ebm.controller", "RequestError"),
    ("ebm.catalog", "CatalogError"),
    ("ebm.restore", "UnknownBackup"),
    ("ebm.restore", "TargetRefused"),
)
# Damage and failures, even where they subclass a "refused" class above.
_FAILED = (
    ("vtl.errors", "CartridgeMissing"),
    ("vtl.archive", "ArchiveFailed"),
    ("vtl.errors", "CatalogDamaged"),
    ("vtl.config", "ConfigFileError"),
)


def _classes(names: tuple[tuple[str, str], ...]) -> tuple[type[BaseException], ...]:
    """The classes named, from modules already imported (an error cannot come from others)."""
    found = []
    for module_name, class_name in names:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _is_click_usage(exc: BaseException) -> bool:
    """typer vendors its own click in recent versions; accept both spellings."""
    return any(
        klass.__name__ in ("UsageError", "NoSuchOption", "BadParameter", "MissingParameter",
                           "BadOptionUsage", "BadArgumentUsage", "NoArgsIsHelpError")
        and klass.__module__.endswith("click.exceptions")
        for klass in type(exc).__mro__
    )


def exit_code_for(exc: BaseException) -> int:
    """The one exit-code policy (see the module docstring)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, CliError):
        return exc.exit_code
    if _is_click_usage(exc):
        return EXIT_USAGE
    if isinstance(exc, _classes(_FAILED)):
        return EXIT_FAILED
    if isinstance(exc, _classes(_REFUSED)):
        return EXIT_USAGE
    return EXIT_FAILED


def error_message(exc: BaseException) -> str:
    """What follows ``error: ``: the exception's own words, or its kind when it has none."""
    if _is_click_usage(exc):
        msg = exc.format_message()  # type: ignore[attr-defined]
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            msg += f" (see '{ctx.command_path} --help')"
        return msg
    if hasattr(exc, "format_message"):  # other click exceptions (e.g. FileError)
        return exc.format_message()
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    if isinstance(exc, CliError) or type(exc).__module__.split(".")[0] in _OUR_PACKAGES:
        return str(exc)  # our own errors are written as one line for users
    return f"internal error: {type(exc).__name__}: {exc}"


_OUR_PACKAGES = ("vtl", "ebm", "tape_formats", "translators")


def one_line(text: str) -> str:
    """Whitespace (newlines too) collapsed, so a message is exactly one line."""
    return " ".join(str(text).split()) or "unknown error"


def report(exc: BaseException, as_json: bool = False) -> int:
    """Write the one ``error: ...`` line for ``exc`` to stderr (and, for ``--json``, the same
    as a JSON object on stdout); return its exit code."""
    message = one_line(error_message(exc))
    code = exit_code_for(exc)
    if as_json:
        write_json_error(message, code)
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    return code


_KINDS = {EXIT_USAGE: "refused", EXIT_FAILED: "failed", EXIT_INTERRUPTED: "interrupted"}


def write_json_error(message: str, code: int) -> None:
    """``{"ok": false, "error": ..., "exit_code": N, "kind": ...}`` on stdout: what a script
    reading ``--json`` output gets instead of a result."""
    import json

    sys.stdout.write(json.dumps({"ok": False, "error": message, "exit_code": code,
                                 "kind": _KINDS.get(code, "failed")}) + "\n")
    sys.stdout.flush()
