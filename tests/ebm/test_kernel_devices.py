"""The kernel-device path (ebm.remote.kernel_devices) without a kernel: this machine has no
st or ch driver, so the ioctl numbers, the sg_io_hdr layout and what each tape operation
asks of the st driver are checked against Linux's values with a fake ioctl.
"""

from __future__ import annotations

import ctypes
import os

import pytest

from ebm.remote import kernel_devices as kd
from ebm.remote.scsi_client import SPACE_EOD, SPACE_FILEMARKS, Kind, TapeDevice


def test_ioctl_numbers_and_layouts_are_linux_x86_64():
    assert kd.SG_IO == 0x2285
    assert (kd.MTIOCTOP, kd.MTIOCGET, kd.MTIOCPOS) == (0x40086D01, 0x80306D02, 0x80086D03)
    assert (kd.SG_IO_HDR.size, kd.MTOP.size, kd.MTGET.size) == (88, 8, 48)
    hdr = kd.sg_io_header(b"\x08\x00\x00\x10\x00\x00", kd.SG_DXFER_FROM_DEV, 4096, 0x1000,
                          0x2000, 0x3000, 5000)
    assert hdr[0:4] == b"S\0\0\0" and hdr[8] == 6 and hdr[9] == kd.SENSE_MAX
    assert int.from_bytes(hdr[12:16], "little") == 4096
    assert [int.from_bytes(hdr[o:o + 8], "little") for o in (16, 24, 32)] == [0x1000, 0x3000, 0x2000]
    assert int.from_bytes(hdr[40:44], "little") == 5000


class FakeSg:
    """Plays a tape drive behind SG_IO: READ(6) returns a 100-byte block, then a filemark."""

    def __init__(self) -> None:
        self.cdbs: list[bytes] = []
        self.written = b""
        self.reads = 0

    def __call__(self, fd: int, request: int, arg: bytearray) -> int:
        assert request == kd.SG_IO
        f = list(kd.SG_IO_HDR.unpack(bytes(arg)))
        cdb = ctypes.string_at(f[7], f[2])
        self.cdbs.append(cdb)
        if f[1] == kd.SG_DXFER_TO_DEV:
            self.written = ctypes.string_at(f[6], f[5])
        if cdb[0] == 0x08:
            self.reads += 1
            if self.reads == 1:
                ctypes.memmove(f[6], b"B" * 100, 100)
                sense = bytes([0xF0, 0, 0x20, 0, 0, 0x0F, 0x9C]) + bytes(11)  # ILI, info 3996
                f[13], f[19] = 2, f[5] - 100
            else:
                sense = bytes([0x70, 0, 0x80]) + bytes(15)  # FILEMARK
                f[13], f[19] = 2, f[5]
            ctypes.memmove(f[8], sense, len(sense))
            f[16] = len(sense)
        arg[:] = kd.SG_IO_HDR.pack(*f)
        return 0


def test_tape_commands_over_sg_io():
    fake = FakeSg()
    tape = TapeDevice(kd.SgTransport("/dev/sg-test", ioctl=fake, fd=-1), 0, "sg tape")
    assert tape.write(b"payload") is False
    assert fake.written == b"payload" and fake.cdbs[-1][:5] == b"\x0a\x00\x00\x00\x07"
    got = tape.read(4096)
    assert got.kind == Kind.DATA and got.data == b"B" * 100  # short block: ILI + residue
    assert tape.read(4096).kind == Kind.FILEMARK


class FakeSt:
    """Records MTIOCTOP calls; answers MTIOCPOS/MTIOCGET with block 7, file 2, write-protect."""

    def __init__(self) -> None:
        self.ops: list[tuple[int, int]] = []

    def __call__(self, fd: int, request: int, arg: bytes) -> bytes | int:
        if request == kd.MTIOCTOP:
            self.ops.append(kd.MTOP.unpack(arg))
            return 0
        if request == kd.MTIOCPOS:
            return kd.MTPOS.pack(7)
        if request == kd.MTIOCGET:
            return kd.MTGET.pack(1, 0, 0, kd.GMT_WR_PROT, 0, 2, 0)
        raise AssertionError(hex(request))


def test_st_operations_map_to_mtioctop():
    fake = FakeSt()
    r, w = os.pipe()
    try:
        tape = kd.StTape("/dev/nst-test", ioctl=fake, fd=w)
        tape.prepare()
        tape.locate(1234)
        tape.write_filemarks(2)
        tape.space(SPACE_FILEMARKS, 3)
        tape.space(SPACE_FILEMARKS, -1)
        tape.space(SPACE_EOD, 0)
        tape.rewind()
        tape.unload()
        assert fake.ops == [(kd.MTSETBLK, 0), (kd.MTSEEK, 1234), (kd.MTWEOF, 2), (kd.MTFSF, 3),
                            (kd.MTBSF, 1), (kd.MTEOM, 1), (kd.MTREW, 1), (kd.MTOFFL, 1)]
        pos = tape.read_position()
        assert (pos.object, pos.file) == (7, 2) and tape.write_protected
        assert tape.write(b"one block") is False and os.read(r, 100) == b"one block"
    finally:
        os.close(r)
        os.close(w)


def test_library_option_names_kernel_devices(monkeypatch):
    from ebm.remote.ebm_host import RemoteSetupError, RemoteSpec
    from ebm.remote.remote_library import RemoteLibrary

    spec = RemoteSpec.from_options("/dev/sch0,/dev/nst0,/dev/nst1")
    assert spec.url is None and spec.devices == ("/dev/sch0", "/dev/nst0", "/dev/nst1")
    assert str(spec) == "/dev/sch0,/dev/nst0,/dev/nst1"
    opened: list[tuple] = []
    monkeypatch.setattr(RemoteLibrary, "kernel",
                        classmethod(lambda cls, ch, drives, **kw: opened.append((ch, drives))))
    spec.open_library()
    assert opened == [("/dev/sch0", ["/dev/nst0", "/dev/nst1"])]
    for bad in ("/dev/sch0", "/dev/sch0,nst0"):
        with pytest.raises(RemoteSetupError, match="CHANGER,DRIVE"):
            RemoteSpec.from_options(bad)
