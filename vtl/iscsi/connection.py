"""One iSCSI connection: login and the full feature phase (RFC 7143), on a thread of its own.

The login phase is served from the target's event loop (a few small PDUs; a connection that
never finishes logging in costs no thread). From the full feature phase on, the connection
runs on a thread of its own that owns the socket in blocking mode: it reads a
PDU (the header into a small buffer, a data segment straight into its destination, e.g. the
task's write buffer), handles it and writes the answer with one ``sendmsg`` of the header and
slices of the device's buffer. No event loop sits in the data path: measured on this project's
benchmark, the asyncio callbacks and the loop -> LUN-thread hand-off cost more than half of a
64 KiB READ (bench/README.md), while a blocking ``recv_into``/``sendmsg`` pair is two system
calls and no thread wake-up.

The class is put together from one module per job; this one keeps the connection's life
(thread, teardown), dispatch, login, NOP, Text, task management and logout:

* ``framing``        - PDUs on the socket: headers, data segments, digests, ``sendmsg``.
* ``stream_paths``   - READ(6)/WRITE(6) answered straight from the 48-byte header.
* ``data_out``       - immediate data, Data-Out, R2T: a write's buffer filled in order.
* ``scsi_commands``  - a SCSI Command to the device (inline or on the LUN's worker).
* ``responses``      - SCSI Response / Data-In / Reject, and ending a task.
* ``lun_worker``     - one device's lock and thread; ``services`` - what the connection
  needs from the target (so connection and target do not import each other).

Locks: ``LunWorker.lock`` (one device, one command at a time) is taken before
``Connection.lock`` (the task table, abort/commit decisions) and before ``_tx_lock`` (the write
side of the socket and StatSN numbering, reentrant); never the other way round.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from vtl.iscsi import pdu
from vtl.iscsi.data_out import DataOutReceiver
from vtl.iscsi.framing import (
    LOGIN_MAX_DSL,
    MAX_HEADER,
    ConnectionGone,
    PduFraming,
    ProtocolError,
)
from vtl.iscsi.login import (
    LoginFailed,
    LoginHandler,
    LoginStatus,
    encode_keys,
    parse_keys,
)
from vtl.iscsi.pdu import ALL_ONES, BHS_LEN, Header, Op, RejectReason, TmfFunction, TmfResponse
from vtl.iscsi.responses import ResponseSender
from vtl.iscsi.scsi_commands import ScsiCommandRunner
from vtl.iscsi.session import Session, TaskState
from vtl.iscsi.stream_paths import StreamLun, StreamPaths
from vtl.iscsi.task import Task
from vtl.scsi.base import ResetKind

if TYPE_CHECKING:
    from vtl.iscsi.lun_worker import LunWorker
    from vtl.iscsi.services import TargetServices

log = logging.getLogger("vtl.iscsi")

POLL = 0.002  # seconds between checks while waiting for a running task to end
_EMPTY = memoryview(b"")


def _login_dsl(buf: bytearray) -> int:
    """A login PDU's data segment with its padding, from its header in ``buf`` (no AHS or
    digests before the login ends; a segment beyond LOGIN_MAX_DSL is a protocol error)."""
    dsl = int.from_bytes(buf[5:8], "big")
    if buf[4] or dsl > LOGIN_MAX_DSL:
        raise ProtocolError("login PDU with an AHS or too much data")
    return dsl + pdu.pad_len(dsl)


class Connection(PduFraming, StreamPaths, DataOutReceiver, ScsiCommandRunner, ResponseSender):
    """One TCP connection from login to close, served by its own thread."""

    def __init__(self, server: TargetServices, sock: socket.socket,
                 portal: tuple[str, int] | None = None) -> None:
        self.server = server
        self.portal = portal  # the listening address it came in on (the per-portal cap)
        self.initiator = ""  # set once admitted (the per-initiator cap)
        self.sock = sock
        sock.setblocking(True)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            peer = sock.getpeername()
            self.peer = f"{peer[0]}:{peer[1]}"
        except OSError:
            self.peer = "?"
        try:
            local = sock.getsockname()
            self.local: tuple[str, int] | None = (local[0], local[1])
        except OSError:
            self.local = None
        self.lock = threading.Lock()
        self._tx_lock = threading.RLock()
        self._tx_cond = threading.Condition(self._tx_lock)
        self._unsent: deque[bytes] = deque()
        self._unsent_bytes = 0
        self._flushing = False
        self._poller = None
        self._limits = server.config.limits
        self._sock_closed = False
        # receive state
        self._hbuf = memoryview(bytearray(MAX_HEADER))
        self._bhs_view = self._hbuf[:BHS_LEN]
        self._spin_next = False  # see PduFraming._recv_pdu and recv_spin.py
        self._spin_skip = 0
        self._tbuf = memoryview(bytearray(8))  # padding + data digest
        self._data_task: Task | None = None
        self._pre_buffer: bytearray | None = None  # see DataOutReceiver._write_buffer
        self._hd = False
        self._dd = False
        self._max_dsl = LOGIN_MAX_DSL  # MaxRecvDataSegmentLength once logged in
        # protocol state
        self.login = LoginHandler(server.config)
        self.session: Session | None = None
        self.full_feature = False
        self.statsn = 0
        self.commands = 0
        self._login_cmdsn = 0
        self._isid = b""
        self.tasks: dict[int, Task] = {}
        self._posted: dict[int | None, Task] = {}  # the last task handed to each LUN's worker
        self._workers: dict[int | None, LunWorker] = {}  # this session's LUNs
        # Encoded LUN -> the device's streaming fast paths, for devices offering them.
        self._streams: dict[bytes, StreamLun] = {}
        self._buffered = 0  # write-buffer bytes held by this connection's tasks
        self._ttt_map: dict[int, Task] = {}
        self._next_ttt = secrets.randbelow(0x7FFFFFFF)
        self._recently_aborted: deque[int] = deque(maxlen=64)
        self._text_pending: dict[int, bytes] = {}
        self._text_in = bytearray()
        self._closing = False
        self.draining = False
        self.closed = threading.Event()
        self.opened = time.monotonic()
        self._last_rx = self.opened
        # When _serve next asks how much the peer left unread (not before it logs in).
        self._unread_due = float("inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_loop = False  # the login is being served from the event loop
        self._login_buf = bytearray()
        self._ping_ttt: int | None = None
        self._ping_sent = 0.0
        self.thread = threading.Thread(target=self._serve, name=f"iscsi {self.peer}",
                                       daemon=True)

    def start(self) -> None:
        """Serve the connection on its own thread from the start (login included)."""
        self.thread.start()

    # ==== login on the event loop ============================================================
    def start_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve the login phase from ``loop`` (no thread yet), then the connection's own
        thread from the full feature phase on: a connection costs a thread only once it
        has logged in, and a flood of connections left half-logged-in no thread start each
        (the loop waited for those, one at a time, while the accept backlog filled)."""
        self._loop = loop
        self._on_loop = True
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._login_readable)

    def _login_readable(self) -> None:
        """Read what has come of the next login PDU; handle it once whole (on the loop)."""
        buf = self._login_buf
        try:
            have = len(buf)
            need = BHS_LEN - have
            if need <= 0:
                need = BHS_LEN + _login_dsl(buf) - have
            chunk = self.sock.recv(need)
            if not chunk:
                raise ConnectionGone()
            buf += chunk
            self._last_rx = time.monotonic()
            if len(buf) < BHS_LEN or len(buf) < BHS_LEN + _login_dsl(buf):
                return
            raw = bytes(buf[:BHS_LEN])
            dsl = int.from_bytes(raw[5:8], "big")
            data = memoryview(bytes(buf[BHS_LEN:BHS_LEN + dsl]))
            buf.clear()
            self._dispatch(pdu.parse_bhs(raw), data, True)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionGone:
            self._loop_teardown()
            return
        except (OSError, ProtocolError) as exc:
            if not self._closing:
                log.info("%s: closing during login: %s", self.peer, exc)
            self._loop_teardown()
            return
        except Exception:  # a bug must not take the loop down; drop just this connection
            log.exception("%s: internal error during login, closing connection", self.peer)
            self._loop_teardown()
            return
        if self._closing:  # refused, or the answer did not fit
            self._loop_teardown()
        elif self.full_feature:  # the thread takes over, reading the next PDU
            self._loop.remove_reader(self.sock.fileno())
            self.sock.setblocking(True)
            self._on_loop = False
            try:
                self.thread.start()
            except RuntimeError as exc:  # no thread to be had
                log.warning("%s: cannot serve the connection: %s", self.peer, exc)
                self._teardown()

    def _loop_teardown(self) -> None:
        if self._sock_closed:  # once (a reader callback and an abort may both ask)
            return
        try:
            self._loop.remove_reader(self.sock.fileno())
        except (OSError, ValueError):
            pass
        self._teardown()

    # ==== the connection's thread ===========================================================
    def _serve(self) -> None:
        try:
            while not self._closing:
                if self._unsent_bytes:
                    self._await_unsent()
                elif self._last_rx >= self._unread_due:
                    self._await_reader()
                hdr, data, digest_ok = self._recv_pdu()
                if hdr is not None:  # None: answered on the streaming fast path
                    self._dispatch(hdr, data, digest_ok)
        except ConnectionGone:
            pass
        except OSError as exc:
            if not self._closing:
                log.info("%s: connection lost: %s", self.peer, exc)
        except ProtocolError as exc:
            log.info("%s: protocol error, closing: %s", self.peer, exc)
        except Exception:  # a bug must not take the server down; drop just this connection
            log.exception("%s: internal error, closing connection", self.peer)
        finally:
            self._teardown()

    def _teardown(self) -> None:
        self.close()
        with self.lock:
            for task in self.tasks.values():
                task.aborted = True  # a worker still running one sends nothing
            self.tasks.clear()
            self._ttt_map.clear()
        with self._tx_lock:  # no worker is inside sendmsg once we hold this
            self._sock_closed = True
            self.sock.close()
        try:
            self.server.connection_closed(self)
        finally:
            self.closed.set()

    def close(self) -> None:
        """End the connection from any thread (what was sent is still delivered)."""
        self._closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def abort(self) -> None:
        """End the connection from any thread; one still logging in on the event loop is
        torn down there at once, not when its reader next runs."""
        self.close()
        loop = self._loop
        if self._on_loop and loop is not None:
            try:
                loop.call_soon_threadsafe(self._loop_teardown)
            except RuntimeError:  # the loop is closed: nothing serves the connection
                pass

    @property
    def closing(self) -> bool:
        """Is the connection on its way out (it no longer counts against the caps)?"""
        return self._closing

    # ==== dispatch ==========================================================================
    def _dispatch(self, hdr: Header, data: memoryview | None, digest_ok: bool) -> None:
        op = hdr.opcode
        if data is None:
            data = _EMPTY
        if not self.full_feature:
            if op != Op.LOGIN_REQ:
                raise ProtocolError(f"opcode 0x{op:02x} before login completed")
            self._on_login(hdr, data)
            return
        if not digest_ok:
            self._on_data_digest_error(hdr)
            return
        if op == Op.SCSI_CMD:
            self._on_scsi_cmd(hdr, data)
        elif op == Op.DATA_OUT:
            self._on_data_out(hdr)
        elif op == Op.NOP_OUT:
            self._on_nop_out(hdr, data)
        elif op == Op.TMF_REQ:
            self._on_tmf(hdr)
        elif op == Op.TEXT_REQ:
            self._on_text(hdr, data)
        elif op == Op.LOGOUT_REQ:
            self._on_logout(hdr)
        elif op == Op.LOGIN_REQ:
            self._reject(hdr.raw, RejectReason.PROTOCOL_ERROR)
        else:  # SNACK (ERL 0 has none) and opcodes we do not know
            self._reject(hdr.raw, RejectReason.COMMAND_NOT_SUPPORTED)


    # ---- login ---------------------------------------------------------------------------
    def _on_login(self, hdr: Header, data: memoryview) -> None:
        c = pdu.parse_login_request(hdr.raw)
        if not self.login.started:
            self._isid = c.isid
            self.statsn = c.expstatsn
            self._login_cmdsn = c.cmdsn
        try:
            if c.version_min > 0:
                raise LoginFailed(LoginStatus.UNSUPPORTED_VERSION, "unsupported version")
            if c.tsih != 0:
                known = self.server.session_by_tsih(c.tsih)
                raise LoginFailed(
                    LoginStatus.TOO_MANY_CONNECTIONS if known else LoginStatus.SESSION_DOES_NOT_EXIST,
                    "MaxConnections=1: no connections can be added to a session",
                )
            result = self.login.handle(c.flags, data)
            name = self.login.initiator_name
            if name and not self.initiator and not self.server.admit_initiator(self, name):
                raise LoginFailed(LoginStatus.OUT_OF_RESOURCES,
                                  f"too many connections from {name}")
        except LoginFailed as exc:
            log.info("%s: login refused (0x%04x): %s", self.peer, exc.status, exc)
            self._login_response(c, 0, exc.status, b"", tsih=0)
            self._closing = True
            return
        flags = (0x80 if result.transit else 0) | (result.csg << 2) | result.nsg
        tsih = 0
        if result.complete:
            self.session = self.server.open_session(self, self.login, c.isid, c.cmdsn)
            tsih = self.session.tsih
        self._login_response(c, flags, LoginStatus.SUCCESS, encode_keys(result.keys), tsih)
        if result.complete:
            self.full_feature = True
            self._unread_due = self._last_rx
            p = self.login.params
            self._hd, self._dd = p.header_digest, p.data_digest
            self._max_dsl = p.max_recv_dsl
            if self.session.target is not None:
                self.bind_luns(self.session.target, self.session.luns)
            log.info("%s: %s session %s for %s (HeaderDigest=%s DataDigest=%s MRDSL=%d/%d)",
                     self.peer, "discovery" if self.session.discovery else "normal",
                     self.session.tsih, self.login.initiator_name,
                     "CRC32C" if p.header_digest else "None",
                     "CRC32C" if p.data_digest else "None", p.max_recv_dsl, p.max_xmit_dsl)


    def _login_response(self, c: pdu.LoginRequest, flags: int, status: LoginStatus,
                        data: bytes, tsih: int) -> None:
        exp = self._login_cmdsn
        if self.session is not None:
            exp = self.session.exp_cmdsn
        mx = (exp + self.server.config.limits.queue_depth - 1) & ALL_ONES
        with self._tx_lock:
            bhs = pdu.login_response(
                dsl=len(data), flags=flags, isid=c.isid, tsih=tsih, itt=c.itt,
                statsn=self._next_statsn(), expcmdsn=exp, maxcmdsn=mx,
                status_class=int(status) >> 8, status_detail=int(status) & 0xFF,
            )
            self._send(bhs, data)


    # ---- NOP -----------------------------------------------------------------------------
    def _on_nop_out(self, hdr: Header, data: memoryview) -> None:
        session = self.session
        assert session is not None
        ttt = hdr.words[0]
        if hdr.itt == ALL_ONES:
            if ttt != ALL_ONES and ttt == self._ping_ttt:
                self._ping_ttt = None
            if not hdr.immediate:
                session.accept_cmdsn(hdr.cmdsn, False)
            return
        if ttt != ALL_ONES:
            self._reject(hdr.raw, RejectReason.PROTOCOL_ERROR)
            return
        if not session.accept_cmdsn(hdr.cmdsn, hdr.immediate):
            return
        with self._tx_lock:
            bhs = pdu.encode_layout(
                Op.NOP_IN, dsl=len(data), flags=0x80, lun=hdr.lun, itt=hdr.itt, ttt=ALL_ONES,
                statsn=self._next_statsn(), expcmdsn=session.exp_cmdsn,
                maxcmdsn=session.max_cmdsn,
            )
            self._send(bhs, bytes(data))

    def watchdog_check(self, now: float) -> str | None:
        """Called about once a second by the server: 'ping' when the initiator has been
        silent for the NOP interval (then call :meth:`ping`), 'drop' when it did not answer
        the ping (or never finished logging in) in time."""
        if self._closing:
            return None
        lim = self.server.config.limits
        if not self.full_feature:
            return "drop" if now - self.opened > lim.login_timeout else None
        if lim.nop_interval <= 0 or self.session is None:
            return None
        if self._ping_ttt is not None:
            if self._last_rx > self._ping_sent:
                self._ping_ttt = None  # traffic proves the initiator is alive
            elif now - self._ping_sent > lim.nop_timeout:
                return "drop"
            return None
        if now - self._last_rx >= lim.nop_interval:
            self._ping_ttt = self._new_ttt()
            self._ping_sent = now
            return "ping"
        return None

    def ping(self) -> None:
        """Send the NOP-In ping :meth:`watchdog_check` asked for (blocks while a response to
        a slow reader is being written: call it off the event loop)."""
        s = self.session
        ttt = self._ping_ttt
        if s is None or ttt is None:
            return
        with self._tx_lock:
            bhs = pdu.encode_layout(
                Op.NOP_IN, flags=0x80, itt=ALL_ONES, ttt=ttt, statsn=self.statsn,
                expcmdsn=s.exp_cmdsn, maxcmdsn=s.max_cmdsn,
            )
            self._send(bhs)

    # ---- text (SendTargets) ----------------------------------------------------------------
    def _on_text(self, hdr: Header, data: memoryview) -> None:
        session = self.session
        assert session is not None
        if not session.accept_cmdsn(hdr.cmdsn, hdr.immediate):
            return
        ttt = hdr.words[0]
        cont = bool(hdr.flags & 0x40)
        if ttt != ALL_ONES:
            rest = self._text_pending.pop(ttt, None)
            if rest is None:
                self._reject(hdr.raw, RejectReason.INVALID_PDU_FIELD)
                return
            self._send_text(hdr, rest)
            return
        self._text_in += data
        if len(self._text_in) > LOGIN_MAX_DSL:
            self._text_in.clear()
            self._reject(hdr.raw, RejectReason.PROTOCOL_ERROR)
            return
        if cont:
            # Acknowledge the partial request; the initiator sends the rest.
            self._send_text(hdr, b"", partial_request=True)
            return
        try:
            pairs = parse_keys(self._text_in)
        except (ValueError, UnicodeDecodeError):
            self._text_in.clear()
            self._reject(hdr.raw, RejectReason.PROTOCOL_ERROR)
            return
        self._text_in.clear()
        answer: list[tuple[str, str]] = []
        for key, value in pairs:
            if key == "SendTargets":
                answer.extend(self.server.send_targets(self, value))
            else:
                answer.append((key, "NotUnderstood"))
        self._send_text(hdr, encode_keys(answer))

    def _send_text(self, hdr: Header, text: bytes, partial_request: bool = False) -> None:
        session = self.session
        assert session is not None
        limit = session.params.max_xmit_dsl
        chunk, rest = text[:limit], text[limit:]
        flags = 0x80
        ttt = ALL_ONES
        if rest or partial_request:
            flags = 0x40 if rest else 0
            ttt = self._new_ttt()
            if rest:
                self._text_pending[ttt] = rest
        with self._tx_lock:
            bhs = pdu.encode_layout(
                Op.TEXT_RSP, dsl=len(chunk), flags=flags, lun=hdr.lun, itt=hdr.itt, ttt=ttt,
                statsn=self._next_statsn(), expcmdsn=session.exp_cmdsn,
                maxcmdsn=session.max_cmdsn,
            )
            self._send(bhs, chunk)

    # ---- task management ------------------------------------------------------------------
    def _on_tmf(self, hdr: Header) -> None:
        """Task management, answered in order on this thread: commands the initiator sends
        after the TMF only run once it is done (waiting for a running command included)."""
        session = self.session
        assert session is not None
        if not session.accept_cmdsn(hdr.cmdsn, hdr.immediate):
            return
        function = hdr.flags & 0x7F
        response = TmfResponse.FUNCTION_COMPLETE
        target = session.target
        lun = pdu.decode_lun(hdr.lun)
        server = self.server
        try:
            if target is None:
                response = TmfResponse.AUTHORIZATION_FAILED
            elif function == TmfFunction.ABORT_TASK:
                task = self.tasks.get(hdr.words[0])
                if task is None or not server.abort_tasks([(self, task)]):
                    response = TmfResponse.TASK_DOES_NOT_EXIST
            elif function in (TmfFunction.ABORT_TASK_SET, TmfFunction.CLEAR_TASK_SET,
                              TmfFunction.LOGICAL_UNIT_RESET):
                if lun is None or lun not in session.luns:
                    response = TmfResponse.LUN_DOES_NOT_EXIST
                else:
                    only_me = function == TmfFunction.ABORT_TASK_SET
                    server.abort_lun(target, lun, self if only_me else None)
                    kind = (ResetKind.LUN_RESET if function == TmfFunction.LOGICAL_UNIT_RESET
                            else ResetKind.ABORT_TASK_SET)
                    server.reset_device(target, lun, kind, session.nexus)
            elif function == TmfFunction.TARGET_WARM_RESET:
                for n in sorted(session.luns):
                    server.abort_lun(target, n, None)
                    server.reset_device(target, n, ResetKind.TARGET_RESET, session.nexus)
            elif function == TmfFunction.TASK_REASSIGN:
                response = TmfResponse.REASSIGNMENT_NOT_SUPPORTED
            else:
                response = TmfResponse.NOT_SUPPORTED
        except Exception:
            log.exception("%s: task management function %d failed", self.peer, function)
            response = TmfResponse.REJECTED
        with self._tx_lock:
            bhs = pdu.encode_layout(
                Op.TMF_RSP, flags=0x80, response=int(response), itt=hdr.itt,
                statsn=self._next_statsn(), expcmdsn=session.exp_cmdsn,
                maxcmdsn=session.max_cmdsn,
            )
            self._send(bhs)

    def abort_task(self, task: Task) -> str:
        """Abort one of this connection's tasks (any thread): no response will be sent.

        'gone': too late (its response is on the way, or it ended); 'running': the device
        has it (it cannot be interrupted; wait with :meth:`wait_task`); 'aborted': it never
        reaches the device (still receiving data, or queued behind another command)."""
        with self.lock:
            if task.committed or task.state is TaskState.DONE:
                return "gone"
            task.aborted = True
            self._recently_aborted.append(task.itt)
            if task.started:
                return "running"
            self._finish(task)
            return "aborted"

    def wait_task(self, task: Task) -> None:
        """Wait until a running task has ended (its result is dropped, as it was aborted)."""
        while task.state is not TaskState.DONE and not self.closed.is_set():
            time.sleep(POLL)

    # ---- logout --------------------------------------------------------------------------
    def _on_logout(self, hdr: Header) -> None:
        session = self.session
        assert session is not None
        if not session.accept_cmdsn(hdr.cmdsn, hdr.immediate):
            return
        reason = hdr.flags & 0x7F
        response = 0
        if reason == 2:
            response = 2  # connection recovery is not supported at ERL 0
        else:
            self.wait_idle(timeout=None)
        with self._tx_lock:
            bhs = pdu.encode_layout(
                Op.LOGOUT_RSP, flags=0x80, response=response, itt=hdr.itt,
                statsn=self._next_statsn(), expcmdsn=session.exp_cmdsn,
                maxcmdsn=session.max_cmdsn, time2wait=0, time2retain=0,
            )
            self._send(bhs)
        if response == 0:
            self._closing = True

    def request_logout(self, seconds: int) -> bool:
        """Ask the initiator to log out (Async Message, AsyncEvent 1) - used at shutdown so
        initiators leave cleanly instead of seeing the connection drop. False if there is
        no full-feature session to ask. May block behind a slow reader: not on the loop."""
        s = self.session
        if not self.full_feature or s is None or self._closing:
            return False
        with self._tx_lock:
            bhs = pdu.encode_layout(
                Op.ASYNC, flags=0x80, itt=ALL_ONES, statsn=self._next_statsn(),
                expcmdsn=s.exp_cmdsn, maxcmdsn=s.max_cmdsn, event=1, param3=seconds,
            )
            self._send(bhs)
        return True

    def busy(self) -> bool:
        """Is a command of this connection queued or running on a device?"""
        with self.lock:
            return any(t.state is TaskState.QUEUED for t in self.tasks.values())

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no submitted command is still running (in-flight work finishes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.busy():
            if self.closed.is_set():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL)
        return True

