"""The guest boot the single-drive e2e tests share: `vtl serve` on a library, the changer
and its first drive attached to the guest, the cartridge in slot 1 loaded by mtx, and each
step's output checked by name."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

from .guest import Guest
from .qemu import boot

# Marks for a module whose tests boot `vtl serve`.
E2E_WITH_SERVE = [
    pytest.mark.e2e,
    pytest.mark.skipif(importlib.util.find_spec("vtl.cli.serve") is None,
                       reason="`vtl serve` has not landed"),
]

# The first lines of a script: device names, a bound per step, the cartridge loaded.
LOAD_SLOT_1 = r"""
export CHSG=/dev/e2e/0-sg
export TAPE=/dev/e2e/1-nst
export TAPESG=/dev/e2e/1-sg
export E2E_STEP_TIMEOUT=240
step load 'mtx -f $CHSG load 1 0 && i=0; until mt -f $TAPE status 2>&1 | grep -q ONLINE || [ $i -ge 30 ]; do i=$((i+1)); sleep 1; done; mt -f $TAPE status'
"""


@dataclass
class GuestSteps:
    """A finished boot: ``ok(name)`` is a step's output, asserting it exited 0."""

    run: object
    log: str

    def ok(self, name: str) -> str:
        s = self.run[name]  # type: ignore[index]
        assert s.rc == 0, f"guest step {name!r} exited {s.rc}:\n{s.output}\n{self.log}"
        return s.output


def boot_one_drive(guest: Guest, root: Path, workdir: Path, script: str, *,
                   timeout: float = 420, memory_mb: int = 512) -> GuestSteps:
    """Serve ``root``, boot ``guest`` with the changer and drive 0, run ``script``."""
    from .targets import start_vtl, stop

    srv = start_vtl(root, workdir)
    try:
        run = boot(guest, script, srv.guest_luns(), timeout=timeout, memory_mb=memory_mb)
    finally:
        stop(srv.proc, timeout=30)
    steps = GuestSteps(run, run.describe())
    assert run.done, steps.log
    steps.ok("load")
    return steps
