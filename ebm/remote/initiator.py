"""An iSCSI initiator (RFC 7143) for the EBM's remote tape path, on ``vtl.iscsi.pdu``.

What it does: one session, one connection, error recovery level 0. Login with CHAP (and
mutual CHAP, RFC 7143 12.1.3), CRC32C header and data digests (RFC 3385), immediate and
unsolicited data as negotiated, R2T-driven Data-Out, ABORT TASK and LOGICAL UNIT RESET, and
answers to the target's NOP-In pings. Commands may come from several threads (the data
mover's writer thread, the changer); a reader thread dispatches every incoming PDU to the
command it belongs to by ITT.

A dropped connection (reset, digest error, the target closing it) ends every command in
flight with ``ConnectionLost``. ``execute`` then logs in again with the same ISID (session
reinstatement: the I_T nexus, and so a persistent reservation, stays ours) and retries a
command that has no effect on the medium when repeated (``IDEMPOTENT``). Any other command
(WRITE, WRITE FILEMARKS, READ, SPACE, MOVE MEDIUM ...) fails with ``PositionUncertain``
after the reconnect: whether it ran is unknown, so the caller asks READ POSITION and decides.

What it must not do: decode SCSI data or sense (``scsi_client`` does), or know about tape.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import socket
import struct
import threading
from dataclasses import dataclass, field

from vtl.iscsi import chap, pdu
from vtl.iscsi.login import encode_keys, parse_keys
from vtl.iscsi.pdu import ALL_ONES, Op, TmfFunction
from vtl.scsi.opcodes import Opcode

log = logging.getLogger(__name__)

DEFAULT_INITIATOR = "iqn.2026-11.org.vtl-ebm:ebm"
OUR_MAX_RECV_DSL = 262144
OUR_MAX_BURST = 1048576
_SCSI_CMD = struct.Struct(">BBBBI8sIIII16s")
_DATA_OUT = struct.Struct(">BBBBI8sIIIIIIII")
STATUS_GOOD = 0x00
STATUS_CHECK_CONDITION = 0x02
STATUS_RESERVATION_CONFLICT = 0x18

# Commands whose repetition after a lost connection cannot change the medium or the position
# reached: they are retried once the session is back.
IDEMPOTENT = frozenset(int(o) for o in (
    Opcode.TEST_UNIT_READY, Opcode.INQUIRY, Opcode.REQUEST_SENSE, Opcode.MODE_SENSE_6,
    Opcode.MODE_SENSE_10, Opcode.LOG_SENSE, Opcode.PERSISTENT_RESERVE_IN, Opcode.REPORT_LUNS,
    Opcode.MAINTENANCE_IN, Opcode.READ_ATTRIBUTE, Opcode.READ_BLOCK_LIMITS, Opcode.READ_POSITION,
    Opcode.REPORT_DENSITY_SUPPORT, Opcode.LOCATE_10, Opcode.LOCATE_16, Opcode.REWIND,
    Opcode.READ_ELEMENT_STATUS,
))


class TransportError(Exception):
    """The transport failed (one line, names the target)."""


class LoginError(TransportError):
    """The target refused the login (status class/detail in the message) or CHAP failed."""


class ConnectionLost(TransportError):
    """The connection dropped while a command was in flight."""


class PositionUncertain(ConnectionLost):
    """A command that moves or changes the medium was cut off by a lost connection: it may or
    may not have run. The session is back; ask READ POSITION before going on."""


class TaskAborted(TransportError):
    """The command was ended by ABORT TASK or a LOGICAL UNIT RESET before its status."""


class TaskTimeout(TransportError):
    """No status within the command's timeout; the task was aborted (ABORT TASK)."""


@dataclass(slots=True)
class ScsiResult:
    """What came back for one command: status, data read, sense (raw), residual."""

    status: int
    data: bytes = b""
    sense: bytes = b""
    residual: int = 0


@dataclass(frozen=True, slots=True)
class Chap:
    """CHAP credentials: ours for the target, and (mutual) what the target must prove."""

    user: str
    secret: str
    mutual_user: str | None = None
    mutual_secret: str | None = None


