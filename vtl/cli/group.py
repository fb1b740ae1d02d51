"""The root command class of both CLIs (``vtl`` and ``ebm``): one-line errors, one exit code
policy (:mod:`vtl.cli.errors`), a private umask, and the global options anywhere.

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

from vtl.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, report

try:  # recent typer vendors its own click: its exceptions are those
    from typer._click.exceptions import NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer runs on the click package
    from click.exceptions import NoArgsIsHelpError

# Files a CLI creates (library.toml, the catalog and its backups, cartridges and their sidecars)
# are readable by their owner only, unless the library was created for a group (``vtl init
# --group``): then the library's own code widens what it creates explicitly.
PRIVATE_UMASK = 0o077


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
        os.umask(PRIVATE_UMASK)  # secrets and backups are nobody else's business
        args = hoist_globals(list(sys.argv[1:] if args is None else args))
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
            sys.stderr.write("error: aborted\n")
            sys.exit(EXIT_FAILED)
        except SystemExit:
            raise
        except KeyboardInterrupt:
            sys.stderr.write("error: interrupted\n")
            sys.exit(EXIT_INTERRUPTED)
        except BaseException as e:  # noqa: BLE001 - the last line of defence: no tracebacks
            sys.exit(report(e))
        if isinstance(rv, int) and rv:
            sys.exit(rv)
        return rv
