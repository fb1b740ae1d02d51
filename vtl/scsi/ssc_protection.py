"""Logical block protection (SSC-4 4.2.27): the control data protection mode page 0x0A/0xF0
and the CRC32C each protected block carries between host and drive.

With LBP METHOD 2 (CRC32C, what LTO-7 and later use, and what IBM's LTFS turns on for them)
and LBP_W set, every block the host writes ends with 4 bytes of protection information: the
CRC32C of the block before them, least significant byte first (as LTFS's ``crc32c_enc``
appends it). The drive checks it and stores the block without it; a mismatch is ABORTED
COMMAND 10/01 LOGICAL BLOCK GUARD CHECK FAILED and nothing is written. With LBP_R the drive
appends the CRC to every block it reads, so lengths, ILI and residues count the 4 bytes.
The cartridge itself stays unchanged: its records carry their own CRC32C.

Reed-Solomon CRC (method 1, LTO-5/6) is not offered: MODE SELECT refuses it (26/00).
The streaming fast paths leave protected transfers to the general path (``active``).
"""

from __future__ import annotations

import crc32c

from tape_formats.cartridge import ReadResult, RecordKind, TapeCartridge
from vtl.scsi.pages import ModePage
from vtl.scsi.sense import LOGICAL_BLOCK_GUARD_CHECK_FAILED, invalid_field_in_parameter_list

LBP_NONE = 0
LBP_CRC32C = 2
PI_BYTES = 4  # protection information per block
_LBP_W, _LBP_R, _RBDP = 0x80, 0x40, 0x20


def protection_information(block: bytes | bytearray | memoryview) -> bytes:
    """The 4 bytes that follow ``block``: its CRC32C, least significant byte first."""
    return crc32c.crc32c(block).to_bytes(PI_BYTES, "little")


class ControlDataProtectionPage(ModePage):
    """0x0A/0xF0: LBP METHOD (body byte 0), LBP INFORMATION LENGTH (1), LBP_W, LBP_R and
    RBDP (2). Off by default, as on a drive that was just powered on."""

    def __init__(self) -> None:
        mask = bytearray(28)
        mask[0] = mask[1] = 0xFF
        mask[2] = _LBP_W | _LBP_R | _RBDP
        super().__init__(0x0A, bytes(28), bytes(mask), subpage=0xF0,
                         name="control data protection")

    def validate(self, body: bytes | memoryview, offset: int) -> None:
        method, length = body[0], body[1]
        if method not in (LBP_NONE, LBP_CRC32C):
            raise invalid_field_in_parameter_list(offset)
        if length != (PI_BYTES if method else 0):
            raise invalid_field_in_parameter_list(offset + 1)

    @property
    def write(self) -> bool:
        """LBP_W: blocks from the host end with protection information to check."""
        return self.current[0] == LBP_CRC32C and bool(self.current[2] & _LBP_W)

    @property
    def read(self) -> bool:
        """LBP_R: blocks to the host get protection information appended."""
        return self.current[0] == LBP_CRC32C and bool(self.current[2] & _LBP_R)

    @property
    def active(self) -> bool:
        return self.write or self.read

    def strip(self, block: memoryview) -> memoryview:
        """The block without its protection information, once that checks out."""
        if len(block) < PI_BYTES:
            raise LOGICAL_BLOCK_GUARD_CHECK_FAILED()
        data = block[:-PI_BYTES]
        if protection_information(data) != bytes(block[-PI_BYTES:]):
            raise LOGICAL_BLOCK_GUARD_CHECK_FAILED()
        return data

    @staticmethod
    def read_block(cart: TapeCartridge, buf: memoryview) -> ReadResult:
        """``cart.read_block`` with the protection information appended: the block as the
        host sees it is 4 bytes longer, and ``buf`` gets as much of it as fits."""
        r = cart.read_block(None, own=True)
        if r.kind != RecordKind.DATA:
            return r
        whole = bytes(r.data) + protection_information(r.data)
        n = min(len(buf), len(whole))
        buf[:n] = whole[:n]
        return ReadResult(RecordKind.DATA, len(whole), buf[:n])
