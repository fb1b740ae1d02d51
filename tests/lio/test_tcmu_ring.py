"""The TCMU ring handling against a fake kernel ring (a bytearray laid out as the kernel's).

The SCSI models behind it are the real ones over a real library, so these tests also show
that a command carried by LIO gets the bytes and sense the iSCSI target would give.
"""

from __future__ import annotations

import pytest
from tcmu_fake import FakeKernel

from vtl.config import LibraryConfig
from vtl.library import Library
from vtl.lio import ring as r
from vtl.lio.handler import answer, serve_ring
from vtl.scsi.base import ScsiResult, Status
from vtl.scsi.devices import build_device_set

INQUIRY = bytes([0x12, 0, 0, 0, 96, 0])
TUR = bytes(6)


def sense_code(sense: bytes) -> tuple[int, int, int]:
    return sense[2] & 0x0F, sense[12], sense[13]


@pytest.fixture
def devices(tmp_path):
    lib = Library.create(tmp_path / "lib", LibraryConfig(drives=1, slots=4, mailslots=1))
    lib.create_cartridges(["T00001L8"], capacity=8 << 20)
    yield build_device_set(lib)
    lib.close()


def serve(kernel: FakeKernel, device, stale: int = 0) -> int:
    kicks = []
    n = serve_ring(r.Ring(kernel.area), device, lambda: kicks.append(1), stale)
    assert kernel.tail == kernel.head, "the tail reaches the head once all is answered"
    assert len(kicks) >= n
    return n


def test_inquiry_data_in_over_two_iovecs(devices):
    kernel = FakeKernel()
    cmd = kernel.submit(INQUIRY, data_in=96, iov_sizes=[40, 56])
    assert serve(kernel, devices.luns[1]) == 1
    resp = kernel.response(cmd)
    assert resp.status == Status.GOOD
    assert resp.data[0] & 0x1F == 1  # a sequential-access device
    assert resp.data[8:16].strip() == b"IBM"
    assert resp.read_len == len(resp.data) <= 96


def test_read_len_left_out_when_the_kernel_cannot_take_it(devices):
    kernel = FakeKernel(flags=0)
    cmd = kernel.submit(INQUIRY, data_in=96)
    serve(kernel, devices.luns[0])
    resp = kernel.response(cmd)
    assert resp.status == Status.GOOD and resp.read_len is None
    assert resp.data[0] & 0x1F == 8  # the changer


def test_sense_unit_attention_then_not_ready(devices):
    kernel = FakeKernel()
    first, second = kernel.submit(TUR), kernel.submit(TUR)
    serve(kernel, devices.luns[1])
    one, two = kernel.response(first), kernel.response(second)
    assert one.status == two.status == Status.CHECK_CONDITION
    assert sense_code(one.sense) == (0x6, 0x29, 0x00)  # power on: a fresh model
    assert sense_code(two.sense) == (0x2, 0x3A, 0x00)  # no cartridge


