"""SEND DIAGNOSTIC and READ BUFFER of a tape drive: self-test and the "drive dump".

IBM's LTFS takes a drive dump after most errors from an IBM drive (even the power-on UNIT
ATTENTION): SEND DIAGNOSTIC with the vendor page 0x80, diagnostic 0x0160 ("force dump"),
then READ BUFFER mode 3 (descriptor: how big the dump is) and mode 2 (the data) of buffer
1, which it saves to a file. A drive that refuses both opcodes makes LTFS recurse in its
error path until it crashes, so the drive answers them: the self-test passes, the force-dump
diagnostic takes a snapshot of the drive's state, and READ BUFFER returns it. The dump is a
short text (identity, serial, time, cartridge, position, counters), not IBM's binary format:
nothing reads it but a person.

Conditions: an unknown self-test code, diagnostic page, READ BUFFER mode, buffer id or an
offset past the dump are ILLEGAL REQUEST 24/00 or 26/00 with the field pointer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from vtl.scsi.opcodes import Opcode
from vtl.scsi.sense import invalid_field_in_cdb, invalid_field_in_parameter_list
from vtl.scsi.spc import PR_READ, PR_WRITE, Request, command, parameter_list_length, trunc

if TYPE_CHECKING:
    from tape_formats.cartridge import TapeCartridge
    from vtl.scsi.identities import DriveIdentity

SELFTEST = 0x04  # SEND DIAGNOSTIC byte 1: the default self-test
PF = 0x10  # page format parameter list
VENDOR_DIAGNOSTIC_PAGE = 0x80
FORCE_DUMP = 0x0160
READ_BUFFER_DATA = 0x02
READ_BUFFER_DESCRIPTOR = 0x03
DUMP_BUFFERS = (0x00, 0x01)  # IBM enterprise drives dump buffer 0, LTO drives buffer 1


class DiagnosticCommands:
    """SEND DIAGNOSTIC and READ BUFFER for ``TapeDrive`` (a mixin: the commands join its
    ``@command`` table). Uses the drive's identity, serial and loaded cartridge."""

    identity: DriveIdentity
    serial: str
    _ready_cart: Callable[[], TapeCartridge | None]
    _dump: bytes | None = None

    def _take_dump(self) -> bytes:
        """The drive's state as a short text, padded to a multiple of 4 bytes."""
        ident = self.identity
        cart = self._ready_cart()
        lines = [
            "vtl drive dump",
            f"drive {ident.vendor} {ident.product} {ident.revision} serial {self.serial}",
            f"time {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
        ]
        if cart is not None:
            lines.append(f"cartridge {cart.barcode} {cart.media.name} position {cart.position}"
                         f" eod {cart.eod} used {cart.used_bytes} of {cart.capacity}")
        else:
            lines.append("cartridge none")
        text = ("\n".join(lines) + "\n").encode()
        return text + bytes(-len(text) % 4)

    @command(Opcode.SEND_DIAGNOSTIC, "SEND DIAGNOSTIC", "1d f7 00 ff ff 00", pr=PR_WRITE,
             timeout=600, data_out=parameter_list_length(3, 2))
    def cmd_send_diagnostic(self, req: Request) -> None:
        b1, length = req.cdb[1], req.u16(3)
        if b1 & SELFTEST:
            if b1 & 0xE0 or length:  # the default self-test takes no code and no list
                raise invalid_field_in_cdb(1, 2)
            return
        if b1 >> 5:  # background/foreground self-test codes: not offered
            raise invalid_field_in_cdb(1, 7)
        if length == 0:
            return
        if not b1 & PF:
            raise invalid_field_in_cdb(1, 4)
        params = req.param_list(length)
        if length < 6 or params[0] != VENDOR_DIAGNOSTIC_PAGE:
            raise invalid_field_in_parameter_list(0)
        if int.from_bytes(params[4:6], "big") != FORCE_DUMP:
            raise invalid_field_in_parameter_list(4)
        self._dump = self._take_dump()

    @command(Opcode.READ_BUFFER, "READ BUFFER", "3c 1f ff ff ff ff ff ff ff 00", pr=PR_READ)
    def cmd_read_buffer(self, req: Request) -> bytes:
        mode, buffer_id, offset = req.cdb[1] & 0x1F, req.cdb[2], req.u24(3)
        alloc = req.u24(6)
        if mode not in (READ_BUFFER_DATA, READ_BUFFER_DESCRIPTOR):
            raise invalid_field_in_cdb(1, 4)
        if buffer_id not in DUMP_BUFFERS:
            raise invalid_field_in_cdb(2)
        dump = self._dump if self._dump is not None else self._take_dump()
        if mode == READ_BUFFER_DESCRIPTOR:
            return trunc(bytes([0]) + len(dump).to_bytes(3, "big"), alloc)
        if offset > len(dump):
            raise invalid_field_in_cdb(3)
        return dump[offset:offset + alloc]
