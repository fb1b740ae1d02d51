"""Shared fixtures. Keep this small and additive: each fixture has one job."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vtl.config import LibraryConfig
from vtl.library import Library

SMALL_CAPACITY = 64 << 20  # test cartridges: 64 MiB native


@pytest.fixture
def library_root(tmp_path: Path) -> Path:
    """Where a test library lives (not created yet)."""
    return tmp_path / "library"


@pytest.fixture
def small_config() -> LibraryConfig:
    """A small library: 2 drives, 8 slots, 2 mailslots, default addresses."""
    return LibraryConfig(drives=2, slots=8, mailslots=2)


@pytest.fixture
def library(library_root: Path, small_config: LibraryConfig) -> Iterator[Library]:
    """A fresh small library with three 64 MiB LTO-8 cartridges in slots 1-3
    (A00001L8..A00003L8)."""
    lib = Library.create(library_root, small_config)
    lib.create_cartridges(["A00001L8", "A00002L8", "A00003L8"], capacity=SMALL_CAPACITY)
    yield lib
    lib.close()


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory on tmpfs when there is one: drive model tests fsync a lot, and
    the durability itself is the cartridge tests' business, not the drive model's."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="vtl-test-", dir=shm))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fast_library(fast_dir: Path) -> Iterator[Callable[..., Library]]:
    """``fast_library(*barcodes, **options)``: the test's library (default config) in
    ``fast_dir``, with those cartridges (``options``: create_cartridge's, e.g. capacity);
    closed when the test ends."""
    made: list[Library] = []

    def make(*barcodes: str, **options: Any) -> Library:
        lib = Library.create(fast_dir / "lib")
        made.append(lib)
        for barcode in barcodes:
            lib.create_cartridge(barcode, **options)
        return lib

    yield make
    for lib in made:
        lib.close()


@pytest.fixture(autouse=True)
def _buffered_writes_stay_buffered(monkeypatch) -> None:
    """Drives of this process write big blocks at once while twice as many stream as there
    are CPUs (vtl/scsi/ssc_streams.py); tests that write to several drives in a row must not
    switch that on by chance, so it is off unless a test sets ``WRITE_STREAMS.enough``."""
    from vtl.scsi.ssc_streams import WRITE_STREAMS

    monkeypatch.setattr(WRITE_STREAMS, "enough", 1 << 30)
