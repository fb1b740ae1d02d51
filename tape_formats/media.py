"""LTO media generations: what a barcode suffix means and what a cartridge of it holds.

Backup software reads the density code (REPORT DENSITY SUPPORT, MODE SENSE) and the barcode
suffix to decide what a cartridge is, so these numbers follow the LTO/SSC tables exactly.
"""

from __future__ import annotations

import re

from tape_formats.cartridge import MediaType

TB = 1000**4
GB = 1000**3

MEDIA: dict[str, MediaType] = {
    m.name: m
    for m in (
        MediaType("LTO-3", "L3", "LT", 0x44, 0x00, 400 * GB),
        MediaType("LTO-4", "L4", "LU", 0x46, 0x00, 800 * GB),
        MediaType("LTO-5", "L5", "LV", 0x58, 0x00, 1500 * GB),
        MediaType("LTO-6", "L6", "LW", 0x5A, 0x00, 2500 * GB),
        MediaType("LTO-7", "L7", "LX", 0x5C, 0x00, 6 * TB),
        MediaType("LTO-8", "L8", "LY", 0x5E, 0x00, 12 * TB),
        MediaType("LTO-9", "L9", "LZ", 0x60, 0x00, 18 * TB),
    )
}
DEFAULT_MEDIA = "LTO-8"

_SUFFIXES = {m.suffix: (m, False) for m in MEDIA.values()} | {
    m.worm_suffix: (m, True) for m in MEDIA.values()
}
# Six label characters then the two-character media suffix, as printed on LTO barcodes.
BARCODE_RE = re.compile(r"^[A-Z0-9]{6}(L[3-9]|L[T-Z])$")
CLEANING_RE = re.compile(r"^CLN[A-Z0-9]{3}L[1-9U]$")


class BadBarcode(ValueError):
    """A label that is not an LTO data or WORM barcode (one line, names the label)."""


def media_for_barcode(barcode: str) -> tuple[MediaType, bool]:
    """The media generation and WORM-ness a barcode declares, e.g. A00001L8 -> (LTO-8, False)."""
    if CLEANING_RE.match(barcode):
        raise BadBarcode(f"{barcode!r} is a cleaning cartridge label, not a data cartridge")
    if not BARCODE_RE.match(barcode):
        raise BadBarcode(
            f"{barcode!r} is not an LTO barcode (six characters A-Z/0-9 then L3..L9 or LT..LZ,"
            " e.g. A00001L8)"
        )
    return _SUFFIXES[barcode[6:]]


def media_by_density(code: int) -> MediaType | None:
    for m in MEDIA.values():
        if m.density_code == code:
            return m
    return None
