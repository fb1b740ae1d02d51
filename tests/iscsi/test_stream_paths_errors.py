"""A device whose streaming fast path raises (a model bug) costs the initiator nothing: the
error is logged, the command goes the general way and gets the general path's answer, and
a failing ``idle()`` hook is logged without touching the answer already sent. Both
implementations of the fast paths (vtl/_fastpath.c and stream_paths.ReferencePaths)."""

from __future__ import annotations

import logging

import pytest
from iscsi_support import FakeDevice, RawInitiator, pattern, running_target, scsi_status

from vtl.iscsi import stream_paths


class RaisingStreamDevice(FakeDevice):
    """A FakeDevice whose fast paths raise on calls 1, 4, 5, 8 ... (READ and WRITE alternate
    in the test: two of each), and whose idle hook raises each time."""

    def __init__(self) -> None:
        super().__init__(1, "RAISING")
        self.fast_calls = 0
        self.idles = 0

    def _maybe_raise(self) -> None:
        self.fast_calls += 1
        if self.fast_calls % 4 in (0, 1):
            raise RuntimeError("model bug")

    def stream_read(self, nexus, cdb, length):
        self._maybe_raise()
        return pattern(length)

    def stream_write(self, nexus, cdb, data) -> bool:
        self._maybe_raise()
        self.last_write = bytes(data)
        return True

    def idle(self) -> None:
        self.idles += 1
        raise ValueError("idle bug")


@pytest.mark.parametrize("impl", ["c", "python"])
def test_raising_fast_paths_fall_back_and_are_logged(
        impl: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    chosen = stream_paths.native if impl == "c" else stream_paths.ReferencePaths
    if chosen is None:
        pytest.skip("vtl._fastpath is not built (or VTL_NO_FASTPATH is set)")
    monkeypatch.setattr(stream_paths, "paths", chosen)
    drive = RaisingStreamDevice()
    caplog.set_level(logging.ERROR, logger="vtl.iscsi")
    with running_target(devices={0: FakeDevice(8, "CHANGER"), 1: drive}) as t:
        ini = RawInitiator(t.port)
        ini.login({"ImmediateData": "Yes", "InitialR2T": "No"})
        for n in (1000, 4096, 1001, 3):
            rsp, data = ini.collect(ini.scsi(bytes([0x08, 0]) + n.to_bytes(3, "big") + b"\0",
                                             lun=1, read=n))
            assert scsi_status(rsp) == 0 and data == pattern(n)
            block = bytes([n & 0xFF]) * n
            cdb = bytes([0x0A, 0]) + n.to_bytes(3, "big") + b"\0"
            rsp, _ = ini.collect(ini.scsi(cdb, lun=1, write=block, immediate_data=n))
            assert scsi_status(rsp) == 0 and drive.last_write == block
        ini.logout()
        ini.close()
    assert drive.fast_calls == 8 and drive.idles == 8  # each command, either way
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("stream_read raised on CDB 08000003e800") == 1, messages
    assert messages.count("stream_read raised on CDB 08000003e900") == 1
    assert messages.count("stream_write raised on CDB 0a0000100000") == 1
    assert messages.count("stream_write raised on CDB 0a0000000300") == 1
    assert messages.count("device idle() failed") == 8
    assert all(r.exc_info and r.exc_info[1] is not None for r in caplog.records)
