"""Mode page 0x10/0x01 (device configuration extension) and log page 0x17 (volume
statistics) of a tape drive: what IBM's LTFS reads before it formats or mounts a cartridge.

LTFS treats a refused MODE SENSE of 0x10/0x01 as fatal ("Cannot set up tape device") and
takes the capacity of each partition from LOG SENSE 0x17 (native capacity 0x0202, used
0x0203, remaining 0x0204, each a list of per-partition records ``[7][0][partition u16][MiB
u32]``), so both exist here. Page 0x10/0x01 reports WRITE MODE 0 (overwrite allowed) and
keeps the PROGRAMMABLE EARLY WARNING SIZE a host sets (LTFS sets it to half the index
partition), which the drive honours: a write into the zone of PEWS megabytes before early
warning answers NO SENSE 00/07 once (``TapeDrive._report_pew``).
"""

from __future__ import annotations

from collections.abc import Callable

from tape_formats.cartridge import TapeCartridge
from vtl.scsi.pages import LogPage, LogParameter, ModePage, counter

# Volume statistics parameter codes (SSC-4 8.2.x, as LTFS reads them)
VOLUME_MOUNTS = 0x0001
NATIVE_CAPACITY = 0x0202
USED_CAPACITY = 0x0203
REMAINING_CAPACITY = 0x0204


def device_configuration_extension() -> ModePage:
    """0x10/0x01: 28 bytes after the 4-byte subpage header; PEWS (bytes 2-3) changeable."""
    body = bytearray(28)
    mask = bytearray(28)
    mask[2] = mask[3] = 0xFF  # PROGRAMMABLE EARLY WARNING SIZE
    return ModePage(0x10, bytes(body), bytes(mask), subpage=0x01,
                    name="device configuration extension")


def _per_partition(values: list[int]) -> bytes:
    """A volume statistics partition list: ``[7][0][partition][value]`` per partition."""
    return b"".join(bytes([7, 0]) + p.to_bytes(2, "big") + min(v, 0xFFFFFFFF).to_bytes(4, "big")
                    for p, v in enumerate(values))


def volume_statistics(cartridge: Callable[[], TapeCartridge | None]) -> LogPage:
    """0x17 for the cartridge ``cartridge()`` returns (partition 0; all zero without one),
    one record per partition, in MiB as the tape capacity page 0x31 counts."""

    def params() -> list[LogParameter]:
        cart = cartridge()
        if cart is None:
            return [counter(0x0000, 0, 1), counter(VOLUME_MOUNTS, 0, 4)]
        loads = cart.mam.get_int(0x0003) or 0
        parts = [cart.partition(n) for n in range(cart.partition_count)]
        return [
            counter(0x0000, 1, 1),  # page valid
            counter(VOLUME_MOUNTS, loads, 4),
            LogParameter(NATIVE_CAPACITY, _per_partition([p.capacity >> 20 for p in parts])),
            LogParameter(USED_CAPACITY, _per_partition([p.used_bytes >> 20 for p in parts])),
            LogParameter(REMAINING_CAPACITY,
                         _per_partition([p.remaining_bytes >> 20 for p in parts])),
        ]

    return LogPage(0x17, params, name="volume statistics")
