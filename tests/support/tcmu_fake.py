"""The kernel's side of a TCMU ring, in a bytearray: what target_core_user would write.

Lays out the mailbox, command ring and data area as ``include/uapi/linux/target_core_user.h``
says (the handler reads them through vtl.lio.ring), queues commands the way
``queue_cmd_ring`` does (a PAD entry when the next entry does not fit before the ring's end,
the CDB stored in the ring right after the entry's iovecs, data in the data area), and reads
the responses back. Used by the ring unit tests instead of a real /dev/uioN.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vtl.lio import ring as r

ENTRY_BASE = 112  # sizeof(struct tcmu_cmd_entry): header + the larger (rsp) union member


def _align8(n: int) -> int:
    return (n + 7) & ~7


@dataclass
class Response:
    status: int
    sense: bytes
    read_len: int | None
    data: bytes
    unknown_op: bool


class FakeKernel:
    """A shared area of ``cmdr_size`` ring bytes and ``data_size`` data bytes."""

    def __init__(self, cmdr_size: int = 4096, data_size: int = 1 << 20,
                 flags: int = r.FLAG_CAP_READ_LEN) -> None:
        self.cmdr_off = r.MAILBOX_SIZE
        self.cmdr_size = cmdr_size
        self.data_off = self.cmdr_off + cmdr_size
        self.area = bytearray(self.data_off + data_size)
        r.MAILBOX_HEAD.pack_into(self.area, 0, r.MAILBOX_VERSION, flags, self.cmdr_off,
                                 cmdr_size, 0)
        self.head = 0
        self.data_next = self.data_off
        self.next_id = 1
        self.entries: dict[int, tuple[int, list[tuple[int, int]]]] = {}  # id -> (pos, iovs)

    @property
    def tail(self) -> int:
        return struct.unpack_from("<I", self.area, r.CMD_TAIL_OFFSET)[0]

    def _set_head(self, head: int) -> None:
        self.head = head
        struct.pack_into("<I", self.area, r.CMD_HEAD_OFFSET, head)

    def _room(self, size: int) -> None:
        """Write a PAD entry if an entry of ``size`` would run past the ring's end."""
        left = self.cmdr_size - self.head
        if left < size:
            struct.pack_into("<IHBB", self.area, self.cmdr_off + self.head,
                             left | r.Op.PAD, 0, 0, 0)
            self._set_head(0)

    def _data(self, n: int) -> int:
        if self.data_next + n > len(self.area):
            self.data_next = self.data_off
        at = self.data_next
        self.data_next += n
        return at

    def submit(self, cdb: bytes, *, data_out: bytes = b"", data_in: int = 0,
               iov_sizes: list[int] | None = None) -> int:
        """Queue one command; ``iov_sizes`` splits its buffer into several iovecs."""
        total = len(data_out) or data_in
        sizes = iov_sizes or ([total] if total else [])
        assert sum(sizes) == total
        base = _align8(ENTRY_BASE + len(sizes) * r.IOVEC.size)
        size = _align8(base + len(cdb))
        self._room(size)
        pos = self.head
        entry = self.cmdr_off + pos
        cmd_id = self.next_id
        self.next_id += 1
        iovs = []
        offset = 0
        for n in sizes:
            at = self._data(n)
            self.area[at:at + n] = data_out[offset:offset + n] if data_out else b"\xee" * n
            iovs.append((at, n))
            offset += n
        struct.pack_into("<IHBB", self.area, entry, size | r.Op.CMD, cmd_id, 0, 0)
        cdb_off = entry + base
        r.REQ.pack_into(self.area, entry + r.ENTRY_HDR.size, len(iovs), 0, 0, cdb_off, 0, 0)
        for i, (at, n) in enumerate(iovs):
            r.IOVEC.pack_into(self.area, entry + r.REQ_IOV_OFFSET + i * r.IOVEC.size, at, n)
        self.area[cdb_off:cdb_off + len(cdb)] = cdb
        self._set_head((pos + size) % self.cmdr_size)
        self.entries[cmd_id] = (pos, iovs)
        return cmd_id

    def submit_tmr(self) -> None:
        """A TMR notification (abort task set, no commands named)."""
        size = _align8(r.ENTRY_HDR.size + 24)
        self._room(size)
        struct.pack_into("<IHBB", self.area, self.cmdr_off + self.head, size | r.Op.TMR, 0, 0,
                         0)
        self._set_head((self.head + size) % self.cmdr_size)

    def response(self, cmd_id: int) -> Response:
        pos, iovs = self.entries[cmd_id]
        entry = self.cmdr_off + pos
        _, got_id, _, uflags = struct.unpack_from("<IHBB", self.area, entry)
        assert got_id == cmd_id
        status, _, _, read_len = r.RSP.unpack_from(self.area, entry + r.ENTRY_HDR.size)
        sense = bytes(self.area[entry + r.SENSE_OFFSET:entry + r.SENSE_OFFSET + 96])
        valid = read_len if uflags & r.UFLAG_READ_LEN else None
        data = b"".join(bytes(self.area[a:a + n]) for a, n in iovs)
        if valid is not None:
            data = data[:valid]
        return Response(status, sense, valid, data,
                        bool(uflags & r.UFLAG_UNKNOWN_OP))
