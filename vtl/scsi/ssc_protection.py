"""Logical block protection (SSC-4 4.2.27): the control data protection mode page 0x0A/0xF0
and the CRC each protected block carries between host and drive.

With LBP_W set, every block the host writes ends with 4 bytes of protection information,
which the drive checks and then stores the block without; a mismatch is ABORTED COMMAND
10/01 LOGICAL BLOCK GUARD CHECK FAILED and nothing is written. With LBP_R the drive appends
them to every block it reads (READ and VERIFY), so lengths, ILI and residues count the 4
bytes. The cartridge itself stays unchanged: its records carry their own CRC32C.

Two methods, as LTO drives offer them (``methods_for_generation``):

- METHOD 1, Reed-Solomon CRC (ECMA-319, :mod:`vtl.scsi.reed_solomon_crc`), most significant
  byte first: LTO-5 and later; IBM's LTFS picks it for LTO-5/6.
- METHOD 2, CRC32C, least significant byte first (as LTFS's ``crc32c_enc`` appends it):
  LTO-7 and later; what LTFS turns on for them.

A method the drive does not offer is refused by MODE SELECT (26/00 at the LBP METHOD byte).
The streaming fast paths leave protected transfers to the general path (``active``).
"""

from __future__ import annotations

from collections.abc import Callable

import crc32c

from tape_formats.cartridge import ReadResult, RecordKind, TapeCartridge
from vtl.scsi.pages import ModePage
from vtl.scsi.reed_solomon_crc import rs_protection_information
from vtl.scsi.sense import LOGICAL_BLOCK_GUARD_CHECK_FAILED, invalid_field_in_parameter_list

LBP_NONE = 0
LBP_REED_SOLOMON = 1
LBP_CRC32C = 2
PI_BYTES = 4  # protection information per block
_LBP_W, _LBP_R, _RBDP = 0x80, 0x40, 0x20


def protection_information(block: bytes | bytearray | memoryview) -> bytes:
    """The 4 bytes that follow ``block`` under CRC32C: its CRC32C, least significant byte
    first."""
    return crc32c.crc32c(block).to_bytes(PI_BYTES, "little")


_PROTECTION: dict[int, Callable[[bytes | bytearray | memoryview], bytes]] = {
    LBP_REED_SOLOMON: rs_protection_information,
    LBP_CRC32C: protection_information,
}


def methods_for_generation(generation: int) -> frozenset[int]:
    """The LBP methods an LTO drive of ``generation`` offers: none before LTO-5,
    Reed-Solomon from LTO-5, CRC32C too from LTO-7."""
    methods = set()
    if generation >= 5:
        methods.add(LBP_REED_SOLOMON)
    if generation >= 7:
        methods.add(LBP_CRC32C)
    return frozenset(methods)


class ControlDataProtectionPage(ModePage):
    """0x0A/0xF0: LBP METHOD (body byte 0), LBP INFORMATION LENGTH (1), LBP_W, LBP_R and
    RBDP (2). Off by default, as on a drive that was just powered on."""

    def __init__(self, methods: frozenset[int] = frozenset(_PROTECTION)) -> None:
        mask = bytearray(28)
        mask[0] = mask[1] = 0xFF
        mask[2] = _LBP_W | _LBP_R | _RBDP
        super().__init__(0x0A, bytes(28), bytes(mask), subpage=0xF0,
                         name="control data protection")
        self.methods = methods

    def validate(self, body: bytes | memoryview, offset: int) -> None:
        method, length = body[0], body[1]
        if method != LBP_NONE and method not in self.methods:
            raise invalid_field_in_parameter_list(offset)
        if length != (PI_BYTES if method else 0):
            raise invalid_field_in_parameter_list(offset + 1)

    @property
    def method(self) -> int:
        """The LBP METHOD in effect (LBP_NONE, LBP_REED_SOLOMON or LBP_CRC32C)."""
        return self.current[0]

    @property
    def write(self) -> bool:
        """LBP_W: blocks from the host end with protection information to check."""
        return self.current[0] in _PROTECTION and bool(self.current[2] & _LBP_W)

    @property
    def read(self) -> bool:
        """LBP_R: blocks to the host get protection information appended."""
        return self.current[0] in _PROTECTION and bool(self.current[2] & _LBP_R)

    @property
    def active(self) -> bool:
        """LBP_W or LBP_R (asked on every streaming READ and WRITE: one call, not three)."""
        cur = self.current
        return cur[0] in _PROTECTION and bool(cur[2] & (_LBP_W | _LBP_R))

    def information(self, block: bytes | bytearray | memoryview) -> bytes:
        """The protection information of ``block`` under the method in effect."""
        return _PROTECTION[self.current[0]](block)

    def strip(self, block: memoryview) -> memoryview:
        """The block without its protection information, once that checks out."""
        if len(block) < PI_BYTES:
            raise LOGICAL_BLOCK_GUARD_CHECK_FAILED()
        data = block[:-PI_BYTES]
        if self.information(data) != bytes(block[-PI_BYTES:]):
            raise LOGICAL_BLOCK_GUARD_CHECK_FAILED()
        return data

    def read_block(self, cart: TapeCartridge, buf: memoryview) -> ReadResult:
        """``cart.read_block`` with the protection information appended: the block as the
        host sees it is 4 bytes longer, and ``buf`` gets as much of it as fits."""
        r = cart.read_block(None, own=True)
        if r.kind != RecordKind.DATA:
            return r
        whole = bytes(r.data) + self.information(r.data)
        n = min(len(buf), len(whole))
        buf[:n] = whole[:n]
        return ReadResult(RecordKind.DATA, len(whole), buf[:n])
