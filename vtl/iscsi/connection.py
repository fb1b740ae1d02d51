"""One iSCSI connection: PDU framing, login and the full feature phase (RFC 7143).

Each connection runs on a thread of its own that owns the socket in blocking mode: it reads a
PDU (the header into a small buffer, a data segment straight into its destination, e.g. the
task's write buffer), handles it and writes the answer with one ``sendmsg`` of the header and
slices of the device's buffer. No event loop sits in the data path: measured on this project's
benchmark, the asyncio callbacks and the loop -> LUN-thread hand-off cost more than half of a
64 KiB READ (bench/README.md), while a blocking ``recv_into``/``sendmsg`` pair is two system
calls and no thread wake-up.

Commands a device declares bounded (``inline_opcodes``: READ/WRITE of one block, TEST UNIT
READY, ...) run right here under the LUN's lock; everything else (LOAD, WRITE FILEMARKS with
its fsync, changer moves, anything a model may take seconds over) goes to the LUN's worker
thread, so this thread keeps answering NOP-Outs and task management meanwhile. A command that
follows a queued one to the same LUN also goes to the worker, which keeps the order. After an
inline command the device gets an ``idle()`` call before the next read: a tape drive reads
ahead there, while the initiator is still busy with the data it just got.

The two commands a tape stream is made of take a shorter way still when the device offers
it (``stream_read``/``stream_write``): decided from the 48-byte header before any Header
object or task exists, answered with one struct pack, and handed back to the general path,
unchanged, whenever anything about the command is unusual.

Locks: ``LunWorker.lock`` (one device, one command at a time) is taken before
``Connection.lock`` (the task table, abort/commit decisions) and before ``_tx_lock`` (the write
side of the socket and StatSN numbering, reentrant); never the other way round.
"""

from __future__ import annotations

import logging
import secrets
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

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
    DonatedBuffer,
    ResetKind,
    ScsiResult,
    SenseKey,
    Status,
    fixed_sense,
)

if TYPE_CHECKING:
    from vtl.iscsi.config import TargetConfig
    from vtl.iscsi.target import IscsiTarget, LunWorker

log = logging.getLogger("vtl.iscsi")

LOGIN_MAX_DSL = 64 * 1024
MAX_HEADER = BHS_LEN + 255 * 4 + 4  # BHS + the largest AHS + a header digest
POLL = 0.002  # seconds between checks while waiting for a running task to end


class ProtocolError(Exception):
    """The byte stream cannot be trusted any more: the connection is closed."""


class ConnectionGone(Exception):  # noqa: N818 - a state, not an error
    """The initiator closed the connection, or the server shut it down."""


class _StreamLun(NamedTuple):
    """A LUN whose device offers streaming fast paths (vtl/scsi/base.py)."""

    lun: int
    lun_raw: bytes
    worker: LunWorker
    read: Callable | None
    write: Callable | None


@dataclass(eq=False, slots=True)
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
    # ttt -> [next, end, datasn]; created for writes only (most commands never need one)
    r2ts: dict[int, list[int]] | None = None
    unsolicited_datasn: int = 0
    aborted: bool = False
    # The response is being sent (decided under Connection.lock): an ABORT TASK that comes
    # later answers "task does not exist", as for a completed task.
    committed: bool = False
    started: bool = False  # the device has the command (set under the LUN's lock)
    failed_sense: bytes | None = None  # e.g. a data digest error on Data-Out
    write_residual: tuple[int, int] | None = None  # (flag, count) when EDTL != CDB length
    buffered: int = 0  # bytes of write buffer counted against the connection's limit


