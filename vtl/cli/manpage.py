"""Man pages generated from the CLI itself: ``vtl manpage`` and ``ebm manpage`` print a
roff page (section 1) listing every command with its usage, help and options, so the page
can never disagree with ``--help``. ``man -l <(vtl manpage)`` reads it; a package installs the
output as ``/usr/share/man/man1/vtl.1``."""

from __future__ import annotations

import datetime as dt
from typing import Any


def _roff(text: str) -> str:
    """Text safe for roff: backslashes doubled, a leading dot or quote escaped."""
    lines = []
    for line in str(text).replace("\\", "\\e").splitlines():
        lines.append("\\&" + line if line[:1] in (".", "'") else line)
    return "\n".join(lines)


def _commands(group: Any, path: tuple[str, ...] = ()):
    for name, sub in sorted(getattr(group, "commands", {}).items()):
        if getattr(sub, "hidden", False):
            continue
        if getattr(sub, "commands", None):
            yield from _commands(sub, (*path, name))
        else:
            yield (*path, name), sub


def _options(ctx: Any, command: Any) -> list[str]:
    out = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or param.name == "help":
            continue
        opts, help_text = record
        out += [".TP", f"\\fB{_roff(opts)}\\fR", _roff(help_text or "")]
    return out


def render(app: Any, program: str, summary: str) -> str:
    """The man page of the typer ``app`` called ``program``."""
    import typer.main

    from vtl.cli.metavars import name_placeholders

    root = typer.main.get_command(app)
    name_placeholders(root)  # the same words as --help
    from vtl.cli.version import package_version

    date = dt.date.today().isoformat()
    lines = [f'.TH {program.upper()} 1 "{date}" "vtl-ebm {package_version()}" "User Commands"',
             ".SH NAME", f"{program} \\- {_roff(summary)}",
             ".SH SYNOPSIS", f"\\fB{program}\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR ...",
             ".SH DESCRIPTION", _roff(root.help or ""),
             ".SH GLOBAL OPTIONS"]
    ctx = root.make_context(program, [], resilient_parsing=True)
    lines += _options(ctx, root)
    lines.append(".SH COMMANDS")
    for path, command in _commands(root):
        name = " ".join(path)
        sub_ctx = command.make_context(f"{program} {name}", [], parent=ctx,
                                       resilient_parsing=True)
        usage = " ".join(command.collect_usage_pieces(sub_ctx))
        lines += [".SS", f"\\fB{program} {_roff(name)}\\fR {_roff(usage)}",
                  _roff(command.help or ""), ".RS"]
        lines += _options(sub_ctx, command)
        lines.append(".RE")
    if root.epilog:
        lines += [".SH EXIT STATUS", _roff(root.epilog)]
    return "\n".join(lines) + "\n"


def command(program: str, summary: str):
    """The ``manpage`` command of ``program``."""

    def manpage() -> None:
        """Print this program's man page (roff), generated from its commands: e.g.
        `man -l <(PROGRAM manpage)`."""
        import sys

        app = sys.modules["ebm.cli" if program == "ebm" else "vtl.cli.main"].app
        sys.stdout.write(render(app, program, summary))

    manpage.__doc__ = manpage.__doc__.replace("PROGRAM", program)
    return manpage
