"""``vtl serve``: export the library over the embedded iSCSI target until SIGTERM/SIGINT.

One target per library (LUN 0 = changer, LUN 1..N = drives; see vtl.iscsi.target for why).
CHAP secrets come from library.toml, a file (``--chap-secret-file``), or the environment
(``VTL_CHAP_SECRET``, ``VTL_MUTUAL_CHAP_SECRET``); ``--chap-secret`` still works but warns,
since every local user sees a command line in ``ps``. The iSCSI modules are imported when the
command runs, not when ``vtl`` starts.
Only one server may serve a data directory at a time: an exclusive ``flock`` on
``<root>/serve.lock`` (which also records the pid) refuses a second one with one line. On
SIGTERM or SIGINT the server stops listening, lets in-flight commands finish, closes the
sessions, syncs and closes every mounted cartridge, and exits 0. SIGHUP re-reads the ACLs of
library.toml and applies them without a restart (:mod:`vtl.iscsi.admin`), and the faults
injected for testing (:mod:`vtl.faults`); live sessions are
published in ``<root>/serve-status.json`` (:mod:`vtl.serve_status`) for ``vtl target sessions``. Log lines go to stderr, with
their own timestamps on a terminal and without in the journal (:mod:`vtl.logs`);
``vtl service install`` writes the systemd unit that runs this (:mod:`vtl.service`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vtl import serve_status
from vtl.cli.common import CliError, settings
from vtl.cli.errors import OperationFailed
from vtl.cli.secrets import secret_option
from vtl.logs import configure as configure_logging
from vtl.serve_status import LOCK_NAME

if TYPE_CHECKING:
    from vtl.iscsi.chap import ChapCredentials
    from vtl.iscsi.config import ServerConfig
    from vtl.iscsi.target import IscsiTarget
    from vtl.library import Library

DEFAULT_PORT = 3260
_PORTAL_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+))(?::(?P<port>\d{1,5}))?$")

log = logging.getLogger("vtl.serve")


def parse_portal(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` or ``[IPv6][:PORT]`` -> (host, port); CliError if malformed."""
    m = _PORTAL_RE.match(text.strip())
    port = int(m.group("port") or DEFAULT_PORT) if m else 0
    if not m or not 0 < port < 65536:
        raise CliError(f"invalid portal {text!r} (expected HOST:PORT or [IPV6]:PORT)")
    return (m.group("v6") or m.group("host"), port)


