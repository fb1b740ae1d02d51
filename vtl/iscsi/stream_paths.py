"""The streaming fast paths: READ(6) and WRITE(6) answered straight from the 48-byte header.

The two commands a tape stream is made of take a shorter way when the device offers it
(``stream_read``/``stream_write``, vtl/scsi/base.py): decided from the header before any
Header object or task exists, answered with one struct pack, and handed back to the general
path, unchanged, whenever anything about the command is unusual. tests/iscsi/
test_stream_paths.py holds both ways to byte-identical answers.

Two implementations of the same decisions: the C extension ``vtl._fastpath`` (vtl/_fastpath.c,
built by setup.py when a compiler is there), which spares the interpreter's share of each
command, and the methods below, the fallback (extension missing, or ``VTL_NO_FASTPATH=1``)
and the reference the tests hold the C one to, PDU for PDU. Both have one shape,
``stream_read(conn, hbuf)`` and ``stream_write(conn, hbuf)``; ``paths`` is the one in use.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

from vtl.iscsi import data_out, pdu
from vtl.iscsi.framing import ConnectionGone
from vtl.iscsi.lun_worker import LunWorker
from vtl.iscsi.pdu import ALL_ONES, BHS_LEN, Header
from vtl.iscsi.session import Session, TaskState
from vtl.native import optional_extension

if TYPE_CHECKING:
    from vtl.iscsi.config import TargetConfig
    from vtl.iscsi.services import TargetServices
    from vtl.iscsi.task import Task

log = logging.getLogger("vtl.iscsi")

_ITT_EDTL_CMDSN = struct.Struct(">III")  # SCSI Command BHS bytes 16..27
# SCSI Command flags (byte 1, RFC 7143 11.3.1): Final, Read, Write.
_FRW = 0xE0
_FINAL_READ = 0xC0
_FINAL_WRITE = 0xA0


class StreamLun(NamedTuple):
    """A LUN whose device offers streaming fast paths (vtl/scsi/base.py)."""

    lun: int
    lun_raw: bytes
    worker: LunWorker
    read: Callable | None
    write: Callable | None


class StreamPaths:
    """The fast paths of a Connection (a mixin: the state lives on the connection)."""

    server: TargetServices
    session: Session | None
    draining: bool
    tasks: dict[int, Task]
    _closing: bool
    _hbuf: memoryview
    _hd: bool
    _dd: bool
    _max_dsl: int
    _buffered: int
    _posted: dict[int | None, Task]
    _workers: dict[int | None, LunWorker]
    _streams: dict[bytes, StreamLun]
    _tx_lock: threading.RLock
    _paths: type[ReferencePaths] | ModuleType

    def bind_luns(self, target: TargetConfig, luns: frozenset[int]) -> None:
        """Look up the workers (and fast paths) of the LUNs the session sees, once at login
        (again when a reload shows it more)."""
        self._paths = paths
        self._workers = {lun: w for lun in target.devices.luns
                         if lun in luns and (w := self.server.worker(target, lun))}
        self._streams = {}
        for lun, w in self._workers.items():
            read = getattr(w.device, "stream_read", None)
            write = getattr(w.device, "stream_write", None)
            if lun is not None and (read is not None or write is not None):
                raw = pdu.encode_lun(lun)
                self._streams[raw] = StreamLun(lun, raw, w, read, write)

    def _stream_read(self, hb: memoryview) -> bool:
        """Answer the READ(6) whose header is in ``_hbuf`` straight from the header, when it is
        the plain streaming case: in-order CmdSN, no data segment, AHS or header digest, a
        free ITT, nothing queued for the LUN, one Data-In PDU, and the device's
        ``stream_read`` takes it. That is the commonest command of a restore, and skipping
        the header object, the task and the generic result halves its cost. False: nothing
        happened, and the PDU goes the general way."""
        if hb[1] & _FRW != _FINAL_READ or hb[4] or hb[5] or hb[6] or hb[7] or self._hd:
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

    def _stream_write(self, hb: memoryview
                      ) -> tuple[Header | None, memoryview | None, bool] | None:
        """The WRITE(6) whose header is in ``_hbuf``, in the streaming case: the whole block
        as immediate data in this PDU, no digests, in-order CmdSN, a free ITT, nothing
        queued for the LUN. Its data segment is read into a DonatedBuffer and offered to the
        device's ``stream_write``; taken, the answer is GOOD at once and the result is
        (None, None, True). Declined, the PDU goes the general way with its data already
        in: (header, data, True). None: not the case, nothing read past the header."""
        if hb[1] & _FRW != _FINAL_WRITE or hb[4] or self._hd or self._dd:
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

    def _stream_for(self, hb: memoryview) -> tuple[StreamLun, Session, int, int] | None:
        """(the LUN's fast paths, the session, ITT, EDTL) when the SCSI Command in ``hb``
        may take a fast path now: a normal session that is not closing, the next CmdSN in
        order and inside the window, a free ITT, and no command of the LUN still queued
        (order is kept)."""
        stream = self._streams.get(hb[8:16].tobytes())
        session = self.session
        if (stream is None or session is None or self.draining or self._closing
                or not session.queue_depth):
            return None
        itt, edtl, cmdsn = _ITT_EDTL_CMDSN.unpack_from(hb, 16)
        if (cmdsn != session.exp_cmdsn or itt == ALL_ONES or itt in self.tasks
                or session.taken - session.freed >= session.queue_depth):  # window full
            return None
        prev = self._posted.get(stream.lun)
        if prev is not None and prev.state is not TaskState.DONE:
            return None
        return stream, session, itt, edtl


class ReferencePaths:
    """The pure-Python fast paths in vtl._fastpath's shape (functions of the connection and
    its header buffer): the fallback, and the reference for the C ones."""

    stream_read = StreamPaths._stream_read
    stream_write = StreamPaths._stream_write


def _device_raised(what: str, cdb: bytes, exc: BaseException) -> None:
    """vtl._fastpath's report of a device call that raised: logged as the Python path logs
    it (``_after_command`` for the idle hook), and the command goes the general way."""
    if what == "idle":
        log.error("device idle() failed", exc_info=exc)
    else:
        log.error("%s raised on CDB %s", what, cdb.hex(), exc_info=exc)


native = optional_extension("vtl._fastpath")
if native is not None:
    native.configure(TaskState.DONE, pdu.parse_bhs, _device_raised)
    if hasattr(native, "configure_receive"):  # a streaming WRITE's block received in C
        native.configure_receive(data_out.__dict__, ConnectionGone, time.monotonic)
# The implementation connections bind at login (tests switch it to compare the two).
paths: type[ReferencePaths] | ModuleType = native or ReferencePaths
