"""One SCSI task of a connection: the command, its write buffer and Data-Out progress.

Kept apart so every part of the connection (receiving Data-Out, running the command, sending
the response, task management) shares one definition without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from vtl.iscsi.session import TaskState


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
    slot: bool = False  # holds a CmdSN slot of the session's window until it ends