class ServeLock:
    """An exclusive flock on <root>/serve.lock (or ``name``), held for the server's lifetime."""

    def __init__(self, root: Path, name: str = LOCK_NAME, what: str = "vtl serve") -> None:
        self.path = root / name
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise CliError(
                f"another '{what}' (pid {pid}) is already serving {root}"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        try:
            os.ftruncate(self.fd, 0)
        finally:
            os.close(self.fd)


def setup_logging(log_level: str) -> None:
    """Log lines to stderr at ``log_level`` (CliError for an unknown level name)."""
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise CliError(f"invalid log level {log_level!r}")
    configure_logging(level)  # the journal's format when run by systemd (vtl.logs)


def _credentials(user: str, secret: str, what: str) -> ChapCredentials | None:
    from vtl.iscsi.chap import ChapCredentials

    if bool(user) != bool(secret):
        raise CliError(f"{what} needs both a user and a secret")
    if secret and not 12 <= len(secret) <= 255:
        # RFC 7143 12.1.3 / common initiator limits: 12..16 bytes is what open-iscsi expects.
        raise CliError(f"{what} secret must be 12 to 255 characters")
    return ChapCredentials(user, secret) if user else None


def serve(
    portal: Annotated[
        list[str] | None,
        typer.Option("--portal", "-p", metavar="HOST:PORT", help="HOST:PORT or [IPV6]:PORT to listen on (repeat "
                     "for several); default from library.toml [iscsi], else 127.0.0.1:3260."),
    ] = None,
    chap_user: Annotated[str | None, typer.Option(help="CHAP user initiators must log in as.")] = None,
    chap_secret: Annotated[str | None, typer.Option(
        help="CHAP secret (12+ characters); visible in ps: prefer --chap-secret-file or "
             "$VTL_CHAP_SECRET.")] = None,
    chap_secret_file: Annotated[Path | None, typer.Option(
        help="File whose first line is the CHAP secret.")] = None,
    mutual_chap_user: Annotated[str | None, typer.Option(
        help="Name the target answers mutual CHAP with.")] = None,
    mutual_chap_secret: Annotated[str | None, typer.Option(
        help="Secret the target answers mutual CHAP with; visible in ps: prefer "
             "--mutual-chap-secret-file or $VTL_MUTUAL_CHAP_SECRET.")] = None,
    mutual_chap_secret_file: Annotated[Path | None, typer.Option(
        help="File whose first line is the mutual CHAP secret.")] = None,
    allow_initiator: Annotated[list[str] | None, typer.Option(
        "--allow-initiator", help="Initiator IQN allowed to log in (repeat; default: any).")] = None,
    require_header_digest: Annotated[bool, typer.Option(
        help="Insist on HeaderDigest=CRC32C.")] = False,
    require_data_digest: Annotated[bool, typer.Option(
        help="Insist on DataDigest=CRC32C.")] = False,
    nop_interval: Annotated[float, typer.Option(
        help="Seconds of silence before the target pings with NOP-In (0 = never).")] = 30.0,
    nop_timeout: Annotated[float, typer.Option(
        help="Seconds to wait for a ping's answer before dropping the connection.")] = 30.0,
    max_connections_per_portal: Annotated[int, typer.Option(
        min=1, help="Connections one portal serves at once (each costs a thread); past it "
        "the oldest one not logged in is dropped, else the new one is closed.")] = 64,
    max_connections_per_initiator: Annotated[int, typer.Option(
        min=1, help="Connections one initiator name may hold; past it its login is "
        "refused (out of resources).")] = 8,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    web: Annotated[str | None, typer.Option(
        "--web", metavar="HOST:PORT", help="Also serve the status page and Prometheus /metrics on HOST:PORT "
        "(e.g. 127.0.0.1:9180; see vtl web).")] = None,
) -> None:
    """Serve the library over iSCSI: LUN 0 is the changer, LUN 1..N the drives."""
    from vtl.iscsi.config import Limits, ServerConfig, TargetConfig
    from vtl.library import Library
    from vtl.scsi.devices import build_device_set

    chap_secret = secret_option("--chap-secret", chap_secret, chap_secret_file,
                                "VTL_CHAP_SECRET")
    mutual_chap_secret = secret_option("--mutual-chap-secret", mutual_chap_secret,
                                       mutual_chap_secret_file, "VTL_MUTUAL_CHAP_SECRET")
    setup_logging(log_level)
    library = Library.open(settings().root)
    lock: ServeLock | None = None
    status_page = None
    keeper = None
    try:
        lock = ServeLock(library.root)
        keeper = _lease_keeper(library)
        library.back_up_catalog(strict=False)  # at start: the state a crash is reconciled to
        cfg = library.config.iscsi
        portals = [parse_portal(p) for p in (portal or [cfg.portal])]
        chap = _credentials(cfg.chap_user if chap_user is None else chap_user,
                            cfg.chap_secret if chap_secret is None else chap_secret, "CHAP")
        mutual = _credentials(
            cfg.mutual_user if mutual_chap_user is None else mutual_chap_user,
            cfg.mutual_secret if mutual_chap_secret is None else mutual_chap_secret,
            "mutual CHAP")
        if mutual is not None and chap is None:
            raise CliError("mutual CHAP needs --chap-user/--chap-secret too")
        for iqn in allow_initiator or []:
            if not re.match(r"^(iqn\.\d{4}-\d{2}\.\S+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]+)$", iqn):
                raise CliError(f"invalid initiator name {iqn!r}")
        devices = build_device_set(library)
        target = TargetConfig(
            iqn=cfg.target_iqn, devices=devices, alias=library.config.name,
            allowed_initiators=frozenset(allow_initiator or ()), acls=library.config.acls,
        )
        limits = Limits(
            nop_interval=nop_interval, nop_timeout=nop_timeout,
            max_connections_per_portal=max_connections_per_portal,
            max_connections_per_initiator=max_connections_per_initiator,
            header_digests=("CRC32C",) if require_header_digest else ("None", "CRC32C"),
            data_digests=("CRC32C",) if require_data_digest else ("None", "CRC32C"),
        )
        server_cfg = ServerConfig(targets=[target], portals=portals, chap=chap,
                                  mutual_chap=mutual, limits=limits)
        if web is not None:
            from vtl.cli.web import start_web

            status_page = start_web(web)
            status_page.start_thread()
            log.info("status page: %s", status_page.url)
        import asyncio

        code = asyncio.run(_run(server_cfg, library, chap is not None, mutual is not None))
    finally:
        if keeper is not None:
            keeper.stop()
        if status_page is not None:
            status_page.shutdown()
            status_page.server_close()
        library.close(back_up=True)  # syncs and closes every mounted cartridge
        if lock is not None:
            lock.release()
    if code:
        raise typer.Exit(code)


def _lease_keeper(library: Library):
    """One gateway of several (``[s3] gateway``): renew the leases of the cartridges it holds
    while it serves (vtl/leases.py)."""
    from vtl.leases import LeaseKeeper, LeaseStore

    s3 = library.config.s3
    if not s3.gateway:
        return None
    bucket, prefix = s3.target()
    keeper = LeaseKeeper(library.root, LeaseStore(s3.client(), bucket, prefix, s3.gateway,
                                                  s3.lease_ttl)).start()
    log.info("gateway %s: renewing its cartridge leases every %.1f s", s3.gateway,
             max(s3.lease_ttl / 3, 0.2))
    return keeper


async def _run(config: ServerConfig, library, chap: bool, mutual: bool) -> int:
    from vtl.iscsi.target import IscsiTarget

    server = IscsiTarget(config)
    try:
        await server.start()
    except OSError as e:
        raise OperationFailed(f"cannot listen on {_portals(config.portals)}: {e.strerror or e}") from None
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, server, library.root, library)
    _banner(config, library, server, chap, mutual)
    publisher = loop.create_task(_publish_status(server, library.root))
    await stop.wait()
    publisher.cancel()
    await asyncio.gather(publisher, return_exceptions=True)
    serve_status.remove(library.root)
    log.info("stopping: finishing in-flight commands and closing sessions")
    await server.stop(grace=60.0)
    log.info("stopped")
    return 0


