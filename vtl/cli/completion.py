"""Shell completion for both CLIs: ``vtl completion bash`` (or ``ebm completion zsh``) prints
the script to source; the shell then calls the program back with ``_VTL_COMPLETE`` (or
``_EBM_COMPLETE``) set, which :func:`prepare` notices before any command runs.

Typer's completion classes are registered only then, so ordinary start-up pays nothing.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

SHELLS = ("bash", "zsh", "fish")


def complete_var(program: str) -> str:
    return f"_{program.upper()}_COMPLETE"


def prepare(program: str) -> None:
    """Register typer's completion classes when the shell is asking for completions."""
    if os.environ.get(complete_var(program)):
        from typer.completion import completion_init

        completion_init()


def command(program: str):
    """The ``completion SHELL`` command of ``program``."""

    def completion(shell: Annotated[str, typer.Argument(help="bash, zsh or fish.")]) -> None:
        """Print the shell completion script: e.g. `source <(PROGRAM completion bash)` in
        ~/.bashrc."""
        from typer.completion import get_completion_script

        from vtl.cli.errors import CliError

        if shell not in SHELLS:
            raise CliError(f"unknown shell {shell!r} (one of {', '.join(SHELLS)})")
        print(get_completion_script(prog_name=program, complete_var=complete_var(program),
                                    shell=shell))

    completion.__doc__ = completion.__doc__.replace("PROGRAM", program)
    return completion
