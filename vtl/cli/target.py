"""``vtl target``: who may use the iSCSI target (per-initiator ACLs with their own CHAP and
LUNs, kept in library.toml) and who is using it now (the running server's sessions).

A change is saved to library.toml and, when a ``vtl serve`` runs for the library, signalled
to it (SIGHUP): it applies the ACLs at once and logs out sessions that lost access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vtl.cli.common import CliError, emit_json, notify_server, settings
from vtl.cli.secrets import secret_option

app = typer.Typer(help="iSCSI target administration: initiator ACLs, live sessions.",
                  no_args_is_help=True)
acl_app = typer.Typer(help="Per-initiator access: CHAP credentials and visible LUNs.",
                      no_args_is_help=True)
app.add_typer(acl_app, name="acl")


def _parse_luns(text: str) -> tuple[int, ...]:
    """``0,1,3-4`` -> (0, 1, 3, 4)."""
    luns: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            first, _, last = part.partition("-")
            luns.update(range(int(first), int(last or first) + 1))
    except ValueError:
        raise CliError(f"bad LUN list {text!r} (e.g. 0,1 or 0-2)") from None
    if not luns:
        raise CliError("--luns needs at least one LUN")
    return tuple(sorted(luns))


def _acl_rows(acls: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"initiator": iqn, "chap_user": a.chap_user or None,
             "mutual_user": a.mutual_user or None,
             "luns": list(a.luns) if a.luns is not None else "all"}
            for iqn, a in sorted(acls.items())]


@acl_app.command("list")
def acl_list() -> None:
    """The initiators allowed in (none listed: any initiator may log in). Secrets not shown."""
    from vtl.config import LibraryConfig

    rows = _acl_rows(LibraryConfig.load(settings().root).acls)
    if settings().json:
        emit_json(rows)
        return
    if not rows:
        print("no ACLs: any initiator may log in (with the [iscsi] CHAP, if set)")
        return
    for r in rows:
        luns = r["luns"] if r["luns"] == "all" else ",".join(map(str, r["luns"]))
        auth = f"CHAP {r['chap_user']}" if r["chap_user"] else "library CHAP"
        if r["mutual_user"]:
            auth += f" + mutual {r['mutual_user']}"
        print(f"{r['initiator']}  LUNs {luns}  {auth}")


@acl_app.command("add")
def acl_add(
    initiator: Annotated[str, typer.Argument(help="Initiator name (iqn.…, eui.…, naa.…).")],
    luns: Annotated[str | None, typer.Option(
        help="LUNs it sees, e.g. 0,1 or 0-2 (LUN 0 is the changer); default: all.")] = None,
    chap_user: Annotated[str | None, typer.Option(help="Its own CHAP user.")] = None,
    chap_secret_file: Annotated[Path | None, typer.Option(
        help="File whose first line is its CHAP secret ($VTL_ACL_CHAP_SECRET).")] = None,
    mutual_user: Annotated[str | None, typer.Option(
        help="Name the target answers its mutual CHAP with.")] = None,
    mutual_secret_file: Annotated[Path | None, typer.Option(
        help="File whose first line is the mutual CHAP secret ($VTL_ACL_MUTUAL_SECRET).")] = None,
) -> None:
    """Allow INITIATOR (or change its entry): its CHAP credentials and LUNs."""
    from vtl.config import InitiatorAcl, LibraryConfig

    root = settings().root
    config = LibraryConfig.load(root)
    secret = secret_option("--chap-secret", None, chap_secret_file, "VTL_ACL_CHAP_SECRET")
    mutual = secret_option("--mutual-secret", None, mutual_secret_file, "VTL_ACL_MUTUAL_SECRET")
    if (secret and not chap_user) or (mutual and not mutual_user):
        raise CliError("a CHAP secret needs its user (--chap-user, --mutual-user)")
    acl = InitiatorAcl(chap_user=chap_user or "", chap_secret=secret or "" if chap_user else "",
                       mutual_user=mutual_user or "",
                       mutual_secret=mutual or "" if mutual_user else "",
                       luns=_parse_luns(luns) if luns is not None else None)
    acl.validate(initiator)
    existed = initiator in config.acls
    config.acls = {**config.acls, initiator: acl}
    config.save(root)
    done = f"{'changed' if existed else 'added'} ACL for {initiator}; {notify_server(root)}"
    if settings().json:
        emit_json({"ok": True, "message": done, **_acl_rows({initiator: acl})[0]})
    else:
        print(done)


@acl_app.command("remove")
def acl_remove(initiator: Annotated[str, typer.Argument(help="Initiator name.")]) -> None:
    """Take INITIATOR's ACL away; its live sessions are logged out."""
    from vtl.config import LibraryConfig

    root = settings().root
    config = LibraryConfig.load(root)
    if initiator not in config.acls:
        raise CliError(f"no ACL for {initiator!r}")
    config.acls = {k: v for k, v in config.acls.items() if k != initiator}
    config.save(root)
    done = f"removed ACL for {initiator}; {notify_server(root)}"
    if not config.acls:
        done += " (no ACLs left: any initiator may log in)"
    if settings().json:
        emit_json({"ok": True, "message": done, "initiator": initiator})
    else:
        print(done)


@app.command("sessions")
def sessions_cmd() -> None:
    """Live sessions and connections of the running vtl serve: initiator, address, LUNs,
    SCSI commands and bytes."""
    from vtl.cli.formatting import human_size
    from vtl.serve_status import NotServing, read

    try:
        status = read(settings().root)
    except NotServing as e:
        raise CliError(str(e)) from None
    rows = status.get("sessions", [])
    if settings().json:
        emit_json(rows)
        return
    if not rows:
        print("no sessions")
    for s in rows:
        luns = ",".join(map(str, s["luns"])) or "-"
        print(f"{s['initiator']}  tsih {s['tsih']}  {s['type']}  LUNs {luns}  "
              f"{s['commands']} commands  in {human_size(s['bytes_in'])}  "
              f"out {human_size(s['bytes_out'])}")
        for c in s["connections"]:
            print(f"  {c['address']} -> {c['portal']}  {c['commands']} commands  "
                  f"in {human_size(c['bytes_in'])}  out {human_size(c['bytes_out'])}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="target")
