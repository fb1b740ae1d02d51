"""PDUs on the socket: reading them into preallocated buffers, writing them with digests.

The receive side reads the 48-byte header into a small reusable buffer, offers a SCSI Command
to the streaming fast paths (stream_paths.py) before any Header object exists, then reads any
AHS, checks the header digest and reads the data segment straight into its destination (a
task's write buffer, data_out.py), padding and data digest after it. The send side turns a
header and its data into wire frames (header digest, padding, data digest) and writes them
with ``sendmsg``, numbering StatSN under the connection's ``_tx_lock``; a socket that stays
full is never waited on by a thread holding a device (``_sendall`` says how).
"""

from __future__ import annotations

import fcntl
import logging
import select
import socket
import struct
import termios
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from vtl.iscsi import pdu
from vtl.iscsi.pdu import ALL_ONES, BHS_LEN, Header, Op, RejectReason
from vtl.iscsi.recv_spin import SPIN, SPIN_MAX_BYTES
from vtl.scsi.opcodes import Opcode

if TYPE_CHECKING:
    from vtl.iscsi.config import Limits
    from vtl.iscsi.task import Task

log = logging.getLogger("vtl.iscsi")

LOGIN_MAX_DSL = 64 * 1024
MAX_HEADER = BHS_LEN + 255 * 4 + 4  # BHS + the largest AHS + a header digest
SEND_WAIT = 0.05  # seconds a full socket may hold up a sender before its frames are set aside
FLUSH_CHUNK = 1 << 20  # bytes the flusher joins into one write
UNREAD_EVERY = 0.001  # seconds between two looks at what the peer left unread
UNREAD_NAP = (0.0005, 0.02)  # first and longest sleep while it leaves too much unread
_INT = struct.Struct("i")
_ZERO_INT = bytes(4)
# Compared per PDU: plain ints, not enum attribute lookups (vtl/scsi/opcodes.py says why).
_SCSI_CMD = int(Op.SCSI_CMD)
_READ_6 = int(Opcode.READ_6)
_WRITE_6 = int(Opcode.WRITE_6)


class ProtocolError(Exception):
    """The byte stream cannot be trusted any more: the connection is closed."""


class ConnectionGone(Exception):  # a state, not an error
    """The initiator closed the connection, or the server shut it down."""


