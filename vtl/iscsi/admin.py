"""What an admin asks a running target: its live sessions, and new ACLs applied in place.

Sessions are read from the server's tables (a snapshot under its lock); byte counts come from
the kernel (``TCP_INFO``'s bytes received and bytes acknowledged), so the data path pays
nothing for them; the command count is one add per SCSI command PDU on the connection.

An ACL change (``vtl target acl ...``, then SIGHUP to ``vtl serve``) swaps the target's ACL
table; every live session is then checked against it: one whose initiator may no longer log
in, or which lost a LUN it saw, is asked to log out (Async Message, AsyncEvent 1, as at
shutdown) and its connections are closed after ``LOGOUT_WAIT`` seconds if it has not. A
session that gains LUNs sees them at once. Changed CHAP secrets apply from the next login.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vtl.config import InitiatorAcl
    from vtl.iscsi.connection import Connection
    from vtl.iscsi.target import IscsiTarget

log = logging.getLogger("vtl.iscsi.admin")

LOGOUT_WAIT = 3  # seconds an initiator gets to log out before its connections are closed
# struct tcp_info (linux/tcp.h): tcpi_bytes_acked at 120, tcpi_bytes_received at 128.
_TCP_INFO_LEN = 136
_BYTES_AT = struct.Struct("=QQ")


def tcp_bytes(sock: socket.socket) -> tuple[int, int]:
    """(bytes the peer acknowledged, bytes received) on ``sock``; (0, 0) if unknown."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except (OSError, AttributeError):
        return 0, 0
    if len(info) < _TCP_INFO_LEN:
        return 0, 0
    return _BYTES_AT.unpack_from(info, 120)


def _connection_row(conn: Connection) -> dict[str, Any]:
    sent, received = tcp_bytes(conn.sock)
    return {"address": conn.peer, "portal": f"{conn.local[0]}:{conn.local[1]}" if conn.local else "",
            "commands": conn.commands, "bytes_in": received, "bytes_out": sent}


def sessions(server: IscsiTarget) -> list[dict[str, Any]]:
    """Every logged-in session: initiator, target, LUNs, and per connection its address,
    SCSI commands and bytes (totals on the session too)."""
    conns = server.logged_in()
    by_session: dict[int, list[Connection]] = {}
    for c in conns:
        by_session.setdefault(c.session.tsih, []).append(c)
    rows = []
    for tsih, members in sorted(by_session.items()):
        s = members[0].session
        links = [_connection_row(c) for c in sorted(members, key=lambda c: c.peer)]
        rows.append({
            "tsih": tsih, "isid": s.isid.hex(), "initiator": s.initiator_name,
            "alias": members[0].login.initiator_alias,
            "target": s.target.iqn if s.target is not None else None,
            "type": "discovery" if s.discovery else "normal", "luns": sorted(s.luns),
            "commands": sum(r["commands"] for r in links),
            "bytes_in": sum(r["bytes_in"] for r in links),
            "bytes_out": sum(r["bytes_out"] for r in links),
            "connections": links,
        })
    return rows


def apply_acls(server: IscsiTarget, acls: dict[str, InitiatorAcl]) -> list[str]:
    """Give every target ``acls``; log out the sessions that lost access. Returns the
    initiators asked to leave (for the log and the tests)."""
    for target in server.config.targets:
        target.acls = dict(acls)
    conns = [c for c in server.logged_in() if c.session.target is not None and not c.closing]
    evicted = []
    for conn in conns:
        session, target = conn.session, conn.session.target
        name = session.initiator_name
        now = target.visible_luns(name) if target.allows(name) else frozenset()
        if not target.allows(name) or not session.luns <= now:
            evicted.append(name)
            threading.Thread(target=_log_out, args=(conn,), daemon=True,
                             name=f"logout {conn.peer}").start()
        elif now != session.luns:
            session.luns = now
            conn.bind_luns(target, now)
            log.info("%s: %s now sees LUNs %s", conn.peer, name, sorted(now))
    return evicted


def _log_out(conn: Connection) -> None:
    """Ask for a logout, then close the connection if the initiator has not left."""
    log.info("%s: access of %s changed: asking it to log out", conn.peer,
             conn.session.initiator_name if conn.session else "?")
    try:
        asked = conn.request_logout(LOGOUT_WAIT)
    except OSError:
        asked = False
    if not asked or not conn.closed.wait(LOGOUT_WAIT + 1):
        conn.close()


def device_counters(server: IscsiTarget) -> list[dict[str, Any]]:
    """Per LUN of each target: the drive models' byte and error counters since their load
    (LOG SENSE's own numbers); the changer has none."""
    rows = []
    for t in server.config.targets:
        for lun, dev in sorted(t.devices.luns.items()):
            if not hasattr(dev, "bytes_written"):
                continue
            rows.append({"target": t.iqn, "lun": lun, "serial": getattr(dev, "serial", ""),
                         "bytes_written": dev.bytes_written, "bytes_read": dev.bytes_read,
                         "write_errors": dev.write_errors, "read_errors": dev.read_errors})
    return rows
