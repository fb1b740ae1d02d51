"""vtl.barcode: the one parser of LTO labels (data, WORM; cleaning labels told apart)."""

from __future__ import annotations

import pytest

from vtl.barcode import barcode_range, is_barcode, is_cleaning_label, parse_barcode
from vtl.errors import BadBarcode, LibraryError


def test_data_and_worm_labels() -> None:
    assert parse_barcode("A00001L8") == ("LTO-8", False)
    assert parse_barcode("WORM01LY") == ("LTO-8", True)
    assert parse_barcode("OLD001L3") == ("LTO-3", False)
    assert parse_barcode("NEW001LZ") == ("LTO-9", True)


@pytest.mark.parametrize("bad", ["A0001L8", "a00001L8", "A00001X8", "A00001L2", "A00001LS",
                                 "CLN001L0", "", "A00001L8 "])
def test_bad_labels(bad: str) -> None:
    with pytest.raises(BadBarcode):
        parse_barcode(bad)
    assert not is_barcode(bad)


def test_cleaning_labels() -> None:
    for label in ("CLN001L1", "CLN123LU", "CLNA01L8"):
        assert is_cleaning_label(label) and is_barcode(label)
    assert not is_cleaning_label("A00001L8") and not is_cleaning_label(None)
    assert barcode_range("CLN001L1", "CLN003L1") == ["CLN001L1", "CLN002L1", "CLN003L1"]


def test_one_error_type_for_every_caller() -> None:
    """The library, the CLIs and the EBM all catch LibraryError; a bad label is one."""
    with pytest.raises(LibraryError, match="cleaning cartridge"):
        parse_barcode("CLN001L1")
    with pytest.raises(BadBarcode, match="malformed"):
        parse_barcode(None)  # type: ignore[arg-type]
    import vtl.library

    assert vtl.library.BadBarcode is BadBarcode and vtl.library.parse_barcode is parse_barcode


def test_ranges() -> None:
    assert barcode_range("A00001L8", "A00003L8") == ["A00001L8", "A00002L8", "A00003L8"]
    assert barcode_range("AB0098LY", "AB0100LY") == ["AB0098LY", "AB0099LY", "AB0100LY"]
    for first, last, why in (("A00003L8", "A00001L8", "after the last"),
                             ("A00001L8", "B00002L8", "same prefix and suffix"),
                             ("A00001L8", "A00002L7", "same prefix and suffix"),
                             ("A0001L8", "A00002L8", "not an LTO barcode"),
                             ("ABCDEFL8", "ABCDEGL8", "no number")):
        with pytest.raises(BadBarcode, match=why):
            barcode_range(first, last)
