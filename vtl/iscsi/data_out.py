"""Write data coming in: immediate data, unsolicited Data-Out, R2Ts and their Data-Out.

A write command gets one buffer for its whole Expected Data Transfer Length (a DonatedBuffer
the device may keep); every data segment is read straight into its place in it
(``_data_destination``, called by framing.py before the bytes are read). Each Data-Out must
be the next piece of its sequence (DataPDUInOrder=Yes, ERL 0); the rest is solicited with at
most MaxOutstandingR2T R2Ts of MaxBurstLength each, and the command runs when all data is in.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from vtl.iscsi import pdu
from vtl.iscsi.pdu import ALL_ONES, Header, Op, RejectReason
from vtl.iscsi.session import Session, TaskState
from vtl.iscsi.task import Task
from vtl.scsi.base import SPARE_BUFFERS, DonatedBuffer, ScsiResult, Status
from vtl.scsi.sense import DATA_PHASE_CRC_ERROR_DETECTED, DATA_PHASE_ERROR, INSUFFICIENT_RESOURCES

if TYPE_CHECKING:
    from vtl.iscsi.services import TargetServices


class DataOutReceiver:
    """The write-data side of a Connection (a mixin: the state lives on the connection)."""

    server: TargetServices
    session: Session | None
    full_feature: bool
    statsn: int
    lock: threading.Lock
    tasks: dict[int, Task]
    _data_task: Task | None
    _pre_buffer: DonatedBuffer | None
    _buffered: int
    _ttt_map: dict[int, Task]
    _next_ttt: int
    _recently_aborted: deque[int]

    def _write_buffer(self, edtl: int, whole: bool = True) -> DonatedBuffer:
        """A write command's whole buffer, for its immediate data to land in; kept as
        ``_pre_buffer``, which ``_start_write`` adopts if the command goes the general way
        (a bare attribute, not a Task: the streaming WRITE asks for one per command).
        ``whole``: all ``edtl`` bytes arrive in this PDU, so a spare buffer (old contents)
        may be taken; else a new one, zeroed, as data that never arrives must read."""
        buf = SPARE_BUFFERS.take(edtl) if whole else DonatedBuffer(edtl)
        self._pre_buffer = buf
        return buf

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
                return memoryview(self._write_buffer(edtl, hdr.dsl == edtl))[:hdr.dsl]
        return memoryview(bytearray(hdr.dsl))

    def _start_write(self, task: Task, hdr: Header) -> None:
        """A write command: take its immediate data, solicit the rest, run it when complete."""
        session = self.session
        assert session is not None
        p = session.params
        lim = self.server.config.limits
        edtl = task.edtl
        if edtl > lim.max_transfer:
            # Too big to buffer: refuse the command (any Data-Out for it gets rejected).
            self._answer(task, INSUFFICIENT_RESOURCES.result())
            return
        if self._buffered + edtl > lim.max_buffered:
            # Too much write data already waiting on this connection: ask the initiator
            # to retry later instead of holding unbounded memory.
            self._answer(task, ScsiResult(Status.TASK_SET_FULL))
            return
        pre = self._pre_buffer
        if pre is not None and len(pre) == edtl:
            task.buffer = pre
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
                    self._answer(task, DATA_PHASE_ERROR.result())
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

    def _on_data_digest_error(self, hdr: Header) -> None:
        """RFC 7143 7.8: discard the PDU and reject it; a Data-Out's task ends in error."""
        self._reject(hdr.raw, RejectReason.DATA_DIGEST_ERROR)
        task = self._data_task if hdr.opcode == Op.DATA_OUT else None
        if task is not None and self.tasks.get(task.itt) is task:
            task.failed_sense = DATA_PHASE_CRC_ERROR_DETECTED.sense()
            self._account_data_out(task, hdr)