def test_malformed_cdb_gets_illegal_request(devices):
    kernel = FakeKernel()
    kernel.submit(TUR)
    bad_opcode = kernel.submit(bytes([0xC7, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
    bad_field = kernel.submit(bytes([0x12, 0x02, 0, 0, 96, 0]), data_in=96)  # CmdDt
    serve(kernel, devices.luns[1])
    assert sense_code(kernel.response(bad_opcode).sense) == (0x5, 0x20, 0x00)
    resp = kernel.response(bad_field)
    assert resp.status == Status.CHECK_CONDITION
    assert sense_code(resp.sense) == (0x5, 0x24, 0x00)


def _move(changer, src: int, dst: int) -> bytes:
    return bytes([0xA5, 0, 0, 0, src >> 8, src & 0xFF, dst >> 8, dst & 0xFF, 0, 0, 0, 0])


def test_write_over_iovecs_reads_back_across_a_wrapping_ring(devices):
    """Data-Out in three iovecs, then enough commands that the ring wraps (PAD entries)."""
    kernel = FakeKernel(cmdr_size=1024)
    changer, drive = devices.luns[0], devices.luns[1]
    kernel.submit(TUR)
    serve(kernel, changer)
    lib_drive = 256
    move = kernel.submit(_move(changer, 1024, lib_drive))
    serve(kernel, changer)
    assert kernel.response(move).status == Status.GOOD
    for _ in range(2):  # the power-on UA, then the new medium's UA
        kernel.submit(TUR)
        serve(kernel, drive)
    block = bytes(range(256)) * 40  # 10240 bytes
    write = kernel.submit(bytes([0x0A, 0, 0, 0x28, 0x00, 0]), data_out=block,
                          iov_sizes=[4096, 4096, 2048])
    filemark = kernel.submit(bytes([0x10, 0, 0, 0, 1, 0]))
    serve(kernel, drive)
    assert kernel.response(write).status == Status.GOOD
    assert kernel.response(filemark).status == Status.GOOD
    pads_seen = 0
    for _ in range(12):  # 12 entries of ~136 bytes in a 1 KiB ring: it wraps
        before = kernel.head
        kernel.submit(bytes([0x01, 0, 0, 0, 0, 0]))  # REWIND
        pads_seen += kernel.head < before
        serve(kernel, drive)
    assert pads_seen >= 1
    read = kernel.submit(bytes([0x08, 0, 0, 0x28, 0x00, 0]), data_in=len(block),
                         iov_sizes=[1000, 9240])
    serve(kernel, drive)
    resp = kernel.response(read)
    assert resp.status == Status.GOOD and resp.data == block


def test_short_read_reports_ili_with_the_bytes_read(devices):
    kernel = FakeKernel()
    changer, drive = devices.luns[0], devices.luns[1]
    kernel.submit(TUR)
    kernel.submit(_move(changer, 1024, 256))
    serve(kernel, changer)
    for _ in range(2):
        kernel.submit(TUR)
    kernel.submit(bytes([0x0A, 0, 0, 0, 100, 0]), data_out=b"x" * 100)
    kernel.submit(bytes([0x01, 0, 0, 0, 0, 0]))
    read = kernel.submit(bytes([0x08, 0, 0, 0, 200, 0]), data_in=200)
    serve(kernel, drive)
    resp = kernel.response(read)
    assert resp.status == Status.CHECK_CONDITION
    assert resp.sense[2] & 0x20  # ILI
    assert int.from_bytes(resp.sense[3:7], "big") == 100  # residue
    assert resp.read_len == 100 and resp.data == b"x" * 100


def test_tmr_and_pad_entries_are_given_back(devices):
    kernel = FakeKernel(cmdr_size=512)
    kernel.submit(INQUIRY, data_in=96)
    kernel.submit_tmr()
    serve(kernel, devices.luns[0])
    kernel.submit_tmr()  # trailing: no command after it
    assert serve(kernel, devices.luns[0]) == 0


def test_commands_from_before_a_restart_get_a_unit_attention(devices):
    """Entries waiting when a handler starts may have been half run by the one before:
    those that change anything are answered with POWER ON, RESET; reads of state run."""
    kernel = FakeKernel()
    inquiry = kernel.submit(INQUIRY, data_in=96)
    rewind = kernel.submit(bytes([0x01, 0, 0, 0, 0, 0]))
    stale = (kernel.head - kernel.tail) % kernel.cmdr_size
    later = kernel.submit(INQUIRY, data_in=96)
    serve(kernel, devices.luns[1], stale=stale)
    assert kernel.response(inquiry).status == Status.GOOD
    assert sense_code(kernel.response(rewind).sense) == (0x6, 0x29, 0x00)
    assert kernel.response(later).status == Status.GOOD


class Exploding:
    def execute(self, nexus, cdb, data_out=None) -> ScsiResult:
        raise RuntimeError("a model bug")


def test_a_model_that_raises_gives_hardware_error_not_a_dead_ring():
    kernel = FakeKernel()
    cmd = kernel.submit(TUR)
    ring = r.Ring(kernel.area)
    answer(ring, next(ring.pending()), Exploding())
    resp = kernel.response(cmd)
    assert resp.status == Status.CHECK_CONDITION
    assert sense_code(resp.sense) == (0x4, 0x44, 0x00)


def test_a_ring_of_another_version_is_refused():
    kernel = FakeKernel()
    kernel.area[0] = 1
    with pytest.raises(r.RingError, match="version 1"):
        r.Ring(kernel.area)


def test_an_entry_of_length_zero_is_refused():
    kernel = FakeKernel()
    kernel.submit(TUR)
    kernel.area[kernel.cmdr_off:kernel.cmdr_off + 4] = (0 | r.Op.CMD).to_bytes(4, "little")
    with pytest.raises(r.RingError, match="length 0"):
        list(r.Ring(kernel.area).pending())


def test_layout_offsets_match_the_kernel_header():
    """The offsets a 64-bit kernel uses (pahole of struct tcmu_cmd_entry): the request
    struct inside the packed entry keeps its natural alignment."""
    assert (r.CMD_HEAD_OFFSET, r.CMD_TAIL_OFFSET, r.MAILBOX_SIZE) == (12, 64, 128)
    assert r.ENTRY_HDR.size == 8 and r.REQ.size == 40 and r.REQ_IOV_OFFSET == 48
    entry = bytearray(64)
    r.REQ.pack_into(entry, r.ENTRY_HDR.size, 2, 0, 0, 0x1234, 0, 0)
    assert entry[24:32] == (0x1234).to_bytes(8, "little")  # cdb_off
    assert r.SENSE_OFFSET == 16 and r.RSP.size == 8


@pytest.mark.parametrize("cdb,length", [
    (bytes([0x12]) + bytes(7), 6), (bytes([0x28]) + bytes(7), 10),
    (bytes([0xA5]) + bytes(7), 12), (bytes([0x88]) + bytes(7), 16),
    (bytes([0x7F, 0, 0, 0, 0, 0, 0, 24]), 32),
])
def test_cdb_length_by_group(cdb, length):
    assert r.cdb_length(cdb) == length
