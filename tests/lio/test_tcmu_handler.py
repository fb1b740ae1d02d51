"""The handler's plumbing without a kernel: device discovery in a fake sysfs, one runner
thread per device woken like a UIO interrupt, and a long command on one drive not stalling
another device."""

from __future__ import annotations

import os
import select
import threading
import time
from pathlib import Path

import pytest
from tcmu_fake import FakeKernel

from vtl.config import LibraryConfig
from vtl.library import Library
from vtl.lio.handler import Handler
from vtl.lio.uio import UioDevice, config_string, find_devices, parse_name
from vtl.scsi.base import Status

INQUIRY = bytes([0x12, 0, 0, 0, 96, 0])


def fake_uio(sysfs: Path, n: int, name: str, size: int) -> None:
    d = sysfs / f"uio{n}"
    (d / "maps" / "map0").mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "maps" / "map0" / "size").write_text(hex(size) + "\n")


def test_parse_name_takes_only_our_subtype(tmp_path):
    ours = parse_name("uio3", "tcm-user/1/vtl-drive0/" + config_string("drive0", tmp_path), 99)
    assert ours == UioDevice("uio3", 1, "vtl-drive0", "drive0", str(tmp_path), 99)
    assert parse_name("uio1", "tcm-user/1/disk/rbd/pool/img", 9) is None
    assert parse_name("uio1", "tcm-user/1/x/vtl/nodelimiter", 9) is None
    assert parse_name("uio1", "something else", 9) is None


def test_find_devices_by_library(tmp_path):
    sysfs = tmp_path / "uio"
    fake_uio(sysfs, 0, "tcm-user/1/a/" + config_string("changer", tmp_path / "a"), 4096)
    fake_uio(sysfs, 1, "tcm-user/1/b/" + config_string("changer", tmp_path / "b"), 4096)
    fake_uio(sysfs, 2, "tcm-user/2/c/rbd/pool/image", 4096)
    found = find_devices(tmp_path / "a", uio_class=sysfs)
    assert [(d.uio, d.role) for d in found] == [("uio0", "changer")]
    assert len(find_devices(uio_class=sysfs)) == 2


class FakePort:
    """A UioRing stand-in: the fake kernel's area, a pipe for its interrupts."""

    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel
        self.area = kernel.area
        self.irq_r, self.irq_w = os.pipe()
        self.kicks = 0

    def interrupt(self) -> None:
        os.write(self.irq_w, b"\1")

    def wait(self, stop_fd: int, timeout: float | None = None) -> bool:
        ready, _, _ = select.select([self.irq_r, stop_fd], [], [], timeout)
        if self.irq_r in ready:
            os.read(self.irq_r, 64)
            return True
        return False

    def kick(self) -> None:
        self.kicks += 1

    def close(self) -> None:
        os.close(self.irq_r)
        os.close(self.irq_w)


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def library(tmp_path):
    lib = Library.create(tmp_path / "lib", LibraryConfig(drives=2, slots=4, mailslots=1))
    yield lib
    lib.close()


def test_one_runner_per_device_and_a_slow_drive_stalls_no_other(tmp_path, library):
    sysfs = tmp_path / "uio"
    for n, role in enumerate(("changer", "drive0", "drive1")):
        fake_uio(sysfs, n, f"tcm-user/1/{role}/" + config_string(role, library.root), 1 << 20)
    fake_uio(sysfs, 3, "tcm-user/1/drive7/" + config_string("drive7", library.root), 1 << 20)
    ports = {f"uio{n}": FakePort(FakeKernel()) for n in range(3)}
    handler = Handler(library, uio_class=sysfs, open_ring=lambda dev: ports[dev.uio])
    release = threading.Event()
    slow = handler.model_for("drive0")
    real_execute = slow.execute

    def held_execute(nexus, cdb, data_out=None):
        release.wait(10)
        return real_execute(nexus, cdb, data_out)

    slow.execute = held_execute
    try:
        assert sorted(handler.rescan()) == ["changer", "drive0", "drive1"]  # not drive7
        assert handler.rescan() == []
        stuck = ports["uio1"].kernel.submit(INQUIRY, data_in=96)
        ports["uio1"].interrupt()
        for uio in ("uio0", "uio2"):
            kernel = ports[uio].kernel
            cmd = kernel.submit(INQUIRY, data_in=96)
            ports[uio].interrupt()
            wait_for(lambda k=kernel: k.tail == k.head)
            assert kernel.response(cmd).status == Status.GOOD
        assert ports["uio1"].kernel.tail != ports["uio1"].kernel.head
        release.set()
        kernel = ports["uio1"].kernel
        wait_for(lambda: kernel.tail == kernel.head)
        assert kernel.response(stuck).status == Status.GOOD
        assert ports["uio1"].kicks >= 1
    finally:
        release.set()
        handler.close()
    assert all(not r.thread.is_alive() for r in handler.runners.values())


def test_a_new_runner_kicks_first_for_a_completion_the_dead_one_did_not_announce(
        tmp_path, library):
    """A handler SIGKILLed between moving the tail and kicking: the kernel never sees that
    completion unless the next handler kicks, and the initiator waits until cmd_time_out."""
    sysfs = tmp_path / "uio"
    fake_uio(sysfs, 0, "tcm-user/1/drive0/" + config_string("drive0", library.root), 1 << 20)
    port = FakePort(FakeKernel())
    handler = Handler(library, uio_class=sysfs, open_ring=lambda dev: port)
    try:
        assert handler.rescan() == ["drive0"]  # nothing waiting in the ring
        wait_for(lambda: port.kicks >= 1)
    finally:
        handler.close()
