"""What the embedded target exports and how it behaves: targets, ACLs, CHAP, limits.

Kept apart from the server so the CLI and the tests can build the same description without
starting anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vtl.config import InitiatorAcl
from vtl.iscsi.chap import ChapCredentials
from vtl.scsi.base import DeviceSet


@dataclass
class TargetConfig:
    """One iSCSI target: its name, its LUN map and who may log in to it."""

    iqn: str
    devices: DeviceSet
    alias: str = ""
    # Initiator IQNs allowed to log in; empty means everyone (after CHAP, if configured).
    allowed_initiators: frozenset[str] = frozenset()
    # Per-initiator ACLs (library.toml [acl."IQN"]): with any, an initiator needs one (or to be
    # in allowed_initiators) to log in; its CHAP and LUNs then come from it. The server swaps
    # the whole dict on a reload (IscsiTarget.apply_acls), never edits it in place.
    acls: dict[str, InitiatorAcl] = field(default_factory=dict)

    def allows(self, initiator: str) -> bool:
        if not self.allowed_initiators and not self.acls:
            return True
        return initiator in self.allowed_initiators or initiator in self.acls

    def visible_luns(self, initiator: str) -> frozenset[int]:
        """The LUNs ``initiator`` sees: its ACL's list (those that exist), else all."""
        acl = self.acls.get(initiator)
        luns = frozenset(self.devices.luns)
        if acl is None or acl.luns is None:
            return luns
        return luns & frozenset(acl.luns)

    def credentials(self, initiator: str, chap: ChapCredentials | None,
                    mutual: ChapCredentials | None
                    ) -> tuple[ChapCredentials | None, ChapCredentials | None]:
        """(CHAP, mutual CHAP) ``initiator`` logs in with: its ACL's where set, else the
        server-wide ``chap``/``mutual``."""
        acl = self.acls.get(initiator)
        if acl is not None and acl.chap_user:
            chap = ChapCredentials(acl.chap_user, acl.chap_secret)
            mutual = (ChapCredentials(acl.mutual_user, acl.mutual_secret)
                      if acl.mutual_user else mutual)
        return chap, mutual


@dataclass
class Limits:
    """The target's side of the operational negotiation, plus resource bounds."""

    max_recv_data_segment_length: int = 262144  # what we accept per PDU
    max_burst_length: int = 16776192
    first_burst_length: int = 262144
    max_outstanding_r2t: int = 4
    immediate_data: bool = True
    initial_r2t: bool = False
    default_time2wait: int = 2
    default_time2retain: int = 0  # ErrorRecoveryLevel 0: nothing to retain
    queue_depth: int = 32  # CmdSN window
    max_transfer: int = 64 << 20  # largest Expected Data Transfer Length accepted
    max_buffered: int = 256 << 20  # write data one connection may hold before TASK SET FULL
    # Responses one connection may hold for an initiator that does not read them; beyond,
    # the sender waits (with the CmdSN window, rarely reached: QueueDepth responses).
    max_unsent: int = 16 << 20
    # Output the initiator may leave unread in the socket before the connection stops
    # reading its PDUs (framing.py _await_reader). Two 3 s floods of INQUIRYs from four
    # never-reading initiators (and the server's start) cost it 7.2 s of CPU unbounded (the
    # kernel's buffers take megabytes first), 6.0 s at 1 MiB, 4.0-4.6 s at 512 KiB, 3.3-3.8 s
    # at 256 KiB (2026-12-04, load 4-6). A READ streaming to a slower pipelined reader keeps
    # this much queued for it.
    max_unread: int = 512 << 10
    nop_interval: float = 30.0  # seconds of silence before a NOP-In ping (0 = never)
    nop_timeout: float = 30.0  # seconds to wait for the ping's answer before dropping
    login_timeout: float = 15.0  # seconds a connection may take to finish logging in
    # A logged-in connection costs a thread: past the portal's cap a new one pushes out the
    # oldest one not logged in yet, else is closed; past the initiator's the login is refused.
    max_connections_per_portal: int = 64
    max_connections_per_initiator: int = 8
    # Digests the target is willing to use, per RFC 7143 6.2.1 ("the first value in the
    # initiator's list that the target supports and is allowed to use"): ("CRC32C",) makes
    # CRC32C mandatory even when an initiator lists None first.
    header_digests: tuple[str, ...] = ("None", "CRC32C")
    data_digests: tuple[str, ...] = ("None", "CRC32C")


@dataclass
class ServerConfig:
    """Everything the target needs: portals, targets, CHAP and limits."""

    targets: list[TargetConfig]
    portals: list[tuple[str, int]] = field(default_factory=lambda: [("127.0.0.1", 3260)])
    chap: ChapCredentials | None = None  # initiator must authenticate with these
    mutual_chap: ChapCredentials | None = None  # the target answers mutual CHAP with these
    limits: Limits = field(default_factory=Limits)
    portal_group_tag: int = 1

    def target(self, iqn: str) -> TargetConfig | None:
        for t in self.targets:
            if t.iqn.lower() == iqn.lower():
                return t
        return None
