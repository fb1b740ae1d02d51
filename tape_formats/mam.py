"""Medium auxiliary memory (MAM): the attributes an LTO cartridge's memory chip carries.

SSC-4 defines them by identifier; READ/WRITE ATTRIBUTE move them as (id, format, length,
value) records. Device and medium attributes are read-only to hosts; host attributes
(0x0800..0x0BFF) are written by backup applications (vendor, name, version, text label,
barcode) and must survive on the cartridge, so they live in a sidecar file next to it,
replaced atomically on every change.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

from construct import ConstructError, GreedyRange

from tape_formats.records import MAM_ATTRIBUTE, MAM_MAGIC


class MamFormat(enum.IntEnum):
    BINARY = 0
    ASCII = 1
    TEXT = 2


@dataclass(frozen=True, slots=True)
class MamAttribute:
    id: int
    name: str
    format: MamFormat
    length: int
    read_only: bool


def _attrs(*rows: tuple[int, str, MamFormat, int, bool]) -> dict[int, MamAttribute]:
    return {r[0]: MamAttribute(*r) for r in rows}


B, A, T = MamFormat.BINARY, MamFormat.ASCII, MamFormat.TEXT
MAM_ATTRIBUTES: dict[int, MamAttribute] = _attrs(
    # device attributes (maintained by the drive)
    (0x0000, "REMAINING CAPACITY IN PARTITION", B, 8, True),
    (0x0001, "MAXIMUM CAPACITY IN PARTITION", B, 8, True),
    (0x0002, "TAPEALERT FLAGS", B, 8, True),
    (0x0003, "LOAD COUNT", B, 8, True),
    (0x0004, "MAM SPACE REMAINING", B, 8, True),
    (0x0005, "ASSIGNING ORGANIZATION", A, 8, True),
    (0x0006, "FORMATTED DENSITY CODE", B, 1, True),
    (0x0007, "INITIALIZATION COUNT", B, 2, True),
    (0x0220, "TOTAL MBYTES WRITTEN IN MEDIUM LIFE", B, 8, True),
    (0x0221, "TOTAL MBYTES READ IN MEDIUM LIFE", B, 8, True),
    (0x0222, "TOTAL MBYTES WRITTEN IN CURRENT/LAST LOAD", B, 8, True),
    (0x0223, "TOTAL MBYTES READ IN CURRENT/LAST LOAD", B, 8, True),
    # medium attributes (set at manufacture)
    (0x0400, "MEDIUM MANUFACTURER", A, 8, True),
    (0x0401, "MEDIUM SERIAL NUMBER", A, 32, True),
    (0x0402, "MEDIUM LENGTH", B, 4, True),
    (0x0403, "MEDIUM WIDTH", B, 4, True),
    (0x0404, "ASSIGNING ORGANIZATION", A, 8, True),
    (0x0405, "MEDIUM DENSITY CODE", B, 1, True),
    (0x0406, "MEDIUM MANUFACTURE DATE", A, 8, True),
    (0x0407, "MAM CAPACITY", B, 8, True),
    (0x0408, "MEDIUM TYPE", B, 1, True),
    (0x0409, "MEDIUM TYPE INFORMATION", B, 2, True),
    # host attributes (written by applications)
    (0x0800, "APPLICATION VENDOR", A, 8, False),
    (0x0801, "APPLICATION NAME", A, 32, False),
    (0x0802, "APPLICATION VERSION", A, 8, False),
    (0x0803, "USER MEDIUM TEXT LABEL", T, 160, False),
    (0x0804, "DATE AND TIME LAST WRITTEN", A, 12, False),
    (0x0805, "TEXT LOCALIZATION IDENTIFIER", B, 1, False),
    (0x0806, "BARCODE", A, 32, False),
    (0x0807, "OWNING HOST TEXTUAL NAME", T, 80, False),
    (0x0808, "MEDIA POOL", T, 160, False),
    (0x080B, "APPLICATION FORMAT VERSION", A, 16, False),
    (0x080C, "VOLUME COHERENCY INFORMATION", B, 70, False),
)
MAM_CAPACITY = 16384  # bytes of "chip" space, as an LTO-8 cartridge memory offers hosts


class MamError(ValueError):
    """An attribute write that SSC would refuse (read-only id, wrong length or format)."""


def encode_value(attr: MamAttribute, value: bytes | str | int) -> bytes:
    """Pad/encode a value to the attribute's fixed length: ASCII/text left-aligned with
    spaces (ASCII) or NULs (text), binary big-endian."""
    if attr.format is MamFormat.BINARY:
        if isinstance(value, int):
            return value.to_bytes(attr.length, "big")
        raw = bytes(value)
    else:
        raw = value.encode("ascii" if attr.format is MamFormat.ASCII else "utf-8") if isinstance(
            value, str
        ) else bytes(value)
    if len(raw) > attr.length:
        raise MamError(f"attribute 0x{attr.id:04x} takes at most {attr.length} bytes")
    pad = b" " if attr.format is MamFormat.ASCII else b"\x00"
    return raw.ljust(attr.length, pad)


class MamStore:
    """The attributes of one cartridge, persisted in ``<cartridge>.mam``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._values: dict[int, tuple[int, bytes]] = {}
        if path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        if not raw.startswith(MAM_MAGIC):
            raise MamError(f"{self.path}: not a MAM file")
        try:
            for rec in GreedyRange(MAM_ATTRIBUTE).parse(raw[len(MAM_MAGIC) :]):
                self._values[rec.id] = (rec.format, bytes(rec.value))
        except ConstructError as exc:  # pragma: no cover - GreedyRange stops, not raises
            raise MamError(f"{self.path}: damaged MAM file: {exc}") from exc

    def save(self) -> None:
        body = b"".join(
            MAM_ATTRIBUTE.build({"id": i, "format": f, "length": len(v), "value": v})
            for i, (f, v) in sorted(self._values.items())
        )
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(MAM_MAGIC + body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def get(self, attr_id: int) -> bytes | None:
        v = self._values.get(attr_id)
        return v[1] if v else None

    def get_int(self, attr_id: int) -> int:
        v = self.get(attr_id)
        return int.from_bytes(v, "big") if v else 0

    def set(self, attr_id: int, value: bytes | str | int, *, host: bool = False) -> None:
        """Set one attribute. ``host=True`` applies SSC's rules for WRITE ATTRIBUTE (only
        known host-writable ids, exact formats); the drive itself may set any attribute."""
        attr = MAM_ATTRIBUTES.get(attr_id)
        if attr is None:
            if host and attr_id < 0x0800:
                raise MamError(f"attribute 0x{attr_id:04x} is not writable")
            raw = bytes(value) if not isinstance(value, int) else value.to_bytes(8, "big")
            self._values[attr_id] = (MamFormat.BINARY, raw)
            return
        if host and attr.read_only:
            raise MamError(f"attribute 0x{attr_id:04x} ({attr.name}) is read-only")
        self._values[attr_id] = (attr.format, encode_value(attr, value))

    def set_raw(self, attr_id: int, fmt: int, value: bytes) -> None:
        """Store a host attribute exactly as WRITE ATTRIBUTE sent it (vendor-unique ids too);
        a zero-length value deletes it, as SSC says."""
        if attr_id in MAM_ATTRIBUTES and MAM_ATTRIBUTES[attr_id].read_only:
            raise MamError(f"attribute 0x{attr_id:04x} is read-only")
        if not value:
            self._values.pop(attr_id, None)
        else:
            self._values[attr_id] = (fmt, bytes(value))

    def add_int(self, attr_id: int, delta: int) -> None:
        self.set(attr_id, self.get_int(attr_id) + delta)

    def items(self) -> list[tuple[int, int, bytes]]:
        """(id, format, value) for every stored attribute, in id order."""
        return [(i, f, v) for i, (f, v) in sorted(self._values.items())]

    def used_bytes(self) -> int:
        return sum(5 + len(v) for _, v in self._values.values())
