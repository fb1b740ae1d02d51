"""Session state that outlives a single PDU: identity, negotiated parameters, CmdSN window.

With MaxConnections=1 and ErrorRecoveryLevel=0 a session has exactly one connection, so this
is small: who the initiator is (the I_T nexus the device models see), the command numbering
window (RFC 7143 section 4.2.2) and the tasks in flight.
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

    def __post_init__(self) -> None:
        self.nexus = make_nexus(self.initiator_name, self.isid)

    @property
    def discovery(self) -> bool:
        return self.target is None

    @property
    def max_cmdsn(self) -> int:
        return (self.exp_cmdsn + self.queue_depth - 1) & ALL_ONES

    def accept_cmdsn(self, cmdsn: int, immediate: bool) -> bool:
        """Apply the CmdSN rules; False means the PDU is outside the window and is ignored.

        Immediate commands carry the current CmdSN and do not advance it. A non-immediate
        command must fall in [ExpCmdSN, MaxCmdSN]; on one connection they arrive in order, so
        accepting one moves ExpCmdSN past it.
        """
        if immediate:
            return True
        if cmdsn == self.exp_cmdsn and self.queue_depth > 0:  # the usual case: next in order
            self.exp_cmdsn = (cmdsn + 1) & ALL_ONES
            return True
        if not (serial_le(self.exp_cmdsn, cmdsn) and serial_le(cmdsn, self.max_cmdsn)):
            return False
        if not serial_lt(cmdsn, self.exp_cmdsn):
            self.exp_cmdsn = (cmdsn + 1) & ALL_ONES
        return True


class TaskState(enum.Enum):
    RECEIVING = "receiving"  # waiting for Data-Out
    QUEUED = "queued"  # submitted to the LUN worker
    DONE = "done"
