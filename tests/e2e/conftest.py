"""Fixtures for the Linux-guest e2e tests: the cached guest and the reference tgt target."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .guest import Guest, build_guest
from .qemu import qemu_available
from .targets import TgtTarget, start_tgt, stop


@pytest.fixture(scope="session")
def guest() -> Guest:
    """Debian's kernel plus the busybox/tape-tools initramfs (built once, cached on disk)."""
    reason = qemu_available()
    if reason:
        pytest.skip(reason)
    return build_guest()


@pytest.fixture
def tgt(tmp_path: Path) -> Iterator[TgtTarget]:
    """A fresh tgtd (Debian's stgt) on 127.0.0.1:<free port>, killed after the test."""
    import shutil

    if not shutil.which("tgtd"):
        pytest.skip("tgtd is not installed (Debian package tgt)")
    target = start_tgt(tmp_path)
    try:
        yield target
    finally:
        # tgtd in -f mode does not exit on SIGTERM; its data dies with tmp_path anyway.
        stop(target.proc, timeout=1)
        for suffix in ("", ".lock"):
            Path(f"/var/run/tgtd/socket.{target.control_port}{suffix}").unlink(missing_ok=True)
