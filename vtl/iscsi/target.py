"""The embedded iSCSI target server: portals, sessions, LUN workers, clean shutdown.

Layout decision: ONE target per library, LUN 0 = the medium changer, LUN 1..N = the drives.
Why, rather than one target per device (AWS Tape Gateway's choice):

* ``mtx``/``st``/``ch`` and backup software find the changer and its drives by scanning one
  SCSI host; with a single target a single login (``iscsiadm -m node -l``) makes the whole
  library appear, in a stable order that matches the changer's data-transfer element order
  (drive i = LUN i+1), which is what Bacula/Amanda autochanger configs rely on.
* It is still per-LUN where it matters: qemu's ``driver=iscsi`` attaches one LUN per drive, and
  any number of initiators may log in to the same target at once; each drive is guarded by the
  device model's RESERVE/PERSISTENT RESERVE, not by target boundaries.
* One IQN, one ACL list and one set of CHAP credentials per library keeps configuration small.
The ``TargetConfig`` list allows more targets later (e.g. per-device) without touching the
protocol code.

Threads: the event loop accepts connections, serves their login phase, runs the NOP-In
watchdog and sequences a clean stop; every logged-in connection has a thread of its own
(see ``connection.py`` for why; capped
per portal and per initiator name, ``Limits.max_connections_per_*``), and
every LUN a lock and a worker thread (shared by all sessions) for the commands that may take
long, so a connection keeps answering NOP-Outs and task management while they run.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
import threading
import time

from vtl.iscsi.config import ServerConfig, TargetConfig
from vtl.iscsi.connection import Connection
from vtl.iscsi.login import LoginHandler
from vtl.iscsi.lun_worker import LunWorker
from vtl.iscsi.session import Session
from vtl.iscsi.task import Task
from vtl.scsi.base import Nexus, ResetKind

log = logging.getLogger("vtl.iscsi")


def format_address(host: str, port: int, tpgt: int) -> str:
    if ":" in host:
        return f"[{host}]:{port},{tpgt}"
    return f"{host}:{port},{tpgt}"


class IscsiTarget:
    """Listens on the configured portals and serves the configured targets."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.connections: set[Connection] = set()
        self.sessions: dict[int, Session] = {}
        self._by_nexus: dict[tuple[str, bytes, str], Connection] = {}
        self._lock = threading.Lock()  # the three tables above, used by connection threads
        self._listeners: list[socket.socket] = []
        self._background: list[asyncio.Task] = []
        self._connected = asyncio.Event()  # set by _accept: a connection opened
        self.workers: dict[tuple[str, int], LunWorker] = {}
        for t in config.targets:
            for lun, dev in t.devices.luns.items():
                self.workers[(t.iqn, lun)] = LunWorker(f"{lun}", dev)
        self.bound: list[tuple[str, int]] = []

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for host, port in self.config.portals:
                self._listeners.append(_listen(host, port))
        except OSError:
            for sock in self._listeners:
                sock.close()
            self._listeners.clear()
            raise
        for sock in self._listeners:
            addr = sock.getsockname()
            self.bound.append((addr[0], addr[1]))
            self._background.append(loop.create_task(self._accept(sock)))
        self._background.append(loop.create_task(self._watchdog()))

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        name = listener.getsockname()
        portal = (name[0], name[1])
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. out of descriptors: keep serving the others
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if not self._make_room(portal, sock):
                sock.close()
                continue
            conn = Connection(self, sock, portal)
            with self._lock:
                self.connections.add(conn)
            self._connected.set()
            conn.start_on_loop(loop)  # a thread of its own once logged in
            # sock_accept does not yield while the backlog holds connections: let the
            # logins, teardowns and the watchdog run between two accepts.
            await asyncio.sleep(0)

    def _make_room(self, portal: tuple[str, int], sock: socket.socket) -> bool:
        """Enforce ``max_connections_per_portal`` (each costs a thread once logged in): at the
        cap, the oldest connection that has not logged in yet makes room (a flood of idle
        sockets cannot lock initiators out); with none, the new one is refused."""
        cap = self.config.limits.max_connections_per_portal
        with self._lock:
            live = [c for c in self.connections if c.portal == portal and not c.closing]
            if len(live) < cap:
                return True
            waiting = [c for c in live if not c.full_feature]
            victim = min(waiting, key=lambda c: c.opened) if waiting else None
        where = format_address(*portal, self.config.portal_group_tag)
        try:
            peer = "{}:{}".format(*sock.getpeername()[:2])
        except OSError:
            peer = "?"
        if victim is None:
            log.warning("%s: connection refused: portal %s has its maximum of %d connections "
                        "(max_connections_per_portal)", peer, where, cap)
            return False
        log.warning("%s: portal %s has its maximum of %d connections "
                    "(max_connections_per_portal): dropping %s, not logged in after %.1f s",
                    peer, where, cap, victim.peer, time.monotonic() - victim.opened)
        victim.abort()
        return True

    def admit_initiator(self, conn: Connection, name: str) -> bool:
        """Count a logging-in connection against ``max_connections_per_initiator``; False
        (and a log line) when that initiator already has as many."""
        cap = self.config.limits.max_connections_per_initiator
        with self._lock:
            n = sum(1 for c in self.connections
                    if c is not conn and c.initiator == name and not c.closing)
            if n < cap:
                conn.initiator = name
                return True
        log.warning("%s: login refused: initiator %s already has its maximum of %d "
                    "connections (max_connections_per_initiator)", conn.peer, name, cap)
        return False

    async def until_connected(self) -> None:
        """Return once a connection is open: at once while one is, else when the next one
        is accepted. The loop's timers wait here: a server nobody is connected to makes no
        wake-up."""
        with self._lock:
            if self.connections:
                return
        self._connected.clear()  # (on the loop, as _accept: no connection came in between)
        await self._connected.wait()

    async def _watchdog(self) -> None:
        """Login timeouts and NOP-In pings for every connection, from one timer."""
        lim = self.config.limits
        period = 0.25 if lim.nop_interval < 5 or lim.login_timeout < 5 else 1.0
        while True:
            await self.until_connected()
            await asyncio.sleep(period)
            now = time.monotonic()
            with self._lock:
                conns = list(self.connections)
            for conn in conns:
                action = conn.watchdog_check(now)
                if action == "drop":
                    log.info("%s: %s, dropping connection", conn.peer,
                             "no answer to NOP-In ping" if conn.full_feature
                             else "login timed out")
                    conn.abort()
                elif action == "ping":
                    # The ping waits behind a response being written to a slow reader.
                    threading.Thread(target=conn.ping, daemon=True).start()

    async def stop(self, grace: float = 60.0, logout_wait: float = 2.0) -> None:
        """Stop listening, let in-flight commands finish, ask initiators to log out (give
        them ``logout_wait`` seconds), then close every connection that is left."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        for sock in self._listeners:
            sock.close()
        self._listeners.clear()
        with self._lock:
            conns = list(self.connections)
        for c in conns:
            c.draining = True
        if conns:
            await asyncio.gather(*(asyncio.to_thread(c.wait_idle, grace) for c in conns))
        seconds = max(1, int(logout_wait))
        # Asking may block behind a response stuck on an initiator that does not read: give
        # up on those after a while (the close below breaks their send).
        asks = [asyncio.ensure_future(asyncio.to_thread(c.request_logout, seconds))
                for c in conns]
        if asks:
            await asyncio.wait(asks, timeout=max(1.0, logout_wait))
        asked = [c for c, a in zip(conns, asks, strict=True)
                 if a.done() and not a.cancelled() and a.exception() is None and a.result()]
        if asked and logout_wait > 0:
            await asyncio.to_thread(_wait_closed, asked, logout_wait)
        for c in conns:
            c.close()
        if conns:
            await asyncio.to_thread(_wait_closed, conns, 5.0)
        with self._lock:
            left = list(self.connections)
        for c in left:
            c.abort()
        # Let queued nexus_lost calls run before the threads go away.
        for w in self.workers.values():
            await asyncio.to_thread(w.shutdown)

    # ---- lookups -------------------------------------------------------------------------
    def logged_in(self) -> list[Connection]:
        """The connections in full-feature phase (a snapshot, for vtl.iscsi.admin)."""
        with self._lock:
            return [c for c in self.connections if c.session is not None and c.full_feature]

    def worker(self, target: TargetConfig, lun: int | None) -> LunWorker | None:
        if lun is None:
            return None
        return self.workers.get((target.iqn, lun))

    def session_by_tsih(self, tsih: int) -> Session | None:
        return self.sessions.get(tsih)

    # ---- sessions ------------------------------------------------------------------------
    def open_session(self, conn: Connection, login: LoginHandler, isid: bytes,
                     cmdsn: int) -> Session:
        old = None
        with self._lock:
            tsih = 0
            while tsih == 0 or tsih in self.sessions:
                tsih = secrets.randbelow(0xFFFF) + 1
            session = Session(
                tsih=tsih, isid=isid, initiator_name=login.initiator_name, target=login.target,
                params=login.params, exp_cmdsn=cmdsn, queue_depth=self.config.limits.queue_depth,
                luns=(login.target.visible_luns(login.initiator_name)
                      if login.target is not None else frozenset()),
            )
            self.sessions[tsih] = session
            if login.target is not None:
                key = (login.initiator_name, isid, login.target.iqn)
                old = self._by_nexus.get(key)
                if old is conn:
                    old = None
                self._by_nexus[key] = conn
        if old is not None:
            # Session reinstatement (RFC 7143 6.3.5): the old session is closed first.
            log.info("reinstating session of %s", login.initiator_name)
            self._cleanup(old)
            old.abort()
        return session

    def connection_closed(self, conn: Connection) -> None:
        with self._lock:
            self.connections.discard(conn)
        self._cleanup(conn)

    def _cleanup(self, conn: Connection) -> None:
        session = conn.session
        with self._lock:
            if session is None or self.sessions.get(session.tsih) is not session:
                return
            del self.sessions[session.tsih]
            if session.target is None:
                return
            key = (session.initiator_name, session.isid, session.target.iqn)
            if self._by_nexus.get(key) is conn:
                del self._by_nexus[key]
        for lun in session.target.devices.luns:
            worker = self.workers.get((session.target.iqn, lun))
            if worker is not None:
                try:  # after the commands still queued for the LUN
                    worker.post_barrier(_nexus_lost, worker, session.nexus)
                except RuntimeError:  # worker already shut down
                    _nexus_lost(worker, session.nexus)

    # ---- discovery -----------------------------------------------------------------------
    def send_targets(self, conn: Connection, value: str) -> list[tuple[str, str]]:
        session = conn.session
        assert session is not None
        if value == "All":
            if not session.discovery:
                targets = [session.target]
            else:
                targets = list(self.config.targets)
        elif value == "":
            targets = [session.target] if session.target is not None else []
        else:
            t = self.config.target(value)
            targets = [t] if t is not None else []
        out: list[tuple[str, str]] = []
        for t in targets:
            if t is None or not t.allows(session.initiator_name):
                continue
            out.append(("TargetName", t.iqn))
            for host, port in self._portal_addresses(conn):
                out.append(("TargetAddress", format_address(host, port,
                                                            self.config.portal_group_tag)))
        return out

    def _portal_addresses(self, conn: Connection) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for host, port in self.bound:
            if ipaddress.ip_address(host).is_unspecified and conn.local is not None:
                host = conn.local[0]
            if (host, port) not in out:
                out.append((host, port))
        return out

    # ---- task management (called on the thread of the connection that got the TMF) --------
    def abort_tasks(self, tasks: list[tuple[Connection, Task]]) -> bool:
        """Abort tasks (no responses for them), waiting for any already running to end.
        False when none of them could be aborted any more."""
        running = []
        any_aborted = False
        for conn, task in tasks:  # mark them all before waiting for any
            state = conn.abort_task(task)
            any_aborted = any_aborted or state != "gone"
            if state == "running":
                running.append((conn, task))
        for conn, task in running:
            conn.wait_task(task)
        return any_aborted

    def abort_lun(self, target: TargetConfig, lun: int, only: Connection | None) -> None:
        victims: list[tuple[Connection, Task]] = []
        with self._lock:
            conns = list(self.connections)
        for conn in conns:
            if only is not None and conn is not only:
                continue
            s = conn.session
            if s is None or s.target is not target:
                continue
            with conn.lock:
                victims.extend((conn, t) for t in conn.tasks.values() if t.lun == lun)
        self.abort_tasks(victims)

    def reset_device(self, target: TargetConfig, lun: int, kind: ResetKind,
                     nexus: Nexus) -> None:
        worker = self.workers.get((target.iqn, lun))
        if worker is not None:
            with worker.lock:
                worker.device.reset(kind, nexus)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)  # a burst of connections waits, not SYN retries
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _wait_closed(conns: list[Connection], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for c in conns:
        c.closed.wait(max(0.0, deadline - time.monotonic()))


def _nexus_lost(worker: LunWorker, nexus: Nexus) -> None:
    try:
        with worker.lock:
            worker.device.nexus_lost(nexus)
    except Exception:
        log.exception("nexus_lost failed for %s", nexus.initiator)
