"""Persistent reservations (SPC-4 5.9) for one logical unit, as a small state machine.

Kept apart from the CDB plumbing in ``spc.py`` so the rules (who may register, reserve,
release, clear and preempt, who conflicts with whom, which UNIT ATTENTIONs follow) can be read
and tested in one place. Registrations belong to an I_T nexus; there is at most one
reservation. State is in memory only: APTPL (persist through power loss) is not offered, and
REPORT CAPABILITIES says so.

Methods return False where SPC-4 answers RESERVATION CONFLICT, and raise ``CheckCondition``
for the ILLEGAL REQUEST cases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vtl.scsi.base import Nexus
from vtl.scsi.sense import (
    INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
    UnitAttention,
    invalid_field_in_parameter_list,
)

# Reservation types (SPC-4 table "Persistent reservation type codes").
WRITE_EXCLUSIVE = 1
EXCLUSIVE_ACCESS = 3
WRITE_EXCLUSIVE_RO = 5
EXCLUSIVE_ACCESS_RO = 6
WRITE_EXCLUSIVE_AR = 7
EXCLUSIVE_ACCESS_AR = 8
TYPES = frozenset({1, 3, 5, 6, 7, 8})
EA_FAMILY = frozenset({EXCLUSIVE_ACCESS, EXCLUSIVE_ACCESS_RO, EXCLUSIVE_ACCESS_AR})
REGISTRANTS_TYPES = frozenset({5, 6, 7, 8})  # registrants-only and all-registrants
ALL_REGISTRANTS = frozenset({WRITE_EXCLUSIVE_AR, EXCLUSIVE_ACCESS_AR})

# Command classes for the conflict check (SPC-4 5.9.1, commands allowed in the presence of
# various reservations).
ALLOWED = 0  # allowed from any nexus, whatever is reserved
READ = 1  # conflicts only under Exclusive Access types, for non-holders
WRITE = 2  # conflicts under every type, for non-holders


@dataclass(slots=True)
class Reservation:
    holder: Nexus
    type: int
    scope: int = 0


def transport_id(nexus: Nexus) -> bytes:
    """An iSCSI TransportID (SPC-4 7.6.4.6, format 00b): the initiator name, NUL padded."""
    name = (nexus.transport_id or nexus.initiator.split(",")[0]).encode("utf-8") + b"\0"
    name += b"\0" * (-len(name) % 4)
    return bytes((0x05, 0)) + len(name).to_bytes(2, "big") + name


class PersistentReservations:
    """Registrations and the reservation of one logical unit.

    ``notify(ua, nexus)`` queues a UNIT ATTENTION for one nexus (the model's UA queue).
    """

    def __init__(self, notify: Callable[[UnitAttention, Nexus], None]) -> None:
        self.keys: dict[Nexus, int] = {}
        self.reservation: Reservation | None = None
        self.generation = 0
        self._notify = notify

    # ---- queries ------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Any registration or reservation exists (RESERVE(6) then conflicts)."""
        return bool(self.keys) or self.reservation is not None

    def holder_like(self, nexus: Nexus) -> bool:
        """Whether ``nexus`` may act as the reservation holder (no reservation: everyone)."""
        res = self.reservation
        if res is None:
            return True
        if res.type in REGISTRANTS_TYPES:
            return nexus in self.keys
        return res.holder == nexus

    def conflicts(self, nexus: Nexus, cls: int) -> bool:
        """Whether a command of class ``cls`` from ``nexus`` gets RESERVATION CONFLICT."""
        res = self.reservation
        if cls == ALLOWED or res is None or self.holder_like(nexus):
            return False
        return cls == WRITE or res.type in EA_FAMILY

    def _key_matches(self, nexus: Nexus, key: int) -> bool:
        return nexus in self.keys and self.keys[nexus] == key

    def _bump(self) -> None:
        self.generation = (self.generation + 1) & 0xFFFFFFFF

    def _tell_others(self, ua: UnitAttention, me: Nexus | None) -> None:
        for nx in self.keys:
            if nx != me:
                self._notify(ua, nx)

    # ---- PERSISTENT RESERVE OUT ----------------------------------------------------------
    def register(self, nexus: Nexus, key: int, sa_key: int, *, ignore_existing: bool) -> bool:
        """REGISTER / REGISTER AND IGNORE EXISTING KEY; SA key 0 unregisters."""
        registered = nexus in self.keys
        if not ignore_existing:
            if not registered and key != 0:
                return False
            if registered and self.keys[nexus] != key:
                return False
        if sa_key == 0:
            if registered:
                self._unregister(nexus)
        else:
            self.keys[nexus] = sa_key
        self._bump()
        return True

    def _unregister(self, nexus: Nexus) -> None:
        """Remove one registration; a holder losing it releases (SPC-4 5.9.11)."""
        del self.keys[nexus]
        res = self.reservation
        if res is None:
            return
        if res.type in ALL_REGISTRANTS:
            if not self.keys:
                self.reservation = None
        elif res.holder == nexus:
            self.reservation = None
            if res.type in REGISTRANTS_TYPES:
                self._tell_others(UnitAttention.RESERVATIONS_RELEASED, None)

    def reserve(self, nexus: Nexus, key: int, scope: int, typ: int) -> bool:
        if not self._key_matches(nexus, key):
            return False
        res = self.reservation
        if res is not None:
            # Re-reserving what one already holds is fine; anything else conflicts.
            return self.holder_like(nexus) and res.type == typ and res.scope == scope
        self.reservation = Reservation(nexus, typ, scope)
        return True

    def release(self, nexus: Nexus, key: int, scope: int, typ: int) -> bool:
        if not self._key_matches(nexus, key):
            return False
        res = self.reservation
        if res is None or not self.holder_like(nexus):
            return True  # nothing of ours to release: GOOD, no change
        if res.type != typ or res.scope != scope:
            raise INVALID_RELEASE_OF_PERSISTENT_RESERVATION()
        self.reservation = None
        if res.type in REGISTRANTS_TYPES:
            self._tell_others(UnitAttention.RESERVATIONS_RELEASED, nexus)
        return True

    def clear(self, nexus: Nexus, key: int) -> bool:
        if not self._key_matches(nexus, key):
            return False
        self._tell_others(UnitAttention.RESERVATIONS_PREEMPTED, nexus)
        self.keys.clear()
        self.reservation = None
        self._bump()
        return True

    def preempt(self, nexus: Nexus, key: int, sa_key: int, scope: int, typ: int) -> bool:
        """PREEMPT (and PREEMPT AND ABORT: commands run one at a time, nothing to abort)."""
        if not self._key_matches(nexus, key):
            return False
        res = self.reservation
        if res is not None and res.type in ALL_REGISTRANTS:
            if sa_key == 0:
                victims = [nx for nx in self.keys if nx != nexus]
                self.reservation = Reservation(nexus, typ, scope)
            else:
                victims = [nx for nx, k in self.keys.items() if k == sa_key and nx != nexus]
        else:
            if sa_key == 0:
                raise invalid_field_in_parameter_list(8)
            matching = [nx for nx, k in self.keys.items() if k == sa_key]
            if not matching:
                return False
            victims = [nx for nx in matching if nx != nexus]  # the preemptor stays registered
            if res is not None and self.keys.get(res.holder) == sa_key:
                self.reservation = Reservation(nexus, typ, scope)
        for nx in victims:
            del self.keys[nx]
            self._notify(UnitAttention.REGISTRATIONS_PREEMPTED, nx)
        new = self.reservation
        if res is not None and new is not None and (new.type, new.scope) != (res.type, res.scope):
            self._tell_others(UnitAttention.RESERVATIONS_RELEASED, nexus)
        self._bump()
        return True

    # ---- PERSISTENT RESERVE IN ------------------------------------------------------------
    def read_keys(self) -> bytes:
        keys = b"".join(k.to_bytes(8, "big") for k in self.keys.values())
        return self.generation.to_bytes(4, "big") + len(keys).to_bytes(4, "big") + keys

    def read_reservation(self) -> bytes:
        res = self.reservation
        head = self.generation.to_bytes(4, "big")
        if res is None:
            return head + bytes(4)
        key = 0 if res.type in ALL_REGISTRANTS else self.keys.get(res.holder, 0)
        body = key.to_bytes(8, "big") + bytes(4) + bytes((0, (res.scope << 4) | res.type))
        return head + (16).to_bytes(4, "big") + body + bytes(2)

    def full_status(self) -> bytes:
        res = self.reservation
        descs = bytearray()
        for nx, key in self.keys.items():
            holder = res is not None and (res.holder == nx or res.type in ALL_REGISTRANTS)
            tid = transport_id(nx)
            scope_type = ((res.scope << 4) | res.type) if holder and res is not None else 0
            descs += key.to_bytes(8, "big") + bytes(4)
            descs += bytes((0x01 if holder else 0x00, scope_type))
            descs += bytes(4) + (1).to_bytes(2, "big") + len(tid).to_bytes(4, "big") + tid
        return self.generation.to_bytes(4, "big") + len(descs).to_bytes(4, "big") + bytes(descs)

    @staticmethod
    def capabilities() -> bytes:
        data = bytearray(8)
        data[1] = 8
        data[2] = 0x10 | 0x04  # CRH (compatible reservation handling), ATP_C
        data[3] = 0x80  # TMV: the type mask below is valid
        data[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02  # WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX
        data[5] = 0x01  # EX_AC_AR
        return bytes(data)
