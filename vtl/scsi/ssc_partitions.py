"""Partitions of a tape drive (SSC-4 4.2.3, 8.3.5): the medium partition mode page 0x11,
FORMAT MEDIUM and SET CAPACITY, and which partition the drive is in.

An LTO-5 or LTO-6 cartridge takes two partitions, LTO-7 and later up to four (IBM's LTFS
puts its index in one and the data in the other). MODE SELECT of page 0x11 only records the
layout asked for (POFM: partition on format medium); FORMAT MEDIUM then erases the cartridge
and lays it out (``TapeCartridge.format_partitions``). Sizes come in units of 10^PARTITION
UNITS bytes (PSUM 11b) or MB (PSUM 10b); 0xFFFF is "the rest of the medium", and a size is
rounded up to the minimum partition (1/64 of the medium), as LTO drives round LTFS's
"1 GB" index partition. Each partition is a stream of its own: LOCATE with CP moves between
them, READ POSITION reports the partition, SPACE, READ and WRITE stay in the current one,
REWIND and LOAD return to partition 0, and READ/WRITE ATTRIBUTE address each partition's
own attributes (as LTFS's volume coherency attribute 0x080C per partition).

Conditions: a layout the medium cannot hold (more partitions than it takes, sizes that do
not fit, FDP/SDP) is ILLEGAL REQUEST 26/00 at the field; LOCATE to a partition that does not
exist is ILLEGAL REQUEST 24/00 (byte 3 of LOCATE(16), byte 8 of LOCATE(10)); FORMAT MEDIUM on
a write-protected or WORM cartridge is DATA PROTECT 27/00 or 30/0C.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from tape_formats.cartridge import CartridgeError, TapeCartridge
from vtl.scsi.opcodes import Opcode
from vtl.scsi.pages import ModePage
from vtl.scsi.sense import invalid_field_in_cdb, invalid_field_in_parameter_list
from vtl.scsi.spc import PR_WRITE, Request, command

if TYPE_CHECKING:
    from vtl.scsi.base import CheckCondition
    from vtl.scsi.identities import DriveIdentity

REST = 0xFFFF  # PARTITION SIZE: the rest of the medium
_FDP, _SDP, _IDP, _PSUM, _POFM = 0x80, 0x40, 0x20, 0x18, 0x04
MIN_PARTITION_FRACTION = 64  # the smallest partition: 1/64 of the medium
FORMAT_DEFAULT, FORMAT_PARTITION, FORMAT_DEFAULT_THEN_PARTITION = 0, 1, 2


def max_additional_partitions(generation: int) -> int:
    """Partitions beyond the first an LTO generation takes: LTO-5/6 one, LTO-7+ three."""
    if generation >= 7:
        return 3
    return 1 if generation >= 5 else 0


def _generation(media_name: str) -> int:
    try:
        return int(media_name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


class Layout(NamedTuple):
    """A layout MODE SELECT asked for: the sizes of all partitions but the last, in bytes
    (the last has the rest), applied by the next FORMAT MEDIUM."""

    leading: list[int]


class MediumPartitionPage(ModePage):
    """Mode page 0x11, with one PARTITION SIZE field per partition the drive's generation
    allows (so its length does not change with the cartridge)."""

    def __init__(self, identity: DriveIdentity, cartridge: Callable[[], TapeCartridge | None]
                 ) -> None:
        self.slots = 1 + max_additional_partitions(identity.generation)
        self.drive_max = self.slots - 1
        body = bytearray(6 + 2 * self.slots)
        body[2], body[3], body[4] = _PSUM | _POFM, 0x03, 0x09  # PSUM 11b, units 10^9
        mask = bytearray(len(body))
        mask[1] = 0xFF  # ADDITIONAL PARTITIONS DEFINED
        mask[2] = _FDP | _SDP | _IDP | _PSUM
        mask[4] = 0x0F  # PARTITION UNITS
        mask[6:] = b"\xff" * (2 * self.slots)
        super().__init__(0x11, bytes(body), bytes(mask), name="medium partition")
        self._cartridge = cartridge
        self.pending: Layout | None = None

    def _medium_max(self, cart: TapeCartridge | None) -> int:
        if cart is None:
            return self.drive_max
        return min(self.drive_max, max_additional_partitions(_generation(cart.media.name)))

    def refresh(self) -> None:
        cart = self._cartridge()
        cur = self.current
        cur[0] = self._medium_max(cart)
        if cart is None or self.pending is not None:
            return
        cur[1] = cart.partition_count - 1
        unit = _unit(cur[2], cur[4])
        for n in range(self.slots):
            size = cart.partition(n).capacity if n < cart.partition_count else 0
            # rounded up: a partition smaller than the unit still reads back as 1, so a host
            # that echoes the page (the layout unchanged) is not refused for a size of 0
            units = min(-(-size // unit), REST - 1)
            cur[6 + 2 * n:8 + 2 * n] = units.to_bytes(2, "big")

    def validate(self, body, offset: int) -> None:
        cart = self._cartridge()
        extra = body[1]
        if extra > self._medium_max(cart):
            raise invalid_field_in_parameter_list(offset + 1)
        if body[2] & (_FDP | _SDP):
            raise invalid_field_in_parameter_list(offset + 2, 7)
        if cart is None or not extra:
            self.pending = Layout([])
            return
        unit = _unit(body[2], body[4])
        total = cart.medium_capacity
        floor = max(total // MIN_PARTITION_FRACTION, 1)
        asked = [int.from_bytes(body[6 + 2 * n:8 + 2 * n], "big") for n in range(extra + 1)]
        if asked.count(REST) > 1:
            raise invalid_field_in_parameter_list(offset + 6 + 2 * asked.index(REST, 1))
        if 0 in asked:
            raise invalid_field_in_parameter_list(offset + 6 + 2 * asked.index(0))
        # the partition sized REST (else the last one) takes what the others leave
        grow = asked.index(REST) if REST in asked else extra
        sizes = [0 if n == grow else max(size * unit, floor) for n, size in enumerate(asked)]
        sizes[grow] = total - sum(sizes)
        if sizes[grow] < floor:
            raise invalid_field_in_parameter_list(offset + 6)
        self.pending = Layout(sizes[:-1])

    def take_layout(self) -> Layout:
        """The layout for FORMAT MEDIUM (one partition when none was asked for)."""
        layout, self.pending = self.pending or Layout([]), None
        return layout


def _unit(flags: int, units: int) -> int:
    psum = (flags & _PSUM) >> 3
    return (1, 1000, 1_000_000, 10 ** (units & 0x0F))[psum]


class PartitionCommands:
    """FORMAT MEDIUM and SET CAPACITY for ``TapeDrive`` (a mixin: the commands join its
    ``@command`` table)."""

    partition_page: MediumPartitionPage
    _part: int
    _medium: Callable[[], TapeCartridge]
    _write_error: Callable[[Exception, int], CheckCondition]

    _base_cartridge: Callable[[], TapeCartridge]  # partition 0: the loaded cartridge

    @command(Opcode.FORMAT_MEDIUM, "FORMAT MEDIUM", "04 03 0f ff ff 00", pr=PR_WRITE,
             timeout=3600)
    def cmd_format_medium(self, req: Request) -> None:
        cdb = req.cdb
        if cdb[1] & 0x03:  # VERIFY / IMMED: not offered
            raise invalid_field_in_cdb(1, 1 if cdb[1] & 0x02 else 0)
        if int.from_bytes(cdb[3:5], "big"):
            raise invalid_field_in_cdb(3)
        fmt = cdb[2] & 0x0F
        if fmt not in (FORMAT_DEFAULT, FORMAT_PARTITION, FORMAT_DEFAULT_THEN_PARTITION):
            raise invalid_field_in_cdb(2, 3)
        cart = self._base_cartridge()
        layout = self.partition_page.take_layout() if fmt != FORMAT_DEFAULT else Layout([])
        try:
            cart.format_partitions(layout.leading)
        except (CartridgeError, OSError) as exc:
            raise self._write_error(exc, 0) from None
        self._part = 0

    @command(Opcode.SET_CAPACITY, "SET CAPACITY", "0b 01 00 ff ff 00", pr=PR_WRITE,
             timeout=600)
    def cmd_set_capacity(self, req: Request) -> None:
        """Only the whole medium (proportion 0xFFFF, what LTFS sends) is offered."""
        if req.u16(3) != REST:
            raise invalid_field_in_cdb(3)
        self._base_cartridge()

