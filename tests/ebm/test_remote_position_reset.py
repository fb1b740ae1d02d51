"""A drive that was reset under the EBM (a restarted target or TCMU handler: UNIT ATTENTION
29/00, maybe back at BOT) never gets a WRITE sent again blindly: the write is settled with
READ POSITION, resent only when the drive is where it was, else the job fails naming the
cartridge. Other commands still pass their UNIT ATTENTION by sending again."""

from __future__ import annotations

import struct

import pytest

from ebm.remote.initiator import STATUS_CHECK_CONDITION, STATUS_GOOD, PositionUncertain, ScsiResult
from ebm.remote.remote_library import RemoteCartridge, RemoteError
from ebm.remote.scsi_client import TapeDevice
from vtl.scsi.opcodes import Opcode


def _ua(asc: int, ascq: int = 0) -> bytes:
    return bytes([0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq])


class ResettingDrive:
    """Blocks at positions; ``reset(to)`` makes the next command answer 29/00 and moves the
    tape to ``to`` (a target that came back at BOT, or where it was)."""

    def __init__(self) -> None:
        self.position, self.blocks, self.pending_ua = 0, {}, None
        self.sent: list[int] = []

    def reset(self, to: int, asc: int = 0x29) -> None:
        self.position, self.pending_ua = to, asc

    def execute(self, lun, cdb, *, data_out=None, read_len=0, timeout=None, retry=None):
        self.sent.append(cdb[0])
        if self.pending_ua is not None:
            asc, self.pending_ua = self.pending_ua, None
            return ScsiResult(STATUS_CHECK_CONDITION, b"", _ua(asc))
        if cdb[0] == Opcode.WRITE_6:
            self.blocks[self.position] = bytes(data_out)
            self.position += 1
        elif cdb[0] == Opcode.READ_POSITION:
            data = bytes(8) + struct.pack(">QQ", self.position, 0) + bytes(8)
            return ScsiResult(STATUS_GOOD, data, b"")
        return ScsiResult(STATUS_GOOD, b"", b"")


def test_a_write_after_a_reset_is_not_sent_again_blindly():
    drive = ResettingDrive()
    tape = TapeDevice(drive, 1, "drive 0")
    drive.reset(to=0)
    with pytest.raises(PositionUncertain, match="29/00"):
        tape.write(b"x" * 512)
    assert drive.blocks == {}


def test_the_cartridge_resends_where_the_drive_still_is_and_refuses_after_bot():
    drive = ResettingDrive()
    cart = RemoteCartridge(TapeDevice(drive, 1, "drive 0"), "R00001L8")
    for i in range(3):
        cart.write_block(bytes([i]) * 100)
    drive.reset(to=3)  # reset, same place: settled by READ POSITION, written once
    cart.write_block(b"\x03" * 100)
    assert sorted(drive.blocks) == [0, 1, 2, 3] and cart.position == 4
    drive.reset(to=0)  # back at BOT: a blind resend would overwrite block 0
    with pytest.raises(RemoteError, match="R00001L8"):
        cart.write_block(b"\x04" * 100)
    assert drive.blocks[0] == b"\x00" * 100 and 4 not in drive.blocks


def test_other_commands_still_pass_a_unit_attention():
    drive = ResettingDrive()
    tape = TapeDevice(drive, 1, "drive 0")
    drive.position = 7
    drive.reset(to=7, asc=0x29)
    assert tape.read_position().object == 7  # sent again after the UNIT ATTENTION
    drive.reset(to=7, asc=0x2A)  # parameters changed: not a reset, a WRITE goes again
    assert tape.write(b"y" * 10) is False and drive.blocks[7] == b"y" * 10
