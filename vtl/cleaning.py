"""Cleaning: cleaning cartridges, and the wear that makes a drive ask for one.

A cleaning cartridge (``CLNxxxL1``, :func:`vtl.barcode.is_cleaning_label`) is a cartridge
file like any other, so the catalog, the changer (READ ELEMENT STATUS shows its barcode, with
the SMC medium type "cleaning"), moves, import/export and catalog rebuilds treat it as they
treat data cartridges. What makes it one is in its medium auxiliary memory, as on a real
cartridge memory: MEDIUM TYPE (0x0408) 0x01 "cleaning", MEDIUM TYPE INFORMATION (0x0409)
the cleaning cycles it is good for (SSC-4), and LOAD COUNT (0x0003) the loads so far, which
the drive counts as it mounts it. It holds no data: 1 MiB of nominal capacity, no pool, state
``cleaning``, so no backup application or EBM pool ever takes it for a scratch tape.

A drive keeps its own wear counters since the last cleaning (loads, hours with a cartridge
loaded), as real drives do in their memory: here ``<root>/drive-usage.json``, updated under
an flock by whichever process loads or unloads the drive (``vtl serve``, the EBM, the CLI).
``[cleaning]`` in library.toml says when a drive asks for cleaning (TapeAlert 21 CLEAN
PERIODIC; :class:`vtl.config.CleaningConfig`); loading a cleaning cartridge clears it. The
SCSI side (what the drive answers meanwhile) is :mod:`vtl.scsi.ssc_cleaning`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vtl.catalog import now_iso

if TYPE_CHECKING:
    from tape_formats.mam import MamStore
    from vtl.config import CleaningConfig

CLEANING_CAPACITY = 1 << 20  # nominal: a cleaning cartridge holds no data
MAM_LOAD_COUNT = 0x0003
MAM_MEDIUM_TYPE = 0x0408
MAM_MEDIUM_TYPE_INFORMATION = 0x0409
MEDIUM_TYPE_CLEANING = 0x01
USAGE_NAME = "drive-usage.json"


# ---- cleaning cartridges ------------------------------------------------------------------
def make_cleaning_medium(mam: MamStore, cycles: int) -> None:
    """Mark a new cartridge's memory as a cleaning cartridge good for ``cycles`` cleanings."""
    mam.set(MAM_MEDIUM_TYPE, MEDIUM_TYPE_CLEANING)
    mam.set(MAM_MEDIUM_TYPE_INFORMATION, cycles)
    mam.save()


def cleanings_left(mam: MamStore) -> int:
    """How many more cleanings the cartridge gives (negative: loaded past its last one)."""
    return mam.get_int(MAM_MEDIUM_TYPE_INFORMATION) - mam.get_int(MAM_LOAD_COUNT)


def read_cleanings_left(cartridge_path: Path) -> int | None:
    """``cleanings_left`` of a cartridge file's memory; None if it cannot be read."""
    from tape_formats.mam import MamError, MamStore

    try:
        return cleanings_left(MamStore(cartridge_path.with_name(cartridge_path.name + ".mam")))
    except (OSError, MamError):
        return None


# ---- drive wear ---------------------------------------------------------------------------
@dataclass
class DriveUsage:
    """One drive's wear since its last cleaning."""

    loads: int = 0
    loaded_seconds: float = 0.0
    last_cleaned: str | None = None
    cleanings: int = 0  # over the drive's life

    def cleaning_due(self, policy: CleaningConfig, drive: int) -> bool:
        """Whether the drive asks for cleaning under ``policy`` (``[cleaning]``)."""
        hours, loads = policy.thresholds(drive)
        return bool((hours and self.loaded_seconds >= hours * 3600)
                    or (loads and self.loads >= loads))


def read_usage(root: Path) -> dict[int, DriveUsage]:
    """Every drive's wear (drives never loaded are absent); a damaged file reads as empty."""
    try:
        doc = json.loads((Path(root) / USAGE_NAME).read_text())
        return {int(k): DriveUsage(**v) for k, v in doc.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    fd = os.open(Path(root) / (USAGE_NAME + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o666)  # the umask makes it the library's mode (vtl.access)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_usage(root: Path, drive: int, change: Callable[[DriveUsage], None]) -> DriveUsage:
    """Apply ``change`` to drive ``drive``'s wear and write it back (atomically, under an
    flock shared by every process of the library); the new wear."""
    root = Path(root)
    with _locked(root):
        usage = read_usage(root)
        mine = usage.setdefault(drive, DriveUsage())
        change(mine)
        path = root / USAGE_NAME
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({str(k): asdict(v) for k, v in sorted(usage.items())},
                                  indent=1))
        os.replace(tmp, path)
        return mine


def count_load(usage: DriveUsage) -> None:
    usage.loads += 1


def counter_adding(seconds: float) -> Callable[[DriveUsage], None]:
    """A change adding ``seconds`` of loaded time."""
    def add(usage: DriveUsage) -> None:
        usage.loaded_seconds += max(0.0, seconds)
    return add


def cleaned(usage: DriveUsage) -> None:
    """What a cleaning does to the counters: back to zero."""
    usage.loads = 0
    usage.loaded_seconds = 0.0
    usage.last_cleaned = now_iso()
    usage.cleanings += 1


def monotonic() -> float:
    """The clock loaded time is measured with (tests replace it)."""
    return time.monotonic()