class PduFraming:
    """The socket side of a Connection (a mixin: the state lives on the connection)."""

    sock: socket.socket
    peer: str
    statsn: int
    _tx_lock: threading.RLock
    _tx_cond: threading.Condition  # on _tx_lock: unsent output shrank or the socket closed
    _unsent: deque[bytes]  # output set aside while the socket is full, for the flusher
    _unsent_bytes: int
    _flushing: bool  # a flusher thread is running
    _poller: select.poll | None
    _limits: Limits
    _sock_closed: bool
    _closing: bool
    _hbuf: memoryview
    _bhs_view: memoryview
    _tbuf: memoryview
    _data_task: Task | None
    _pre_buffer: bytearray | None  # a write command's buffer (data_out.py's _write_buffer)
    _hd: bool
    _dd: bool
    _max_dsl: int
    _last_rx: float
    _unread_due: float  # when _serve next calls _await_reader
    _spin_next: bool  # the last PDU was a small streamed command: spin for the next
    _spin_skip: int  # chances to spin left out after a spin that found nothing (recv_spin.py)
    _on_loop: bool  # the login is being served from the event loop (connection.py)
    _streams: dict
    _paths: Any  # stream_paths.paths: the fast paths' implementation (C or Python)
    commands: int  # SCSI commands received (read by the status snapshot, vtl.iscsi.admin)

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
        was a streaming READ or WRITE answered already (stream_paths.py)."""
        hb = self._hbuf
        got = -1
        if self._spin_next:  # VTL_SPIN_US: wait on the CPU a moment first (recv_spin.py)
            self._spin_next = False
            got = SPIN.recv_header(self)
        if got < 0:
            got = self.sock.recv_into(self._bhs_view)
        if got != BHS_LEN:  # rare: the header arrived in pieces (or the peer left)
            if not got:
                raise ConnectionGone()
            self._recv_exact(hb[got:BHS_LEN])
        self._last_rx = time.monotonic()
        if hb[0] & 0x3F == _SCSI_CMD:
            self.commands += 1  # `vtl target sessions` shows it; one add per command
        if hb[0] == _SCSI_CMD and self._streams:  # a streaming READ or WRITE?
            op = hb[32]
            if op == _READ_6 and self._paths.stream_read(self, hb):
                if SPIN.on:
                    self._spin_next = int.from_bytes(hb[20:24], "big") <= SPIN_MAX_BYTES
                return None, None, True
            if op == _WRITE_6:
                streamed = self._paths.stream_write(self, hb)
                if streamed is not None:
                    if SPIN.on and streamed[0] is None:
                        self._spin_next = int.from_bytes(hb[20:24], "big") <= SPIN_MAX_BYTES
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
        self._pre_buffer = None
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
        """Write every frame, in order, without ever blocking for long (call with
        ``_tx_lock`` held). ``total``: the frames' length when the caller knows it (spares
        counting in the common case).

        Callers may hold a LUN's lock, shared by every session: an initiator that stops
        reading must not stop the device for the others. So the socket is written without
        blocking; when it stays full for ``SEND_WAIT`` the rest is copied aside (the
        frames may be views of the device's buffer) and a flusher thread writes it while
        the connection's thread stops reading new PDUs (``_await_unsent``): the initiator's
        own back-pressure, and with the CmdSN window a bound on what it makes us hold.
        A broken connection is closed; the receiving thread notices by itself."""
        if self._sock_closed:
            return
        if self._unsent_bytes:  # earlier output still waits: queue behind it, in order
            self._hold(frames)
            return
        sendmsg = self.sock.sendmsg
        try:
            while frames:
                batch = frames[:512] if len(frames) > 512 else frames  # below IOV_MAX
                try:
                    sent = sendmsg(batch, (), socket.MSG_DONTWAIT)
                except BlockingIOError:
                    sent = 0
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
                frames = frames[done:]
                if sent:  # part of a frame went out
                    frames[0] = memoryview(frames[0])[sent:]
                if not self._writable():
                    self._hold(frames)
                    return
        except (OSError, ConnectionGone) as exc:
            if not self._closing:
                log.info("%s: cannot send: %s", self.peer, exc)
            self.close()

    def _writable(self) -> bool:
        """Wait up to SEND_WAIT for room in the socket's send buffer."""
        if self._on_loop:  # never wait on the event loop
            return False
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self.sock, select.POLLOUT)
        return bool(poller.poll(SEND_WAIT * 1000))

    def _hold(self, frames: list) -> None:
        """Copy frames aside for the flusher (under ``_tx_lock``); past ``max_unsent`` bytes
        wait for it first, the last-resort bound (a LUN's lock may be held meanwhile)."""
        if self._on_loop:  # a login answer the socket would not take: nothing waits there
            log.info("%s: login response not taken, closing", self.peer)
            self.close()
            return
        limit = self._limits.max_unsent
        while (self._unsent_bytes > limit and not self._sock_closed
               and not self._closing):
            self._tx_cond.wait(0.5)
        if self._sock_closed or self._closing:
            return
        for f in frames:
            chunk = bytes(f)
            self._unsent.append(chunk)
            self._unsent_bytes += len(chunk)
        if not self._flushing:
            self._flushing = True
            threading.Thread(target=self._flush_unsent, name=f"iscsi-tx {self.peer}",
                             daemon=True).start()

    def _flush_unsent(self) -> None:
        """The flusher: write what ``_hold`` set aside, blocking, outside ``_tx_lock``."""
        size = 0
        try:
            while True:
                with self._tx_lock:
                    self._unsent_bytes -= size
                    self._tx_cond.notify_all()
                    chunks: list[bytes] = []
                    size = 0
                    unsent = self._unsent
                    while unsent and size < FLUSH_CHUNK:
                        chunk = unsent.popleft()
                        chunks.append(chunk)
                        size += len(chunk)
                    if not chunks or self._sock_closed:
                        self._flushing = False
                        return
                self.sock.sendall(b"".join(chunks) if len(chunks) > 1 else chunks[0])
        except OSError as exc:
            if not self._closing:
                log.info("%s: cannot send: %s", self.peer, exc)
            self.close()
            with self._tx_lock:
                self._unsent.clear()
                self._unsent_bytes = 0
                self._flushing = False
                self._tx_cond.notify_all()

    def _await_unsent(self) -> None:
        """Back-pressure, on the connection's thread: read no new PDU while responses
        wait to be written (the initiator is not reading them)."""
        with self._tx_cond:
            while self._unsent_bytes and not self._closing and not self._sock_closed:
                self._tx_cond.wait(0.5)

    def _unread(self) -> int:
        """Bytes written to the socket that the peer has not taken yet (SIOCOUTQ)."""
        return _INT.unpack(fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, _ZERO_INT))[0]

    def _await_reader(self) -> None:
        """Back-pressure before the socket is full: read no new PDU while the peer leaves
        more than ``max_unread`` bytes of our output unread (asked at most every
        UNREAD_EVERY). The kernel would otherwise take megabytes of answers first - tens
        of thousands of INQUIRYs run for an initiator that never reads them, the device and
        the GIL taken from every other initiator meanwhile. A peer that reads what it
        asked for before asking again (one command at a time, as st does) never waits."""
        limit = self._limits.max_unread
        nap = UNREAD_NAP[0]
        try:
            while self._unread() > limit and not self._closing:
                time.sleep(nap)
                nap = min(nap * 2, UNREAD_NAP[1])
        except OSError:  # closed meanwhile: the next read says so
            pass
        self._unread_due = time.monotonic() + UNREAD_EVERY

    def _next_statsn(self) -> int:
        with self._tx_lock:  # the connection's thread and LUN workers both number responses
            sn = self.statsn
            self.statsn = (sn + 1) & ALL_ONES
            return sn
