"""One iSCSI connection: PDU framing, login, and the full feature phase (RFC 7143).

Framing uses :class:`asyncio.BufferedProtocol` so the bytes of a Data-Out (or immediate data)
are received straight into the task's preallocated buffer: headers and small segments land in
a staging buffer, and once a large data segment's destination is known the socket reads into
that destination directly (no ``readexactly`` copies). Data-In goes out as slices of whatever
buffer the device model returned.

Device models are blocking, so each command runs on its LUN's worker thread (one per LUN, shared
by all sessions so commands to one LUN stay in arrival order). Before it hands a response to
the loop, the worker waits until the PREVIOUS response of its LUN has been handed to the
transport, so a model may alternate two buffers and a slow reader pushes back on the device
instead of filling memory (one futex wake-up less per command than waiting for its own).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import select
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vtl.iscsi import pdu
from vtl.iscsi.login import (
    LoginFailed,
    LoginHandler,
    LoginStatus,
    encode_keys,
    parse_keys,
)
from vtl.iscsi.pdu import ALL_ONES, BHS_LEN, Header, Op, RejectReason, TmfFunction, TmfResponse
from vtl.iscsi.session import Session, TaskState
from vtl.scsi.base import (
    CheckCondition,
    ResetKind,
    ScsiResult,
    SenseKey,
    Status,
    fixed_sense,
)

if TYPE_CHECKING:
    from vtl.iscsi.target import IscsiTarget, LunWorker

log = logging.getLogger("vtl.iscsi")

STAGE_SIZE = 64 * 1024
DIRECT_MIN = 8 * 1024  # read a data segment straight into its destination above this size
LOGIN_MAX_DSL = 64 * 1024
_SCSI_CMD_WORDS = struct.Struct(">IIII")  # EDTL CmdSN ExpStatSN (bytes 20..31) + CDB start


class ProtocolError(Exception):
    """The byte stream cannot be trusted any more: the connection is closed."""


@dataclass(eq=False)
class Task:
    itt: int
    lun_raw: bytes
    lun: int | None
    cdb: bytes
    edtl: int
    read: bool
    write: bool
    state: TaskState = TaskState.RECEIVING
    buffer: bytearray | None = None
    received: int = 0
    unsolicited_end: int = 0  # offset where unsolicited data ends
    unsolicited_next: int = 0  # next expected unsolicited offset
    unsolicited_done: bool = False
    next_r2t_offset: int = 0
    r2tsn: int = 0
    r2ts: dict[int, list[int]] = field(default_factory=dict)  # ttt -> [next, end, datasn]
    unsolicited_datasn: int = 0
    overflow: int = 0
    aborted: bool = False
    # A LUN worker has committed to sending the response itself (under _tx_lock): an ABORT
    # TASK that comes later must answer "task does not exist", as for a completed task.
    committed: bool = False
    failed_sense: bytes | None = None  # e.g. a data digest error on Data-Out
    write_residual: tuple[int, int] | None = None  # (flag, count) when EDTL != CDB length
    buffered: int = 0  # bytes of write buffer counted against the connection's limit
    started: bool = False  # set by the LUN thread when it begins the command
    finished: asyncio.Event | None = None  # created by an abort that must wait for the end


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server: IscsiTarget) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.local: tuple[str, int] | None = None
        # receive state
        self._stage = bytearray(STAGE_SIZE)
        self._stage_mv = memoryview(self._stage)
        self._start = 0
        self._end = 0
        self._direct: memoryview | None = None
        self._direct_pos = 0
        self._hdr: Header | None = None
        self._hdr_len = 0
        self._dest: memoryview | None = None
        self._dest_pos = 0
        self._trailer = 0
        self._data_task: Task | None = None
        self._hd = False
        self._dd = False
        # protocol state
        self.login = LoginHandler(server.config)
        self.session: Session | None = None
        self.full_feature = False
        self.statsn = 0
        self._login_cmdsn = 0
        self._login_itt = 0
        self._isid = b""
        self.tasks: dict[int, Task] = {}
        self._buffered = 0  # write-buffer bytes held by this connection's tasks
        self._ttt_map: dict[int, Task] = {}
        self._next_ttt = secrets.randbelow(0x7FFFFFFF)
        self._recently_aborted: deque[int] = deque(maxlen=64)
        self._text_pending: dict[int, bytes] = {}
        self._text_in = bytearray()
        self._closing = False
        self.closed = asyncio.Event()
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._write_ok = asyncio.Event()
        self._write_ok.set()
        self._last_rx = time.monotonic()
        self._ping_ttt: int | None = None
        self._ping_sent = 0.0
        self._timer: asyncio.Task | None = None
        self._bg: set[asyncio.Task] = set()
        # Direct sends from LUN workers (see _send_direct): the workers write a response to a
        # dup of the socket themselves when nothing else is queued for it, so a command costs
        # one thread crossing (loop -> worker) instead of two. _tx_lock orders the socket
        # between them and the loop; loop writes that arrive while a worker is sending wait
        # in _tx_later. Tasks a worker finished wait in _done until the loop sweeps them.
        self._tx_lock = threading.Lock()
        self._tx_busy = False
        self._tx_later: list[bytes] = []
        self._tx_sock: socket.socket | None = None
        self._close_after_flush = False
        self._done: deque[Task] = deque()
        self._sweep_wanted = 0

    # ==== asyncio protocol ==================================================================
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = transport.get_extra_info("sockname")
        self.local = (sock[0], sock[1]) if sock else None
        self.server.connections.add(self)
        self._timer = self.loop.create_task(self._watchdog())

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        with self._tx_lock:
            sock, self._tx_sock = self._tx_sock, None
            busy = self._tx_busy
        if sock is not None and not busy:
            sock.close()  # else the sending worker closes it when it is done
        self._write_ok.set()
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self.tasks.values()):
            task.aborted = True
            if task.finished is not None:
                task.finished.set()
        self.tasks.clear()
        self._ttt_map.clear()
        self._idle.set()
        self.server.connection_closed(self)
        self.closed.set()

    def pause_writing(self) -> None:
        self._write_ok.clear()

    def resume_writing(self) -> None:
        self._write_ok.set()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._direct is not None:
            return self._direct[self._direct_pos:]
        if self._end == STAGE_SIZE:
            self._compact()
        return self._stage_mv[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        self._last_rx = time.monotonic()
        try:
            if self._direct is not None:
                self._direct_pos += nbytes
                if self._direct_pos < len(self._direct):
                    return
                self._direct = None
                self._dest_pos = len(self._dest) if self._dest is not None else 0
            else:
                self._end += nbytes
            self._drain()
        except ProtocolError as exc:
            log.info("%s: protocol error, closing: %s", self.peer, exc)
            self.close()
        except Exception:  # a bug must not take the server down; drop just this connection
            log.exception("%s: internal error, closing connection", self.peer)
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    # ==== framing ===========================================================================
    def _compact(self) -> None:
        n = self._end - self._start
        if n and self._start:
            self._stage[:n] = self._stage_mv[self._start:self._end]
        self._start, self._end = 0, n

    def _drain(self) -> None:
        """Consume whatever the staging buffer holds, PDU by PDU."""
        while not (self._closing or self._close_after_flush):
            avail = self._end - self._start
            if self._hdr is None:
                if avail < BHS_LEN:
                    break
                if self._hdr_len == 0:
                    s = self._start
                    ahs = self._stage[s + 4]
                    self._hdr_len = BHS_LEN + ahs * 4 + (4 if self._hd else 0)
                    if self._hdr_len > STAGE_SIZE // 2:
                        raise ProtocolError("header too long")
                if avail < self._hdr_len:
                    if self._start + self._hdr_len > STAGE_SIZE:
                        self._compact()
                    break
                self._take_header()
                continue
            if self._dest is not None and self._dest_pos < len(self._dest):
                need = len(self._dest) - self._dest_pos
                n = min(need, avail)
                if n:
                    s = self._start
                    self._dest[self._dest_pos:self._dest_pos + n] = self._stage_mv[s:s + n]
                    self._dest_pos += n
                    self._start += n
                if self._dest_pos < len(self._dest):
                    self._start = self._end = 0
                    if need - n >= DIRECT_MIN:
                        self._direct = self._dest[self._dest_pos:]
                        self._direct_pos = 0
                    break
                continue
            if avail < self._trailer:
                if self._start + self._trailer > STAGE_SIZE:
                    self._compact()
                break
            s = self._start
            trailer = bytes(self._stage_mv[s:s + self._trailer])
            self._start += self._trailer
            self._finish_pdu(trailer)
        if self._start == self._end:
            self._start = self._end = 0

    def _take_header(self) -> None:
        s = self._start
        raw = bytes(self._stage_mv[s:s + self._hdr_len])
        self._start += self._hdr_len
        self._hdr_len = 0
        bhs = raw[:BHS_LEN]
        hdr = pdu.parse_bhs(bhs)
        ahs_end = BHS_LEN + hdr.total_ahs_len * 4
        hdr.ahs = raw[BHS_LEN:ahs_end]
        if self._hd:
            if pdu.digest_bytes(raw[:ahs_end]) != raw[ahs_end:ahs_end + 4]:
                # The length fields cannot be trusted: at ERL 0 the connection must go.
                raise ProtocolError("header digest error")
        limit = self.login.params.max_recv_dsl if self.full_feature else LOGIN_MAX_DSL
        if hdr.dsl > limit:
            self._reject(bhs, RejectReason.PROTOCOL_ERROR)
            raise ProtocolError(f"data segment of {hdr.dsl} bytes exceeds {limit}")
        self._hdr = hdr
        self._data_task = None
        self._dest = self._data_destination(hdr) if hdr.dsl else None
        self._dest_pos = 0
        self._trailer = pdu.pad_len(hdr.dsl) + (4 if (self._dd and hdr.dsl) else 0)

    def _data_destination(self, hdr: Header) -> memoryview:
        """Where this PDU's data segment goes: a task buffer when possible, else a new one."""
        op = hdr.opcode
        if self.full_feature and op == Op.DATA_OUT:
            task = self.tasks.get(hdr.itt)
            if task is not None and self._data_out_fits(task, hdr):
                self._data_task = task
                assert task.buffer is not None
                offset = hdr.words[5]
                return memoryview(task.buffer)[offset:offset + hdr.dsl]
        elif self.full_feature and op == Op.SCSI_CMD and hdr.flags & 0x20:
            edtl = hdr.words[0]
            lim = self.server.config.limits
            if (0 < hdr.dsl <= edtl <= lim.max_transfer
                    and self._buffered + edtl <= lim.max_buffered):
                buf = bytearray(edtl)
                self._data_task = Task(0, b"", None, b"", edtl, False, True, buffer=buf)
                return memoryview(buf)[:hdr.dsl]
        return memoryview(bytearray(hdr.dsl))

    def _finish_pdu(self, trailer: bytes) -> None:
        hdr = self._hdr
        assert hdr is not None
        dest = self._dest
        self._hdr = None
        self._dest = None
        data = dest if dest is not None else memoryview(b"")
        digest_ok = True
        if self._dd and hdr.dsl:
            digest_ok = pdu.digest_bytes(data, trailer[:-4]) == trailer[-4:]
        self._dispatch(hdr, data, digest_ok)

    # ==== sending ===========================================================================
    def _send(self, bhs: bytes, data: bytes | bytearray | memoryview = b"") -> None:
        if self._closing or self.transport is None:
            return
        t = self.transport
        n = len(data)
        pad = b"\0" * pdu.pad_len(n)
        head = bhs
        if self._hd:
            head = bhs + pdu.digest_bytes(bhs)
        tail = pad
        if self._dd and n:
            tail = pad + pdu.digest_bytes(data, pad)
        # Small PDUs go out as one write (one syscall). Large data segments are written
        # separately so the device's buffer goes to the socket as is: on Python 3.11
        # transport.writelines() joins its arguments, a copy of every Data-In payload.
        with self._tx_lock:
            if self._tx_busy or self._tx_later:
                # A LUN worker is writing to the socket: queue behind it (a copy, since the
                # device may reuse its buffer before the worker is done).
                self._tx_later.append(b"".join((head, data, tail)))
                return
            if n < 16384:
                t.write(b"".join((head, data, tail)) if n else head)
            else:
                t.write(head)
                t.write(data)
                if tail:
                    t.write(tail)

    def _frames(self, bhs: bytes, data: bytes | bytearray | memoryview, out: list) -> None:
        """Append one PDU's wire pieces to ``out`` (for a worker's sendmsg)."""
        n = len(data)
        out.append(bhs + pdu.digest_bytes(bhs) if self._hd else bhs)
        if n:
            out.append(data)
            pad = b"\0" * pdu.pad_len(n)
            if self._dd:
                out.append(pad + pdu.digest_bytes(data, pad))
            elif pad:
                out.append(pad)

    def _flush_later(self) -> None:
        """On the loop: write what queued up while a worker was sending."""
        with self._tx_lock:
            if self._tx_busy:
                return  # the worker schedules another flush when it is done
            later, self._tx_later = self._tx_later, []
            t = self.transport
            if t is not None and not self._closing:
                for part in later:
                    t.write(part)
        if self._close_after_flush:
            self._close_after_flush = False
            self.close()

    def _send_direct(self, task: Task, result: ScsiResult) -> bool:
        """On a LUN worker: send the response on the socket without the loop, when no
        other write is queued or in progress. False: the caller hands it to the loop."""
        t = self.transport
        with self._tx_lock:
            sock = self._tx_sock
            if (sock is None or t is None or self._tx_busy or self._tx_later or self._closing
                    or task.aborted or t.get_write_buffer_size()):
                return False
            self._tx_busy = True
            task.committed = True
        sent = False
        try:
            try:
                frames: list = []
                self._send_result(task, result, frames)
            except Exception:
                log.exception("%s: cannot build the response", self.peer)
                return False
            # Queued for the loop's sweep before the initiator can see the response, so a
            # reused ITT in the next command finds the task gone.
            self._done.append(task)
            sent = True
            if self._sweep_wanted:
                self.loop.call_soon_threadsafe(self._sweep)
            self._sendall(sock, frames)
        except RuntimeError:  # loop closed
            pass
        finally:
            with self._tx_lock:
                self._tx_busy = False
                flush = bool(self._tx_later) or self._close_after_flush
                dead = self._tx_sock is None
            if dead:
                sock.close()
            if flush:
                try:
                    self.loop.call_soon_threadsafe(self._flush_later)
                except RuntimeError:
                    pass
        return sent

    def _sendall(self, sock: socket.socket, frames: list) -> None:
        """Write all frames to the (non-blocking) socket, waiting while it is full; give
        up when the connection closes or breaks (the loop notices that by itself)."""
        bufs = [memoryview(f).cast("B") if isinstance(f, memoryview) else f for f in frames]
        poller = None
        while bufs:
            try:
                n = sock.sendmsg(bufs[:512])  # below IOV_MAX
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                return
            while n and bufs:
                size = len(bufs[0])
                if n >= size:
                    n -= size
                    bufs.pop(0)
                else:
                    bufs[0] = memoryview(bufs[0])[n:]
                    n = 0
            if bufs:
                if poller is None:
                    poller = select.poll()
                    poller.register(sock.fileno(), select.POLLOUT)
                while not poller.poll(200):
                    if self._closing:
                        return

    def _sweep(self) -> None:
        """On the loop: finish the tasks whose responses LUN workers sent themselves."""
        done = self._done
        while done:
            self._task_done(done.popleft())

    async def wait_finished(self, task: Task, finished: asyncio.Event) -> None:
        """Wait for a running task's end (also one a worker finished by itself)."""
        self._sweep_wanted += 1
        try:
            self._sweep()
            await finished.wait()
        finally:
            self._sweep_wanted -= 1

    def _next_statsn(self, advance: bool = True) -> int:
        with self._tx_lock:  # the loop and a LUN worker may both number responses
            sn = self.statsn
            if advance:
                self.statsn = (sn + 1) & ALL_ONES
            return sn

    def _window(self) -> tuple[int, int]:
        if self.session is None:
            return self._login_cmdsn, self._login_cmdsn
        return self.session.exp_cmdsn, self.session.max_cmdsn

    def _reject(self, header: bytes | bytearray | memoryview, reason: RejectReason) -> None:
        exp, mx = self._window()
        bhs = pdu.encode_layout(
            Op.REJECT, dsl=BHS_LEN, flags=0x80, reason=int(reason), itt=ALL_ONES,
            statsn=self.statsn, expcmdsn=exp, maxcmdsn=mx,
        )
        self._send(bhs, bytes(header[:BHS_LEN]))

    def close(self) -> None:
        if self.transport is not None and not self._closing:
            with self._tx_lock:
                pending = self._tx_busy or bool(self._tx_later)
                if pending:
                    self._close_after_flush = True  # after what a worker is still sending
            if pending:
                return
            self._closing = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self._closing = True
            self.transport.abort()

    # ==== dispatch ==========================================================================
    def _dispatch(self, hdr: Header, data: memoryview, digest_ok: bool) -> None:
        if self._done:
            self._sweep()
        op = hdr.opcode
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
            self._on_data_out(hdr, data)
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
        elif op == Op.SNACK:
            self._reject(hdr.raw, RejectReason.COMMAND_NOT_SUPPORTED)  # ERL 0: no SNACK
        else:
            self._reject(hdr.raw, RejectReason.COMMAND_NOT_SUPPORTED)

    def _on_data_digest_error(self, hdr: Header) -> None:
        """RFC 7143 7.8: discard the PDU and reject it; a Data-Out's task ends in error."""
        self._reject(hdr.raw, RejectReason.DATA_DIGEST_ERROR)
        task = self._data_task if hdr.opcode == Op.DATA_OUT else None
        if task is not None and self.tasks.get(task.itt) is task:
            task.failed_sense = fixed_sense(SenseKey.ABORTED_COMMAND, 0x47, 0x01)
            self._account_data_out(task, hdr)

    # ---- login ---------------------------------------------------------------------------
    def _on_login(self, hdr: Header, data: memoryview) -> None:
        c = pdu.decode_layout(hdr.raw)
        if not self.login.started:
            self._isid = c.isid
            self.statsn = c.expstatsn
            self._login_cmdsn = c.cmdsn
        self._login_itt = c.itt
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
        except LoginFailed as exc:
            log.info("%s: login refused (0x%04x): %s", self.peer, exc.status, exc)
            self._login_response(c, 0, exc.status, b"", tsih=0)
            self.close()
            return
        flags = (0x80 if result.transit else 0) | (result.csg << 2) | result.nsg
        tsih = 0
        if result.complete:
            self.session = self.server.open_session(self, self.login, c.isid, c.cmdsn)
            tsih = self.session.tsih
        self._login_response(c, flags, LoginStatus.SUCCESS, encode_keys(result.keys), tsih)
        if result.complete:
            self.full_feature = True
            sock = self.transport.get_extra_info("socket") if self.transport else None
            if sock is not None and not self.session.discovery:
                # Our own descriptor (never a reused number after the transport closes);
                # it shares the transport's non-blocking mode, which must not be changed.
                self._tx_sock = socket.socket(fileno=os.dup(sock.fileno()))
            p = self.login.params
            self._hd, self._dd = p.header_digest, p.data_digest
            log.info("%s: %s session %s for %s (HeaderDigest=%s DataDigest=%s MRDSL=%d/%d)",
                     self.peer, "discovery" if self.session.discovery else "normal",
                     self.session.tsih, self.login.initiator_name,
                     "CRC32C" if p.header_digest else "None",
                     "CRC32C" if p.data_digest else "None", p.max_recv_dsl, p.max_xmit_dsl)

    def _login_response(self, c, flags: int, status: LoginStatus, data: bytes, tsih: int) -> None:
        exp = self._login_cmdsn
        if self.session is not None:
            exp = self.session.exp_cmdsn
        mx = (exp + self.server.config.limits.queue_depth - 1) & ALL_ONES
        bhs = pdu.encode_layout(
            Op.LOGIN_RSP, dsl=len(data), flags=flags, version_max=0, version_active=0,
            isid=c.isid, tsih=tsih, itt=c.itt, statsn=self._next_statsn(), expcmdsn=exp,
            maxcmdsn=mx, status_class=int(status) >> 8, status_detail=int(status) & 0xFF,
        )
        self._send(bhs, data)

    # ---- SCSI commands -------------------------------------------------------------------
    def _on_scsi_cmd(self, hdr: Header, data: memoryview) -> None:
        session = self.session
        assert session is not None
        if session.discovery:
            self._reject(hdr.raw, RejectReason.PROTOCOL_ERROR)
            return
        if not session.accept_cmdsn(hdr.cmdsn, hdr.immediate):
            log.debug("%s: CmdSN %d outside window, ignored", self.peer, hdr.cmdsn)
            return
        if hdr.itt in self.tasks or hdr.itt == ALL_ONES:
            self._reject(hdr.raw, RejectReason.TASK_IN_PROGRESS
                         if hdr.itt in self.tasks else RejectReason.INVALID_PDU_FIELD)
            return
        if self.draining:
            # Shutting down: finish what is in flight, ask for new commands to be retried.
            task = Task(hdr.itt, hdr.lun, None, b"", 0, False, False)
            self.tasks[task.itt] = task
            self._finish_local(task, ScsiResult(Status.BUSY))
            return
        cdb = bytes(hdr.raw[32:48])
        if hdr.ahs:
            cdb = self._extended_cdb(hdr, cdb)
            if cdb is None:
                self._reject(hdr.raw, RejectReason.INVALID_PDU_FIELD)
                return
        read = bool(hdr.flags & 0x40)
        write = bool(hdr.flags & 0x20)
        edtl = hdr.words[0]
        lun = pdu.decode_lun(hdr.lun)
        task = Task(hdr.itt, hdr.lun, lun, cdb, edtl, read, write)
        p = session.params
        if hdr.dsl and (not write or not p.immediate_data or hdr.dsl > p.first_burst
                        or hdr.dsl > edtl):
            self._reject(hdr.raw, RejectReason.PROTOCOL_ERROR)
            return
        if write and edtl:
            if edtl > self.server.config.limits.max_transfer:
                # Too big to buffer: refuse the command (any Data-Out for it gets rejected).
                self.tasks[task.itt] = task
                self._finish_local(task, CheckCondition(SenseKey.ILLEGAL_REQUEST, 0x55, 0x03)
                                   .result())
                return
            if self._buffered + edtl > self.server.config.limits.max_buffered:
                # Too much write data already waiting on this connection: ask the initiator
                # to retry later instead of holding unbounded memory.
                self.tasks[task.itt] = task
                self._finish_local(task, ScsiResult(Status.TASK_SET_FULL))
                return
            self._buffered += edtl
            task.buffered = edtl
            pre = self._data_task
            if pre is not None and pre.buffer is not None and len(pre.buffer) == edtl:
                task.buffer = pre.buffer
            else:
                task.buffer = bytearray(edtl)
            task.received = hdr.dsl
            task.unsolicited_next = hdr.dsl
            task.unsolicited_end = min(p.first_burst, edtl)
            self.tasks[task.itt] = task
            if p.initial_r2t or hdr.final or hdr.dsl >= task.unsolicited_end:
                self._end_unsolicited(task, hdr.dsl)
            self._maybe_execute(task)
            return
        self.tasks[task.itt] = task
        self._execute(task)

    def _extended_cdb(self, hdr: Header, cdb: bytes) -> bytes | None:
        ahs = hdr.ahs
        pos = 0
        out = cdb
        while pos + 4 <= len(ahs):
            length = int.from_bytes(ahs[pos:pos + 2], "big")
            kind = ahs[pos + 2]
            body = ahs[pos + 4:pos + 3 + length]
            if len(body) != max(length - 1, 0):
                return None
            if kind == pdu.AHS_EXTENDED_CDB:
                out = cdb + bytes(body)
            elif kind != pdu.AHS_BIDI_READ_LENGTH:
                return None
            pos += (3 + length + 3) & ~3
        return out

    def _send_r2ts(self, task: Task) -> None:
        session = self.session
        assert session is not None
        p = session.params
        assert task.buffer is not None
        while task.next_r2t_offset < task.edtl and len(task.r2ts) < p.max_outstanding_r2t:
            offset = task.next_r2t_offset
            length = min(p.max_burst, task.edtl - offset)
            ttt = self._new_ttt()
            task.r2ts[ttt] = [offset, offset + length, 0]
            self._ttt_map[ttt] = task
            task.next_r2t_offset = offset + length
            bhs = pdu.r2t_bhs(
                lun=task.lun_raw, itt=task.itt, ttt=ttt, statsn=self.statsn,
                expcmdsn=session.exp_cmdsn, maxcmdsn=session.max_cmdsn, r2tsn=task.r2tsn,
                offset=offset, length=length,
            )
            task.r2tsn += 1
            self._send(bhs)

    def _new_ttt(self) -> int:
        self._next_ttt = (self._next_ttt + 1) & 0x7FFFFFFF
        return self._next_ttt

    def _data_out_fits(self, task: Task, hdr: Header) -> bool:
        """Is this Data-Out the next piece of its sequence (DataPDUInOrder=Yes)?"""
        if task.state is not TaskState.RECEIVING or task.buffer is None:
            return False
        ttt = hdr.words[0]
        datasn = hdr.words[4]
        offset = hdr.words[5]
        end = offset + hdr.dsl
        if ttt == ALL_ONES:
            return (not task.unsolicited_done and offset == task.unsolicited_next
                    and end <= task.unsolicited_end and datasn == task.unsolicited_datasn)
        r2t = task.r2ts.get(ttt)
        return r2t is not None and offset == r2t[0] and end <= r2t[1] and datasn == r2t[2]

    def _on_data_out(self, hdr: Header, data: memoryview) -> None:
        task = self._data_task
        if task is None:
            task = self.tasks.get(hdr.itt)
            if task is None and hdr.itt in self._recently_aborted:
                return  # data for an aborted task is silently discarded
            if task is None:
                self._reject(hdr.raw, RejectReason.INVALID_PDU_FIELD)
                return
            if hdr.dsl or not self._data_out_fits(task, hdr):
                # Wrong offset or DataSN within a sequence: at ErrorRecoveryLevel 0 the
                # task cannot be recovered. Reject the PDU and end the task with DATA PHASE
                # ERROR; the rest of its data is discarded, the session goes on.
                self._reject(hdr.raw, RejectReason.PROTOCOL_ERROR)
                if task.state is TaskState.RECEIVING:
                    self._recently_aborted.append(task.itt)
                    for ttt in task.r2ts:
                        self._ttt_map.pop(ttt, None)
                    task.r2ts.clear()
                    self._finish_local(task, CheckCondition(
                        SenseKey.ABORTED_COMMAND, 0x4B, 0x00).result())
                return
        self._account_data_out(task, hdr)

    def _account_data_out(self, task: Task, hdr: Header) -> None:
        """Advance the unsolicited burst or the R2T this Data-Out belongs to (already checked
        by ``_data_out_fits``); start the command when all data is in."""
        ttt = hdr.words[0]
        end = hdr.words[5] + hdr.dsl
        if ttt == ALL_ONES:
            task.unsolicited_next = end
            task.unsolicited_datasn += 1
            if hdr.final or end >= task.unsolicited_end:
                self._end_unsolicited(task, end)
        else:
            r2t = task.r2ts[ttt]
            r2t[0] = end
            r2t[2] += 1
            if end == r2t[1]:
                del task.r2ts[ttt]
                self._ttt_map.pop(ttt, None)
                self._send_r2ts(task)
        task.received += hdr.dsl
        self._maybe_execute(task)

    def _end_unsolicited(self, task: Task, end: int) -> None:
        """The unsolicited burst is over: solicit the rest with R2Ts."""
        task.unsolicited_done = True
        task.unsolicited_end = end
        task.next_r2t_offset = end
        self._send_r2ts(task)

    def _maybe_execute(self, task: Task) -> None:
        if task.state is TaskState.RECEIVING and task.received >= task.edtl:
            if task.failed_sense is not None:
                self._finish_local(task, ScsiResult(Status.CHECK_CONDITION, b"",
                                                    task.failed_sense))
                return
            self._execute(task)

    def _execute(self, task: Task) -> None:
        """Hand the command to its LUN worker (or answer here for LUNs that do not exist)."""
        task.state = TaskState.QUEUED
        self._idle.clear()
        session = self.session
        assert session is not None and session.target is not None
        if task.cdb[0] == 0xA0:  # REPORT LUNS belongs to the target, not to a device
            self._finish_local(task, report_luns(sorted(session.target.devices.luns), task.cdb))
            return
        worker = self.server.worker(session.target, task.lun)
        if worker is None:
            self._finish_local(task, missing_lun_result(task.cdb))
            return
        data_out = memoryview(task.buffer) if task.buffer is not None else None
        worker.post(self._run_on_worker, worker, task, data_out)

    def _run_on_worker(self, worker: LunWorker, task: Task, data_out: memoryview | None) -> None:
        """Runs on the LUN's thread: execute, then hand the response to the loop."""
        task.started = True
        if task.aborted or self._closing:
            # Not run. An abort that saw ``started`` waits for _task_done: tell the loop.
            try:
                self.loop.call_soon_threadsafe(self._task_done, task)
            except RuntimeError:  # loop closed
                pass
            return
        session = self.session
        assert session is not None
        try:
            result = self._check_write_length(worker, task, data_out)
            if result is None:
                if task.write_residual and data_out is not None:
                    data_out = data_out[: task.edtl - task.write_residual[1]]
                result = worker.device.execute(session.nexus, task.cdb, data_out)
        except Exception:  # the contract says never, but a bug must not kill the worker
            log.exception("device raised on CDB %s", task.cdb.hex())
            result = ScsiResult(Status.CHECK_CONDITION, b"",
                                fixed_sense(SenseKey.HARDWARE_ERROR, 0x44, 0x00))
        # Wait for the PREVIOUS response of this LUN handed to the loop, not this one: the SSC
        # model's two alternating READ buffers allow exactly one response in flight, and by
        # the time a st-like initiator sends the next command the previous one is long on
        # the socket, so this acquire rarely blocks (one futex wake-up less per command).
        prev = worker.in_flight
        if prev is not None:
            worker.in_flight = None
            owner, lock = prev
            while not lock.acquire(timeout=1.0):
                if self.loop.is_closed() or self._closing or owner._closing:
                    break  # that response will never be sent: do not wait for it
            else:
                lock.release()
        if self._send_direct(task, result):
            return
        # Hand the result to the event loop (a plain lock, not run_coroutine_threadsafe: no
        # Task or future chain per command); the next command waits until it is handed over.
        handed = threading.Lock()
        handed.acquire()
        worker.in_flight = (self, handed)
        try:
            self.loop.call_soon_threadsafe(self._complete_from_worker, task, result, handed)
        except RuntimeError:  # loop closed
            return

    def _complete_from_worker(self, task: Task, result: ScsiResult,
                              handed: threading.Lock) -> None:
        """On the loop: send the response now (unless the task was aborted meanwhile);
        release the worker once the transport can take more, so back-pressure from a slow
        initiator reaches the device."""
        try:
            if not (task.aborted or self._closing):
                self._send_result(task, result)
        except Exception:
            self._task_done(task)
            handed.release()
            raise
        self._task_done(task)
        if self._write_ok.is_set() or self._closing:
            handed.release()
            return
        t = self.loop.create_task(self._release_when_writable(handed))
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def _release_when_writable(self, handed: threading.Lock) -> None:
        try:
            await self._write_ok.wait()
        finally:
            handed.release()

    @staticmethod
    def _check_write_length(worker: LunWorker, task: Task,
                            data_out: memoryview | None) -> ScsiResult | None:
        """Compare a write's Expected Data Transfer Length with what the CDB asks for.

        Only possible when the model offers the optional ``data_out_length(cdb) -> int | None``
        (asked on the LUN thread, since e.g. a tape's fixed block size is device state).
        EDTL larger than the CDB's length: the command runs on the first bytes and the
        response says UNDERFLOW. Smaller: nothing is written (a tape must never get a torn
        block) and the answer is CHECK CONDITION, INVALID FIELD IN INFORMATION UNIT, with
        OVERFLOW (the FCP-4 rule iSCSI targets follow).
        """
        hook = getattr(worker.device, "data_out_length", None)
        if not task.write or hook is None:
            return None
        wanted = hook(task.cdb)
        if wanted is None or wanted == task.edtl:
            return None
        if wanted < task.edtl:
            task.write_residual = (pdu.RESIDUAL_UNDERFLOW, task.edtl - wanted)
            return None
        task.write_residual = (pdu.RESIDUAL_OVERFLOW, wanted - task.edtl)
        return CheckCondition(SenseKey.ILLEGAL_REQUEST, 0x0E, 0x03).result()

    def _finish_local(self, task: Task, result: ScsiResult) -> None:
        task.state = TaskState.QUEUED
        self._idle.clear()
        t = self.loop.create_task(self._complete(task, result))
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def _complete(self, task: Task, result: ScsiResult) -> None:
        """Send Data-In and status for a finished command (on the event loop)."""
        try:
            if task.aborted or self._closing:
                return
            self._send_result(task, result)
            if not self._write_ok.is_set():
                await self._write_ok.wait()
        finally:
            self._task_done(task)

    def _task_done(self, task: Task) -> None:
        task.state = TaskState.DONE
        if task.finished is not None:
            task.finished.set()
        self._buffered -= task.buffered
        task.buffered = 0
        if self.tasks.get(task.itt) is task:
            del self.tasks[task.itt]
        for ttt in task.r2ts:
            self._ttt_map.pop(ttt, None)
        if not any(t.state is TaskState.QUEUED for t in self.tasks.values()):
            self._idle.set()

    def _send_result(self, task: Task, result: ScsiResult, frames: list | None = None) -> None:
        """Send Data-In and status, or (``frames`` given, on a worker) collect the pieces."""
        session = self.session
        assert session is not None
        p = session.params
        data = result.data if isinstance(result.data, memoryview) else memoryview(result.data)
        if data.ndim != 1 or data.itemsize != 1:
            data = data.cast("B")
        n = len(data)
        status = int(result.status)
        sense = result.sense
        rflags = 0
        residual = 0
        if task.read:
            xfer = min(n, task.edtl)
            if n < task.edtl:
                rflags, residual = pdu.RESIDUAL_UNDERFLOW, task.edtl - n
            elif n > task.edtl:
                rflags, residual = pdu.RESIDUAL_OVERFLOW, n - task.edtl
        else:
            xfer = 0
            if task.write_residual:
                rflags, residual = task.write_residual
            elif n:
                rflags, residual = pdu.RESIDUAL_OVERFLOW, n
        status_in_data = xfer > 0 and status == Status.GOOD and not sense
        datasn = 0
        offset = 0
        mrdsl = p.max_xmit_dsl
        burst_left = p.max_burst
        while offset < xfer:
            chunk = min(mrdsl, xfer - offset, burst_left)
            last = offset + chunk == xfer
            burst_left -= chunk
            final = last or burst_left == 0
            if burst_left == 0:
                burst_left = p.max_burst
            with_status = last and status_in_data
            bhs = pdu.data_in_bhs(
                final=final, status=status if with_status else None, lun=task.lun_raw,
                itt=task.itt, statsn=self._next_statsn() if with_status else 0,
                expcmdsn=session.exp_cmdsn, maxcmdsn=session.max_cmdsn, datasn=datasn,
                offset=offset, dsl=chunk, residual_flags=rflags, residual=residual,
            )
            if frames is None:
                self._send(bhs, data[offset:offset + chunk])
            else:
                self._frames(bhs, data[offset:offset + chunk], frames)
            datasn += 1
            offset += chunk
        if status_in_data:
            return
        payload = b""
        if sense:
            payload = len(sense).to_bytes(2, "big") + bytes(sense)
        bhs = pdu.scsi_rsp_bhs(
            status=status, itt=task.itt, statsn=self._next_statsn(),
            expcmdsn=session.exp_cmdsn, maxcmdsn=session.max_cmdsn,
            expdatasn=datasn + task.r2tsn,  # Data-In and R2T PDUs sent for the task
            dsl=len(payload), residual_flags=rflags, residual=residual,
        )
        if frames is None:
            self._send(bhs, payload)
        else:
            self._frames(bhs, payload, frames)

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
        bhs = pdu.encode_layout(
            Op.NOP_IN, dsl=len(data), flags=0x80, lun=hdr.lun, itt=hdr.itt, ttt=ALL_ONES,
            statsn=self._next_statsn(), expcmdsn=session.exp_cmdsn, maxcmdsn=session.max_cmdsn,
        )
        self._send(bhs, bytes(data))

    async def _watchdog(self) -> None:
        """Ping an idle initiator with NOP-In and drop the connection if it stays silent."""
        lim = self.server.config.limits
        started = time.monotonic()
        try:
            while not self._closing:
                await asyncio.sleep(0.25 if lim.nop_interval < 5 else 1.0)
                now = time.monotonic()
                if not self.full_feature:
                    if now - started > lim.login_timeout:
                        log.info("%s: login timed out", self.peer)
                        self.close()
                    continue
                if lim.nop_interval <= 0:
                    continue
                if self._ping_ttt is not None:
                    if self._last_rx > self._ping_sent:
                        self._ping_ttt = None  # traffic proves the initiator is alive
                    elif now - self._ping_sent > lim.nop_timeout:
                        log.info("%s: no answer to NOP-In ping, dropping connection", self.peer)
                        self.abort()
                        return
                    continue
                if now - self._last_rx >= lim.nop_interval and self.session is not None:
                    self._ping_ttt = self._new_ttt()
                    self._ping_sent = now
                    s = self.session
                    bhs = pdu.encode_layout(
                        Op.NOP_IN, flags=0x80, itt=ALL_ONES, ttt=self._ping_ttt,
                        statsn=self.statsn, expcmdsn=s.exp_cmdsn, maxcmdsn=s.max_cmdsn,
                    )
                    self._send(bhs)
        except asyncio.CancelledError:
            pass

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
        bhs = pdu.encode_layout(
            Op.TEXT_RSP, dsl=len(chunk), flags=flags, lun=hdr.lun, itt=hdr.itt, ttt=ttt,
            statsn=self._next_statsn(), expcmdsn=session.exp_cmdsn, maxcmdsn=session.max_cmdsn,
        )
        self._send(bhs, chunk)

    # ---- task management ------------------------------------------------------------------
    def _on_tmf(self, hdr: Header) -> None:
        session = self.session
        assert session is not None
        if not session.accept_cmdsn(hdr.cmdsn, hdr.immediate):
            return
        t = self.loop.create_task(self._tmf(hdr))
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def _tmf(self, hdr: Header) -> None:
        session = self.session
        assert session is not None
        function = hdr.flags & 0x7F
        response = TmfResponse.FUNCTION_COMPLETE
        target = session.target
        lun = pdu.decode_lun(hdr.lun)
        try:
            if target is None:
                response = TmfResponse.AUTHORIZATION_FAILED
            elif function == TmfFunction.ABORT_TASK:
                ref = hdr.words[0]
                self._sweep()
                task = self.tasks.get(ref)
                with self._tx_lock:  # decide against a worker's direct send, atomically
                    gone = task is None or task.state is TaskState.DONE or task.committed
                    if task is not None and not gone:
                        task.aborted = True
                if gone:
                    response = TmfResponse.TASK_DOES_NOT_EXIST
                else:
                    await self.server.abort_tasks([(self, task)])
            elif function in (TmfFunction.ABORT_TASK_SET, TmfFunction.CLEAR_TASK_SET,
                              TmfFunction.LOGICAL_UNIT_RESET):
                if lun is None or lun not in target.devices.luns:
                    response = TmfResponse.LUN_DOES_NOT_EXIST
                else:
                    only_me = function == TmfFunction.ABORT_TASK_SET
                    await self.server.abort_lun(target, lun, self if only_me else None)
                    kind = (ResetKind.LUN_RESET if function == TmfFunction.LOGICAL_UNIT_RESET
                            else ResetKind.ABORT_TASK_SET)
                    await self.server.reset_device(target, lun, kind, session.nexus)
            elif function == TmfFunction.TARGET_WARM_RESET:
                for n in sorted(target.devices.luns):
                    await self.server.abort_lun(target, n, None)
                    await self.server.reset_device(target, n, ResetKind.TARGET_RESET,
                                                   session.nexus)
            elif function == TmfFunction.TASK_REASSIGN:
                response = TmfResponse.REASSIGNMENT_NOT_SUPPORTED
            else:
                response = TmfResponse.NOT_SUPPORTED
        except Exception:
            log.exception("%s: task management function %d failed", self.peer, function)
            response = TmfResponse.REJECTED
        bhs = pdu.encode_layout(
            Op.TMF_RSP, flags=0x80, response=int(response), itt=hdr.itt,
            statsn=self._next_statsn(), expcmdsn=session.exp_cmdsn, maxcmdsn=session.max_cmdsn,
        )
        self._send(bhs)

    def abort_task(self, task: Task) -> asyncio.Event | None:
        """Abort one of this connection's tasks: no response will be sent for it.

        Marks the task at once (so a result arriving on the next loop iteration is dropped)
        and returns an event to await when the command is already running on its LUN thread
        (it cannot be interrupted; its result is discarded when it ends).
        """
        task.aborted = True
        self._recently_aborted.append(task.itt)
        if task.started and task.state is not TaskState.DONE:
            task.finished = task.finished or asyncio.Event()
            return task.finished
        self._forget(task)
        return None

    def _forget(self, task: Task) -> None:
        if self.tasks.get(task.itt) is task:
            self._task_done(task)

    # ---- logout --------------------------------------------------------------------------
    def _on_logout(self, hdr: Header) -> None:
        session = self.session
        assert session is not None
        if not session.accept_cmdsn(hdr.cmdsn, hdr.immediate):
            return
        reason = hdr.flags & 0x7F
        cid = hdr.words[0] >> 16
        t = self.loop.create_task(self._logout(hdr, reason, cid))
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def _logout(self, hdr: Header, reason: int, cid: int) -> None:
        session = self.session
        assert session is not None
        response = 0
        if reason == 2:
            response = 2  # connection recovery is not supported at ERL 0
        else:
            await self.wait_idle(timeout=None)
        bhs = pdu.encode_layout(
            Op.LOGOUT_RSP, flags=0x80, response=response, itt=hdr.itt,
            statsn=self._next_statsn(), expcmdsn=session.exp_cmdsn, maxcmdsn=session.max_cmdsn,
            time2wait=0, time2retain=0,
        )
        self._send(bhs)
        if response == 0:
            self.close()

    def request_logout(self, seconds: int) -> bool:
        """Ask the initiator to log out (Async Message, AsyncEvent 1) - used at shutdown so
        initiators leave cleanly instead of seeing the connection drop. False if there is
        no full-feature session to ask."""
        s = self.session
        if not self.full_feature or s is None or self._closing:
            return False
        bhs = pdu.encode_layout(
            Op.ASYNC, flags=0x80, itt=ALL_ONES, statsn=self._next_statsn(),
            expcmdsn=s.exp_cmdsn, maxcmdsn=s.max_cmdsn, event=1, param3=seconds,
        )
        self._send(bhs)
        return True

    async def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no submitted command is still running (in-flight work finishes)."""
        self._sweep_wanted += 1
        try:
            self._sweep()
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._sweep_wanted -= 1


def report_luns(luns: list[int], cdb: bytes) -> ScsiResult:
    """REPORT LUNS (SPC-4 6.33), answered by the target for every LUN address."""
    if len(cdb) < 12:
        return CheckCondition(SenseKey.ILLEGAL_REQUEST, 0x20, 0x00).result()
    alloc = int.from_bytes(cdb[6:10], "big")
    if alloc < 16:
        return CheckCondition(SenseKey.ILLEGAL_REQUEST, 0x24, 0x00, field_pointer=6).result()
    body = b"".join(pdu.encode_lun(n) for n in luns)
    data = (len(body)).to_bytes(4, "big") + bytes(4) + body
    return ScsiResult(Status.GOOD, data[:alloc])


def missing_lun_result(cdb: bytes) -> ScsiResult:
    """What a LUN that does not exist answers (SPC-4: INQUIRY says 'not present')."""
    op = cdb[0]
    if op == 0x12:  # INQUIRY
        alloc = int.from_bytes(cdb[3:5], "big")
        if cdb[1] & 1:
            return CheckCondition(SenseKey.ILLEGAL_REQUEST, 0x25, 0x00).result()
        data = bytearray(36)
        data[0] = 0x7F  # peripheral qualifier 3, device type 0x1F
        data[2] = 0x06
        data[3] = 0x02
        data[4] = 31
        return ScsiResult(Status.GOOD, bytes(data[:alloc]))
    if op == 0x03:  # REQUEST SENSE
        alloc = cdb[4]
        return ScsiResult(Status.GOOD, fixed_sense(SenseKey.ILLEGAL_REQUEST, 0x25, 0x00)[:alloc])
    return CheckCondition(SenseKey.ILLEGAL_REQUEST, 0x25, 0x00).result()
