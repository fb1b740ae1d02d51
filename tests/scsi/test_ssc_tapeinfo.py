"""What mtx's ``tapeinfo`` reads from a drive, as raw CDBs: MODE SENSE(6)'s header (medium
type, write protect, buffered mode) and block descriptor (density code, block size), and
REPORT DENSITY SUPPORT for the loaded medium. IBM drives report IBM's medium types (LTFS
checks them too); other vendors 0 for data and 1 for WORM."""

from __future__ import annotations

import pytest
from test_ssc import MiB, good, run

from vtl.scsi.identities import drive_identity
from vtl.scsi.ssc import TapeDrive


@pytest.fixture
def lib(fast_library):
    return fast_library("T00001L8", "T00001LY", "T00001L7", capacity=16 * MiB)


@pytest.mark.parametrize(("model", "barcode", "medium", "density"), [
    ("IBM-TD8", "T00001L8", 0x88, 0x5E),
    ("IBM-TD8", "T00001LY", 0x8C, 0x5E),
    ("IBM-TD8", "T00001L7", 0x78, 0x5C),
    ("HPE-LTO8", "T00001L8", 0x00, 0x5E),
    ("HPE-LTO8", "T00001LY", 0x01, 0x5E),
])
def test_mode_sense_header_and_descriptor(lib, model, barcode, medium, density) -> None:
    drv = TapeDrive(lib.load(barcode, 0), identity=drive_identity(model))
    run(drv, 0, 0, 0, 0, 0, 0)
    data = good(drv, 0x1A, 0, 0, 0, 12, 0)  # what tapeinfo and Linux st ask: 12 bytes
    assert (data[1], data[2] & 0x70, data[3]) == (medium, 0x10, 8)  # buffered, one descriptor
    assert data[4] == density and data[9:12] == bytes(3)  # variable block mode
    dens = good(drv, 0x44, 0x01, 0, 0, 0, 0, 0, 0x01, 0, 0)  # MEDIA: the loaded medium only
    assert dens[4] == density and dens[6] & 0x20 == (0x20 if density == 0x5E else 0)


def test_no_medium_no_type(lib) -> None:
    drv = TapeDrive(lib.drives[1])
    run(drv, 0, 0, 0, 0, 0, 0)  # the power-on UNIT ATTENTION
    data = good(drv, 0x1A, 0, 0, 0, 12, 0)
    assert data[1] == 0 and data[4] == 0
