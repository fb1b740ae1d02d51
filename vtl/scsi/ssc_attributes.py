"""READ ATTRIBUTE / WRITE ATTRIBUTE (SPC-4 6.16, 6.37) over a cartridge's MAM store.

The drive keeps device attributes live (remaining capacity, TapeAlert flags, MAM space) and
lets hosts write only host attributes (0x0800 and up), all or nothing: a read-only attribute,
a wrong length or format, or attributes out of ascending order change nothing and answer
ILLEGAL REQUEST 26/00 pointing at the offending byte; no room is 55/06 (MAM full).
"""

from __future__ import annotations

from tape_formats.cartridge import TapeCartridge
from tape_formats.mam import MAM_ATTRIBUTES, MAM_CAPACITY
from vtl.scsi.pages import ascii_field
from vtl.scsi.sense import (
    AUXILIARY_MEMORY_OUT_OF_SPACE,
    PARAMETER_LIST_LENGTH_ERROR,
    invalid_field_in_cdb,
    invalid_field_in_parameter_list,
)

# READ ATTRIBUTE service actions.
ATTRIBUTE_VALUES = 0x00
ATTRIBUTE_LIST = 0x01
VOLUME_LIST = 0x02
PARTITION_LIST = 0x03
SUPPORTED_ATTRIBUTES = 0x05

Staged = list[tuple[int, int, bytes]]  # (id, format, value) to write, in ascending id order


def read_only(attr_id: int) -> bool:
    """Device and medium attributes (below 0x0800) are the drive's, not the host's."""
    a = MAM_ATTRIBUTES.get(attr_id)
    return a.read_only if a is not None else attr_id < 0x0800


def attribute_values(cart: TapeCartridge, tapealert: set[int]) -> dict[int, tuple[int, bytes]]:
    """Every attribute the cartridge has now, device attributes computed live, by id."""
    attrs = {i: (f, v) for i, f, v in cart.mam.items()}
    ta = 0
    for flag in tapealert:
        ta |= 1 << (64 - flag)
    attrs.update({
        0x0000: (0, (cart.remaining_bytes >> 20).to_bytes(8, "big")),
        0x0001: (0, (cart.capacity >> 20).to_bytes(8, "big")),
        0x0002: (0, ta.to_bytes(8, "big")),
        0x0004: (0, max(MAM_CAPACITY - cart.mam.used_bytes(), 0).to_bytes(8, "big")),
        0x0005: (1, ascii_field("LTO-CVE", 8)),
        0x0006: (0, bytes([cart.media.density_code])),
    })
    attrs.setdefault(0x0003, (0, bytes(8)))
    return dict(sorted(attrs.items()))


def read_attribute(cart: TapeCartridge, tapealert: set[int], sa: int, first: int) -> bytes:
    """The parameter data of one READ ATTRIBUTE service action (before allocation length)."""
    if sa == VOLUME_LIST:  # one volume
        return bytes([0, 2, 0, 1])
    if sa == PARTITION_LIST:  # its partitions, from 0 (``cart`` is partition 0)
        return bytes([0, 2, 0, cart.partition_count])
    attrs = attribute_values(cart, tapealert)
    if sa == ATTRIBUTE_VALUES and first and first not in attrs:
        # An attribute the cartridge does not hold: 24/00, as IBM LTO drives answer (LTFS
        # asks for its volume lock 0x1623 and volume coherency 0x080C and counts on it).
        raise invalid_field_in_cdb(8)
    if sa == ATTRIBUTE_VALUES:
        body = b"".join(
            i.to_bytes(2, "big") + bytes([(0x80 if read_only(i) else 0) | (f & 0x03)])
            + len(v).to_bytes(2, "big") + v
            for i, (f, v) in attrs.items() if i >= first
        )
    elif sa == ATTRIBUTE_LIST:
        body = b"".join(i.to_bytes(2, "big") for i in attrs if i >= first)
    else:  # SUPPORTED_ATTRIBUTES
        ids = sorted(set(MAM_ATTRIBUTES) | set(attrs))
        body = b"".join(i.to_bytes(2, "big") for i in ids if i >= first)
    return len(body).to_bytes(4, "big") + body


def parse_write_attribute(data: memoryview, plen: int) -> Staged:
    """Validate a WRITE ATTRIBUTE parameter list completely before anything is written."""
    if plen < 4:
        raise PARAMETER_LIST_LENGTH_ERROR()
    avail = int.from_bytes(data[0:4], "big")
    if avail == plen:
        # IBM's LTFS counts the 4-byte header in PARAMETER DATA LENGTH; IBM drives take it
        avail = plen - 4
    if avail + 4 > plen:
        raise PARAMETER_LIST_LENGTH_ERROR()
    staged: Staged = []
    off, end = 4, 4 + avail
    while off < end:
        if off + 5 > end:
            raise PARAMETER_LIST_LENGTH_ERROR()
        attr_id = int.from_bytes(data[off : off + 2], "big")
        fmt = data[off + 2] & 0x03
        length = int.from_bytes(data[off + 3 : off + 5], "big")
        if off + 5 + length > end:
            raise PARAMETER_LIST_LENGTH_ERROR()
        if read_only(attr_id) or (staged and attr_id <= staged[-1][0]):
            raise invalid_field_in_parameter_list(off)
        known = MAM_ATTRIBUTES.get(attr_id)
        if known is not None:
            if fmt != int(known.format):
                raise invalid_field_in_parameter_list(off + 2, 1)
            if length not in (0, known.length):  # 0 deletes the attribute
                raise invalid_field_in_parameter_list(off + 3)
        elif fmt == 3:  # reserved format
            raise invalid_field_in_parameter_list(off + 2, 1)
        if data[off + 2] & 0x7C:
            raise invalid_field_in_parameter_list(off + 2, 6)
        staged.append((attr_id, fmt, bytes(data[off + 5 : off + 5 + length])))
        off += 5 + length
    return staged


def apply_attributes(cart: TapeCartridge, staged: Staged) -> None:
    """Write validated attributes and make them durable (the MAM sidecar is replaced)."""
    need = sum(5 + len(v) for _, _, v in staged)
    if cart.mam.used_bytes() + need > MAM_CAPACITY:
        raise AUXILIARY_MEMORY_OUT_OF_SPACE()  # MAM full
    for attr_id, fmt, value in staged:
        cart.mam.set_raw(attr_id, fmt, value)
    cart.mam.save()