def _reload(server: IscsiTarget, root: Path, library: Library | None = None) -> None:
    """SIGHUP (``systemctl reload``, ``vtl target acl ...``, ``vtl drive tapealert``...):
    re-read the injected faults (vtl.faults) and library.toml's ACLs and apply them to the
    running target (vtl.iscsi.admin); a bad file keeps the old ACLs."""
    from vtl.config import ConfigError, LibraryConfig
    from vtl.iscsi.admin import apply_acls

    if library is not None:
        library.faults.reload()

    try:
        acls = LibraryConfig.load(root).acls
    except ConfigError as e:
        log.error("reload refused, keeping the current ACLs: %s", e)
        return
    evicted = apply_acls(server, acls)
    log.info("reloaded: %d initiator ACL(s)%s", len(acls),
             f"; asked to log out: {', '.join(sorted(set(evicted)))}" if evicted else "")
    _write_status(server, root)


def _status(server: IscsiTarget) -> dict:
    from vtl.iscsi.admin import device_counters, sessions

    return {"pid": os.getpid(), "portals": _portals(server.bound),
            "targets": [t.iqn for t in server.config.targets], "sessions": sessions(server),
            "drives": device_counters(server)}


def _write_status(server: IscsiTarget, root: Path, status: dict | None = None) -> bool:
    try:
        serve_status.write(root, _status(server) if status is None else status)
    except OSError as e:
        log.warning("cannot write %s: %s", serve_status.STATUS_NAME, e)
        return False
    return True


async def _publish_status(server: IscsiTarget, root: Path) -> None:
    """Rewrite the status file ``vtl target sessions`` reads every INTERVAL seconds when it
    changed. Only commands on a connection change the sessions and the drives' counters
    (SIGHUP's reload writes it itself): with none open, it waits for one, no wake-up."""
    import asyncio

    written = None
    while True:
        status = _status(server)
        if status != written and _write_status(server, root, status):
            written = status
        await server.until_connected()
        await asyncio.sleep(serve_status.INTERVAL)


def _portals(portals: list[tuple[str, int]]) -> str:
    return ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in portals)


def _banner(config: ServerConfig, library, server: IscsiTarget, chap: bool,
            mutual: bool) -> None:
    """What an admin (or a test) needs to attach: portals, the target IQN, the LUN layout."""
    from vtl.scsi.devices import CHANGER_LUN, drive_lun

    out = [f"vtl serve: library {library.config.name!r} at {library.root}"]
    out.append(f"portal: {_portals(server.bound)}")
    for t in config.targets:
        out.append(f"target: {t.iqn}")
        for lun, dev in sorted(t.devices.luns.items()):
            ident = getattr(dev, "identity", None)
            model = f"{ident.vendor} {ident.product}" if ident is not None else "?"
            if lun == CHANGER_LUN:
                what = "changer"
            else:
                index = next(i for i in range(len(library.drives)) if drive_lun(i) == lun)
                what = f"drive {index} (element {library.drives[index].address})"
            serial = getattr(dev, "serial", "")
            out.append(f"  LUN {lun}: {what}, {model}, serial {serial}".rstrip(", "))
        acl = ", ".join(sorted(t.allowed_initiators)) or "any initiator"
        out.append(f"  allowed: {acl}")
    out.append(f"auth: {'CHAP' if chap else 'none'}{' + mutual CHAP' if mutual else ''}")
    acls = config.targets[0].acls if config.targets else {}
    if acls:
        out.append(f"acls: {len(acls)} initiator(s) ({', '.join(sorted(acls))}); "
                   "SIGHUP re-reads them")
    if server.bound and config.targets:
        host, port = server.bound[0]
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        out.append(f"attach: iscsi://{where}/{config.targets[0].iqn}/<LUN>"
                   f"  (qemu: -drive driver=iscsi,portal={where},"
                   f"target={config.targets[0].iqn},lun=<LUN>)")
    out.append("ready")
    print("\n".join(out), flush=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