@dataclass(slots=True)
class Negotiated:
    header_digest: bool = False
    data_digest: bool = False
    max_send_dsl: int = 8192  # the target's MaxRecvDataSegmentLength
    first_burst: int = 65536
    max_burst: int = 262144
    immediate_data: bool = True
    initial_r2t: bool = True


@dataclass
class _Conn:
    sock: socket.socket
    params: Negotiated
    pending: dict[int, queue.Queue] = field(default_factory=dict)
    pending_lun: dict[int, int] = field(default_factory=dict)  # ITT -> LUN of a SCSI command
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    alive: bool = True
    reader: threading.Thread | None = None


# Target PDUs whose bytes 32-35 are MaxCmdSN (RFC 7143 11.4, 11.7, 11.8, 11.19 ...).
_CARRIES_MAXCMDSN = frozenset(int(o) for o in (
    Op.SCSI_RSP, Op.DATA_IN, Op.R2T, Op.NOP_IN, Op.TMF_RSP, Op.TEXT_RSP, Op.LOGOUT_RSP,
    Op.ASYNC, Op.REJECT))
_LOST = object()  # queued to every pending command when the connection dies
_ABORTED = object()  # queued to a command that task management ended (it gets no status)


class Initiator:
    """One iSCSI session to one target. Thread-safe; see the module docstring."""

    def __init__(self, host: str, port: int, target: str, *,
                 initiator_name: str = DEFAULT_INITIATOR, chap_auth: Chap | None = None,
                 header_digest: bool = False, data_digest: bool = False,
                 timeout: float = 60.0, connect_timeout: float = 10.0,
                 reconnect_attempts: int = 3) -> None:
        self.host, self.port, self.target = host, port, target
        self.initiator_name = initiator_name
        self.chap = chap_auth
        self.want_header_digest, self.want_data_digest = header_digest, data_digest
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.reconnect_attempts = reconnect_attempts
        # A random ISID per Initiator (type 0x80 "random"), kept across reconnects.
        self.isid = b"\x80" + secrets.token_bytes(5)
        self.cmdsn = 1
        self.maxcmdsn = 1  # the target's window: CmdSN up to this may be sent (RFC 7143 4.2.2.1)
        self._window = threading.Condition()
        self.expstatsn = 0
        self._itt = secrets.randbelow(0x10000)
        self._itt_lock = threading.Lock()
        self._conn: _Conn | None = None
        self._conn_lock = threading.Lock()
        self.reconnects = 0
        self.closed = False

    def __repr__(self) -> str:
        return f"iscsi://{self.host}:{self.port}/{self.target}"

    # -- session ---------------------------------------------------------------------------
    def connect(self) -> Initiator:
        with self._conn_lock:
            if self._conn is None or not self._conn.alive:
                self._conn = self._login()
        return self

    def _live(self) -> _Conn:
        conn = self._conn
        if conn is not None and conn.alive:
            return conn
        if self.closed:
            raise TransportError(f"{self}: session closed")
        with self._conn_lock:
            if self._conn is None or not self._conn.alive:
                last: Exception | None = None
                for _ in range(max(1, self.reconnect_attempts)):
                    try:
                        self._conn = self._login()
                        break
                    except LoginError:
                        raise
                    except OSError as e:
                        last = e
                else:
                    raise TransportError(f"{self}: cannot reconnect: {last}") from None
                if conn is not None:
                    self.reconnects += 1
                    log.warning("%s: reconnected after a lost connection", self)
            return self._conn

    def close(self) -> None:
        """Log out (best effort) and close."""
        self.closed = True
        conn = self._conn
        if conn is None or not conn.alive:
            return
        with contextlib.suppress(Exception):
            q: queue.Queue = queue.Queue()
            itt = self._next_itt()
            conn.pending[itt] = q
            bhs = pdu.encode_layout(Op.LOGOUT_REQ, immediate=True, flags=0x80, itt=itt, cid=1,
                                    cmdsn=self.cmdsn, expstatsn=self.expstatsn)
            self._send(conn, bhs)
            q.get(timeout=5)
        self._drop(conn)

    def __enter__(self) -> Initiator:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drop_connection(self) -> None:
        """Cut the TCP connection as a network failure would (tests, and after a timeout)."""
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def _drop(self, conn: _Conn) -> None:
        conn.alive = False
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            conn.sock.close()
        for q in list(conn.pending.values()):
            q.put(_LOST)

    def _next_itt(self) -> int:
        with self._itt_lock:
            self._itt = (self._itt + 1) & 0x7FFFFFFF
            return self._itt

    # -- login (RFC 7143 6.1, 12.1.3) ------------------------------------------------------
    def _login(self) -> _Conn:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as e:
            raise OSError(f"{self}: cannot connect: {e.strerror or e}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.connect_timeout)
        try:
            params = self._negotiate(sock)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        conn = _Conn(sock, params)
        conn.reader = threading.Thread(target=self._read_loop, args=(conn,),
                                       name="iscsi-initiator-reader", daemon=True)
        conn.reader.start()
        return conn

    def _negotiate(self, sock: socket.socket) -> Negotiated:
        itt = self._next_itt()
        self._login_tsih = 0
        first = {"InitiatorName": self.initiator_name, "SessionType": "Normal",
                 "TargetName": self.target,
                 "AuthMethod": "CHAP,None" if self.chap else "None"}
        if self.chap is None:
            got = self._login_step(sock, itt, first, csg=0, nsg=1, transit=True)
            if got.get("AuthMethod", "None") != "None":
                raise LoginError(f"{self}: target wants {got['AuthMethod']} authentication: "
                                 "give CHAP credentials")
        else:
            self._chap(sock, itt, first)
        keys = {
            "HeaderDigest": "CRC32C,None" if self.want_header_digest else "None",
            "DataDigest": "CRC32C,None" if self.want_data_digest else "None",
            "MaxRecvDataSegmentLength": str(OUR_MAX_RECV_DSL),
            "MaxBurstLength": str(OUR_MAX_BURST), "FirstBurstLength": str(OUR_MAX_RECV_DSL),
            "ImmediateData": "Yes", "InitialR2T": "No", "MaxConnections": "1",
            "ErrorRecoveryLevel": "0", "DefaultTime2Wait": "0", "DefaultTime2Retain": "0",
            "MaxOutstandingR2T": "1", "DataPDUInOrder": "Yes", "DataSequenceInOrder": "Yes",
        }
        got: dict[str, str] = {}
        for _round in range(8):
            reply, final = self._login_exchange(sock, itt, keys, csg=1, nsg=3, transit=True)
            got.update(reply)
            if final:
                break
            keys = {}
        else:
            raise LoginError(f"{self}: operational negotiation did not end")
        return self._params(got)

    @staticmethod
    def _params(got: dict[str, str]) -> Negotiated:
        def num(key: str, default: int) -> int:
            try:
                return int(got.get(key, default))
            except ValueError:
                return default

        return Negotiated(
            header_digest=got.get("HeaderDigest") == "CRC32C",
            data_digest=got.get("DataDigest") == "CRC32C",
            max_send_dsl=num("MaxRecvDataSegmentLength", 8192) or OUR_MAX_RECV_DSL,
            first_burst=min(num("FirstBurstLength", 65536), OUR_MAX_RECV_DSL),
            max_burst=min(num("MaxBurstLength", 262144), OUR_MAX_BURST),
            immediate_data=got.get("ImmediateData", "Yes") == "Yes",
            initial_r2t=got.get("InitialR2T", "No") != "No",
        )

    def _chap(self, sock: socket.socket, itt: int, first: dict[str, str]) -> None:
        assert self.chap is not None
        got = self._login_step(sock, itt, first, csg=0, nsg=1, transit=False)
        if got.get("AuthMethod") != "CHAP":
            if got.get("AuthMethod") == "None":
                return  # the target does not authenticate (and may have transited already)
            raise LoginError(f"{self}: target offers no CHAP ({got.get('AuthMethod')})")
        got = self._login_step(sock, itt, {"CHAP_A": str(chap.CHAP_MD5)}, csg=0, nsg=1,
                               transit=False)
        try:
            ident = int(got["CHAP_I"], 0)
            challenge = chap.decode_binary(got["CHAP_C"])
        except (KeyError, ValueError, chap.ChapError):
            raise LoginError(f"{self}: target sent a malformed CHAP challenge") from None
        answer = {"CHAP_N": self.chap.user,
                  "CHAP_R": chap.encode_binary(chap.response(ident, self.chap.secret, challenge))}
        mutual_id = mutual_challenge = None
        if self.chap.mutual_secret is not None:
            mutual_id = secrets.randbelow(256)
            mutual_challenge = secrets.token_bytes(chap.CHALLENGE_LEN)
            answer["CHAP_I"] = str(mutual_id)
            answer["CHAP_C"] = chap.encode_binary(mutual_challenge)
        got = self._login_step(sock, itt, answer, csg=0, nsg=1, transit=True)
        if mutual_id is not None:
            assert mutual_challenge is not None and self.chap.mutual_secret is not None
            expected = chap.response(mutual_id, self.chap.mutual_secret, mutual_challenge)
            try:
                ok = chap.decode_binary(got.get("CHAP_R", "")) == expected
            except chap.ChapError:
                ok = False
            if not ok or (self.chap.mutual_user and got.get("CHAP_N") != self.chap.mutual_user):
                raise LoginError(f"{self}: the target failed mutual CHAP authentication")

    def _login_step(self, sock: socket.socket, itt: int, keys: dict[str, str], *, csg: int,
                    nsg: int, transit: bool) -> dict[str, str]:
        reply, _final = self._login_exchange(sock, itt, keys, csg=csg, nsg=nsg, transit=transit)
        return reply

    def _login_exchange(self, sock: socket.socket, itt: int, keys: dict[str, str], *, csg: int,
                        nsg: int, transit: bool) -> tuple[dict[str, str], bool]:
        data = encode_keys(keys)
        flags = (0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0)
        bhs = pdu.encode_layout(Op.LOGIN_REQ, immediate=True, dsl=len(data), flags=flags,
                                isid=self.isid, tsih=self._login_tsih, itt=itt, cid=1,
                                cmdsn=self.cmdsn, expstatsn=self.expstatsn)
        sock.sendall(bhs + data + bytes(pdu.pad_len(len(data))))
        hdr, payload = _recv_pdu(sock, Negotiated())
        if hdr.opcode != Op.LOGIN_RSP:
            raise LoginError(f"{self}: unexpected PDU 0x{hdr.opcode:02x} during login")
        rsp = pdu.decode_layout(hdr.raw)
        if rsp.status_class:
            what = {0x0201: "authentication failed", 0x0202: "not authorised",
                    0x0203: "target not found"}.get(rsp.status_class << 8 | rsp.status_detail,
                                                    "refused")
            raise LoginError(f"{self}: login {what} (status 0x{rsp.status_class:02x}"
                             f"{rsp.status_detail:02x})")
        self._login_tsih = rsp.tsih
        self.expstatsn = (rsp.statsn + 1) & ALL_ONES
        self.cmdsn = rsp.expcmdsn
        self.maxcmdsn = rsp.maxcmdsn
        try:
            reply = dict(parse_keys(payload))
        except ValueError:
            raise LoginError(f"{self}: malformed login keys from the target") from None
        if reply.get("TargetAddress") and rsp.status_class == 1:
            raise LoginError(f"{self}: target redirects to {reply['TargetAddress']}")
        final = bool(hdr.flags & 0x80) and (hdr.flags & 0x03) == 3
        return reply, final

    # -- the reader thread -----------------------------------------------------------------
    def _read_loop(self, conn: _Conn) -> None:
        try:
            while conn.alive:
                hdr, data = _recv_pdu(conn.sock, conn.params)
                self._dispatch(conn, hdr, data)
        except (OSError, ConnectionError, ValueError) as e:
            if conn.alive and not self.closed:
                log.warning("%s: connection lost: %s", self, e)
        finally:
            self._drop(conn)

    def _dispatch(self, conn: _Conn, hdr: pdu.Header, data: bytes) -> None:
        op = hdr.opcode
        if op in (Op.SCSI_RSP, Op.TMF_RSP, Op.LOGOUT_RSP, Op.TEXT_RSP) or (
                op == Op.DATA_IN and hdr.flags & 0x01) or (op == Op.NOP_IN and hdr.itt != ALL_ONES):
            self.expstatsn = (hdr.words[1] + 1) & ALL_ONES
        if op in _CARRIES_MAXCMDSN:
            self._open_window(hdr.words[3])
        if op == Op.NOP_IN and hdr.itt == ALL_ONES:
            if hdr.words[0] != ALL_ONES:  # a ping that wants an answer (RFC 7143 11.19)
                bhs = pdu.encode_layout(Op.NOP_OUT, immediate=True, flags=0x80, lun=hdr.lun,
                                        itt=ALL_ONES, ttt=hdr.words[0], cmdsn=self.cmdsn,
                                        expstatsn=self.expstatsn)
                self._send(conn, bhs)
            return
        if op == Op.ASYNC:
            event = hdr.raw[36]
            if event in (2, 3):  # the target drops the connection / session
                raise ConnectionError("target announced it drops the connection")
            return
        if op == Op.REJECT:
            itt = int.from_bytes(data[16:20], "big") if len(data) >= 48 else ALL_ONES
            q = conn.pending.get(itt)
            if q is not None:
                q.put((hdr, data))
            else:
                log.warning("%s: target rejected a PDU (reason 0x%02x)", self, hdr.b2)
            return
        q = conn.pending.get(hdr.itt)
        if q is not None:
            q.put((hdr, data))
        else:
            log.debug("%s: PDU 0x%02x for unknown ITT 0x%x", self, op, hdr.itt)

    def _open_window(self, maxcmdsn: int) -> None:
        with self._window:
            if pdu.serial_lt(self.maxcmdsn, maxcmdsn):
                self.maxcmdsn = maxcmdsn
                self._window.notify_all()

    def _take_cmdsn(self, timeout: float) -> int:
        """The next CmdSN, once the target's window admits it (a full queue waits here)."""
        with self._window:
            if not self._window.wait_for(
                    lambda: not pdu.serial_lt(self.maxcmdsn, self.cmdsn), timeout):
                raise TaskTimeout(f"{self}: the target's command window stayed closed for "
                                  f"{timeout:g} s")
            cmdsn = self.cmdsn
            self.cmdsn = (self.cmdsn + 1) & ALL_ONES
            return cmdsn

    # -- sending ---------------------------------------------------------------------------
    def _send(self, conn: _Conn, bhs: bytes, data: bytes | memoryview = b"") -> None:
        parts: list[bytes | memoryview] = [bhs]
        p = conn.params
        if p.header_digest:
            parts.append(pdu.digest_bytes(bhs))
        if len(data):
            parts.append(data)
            pad = bytes(pdu.pad_len(len(data)))
            if pad:
                parts.append(pad)
            if p.data_digest:
                parts.append(pdu.digest_bytes(data, pad))
        with conn.send_lock:
            if not conn.alive:
                raise ConnectionLost(f"{self}: connection lost")
            try:
                _sendmsg_all(conn.sock, parts)
            except OSError as e:
                raise ConnectionLost(f"{self}: connection lost: {e}") from None

    # -- commands --------------------------------------------------------------------------
    def execute(self, lun: int, cdb: bytes, *, data_out: bytes | memoryview | None = None,
                read_len: int = 0, timeout: float | None = None,
                retry: bool | None = None) -> ScsiResult:
        """Run one CDB on ``lun``; returns status, data and sense (no CHECK CONDITION raised
        here). ``retry`` defaults to whether the opcode is in ``IDEMPOTENT``."""
        if retry is None:
            retry = cdb[0] in IDEMPOTENT
        attempts = 1 + (self.reconnect_attempts if retry else 0)
        for attempt in range(attempts):
            conn = self._live()
            try:
                return self._run(conn, lun, cdb, data_out, read_len, timeout or self.timeout)
            except ConnectionLost:
                self._drop(conn)
                if not retry:
                    self._live()  # back in session, so the caller can ask READ POSITION
                    raise PositionUncertain(
                        f"{self}: connection lost during command 0x{cdb[0]:02x} on LUN {lun}; "
                        "whether it ran is unknown") from None
                if attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    def _run(self, conn: _Conn, lun: int, cdb: bytes, data_out: bytes | memoryview | None,
             read_len: int, timeout: float) -> ScsiResult:
        itt = self._next_itt()
        q: queue.Queue = queue.Queue()
        conn.pending[itt] = q
        conn.pending_lun[itt] = lun
        try:
            return self._run_task(conn, q, itt, lun, cdb, data_out, read_len, timeout)
        finally:
            conn.pending.pop(itt, None)
            conn.pending_lun.pop(itt, None)

    def _run_task(self, conn: _Conn, q: queue.Queue, itt: int, lun: int, cdb: bytes,
                  data_out: bytes | memoryview | None, read_len: int,
                  timeout: float) -> ScsiResult:
        p = conn.params
        out = memoryview(data_out).cast("B") if data_out is not None else None
        length = len(out) if out is not None else read_len
        lun_bytes = pdu.encode_lun(lun)
        immediate = 0
        unsolicited_end = 0
        if out is not None:
            if p.immediate_data:
                immediate = min(length, p.first_burst, p.max_send_dsl)
            unsolicited_end = immediate if p.initial_r2t else min(length, p.first_burst)
        flags = 0x80 if unsolicited_end == immediate else 0
        if read_len:
            flags |= 0x40
        if out is not None:
            flags |= 0x20
        flags |= 0x01  # SIMPLE task attribute
        cmdsn = self._take_cmdsn(timeout)
        bhs = _SCSI_CMD.pack(Op.SCSI_CMD, flags, 0, 0, immediate, lun_bytes, itt, length, cmdsn,
                             self.expstatsn, bytes(cdb).ljust(16, b"\0"))
        self._send(conn, bhs, out[:immediate] if out is not None else b"")
        if out is not None and unsolicited_end > immediate:
            self._data_out(conn, out, lun_bytes, itt, ALL_ONES, immediate, unsolicited_end)
        buf = bytearray(read_len) if read_len else None
        got = 0
        while True:
            try:
                item = q.get(timeout=timeout)
            except queue.Empty:
                self._abort_quietly(lun, itt)
                raise TaskTimeout(f"{self}: no answer to command 0x{cdb[0]:02x} on LUN {lun} "
                                  f"within {timeout:g} s (aborted)") from None
            if item is _LOST:
                raise ConnectionLost(f"{self}: connection lost")
            if item is _ABORTED:
                raise TaskAborted(f"{self}: command 0x{cdb[0]:02x} on LUN {lun} was aborted")
            hdr, data = item
            if hdr.opcode == Op.R2T:
                ttt, offset, want = hdr.words[0], hdr.words[5], hdr.words[6]
                if out is None or offset + want > length:
                    raise ConnectionLost(f"{self}: target asked for data it may not have")
                self._data_out(conn, out, lun_bytes, itt, ttt, offset, offset + want)
            elif hdr.opcode == Op.DATA_IN:
                offset = hdr.words[5]
                if buf is None or offset + len(data) > len(buf):
                    raise ConnectionLost(f"{self}: target sent more data than asked for")
                buf[offset:offset + len(data)] = data
                got = max(got, offset + len(data))
                if hdr.flags & 0x01:
                    return ScsiResult(hdr.b3, bytes(buf[:got]), b"", hdr.words[6])
            elif hdr.opcode == Op.SCSI_RSP:
                if hdr.b2:  # iSCSI response != command completed at target
                    raise TransportError(f"{self}: target failed command 0x{cdb[0]:02x} "
                                         f"(iSCSI response 0x{hdr.b2:02x})")
                sense = b""
                if len(data) >= 2:
                    n = int.from_bytes(data[:2], "big")
                    sense = bytes(data[2:2 + n])
                return ScsiResult(hdr.b3, bytes(buf[:got]) if buf is not None else b"", sense,
                                  hdr.words[6])
            elif hdr.opcode == Op.REJECT:
                raise TransportError(f"{self}: target rejected command 0x{cdb[0]:02x} "
                                     f"(reason 0x{hdr.b2:02x})")

    def _data_out(self, conn: _Conn, out: memoryview, lun: bytes, itt: int, ttt: int,
                  start: int, end: int) -> None:
        step = conn.params.max_send_dsl
        datasn = 0
        off = start
        while off < end:
            n = min(step, end - off)
            final = off + n == end
            bhs = _DATA_OUT.pack(Op.DATA_OUT, 0x80 if final else 0, 0, 0, n, lun, itt, ttt, 0,
                                 self.expstatsn, 0, datasn, off, 0)
            self._send(conn, bhs, out[off:off + n])
            datasn += 1
            off += n

    # -- task management (RFC 7143 11.5) ---------------------------------------------------
    def task_management(self, function: TmfFunction, lun: int, ref_itt: int = ALL_ONES,
                        timeout: float = 30.0) -> int:
        """Send a TMF request; returns the TMF response code (0 = function complete)."""
        conn = self._live()
        itt = self._next_itt()
        q: queue.Queue = queue.Queue()
        conn.pending[itt] = q
        try:
            bhs = pdu.encode_layout(Op.TMF_REQ, immediate=True, flags=0x80 | int(function),
                                    lun=pdu.encode_lun(lun), itt=itt, ref_itt=ref_itt,
                                    cmdsn=self.cmdsn, expstatsn=self.expstatsn,
                                    ref_cmdsn=self.cmdsn)
            self._send(conn, bhs)
            while True:
                try:
                    item = q.get(timeout=timeout)
                except queue.Empty:
                    raise TaskTimeout(f"{self}: no answer to task management") from None
                if item is _LOST:
                    raise ConnectionLost(f"{self}: connection lost")
                hdr, _data = item
                if hdr.opcode == Op.TMF_RSP:
                    if hdr.b2 == 0:
                        self._end_tasks(conn, function, lun, ref_itt)
                    return hdr.b2
        finally:
            conn.pending.pop(itt, None)

    @staticmethod
    def _end_tasks(conn: _Conn, function: TmfFunction, lun: int, ref_itt: int) -> None:
        """The tasks a completed TMF ended get no status (RFC 7143 11.6.1): end them here."""
        for itt, task_lun in list(conn.pending_lun.items()):
            if task_lun == lun and (function != TmfFunction.ABORT_TASK or itt == ref_itt):
                q = conn.pending.get(itt)
                if q is not None:
                    q.put(_ABORTED)

    def abort_task(self, lun: int, itt: int) -> int:
        return self.task_management(TmfFunction.ABORT_TASK, lun, itt)

    def lun_reset(self, lun: int) -> int:
        return self.task_management(TmfFunction.LOGICAL_UNIT_RESET, lun)

    def _abort_quietly(self, lun: int, itt: int) -> None:
        with contextlib.suppress(TransportError):
            self.abort_task(lun, itt)

    # -- for tests and callers that run commands in the background -------------------------
    def pending_itts(self) -> list[int]:
        conn = self._conn
        return sorted(conn.pending) if conn is not None else []


def _sendmsg_all(sock: socket.socket, parts: list[bytes | memoryview]) -> None:
    views = [memoryview(x).cast("B") for x in parts if len(x)]
    while views:
        sent = sock.sendmsg(views)
        while sent:
            if sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][sent:]
                sent = 0


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise ConnectionError("connection closed by the target")
        got += k
    return buf


def _recv_pdu(sock: socket.socket, params: Negotiated) -> tuple[pdu.Header, bytes]:
    raw = bytes(_recv_exact(sock, pdu.BHS_LEN))
    hdr = pdu.parse_bhs(raw)
    ahs = bytes(_recv_exact(sock, hdr.total_ahs_len * 4)) if hdr.total_ahs_len else b""
    if params.header_digest:
        if bytes(_recv_exact(sock, 4)) != pdu.digest_bytes(raw, ahs):
            raise ValueError("header digest mismatch")
    data = b""
    if hdr.dsl:
        body = _recv_exact(sock, hdr.dsl + pdu.pad_len(hdr.dsl))
        if params.data_digest and bytes(_recv_exact(sock, 4)) != pdu.digest_bytes(body):
            raise ValueError("data digest mismatch")
        data = bytes(memoryview(body)[:hdr.dsl])
    return hdr, data


def initiator_name_for_host() -> str:
    """A stable initiator name for this host: the EBM's IQN with the host name."""
    host = os.uname().nodename.lower().replace("_", "-") or "localhost"
    return f"{DEFAULT_INITIATOR}:{host}"
