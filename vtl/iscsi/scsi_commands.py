"""Running SCSI commands: from a SCSI Command PDU to the device and back to a response.

Commands a device declares bounded (``inline_opcodes``: READ/WRITE of one block, TEST UNIT
READY, ...) run on the connection's thread under the LUN's lock; everything else (LOAD,
WRITE FILEMARKS with its fsync, changer moves, anything a model may take seconds over) goes
to the LUN's worker thread (lun_worker.py), so the connection keeps answering NOP-Outs and
task management meanwhile. A command that follows a queued one to the same LUN also goes to
the worker, which keeps the order. After an inline command the device gets an ``idle()``
call before the next read: a tape drive reads ahead there, while the initiator is still busy
with the data it just got. REPORT LUNS belongs to the target, not to one device: it is
answered here for every LUN address, from the target's LUN map, by the one builder the SPC
model uses too (vtl/scsi/spc.py ``report_luns``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from vtl.iscsi import pdu
from vtl.iscsi.lun_worker import LunWorker
from vtl.iscsi.pdu import ALL_ONES, Header, RejectReason
from vtl.iscsi.session import Session, TaskState
from vtl.iscsi.task import Task
from vtl.scsi.base import CheckCondition, ScsiResult, Status
from vtl.scsi.opcodes import Opcode
from vtl.scsi.sense import (
    INTERNAL_TARGET_FAILURE,
    INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
    LOGICAL_UNIT_NOT_SUPPORTED,
)
from vtl.scsi.spc import report_luns

if TYPE_CHECKING:
    from vtl.iscsi.services import TargetServices

log = logging.getLogger("vtl.iscsi")

_NO_OPCODES: frozenset[int] = frozenset()
# Seconds the connection's thread sleeps after a SCSI Command the initiator had no right to
# send (beyond MaxCmdSN, or immediate with the task table full): what a flood of them costs
# the server (parsing, Rejects, the GIL every other connection needs) is then bounded by the
# pace of its own tasks, not by how fast it can write. A well-behaved initiator never waits.
MISBEHAVING_PAUSE = 0.001
# Where a CDB ends in the BHS, by opcode group (SPC-4 4.2.5.1): 6, 10, 10, variable, 16, 12
# bytes; groups 3, 6 and 7 (variable length, vendor specific) keep all 16.
_CDB_END = (38, 42, 42, 48, 48, 44, 48, 48)
_REPORT_LUNS = int(Opcode.REPORT_LUNS)  # a plain int: compared for every command

# The 8-byte LUN field of LUNs 0..255 in peripheral addressing: a fast path for decode_lun.
_LUN_FAST = [pdu.encode_lun(n) for n in range(256)]

def missing_lun_result(cdb: bytes) -> ScsiResult:
    """What a LUN that does not exist answers (SPC-4: INQUIRY says 'not present')."""
    op = cdb[0]
    if op == Opcode.INQUIRY:
        alloc = int.from_bytes(cdb[3:5], "big")
        if cdb[1] & 1:
            return LOGICAL_UNIT_NOT_SUPPORTED.result()
        data = bytearray(36)
        data[0] = 0x7F  # peripheral qualifier 3, device type 0x1F
        data[2] = 0x06
        data[3] = 0x02
        data[4] = 31
        return ScsiResult(Status.GOOD, bytes(data[:alloc]))
    if op == Opcode.REQUEST_SENSE:
        alloc = cdb[4]
        return ScsiResult(Status.GOOD, LOGICAL_UNIT_NOT_SUPPORTED.sense()[:alloc])
    return LOGICAL_UNIT_NOT_SUPPORTED.result()


class ScsiCommandRunner:
    """The command side of a Connection (a mixin: the state lives on the connection)."""

    server: TargetServices
    session: Session | None
    peer: str
    draining: bool
    lock: threading.Lock
    tasks: dict[int, Task]
    _closing: bool
    _posted: dict[int | None, Task]
    _workers: dict[int | None, LunWorker]

    def _on_scsi_cmd(self, hdr: Header, data: memoryview) -> None:
        session = self.session
        assert session is not None
        if session.discovery:
            self._reject(hdr.raw, RejectReason.PROTOCOL_ERROR)
            return
        immediate = hdr.immediate
        if not session.accept_cmdsn(hdr.words[1], immediate, task=True):
            log.debug("%s: CmdSN %d outside window, ignored", self.peer, hdr.words[1])
            time.sleep(MISBEHAVING_PAUSE)
            return
        itt = hdr.itt
        if itt in self.tasks or itt == ALL_ONES:
            self._refuse(hdr.raw, RejectReason.TASK_IN_PROGRESS
                         if itt in self.tasks else RejectReason.INVALID_PDU_FIELD, immediate)
            return
        if immediate and len(self.tasks) >= session.queue_depth:
            # Immediate commands hold no CmdSN slot: bound them by the task table instead.
            self._reject(hdr.raw, RejectReason.IMMEDIATE_COMMAND_REJECT)
            time.sleep(MISBEHAVING_PAUSE)
            return
        if self.draining:
            # Shutting down: finish what is in flight, ask for new commands to be retried.
            self._answer(Task(itt, hdr.lun, None, b"", 0, False, False, slot=not immediate),
                         ScsiResult(Status.BUSY))
            return
        raw = hdr.raw
        cdb = raw[32:_CDB_END[raw[32] >> 5]]  # the CDB's own length, by its group code
        if hdr.ahs:
            cdb = self._extended_cdb(hdr, raw[32:48])
            if cdb is None:
                self._refuse(raw, RejectReason.INVALID_PDU_FIELD, immediate)
                return
        flags = hdr.flags
        write = bool(flags & 0x20)
        edtl = hdr.words[0]
        dsl = hdr.dsl
        if dsl:
            p = session.params
            if not write or not p.immediate_data or dsl > p.first_burst or dsl > edtl:
                self._refuse(raw, RejectReason.PROTOCOL_ERROR, immediate)
                return
        lun_raw = hdr.lun
        lun = lun_raw[1] if lun_raw == _LUN_FAST[lun_raw[1]] else pdu.decode_lun(lun_raw)
        task = Task(itt, lun_raw, lun, cdb, edtl, bool(flags & 0x40), write, slot=not immediate)
        if write and edtl:
            self._start_write(task, hdr)
            return
        with self.lock:
            self.tasks[itt] = task
        self._execute(task)

    def _refuse(self, header: bytes, reason: RejectReason, immediate: bool) -> None:
        """Reject a SCSI Command that never became a task, giving back its CmdSN slot."""
        if not immediate:
            with self.lock:
                self.session.freed += 1
        self._reject(header, reason)

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

    # ---- running commands ----------------------------------------------------------------
    def _execute(self, task: Task) -> None:
        """Run the command here (bounded commands) or on its LUN's worker thread."""
        task.state = TaskState.QUEUED
        session = self.session
        assert session is not None and session.target is not None
        cdb = task.cdb
        if cdb[0] == _REPORT_LUNS:  # belongs to the target, not to a device
            try:
                result = ScsiResult(Status.GOOD, report_luns(session.luns, cdb))
            except CheckCondition as exc:
                result = exc.result()
            self._answer(task, result)
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
            worker.post(self, self._run, worker, task)
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
            result = INTERNAL_TARGET_FAILURE.result()
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
        return INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT.result()
