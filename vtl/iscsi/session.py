"""Session state that outlives a single PDU: identity, negotiated parameters, CmdSN window.

With MaxConnections=1 and ErrorRecoveryLevel=0 a session has exactly one connection, so this
is small: who the initiator is (the I_T nexus the device models see), the command numbering
window (RFC 7143 section 4.2.2) and the tasks in flight.

The window is what bounds the work one initiator can make the target hold: a SCSI command
that becomes a task keeps its CmdSN slot until the task ends (its response is handed to the
socket, or it is aborted), so MaxCmdSN advances only as tasks end, never past QueueDepth
commands in flight; commands beyond MaxCmdSN are dropped (RFC 7143 4.2.2.1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from vtl.iscsi.config import TargetConfig
from vtl.iscsi.login import SessionParams
from vtl.iscsi.pdu import ALL_ONES, serial_le, serial_lt
from vtl.scsi.base import Nexus


def make_nexus(initiator_name: str, isid: bytes) -> Nexus:
    """The per-session I_T nexus identity the models key reservations and UAs by."""
    return Nexus(
        initiator=f"{initiator_name},i,0x{int.from_bytes(isid, 'big'):012x}",
        transport_id=initiator_name,
    )


@dataclass
class Session:
    tsih: int
    isid: bytes
    initiator_name: str
    target: TargetConfig | None  # None for a discovery session
    params: SessionParams
    exp_cmdsn: int
    queue_depth: int
    nexus: Nexus = field(init=False)
    # CmdSN slots held by tasks: ``taken`` only grows on the connection's thread (before
    # ExpCmdSN moves, so a response built meanwhile on another thread never advertises a
    # MaxCmdSN above the true one), ``freed`` only under Connection.lock as tasks end.
    taken: int = field(init=False, default=0)
    freed: int = field(init=False, default=0)
    # The LUNs this session sees (its initiator's ACL, at login; a reload that takes one away
    # logs the session out rather than shrinking this under running commands).
    luns: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        self.nexus = make_nexus(self.initiator_name, self.isid)

    @property
    def discovery(self) -> bool:
        return self.target is None

    @property
    def max_cmdsn(self) -> int:
        exp = self.exp_cmdsn  # read before the slot counters (see ``taken``)
        return (exp + self.queue_depth - 1 - (self.taken - self.freed)) & ALL_ONES

    def accept_cmdsn(self, cmdsn: int, immediate: bool, task: bool = False) -> bool:
        """Apply the CmdSN rules; False means the PDU is outside the window and is ignored.

        Immediate commands carry the current CmdSN and do not advance it. A non-immediate
        command must fall in [ExpCmdSN, MaxCmdSN]; on one connection they arrive in order, so
        accepting one moves ExpCmdSN past it. ``task``: the command becomes a task that holds
        its slot until the caller frees it (``freed += 1`` under Connection.lock).
        """
        if immediate:
            return True
        held = self.taken - self.freed
        if cmdsn == self.exp_cmdsn and held < self.queue_depth:  # the usual case
            if task:
                self.taken += 1
            self.exp_cmdsn = (cmdsn + 1) & ALL_ONES
            return True
        if not (serial_le(self.exp_cmdsn, cmdsn) and serial_le(cmdsn, self.max_cmdsn)):
            return False
        if task:
            self.taken += 1
        if not serial_lt(cmdsn, self.exp_cmdsn):
            self.exp_cmdsn = (cmdsn + 1) & ALL_ONES
        return True


class TaskState(enum.Enum):
    RECEIVING = "receiving"  # waiting for Data-Out
    QUEUED = "queued"  # submitted to the LUN worker
    DONE = "done"
