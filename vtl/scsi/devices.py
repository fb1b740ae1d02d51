"""The LUN map a transport exports for one library: LUN 0 the changer, LUN i+1 drive i.

Both transports (the embedded iSCSI target and the LIO/TCMU export in ``vtl.lio``) take their
devices from here, so an initiator sees the same layout whichever carries its commands. Drive
LUNs follow the changer's data-transfer element order, which is what autochanger
configurations (Bacula's ``Drive Index``, mtx's drive numbers) assume.
"""

from __future__ import annotations

from vtl.library import Library
from vtl.scsi.base import DeviceSet
from vtl.scsi.smc import MediumChanger
from vtl.scsi.ssc import TapeDrive

CHANGER_LUN = 0


def drive_lun(index: int) -> int:
    """The LUN of drive ``index`` (0-based, as ``vtl status`` and mtx count)."""
    return index + 1


def build_device_set(library: Library) -> DeviceSet:
    """One changer model over the library and one tape drive model per drive bay."""
    luns: dict = {CHANGER_LUN: MediumChanger(library)}
    for bay in library.drives:
        luns[drive_lun(bay.index)] = TapeDrive(bay)
    return DeviceSet(luns)
