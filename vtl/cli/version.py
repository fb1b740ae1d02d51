"""``--version`` for both CLIs: the installed distribution's version (``vtl-ebm``)."""

from __future__ import annotations

import sys

import typer

DISTRIBUTION = "vtl-ebm"


def package_version() -> str:
    """The version pip installed; from the source tree without metadata: ``unknown``."""
    from importlib.metadata import PackageNotFoundError, version  # only when asked

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def version_option(program: str):
    """An eager ``--version`` option callback that prints ``PROGRAM VERSION`` and exits 0."""

    def show(value: bool) -> None:
        if value:
            sys.stdout.write(f"{program} {package_version()}\n")
            raise typer.Exit()

    return show
