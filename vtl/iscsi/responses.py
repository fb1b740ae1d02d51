"""Responses to the initiator: SCSI Response and Data-In PDUs, Reject, and ending a task.

A READ's data goes in Data-In PDUs of at most MaxRecvDataSegmentLength (the initiator's),
in bursts of MaxBurstLength, with the status in the last one when it can be (GOOD, no
sense); otherwise a SCSI Response follows with the sense and the residual. The two
streaming shapes (one Data-In with GOOD, or a bare GOOD) are packed by one struct each.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from vtl.iscsi import pdu
from vtl.iscsi.pdu import ALL_ONES, BHS_LEN, Op, RejectReason
from vtl.iscsi.session import Session, TaskState
from vtl.iscsi.task import Task
from vtl.scsi.base import ScsiResult, Status

if TYPE_CHECKING:
    from vtl.iscsi.lun_worker import LunWorker


class ResponseSender:
    """The response side of a Connection (a mixin: the state lives on the connection)."""

    session: Session | None
    statsn: int
    lock: threading.Lock
    tasks: dict[int, Task]
    _tx_lock: threading.RLock
    _closing: bool
    _hd: bool
    _dd: bool
    _buffered: int
    _login_cmdsn: int
    _ttt_map: dict[int, Task]
    _workers: dict[int | None, LunWorker]

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
        if task.slot:  # MaxCmdSN moves on: the initiator may send one more command
            task.slot = False
            self.session.freed += 1
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
            exp = session.exp_cmdsn  # before the slot counters (Session.taken says why)
            bhs = pdu.data_in_good(n, lun_raw, itt, sn, exp, (
                exp + session.queue_depth - 1 - (session.taken - session.freed)) & ALL_ONES)
            self._sendall([bhs, data, b"\0" * pad] if pad else [bhs, data], 48 + n + pad)

    def _send_rsp_good(self, itt: int, r2tsn: int) -> None:
        """SCSI Response GOOD without data, sense or residual (no digests)."""
        session = self.session
        assert session is not None
        with self._tx_lock:
            sn = self.statsn
            self.statsn = (sn + 1) & ALL_ONES
            exp = session.exp_cmdsn  # before the slot counters (Session.taken says why)
            bhs = pdu.scsi_rsp_good(itt, sn, exp, (
                exp + session.queue_depth - 1 - (session.taken - session.freed)) & ALL_ONES,
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
