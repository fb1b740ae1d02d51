"""LTO barcode labels: the one parser of a cartridge label, used by the library, the CLIs
and the backup manager.

A data label is six characters A-Z/0-9 then the media suffix: ``L3``..``L9`` for LTO-3..9
data cartridges, ``LT``..``LZ`` for their WORM cartridges (``A00001L8``, ``WORM01LY``).
Cleaning labels (``CLNxxxL1``..``CLNxxxL9``, ``CLNxxxLU`` for universal ones) name cleaning
cartridges (:mod:`vtl.cleaning`): ``is_cleaning_label`` tells them apart, and
``parse_barcode`` refuses them with that reason where a data cartridge is needed. What a
suffix means (generation, capacity, density) is :mod:`tape_formats.media`'s table; this
module only reads labels.
"""

from __future__ import annotations

import re

from vtl.errors import BadBarcode

_DATA_LABEL = re.compile(r"^[A-Z0-9]{6}(L[0-9A-Z])$")
_CLEANING_LABEL = re.compile(r"^CLN[A-Z0-9]{3}L[1-9U]$")


def parse_barcode(label: object) -> tuple[str, bool]:
    """The media name and WORM-ness a label declares (``A00001L8`` -> ``("LTO-8", False)``);
    :class:`BadBarcode` with the reason if it is not an LTO data or WORM label."""
    from tape_formats.media import media_for_suffix  # deferred: keeps CLI start-up fast

    if not isinstance(label, str):
        raise BadBarcode(f"malformed barcode {label!r}")
    if _CLEANING_LABEL.match(label):
        raise BadBarcode(f"{label!r} is a cleaning cartridge label, not a data cartridge")
    m = _DATA_LABEL.match(label)
    found = media_for_suffix(m.group(1)) if m else None
    if found is None:
        raise BadBarcode(
            f"{label!r} is not an LTO barcode (six characters A-Z/0-9 then L3..L9 or LT..LZ,"
            " e.g. A00001L8)"
        )
    mtype, worm = found
    return mtype.name, worm


def is_cleaning_label(label: object) -> bool:
    """Whether ``label`` names a cleaning cartridge (``CLN001L1``); never raises."""
    return isinstance(label, str) and _CLEANING_LABEL.match(label) is not None


def is_barcode(text: str) -> bool:
    """Whether ``text`` is a valid data, WORM or cleaning label (for telling a barcode from
    an element name); never raises."""
    if is_cleaning_label(text):
        return True
    try:
        parse_barcode(text)
    except BadBarcode:
        return False
    return True


def _counted_parts(label: str) -> tuple[str, str, str]:
    """(prefix, number, suffix) of a valid label: ``A00001L8`` -> ("A", "00001", "L8"),
    ``CLN001L1`` -> ("CLN", "001", "L1")."""
    if not is_cleaning_label(label):
        parse_barcode(label)
    serial = label[:6]
    prefix = serial.rstrip("0123456789")
    if prefix == serial:
        raise BadBarcode(f"{label!r} has no number to count")
    return prefix, serial[len(prefix):], label[6:]


def barcode_range(first: str, last: str) -> list[str]:
    """Every label from ``first`` to ``last`` (``A00001L8``, ``A00020L8``: twenty), which
    share their prefix, suffix and number width; BadBarcode naming the range otherwise."""
    spec = f"{first}-{last}"
    try:
        (pa, na, sa), (pb, nb, sb) = _counted_parts(first), _counted_parts(last)
    except BadBarcode as e:
        raise BadBarcode(f"bad barcode range {spec!r}: {e}") from None
    if pa != pb or sa != sb or len(na) != len(nb):
        raise BadBarcode(f"bad barcode range {spec!r}: both ends need the same prefix and suffix")
    lo, hi = int(na), int(nb)
    if lo > hi:
        raise BadBarcode(f"bad barcode range {spec!r}: the first label is after the last")
    return [f"{pa}{n:0{len(na)}d}{sa}" for n in range(lo, hi + 1)]
