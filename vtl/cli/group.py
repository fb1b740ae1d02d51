"""The root command class of both CLIs (``vtl`` and ``ebm``): one-line errors, one exit code
policy (:mod:`vtl.cli.errors`), a private umask (:mod:`vtl.access`), global options anywhere.

Errors are handled in the group's ``main`` rather than in ``Typer.__call__`` so that the same
holds under typer's ``CliRunner`` and when a test calls ``app([...])`` in-process. A command
that succeeds returns normally (an in-process caller gets control back); anything else ends
in ``SystemExit`` with the policy's code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from typer import Abort
from typer.core import TyperGroup

from vtl.access import PRIVATE_UMASK
from vtl.cli.completion import prepare as prepare_completion
from vtl.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, report, write_json_error
from vtl.cli.metavars import name_placeholders

try:  # recent typer vendors its own click: its exceptions are those
    from typer._click.exceptions import NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer runs on the click package
    from click.exceptions import NoArgsIsHelpError

def hoist_globals(args: list[str], flags: tuple[str, ...] = ("--json",),
                  options: tuple[str, ...] = ("--root",)) -> list[str]:
    """Accept global ``flags`` and ``options VALUE`` anywhere (``vtl cartridge list --json``)
    by moving them to the front, where the root command parses them. ``--`` ends the search."""
    if "--" in args:
        head, rest = args[: args.index("--")], args[args.index("--"):]
    else:
        head, rest = args, []
    front: list[str] = []
    kept: list[str] = []
    i = 0
    while i < len(head):
        arg = head[i]
        if arg in flags or any(arg.startswith(f"{o}=") for o in options):
            front.append(arg)
        elif arg in options and i + 1 < len(head):
            front += [arg, head[i + 1]]
            i += 1
        else:
            kept.append(arg)
        i += 1
    return front + kept + rest


class OneLineErrorsGroup(TyperGroup):
    """The root command: one-line errors, the exit-code policy, ``--json``/``--root`` anywhere."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        # Files a command creates are its owner's only until the root callback knows the
        # library and widens this for one shared with a group (vtl.access.apply_umask).
        previous = os.umask(PRIVATE_UMASK)
        try:
            return self._main_one_line(args, prog_name, complete_var, **extra)
        finally:
            os.umask(previous)  # an in-process caller (a test) keeps its own

    def _main_one_line(self, args: Sequence[str] | None, prog_name: str | None,
                       complete_var: str | None, **extra: Any) -> Any:
        prepare_completion(prog_name or self.name or "")  # the shell asking for completions
        name_placeholders(self)  # --portal PORTAL in --help, not typer's <str>
        args = hoist_globals(list(sys.argv[1:] if args is None else args))
        as_json = "--json" in (args[: args.index("--")] if "--" in args else args)
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name or self.name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except NoArgsIsHelpError as e:
            sys.stdout.write((e.ctx.get_help() if e.ctx else str(e)) + "\n")
            sys.exit(0)
        except Abort:
            if as_json:
                write_json_error("aborted", EXIT_FAILED)
            sys.stderr.write("error: aborted\n")
            sys.exit(EXIT_FAILED)
        except SystemExit:
            raise
        except KeyboardInterrupt:
            if as_json:
                write_json_error("interrupted", EXIT_INTERRUPTED)
            sys.stderr.write("error: interrupted\n")
            sys.exit(EXIT_INTERRUPTED)
        except BaseException as e:  # the last line of defence: no tracebacks
            sys.exit(report(e, as_json))
        if isinstance(rv, int) and rv:
            sys.exit(rv)
        return rv
