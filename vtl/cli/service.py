"""``vtl service``: install the systemd units (``vtl-serve.service``, the EBM scheduler's
service and timer) pointing at this installation's ``vtl`` and ``ebm``; see :mod:`vtl.service`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vtl.cli.common import CliError, emit_json, settings

app = typer.Typer(help="Run the library as a systemd service.", no_args_is_help=True)


@app.command("install")
def install_cmd(
    prefix: Annotated[Path, typer.Option(
        help="Install under this directory instead of / (packaging, tests).")] = Path("/"),
    bindir: Annotated[Path | None, typer.Option(
        help="Directory holding the installed vtl and ebm; default: this Python's bin/.")] = None,
) -> None:
    """Write the units to PREFIX/etc/systemd/system and PREFIX/etc/vtl/vtl.env (0600, kept if
    present); then run systemctl daemon-reload and enable what you need."""
    from vtl.service import ServiceError, install

    try:
        files = install(prefix, bindir)
    except ServiceError as e:
        raise CliError(str(e)) from None
    if settings().json:
        emit_json({"ok": True, "files": [{"path": str(f.path), "written": f.written}
                                         for f in files]})
        return
    for f in files:
        print(f"{'wrote' if f.written else 'kept '} {f.path}")
    print("next: vtl --root /var/lib/vtl init ... (once), edit /etc/vtl/vtl.env, then\n"
          "  systemctl daemon-reload && systemctl enable --now vtl-serve.service "
          "ebm-scheduler.timer")


@app.command("show")
def show_cmd(
    unit: Annotated[str, typer.Argument(help="vtl-serve.service, ebm-scheduler.service or "
                                        "ebm-scheduler.timer.")],
    bindir: Annotated[Path | None, typer.Option(
        help="Directory holding the installed vtl and ebm; default: this Python's bin/.")] = None,
) -> None:
    """Print a unit as `install` would write it."""
    from vtl.service import ServiceError, render

    try:
        print(render(unit, bindir), end="")
    except ServiceError as e:
        raise CliError(str(e)) from None


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="service")
