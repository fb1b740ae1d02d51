"""PDUs on the socket: reading them into preallocated buffers, writing them with digests.

The receive side reads the 48-byte header into a small reusable buffer, offers a SCSI Command
to the streaming fast paths (stream_paths.py) before any Header object exists, then reads any
AHS, checks the header digest and reads the data segment straight into its destination (a
task's write buffer, data_out.py), padding and data digest after it. The send side turns a
header and its data into wire frames (header digest, padding, data digest) and writes them
with ``sendmsg``, numbering StatSN under the connection's ``_tx_lock``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

from vtl.iscsi import pdu
from vtl.iscsi.pdu import ALL_ONES, BHS_LEN, Header, RejectReason

if TYPE_CHECKING:
    from vtl.iscsi.task import Task

log = logging.getLogger("vtl.iscsi")

LOGIN_MAX_DSL = 64 * 1024
MAX_HEADER = BHS_LEN + 255 * 4 + 4  # BHS + the largest AHS + a header digest


class ProtocolError(Exception):
    """The byte stream cannot be trusted any more: the connection is closed."""


class ConnectionGone(Exception):  # noqa: N818 - a state, not an error
    """The initiator closed the connection, or the server shut it down."""


class PduFraming:
    """The socket side of a Connection (a mixin: the state lives on the connection)."""

    sock: socket.socket
    peer: str
    statsn: int
    _tx_lock: threading.RLock
    _sock_closed: bool
    _closing: bool
    _hbuf: memoryview
    _bhs_view: memoryview
    _tbuf: memoryview
    _data_task: Task | None
    _hd: bool
    _dd: bool
    _max_dsl: int
    _last_rx: float
    _streams: dict

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
