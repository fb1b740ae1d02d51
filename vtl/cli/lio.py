"""``vtl lio``: the library through the kernel's LIO target (TCMU handler + rtslib-fb export).

``vtl lio handler`` answers the CDBs LIO hands to the library's TCMU devices until SIGTERM;
``vtl lio export`` creates the user backstores and a fabric target (``--fabric iscsi``, the
default, or ``loopback`` for tcm_loop's local devices), ``vtl lio status`` shows them and
``vtl lio unexport`` removes them. Export and unexport are idempotent. CHAP comes from
library.toml ``[iscsi]`` or the same options and environment variables as ``vtl serve``.
The handler and rtslib are imported when a command runs (rtslib is the ``[lio]`` extra).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from vtl.cli.common import CliError, emit_json, open_library, say, settings
from vtl.cli.errors import OperationFailed
from vtl.cli.secrets import secret_option

app = typer.Typer(help="Export the library through the kernel's LIO target (TCMU).",
                  no_args_is_help=True)

HANDLER_LOCK = "lio-handler.lock"
SECRET_HELP = ("File whose first line is the secret (or $VTL_CHAP_SECRET, "
               "$VTL_MUTUAL_CHAP_SECRET); default: library.toml.")


def _plan(lib: Any, fabric: str, portal: str | None, chap_user: str | None,
          chap_secret: str | None, mutual_user: str | None, mutual_secret: str | None,
          initiators: list[str] | None) -> Any:
    from vtl.cli.serve import _credentials, parse_portal
    from vtl.lio.export import ExportError, plan

    cfg = lib.config.iscsi
    chap = _credentials(cfg.chap_user if chap_user is None else chap_user,
                        cfg.chap_secret if chap_secret is None else chap_secret, "CHAP")
    mutual = _credentials(cfg.mutual_user if mutual_user is None else mutual_user,
                          cfg.mutual_secret if mutual_secret is None else mutual_secret,
                          "mutual CHAP")
    try:
        return plan(lib, fabric, portal=parse_portal(portal) if portal else None,
                    chap=(chap.user, chap.secret) if chap else None,
                    mutual_chap=(mutual.user, mutual.secret) if mutual else None,
                    initiators=initiators)
    except ExportError as e:
        raise CliError(str(e)) from None


def _failed(e: Exception) -> OperationFailed:
    return OperationFailed(str(e))


@app.command("export")
def export_cmd(
    fabric: Annotated[str, typer.Option(help="iscsi (kernel iSCSI target) or loopback "
                                        "(tcm_loop: local /dev/nst*, /dev/sch*).")] = "iscsi",
    portal: Annotated[str | None, typer.Option(
        help="HOST:PORT for the iSCSI portal; default from library.toml [iscsi].")] = None,
    chap_user: Annotated[str | None, typer.Option(help="CHAP user (default: library.toml).")] = None,
    chap_secret_file: Annotated[Path | None, typer.Option(help=SECRET_HELP)] = None,
    mutual_chap_user: Annotated[str | None, typer.Option(help="Mutual CHAP name.")] = None,
    mutual_chap_secret_file: Annotated[Path | None, typer.Option(help=SECRET_HELP)] = None,
    allow_initiator: Annotated[list[str] | None, typer.Option(
        "--allow-initiator", help="Initiator IQN given an ACL (repeat; default: any).")] = None,
) -> None:
    """Create the TCMU backstores and the target: LUN 0 the changer, LUN 1..N the drives."""
    from vtl.lio.export import ExportError, export

    chap_secret = secret_option("--chap-secret", None, chap_secret_file, "VTL_CHAP_SECRET")
    mutual_secret = secret_option("--mutual-chap-secret", None, mutual_chap_secret_file,
                                  "VTL_MUTUAL_CHAP_SECRET")
    with open_library(readonly=True) as lib:
        p = _plan(lib, fabric, portal, chap_user, chap_secret, mutual_chap_user,
                  mutual_secret, allow_initiator)
    try:
        state = export(p)
    except ExportError as e:
        raise _failed(e) from None
    _show(state, f"exported library {p.library!r} through LIO ({p.fabric})")


def _with_export(action: Any) -> Any:
    """``action(plan)`` for this library's export as library.toml describes it; an
    ExportError is one line, exit 1."""
    from vtl.lio.export import ExportError

    with open_library(readonly=True) as lib:
        p = _plan(lib, "iscsi", None, None, None, None, None, None)
    try:
        return p, action(p)
    except ExportError as e:
        raise _failed(e) from None


@app.command("unexport")
def unexport_cmd() -> None:
    """Remove the targets and backstores an export made (nothing else)."""
    from vtl.lio.export import unexport

    _, gone = _with_export(unexport)
    say(f"removed {len(gone)} LIO object(s)" + (f": {', '.join(gone)}" if gone else ""),
        {"removed": gone})


@app.command("status")
def status_cmd() -> None:
    """What configfs holds of this library's export."""
    from vtl.lio.export import status

    p, state = _with_export(status)
    _show(state, f"library {p.library!r} in LIO")


def _show(state: dict[str, Any], title: str) -> None:
    if settings().json:
        emit_json(state)
        return
    lines = [title]
    for b in state["backstores"]:
        where = f"cmd_time_out {b['cmd_time_out']} s" if b["present"] else "absent"
        lines.append(f"  backstores/user/{b['name']}: LUN {b['lun']} {b['role']}, {where}")
    for t in state["targets"]:
        extra = ", ".join(t["portals"]) if t["portals"] else f"nexus {t['nexus']}"
        lines.append(f"  {t['fabric']}/{t['wwn']} tpg {t['tpg']}: {len(t['luns'])} LUNs, {extra}")
    print("\n".join(lines))


@app.command("handler")
def handler_cmd(
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the library's TCMU devices (LIO's CDBs) until SIGTERM or SIGINT."""
    from vtl.cli.serve import ServeLock, setup_logging
    from vtl.library import Library
    from vtl.lio.handler import Handler

    setup_logging(log_level)
    library = Library.open(settings().root)
    lock = None
    handler = None
    try:
        lock = ServeLock(library.root, HANDLER_LOCK, "vtl lio handler")
        handler = Handler(library)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        print(f"vtl lio handler: library {library.config.name!r} at {library.root}; ready",
              flush=True)
        handler.run(stop)
    finally:
        if handler is not None:
            handler.close()
        library.close(back_up=True)
        if lock is not None:
            lock.release()


def register(root_app: typer.Typer) -> None:
    root_app.add_typer(app, name="lio")
