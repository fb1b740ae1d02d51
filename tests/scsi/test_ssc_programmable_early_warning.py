"""Programmable early warning (SSC-4 4.2.5): with PEWS set in page 0x10/0x01, the write that
enters the zone PEWS megabytes before early warning succeeds with NO SENSE 00/07, once;
early warning itself still comes as 00/02 with EOM. PEWS 0 (the default): no PEW."""

from __future__ import annotations

import os

import pytest
from test_ltfs_commands import mode_select10, mode_sense10
from test_ssc import MiB, run, write

from vtl.scsi.base import Status
from vtl.scsi.ssc import TapeDrive


@pytest.fixture
def drv(fast_library):
    lib = fast_library("E00001L8", capacity=16 * MiB)  # early warning at 15 MiB
    d = TapeDrive(lib.load("E00001L8", 0))
    run(d, 0, 0, 0, 0, 0, 0)
    return d


def _answers(drv, blocks: int) -> list[tuple[int, int, bool] | None]:
    out = []
    for _ in range(blocks):
        r = write(drv, os.urandom(MiB // 2))  # incompressible, big enough to be buffered
        out.append(None if r.status == Status.GOOD else (r.s.asc, r.s.ascq, r.s.eom))
    return out


def test_pew_once_then_early_warning(drv) -> None:
    page = bytearray(mode_sense10(drv, 0x10, 0x01))
    page[22:24] = (4).to_bytes(2, "big")  # 4 MB before early warning: from ~11 MiB on
    mode_select10(drv, bytes(page))
    answers = _answers(drv, 31)
    reported = [(i, a) for i, a in enumerate(answers) if a is not None]
    assert reported[0] == (22, (0x00, 0x07, False)), reported  # 11.5 MiB used: in the zone
    assert [a for _, a in reported[1:]] == [(0x00, 0x02, True)] * len(reported[1:])
    assert reported[1][0] == 29  # 15 MiB: early warning, as without PEWS


def test_no_pew_by_default(drv) -> None:
    answers = _answers(drv, 31)
    assert {a for a in answers if a is not None} == {(0x00, 0x02, True)}
