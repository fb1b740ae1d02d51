"""LTO media generations: what a barcode suffix means and what a cartridge of it holds.

Backup software reads the density code (REPORT DENSITY SUPPORT, MODE SENSE) and the barcode
suffix to decide what a cartridge is, so these numbers follow the LTO/SSC tables exactly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MediaType:
    """A cartridge generation, e.g. LTO-8: density code, native capacity, barcode suffix."""

    name: str  # "LTO-8"
    suffix: str  # "L8"; WORM suffix "LW"
    worm_suffix: str
    density_code: int  # SSC density code (LTO-8: 0x5E)
    medium_type: int  # MODE header medium type (0x00 data, 0x01 WORM per IBM)
    capacity: int  # native bytes


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


def media_for_suffix(suffix: str) -> tuple[MediaType, bool] | None:
    """The media generation and WORM-ness of a barcode suffix (``L8`` -> (LTO-8, False),
    ``LY`` -> (LTO-8, True)); None for a suffix no generation uses. Labels are parsed by
    :func:`vtl.barcode.parse_barcode`."""
    return _SUFFIXES.get(suffix)


def media_by_density(code: int) -> MediaType | None:
    for m in MEDIA.values():
        if m.density_code == code:
            return m
    return None
