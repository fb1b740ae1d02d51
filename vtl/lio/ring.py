"""The TCMU shared ring: the mailbox, the command ring and the data area, read and answered.

This module owns the byte layout of the memory the kernel's target_core_user shares with a
handler through a UIO device, and nothing else: no threads, no files, no SCSI. It works on
any writable buffer (the ``mmap`` of ``/dev/uioN``, or a ``bytearray`` laid out the same way
in the unit tests).

Layout (Linux ``include/uapi/linux/target_core_user.h``, TCMU_MAILBOX_VERSION 2, "Ring
Design"; all fields little-endian on the machines we run on, declared once below):

* ``struct tcmu_mailbox`` at offset 0: ``version u16, flags u16, cmdr_off u32, cmdr_size u32,
  cmd_head u32`` and, on its own cache line (``__aligned__(64)``), ``cmd_tail u32`` at 64.
  The kernel moves ``cmd_head``; the handler moves ``cmd_tail``.
* The command ring, ``cmdr_size`` bytes from ``cmdr_off``: ``struct tcmu_cmd_entry`` records,
  each starting with ``struct tcmu_cmd_entry_hdr`` (``len_op u32`` = length | opcode in the
  low 3 bits, ``cmd_id u16, kflags u8, uflags u8``). A PAD entry fills the ring's end so that
  no entry wraps; a CMD entry's request (``iov_cnt, iov_bidi_cnt, iov_dif_cnt u32``, 4 bytes
  of alignment, ``cdb_off u64``, two u64 pads) is followed by ``struct iovec`` pairs (``iov_base``, an *offset* into
  the shared area, and ``iov_len``, both u64). The response overwrites the request in place:
  ``scsi_status u8, pad u8, pad u16, read_len u32, sense_buffer[96]``.
* The data area: everything after the ring; the iovecs point into it.

A handler answers entries in ring order: it reads the CDB and iovecs *before* writing the
response over them, then moves ``cmd_tail`` past the entry and kicks the kernel (a write to
the UIO fd, :mod:`vtl.lio.uio`). The kernel matches a completion by the ``cmd_id`` found at
the tail, so in-order completion needs no out-of-order capability.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# struct tcmu_mailbox (packed; cmd_tail aligned to ALIGN_SIZE = 64)
MAILBOX_HEAD = struct.Struct("<HHIII")  # version, flags, cmdr_off, cmdr_size, cmd_head
CMD_HEAD_OFFSET = 12
CMD_TAIL_OFFSET = 64
MAILBOX_SIZE = 128  # sizeof(struct tcmu_mailbox): the kernel's CMDR_OFF
MAILBOX_VERSION = 2
FLAG_CAP_OOOC = 1 << 0  # out-of-order completions (unused: we complete in order)
FLAG_CAP_READ_LEN = 1 << 1  # the kernel reads rsp.read_len when UFLAG_READ_LEN is set
FLAG_CAP_TMR = 1 << 2  # TMR notifications may appear in the ring
FLAG_CAP_KEEP_BUF = 1 << 3

# struct tcmu_cmd_entry_hdr
ENTRY_HDR = struct.Struct("<IHBB")  # len_op, cmd_id, kflags, uflags
OP_MASK = 0x7
UFLAG_UNKNOWN_OP = 0x1  # a CMD the handler does not know (we answer every CDB instead)
UFLAG_READ_LEN = 0x2
# req: after the header. ``packed`` applies to tcmu_cmd_entry's own members only: the req
# struct inside the union keeps natural alignment, so 4 pad bytes put cdb_off at 16 in req
# (24 in the entry) and the iovecs at 48.
REQ = struct.Struct("<III4xQQQ")  # iov_cnt, iov_bidi_cnt, iov_dif_cnt, cdb_off, pads
IOVEC = struct.Struct("<QQ")  # struct iovec on a 64-bit kernel: iov_base, iov_len
REQ_IOV_OFFSET = ENTRY_HDR.size + REQ.size  # 48
# rsp: over the req, after the header
RSP = struct.Struct("<BBHI")  # scsi_status, __pad1, __pad2, read_len
SENSE_OFFSET = ENTRY_HDR.size + RSP.size  # 16
SENSE_BUFFERSIZE = 96  # TCMU_SENSE_BUFFERSIZE
UFLAGS_OFFSET = 7

# scsi_command_size(): CDB length by group code (the kernel copies this many bytes).
_CDB_LENGTH_BY_GROUP = (6, 10, 10, 12, 16, 12, 10, 10)
VARIABLE_LENGTH_CMD = 0x7F


class Op(enum.IntEnum):
    """enum tcmu_opcode."""

    PAD = 0
    CMD = 1
    TMR = 2


class RingError(Exception):
    """The shared area does not look like a TCMU ring we can serve (wrong version, bad
    offsets): the device is left alone rather than answered with garbage."""


def cdb_length(first_bytes: bytes | memoryview) -> int:
    """How many CDB bytes the kernel placed at ``cdb_off`` (its ``scsi_command_size``)."""
    opcode = first_bytes[0]
    if opcode == VARIABLE_LENGTH_CMD:
        return 8 + first_bytes[7]
    return _CDB_LENGTH_BY_GROUP[opcode >> 5]


@dataclass(slots=True)
class Command:
    """One SCSI command taken from the ring: where its entry is, its CDB and data buffers.

    ``iovecs`` are (offset into the shared area, length) pairs, in transfer order; for a
    Data-Out command they hold the initiator's data, for Data-In they are where ours goes.
    """

    offset: int  # of the entry, from the ring's start
    length: int  # of the entry (what cmd_tail moves by)
    cmd_id: int
    cdb: bytes
    iovecs: list[tuple[int, int]]

    @property
    def data_length(self) -> int:
        return sum(n for _, n in self.iovecs)


class Ring:
    """A view of one device's shared area, as a handler sees it.

    ``pending()`` yields the entries between the handler's tail and the kernel's head in
    ring order: PAD entries (and TMR notifications, which the kernel sends only when
    ``tmr_notification`` is enabled, and which need no answer) are passed over.
    ``complete()`` answers one command and moves the tail past it and every entry passed
    over before it; ``skip_to_head()`` gives back trailing ones.
    """

    def __init__(self, area) -> None:
        self.mem = memoryview(area).cast("B")
        version, self.flags, self.cmdr_off, self.cmdr_size, _ = MAILBOX_HEAD.unpack_from(
            self.mem, 0)
        if version != MAILBOX_VERSION:
            raise RingError(f"TCMU mailbox version {version}, expected {MAILBOX_VERSION}")
        if (self.cmdr_off < MAILBOX_SIZE or self.cmdr_size == 0
                or self.cmdr_off + self.cmdr_size > len(self.mem)):
            raise RingError(f"TCMU command ring {self.cmdr_off}+{self.cmdr_size} outside the "
                            f"{len(self.mem)}-byte area")

    # ---- the two cursors
    @property
    def head(self) -> int:
        return int.from_bytes(self.mem[CMD_HEAD_OFFSET:CMD_HEAD_OFFSET + 4], "little")

    @property
    def tail(self) -> int:
        return int.from_bytes(self.mem[CMD_TAIL_OFFSET:CMD_TAIL_OFFSET + 4], "little")

    def _set_tail(self, value: int) -> None:
        self.mem[CMD_TAIL_OFFSET:CMD_TAIL_OFFSET + 4] = value.to_bytes(4, "little")

    def has_pending(self) -> bool:
        return self.head != self.tail

    @property
    def reports_read_len(self) -> bool:
        return bool(self.flags & FLAG_CAP_READ_LEN)

    # ---- taking entries
    def pending(self) -> Iterator[Command]:
        """The commands waiting, in ring order. Entries that need no answer (PAD, TMR) are
        passed over; the tail moves past them when the next command is answered
        (or by :meth:`skip_to_head` when none follows)."""
        cursor = self.tail
        while cursor != self.head:
            entry = self.cmdr_off + cursor
            len_op, cmd_id, _kflags, _uflags = ENTRY_HDR.unpack_from(self.mem, entry)
            length = len_op & ~OP_MASK
            if length == 0 or length > self.cmdr_size:
                raise RingError(f"TCMU ring entry at {cursor} has length {length}")
            op = len_op & OP_MASK
            if op == Op.CMD:
                yield self._command(cursor, length, cmd_id)
            cursor = (cursor + length) % self.cmdr_size

    def _command(self, cursor: int, length: int, cmd_id: int) -> Command:
        entry = self.cmdr_off + cursor
        iov_cnt, _bidi, _dif, cdb_off, _, _ = REQ.unpack_from(self.mem, entry + ENTRY_HDR.size)
        if cdb_off >= len(self.mem):
            raise RingError(f"TCMU command {cmd_id}: CDB offset {cdb_off} outside the area")
        size = cdb_length(self.mem[cdb_off:cdb_off + 8])
        cdb = bytes(self.mem[cdb_off:cdb_off + size])
        iovecs = []
        for i in range(iov_cnt):
            base, n = IOVEC.unpack_from(self.mem, entry + REQ_IOV_OFFSET + i * IOVEC.size)
            if base + n > len(self.mem):
                raise RingError(f"TCMU command {cmd_id}: iovec {base}+{n} outside the area")
            iovecs.append((base, n))
        return Command(cursor, length, cmd_id, cdb, iovecs)

    # ---- data
    def gather(self, command: Command) -> bytearray:
        """The Data-Out bytes, copied out of the data area into one buffer the caller owns
        (the kernel reuses the area as soon as the command is answered)."""
        out = bytearray(command.data_length)
        pos = 0
        for base, n in command.iovecs:
            out[pos:pos + n] = self.mem[base:base + n]
            pos += n
        return out

    def scatter(self, command: Command, data: bytes | bytearray | memoryview) -> int:
        """Copy Data-In bytes into the command's iovecs; returns how many fitted."""
        src = memoryview(data).cast("B")
        pos = 0
        for base, n in command.iovecs:
            take = min(n, len(src) - pos)
            if take <= 0:
                break
            self.mem[base:base + take] = src[pos:pos + take]
            pos += take
        return pos

    # ---- answering
    def complete(self, command: Command, status: int, sense: bytes = b"",
                 read_len: int | None = None) -> None:
        """Write the response over the command's entry and move the tail past it.

        ``read_len`` (the Data-In bytes really transferred) is reported when the kernel can
        take it (FLAG_CAP_READ_LEN), so a short READ is an underflow, not stale bytes.
        """
        entry = self.cmdr_off + command.offset
        uflags = self.mem[entry + UFLAGS_OFFSET]
        if read_len is not None and self.reports_read_len:
            uflags |= UFLAG_READ_LEN
        self.mem[entry + UFLAGS_OFFSET] = uflags
        RSP.pack_into(self.mem, entry + ENTRY_HDR.size, status, 0, 0, read_len or 0)
        sense = sense[:SENSE_BUFFERSIZE]
        start = entry + SENSE_OFFSET
        self.mem[start:start + SENSE_BUFFERSIZE] = sense.ljust(SENSE_BUFFERSIZE, b"\0")
        self._set_tail((command.offset + command.length) % self.cmdr_size)

    def skip_to_head(self) -> bool:
        """Move the tail over trailing entries that need no answer (PAD, TMR), up
        to the first command. True if it moved (the kernel should be kicked)."""
        cursor = start = self.tail
        while cursor != self.head:
            len_op = ENTRY_HDR.unpack_from(self.mem, self.cmdr_off + cursor)[0]
            if len_op & OP_MASK == Op.CMD:
                break
            length = len_op & ~OP_MASK
            if length == 0:
                raise RingError(f"TCMU ring entry at {cursor} has length 0")
            cursor = (cursor + length) % self.cmdr_size
        if cursor != start:
            self._set_tail(cursor)
            return True
        return False
