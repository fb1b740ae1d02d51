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

Every LUN has a worker thread (shared by all sessions) so commands to one device run in order
and the blocking model code stays off the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import queue
import secrets
import socket
import threading
from collections.abc import Callable
from typing import Any

from vtl.iscsi.config import ServerConfig, TargetConfig
from vtl.iscsi.connection import Connection, Task
from vtl.iscsi.login import LoginHandler
from vtl.iscsi.session import Session
from vtl.scsi.base import Nexus, ResetKind, ScsiDevice

log = logging.getLogger("vtl.iscsi")


class LunWorker:
    """One device and the single thread that runs its commands, in arrival order.

    A bare thread and a SimpleQueue rather than a ThreadPoolExecutor: the per-command path
    (``post``) allocates no Future and takes no executor locks; ``submit`` (resets, nexus
    loss) returns a Future for the rare callers that wait.
    """

    _STOP = object()

    def __init__(self, name: str, device: ScsiDevice) -> None:
        self.device = device
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        # (connection, lock) of the last response handed to the loop; see
        # Connection._run_on_worker
        self.in_flight: tuple[Connection, threading.Lock] | None = None
        self._thread = threading.Thread(target=self._run, name=f"lun-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # keep the LUN alive whatever one job does
                log.exception("LUN worker job failed")

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` on this LUN's thread (RuntimeError once shut down)."""
        if self._closed:
            raise RuntimeError("LUN worker is shut down")
        self._queue.put((fn, args))

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def job() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # handed to whoever waits on the future
                fut.set_exception(exc)

        self.post(job)
        return fut

    def shutdown(self) -> None:
        """Run what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(self._STOP)
        self._thread.join()


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
        self._servers: list[asyncio.base_events.Server] = []
        self.workers: dict[tuple[str, int], LunWorker] = {}
        for t in config.targets:
            for lun, dev in t.devices.luns.items():
                self.workers[(t.iqn, lun)] = LunWorker(f"{lun}", dev)
        self.bound: list[tuple[str, int]] = []

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for host, port in self.config.portals:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server = await loop.create_server(
                lambda: Connection(self), host, port, family=family, reuse_address=True
            )
            self._servers.append(server)
            for sock in server.sockets:
                addr = sock.getsockname()
                self.bound.append((addr[0], addr[1]))

    async def stop(self, grace: float = 60.0, logout_wait: float = 2.0) -> None:
        """Stop listening, let in-flight commands finish, ask initiators to log out (give
        them ``logout_wait`` seconds), then close every connection that is left."""
        for server in self._servers:
            server.close()
        conns = list(self.connections)
        for c in conns:
            c.draining = True
        if conns:
            await asyncio.gather(*(c.wait_idle(grace) for c in conns))
        asked = [c for c in conns if c.request_logout(max(1, int(logout_wait)))]
        if asked and logout_wait > 0:
            await asyncio.wait([asyncio.ensure_future(c.closed.wait()) for c in asked],
                               timeout=logout_wait)
        for c in conns:
            c.close()
        if conns:
            await asyncio.wait([asyncio.ensure_future(c.closed.wait()) for c in conns], timeout=5)
        for c in list(self.connections):
            c.abort()
        for server in self._servers:
            await server.wait_closed()
        # Let queued nexus_lost calls run before the threads go away (waiting off the loop:
        # a worker may still need one loop iteration to notice its connection closed).
        for w in self.workers.values():
            await asyncio.to_thread(w.shutdown)

    # ---- lookups -------------------------------------------------------------------------
    def worker(self, target: TargetConfig, lun: int | None) -> LunWorker | None:
        if lun is None:
            return None
        return self.workers.get((target.iqn, lun))

    def session_by_tsih(self, tsih: int) -> Session | None:
        return self.sessions.get(tsih)

    # ---- sessions ------------------------------------------------------------------------
    def open_session(self, conn: Connection, login: LoginHandler, isid: bytes,
                     cmdsn: int) -> Session:
        tsih = 0
        while tsih == 0 or tsih in self.sessions:
            tsih = secrets.randbelow(0xFFFF) + 1
        session = Session(
            tsih=tsih, isid=isid, initiator_name=login.initiator_name, target=login.target,
            params=login.params, exp_cmdsn=cmdsn, queue_depth=self.config.limits.queue_depth,
        )
        self.sessions[tsih] = session
        if login.target is not None:
            key = (login.initiator_name, isid, login.target.iqn)
            old = self._by_nexus.get(key)
            if old is not None and old is not conn:
                # Session reinstatement (RFC 7143 6.3.5): the old session is closed first.
                log.info("reinstating session of %s", login.initiator_name)
                self._cleanup(old)
                old.abort()
            self._by_nexus[key] = conn
        return session

    def connection_closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self._cleanup(conn)

    def _cleanup(self, conn: Connection) -> None:
        session = conn.session
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
                try:
                    worker.post(_nexus_lost, worker.device, session.nexus)
                except RuntimeError:  # worker already shut down
                    _nexus_lost(worker.device, session.nexus)

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

    # ---- task management -----------------------------------------------------------------
    async def abort_tasks(self, tasks: list[tuple[Connection, Task]]) -> None:
        """Abort tasks (no responses for them), waiting for any already running to end."""
        running = []
        for conn, task in tasks:  # mark them all before yielding to the loop
            fut = conn.abort_task(task)
            if fut is not None:
                running.append((conn, task, fut))
        for conn, task, finished in running:
            await conn.wait_finished(task, finished)
            conn._forget(task)

    async def abort_lun(self, target: TargetConfig, lun: int, only: Connection | None) -> None:
        victims: list[tuple[Connection, Task]] = []
        for conn in list(self.connections):
            if only is not None and conn is not only:
                continue
            s = conn.session
            if s is None or s.target is not target:
                continue
            victims.extend((conn, t) for t in list(conn.tasks.values()) if t.lun == lun)
        await self.abort_tasks(victims)

    async def reset_device(self, target: TargetConfig, lun: int, kind: ResetKind,
                           nexus: Nexus) -> None:
        worker = self.workers.get((target.iqn, lun))
        if worker is not None:
            await asyncio.wrap_future(worker.submit(worker.device.reset, kind, nexus))


def _nexus_lost(device: ScsiDevice, nexus: Nexus) -> None:
    try:
        device.nexus_lost(nexus)
    except Exception:
        log.exception("nexus_lost failed for %s", nexus.initiator)
