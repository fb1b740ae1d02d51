"""The parsers the e2e tests assert with, checked on real tool output (no guest needed).

A wrong parser would make an e2e test pass or fail for the wrong reason, so each one is
pinned here to output captured from mt-st, mtx and sg_modes (formats per their sources).
"""

from __future__ import annotations

from .checks import MtxElement, mode_page_bytes, mt_status, mt_tell, mtx_status
from .qemu import parse_steps

MT_STATUS = """SCSI 2 tape drive:
File number=1, block number=0, partition=0.
Tape block size 0 bytes. Density code 0x5a (LTO-8).
Soft error count since last status=0
General status bits on (81010000):
 EOF ONLINE IM_REP_EN
"""

MTX_STATUS = """  Storage Changer /dev/sg0:4 Drives, 44 Slots ( 4 Import/Export )
Data Transfer Element 0:Full (Storage Element 1 Loaded):VolumeTag = E2E001L8
Data Transfer Element 1:Empty
Data Transfer Element 2:Full (Unknown Storage Element Loaded):VolumeTag = E2E009L8
Data Transfer Element 3:Empty
      Storage Element 1:Empty
      Storage Element 2:Full :VolumeTag=E2E002L8
      Storage Element 3:Empty
      Storage Element 41 IMPORT/EXPORT:Empty
      Storage Element 42 IMPORT/EXPORT:Full :VolumeTag=E2E003L8
"""

SG_MODES = """    IBM       ULT3580-TD8       Q3F4   peripheral_type: tape [0x1]
Mode parameter header from MODE SENSE(10):
  Mode data length=32, medium type=0x00, WP=0, DpoFua=0, longlba=0
  Buffered mode=1, device-specific parameter=0x10, speed=0
  Block descriptors length=8
> Data compression (SSC) page [0xf] control: current
 00     0f 0e c0 80 00 00 40 00  00 00 00 00 00 00 00 00
"""


def test_mt_status_parser():
    st = mt_status(MT_STATUS)
    assert (st.file, st.block, st.block_size, st.density) == (1, 0, 0, 0x5A)
    assert st.flags == {"EOF", "ONLINE", "IM_REP_EN"}


def test_mtx_status_parser():
    st = mtx_status(MTX_STATUS)
    assert st.drives[0] == MtxElement(True, "E2E001L8", 1)
    assert st.drives[1] == MtxElement(False, None)
    assert st.drives[2] == MtxElement(True, "E2E009L8", None)
    assert st.slots[1] == MtxElement(False, None)
    assert st.slots[2] == MtxElement(True, "E2E002L8")
    assert st.slots[42] == MtxElement(True, "E2E003L8")
    assert st.import_export == {41, 42}
    assert "4 Drives" in st.header


def test_tell_and_mode_page_parsers():
    assert mt_tell("At block 0.\nAt block 17.\n") == [0, 17]
    page = mode_page_bytes(SG_MODES, "compression")
    assert page[0] == 0x0F and page[2] & 0x80


def test_step_parser():
    log = "noise\n@@STEP-BEGIN a@@\nline 1\nline 2\n@@STEP-END a rc=3@@\n@@STEP-BEGIN b@@\n@@STEP-END b rc=0@@\n"
    steps = parse_steps(log)
    assert steps["a"].output == "line 1\nline 2\n" and steps["a"].rc == 3
    assert steps["b"].output == "" and steps["b"].rc == 0