class Connection:
    """One TCP connection from login to close, served by its own thread."""

    def __init__(self, server: IscsiTarget, sock: socket.socket) -> None:
        self.server = server
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
        self._sock_closed = False
        # receive state
        self._hbuf = memoryview(bytearray(MAX_HEADER))
        self._bhs_view = self._hbuf[:BHS_LEN]
        self._tbuf = memoryview(bytearray(8))  # padding + data digest
        self._data_task: Task | None = None
        self._hd = False
        self._dd = False
        self._max_dsl = LOGIN_MAX_DSL  # MaxRecvDataSegmentLength once logged in
        # protocol state
        self.login = LoginHandler(server.config)
        self.session: Session | None = None
        self.full_feature = False
        self.statsn = 0
        self._login_cmdsn = 0
        self._isid = b""
        self.tasks: dict[int, Task] = {}
        self._posted: dict[int | None, Task] = {}  # the last task handed to each LUN's worker
        self._workers: dict[int | None, LunWorker] = {}  # this session's LUNs
        # Encoded LUN -> the device's streaming fast paths, for devices offering them.
        self._streams: dict[bytes, _StreamLun] = {}
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
        self._ping_ttt: int | None = None
        self._ping_sent = 0.0
        self.thread = threading.Thread(target=self._serve, name=f"iscsi {self.peer}",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    # ==== the connection's thread ===========================================================
    def _serve(self) -> None:
        try:
            while not self._closing:
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

    abort = close

    # ==== receiving =========================================================================
    def _recv_exact(self, view: memoryview) -> None:
        recv_into = self.sock.recv_into
        n = len(view)
        got = recv_into(view)
        while got < n:
            if not got:
                raise ConnectionGone()
            self._last_rx = time.monotonic()
            more = recv_into(view[got:])
            if not more:
                raise ConnectionGone()
            got += more

    def _recv_pdu(self) -> tuple[Header | None, memoryview | None, bool]:
        """The next PDU: (header, data segment, data digest good); header None when the PDU
        was a streaming READ or WRITE answered already (``_stream_read``/``_stream_write``)."""
        hb = self._hbuf
        got = self.sock.recv_into(self._bhs_view)
        if got != BHS_LEN:  # rare: the header arrived in pieces (or the peer left)
            if not got:
                raise ConnectionGone()
            self._recv_exact(hb[got:BHS_LEN])
        self._last_rx = time.monotonic()
        if hb[0] == 0x01 and self._streams:  # a SCSI command: a streaming READ or WRITE?
            op = hb[32]
            if op == 0x08 and self._stream_read():
                return None, None, True
            if op == 0x0A:
                streamed = self._stream_write()
                if streamed is not None:
                    return streamed
        hlen = BHS_LEN + hb[4] * 4 + (4 if self._hd else 0)
        if hlen > BHS_LEN:
            self._recv_exact(hb[BHS_LEN:hlen])
        raw = bytes(hb[:hlen])
        bhs = raw[:BHS_LEN] if hlen > BHS_LEN else raw
        hdr = pdu.parse_bhs(bhs)
        ahs_end = BHS_LEN + hdr.total_ahs_len * 4
        if ahs_end > BHS_LEN:
            hdr.ahs = raw[BHS_LEN:ahs_end]
        if self._hd and pdu.digest_bytes(raw[:ahs_end]) != raw[ahs_end:ahs_end + 4]:
            # The length fields cannot be trusted: at ERL 0 the connection must go.
            raise ProtocolError("header digest error")
        limit = self._max_dsl
        dsl = hdr.dsl
        if dsl > limit:
            self._reject(bhs, RejectReason.PROTOCOL_ERROR)
            raise ProtocolError(f"data segment of {dsl} bytes exceeds {limit}")
        self._data_task = None
        if not dsl:
            return hdr, None, True
        dest = self._data_destination(hdr)
        self._recv_exact(dest)
        trailer = pdu.pad_len(dsl) + (4 if self._dd else 0)
        if not trailer:
            return hdr, dest, True
        tb = self._tbuf[:trailer]
        self._recv_exact(tb)
        if not self._dd:
            return hdr, dest, True
        return hdr, dest, pdu.digest_bytes(dest, tb[:-4]) == bytes(tb[-4:])

    def _stream_read(self) -> bool:
        """Answer the READ(6) whose header is in ``_hbuf`` straight from the header, when it is
        the plain streaming case: in-order CmdSN, no data segment, AHS or header digest, a
        free ITT, nothing queued for the LUN, one Data-In PDU, and the device's
        ``stream_read`` takes it. That is the commonest command of a restore, and skipping
        the header object, the task and the generic result halves its cost. False: nothing
        happened, and the PDU goes the general way."""
        hb = self._hbuf
        if hb[1] & 0xE0 != 0xC0 or hb[4] or hb[5] or hb[6] or hb[7] or self._hd:
            return False
        found = self._stream_for(hb)
        if found is None:
            return False
        stream, session, itt, edtl = found
        p = session.params
        if stream.read is None or edtl > p.max_xmit_dsl or edtl > p.max_burst:
            return False
        with stream.worker.lock:
            try:
                data = stream.read(session.nexus, hb[32:48], edtl)
            except Exception:  # a model bug: the general path answers (HARDWARE ERROR)
                log.exception("stream_read raised on CDB %s", hb[32:38].hex())
                return False
            if data is None:
                return False
            session.exp_cmdsn = (session.exp_cmdsn + 1) & ALL_ONES
            self._send_data_in_good(itt, stream.lun_raw, data, edtl)
            self._after_command(stream.worker)
        return True

    def _stream_write(self) -> tuple[Header | None, memoryview | None, bool] | None:
        """The WRITE(6) whose header is in ``_hbuf``, in the streaming case: the whole block
        as immediate data in this PDU, no digests, in-order CmdSN, a free ITT, nothing
        queued for the LUN. Its data segment is read into a DonatedBuffer and offered to the
        device's ``stream_write``; taken, the answer is GOOD at once and the result is
        (None, None, True). Declined, the PDU goes the general way with its data already
        in: (header, data, True). None: not the case, nothing read past the header."""
        hb = self._hbuf
        if hb[1] & 0xE0 != 0xA0 or hb[4] or self._hd or self._dd:
            return None
        found = self._stream_for(hb)
        if found is None:
            return None
        stream, session, itt, edtl = found
        dsl = int.from_bytes(hb[5:8], "big")
        p = session.params
        lim = self.server.config.limits
        if (stream.write is None or dsl != edtl or not dsl or not p.immediate_data
                or dsl > p.first_burst or dsl > self._max_dsl or edtl > lim.max_transfer
                or self._buffered + edtl > lim.max_buffered):
            return None
        view = memoryview(self._write_buffer(edtl))
        self._recv_exact(view)
        pad = -dsl & 3
        if pad:
            self._recv_exact(self._tbuf[:pad])
        with stream.worker.lock:
            try:
                taken = stream.write(session.nexus, hb[32:48], view)
            except Exception:  # a model bug: the general path answers (HARDWARE ERROR)
                log.exception("stream_write raised on CDB %s", hb[32:38].hex())
                taken = False
            if taken:
                session.exp_cmdsn = (session.exp_cmdsn + 1) & ALL_ONES
                self._send_rsp_good(itt, 0)
                self._after_command(stream.worker)
                return None, None, True
        return pdu.parse_bhs(hb[:BHS_LEN].tobytes()), view, True

    def _write_buffer(self, edtl: int) -> DonatedBuffer:
        """A write command's whole buffer, for its immediate data to land in; kept as the
        pre-task whose buffer ``_start_write`` adopts if the command goes the general way."""
        buf = DonatedBuffer(edtl)
        self._data_task = Task(0, b"", None, b"", edtl, False, True, buffer=buf)
        return buf

    def _stream_for(self, hb: memoryview) -> tuple[_StreamLun, Session, int, int] | None:
        """(the LUN's fast paths, the session, ITT, EDTL) when the SCSI Command in ``hb``
        may take a fast path now: a normal session that is not closing, the next CmdSN in
        order, a free ITT, and no command of the LUN still queued (order is kept)."""
        stream = self._streams.get(hb[8:16].tobytes())
        session = self.session
        if (stream is None or session is None or self.draining or self._closing
                or not session.queue_depth):
            return None
        itt, edtl, cmdsn = _ITT_EDTL_CMDSN.unpack_from(hb, 16)
        if cmdsn != session.exp_cmdsn or itt == ALL_ONES or itt in self.tasks:
            return None
        prev = self._posted.get(stream.lun)
        if prev is not None and prev.state is not TaskState.DONE:
            return None
        return stream, session, itt, edtl

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
                return memoryview(self._write_buffer(edtl))[:hdr.dsl]
        return memoryview(bytearray(hdr.dsl))

    # ==== sending ===========================================================================
    def _frames(self, bhs: bytes, data: bytes | bytearray | memoryview, out: list) -> None:
        """Append one PDU's wire pieces to ``out`` (header digest, padding, data digest)."""
        n = len(data)
        out.append(bhs + pdu.digest_bytes(bhs) if self._hd else bhs)
        if n:
            out.append(data)
            pad = b"\0" * pdu.pad_len(n)
            if self._dd:
                out.append(pad + pdu.digest_bytes(data, pad))
            elif pad:
                out.append(pad)

    def _send(self, bhs: bytes, data: bytes | bytearray | memoryview = b"") -> None:
        frames: list = []
        self._frames(bhs, data, frames)
        with self._tx_lock:
            self._sendall(frames)

    def _sendall(self, frames: list, total: int = -1) -> None:
        """Write every frame (blocking: a slow reader holds back the sender, not memory).
        A broken connection is closed; the receiving thread notices by itself. ``total``:
        the frames' length when the caller knows it (spares counting in the common case)."""
        if self._sock_closed:
            return
        sendmsg = self.sock.sendmsg
        try:
            while frames:
                batch = frames[:512] if len(frames) > 512 else frames  # below IOV_MAX
                sent = sendmsg(batch)
                if sent == total:
                    return
                total = -1
                done = 0
                for f in batch:
                    size = len(f)
                    if sent < size:
                        break
                    sent -= size
                    done += 1
                if done == len(frames):
                    return
                if not (done or sent):
                    raise ConnectionGone()
                frames = frames[done:]
                if sent:  # a signal interrupted the send part-way through a frame
                    frames[0] = memoryview(frames[0])[sent:]
        except (OSError, ConnectionGone) as exc:
            if not self._closing:
                log.info("%s: cannot send: %s", self.peer, exc)
            self.close()

    def _next_statsn(self) -> int:
        with self._tx_lock:  # the connection's thread and LUN workers both number responses
            sn = self.statsn
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
            p = self.login.params
            self._hd, self._dd = p.header_digest, p.data_digest
            self._max_dsl = p.max_recv_dsl
            if self.session.target is not None:
                self.bind_luns(self.session.target)
            log.info("%s: %s session %s for %s (HeaderDigest=%s DataDigest=%s MRDSL=%d/%d)",
                     self.peer, "discovery" if self.session.discovery else "normal",
                     self.session.tsih, self.login.initiator_name,
                     "CRC32C" if p.header_digest else "None",
                     "CRC32C" if p.data_digest else "None", p.max_recv_dsl, p.max_xmit_dsl)

    def bind_luns(self, target: TargetConfig) -> None:
        """Look up the session's LUN workers (and their fast paths) once, at login."""
        self._workers = {lun: w for lun in target.devices.luns
                         if (w := self.server.worker(target, lun))}
        self._streams = {}
        for lun, w in self._workers.items():
            read = getattr(w.device, "stream_read", None)
            write = getattr(w.device, "stream_write", None)
            if lun is not None and (read is not None or write is not None):
                raw = pdu.encode_lun(lun)
                self._streams[raw] = _StreamLun(lun, raw, w, read, write)

    def _login_response(self, c, flags: int, status: LoginStatus, data: bytes, tsih: int) -> None:
        exp = self._login_cmdsn
        if self.session is not None:
            exp = self.session.exp_cmdsn
        mx = (exp + self.server.config.limits.queue_depth - 1) & ALL_ONES
        with self._tx_lock:
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
        if not session.accept_cmdsn(hdr.words[1], hdr.immediate):
            log.debug("%s: CmdSN %d outside window, ignored", self.peer, hdr.words[1])
            return
        itt = hdr.itt
        if itt in self.tasks or itt == ALL_ONES:
            self._reject(hdr.raw, RejectReason.TASK_IN_PROGRESS
                         if itt in self.tasks else RejectReason.INVALID_PDU_FIELD)
            return
        if self.draining:
            # Shutting down: finish what is in flight, ask for new commands to be retried.
            self._answer(Task(itt, hdr.lun, None, b"", 0, False, False), ScsiResult(Status.BUSY))
            return
        raw = hdr.raw
        cdb = raw[32:_CDB_END[raw[32] >> 5]]  # the CDB's own length, by its group code
        if hdr.ahs:
            cdb = self._extended_cdb(hdr, raw[32:48])
            if cdb is None:
                self._reject(raw, RejectReason.INVALID_PDU_FIELD)
                return
        flags = hdr.flags
        write = bool(flags & 0x20)
        edtl = hdr.words[0]
        lun_raw = hdr.lun
        lun = lun_raw[1] if lun_raw == _LUN_FAST[lun_raw[1]] else pdu.decode_lun(lun_raw)
        task = Task(itt, lun_raw, lun, cdb, edtl, bool(flags & 0x40), write)
        dsl = hdr.dsl
        if dsl:
            p = session.params
            if not write or not p.immediate_data or dsl > p.first_burst or dsl > edtl:
                self._reject(raw, RejectReason.PROTOCOL_ERROR)
                return
        if write and edtl:
            self._start_write(task, hdr)
            return
        with self.lock:
            self.tasks[itt] = task
        self._execute(task)

    def _start_write(self, task: Task, hdr: Header) -> None:
        """A write command: take its immediate data, solicit the rest, run it when complete."""
        session = self.session
        assert session is not None
        p = session.params
        lim = self.server.config.limits
        edtl = task.edtl
        if edtl > lim.max_transfer:
            # Too big to buffer: refuse the command (any Data-Out for it gets rejected).
            self._answer(task, CheckCondition(SenseKey.ILLEGAL_REQUEST, 0x55, 0x03).result())
            return
        if self._buffered + edtl > lim.max_buffered:
            # Too much write data already waiting on this connection: ask the initiator
            # to retry later instead of holding unbounded memory.
            self._answer(task, ScsiResult(Status.TASK_SET_FULL))
            return
        pre = self._data_task
        if pre is not None and pre.buffer is not None and len(pre.buffer) == edtl:
            task.buffer = pre.buffer
        else:
            task.buffer = DonatedBuffer(edtl)
        dsl = hdr.dsl
        task.r2ts = {}
        task.received = dsl
        task.unsolicited_next = dsl
        task.unsolicited_end = min(p.first_burst, edtl)
        task.buffered = edtl
        with self.lock:
            self._buffered += edtl
            self.tasks[task.itt] = task
        if p.initial_r2t or hdr.final or dsl >= task.unsolicited_end:
            self._end_unsolicited(task, dsl)
        self._maybe_execute(task)

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

    def _on_data_out(self, hdr: Header) -> None:
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
                    self._answer(task, CheckCondition(SenseKey.ABORTED_COMMAND, 0x4B, 0x00)
                                 .result())
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
        if task.state is TaskState.RECEIVING and task.received >= task.edtl and not task.aborted:
            if task.failed_sense is not None:
                self._answer(task, ScsiResult(Status.CHECK_CONDITION, b"", task.failed_sense))
                return
            self._execute(task)

    # ---- running commands ----------------------------------------------------------------
    def _execute(self, task: Task) -> None:
        """Run the command here (bounded commands) or on its LUN's worker thread."""
        task.state = TaskState.QUEUED
        session = self.session
        assert session is not None and session.target is not None
        cdb = task.cdb
        if cdb[0] == 0xA0:  # REPORT LUNS belongs to the target, not to a device
            self._answer(task, report_luns(sorted(session.target.devices.luns), cdb))
            return
        worker = self._workers.get(task.lun)
        if worker is None:
            self._answer(task, missing_lun_result(cdb))
            return
        if cdb[0] in getattr(worker.device, "inline_opcodes", _NO_OPCODES):
            prev = self._posted.get(task.lun)
            if prev is None or prev.state is TaskState.DONE:
                self._run(worker, task)
                return
        self._posted[task.lun] = task
        try:
            worker.post(self._run, worker, task)
        except RuntimeError:  # the server is shutting down
            self._answer(task, ScsiResult(Status.BUSY))

    def _run(self, worker: LunWorker, task: Task) -> None:
        """Execute on the device and send the response (this thread or the LUN's worker)."""
        with worker.lock:
            task.started = True
            if task.aborted or self._closing:
                self._answer(task, None)
                return
            result = self._call_device(worker, task)
            self._answer(task, result)
            self._after_command(worker)

    @staticmethod
    def _after_command(worker: LunWorker) -> None:
        """The device's ``idle()`` hook, right after a response went out (LUN lock held)."""
        idle = worker.idle
        if idle is not None:
            try:
                idle()
            except Exception:
                log.exception("device idle() failed")

    def _call_device(self, worker: LunWorker, task: Task) -> ScsiResult:
        session = self.session
        assert session is not None
        try:
            if not task.write:
                return worker.device.execute(session.nexus, task.cdb, None)
            data_out = memoryview(task.buffer) if task.buffer is not None else None
            result = self._check_write_length(worker, task)
            if result is None:
                if task.write_residual and data_out is not None:
                    data_out = data_out[: task.edtl - task.write_residual[1]]
                result = worker.device.execute(session.nexus, task.cdb, data_out)
        except Exception:  # the contract says never, but a bug must not kill the thread
            log.exception("device raised on CDB %s", task.cdb.hex())
            result = ScsiResult(Status.CHECK_CONDITION, b"",
                                fixed_sense(SenseKey.HARDWARE_ERROR, 0x44, 0x00))
        return result

    @staticmethod
    def _check_write_length(worker: LunWorker, task: Task) -> ScsiResult | None:
        """Compare a write's Expected Data Transfer Length with what the CDB asks for.

        Only possible when the model offers the optional ``data_out_length(cdb) -> int | None``
        (asked under the LUN's lock, since e.g. a tape's fixed block size is device state).
        EDTL larger than the CDB's length: the command runs on the first bytes and the
        response says UNDERFLOW. Smaller: nothing is written (a tape must never get a torn
        block) and the answer is CHECK CONDITION, INVALID FIELD IN INFORMATION UNIT, with
        OVERFLOW (the FCP-4 rule iSCSI targets follow).
        """
        hook = worker.data_out_length
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

    def _answer(self, task: Task, result: ScsiResult | None) -> None:
        """End a task: send its response (unless it was aborted or ``result`` is None).

        The task leaves the table before the response goes out, so an initiator that reuses
        the ITT at once finds it free, and an ABORT TASK that comes later finds nothing."""
        with self.lock:
            send = result is not None and not task.aborted and not self._closing
            task.committed = send
            self._finish(task)
        if send:
            self._send_result(task, result)

    def _finish(self, task: Task) -> None:
        """Drop a task from the table (call with ``self.lock`` held; idempotent)."""
        task.state = TaskState.DONE
        if task.buffered:
            self._buffered -= task.buffered
            task.buffered = 0
        if self.tasks.get(task.itt) is task:
            del self.tasks[task.itt]
        if task.r2ts:
            # A copy: a task management function on another connection's thread may end a
            # task while this connection's thread is still taking its Data-Out.
            for ttt in list(task.r2ts):
                self._ttt_map.pop(ttt, None)

    def _send_data_in_good(self, itt: int, lun_raw: bytes, data: bytes | memoryview, n: int
                           ) -> None:
        """A READ's ``n`` bytes in one Data-In PDU with GOOD status in it (no digests)."""
        session = self.session
        assert session is not None
        pad = -n & 3
        with self._tx_lock:
            sn = self.statsn
            self.statsn = (sn + 1) & ALL_ONES
            exp = session.exp_cmdsn
            bhs = pdu.data_in_good(n, lun_raw, itt, sn, exp,
                                   (exp + session.queue_depth - 1) & ALL_ONES)
            self._sendall([bhs, data, b"\0" * pad] if pad else [bhs, data], 48 + n + pad)

    def _send_rsp_good(self, itt: int, r2tsn: int) -> None:
        """SCSI Response GOOD without data, sense or residual (no digests)."""
        session = self.session
        assert session is not None
        with self._tx_lock:
            sn = self.statsn
            self.statsn = (sn + 1) & ALL_ONES
            exp = session.exp_cmdsn
            bhs = pdu.scsi_rsp_good(itt, sn, exp, (exp + session.queue_depth - 1) & ALL_ONES,
                                    r2tsn)
            self._sendall([bhs], 48)

    def _send_result(self, task: Task, result: ScsiResult) -> None:
        """Data-In PDUs (status in the last one when it can be) or a SCSI Response."""
        session = self.session
        assert session is not None
        p = session.params
        data = result.data
        if type(data) is memoryview and (data.ndim != 1 or data.itemsize != 1):
            data = data.cast("B")
        n = len(data)
        status = int(result.status)
        sense = result.sense
        if not (status or sense or self._hd or self._dd):
            # The streaming cases, one PDU each: a READ whose data fits one Data-In PDU
            # (status in it), and a command without data (a WRITE, say) answered GOOD.
            if task.read and 0 < n == task.edtl and n <= p.max_xmit_dsl and n <= p.max_burst:
                self._send_data_in_good(task.itt, task.lun_raw, data, n)
                return
            if not n and not task.write_residual and not (task.read and task.edtl):
                self._send_rsp_good(task.itt, task.r2tsn)
                return
        if type(data) is not memoryview:
            data = memoryview(data)
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
        frames: list = []
        with self._tx_lock:
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
                self._frames(bhs, data[offset:offset + chunk], frames)
                datasn += 1
                offset += chunk
            if not status_in_data:
                payload = b""
                if sense:
                    payload = len(sense).to_bytes(2, "big") + bytes(sense)
                bhs = pdu.scsi_rsp_bhs(
                    status=status, itt=task.itt, statsn=self._next_statsn(),
                    expcmdsn=session.exp_cmdsn, maxcmdsn=session.max_cmdsn,
                    expdatasn=datasn + task.r2tsn,  # Data-In and R2T PDUs sent for the task
                    dsl=len(payload), residual_flags=rflags, residual=residual,
                )
                self._frames(bhs, payload, frames)
            self._sendall(frames)

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
                if lun is None or lun not in target.devices.luns:
                    response = TmfResponse.LUN_DOES_NOT_EXIST
                else:
                    only_me = function == TmfFunction.ABORT_TASK_SET
                    server.abort_lun(target, lun, self if only_me else None)
                    kind = (ResetKind.LUN_RESET if function == TmfFunction.LOGICAL_UNIT_RESET
                            else ResetKind.ABORT_TASK_SET)
                    server.reset_device(target, lun, kind, session.nexus)
            elif function == TmfFunction.TARGET_WARM_RESET:
                for n in sorted(target.devices.luns):
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


_NO_OPCODES: frozenset[int] = frozenset()
# Where a CDB ends in the BHS, by opcode group (SPC-4 4.2.5.1): 6, 10, 10, variable, 16, 12
# bytes; groups 3, 6 and 7 (variable length, vendor specific) keep all 16.
_CDB_END = (38, 42, 42, 48, 48, 44, 48, 48)
_EMPTY = memoryview(b"")

# The 8-byte LUN field of LUNs 0..255 in peripheral addressing: a fast path for decode_lun.
_LUN_FAST = [pdu.encode_lun(n) for n in range(256)]
_ITT_EDTL_CMDSN = struct.Struct(">III")  # SCSI Command BHS bytes 16..27


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
